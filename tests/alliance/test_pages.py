"""Sign-in, lockout, the home page of each role, and the language of the pages."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from alliance.models import AuditEvent
from tests.conftest import client_for
from tests.factories import PASSWORD


def _login(client: Client, username: str, password: str) -> object:
    return client.post(reverse("login"), {"username": username, "password": password})


def test_anonymous_is_sent_to_sign_in(db: None) -> None:
    response = Client().get(reverse("home"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_sign_in_page_renders_for_anonymous(db: None) -> None:
    response = Client().get(reverse("login"))
    assert response.status_code == 200
    assert b'name="username"' in response.content


def test_sign_in_and_out_are_audited(alliance_world) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    response = _login(client, "owner", PASSWORD)
    assert response.status_code == 302 and response["Location"] == reverse("home")
    assert client.get(reverse("home")).status_code == 200
    client.post(reverse("logout"))
    actions = list(AuditEvent.objects.filter(actor_name="owner").values_list("action", "outcome"))
    assert ("login", "success") in actions and ("logout", "success") in actions
    assert client.get(reverse("home")).status_code == 302


def test_wrong_password_is_refused_and_audited_as_failed(alliance_world) -> None:  # type: ignore[no-untyped-def]
    response = _login(Client(), "owner", "wrong-password")
    assert response.status_code == 200
    assert response.context["form"].non_field_errors()
    assert AuditEvent.objects.filter(action="login", actor_name="owner", outcome="failure").count() == 1


def test_repeated_failures_lock_the_account_even_for_the_right_password(alliance_world) -> None:  # type: ignore[no-untyped-def]
    limit = settings.AXES_FAILURE_LIMIT
    client = Client()
    statuses = [_login(client, "owner", f"wrong-{n}").status_code for n in range(limit)]
    assert statuses[:-1] == [200] * (limit - 1)
    assert statuses[-1] == 429
    locked = _login(client, "owner", PASSWORD)
    assert locked.status_code == 429
    assert "registration/locked_out.html" in [t.name for t in locked.templates]
    assert client.get(reverse("home")).status_code == 302  # never signed in
    failures = AuditEvent.objects.filter(action="login", actor_name="owner", outcome="failure")
    assert failures.count() == limit + 1
    assert failures.filter(detail__locked_out=True).exists()
    assert not AuditEvent.objects.filter(action="login", actor_name="owner", outcome="success").exists()


def test_lockout_is_per_account(alliance_world) -> None:  # type: ignore[no-untyped-def]
    client = Client()
    for n in range(settings.AXES_FAILURE_LIMIT):
        _login(client, "owner", f"wrong-{n}")
    assert _login(client, "colleague", PASSWORD).status_code == 302


def test_locked_out_page_speaks_chinese(alliance_world) -> None:  # type: ignore[no-untyped-def]
    client = Client(HTTP_ACCEPT_LANGUAGE="zh-hans")
    for n in range(settings.AXES_FAILURE_LIMIT):
        response = _login(client, "owner", f"wrong-{n}")
    assert response.status_code == 429
    assert "账号已锁定" in response.content.decode()


def test_home_speaks_chinese_with_accept_language_zh_hans(alliance_world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(alliance_world.owner)
    body = client.get(reverse("home"), HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert "欢迎" in body and "退出登录" in body
    english = client.get(reverse("home"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Welcome" in english and "Sign out" in english


def test_language_switch_sets_the_language(alliance_world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(alliance_world.owner)
    client.post(reverse("set_language"), {"language": "en", "next": "/"})
    assert "Sign out" in client.get(reverse("home"), HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()


def test_clinician_home_tells_how_to_send_images(alliance_world) -> None:  # type: ignore[no-untyped-def]
    body = client_for(alliance_world.owner).get(reverse("home"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "AE title CLINA" in body
    assert reverse("manage:index") not in body
    assert reverse("audit_log") not in body


def test_specialist_home_lists_their_desks(alliance_world) -> None:  # type: ignore[no-untyped-def]
    body = client_for(alliance_world.specialist).get(reverse("home"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "CT reading desk" in body
    lonely = client_for(alliance_world.outsider_specialist).get(reverse("home"), HTTP_ACCEPT_LANGUAGE="en")
    assert "You are not on any specialist desk yet" in lonely.content.decode()


def test_institution_admin_home_points_to_missing_devices(alliance_world) -> None:  # type: ignore[no-untyped-def]
    body = client_for(alliance_world.inst_admin_a).get(reverse("home"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "No DICOM device is registered yet" in body
    assert reverse("manage:device_add", args=[alliance_world.clin_a.pk]) in body
    assert reverse("audit_log") not in body


def test_alliance_admin_home_shows_members_figures_and_audit(alliance_world) -> None:  # type: ignore[no-untyped-def]
    body = client_for(alliance_world.alliance_admin).get(reverse("home"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Member institutions" in body
    assert reverse("audit_log") in body
    assert reverse("manage:institution_list") in body


@pytest.mark.parametrize("path", ["/", "/manage/", "/audit/"])
def test_pages_send_a_strict_content_security_policy(alliance_world, path: str) -> None:  # type: ignore[no-untyped-def]
    response = client_for(alliance_world.alliance_admin).get(path)
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert b"<script>" not in response.content and b"style=" not in response.content


def test_production_passwords_are_hashed_with_argon2() -> None:
    from alliance import settings as production

    assert production.PASSWORD_HASHERS[0].endswith("Argon2PasswordHasher")


def test_not_found_page_is_the_same_for_any_path(alliance_world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(alliance_world.inst_admin_a)
    first = client.get(reverse("manage:doctor_edit", args=[alliance_world.stranger.pk]))
    second = client.get("/manage/doctors/999999/")
    assert first.status_code == second.status_code == 404
    assert first.content == second.content


def test_switched_off_modules_are_absent_from_navigation_and_home(alliance_world) -> None:  # type: ignore[no-untyped-def]
    from alliance import services
    from tests.factories import SYSTEM

    client = client_for(alliance_world.owner)
    studies = reverse("imaging:study_list")
    with_images = client.get(reverse("home"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Send from a modality" in with_images and studies in with_images
    services.institution_update(institution=alliance_world.clin_a, modules=["consults"], by=SYSTEM)
    without = client.get(reverse("home"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Send from a modality" not in without and studies not in without
