"""The membership REST API, tried by every persona of the alliance (allowed and refused)."""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.core.management import call_command
from rest_framework.test import APIClient

from alliance import audit, services
from alliance.models import AuditEvent, Department, Device, Doctor, Institution, Pool
from tests import factories
from tests.conftest import client_for

PERSONAS = (
    "owner",
    "colleague",
    "inst_admin_a",
    "specialist",
    "outsider_specialist",
    "hosp_admin",
    "stranger",
    "alliance_admin",
)
ADMINS = ("inst_admin_a", "hosp_admin", "alliance_admin")
NON_ADMINS = tuple(p for p in PERSONAS if p not in ADMINS)
User = get_user_model()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    """Argon2 costs seconds per persona on a busy CI machine; hashing strength is not tested here."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def api_for(doctor: Doctor, keyword: str = "Token") -> APIClient:
    client = APIClient()
    token = services.token_create(doctor=doctor, by=audit.SYSTEM)
    client.credentials(HTTP_AUTHORIZATION=f"{keyword} {token.key}")
    return client


@pytest.fixture
def world(alliance_world: SimpleNamespace) -> SimpleNamespace:
    """The persona world plus a department and a device per clinic, and another alliance."""
    w = alliance_world
    w.dept_a = services.department_create(institution=w.clin_a, name="General practice", by=audit.SYSTEM)
    w.dept_hosp = services.department_create(institution=w.hosp, name="Radiology", by=audit.SYSTEM)
    w.device_a = services.device_create(
        institution=w.clin_a, ae_title="CLINA_DR", host="10.0.0.1", port=104, by=audit.SYSTEM
    )
    w.device_hosp = services.device_create(
        institution=w.hosp, ae_title="HOSP_CT", host="10.0.0.2", port=104, by=audit.SYSTEM
    )
    w.elsewhere = factories.make_institution(alliance=factories.AllianceFactory(name="Other"), ae_title="ELSEWHERE")
    w.elsewhere_doctor = factories.make_doctor(institution=w.elsewhere, roles=["institution_admin"])
    return w


def call(world: SimpleNamespace, persona: str, method: str, url: str, data: Any = None) -> Any:
    client = api_for(getattr(world, persona))
    return getattr(client, method)(url, data, format="json")


def ids(response: Any) -> set[int]:
    return {row["id"] for row in response.json()["results"]}


def error_fields(response: Any) -> dict[str, Any]:
    assert response.status_code == 400, response.content
    body = response.json()["error"]
    assert body["code"] == "invalid"
    return body["fields"]


# --- authentication -------------------------------------------------------------------


def test_anonymous_gets_401_in_the_one_error_format(world: SimpleNamespace) -> None:
    response = APIClient().get("/api/v1/institutions/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize("keyword", ["Token", "Bearer"])
def test_token_is_accepted_with_either_prefix(world: SimpleNamespace, keyword: str) -> None:
    assert api_for(world.owner, keyword).get("/api/v1/me/").status_code == 200


def test_wrong_token_is_refused(world: SimpleNamespace) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert client.get("/api/v1/me/").status_code == 401


def test_session_sign_in_works_for_reads(world: SimpleNamespace) -> None:
    assert client_for(world.owner).get("/api/v1/institutions/").status_code == 200


def test_deactivating_a_doctor_through_the_api_kills_their_token_at_once(world: SimpleNamespace) -> None:
    colleague = api_for(world.colleague)
    assert colleague.get("/api/v1/me/").status_code == 200
    response = call(world, "inst_admin_a", "post", f"/api/v1/doctors/{world.colleague.pk}/deactivate/")
    assert response.status_code == 200
    assert response.json()["active"] is False
    assert colleague.get("/api/v1/me/").status_code == 401
    assert AuditEvent.objects.filter(action="doctor.deactivate", object_id=str(world.colleague.pk)).exists()


def test_token_of_a_user_switched_off_directly_is_refused(world: SimpleNamespace) -> None:
    client = api_for(world.owner)
    User.objects.filter(pk=world.owner.user.pk).update(is_active=False)
    assert client.get("/api/v1/institutions/").status_code == 401


def test_token_stops_working_when_the_doctors_institution_is_switched_off(world: SimpleNamespace) -> None:
    client = api_for(world.stranger)
    services.institution_update(institution=world.clin_b, active=False, by=audit.SYSTEM)
    assert client.get("/api/v1/me/").status_code == 401


# --- me -------------------------------------------------------------------------------


@pytest.mark.parametrize("persona", PERSONAS)
def test_me_returns_the_callers_own_record_and_roles(world: SimpleNamespace, persona: str) -> None:
    doctor = getattr(world, persona)
    body = call(world, persona, "get", "/api/v1/me/").json()
    assert body["username"] == doctor.user.username
    assert body["roles"] == doctor.roles
    assert body["institution"]["ae_title"] == doctor.institution.ae_title
    assert body["is_alliance_admin"] is (persona == "alliance_admin")
    managed = set(Institution.objects.filter(alliance=world.alliance).values_list("pk", flat=True))
    expected = {"inst_admin_a": {world.clin_a.pk}, "hosp_admin": {world.hosp.pk}, "alliance_admin": managed}
    assert set(body["managed_institutions"]) == expected.get(persona, set())


def test_me_lists_the_specialists_pools(world: SimpleNamespace) -> None:
    body = call(world, "specialist", "get", "/api/v1/me/").json()
    assert body["pools"] == [{"id": world.pool.pk, "name": "CT reading desk"}]
    assert body["specialties"] == ["radiology"]


# --- institutions ---------------------------------------------------------------------


@pytest.mark.parametrize("persona", PERSONAS)
def test_every_member_lists_the_alliances_institutions_and_no_others(world: SimpleNamespace, persona: str) -> None:
    response = call(world, persona, "get", "/api/v1/institutions/")
    assert response.status_code == 200
    assert ids(response) == {world.hosp.pk, world.clin_a.pk, world.clin_b.pk, world.office.pk}
    assert call(world, persona, "get", f"/api/v1/institutions/{world.elsewhere.pk}/").status_code == 404


def test_institution_of_another_alliance_is_404_in_the_error_format(world: SimpleNamespace) -> None:
    response = call(world, "alliance_admin", "patch", f"/api/v1/institutions/{world.elsewhere.pk}/", {"name": "x"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_alliance_admin_adds_an_institution_in_their_alliance_audited(world: SimpleNamespace) -> None:
    data = {"name": "白河镇卫生院", "level": "township", "ae_title": "baihe", "parent": world.hosp.pk}
    response = call(world, "alliance_admin", "post", "/api/v1/institutions/", data)
    assert response.status_code == 201, response.content
    assert response.json()["ae_title"] == "BAIHE"
    institution = Institution.objects.get(ae_title="BAIHE")
    assert (institution.alliance, institution.parent) == (world.alliance, world.hosp)
    event = AuditEvent.objects.get(action="institution.create", object_id=str(institution.pk))
    assert event.actor_id == str(world.alliance_admin.user.pk)


@pytest.mark.parametrize("persona", [p for p in PERSONAS if p != "alliance_admin"])
def test_only_alliance_admins_add_or_change_institutions(world: SimpleNamespace, persona: str) -> None:
    data = {"name": "New", "level": "township", "ae_title": "NEW1"}
    assert call(world, persona, "post", "/api/v1/institutions/", data).status_code == 403
    response = call(world, persona, "patch", f"/api/v1/institutions/{world.clin_a.pk}/", {"name": "Renamed"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert not Institution.objects.filter(ae_title="NEW1").exists()
    assert Institution.objects.get(pk=world.clin_a.pk).name == "Clinic A"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "Dup", "level": "township", "ae_title": "CLINA"}, "ae_title"),
        ({"name": "Dup", "level": "township", "ae_title": "HOSP_CT"}, "ae_title"),
        ({"name": "Bad", "level": "galaxy", "ae_title": "BAD1"}, "level"),
        ({"name": "Bad", "level": "township", "ae_title": "BAD 1"}, "ae_title"),
        ({"name": "Clinic A", "level": "township", "ae_title": "BAD1"}, "name"),
        ({"level": "township", "ae_title": "BAD1"}, "name"),
    ],
)
def test_institution_bad_input_is_refused_naming_the_field(
    world: SimpleNamespace, data: dict[str, Any], field: str
) -> None:
    before = Institution.objects.count()
    response = call(world, "alliance_admin", "post", "/api/v1/institutions/", data)
    assert field in error_fields(response)
    assert Institution.objects.count() == before


def test_institution_parent_from_another_alliance_is_refused_on_parent(world: SimpleNamespace) -> None:
    data = {"name": "X", "level": "township", "ae_title": "X1", "parent": world.elsewhere.pk}
    assert "parent" in error_fields(call(world, "alliance_admin", "post", "/api/v1/institutions/", data))
    response = call(
        world, "alliance_admin", "patch", f"/api/v1/institutions/{world.hosp.pk}/", {"parent": world.clin_a.pk}
    )
    assert "parent" in error_fields(response)


def test_alliance_admin_switches_an_institution_off(world: SimpleNamespace) -> None:
    response = call(world, "alliance_admin", "patch", f"/api/v1/institutions/{world.clin_b.pk}/", {"active": False})
    assert response.status_code == 200
    assert response.json()["active"] is False
    assert AuditEvent.objects.filter(action="institution.update", object_id=str(world.clin_b.pk)).exists()


def test_alliance_admin_may_not_switch_off_their_own_institution(world: SimpleNamespace) -> None:
    response = call(world, "alliance_admin", "patch", f"/api/v1/institutions/{world.office.pk}/", {"active": False})
    assert "active" in error_fields(response)
    assert Institution.objects.get(pk=world.office.pk).active


# --- departments ----------------------------------------------------------------------


@pytest.mark.parametrize("persona", PERSONAS)
def test_departments_of_the_alliance_are_listed_to_every_member(world: SimpleNamespace, persona: str) -> None:
    assert ids(call(world, persona, "get", "/api/v1/departments/")) == {world.dept_a.pk, world.dept_hosp.pk}
    filtered = call(world, persona, "get", f"/api/v1/departments/?institution={world.hosp.pk}")
    assert ids(filtered) == {world.dept_hosp.pk}


def test_department_filter_must_be_an_id(world: SimpleNamespace) -> None:
    assert "institution" in error_fields(call(world, "owner", "get", "/api/v1/departments/?institution=x"))


@pytest.mark.parametrize(
    ("persona", "institution", "expected"),
    [
        ("inst_admin_a", "clin_a", 201),
        ("inst_admin_a", "hosp", 403),
        ("hosp_admin", "hosp", 201),
        ("alliance_admin", "clin_b", 201),
        ("owner", "clin_a", 403),
        ("specialist", "hosp", 403),
        ("stranger", "clin_b", 403),
    ],
)
def test_departments_are_added_by_their_institutions_admins(
    world: SimpleNamespace, persona: str, institution: str, expected: int
) -> None:
    data = {"institution": getattr(world, institution).pk, "name": "Ultrasound"}
    response = call(world, persona, "post", "/api/v1/departments/", data)
    assert response.status_code == expected, response.content
    assert Department.objects.filter(name="Ultrasound").exists() is (expected == 201)


def test_department_bad_input_names_the_field(world: SimpleNamespace) -> None:
    duplicate = {"institution": world.clin_a.pk, "name": "General practice"}
    assert "name" in error_fields(call(world, "inst_admin_a", "post", "/api/v1/departments/", duplicate))
    unseen = {"institution": world.elsewhere.pk, "name": "X"}
    assert "institution" in error_fields(call(world, "alliance_admin", "post", "/api/v1/departments/", unseen))


def test_department_is_renamed_and_closed_by_its_admin_only(world: SimpleNamespace) -> None:
    url = f"/api/v1/departments/{world.dept_a.pk}/"
    assert call(world, "hosp_admin", "patch", url, {"active": False}).status_code == 403
    response = call(world, "inst_admin_a", "patch", url, {"name": "全科", "active": False})
    assert response.status_code == 200
    assert response.json() == {"id": world.dept_a.pk, "institution": world.clin_a.pk, "name": "全科", "active": False}


# --- pools ----------------------------------------------------------------------------


@pytest.mark.parametrize("persona", PERSONAS)
def test_pools_are_listed_to_every_member_with_their_members(world: SimpleNamespace, persona: str) -> None:
    body = call(world, persona, "get", "/api/v1/pools/").json()
    assert body["results"] == [
        {
            "id": world.pool.pk,
            "institution": world.hosp.pk,
            "specialty": "radiology",
            "name": "CT reading desk",
            "members": [world.specialist.pk],
            "two_level_signoff": False,
            "reviewers": [],
            "active": True,
        }
    ]


def test_hospital_admin_opens_a_desk_with_its_specialists(world: SimpleNamespace) -> None:
    data = {
        "institution": world.hosp.pk,
        "specialty": "radiology",
        "name": "MR desk",
        "members": [world.outsider_specialist.pk],
    }
    response = call(world, "hosp_admin", "post", "/api/v1/pools/", data)
    assert response.status_code == 201, response.content
    pool = Pool.objects.get(name="MR desk")
    assert world.outsider_specialist.user.groups.filter(pk=pool.group_id).exists()


@pytest.mark.parametrize("persona", ["inst_admin_a", "owner", "specialist", "stranger"])
def test_others_may_not_open_a_desk_at_the_hospital(world: SimpleNamespace, persona: str) -> None:
    data = {"institution": world.hosp.pk, "specialty": "radiology", "name": "MR desk"}
    assert call(world, persona, "post", "/api/v1/pools/", data).status_code == 403
    assert not Pool.objects.filter(name="MR desk").exists()


def test_pool_members_must_work_at_the_pools_institution(world: SimpleNamespace) -> None:
    url = f"/api/v1/pools/{world.pool.pk}/"
    response = call(world, "alliance_admin", "patch", url, {"members": [world.owner.pk]})
    assert "members" in error_fields(response)
    unseen = call(world, "hosp_admin", "patch", url, {"members": [world.owner.pk]})
    assert "members" in error_fields(unseen)
    assert list(world.pool.members.all()) == [world.specialist]


def test_pool_membership_change_moves_the_grant_group(world: SimpleNamespace) -> None:
    url = f"/api/v1/pools/{world.pool.pk}/"
    response = call(world, "hosp_admin", "patch", url, {"members": [world.outsider_specialist.pk]})
    assert response.json()["members"] == [world.outsider_specialist.pk]
    assert not world.specialist.user.groups.filter(pk=world.pool.group_id).exists()
    assert world.outsider_specialist.user.groups.filter(pk=world.pool.group_id).exists()
    assert call(world, "inst_admin_a", "patch", url, {"name": "x"}).status_code == 403


def test_unknown_specialty_is_refused_on_specialty(world: SimpleNamespace) -> None:
    data = {"institution": world.hosp.pk, "specialty": "astrology", "name": "Stars"}
    assert "specialty" in error_fields(call(world, "hosp_admin", "post", "/api/v1/pools/", data))


# --- doctors --------------------------------------------------------------------------


@pytest.mark.parametrize("persona", NON_ADMINS)
def test_doctors_are_not_listed_to_clinicians_and_specialists(world: SimpleNamespace, persona: str) -> None:
    assert call(world, persona, "get", "/api/v1/doctors/").status_code == 403
    assert call(world, persona, "get", f"/api/v1/doctors/{world.owner.pk}/").status_code == 403


def test_institution_admin_lists_only_their_own_doctors(world: SimpleNamespace) -> None:
    response = call(world, "inst_admin_a", "get", "/api/v1/doctors/")
    assert ids(response) == {world.owner.pk, world.colleague.pk, world.inst_admin_a.pk}
    assert call(world, "inst_admin_a", "get", f"/api/v1/doctors/{world.specialist.pk}/").status_code == 404


def test_alliance_admin_lists_every_doctor_of_the_alliance_only(world: SimpleNamespace) -> None:
    found = ids(call(world, "alliance_admin", "get", "/api/v1/doctors/?limit=100"))
    assert found == set(Doctor.objects.filter(institution__alliance=world.alliance).values_list("pk", flat=True))
    assert world.elsewhere_doctor.pk not in found


def test_institution_admin_adds_a_doctor_who_can_sign_in(world: SimpleNamespace) -> None:
    data = {
        "institution": world.clin_a.pk,
        "username": "newdoc",
        "roles": ["clinician"],
        "password": "Fresh-pass-9876!",
        "full_name": "周 芳",
        "department": world.dept_a.pk,
        "specialties": ["radiology"],
    }
    response = call(world, "inst_admin_a", "post", "/api/v1/doctors/", data)
    assert response.status_code == 201, response.content
    body = response.json()
    assert "password" not in body
    assert (body["username"], body["full_name"], body["department"]) == ("newdoc", "周 芳", world.dept_a.pk)
    assert User.objects.get(username="newdoc").check_password("Fresh-pass-9876!")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"username": "owner"}, "username"),
        ({"password": "password"}, "password"),
        ({"roles": []}, "roles"),
        ({"roles": ["boss"]}, "roles"),
        ({"department": 999999}, "department"),
        ({"specialties": ["astrology"]}, "specialties"),
        ({"institution": 999999}, "institution"),
    ],
)
def test_doctor_bad_input_names_the_field_and_saves_nothing(
    world: SimpleNamespace, change: dict[str, Any], field: str
) -> None:
    data = {"institution": world.clin_a.pk, "username": "newdoc", "roles": ["clinician"], **change}
    before = User.objects.count()
    assert field in error_fields(call(world, "inst_admin_a", "post", "/api/v1/doctors/", data))
    assert User.objects.count() == before


def test_department_of_another_institution_is_refused_on_department(world: SimpleNamespace) -> None:
    data = {"institution": world.clin_a.pk, "username": "n1", "roles": ["clinician"], "department": world.dept_hosp.pk}
    assert "department" in error_fields(call(world, "alliance_admin", "post", "/api/v1/doctors/", data))


def test_only_alliance_admins_make_alliance_admins(world: SimpleNamespace) -> None:
    data = {"institution": world.clin_a.pk, "username": "boss", "roles": ["alliance_admin"]}
    assert call(world, "inst_admin_a", "post", "/api/v1/doctors/", data).status_code == 403
    promote = {"roles": ["clinician", "alliance_admin"]}
    assert call(world, "inst_admin_a", "patch", f"/api/v1/doctors/{world.owner.pk}/", promote).status_code == 403
    assert call(world, "alliance_admin", "post", "/api/v1/doctors/", data).status_code == 201
    boss = Doctor.objects.get(user__username="boss")
    url = f"/api/v1/doctors/{boss.pk}/"
    assert call(world, "inst_admin_a", "post", url + "deactivate/").status_code == 403
    assert call(world, "inst_admin_a", "patch", url, {"roles": ["clinician"]}).status_code == 403


def test_institution_admin_may_not_add_doctors_elsewhere(world: SimpleNamespace) -> None:
    data = {"institution": world.hosp.pk, "username": "intruder", "roles": ["clinician"]}
    assert call(world, "inst_admin_a", "post", "/api/v1/doctors/", data).status_code == 403
    assert not User.objects.filter(username="intruder").exists()


def test_admin_changes_roles_title_and_specialties(world: SimpleNamespace) -> None:
    change = {"roles": ["clinician", "specialist"], "title": "主治医师", "specialties": ["radiology"]}
    response = call(world, "inst_admin_a", "patch", f"/api/v1/doctors/{world.owner.pk}/", change)
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["roles"], body["title"], body["specialties"]) == (
        ["clinician", "specialist"],
        "主治医师",
        ["radiology"],
    )
    assert AuditEvent.objects.filter(action="doctor.update", object_id=str(world.owner.pk)).exists()


def test_admin_may_not_deactivate_themselves(world: SimpleNamespace) -> None:
    response = call(world, "inst_admin_a", "post", f"/api/v1/doctors/{world.inst_admin_a.pk}/deactivate/")
    assert "active" in error_fields(response)
    assert Doctor.objects.get(pk=world.inst_admin_a.pk).active


def test_reactivated_doctor_signs_in_again_with_a_new_token(world: SimpleNamespace) -> None:
    url = f"/api/v1/doctors/{world.colleague.pk}/"
    call(world, "inst_admin_a", "post", url + "deactivate/")
    response = call(world, "inst_admin_a", "post", url + "activate/")
    assert response.json()["active"] is True
    assert api_for(Doctor.objects.get(pk=world.colleague.pk)).get("/api/v1/me/").status_code == 200


def test_moving_a_specialist_ends_their_desk_membership(world: SimpleNamespace) -> None:
    url = f"/api/v1/doctors/{world.specialist.pk}/move/"
    assert call(world, "hosp_admin", "post", url, {"institution": world.clin_b.pk}).status_code == 403
    response = call(world, "alliance_admin", "post", url, {"institution": world.clin_b.pk})
    assert response.status_code == 200
    assert (response.json()["institution"], response.json()["pools"]) == (world.clin_b.pk, [])
    assert not world.specialist.user.groups.filter(pk=world.pool.group_id).exists()


def test_move_bad_input_names_the_field(world: SimpleNamespace) -> None:
    url = f"/api/v1/doctors/{world.owner.pk}/move/"
    assert "institution" in error_fields(call(world, "alliance_admin", "post", url, {}))
    wrong_department = {"institution": world.clin_b.pk, "department": world.dept_hosp.pk}
    assert "department" in error_fields(call(world, "alliance_admin", "post", url, wrong_department))
    assert Doctor.objects.get(pk=world.owner.pk).institution == world.clin_a


# --- devices --------------------------------------------------------------------------


@pytest.mark.parametrize("persona", NON_ADMINS)
def test_devices_are_not_shown_to_clinicians_and_specialists(world: SimpleNamespace, persona: str) -> None:
    assert call(world, persona, "get", "/api/v1/devices/").status_code == 403


def test_institution_admin_sees_and_edits_only_their_devices(world: SimpleNamespace) -> None:
    assert ids(call(world, "inst_admin_a", "get", "/api/v1/devices/")) == {world.device_a.pk}
    assert call(world, "inst_admin_a", "get", f"/api/v1/devices/{world.device_hosp.pk}/").status_code == 404
    other = call(world, "inst_admin_a", "patch", f"/api/v1/devices/{world.device_hosp.pk}/", {"active": False})
    assert other.status_code == 404
    response = call(world, "inst_admin_a", "patch", f"/api/v1/devices/{world.device_a.pk}/", {"active": False})
    assert response.json()["active"] is False
    assert ids(call(world, "alliance_admin", "get", "/api/v1/devices/")) == {world.device_a.pk, world.device_hosp.pk}


def test_admin_registers_a_device(world: SimpleNamespace) -> None:
    data = {"institution": world.clin_a.pk, "ae_title": "clina_us", "host": "10.0.0.9", "port": 11112}
    response = call(world, "inst_admin_a", "post", "/api/v1/devices/", data)
    assert response.status_code == 201, response.content
    assert Device.objects.get(ae_title="CLINA_US").institution == world.clin_a
    data["institution"] = world.hosp.pk
    data["ae_title"] = "HOSP_US"
    assert call(world, "inst_admin_a", "post", "/api/v1/devices/", data).status_code == 403


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"ae_title": "CLINA"}, "ae_title"),
        ({"ae_title": "hosp_ct"}, "ae_title"),
        ({"port": 0}, "port"),
        ({"host": ""}, "host"),
    ],
)
def test_device_bad_input_names_the_field(world: SimpleNamespace, change: dict[str, Any], field: str) -> None:
    data = {"institution": world.clin_a.pk, "ae_title": "NEWDEV", "host": "10.0.0.9", "port": 104, **change}
    before = Device.objects.count()
    assert field in error_fields(call(world, "inst_admin_a", "post", "/api/v1/devices/", data))
    assert Device.objects.count() == before


def test_device_keeps_its_own_ae_title_but_not_anothers(world: SimpleNamespace) -> None:
    url = f"/api/v1/devices/{world.device_a.pk}/"
    assert call(world, "inst_admin_a", "patch", url, {"ae_title": "clina_dr", "port": 105}).json()["port"] == 105
    assert "ae_title" in error_fields(call(world, "alliance_admin", "patch", url, {"ae_title": "HOSP_CT"}))
    assert Device.objects.get(pk=world.device_a.pk).ae_title == "CLINA_DR"


# --- pagination and query counts ------------------------------------------------------


def test_lists_are_paginated(world: SimpleNamespace) -> None:
    body = call(world, "alliance_admin", "get", "/api/v1/institutions/?limit=2").json()
    assert body["count"] == 4
    assert len(body["results"]) == 2
    assert body["next"]


@pytest.fixture
def crowded(world: SimpleNamespace) -> SimpleNamespace:
    radiology = world.radiology
    for n in range(15):
        factories.make_doctor(institution=world.hosp, roles=["specialist"], specialties=[radiology], username=f"s{n}")
        services.department_create(institution=world.hosp, name=f"Ward {n}", by=audit.SYSTEM)
        services.device_create(institution=world.hosp, ae_title=f"HOSP_D{n}", host="h", port=104, by=audit.SYSTEM)
    services.pool_set_members(pool=world.pool, members=list(world.hosp.doctors.all()), by=audit.SYSTEM)
    for n in range(5):
        factories.make_pool(institution=world.hosp, members=list(world.hosp.doctors.all()[:5]), name=f"Desk {n}")
    return world


@pytest.mark.parametrize("path", ["institutions", "departments", "pools", "doctors", "devices"])
def test_list_endpoints_use_a_constant_number_of_queries(
    crowded: SimpleNamespace, path: str, django_assert_max_num_queries: Any
) -> None:
    client = api_for(crowded.alliance_admin)
    with django_assert_max_num_queries(9):
        response = client.get(f"/api/v1/{path}/?limit=50")
    assert response.status_code == 200
    assert len(response.json()["results"]) >= 4


# --- schema and docs ------------------------------------------------------------------


def test_openapi_schema_generates_without_warnings(db: Any) -> None:
    out = io.StringIO()
    call_command("spectacular", "--fail-on-warn", "--validate", stdout=out, stderr=io.StringIO())
    assert "/api/v1/doctors/{id}/deactivate/" in out.getvalue()
    assert "/dicomweb/" not in out.getvalue()  # PS3.18 documents DICOMweb; the schema is ours only


def test_schema_and_docs_are_served_without_a_cdn(world: SimpleNamespace) -> None:
    client = APIClient()
    assert client.get("/api/schema/").status_code == 200
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "https://" not in html and "//cdn" not in html
    assert "<style" not in html and "<script>" not in html  # the CSP allows no inline style or script
    assert "/static/api/docs.css" in html and finders.find("api/docs.css")
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
