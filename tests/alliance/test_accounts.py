"""My account (alliance/accounts.py, account_views.py, account_gate.py): password change, an
admin's temporary password, the TOTP second factor and its policy, recovery codes, and the reset
by another admin."""

from __future__ import annotations

from typing import Any

from django.core import mail
from django.test import Client
from django.urls import reverse
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from alliance import accounts, audit, services
from alliance.access import settings_of
from alliance.models import AuditEvent, Doctor
from tests.conftest import client_for
from tests.factories import PASSWORD

NEW_PASSWORD = "a-Better-passw0rd-2026"


def _code(device: TOTPDevice, drift: int = 0) -> str:
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=drift):06d}"


def _sign_in(client: Client, username: str, password: str = PASSWORD) -> Any:
    return client.post(reverse("login"), {"username": username, "password": password})


def _enrol(doctor: Doctor) -> tuple[TOTPDevice, list[str]]:
    device = accounts.totp_begin(user=doctor.user, by=audit.SYSTEM)
    codes = accounts.totp_confirm(user=doctor.user, device=device, code=_code(device), by=audit.SYSTEM)
    doctor.refresh_from_db()
    return device, codes


# --- A. password ----------------------------------------------------------------------


def test_a_doctor_changes_their_own_password_and_it_is_audited(alliance_world) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    _sign_in(client, "owner")
    response = client.post(
        reverse("account:password"),
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 302
    assert client.get(reverse("home")).status_code == 200  # the session survives its own change
    alliance_world.owner.user.refresh_from_db()
    assert alliance_world.owner.user.check_password(NEW_PASSWORD)
    assert AuditEvent.objects.filter(action="account.password", actor_name="owner").exists()


def test_a_wrong_old_password_changes_nothing(alliance_world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(alliance_world.owner)
    response = client.post(
        reverse("account:password"),
        {"old_password": "not-it", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 200
    assert "old_password" in response.context["form"].errors
    alliance_world.owner.user.refresh_from_db()
    assert alliance_world.owner.user.check_password(PASSWORD)


def test_a_password_an_admin_set_must_be_changed_before_anything_else(alliance_world) -> None:  # type: ignore[no-untyped-def]
    admin = client_for(alliance_world.inst_admin_a)
    response = admin.post(
        reverse("manage:doctor_password", args=[alliance_world.owner.pk]),
        {"password": "Temporary-pass-7781", "confirm": "Temporary-pass-7781"},
    )
    assert response.status_code == 302
    alliance_world.owner.refresh_from_db()
    assert alliance_world.owner.must_change_password

    client = Client()
    _sign_in(client, "owner", "Temporary-pass-7781")
    tokens = client.get(reverse("account:tokens"))
    assert tokens.status_code == 302
    assert tokens["Location"].startswith(reverse("account:password"))
    page = client.get(reverse("account:password"))
    assert page.status_code == 200 and page.context["forced"]
    api = client.get("/api/v1/me/")
    assert api.status_code == 403 and api.json()["error"]["code"] == "password_change_required"

    client.post(
        reverse("account:password"),
        {"old_password": "Temporary-pass-7781", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    alliance_world.owner.refresh_from_db()
    assert not alliance_world.owner.must_change_password
    assert client.get(reverse("home")).status_code == 200


def test_a_doctor_added_in_the_console_changes_the_initial_password_first(alliance_world) -> None:  # type: ignore[no-untyped-def]
    admin = client_for(alliance_world.inst_admin_a)
    admin.post(
        reverse("manage:doctor_add", args=[alliance_world.clin_a.pk]),
        {"username": "newbie", "full_name": "New Doctor", "password": "Initial-pass-5531", "roles": ["clinician"]},
    )
    assert Doctor.objects.get(user__username="newbie").must_change_password


def test_the_api_with_a_token_answers_403_until_the_temporary_password_is_changed(alliance_world) -> None:  # type: ignore[no-untyped-def]
    key = services.token_create(doctor=alliance_world.owner, by=audit.SYSTEM).key
    services.doctor_set_password(doctor=alliance_world.owner, password="Temporary-pass-7781", by=audit.SYSTEM)
    response = Client().get("/api/v1/me/", HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "password_change_required"


# --- B. second factor -----------------------------------------------------------------


def test_enrolment_shows_a_qr_code_and_confirming_shows_ten_recovery_codes_once(alliance_world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(alliance_world.specialist)
    page = client.get(reverse("account:two_factor"))
    assert page.status_code == 200
    assert page.context["qr"].startswith("data:image/svg+xml")
    device = TOTPDevice.objects.get(user=alliance_world.specialist.user, confirmed=False)
    done = client.post(reverse("account:two_factor"), {"code": _code(device)})
    assert done.status_code == 200
    codes = done.context["codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    alliance_world.specialist.refresh_from_db()
    assert alliance_world.specialist.second_factor
    assert AuditEvent.objects.filter(action="account.second_factor.enrol").exists()
    again = client.get(reverse("account:two_factor"))
    assert again.context["enabled"] and "codes" not in again.context  # shown once only


def test_a_wrong_code_does_not_confirm_the_authenticator(alliance_world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(alliance_world.specialist)
    client.get(reverse("account:two_factor"))
    device = TOTPDevice.objects.get(user=alliance_world.specialist.user)
    wrong = f"{(int(_code(device)) + 1) % 1000000:06d}"
    response = client.post(reverse("account:two_factor"), {"code": wrong})
    assert response.status_code == 200 and "code" in response.context["form"].errors
    device.refresh_from_db()
    assert not device.confirmed


def test_sign_in_asks_for_the_code_after_the_password_when_a_device_is_confirmed(alliance_world) -> None:  # type: ignore[no-untyped-def]
    device, _codes = _enrol(alliance_world.specialist)
    client = Client()
    _sign_in(client, "specialist")
    response = client.get("/consults/")
    assert response.status_code == 302 and response["Location"].startswith(reverse("account:verify"))
    assert client.get("/api/v1/me/").json()["error"]["code"] == "second_factor_required"
    verified = client.post(reverse("account:verify"), {"code": _code(device, drift=1)})
    assert verified.status_code == 302
    assert client.get(reverse("home")).status_code == 200
    assert AuditEvent.objects.filter(action="login.second_factor", actor_name="specialist").exists()


def test_a_wrong_totp_code_is_refused_and_counts_toward_the_lockout(alliance_world, settings) -> None:  # type: ignore[no-untyped-def]
    settings.AXES_FAILURE_LIMIT = 3
    device, _codes = _enrol(alliance_world.specialist)
    client = Client()
    _sign_in(client, "specialist")
    wrong = f"{(int(_code(device)) + 1) % 1000000:06d}"
    first = client.post(reverse("account:verify"), {"code": wrong})
    assert first.status_code == 200 and "code" in first.context["form"].errors
    assert client.get(reverse("home")).status_code == 302  # still not through
    client.post(reverse("account:verify"), {"code": wrong})
    locked = client.post(reverse("account:verify"), {"code": wrong})
    assert locked.status_code == 429  # django-axes' lockout page; the half-signed-in session ended
    assert client.get(reverse("account:verify"))["Location"].startswith(reverse("login"))
    assert _sign_in(Client(), "specialist").status_code == 429
    assert AuditEvent.objects.filter(action="login", actor_name="specialist", outcome="failure").count() >= 3


def test_a_recovery_code_signs_in_once_and_a_reused_one_is_refused(alliance_world) -> None:  # type: ignore[no-untyped-def]
    _device, codes = _enrol(alliance_world.specialist)
    client = Client()
    _sign_in(client, "specialist")
    assert client.post(reverse("account:verify"), {"code": codes[0]}).status_code == 302
    assert accounts.recovery_codes_left(alliance_world.specialist.user) == 9
    other = Client()
    _sign_in(other, "specialist")
    reused = other.post(reverse("account:verify"), {"code": codes[0]})
    assert reused.status_code == 200 and "code" in reused.context["form"].errors
    assert other.get(reverse("home")).status_code == 302


def test_the_policy_sends_a_specialist_without_a_device_to_enrolment(alliance_world) -> None:  # type: ignore[no-untyped-def]
    row = settings_of(alliance_world.alliance.pk)
    row.second_factor_required = True
    row.save()
    client = Client()
    _sign_in(client, "specialist")
    response = client.get("/consults/")
    assert response.status_code == 302 and response["Location"].startswith(reverse("account:two_factor"))
    assert client.get("/api/v1/me/").json()["error"]["code"] == "second_factor_enrolment_required"
    # a clinician is not asked
    owner = Client()
    _sign_in(owner, "owner")
    assert owner.get(reverse("home")).status_code == 200


def test_the_policy_is_on_for_a_new_alliance_in_production_settings(db, settings) -> None:  # type: ignore[no-untyped-def]
    from tests.factories import AllianceFactory

    settings.OTP_REQUIRED_DEFAULT = True
    assert settings_of(AllianceFactory(name="Production").pk).second_factor_required


def test_an_institution_admin_resets_a_doctors_second_factor_and_the_owner_is_told(alliance_world) -> None:  # type: ignore[no-untyped-def]
    specialist = alliance_world.specialist
    specialist.user.email = "specialist@example.org"
    specialist.user.save()
    _enrol(specialist)
    admin = client_for(alliance_world.hosp_admin)
    page = admin.get(reverse("manage:doctor_edit", args=[specialist.pk]))
    assert page.context["may_reset_second_factor"]
    response = admin.post(reverse("manage:doctor_second_factor_reset", args=[specialist.pk]))
    assert response.status_code == 302
    specialist.refresh_from_db()
    assert not specialist.second_factor
    assert not TOTPDevice.objects.filter(user=specialist.user).exists()
    assert AuditEvent.objects.filter(action="account.second_factor.reset", actor_name="admin_hosp").exists()


def test_the_owner_is_emailed_when_their_second_factor_is_reset(
    alliance_world, django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    specialist = alliance_world.specialist
    specialist.user.email = "specialist@example.org"
    specialist.user.save()
    _enrol(specialist)
    with django_capture_on_commit_callbacks(execute=True):
        accounts.second_factor_reset(doctor=specialist, by=audit.SYSTEM)
    assert [m.to for m in mail.outbox] == [["specialist@example.org"]]


def test_an_admin_cannot_reset_their_own_second_factor(alliance_world) -> None:  # type: ignore[no-untyped-def]
    admin = alliance_world.hosp_admin
    _enrol(admin)
    client = Client()
    _sign_in(client, "admin_hosp")
    device = TOTPDevice.objects.get(user=admin.user)
    client.post(reverse("account:verify"), {"code": _code(device, drift=1)})
    response = client.post(reverse("manage:doctor_second_factor_reset", args=[admin.pk]))
    assert response.status_code == 403
    assert TOTPDevice.objects.filter(user=admin.user).exists()


def test_an_institution_admin_cannot_reset_a_doctor_of_another_institution(alliance_world) -> None:  # type: ignore[no-untyped-def]
    _enrol(alliance_world.specialist)  # at HOSP
    response = client_for(alliance_world.inst_admin_a).post(
        reverse("manage:doctor_second_factor_reset", args=[alliance_world.specialist.pk])
    )
    assert response.status_code == 404
    assert TOTPDevice.objects.filter(user=alliance_world.specialist.user).exists()


def test_an_alliance_admin_resets_anyone_of_the_alliance(alliance_world) -> None:  # type: ignore[no-untyped-def]
    _enrol(alliance_world.hosp_admin)
    response = client_for(alliance_world.alliance_admin).post(
        reverse("manage:doctor_second_factor_reset", args=[alliance_world.hosp_admin.pk])
    )
    assert response.status_code == 302
    assert not TOTPDevice.objects.filter(user=alliance_world.hosp_admin.user).exists()


def test_the_account_menu_is_in_the_nav(alliance_world) -> None:  # type: ignore[no-untyped-def]
    page = client_for(alliance_world.owner).get(reverse("home"))
    html = page.content.decode()
    assert 'class="account-menu"' in html
    for name in ("account:index", "account:password", "account:two_factor", "account:tokens"):
        assert f'href="{reverse(name)}"' in html


def _device_queries(client: Client, path: str) -> list[str]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        assert client.get(path).status_code == 200
    return [q["sql"] for q in queries.captured_queries if "otp_" in q["sql"]]


def test_a_request_of_a_doctor_without_an_authenticator_asks_nothing_of_the_device_tables(alliance_world) -> None:  # type: ignore[no-untyped-def]
    """django_otp's middleware loads a device only for a session that was verified with one;
    a signed-in doctor without a second factor costs no query of it."""
    client = client_for(alliance_world.owner)
    assert _device_queries(client, "/consults/") == []
    assert _device_queries(client, "/api/v1/me/") == []


def test_a_verified_session_checks_its_device_once_a_request_so_a_reset_ends_it_at_once(alliance_world) -> None:  # type: ignore[no-untyped-def]
    device, _codes = _enrol(alliance_world.specialist)
    client = Client()
    _sign_in(client, "specialist")
    client.post(reverse("account:verify"), {"code": _code(device, drift=1)})
    assert len(_device_queries(client, "/consults/")) == 1
    accounts.second_factor_reset(doctor=alliance_world.specialist, by=audit.SYSTEM)
    _enrol(alliance_world.specialist)  # a new phone
    response = client.get("/consults/")
    assert response.status_code == 302 and response["Location"].startswith(reverse("account:verify"))
