"""Issue 16, item 5: break-glass. A clinician opens a study of another member outside their
grants with a mandatory reason, for the alliance's break_glass_hours, under a red banner; the
owning institution's admin is told (in the app and by e-mail) and approves or flags it;
every step is audited."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from kombu.exceptions import OperationalError

from alliance.access import AccessDenied, resolve_principal, settings_of
from alliance.models import AuditEvent
from imaging import access, grants, tasks
from imaging.models import BreakGlassReview, StudyUserGrant
from tests.conftest import client_for
from tests.dicomweb.conftest import token_client
from tests.factories import StudyFactory

pytestmark = pytest.mark.django_db
REASON = "Unconscious patient in the emergency room, prior CT needed now"


@pytest.fixture
def study(alliance_world: Any) -> Any:
    return StudyFactory(
        institution=alliance_world.clin_a, accession_number="ACC-77", patient__name="ZHAO^LIU", series=1
    )


def who(doctor: Any) -> Any:
    return resolve_principal(doctor.user)


def sees(doctor: Any, study: Any) -> set[str]:
    uid = study.study_uid
    seen = set()
    if client_for(doctor).get(f"/imaging/studies/{uid}/").status_code == 200:
        seen.add("page")
    api = token_client(doctor)
    if uid in [row["study_uid"] for row in api.get("/api/v1/studies/").json()["results"]]:
        seen.add("rest")
    if api.get(f"/dicomweb/studies?StudyInstanceUID={uid}", HTTP_ACCEPT="application/dicom+json").status_code == 200:
        seen.add("dicomweb")
    return seen


def open_by_page(doctor: Any, key: str, reason: str = REASON) -> Any:
    return client_for(doctor).post("/imaging/break-glass/", {"study": key, "reason": reason}, HTTP_ACCEPT_LANGUAGE="en")


def test_a_break_glass_without_a_reason_is_refused_on_the_page_the_api_and_the_service(
    alliance_world: Any, study: Any
) -> None:
    page = open_by_page(alliance_world.stranger, study.study_uid, reason="")
    assert page.status_code == 200 and "This field is required." in page.content.decode()
    api = token_client(alliance_world.stranger).post(
        "/api/v1/break-glass/", {"study_uid": study.study_uid, "reason": "  short "}, format="json"
    )
    assert api.status_code == 400 and "reason" in api.json()["error"]["fields"]
    with pytest.raises(ValidationError):
        grants.break_glass(by=who(alliance_world.stranger), study=study, reason="too short")
    assert not BreakGlassReview.objects.exists()
    assert sees(alliance_world.stranger, study) == set()


def test_only_clinical_doctors_may_break_the_glass(alliance_world: Any, study: Any) -> None:
    with pytest.raises(AccessDenied):
        grants.break_glass(by=who(alliance_world.alliance_admin), study=study, reason=REASON)
    assert client_for(alliance_world.alliance_admin).get("/imaging/break-glass/").status_code == 403


def test_breaking_the_glass_opens_the_study_on_every_route_for_the_alliance_hours(
    alliance_world: Any, study: Any, monkeypatch: Any
) -> None:
    alliance_settings = settings_of(alliance_world.alliance.pk)
    alliance_settings.break_glass_hours = 2
    alliance_settings.save()
    answer = open_by_page(alliance_world.stranger, "ACC-77")  # by accession number
    assert answer.status_code == 302 and answer["Location"] == f"/imaging/studies/{study.study_uid}/"
    review = BreakGlassReview.objects.get()
    assert review.expires_at == review.opened_at + timedelta(hours=2)
    assert (review.owner_institution, review.user_institution) == (alliance_world.clin_a, alliance_world.clin_b)
    assert sees(alliance_world.stranger, study) == {"page", "rest", "dicomweb"}
    assert access.basis_for(who(alliance_world.stranger), study) == review.basis
    assert sees(alliance_world.colleague, study) == {"page", "rest", "dicomweb"}  # clinic A's own, as before
    assert sees(alliance_world.specialist, study) == set()  # nobody else
    later = timezone.now() + timedelta(hours=2, minutes=1)
    monkeypatch.setattr(timezone, "now", lambda: later)
    assert sees(alliance_world.stranger, study) == set()


def test_the_study_page_and_the_viewer_show_a_red_banner_while_it_lasts(alliance_world: Any, study: Any) -> None:
    grants.break_glass(by=who(alliance_world.stranger), study=study, reason=REASON)
    web = client_for(alliance_world.stranger)
    for url in (f"/imaging/studies/{study.study_uid}/", f"/viewer/study/{study.study_uid}/"):
        page = web.get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()
        assert 'id="emergency-banner"' in page and REASON in page, url
    own = client_for(alliance_world.owner).get(f"/imaging/studies/{study.study_uid}/").content.decode()
    assert 'id="emergency-banner"' not in own


def test_the_api_opens_and_answers_the_expiry(alliance_world: Any, study: Any) -> None:
    api = token_client(alliance_world.stranger)
    answer = api.post("/api/v1/break-glass/", {"study_uid": study.study_uid, "reason": REASON}, format="json")
    assert answer.status_code == 201
    body = answer.json()
    assert body["basis"] == f"break-glass:{body['id']}" and body["state"] == "pending"
    assert api.get(f"/api/v1/studies/{study.study_uid}/").status_code == 200
    unknown = api.post("/api/v1/break-glass/", {"study_uid": "1.2.3.999", "reason": REASON}, format="json")
    assert unknown.status_code == 404


def test_a_study_one_already_sees_needs_no_emergency_access(alliance_world: Any, study: Any) -> None:
    answer = open_by_page(alliance_world.colleague, study.study_uid)
    assert answer.status_code == 200 and "No study of another member" in answer.content.decode()
    assert not BreakGlassReview.objects.exists()


def test_an_unknown_study_is_refused_on_the_study_field(alliance_world: Any, study: Any) -> None:
    page = open_by_page(alliance_world.stranger, "NOPE-1")
    assert page.status_code == 200
    assert page.context["form"].errors["study"]


def test_an_email_lost_with_the_broker_is_sent_once_by_the_sweep(
    alliance_world: Any, study: Any, mailoutbox: list[Any], django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    alliance_world.inst_admin_a.user.email = "admin@clinic-a.example"
    alliance_world.inst_admin_a.user.save()

    def broker_away(*_args: Any) -> None:
        raise OperationalError("[Errno 111] Connection refused")  # what Celery raises, the broker stopped

    monkeypatch.setattr(tasks.send_break_glass_email, "delay", broker_away)
    with django_capture_on_commit_callbacks(execute=True):  # a robust callback: logged, not raised
        review = grants.break_glass(by=who(alliance_world.stranger), study=study, reason=REASON)
    assert sees(alliance_world.stranger, study)  # the access stands
    assert mailoutbox == []
    assert tasks.send_unsent_break_glass_emails() == 0  # younger than RETRY_AFTER_SECONDS: maybe on its way
    assert tasks.send_unsent_break_glass_emails(older_than_seconds=0) == 1
    assert tasks.send_unsent_break_glass_emails(older_than_seconds=0) == 0  # once
    (mail,) = mailoutbox
    assert mail.to == ["admin@clinic-a.example"] and REASON in mail.body
    # a day late it is given up (the reviews page still lists it) rather than mailed
    late = grants.break_glass(by=who(alliance_world.outsider_specialist), study=study, reason=REASON)
    BreakGlassReview.objects.filter(pk=late.pk).update(opened_at=timezone.now() - timedelta(days=2))
    assert tasks.send_unsent_break_glass_emails(older_than_seconds=0) == 0
    assert BreakGlassReview.objects.get(pk=late.pk).emailed_at is not None and len(mailoutbox) == 1
    assert review.pk != late.pk


def test_every_step_is_audited(alliance_world: Any, study: Any) -> None:
    review = grants.break_glass(by=who(alliance_world.stranger), study=study, reason=REASON, source="10.0.0.9")
    event = AuditEvent.objects.get(action="break-glass")
    assert (event.object_id, event.basis, event.detail["reason"]) == (study.study_uid, review.basis, REASON)
    assert AuditEvent.objects.filter(action="grant.create", basis=review.basis).exists()
    client_for(alliance_world.stranger).get(f"/imaging/studies/{study.study_uid}/")
    assert AuditEvent.objects.filter(action="study.view", basis=review.basis).exists()
    grants.break_glass_review(by=who(alliance_world.inst_admin_a), review=review, approve=True)
    assert AuditEvent.objects.get(action="break-glass.review").detail["state"] == "approved"


def test_the_owning_institution_admin_is_told_in_the_app_and_by_email(
    alliance_world: Any, study: Any, mailoutbox: list[Any], django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    alliance_world.inst_admin_a.user.email = "admin@clinic-a.example"
    alliance_world.inst_admin_a.user.save()
    queued: list[int] = []
    monkeypatch.setattr(tasks.send_break_glass_email, "delay", queued.append)
    with django_capture_on_commit_callbacks(execute=True):
        review = grants.break_glass(by=who(alliance_world.stranger), study=study, reason=REASON)
    assert queued == [review.pk]
    assert tasks.send_break_glass_email(review.pk) == 1
    assert tasks.send_break_glass_email(review.pk) == 0  # at most once
    (mail,) = mailoutbox
    assert (
        mail.to == ["admin@clinic-a.example"] and REASON in mail.body and "/imaging/break-glass/reviews/" in mail.body
    )
    home = client_for(alliance_world.inst_admin_a).get("/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert 'id="nav-break-glass-reviews"' in home and 'badge-red">1<' in home
    other = client_for(alliance_world.hosp_admin).get("/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert 'badge-red">1<' not in other


def test_the_admin_approves_from_the_queue(alliance_world: Any, study: Any) -> None:
    review = grants.break_glass(by=who(alliance_world.stranger), study=study, reason=REASON)
    admin = client_for(alliance_world.inst_admin_a)
    queue = admin.get("/imaging/break-glass/reviews/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert REASON in queue and "ZHAO LIU" in queue
    assert admin.post(f"/imaging/break-glass/reviews/{review.pk}/", {"decision": "approve"}).status_code == 302
    review.refresh_from_db()
    assert review.state == "approved" and review.reviewed_by == alliance_world.inst_admin_a.user
    assert StudyUserGrant.objects.filter(basis=review.basis, reviewed_at__isnull=False).exists()
    assert sees(alliance_world.stranger, study) == {"page", "rest", "dicomweb"}  # approval leaves it open


def test_a_flag_needs_a_comment_and_ends_the_access(alliance_world: Any, study: Any) -> None:
    review = grants.break_glass(by=who(alliance_world.stranger), study=study, reason=REASON)
    admin = client_for(alliance_world.inst_admin_a)
    admin.post(f"/imaging/break-glass/reviews/{review.pk}/", {"decision": "flag", "comment": ""})
    review.refresh_from_db()
    assert review.state == "pending"
    api = token_client(alliance_world.inst_admin_a)
    flagged = api.post(
        f"/api/v1/break-glass/reviews/{review.pk}/", {"decision": "flag", "comment": "Not our patient."}, format="json"
    )
    assert flagged.status_code == 200 and flagged.json()["state"] == "flagged"
    assert sees(alliance_world.stranger, study) == set()
    again = api.post(f"/api/v1/break-glass/reviews/{review.pk}/", {"decision": "approve"}, format="json")
    assert again.status_code == 400


def test_only_the_owning_institution_admin_reviews(alliance_world: Any, study: Any) -> None:
    review = grants.break_glass(by=who(alliance_world.stranger), study=study, reason=REASON)
    hosp_admin = client_for(alliance_world.hosp_admin)
    assert hosp_admin.post(f"/imaging/break-glass/reviews/{review.pk}/", {"decision": "approve"}).status_code == 404
    assert "ZHAO" not in hosp_admin.get("/imaging/break-glass/reviews/").content.decode()
    assert client_for(alliance_world.owner).get("/imaging/break-glass/reviews/").status_code == 403
    listed = token_client(alliance_world.inst_admin_a).get("/api/v1/break-glass/reviews/").json()
    assert [row["id"] for row in listed] == [review.pk]
    assert token_client(alliance_world.owner).get("/api/v1/break-glass/reviews/").status_code == 403
