"""Nobody grants themselves images (issue #22 item 1): no change to one's own roles, institution
or desks; a change that gives an admin account clinical access waits for a second admin; a
desk's cases reach a member only from the day they joined it."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import mail
from django.http import Http404
from kombu.exceptions import OperationalError

from alliance import services
from alliance import tasks as alliance_tasks
from alliance.access import resolve_principal
from alliance.audit import SYSTEM
from alliance.models import AuditEvent, Pool, PoolMembership, PrivilegeChange
from consults import access as consult_access
from consults.models import Status
from imaging import access as imaging_access
from tests.conftest import client_for
from tests.consults.conftest import walk
from tests.factories import make_doctor


@pytest.fixture
def world(alliance_world: Any) -> Any:
    return alliance_world


def _api(doctor: Any) -> Any:
    return client_for(doctor)


def _sees(doctor: Any, study: Any) -> bool:
    try:
        imaging_access.get_study_for(resolve_principal(doctor.user), study.study_uid)
    except Http404:
        return False
    return True


def test_an_alliance_admin_cannot_give_itself_a_clinical_role(world: Any) -> None:
    admin = world.alliance_admin
    response = _api(admin).patch(
        f"/api/v1/doctors/{admin.pk}/", {"roles": ["alliance_admin", "clinician"]}, content_type="application/json"
    )
    assert response.status_code == 403, response.content
    admin.refresh_from_db()
    assert admin.roles == ["alliance_admin"]
    assert not PrivilegeChange.objects.exists()


def test_an_alliance_admin_cannot_move_itself_into_a_clinic(world: Any) -> None:
    admin = world.alliance_admin
    response = _api(admin).post(
        f"/api/v1/doctors/{admin.pk}/move/", {"institution": world.clin_a.pk}, content_type="application/json"
    )
    assert response.status_code == 403, response.content
    admin.refresh_from_db()
    assert admin.institution_id == world.office.pk


def test_an_institution_admin_cannot_seat_itself_on_a_desk(world: Any) -> None:
    response = _api(world.hosp_admin).patch(
        f"/api/v1/pools/{world.pool.pk}/",
        {"members": [world.specialist.pk, world.hosp_admin.pk]},
        content_type="application/json",
    )
    assert response.status_code == 403, response.content
    assert world.hosp_admin not in world.pool.members.all()


def test_the_console_refuses_seating_oneself_with_a_message(world: Any) -> None:
    client = client_for(world.hosp_admin)
    response = client.post(
        f"/manage/pools/{world.pool.pk}/",
        {
            "name": world.pool.name,
            "specialty": world.pool.specialty_id,
            "members": [world.specialist.pk, world.hosp_admin.pk],
        },
    )
    assert response.status_code == 200
    assert "任何人都不能把自己加入" in response.content.decode()
    assert world.hosp_admin not in world.pool.members.all()


def test_seating_another_admin_waits_for_a_second_admin_who_is_neither_asker_nor_subject(
    world: Any, django_capture_on_commit_callbacks: Any
) -> None:
    other_admin = make_doctor(
        institution=world.hosp, roles=["institution_admin", "specialist"], username="admin2", email="admin2@hosp.test"
    )
    world.hosp_admin.user.email = "admin@hosp.test"
    world.hosp_admin.user.save()
    with django_capture_on_commit_callbacks(execute=True):
        response = _api(world.hosp_admin).patch(
            f"/api/v1/pools/{world.pool.pk}/",
            {"members": [world.specialist.pk, other_admin.pk, world.outsider_specialist.pk]},
            content_type="application/json",
        )
    assert response.status_code == 202, response.content
    body = response.json()
    assert [c["kind"] for c in body["pending_changes"]] == ["pool"]
    members = set(world.pool.members.all())
    # the ordinary specialist is seated now; the admin account waits
    assert world.outsider_specialist in members and other_admin not in members
    change = PrivilegeChange.objects.get()
    assert change.state == PrivilegeChange.State.PENDING
    # the admins of the hospital are told, the subject among them
    told = {address for m in mail.outbox for address in m.to}
    assert other_admin.user.email in told and world.hosp_admin.user.email in told
    # neither the asker nor the subject may decide it
    for who in (world.hosp_admin, other_admin):
        refused = _api(who).post(f"/api/v1/privilege-changes/{change.pk}/approve/", {}, content_type="application/json")
        assert refused.status_code in (403, 404), refused.content
    change.refresh_from_db()
    assert change.state == PrivilegeChange.State.PENDING
    # the alliance admin (who manages the hospital) approves
    done = _api(world.alliance_admin).post(
        f"/api/v1/privilege-changes/{change.pk}/approve/", {"comment": "new reader"}, content_type="application/json"
    )
    assert done.status_code == 200, done.content
    assert done.json()["state"] == "approved"
    assert other_admin in world.pool.members.all()
    actions = list(
        AuditEvent.objects.filter(action__startswith="privilege.").order_by("id").values_list("action", flat=True)
    )
    assert actions == ["privilege.request", "privilege.approve"]
    # decided once only
    again = _api(world.alliance_admin).post(
        f"/api/v1/privilege-changes/{change.pk}/refuse/", {}, content_type="application/json"
    )
    assert again.status_code == 403


def test_notices_lost_with_the_broker_are_mailed_once_by_the_sweep(
    world: Any, django_capture_on_commit_callbacks: Any, monkeypatch: Any
) -> None:
    other_admin = make_doctor(
        institution=world.hosp, roles=["institution_admin", "specialist"], username="admin2", email="admin2@hosp.test"
    )

    def broker_away(*_args: Any) -> None:
        raise OperationalError("[Errno 111] Connection refused")  # what Celery raises, the broker stopped

    monkeypatch.setattr(alliance_tasks.privilege_change_notice, "delay", broker_away)
    with django_capture_on_commit_callbacks(execute=True):  # a robust callback: logged, not raised
        response = _api(world.hosp_admin).patch(
            f"/api/v1/pools/{world.pool.pk}/",
            {"members": [world.specialist.pk, other_admin.pk]},
            content_type="application/json",
        )
    assert response.status_code == 202, response.content
    change = PrivilegeChange.objects.get()
    assert mail.outbox == []
    assert alliance_tasks.send_unsent_privilege_notices() == 0  # younger than RETRY_AFTER_SECONDS
    assert alliance_tasks.send_unsent_privilege_notices(older_than_seconds=0) == 1  # the subject, the only address
    assert [m.to for m in mail.outbox] == [[other_admin.user.email]]
    assert alliance_tasks.send_unsent_privilege_notices(older_than_seconds=0) == 0  # once
    assert alliance_tasks.privilege_change_notice(change.pk) == 0  # nor again by a late task
    # decided while the broker is still away: the decision is mailed too
    with django_capture_on_commit_callbacks(execute=True):
        done = _api(world.alliance_admin).post(
            f"/api/v1/privilege-changes/{change.pk}/approve/", {}, content_type="application/json"
        )
    assert done.status_code == 200, done.content
    assert alliance_tasks.send_unsent_privilege_notices(older_than_seconds=0) == 1
    assert len(mail.outbox) == 2 and mail.outbox[0].subject != mail.outbox[1].subject
    change.refresh_from_db()
    assert change.notified_state == change.state == PrivilegeChange.State.APPROVED


def test_a_clinical_role_for_an_alliance_admin_waits_and_is_refusable(world: Any) -> None:
    second = make_doctor(institution=world.office, roles=["alliance_admin"], username="alliance_admin2")
    response = _api(world.alliance_admin).patch(
        f"/api/v1/doctors/{second.pk}/",
        {"roles": ["alliance_admin", "clinician"], "title": "Dr"},
        content_type="application/json",
    )
    assert response.status_code == 202, response.content
    second.refresh_from_db()
    assert second.roles == ["alliance_admin"]
    assert second.title == "Dr"  # the rest of the change is made
    change = PrivilegeChange.objects.get(subject=second)
    assert change.payload == {"roles": ["alliance_admin", "clinician"]}
    third = make_doctor(institution=world.office, roles=["alliance_admin"], username="alliance_admin3")
    refused = _api(third).post(
        f"/api/v1/privilege-changes/{change.pk}/refuse/", {"comment": "no"}, content_type="application/json"
    )
    assert refused.status_code == 200, refused.content
    second.refresh_from_db()
    assert second.roles == ["alliance_admin"]
    assert AuditEvent.objects.filter(action="privilege.refuse", object_id=str(second.pk)).exists()


def test_an_ordinary_role_change_is_made_at_once(world: Any) -> None:
    response = _api(world.inst_admin_a).patch(
        f"/api/v1/doctors/{world.colleague.pk}/",
        {"roles": ["clinician", "specialist"]},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    world.colleague.refresh_from_db()
    assert set(world.colleague.roles) == {"clinician", "specialist"}


def test_a_desk_member_sees_only_cases_sent_since_joining(world: Any, desk_clock_real: Any) -> None:
    before = walk(world, Status.REQUESTED)
    newcomer = make_doctor(institution=world.hosp, roles=["specialist"], username="newcomer")
    world.pool.members.add(newcomer)
    after = walk(world, Status.REQUESTED)
    principal = resolve_principal(newcomer.user)
    visible = set(consult_access.consults_visible_to(principal))
    assert after in visible and before not in visible
    assert _sees(newcomer, after.studies.get())
    assert not _sees(newcomer, before.studies.get())
    # the members from before keep both
    assert _sees(world.specialist, before.studies.get()) and _sees(world.specialist, after.studies.get())


def test_leaving_a_desk_and_joining_again_starts_again(world: Any, desk_clock_real: Any) -> None:
    first = walk(world, Status.REQUESTED)
    world.pool.members.remove(world.specialist)
    assert not PoolMembership.objects.filter(pool=world.pool, doctor=world.specialist).exists()
    world.pool.members.add(world.specialist)
    assert not _sees(world.specialist, first.studies.get())


@pytest.mark.parametrize("decision", ["approve", "refuse"])
def test_the_console_page_decides_a_change_with_a_confirmation(world: Any, decision: str) -> None:
    other_admin = make_doctor(institution=world.hosp, roles=["institution_admin", "specialist"], username="admin2")
    _api(world.hosp_admin).patch(
        f"/api/v1/pools/{world.pool.pk}/",
        {"members": [world.specialist.pk, other_admin.pk]},
        content_type="application/json",
    )
    change = PrivilegeChange.objects.get()
    client = client_for(world.alliance_admin)
    listing = client.get("/manage/privileges/").content.decode()
    assert other_admin.display_name in listing
    page = client.get(f"/manage/privileges/{change.pk}/").content.decode()
    assert "批准变更" in page
    response = client.post(f"/manage/privileges/{change.pk}/", {"decision": decision, "comment": "checked"})
    assert response.status_code == 302
    change.refresh_from_db()
    assert change.state == ("approved" if decision == "approve" else "refused")
    assert (other_admin in world.pool.members.all()) == (decision == "approve")


def test_the_audit_page_shows_privilege_changes(world: Any) -> None:
    second = make_doctor(institution=world.office, roles=["alliance_admin"], username="alliance_admin2")
    _api(world.alliance_admin).patch(
        f"/api/v1/doctors/{second.pk}/", {"roles": ["alliance_admin", "specialist"]}, content_type="application/json"
    )
    page = client_for(world.alliance_admin).get("/audit/", {"action": "privilege."}).content.decode()
    assert "privilege.request" in page


# A refusal halfway through an API write leaves nothing changed (each call is one transaction).


def test_a_held_role_change_is_not_kept_when_the_rest_of_the_update_is_refused(world: Any) -> None:
    second = make_doctor(institution=world.office, roles=["alliance_admin"], username="alliance_admin2")
    elsewhere = services.department_create(institution=world.hosp, name="Radiology", by=SYSTEM)
    response = _api(world.alliance_admin).patch(
        f"/api/v1/doctors/{second.pk}/",
        {"roles": ["alliance_admin", "clinician"], "department": elsewhere.pk},
        content_type="application/json",
    )
    assert response.status_code == 400, response.content
    assert not PrivilegeChange.objects.exists()
    assert not AuditEvent.objects.filter(action="privilege.request").exists()


def test_seating_stops_whole_when_a_held_admin_already_waits(world: Any) -> None:
    other_admin = make_doctor(institution=world.hosp, roles=["institution_admin", "specialist"], username="admin2")
    url = f"/api/v1/pools/{world.pool.pk}/"
    first = _api(world.hosp_admin).patch(
        url, {"members": [world.specialist.pk, other_admin.pk]}, content_type="application/json"
    )
    assert first.status_code == 202, first.content
    again = _api(world.hosp_admin).patch(
        url,
        {"members": [world.specialist.pk, world.outsider_specialist.pk, other_admin.pk]},
        content_type="application/json",
    )
    assert again.status_code == 400, again.content
    assert set(world.pool.members.all()) == {world.specialist}
    assert PrivilegeChange.objects.count() == 1


def test_a_pool_created_with_a_refused_member_list_is_not_created(world: Any) -> None:
    response = _api(world.hosp_admin).post(
        "/api/v1/pools/",
        {
            "institution": world.hosp.pk,
            "specialty": world.radiology.code,
            "name": "MR desk",
            "members": [world.specialist.pk, world.hosp_admin.pk],
        },
        content_type="application/json",
    )
    assert response.status_code == 403, response.content
    assert not Pool.objects.filter(name="MR desk").exists()
    assert not AuditEvent.objects.filter(action="pool.create", detail__name="MR desk").exists()


def test_a_pool_update_with_a_refused_member_list_keeps_the_old_name(world: Any) -> None:
    response = _api(world.hosp_admin).patch(
        f"/api/v1/pools/{world.pool.pk}/",
        {"name": "Renamed desk", "members": [world.specialist.pk, world.hosp_admin.pk]},
        content_type="application/json",
    )
    assert response.status_code == 403, response.content
    world.pool.refresh_from_db()
    assert world.pool.name == "CT reading desk"
    assert not AuditEvent.objects.filter(action="pool.update").exists()


def test_a_pool_update_with_bad_reviewers_seats_nobody(world: Any) -> None:
    not_a_member = make_doctor(institution=world.hosp, roles=["specialist"], username="third")
    response = _api(world.hosp_admin).patch(
        f"/api/v1/pools/{world.pool.pk}/",
        {"members": [world.specialist.pk, world.outsider_specialist.pk], "reviewers": [not_a_member.pk]},
        content_type="application/json",
    )
    assert response.status_code == 400, response.content
    assert set(world.pool.members.all()) == {world.specialist}
