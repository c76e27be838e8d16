"""The admin console: who may open which page, field-named errors, and audited writes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.test import Client
from django.urls import reverse

from alliance.models import AuditEvent, Department, Device, Doctor, Institution, Pool
from tests import factories
from tests.conftest import client_for

LISTS = [
    "manage:institution_list",
    "manage:doctor_list",
    "manage:department_list",
    "manage:pool_list",
    "manage:device_list",
]


@pytest.fixture
def world(alliance_world):  # type: ignore[no-untyped-def]
    w = alliance_world
    w.device_b = factories.services.device_create(
        institution=w.clin_b, ae_title="CLINB_DR", host="10.0.0.9", port=104, by=factories.SYSTEM
    )
    w.dept_b = factories.services.department_create(institution=w.clin_b, name="Radiology", by=factories.SYSTEM)
    w.dept_a = factories.services.department_create(institution=w.clin_a, name="General practice", by=factories.SYSTEM)
    other = factories.AllianceFactory(name="Other Alliance")
    w.foreign = factories.make_institution(alliance=other, level="tertiary", name="Far Hospital", ae_title="FAR")
    w.foreign_admin = factories.make_doctor(institution=w.foreign, roles=["alliance_admin"], username="far_admin")
    return w


def _actions(username: str) -> list[str]:
    """What the user changed, in order (their sign-ins left out)."""
    events = AuditEvent.objects.filter(actor_name=username).exclude(action__in=["login", "logout"]).order_by("id")
    return list(events.values_list("action", flat=True))


# --- who may open what ----------------------------------------------------------------


@pytest.mark.parametrize("name", [*LISTS, "manage:index", "manage:institution_add", "manage:specialty_list"])
def test_anonymous_is_sent_to_sign_in(db: None, name: str) -> None:
    response = Client().get(reverse(name))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("persona", ["owner", "colleague", "specialist", "stranger"])
@pytest.mark.parametrize("name", [*LISTS, "manage:index"])
def test_clinical_roles_cannot_open_the_console(world, persona: str, name: str) -> None:  # type: ignore[no-untyped-def]
    assert client_for(getattr(world, persona)).get(reverse(name)).status_code == 403


@pytest.mark.parametrize("persona", ["alliance_admin", "inst_admin_a", "hosp_admin"])
@pytest.mark.parametrize("name", LISTS)
def test_admins_open_the_lists(world, persona: str, name: str) -> None:  # type: ignore[no-untyped-def]
    assert client_for(getattr(world, persona)).get(reverse(name)).status_code == 200


def test_institution_admin_lists_only_their_institution(world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(world.inst_admin_a)
    doctors = client.get(reverse("manage:doctor_list")).context["page_obj"].object_list
    assert {d.institution_id for d in doctors} == {world.clin_a.pk}
    devices = client.get(reverse("manage:device_list")).context["page_obj"].object_list
    assert world.device_b not in devices
    institutions = client.get(reverse("manage:institution_list")).context["page_obj"].object_list
    assert list(institutions) == [world.clin_a]


def test_institution_admin_index_goes_to_their_institution(world) -> None:  # type: ignore[no-untyped-def]
    response = client_for(world.inst_admin_a).get(reverse("manage:index"))
    assert response["Location"] == reverse("manage:institution_detail", args=[world.clin_a.pk])


def _outside_reach(w: SimpleNamespace) -> list[tuple[str, int]]:
    return [
        ("manage:institution_detail", w.clin_b.pk),
        ("manage:doctor_edit", w.stranger.pk),
        ("manage:doctor_password", w.stranger.pk),
        ("manage:department_edit", w.dept_b.pk),
        ("manage:device_edit", w.device_b.pk),
        ("manage:pool_edit", w.pool.pk),
        ("manage:doctor_add", w.clin_b.pk),
        ("manage:device_add", w.clin_b.pk),
    ]


def test_objects_of_another_institution_are_404_for_an_institution_admin(world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(world.inst_admin_a)
    for name, pk in _outside_reach(world):
        assert client.get(reverse(name, args=[pk])).status_code == 404, name
    for name in ["manage:doctor_active", "manage:device_active", "manage:department_active", "manage:pool_active"]:
        target = {
            "manage:doctor_active": world.stranger,
            "manage:device_active": world.device_b,
            "manage:department_active": world.dept_b,
            "manage:pool_active": world.pool,
        }[name]
        assert client.post(reverse(name, args=[target.pk]), {"active": "0"}).status_code == 404, name
    assert Doctor.objects.get(pk=world.stranger.pk).active


def test_objects_of_another_alliance_are_404_for_an_alliance_admin(world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(world.foreign_admin)
    for name, pk in _outside_reach(world):
        assert client.get(reverse(name, args=[pk])).status_code == 404, name
    assert client.get(reverse("manage:institution_edit", args=[world.clin_a.pk])).status_code == 404


def test_alliance_admin_reaches_every_member(world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(world.alliance_admin)
    for name, pk in _outside_reach(world):
        assert client.get(reverse(name, args=[pk])).status_code == 200, name


def test_institution_settings_are_for_the_alliance_admin_only(world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(world.inst_admin_a)
    assert client.get(reverse("manage:institution_edit", args=[world.clin_a.pk])).status_code == 403
    assert client.get(reverse("manage:institution_add")).status_code == 403
    response = client.post(reverse("manage:institution_active", args=[world.clin_a.pk]), {"active": "0"})
    assert response.status_code == 403
    assert Institution.objects.get(pk=world.clin_a.pk).active


def test_institution_admin_cannot_touch_an_alliance_admin_colleague(world) -> None:  # type: ignore[no-untyped-def]
    office_admin = factories.make_doctor(institution=world.office, roles=["institution_admin"], username="office_admin")
    client = client_for(office_admin)
    assert client.get(reverse("manage:doctor_edit", args=[world.alliance_admin.pk])).status_code == 403
    response = client.post(reverse("manage:doctor_active", args=[world.alliance_admin.pk]), {"active": "0"})
    assert response.status_code == 403
    assert Doctor.objects.get(pk=world.alliance_admin.pk).active


# --- institutions ---------------------------------------------------------------------


def _institution_post(**overrides: object) -> dict[str, object]:
    data = {
        "name": "Hill Township Centre",
        "level": "township",
        "ae_title": "HILL",
        "parent": "",
        "modules": ["image_store", "consults"],
    }
    data.update(overrides)
    return data


def test_alliance_admin_adds_an_institution_with_modules(world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(world.alliance_admin)
    response = client.post(reverse("manage:institution_add"), _institution_post(ae_title="hill", parent=world.hosp.pk))
    created = Institution.objects.get(name="Hill Township Centre")
    assert response["Location"] == reverse("manage:institution_detail", args=[created.pk])
    assert (created.ae_title, created.parent, created.alliance) == ("HILL", world.hosp, world.alliance)
    assert created.modules == ["image_store", "consults"]
    assert "institution.create" in _actions("alliance_admin")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"ae_title": "HOSP"}, "ae_title"),
        ({"ae_title": "CLINB_DR"}, "ae_title"),
        ({"ae_title": "BAD TITLE!"}, "ae_title"),
        ({"level": "galaxy"}, "level"),
        ({"name": "Clinic A"}, "name"),
        ({"modules": ["teleportation"]}, "modules"),
    ],
)
def test_bad_institution_input_is_refused_on_its_field(world, overrides, field) -> None:  # type: ignore[no-untyped-def]
    response = client_for(world.alliance_admin).post(reverse("manage:institution_add"), _institution_post(**overrides))
    assert response.status_code == 200
    assert field in response.context["form"].errors
    assert not Institution.objects.filter(ae_title="HILL").exists()


def test_parent_from_another_alliance_is_refused_on_the_parent_field(world) -> None:  # type: ignore[no-untyped-def]
    response = client_for(world.alliance_admin).post(
        reverse("manage:institution_add"), _institution_post(parent=world.foreign.pk)
    )
    assert "parent" in response.context["form"].errors
    assert not Institution.objects.filter(name="Hill Township Centre").exists()


def test_field_error_is_shown_next_to_the_field(world) -> None:  # type: ignore[no-untyped-def]
    response = client_for(world.alliance_admin).post(
        reverse("manage:institution_add"), _institution_post(ae_title="HOSP"), HTTP_ACCEPT_LANGUAGE="en"
    )
    body = response.content.decode()
    assert 'id="id_ae_title_error"' in body
    assert "The AE title HOSP is already in use." in body


def test_editing_an_institution_cannot_make_it_its_own_ancestor(world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(world.alliance_admin)
    data = {"name": "Lead Hospital", "level": "tertiary", "ae_title": "HOSP", "parent": world.clin_a.pk, "modules": []}
    response = client.post(reverse("manage:institution_edit", args=[world.hosp.pk]), data)
    assert "parent" in response.context["form"].errors
    assert Institution.objects.get(pk=world.hosp.pk).parent is None


def test_editing_an_institution_switches_modules_and_is_audited(world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(world.alliance_admin)
    data = {
        "name": "Clinic A",
        "level": "community",
        "ae_title": "CLINA",
        "parent": world.hosp.pk,
        "modules": ["consults"],
    }
    response = client.post(reverse("manage:institution_edit", args=[world.clin_a.pk]), data)
    assert response.status_code == 302
    clin_a = Institution.objects.get(pk=world.clin_a.pk)
    assert (clin_a.level, clin_a.modules) == ("community", ["consults"])
    event = AuditEvent.objects.get(action="institution.update", object_id=str(clin_a.pk))
    assert event.actor_name == "alliance_admin" and "modules" in event.detail


def test_switching_an_institution_off_signs_its_doctors_out(world) -> None:  # type: ignore[no-untyped-def]
    owner = client_for(world.owner)
    assert owner.get(reverse("home")).status_code == 200
    client_for(world.alliance_admin).post(reverse("manage:institution_active", args=[world.clin_a.pk]), {"active": "0"})
    assert owner.get(reverse("home")).status_code == 302


def test_alliance_admin_cannot_switch_off_their_own_institution(world) -> None:  # type: ignore[no-untyped-def]
    client_for(world.alliance_admin).post(reverse("manage:institution_active", args=[world.office.pk]), {"active": "0"})
    assert Institution.objects.get(pk=world.office.pk).active


# --- doctors --------------------------------------------------------------------------


def _doctor_post(**overrides: object) -> dict[str, object]:
    data = {
        "username": "newdoc",
        "full_name": "Li Ming",
        "email": "li@example.org",
        "password": "Plenty-long-pass-7",
        "roles": ["clinician"],
        "department": "",
        "title": "Attending physician",
        "specialties": [],
    }
    data.update(overrides)
    return data


def test_institution_admin_creates_a_doctor_who_can_sign_in(world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(world.inst_admin_a)
    response = client.post(
        reverse("manage:doctor_add", args=[world.clin_a.pk]), _doctor_post(department=world.dept_a.pk)
    )
    doctor = Doctor.objects.get(user__username="newdoc")
    assert response["Location"] == reverse("manage:doctor_edit", args=[doctor.pk])
    assert (doctor.institution, doctor.department, doctor.user.get_full_name()) == (
        world.clin_a,
        world.dept_a,
        "Li Ming",
    )
    assert Client().login(username="newdoc", password="Plenty-long-pass-7")
    assert "doctor.create" in _actions("admin_a")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"username": "owner"}, "username"),
        ({"password": "123"}, "password"),
        ({"roles": []}, "roles"),
        ({"roles": ["alliance_admin"]}, "roles"),
        ({"email": "not-an-email"}, "email"),
    ],
)
def test_bad_doctor_input_is_refused_on_its_field(world, overrides, field) -> None:  # type: ignore[no-untyped-def]
    response = client_for(world.inst_admin_a).post(
        reverse("manage:doctor_add", args=[world.clin_a.pk]), _doctor_post(**overrides)
    )
    assert response.status_code == 200
    assert field in response.context["form"].errors
    assert not Doctor.objects.filter(user__username="newdoc").exists()


def test_department_of_another_institution_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(world.alliance_admin)
    response = client.post(
        reverse("manage:doctor_add", args=[world.clin_a.pk]), _doctor_post(department=world.dept_b.pk)
    )
    assert "department" in response.context["form"].errors


def test_alliance_admin_may_make_an_alliance_admin(world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(world.alliance_admin)
    client.post(reverse("manage:doctor_add", args=[world.office.pk]), _doctor_post(roles=["alliance_admin"]))
    assert Doctor.objects.get(user__username="newdoc").roles == ["alliance_admin"]


def test_editing_a_doctor_changes_roles_and_name_and_is_audited(world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(world.inst_admin_a)
    data = {
        "full_name": "Zhang Wei",
        "email": "",
        "roles": ["clinician", "institution_admin"],
        "department": world.dept_a.pk,
        "title": "",
        "specialties": [world.radiology.pk],
    }
    response = client.post(reverse("manage:doctor_edit", args=[world.owner.pk]), data)
    assert response.status_code == 302
    owner = Doctor.objects.get(pk=world.owner.pk)
    assert owner.roles == ["clinician", "institution_admin"]
    assert owner.user.get_full_name() == "Zhang Wei"
    assert list(owner.specialties.all()) == [world.radiology]
    event = AuditEvent.objects.get(action="doctor.update", object_id=str(owner.pk))
    assert {"roles", "first_name"} <= set(event.detail)


def test_deactivating_a_doctor_ends_their_session_at_once(world) -> None:  # type: ignore[no-untyped-def]
    owner_browser = Client()
    owner_browser.post(reverse("login"), {"username": "owner", "password": factories.PASSWORD})
    assert owner_browser.get(reverse("home")).status_code == 200
    response = client_for(world.inst_admin_a).post(
        reverse("manage:doctor_active", args=[world.owner.pk]), {"active": "0"}
    )
    assert response.status_code == 302
    after = owner_browser.get(reverse("home"))
    assert after.status_code == 302 and after["Location"].startswith(reverse("login"))
    assert not Client().login(username="owner", password=factories.PASSWORD)
    assert "doctor.deactivate" in _actions("admin_a")


def test_reactivated_doctor_signs_in_again(world) -> None:  # type: ignore[no-untyped-def]
    admin = client_for(world.inst_admin_a)
    admin.post(reverse("manage:doctor_active", args=[world.owner.pk]), {"active": "0"})
    admin.post(reverse("manage:doctor_active", args=[world.owner.pk]), {"active": "1"})
    assert Client().login(username="owner", password=factories.PASSWORD)
    assert _actions("admin_a")[-2:] == ["doctor.deactivate", "doctor.activate"]


def test_an_admin_cannot_deactivate_themselves(world) -> None:  # type: ignore[no-untyped-def]
    client_for(world.inst_admin_a).post(reverse("manage:doctor_active", args=[world.inst_admin_a.pk]), {"active": "0"})
    assert Doctor.objects.get(pk=world.inst_admin_a.pk).active


def test_password_reset_requires_matching_strong_passwords(world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(world.inst_admin_a)
    url = reverse("manage:doctor_password", args=[world.owner.pk])
    assert (
        "confirm"
        in client.post(url, {"password": "Another-long-pass-9", "confirm": "different"}).context["form"].errors
    )
    assert "password" in client.post(url, {"password": "owner", "confirm": "owner"}).context["form"].errors
    assert client.post(url, {"password": "Another-long-pass-9", "confirm": "Another-long-pass-9"}).status_code == 302
    assert Client().login(username="owner", password="Another-long-pass-9")
    assert "doctor.password" in _actions("admin_a")


def test_moving_a_doctor_takes_them_off_their_old_pools(world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(world.alliance_admin)
    response = client.post(
        reverse("manage:doctor_move", args=[world.specialist.pk]),
        {"institution": world.clin_a.pk, "department": world.dept_a.pk},
    )
    assert response.status_code == 302
    specialist = Doctor.objects.get(pk=world.specialist.pk)
    assert (specialist.institution, specialist.department) == (world.clin_a, world.dept_a)
    assert not specialist.pools.exists()
    assert "doctor.move" in _actions("alliance_admin")


def test_institution_admin_has_nowhere_to_move_a_doctor(world) -> None:  # type: ignore[no-untyped-def]
    assert client_for(world.inst_admin_a).get(reverse("manage:doctor_move", args=[world.owner.pk])).status_code == 403


def test_doctor_list_searches_and_filters(world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(world.alliance_admin)
    found = client.get(reverse("manage:doctor_list"), {"q": "strang"}).context["page_obj"].object_list
    assert [d.user.username for d in found] == ["stranger"]
    admins = client.get(reverse("manage:doctor_list"), {"role": "institution_admin"}).context["page_obj"].object_list
    assert {d.user.username for d in admins} == {"admin_a", "admin_hosp"}
    at_b = client.get(reverse("manage:doctor_list"), {"institution": world.clin_b.pk}).context["page_obj"].object_list
    assert [d.user.username for d in at_b] == ["stranger"]


def test_doctor_list_is_paginated_without_a_query_per_row(world, django_assert_max_num_queries) -> None:  # type: ignore[no-untyped-def]
    for n in range(30):
        factories.make_doctor(institution=world.clin_a, username=f"bulk{n:02d}", specialties=[world.radiology])
    client = client_for(world.alliance_admin)
    with django_assert_max_num_queries(14):
        response = client.get(reverse("manage:doctor_list"))
    assert len(response.context["page_obj"].object_list) == 25
    assert response.context["page_obj"].paginator.num_pages == 2


# --- departments, pools, devices, specialties -----------------------------------------


def test_department_duplicate_name_is_refused_on_the_name_field(world) -> None:  # type: ignore[no-untyped-def]
    response = client_for(world.inst_admin_a).post(
        reverse("manage:department_add", args=[world.clin_a.pk]), {"name": "General practice"}
    )
    assert "name" in response.context["form"].errors
    assert Department.objects.filter(institution=world.clin_a).count() == 1


def test_departments_are_added_renamed_and_deactivated_with_audit(world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(world.inst_admin_a)
    client.post(reverse("manage:department_add", args=[world.clin_a.pk]), {"name": "Imaging"})
    dept = Department.objects.get(institution=world.clin_a, name="Imaging")
    client.post(reverse("manage:department_edit", args=[dept.pk]), {"name": "Medical imaging"})
    client.post(reverse("manage:department_active", args=[dept.pk]), {"active": "0"})
    dept.refresh_from_db()
    assert (dept.name, dept.active) == ("Medical imaging", False)
    assert _actions("admin_a") == ["department.create", "department.update", "department.update"]


def test_pool_members_are_picked_from_the_institution(world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(world.hosp_admin)
    url = reverse("manage:pool_add", args=[world.hosp.pk])
    refused = client.post(url, {"name": "ECG desk", "specialty": world.radiology.pk, "members": [world.owner.pk]})
    assert "members" in refused.context["form"].errors
    client.post(url, {"name": "ECG desk", "specialty": world.radiology.pk, "members": [world.outsider_specialist.pk]})
    pool = Pool.objects.get(name="ECG desk")
    assert list(pool.members.all()) == [world.outsider_specialist]
    assert world.outsider_specialist.user.groups.filter(pk=pool.group_id).exists()
    assert {"pool.create", "pool.members"} <= set(_actions("admin_hosp"))


def test_pool_edit_changes_members_and_deactivates(world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(world.hosp_admin)
    data = {"name": "CT reading desk", "specialty": world.radiology.pk, "members": [world.outsider_specialist.pk]}
    assert client.post(reverse("manage:pool_edit", args=[world.pool.pk]), data).status_code == 302
    assert list(world.pool.members.all()) == [world.outsider_specialist]
    client.post(reverse("manage:pool_active", args=[world.pool.pk]), {"active": "0"})
    assert not Pool.objects.get(pk=world.pool.pk).active


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"ae_title": "CLINB_DR"}, "ae_title"),
        ({"ae_title": "HOSP"}, "ae_title"),
        ({"port": 70000}, "port"),
        ({"host": ""}, "host"),
    ],
)
def test_bad_device_input_is_refused_on_its_field(world, overrides, field) -> None:  # type: ignore[no-untyped-def]
    data = {"ae_title": "CLINA_CT", "host": "10.1.1.5", "port": 104, "description": "CT room 1"}
    data.update(overrides)
    response = client_for(world.inst_admin_a).post(reverse("manage:device_add", args=[world.clin_a.pk]), data)
    assert field in response.context["form"].errors
    assert not Device.objects.filter(institution=world.clin_a).exists()


def test_devices_are_registered_edited_and_deactivated_with_audit(world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(world.inst_admin_a)
    data = {"ae_title": "clina_ct", "host": "10.1.1.5", "port": 104, "description": "CT room 1"}
    client.post(reverse("manage:device_add", args=[world.clin_a.pk]), data)
    device = Device.objects.get(ae_title="CLINA_CT")
    client.post(reverse("manage:device_edit", args=[device.pk]), {**data, "port": 11112})
    client.post(reverse("manage:device_active", args=[device.pk]), {"active": "0"})
    device.refresh_from_db()
    assert (device.port, device.active, device.institution) == (11112, False, world.clin_a)
    assert _actions("admin_a") == ["device.create", "device.update", "device.update"]


def test_specialties_are_for_the_alliance_admin(world) -> None:  # type: ignore[no-untyped-def]
    assert client_for(world.hosp_admin).get(reverse("manage:specialty_add")).status_code == 403
    client = client_for(world.alliance_admin)
    assert (
        "code"
        in client.post(reverse("manage:specialty_add"), {"code": "radiology", "name": "X"}).context["form"].errors
    )
    assert client.post(reverse("manage:specialty_add"), {"code": "ecg", "name": "ECG"}).status_code == 302
    assert "specialty.create" in _actions("alliance_admin")


def test_a_pool_edit_refused_halfway_saves_nothing(world, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from django.core.exceptions import ValidationError

    from alliance import services

    def refuse(**kwargs: object) -> None:
        raise ValidationError({"members": "refused"})

    monkeypatch.setattr(services, "pool_set_members", refuse)
    data = {"name": "Renamed desk", "specialty": world.radiology.pk, "members": [world.outsider_specialist.pk]}
    response = client_for(world.hosp_admin).post(reverse("manage:pool_edit", args=[world.pool.pk]), data)
    assert response.context["form"].errors["members"] == ["refused"]
    assert Pool.objects.get(pk=world.pool.pk).name == "CT reading desk"


def test_anonymous_is_sent_to_sign_in_from_every_object_page(world) -> None:  # type: ignore[no-untyped-def]
    anonymous = Client()
    pages = [
        *_outside_reach(world),
        ("manage:institution_edit", world.clin_a.pk),
        ("manage:doctor_move", world.owner.pk),
        ("manage:pool_add", world.hosp.pk),
        ("manage:department_add", world.clin_a.pk),
    ]
    for name, pk in pages:
        response = anonymous.get(reverse(name, args=[pk]))
        assert response.status_code == 302 and response["Location"].startswith(reverse("login")), name
    for name, pk in [("manage:doctor_active", world.owner.pk), ("manage:institution_active", world.clin_a.pk)]:
        response = anonymous.post(reverse(name, args=[pk]), {"active": "0"})
        assert response.status_code == 302 and response["Location"].startswith(reverse("login")), name
    assert Doctor.objects.get(pk=world.owner.pk).active
    assert Institution.objects.get(pk=world.clin_a.pk).active


@pytest.mark.parametrize("persona", ["colleague", "outsider_specialist", "specialist"])
def test_clinical_roles_cannot_change_members(world, persona: str) -> None:  # type: ignore[no-untyped-def]
    client = client_for(getattr(world, persona))
    assert client.post(reverse("manage:doctor_active", args=[world.owner.pk]), {"active": "0"}).status_code == 403
    assert client.post(reverse("manage:doctor_add", args=[world.clin_a.pk]), _doctor_post()).status_code == 403
    assert Doctor.objects.get(pk=world.owner.pk).active
    assert not Doctor.objects.filter(user__username="newdoc").exists()
