"""REST API tokens (alliance.accounts, alliance/api/authentication.py, /api/v1/tokens/): kept as
SHA-256 digests, shown once, expiring after API_TOKEN_DAYS, listed and revoked by their owner."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from importlib import import_module

from django.apps import apps as global_apps
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from alliance import accounts, audit, services
from alliance.models import ApiToken, AuditEvent
from tests.conftest import client_for


def _get(key: str, path: str = "/api/v1/me/") -> object:
    return Client().get(path, HTTP_AUTHORIZATION=f"Token {key}")


def test_a_token_is_kept_only_as_its_sha256_digest(alliance_world) -> None:  # type: ignore[no-untyped-def]
    issued = services.token_create(doctor=alliance_world.owner, by=audit.SYSTEM)
    row = ApiToken.objects.get(pk=issued.token.pk)
    assert row.digest == hashlib.sha256(issued.key.encode()).hexdigest()
    assert issued.key not in {row.digest, row.prefix, row.name}
    assert _get(issued.key).status_code == 200


def test_a_token_expires_after_api_token_days(alliance_world, settings) -> None:  # type: ignore[no-untyped-def]
    settings.API_TOKEN_DAYS = 7
    issued = accounts.token_issue(user=alliance_world.owner.user, by=audit.SYSTEM)
    assert issued.token.expires_at - issued.token.created_at == timedelta(days=7)
    ApiToken.objects.filter(pk=issued.token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = _get(issued.key)
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"].lower()


def test_a_revoked_token_is_refused(alliance_world) -> None:  # type: ignore[no-untyped-def]
    issued = accounts.token_issue(user=alliance_world.owner.user, by=audit.SYSTEM)
    client = client_for(alliance_world.owner)
    response = client.post(reverse("account:token_revoke", args=[issued.token.pk]))
    assert response.status_code == 302
    assert _get(issued.key).status_code == 401
    assert AuditEvent.objects.filter(action="token.revoke", actor_name="owner").exists()


def test_the_token_page_shows_a_new_key_once(alliance_world) -> None:  # type: ignore[no-untyped-def]
    client = client_for(alliance_world.owner)
    made = client.post(reverse("account:tokens"), {"name": "workstation 3"})
    key = made.context["issued"].key
    assert key in made.content.decode()
    assert _get(key).status_code == 200
    later = client.get(reverse("account:tokens"))
    assert key not in later.content.decode()
    assert key[:8] in later.content.decode()  # listed by its beginning


def test_the_owner_lists_and_revokes_tokens_through_the_api(alliance_world) -> None:  # type: ignore[no-untyped-def]
    first = accounts.token_issue(user=alliance_world.owner.user, name="script", by=audit.SYSTEM)
    second = accounts.token_issue(user=alliance_world.owner.user, name="pacs", by=audit.SYSTEM)
    accounts.token_issue(user=alliance_world.colleague.user, by=audit.SYSTEM)
    listed = _get(first.key, "/api/v1/tokens/").json()
    assert sorted(row["name"] for row in listed["results"]) == ["pacs", "script"]
    assert all("key" not in row and "digest" not in row for row in listed["results"])
    gone = Client().delete(f"/api/v1/tokens/{second.token.pk}/", HTTP_AUTHORIZATION=f"Token {first.key}")
    assert gone.status_code == 204
    assert _get(second.key).status_code == 401


def test_nobody_revokes_another_doctors_token(alliance_world) -> None:  # type: ignore[no-untyped-def]
    mine = accounts.token_issue(user=alliance_world.owner.user, by=audit.SYSTEM)
    theirs = accounts.token_issue(user=alliance_world.colleague.user, by=audit.SYSTEM)
    response = Client().delete(f"/api/v1/tokens/{theirs.token.pk}/", HTTP_AUTHORIZATION=f"Token {mine.key}")
    assert response.status_code == 404
    assert (
        client_for(alliance_world.owner).post(reverse("account:token_revoke", args=[theirs.token.pk])).status_code
        == 404
    )
    assert _get(theirs.key).status_code == 200


def test_deactivation_revokes_every_token(alliance_world) -> None:  # type: ignore[no-untyped-def]
    issued = accounts.token_issue(user=alliance_world.owner.user, by=audit.SYSTEM)
    services.doctor_set_active(doctor=alliance_world.owner, active=False, by=audit.SYSTEM)
    services.doctor_set_active(doctor=alliance_world.owner, active=True, by=audit.SYSTEM)
    assert _get(issued.key).status_code == 401


def test_the_data_migration_hashes_plain_text_tokens(alliance_world) -> None:  # type: ignore[no-untyped-def]
    from rest_framework.authtoken.models import Token

    old = Token.objects.create(user=alliance_world.owner.user)
    migration = import_module("alliance.migrations.0005_hash_api_tokens")
    migration.hash_tokens(global_apps, None)
    assert not Token.objects.exists()
    row = ApiToken.objects.get(user=alliance_world.owner.user)
    assert row.digest == hashlib.sha256(old.key.encode()).hexdigest()
    assert _get(old.key).status_code == 200


def test_a_token_loads_its_user_doctor_institution_and_alliance_in_one_query(  # type: ignore[no-untyped-def]
    alliance_world, django_assert_num_queries
) -> None:
    """The hand-written join (authentication._load_token) leaves the objects as the ORM's
    select_related would: the same field values, and nothing left to load."""
    from alliance.api.authentication import DoctorTokenAuthentication

    doctor = alliance_world.owner
    issued = accounts.token_issue(user=doctor.user, by=audit.SYSTEM, name="读片工作站")
    with django_assert_num_queries(1):
        user, token = DoctorTokenAuthentication().authenticate_credentials(issued.key)
        institution = user.doctor.institution
        assert (token.pk, token.name, user.pk, user.doctor.pk) == (
            issued.token.pk,
            "读片工作站",
            doctor.user.pk,
            doctor.pk,
        )
        assert (institution.pk, institution.alliance.pk) == (doctor.institution.pk, doctor.institution.alliance.pk)
    orm = ApiToken.objects.select_related("user__doctor__institution__alliance").get(pk=issued.token.pk)
    for loaded, expected in [
        (token, orm),
        (user, orm.user),
        (user.doctor, orm.user.doctor),
        (institution, orm.user.doctor.institution),
        (institution.alliance, orm.user.doctor.institution.alliance),
    ]:
        fields = type(expected)._meta.concrete_fields
        assert [getattr(loaded, f.attname) for f in fields] == [getattr(expected, f.attname) for f in fields]
        assert loaded._state.adding is False and loaded._state.db == "default"


def test_a_token_of_a_user_without_a_doctor_loads_its_absence(  # type: ignore[no-untyped-def]
    alliance_world, django_user_model, django_assert_num_queries
) -> None:
    """A superuser's token (no doctor row): user.doctor is known to be missing, without a query."""
    from alliance.api.authentication import _load_token

    admin = django_user_model.objects.create_superuser("root", "root@example.org", "Root-pass-2026!")
    issued = accounts.token_issue(user=admin, by=audit.SYSTEM)
    token = _load_token(hashlib.sha256(issued.key.encode()).hexdigest())
    assert token is not None and token.user.pk == admin.pk
    with django_assert_num_queries(0):
        assert getattr(token.user, "doctor", None) is None
    revoked = accounts.token_issue(user=admin, by=audit.SYSTEM)
    ApiToken.objects.filter(pk=revoked.token.pk).update(revoked_at=timezone.now())
    assert _load_token(hashlib.sha256(revoked.key.encode()).hexdigest()) is None
