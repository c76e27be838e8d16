"""Issue 16, item 7: a claim narrows the pool's grant to the claimer, a release widens it back,
and after signing the reader's read-only access ends after reader_access_days; on every
route (pages, the viewer, /api/v1/studies/, DICOMweb with a token, DIMSE)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.utils import timezone

from alliance import audit
from alliance import services as membership
from alliance.access import Principal, resolve_principal, settings_of
from consults import clock, services
from consults.models import Status
from imaging import access as imaging_access
from imaging import grants, selectors
from imaging.dicom.handlers import Peer
from imaging.dicom.identifiers import QueryRequest
from imaging.dimse_services import DjangoServices
from imaging.models import StudyGroupGrant, StudyUserGrant
from tests.conftest import client_for
from tests.consults.conftest import walk
from tests.dicomweb.conftest import token_client
from tests.factories import make_doctor

pytestmark = pytest.mark.django_db


def who(doctor: Any) -> Principal:
    return resolve_principal(doctor.user)


def routes_seeing(doctor: Any, study: Any) -> set[str]:
    """The routes on which the doctor finds the study."""
    uid = study.study_uid
    seen = set()
    web = client_for(doctor)
    if web.get(f"/imaging/studies/{uid}/").status_code == 200:
        seen.add("page")
    if web.get(f"/viewer/study/{uid}/").status_code == 200:
        seen.add("viewer")
    api = token_client(doctor)
    listed = api.get("/api/v1/studies/")
    assert listed.status_code == 200
    if uid in [row["study_uid"] for row in listed.json()["results"]]:
        seen.add("rest")
    qido = api.get(f"/dicomweb/studies?StudyInstanceUID={uid}", HTTP_ACCEPT="application/dicom+json")
    assert qido.status_code in (200, 204), qido.content
    if qido.status_code == 200 and qido.json():
        seen.add("dicomweb")
    return seen


EVERY_ROUTE = {"page", "viewer", "rest", "dicomweb"}


@pytest.fixture
def second(world: Any) -> Any:
    doctor = make_doctor(institution=world.hosp, roles=["specialist"], username="second_reader")
    membership.pool_set_members(pool=world.pool, members=[world.specialist, doctor], by=audit.SYSTEM)
    return doctor


def test_before_a_claim_every_pool_member_sees_the_study_on_every_route(world: Any, second: Any) -> None:
    consult = walk(world, Status.REQUESTED)
    study = consult.studies.get()
    assert routes_seeing(second, study) == EVERY_ROUTE
    assert routes_seeing(world.specialist, study) == EVERY_ROUTE


def test_a_claim_narrows_the_pool_grant_to_the_claimer_on_every_route(world: Any, second: Any) -> None:
    consult = walk(world, Status.ACCEPTED)
    study = consult.studies.get()
    assert routes_seeing(second, study) == set()
    assert routes_seeing(world.specialist, study) == EVERY_ROUTE
    assert imaging_access.may_write_study(who(world.specialist), study)
    assert not imaging_access.may_write_study(who(second), study)
    assert not StudyGroupGrant.objects.filter(imaging_access.live(), basis=consult.basis).exists()
    assert imaging_access.basis_for(who(world.specialist), study) == consult.basis


def test_a_release_widens_the_grant_back_to_the_pool(world: Any, second: Any) -> None:
    consult = walk(world, Status.ACCEPTED)
    study = consult.studies.get()
    services.consult_release(consult=consult, by=who(world.specialist), reason="Off shift.")
    assert routes_seeing(second, study) == EVERY_ROUTE
    assert imaging_access.may_write_study(who(second), study)
    services.consult_claim(consult=consult, by=who(second))
    assert routes_seeing(world.specialist, study) == set()
    assert routes_seeing(second, study) == EVERY_ROUTE


def test_a_named_case_widened_at_the_deadline_and_claimed_leaves_the_named_specialist_out(
    world: Any, second: Any
) -> None:
    consult = walk(world, Status.REQUESTED, named=True)
    study = consult.studies.get()
    assert not imaging_access.studies_visible_to(who(second)).filter(pk=study.pk).exists()
    services.consult_check_deadlines(now=consult.claim_due_at + timedelta(seconds=1))
    assert imaging_access.studies_visible_to(who(second)).filter(pk=study.pk).exists()
    consult.refresh_from_db()
    services.consult_claim(consult=consult, by=who(second))
    assert not imaging_access.studies_visible_to(who(world.specialist)).filter(pk=study.pk).exists()


def test_after_signing_the_reader_reads_only_until_reader_access_days(world: Any) -> None:
    settings = settings_of(world.alliance.pk)
    settings.reader_access_days = 30
    settings.save()
    consult = walk(world, Status.COMPLETED)
    study = consult.studies.get()
    assert routes_seeing(world.specialist, study) == EVERY_ROUTE
    assert not imaging_access.may_write_study(who(world.specialist), study)
    (read,) = StudyUserGrant.objects.filter(imaging_access.live(), basis=consult.basis)
    assert read.permission.codename == imaging_access.READ
    assert read.expires_at == consult.completed_at + timedelta(days=30)


def test_the_reader_loses_access_on_every_route_once_the_days_are_over(world: Any, monkeypatch: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    study = consult.studies.get()
    signed_long_ago = timezone.now() - timedelta(days=91)  # the default is 90 days
    monkeypatch.setattr(clock, "now", lambda: signed_long_ago)
    services.consult_sign(consult=consult, by=who(world.specialist), impression="Normal.")
    assert routes_seeing(world.specialist, study) == set()
    assert routes_seeing(world.owner, study) == EVERY_ROUTE  # the requesting clinic keeps its own


def test_a_failed_case_also_ends_after_the_days(world: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    services.consult_fail(consult=consult, by=who(world.specialist), reason="Images unreadable.")
    (read,) = StudyUserGrant.objects.filter(imaging_access.live(), basis=consult.basis)
    assert read.permission.codename == imaging_access.READ
    assert timezone.now() + timedelta(days=89) < read.expires_at < timezone.now() + timedelta(days=91)


def test_a_device_of_the_reading_hospital_never_finds_the_case_study_by_c_find(world: Any) -> None:
    consult = walk(world, Status.ACCEPTED)
    study = consult.studies.get()
    device = membership.device_create(institution=world.hosp, ae_title="WS_H", host="*", port=104, by=audit.SYSTEM)
    peer = Peer("WS_H", "HOSP", "127.0.0.1", 4100, principal=device)
    query = QueryRequest(root="study", level="STUDY", criteria={"StudyInstanceUID": study.study_uid}, keywords=[])
    assert list(DjangoServices(check_host=False).find(peer, query)) == []


def test_the_case_page_shows_who_has_access_now_and_until_when(world: Any) -> None:
    consult = walk(world, Status.REQUESTED)
    page = client_for(world.owner).get(f"/consults/{consult.pk}/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Every member of CT reading desk" in page and "While the case is open" in page
    services.consult_claim(consult=consult, by=who(world.specialist))
    services.consult_start_report(consult=consult, by=who(world.specialist))
    services.consult_sign(consult=consult, by=who(world.specialist), impression="Normal.")
    (line,) = selectors.access_of_basis(consult.basis)
    assert (line.who, line.kind, line.write) == (world.specialist.display_name, "user", False)
    page = client_for(world.owner).get(f"/consults/{consult.pk}/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Read only" in page and timezone.localtime(line.until).strftime("%Y-%m-%d %H:%M") in page
    assert "Every member of" not in page


def test_every_narrowing_is_audited(world: Any) -> None:
    consult = walk(world, Status.ACCEPTED)
    from alliance.models import AuditEvent

    event = AuditEvent.objects.get(action="grant.narrow", basis=consult.basis)
    assert event.detail["grantees"] == [f"user:{world.specialist.user.pk}"]
    assert event.detail["revoked"] == 2  # the pool's read and write


def test_the_migration_narrows_and_ends_grants_made_before_it(world: Any) -> None:
    from importlib import import_module

    migration = import_module("consults.migrations.0005_grants_narrowed_to_readers")
    claimed = walk(world, Status.ACCEPTED)
    signed = walk(world, Status.COMPLETED)
    for consult in (claimed, signed):  # as the old code left them: the pool holds the case
        StudyUserGrant.objects.filter(basis=consult.basis).delete()
        for study in consult.studies.all():
            grants.grant_study(
                study=study, grantee=grants.Grantee.pool(world.pool), basis=consult.basis, by=audit.SYSTEM
            )
    migration.narrow_existing_grants(apps, None)
    for consult, write in ((claimed, True), (signed, False)):
        (line,) = selectors.access_of_basis(consult.basis)
        assert (line.kind, line.write) == ("user", write)
    assert selectors.access_of_basis(signed.basis)[0].until == signed.completed_at + timedelta(days=90)
    assert StudyGroupGrant.objects.filter(imaging_access.live(), basis=claimed.basis).count() == 0
