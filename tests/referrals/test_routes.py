"""A referral's access on every route the receiving institution has: the REST API
(/api/v1/studies/), DICOMweb (QIDO-RS and WADO-RS with a token) and DIMSE (C-FIND and C-GET
by a device of the receiving institution, through the DICOM services the server calls).

Granted on request (exactly the attached study), widened on arrival (the patient's other
study of the last 12 months), narrowed on completion (an expiry; with 0 days, gone), revoked
after reject and cancel."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.utils import timezone

from alliance import audit
from alliance import services as alliance_services
from alliance.access import settings_of
from imaging.dicom.handlers import Peer
from imaging.dicom.identifiers import QueryRequest
from imaging.dimse_services import DjangoServices
from imaging.models import Study, StudyGroupGrant
from referrals import services
from referrals.models import Referral, Status
from tests.dicomweb.conftest import store, token_client
from tests.imaging.dicomgen import make_ct_series
from tests.referrals.conftest import principal, tomorrow_at_nine

pytestmark = pytest.mark.django_db

DICOM_MULTIPART = 'multipart/related; type="application/dicom"'


@pytest.fixture
def images(world: Any) -> SimpleNamespace:
    """Clinic A's patient P1001: the CT to refer, a CT of 5 months ago, one of 14 months ago."""
    today = timezone.localdate()
    made = {}
    for name, days in (("attached", 1), ("recent", 150), ("old", 430)):
        datasets = make_ct_series(1, 16, 16, patient_id="P1001", study_date=today - timedelta(days=days))
        store(datasets, world.clin_a)
        made[name] = Study.objects.get(study_uid=datasets[0].StudyInstanceUID)
    device = alliance_services.device_create(
        institution=world.hosp, ae_title="HOSP_WS", host="*", port=104, by=audit.SYSTEM
    )
    return SimpleNamespace(**made, device=device)


def routes_see(world: Any, images: SimpleNamespace, study: Study) -> dict[str, bool]:
    """Whether the hospital sees the study on each route."""
    rest = token_client(world.desk)
    uid = study.study_uid
    listed = rest.get("/api/v1/studies/", {"limit": 100}).json()["results"]
    found = {
        "rest-list": uid in {row["study_uid"] for row in listed},
        "rest-detail": rest.get(f"/api/v1/studies/{uid}/").status_code == 200,
    }
    qido = rest.get("/dicomweb/studies", {"StudyInstanceUID": uid})
    found["qido"] = qido.status_code == 200 and len(qido.json()) == 1
    found["wado"] = rest.get(f"/dicomweb/studies/{uid}/metadata").status_code == 200
    peer = Peer("HOSP_WS", "HOSP", "127.0.0.1", 4100, principal=images.device)
    dimse = DjangoServices(check_host=False)
    query = QueryRequest("STUDY", "STUDY", {"StudyInstanceUID": uid}, ["StudyInstanceUID"])
    found["c-find"] = len(list(dimse.find(peer, query))) == 1
    found["c-get"] = len(dimse.retrieve(peer, query, None).objects) == 1
    return found


def everywhere(world: Any, images: SimpleNamespace, study: Study) -> bool:
    seen = routes_see(world, images, study)
    assert len(set(seen.values())) == 1, seen  # every route answers the same
    return next(iter(seen.values()))


def _referral(world: Any, images: SimpleNamespace) -> Referral:
    return services.referral_create(
        by=principal(world.owner),
        studies=[images.attached],
        direction="up",
        to_institution=world.hosp,
        reason="Suspected lung cancer.",
    )


def _accept(world: Any, referral: Referral) -> None:
    services.referral_accept(
        referral=referral,
        by=principal(world.desk),
        appointment_at=tomorrow_at_nine(),
        department="Thoracic surgery",
        doctor=world.receiver,
    )


def test_granted_on_request_widened_on_arrival_narrowed_on_completion(world, images) -> None:  # type: ignore[no-untyped-def]
    referral = _referral(world, images)
    assert not everywhere(world, images, images.attached)  # a draft opens nothing
    services.referral_request(referral=referral, by=principal(world.owner))
    assert everywhere(world, images, images.attached)
    assert not everywhere(world, images, images.recent)
    _accept(world, referral)
    services.referral_arrive(referral=referral, by=principal(world.desk))
    assert everywhere(world, images, images.attached)
    assert everywhere(world, images, images.recent)
    assert not everywhere(world, images, images.old)  # older than 12 months
    services.referral_complete(referral=referral, by=principal(world.receiver), summary="Discharged.")
    assert everywhere(world, images, images.attached) and everywhere(world, images, images.recent)
    # narrowed: the access now ends; once it has, no route shows the studies
    referral.refresh_from_db()
    row = settings_of(world.alliance.pk)
    assert referral.completed_at is not None
    grants = StudyGroupGrant.objects.filter(basis=referral.basis)
    assert {g.expires_at for g in grants} == {referral.completed_at + timedelta(days=row.referral_access_days)}
    grants.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert not everywhere(world, images, images.attached)
    assert not everywhere(world, images, images.recent)


def test_with_zero_days_after_completion_no_route_shows_the_studies(world, images) -> None:  # type: ignore[no-untyped-def]
    row = settings_of(world.alliance.pk)
    row.referral_access_days = 0
    row.save()
    referral = _referral(world, images)
    services.referral_request(referral=referral, by=principal(world.owner))
    _accept(world, referral)
    services.referral_arrive(referral=referral, by=principal(world.desk))
    services.referral_complete(referral=referral, by=principal(world.receiver), summary="Discharged.")
    assert not everywhere(world, images, images.attached)


@pytest.mark.parametrize("closing", ["reject", "cancel", "cancel-after-arrival-was-possible"])
def test_revoked_after_reject_and_cancel(world, images, closing) -> None:  # type: ignore[no-untyped-def]
    referral = _referral(world, images)
    services.referral_request(referral=referral, by=principal(world.owner))
    assert everywhere(world, images, images.attached)
    if closing == "reject":
        services.referral_reject(referral=referral, by=principal(world.desk), reason="No beds.")
    else:
        if closing != "cancel":
            _accept(world, referral)
        services.referral_cancel(referral=referral, by=principal(world.owner), reason="Went elsewhere.")
    referral.refresh_from_db()
    assert referral.status in (Status.REJECTED, Status.CANCELLED)
    assert not everywhere(world, images, images.attached)
    assert not everywhere(world, images, images.recent)


def test_another_clinic_never_sees_the_referred_study(world, images) -> None:  # type: ignore[no-untyped-def]
    referral = _referral(world, images)
    services.referral_request(referral=referral, by=principal(world.owner))
    stranger = token_client(world.stranger)
    assert stranger.get(f"/api/v1/studies/{images.attached.study_uid}/").status_code == 404
    assert stranger.get("/dicomweb/studies", {"StudyInstanceUID": images.attached.study_uid}).status_code == 204
