"""alliance.access: who is asking (the principal, resolved once per request) and membership."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.db import SessionStore
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from alliance import access, audit, services
from alliance.access import NOBODY, Principal, resolve_principal
from alliance.middleware import ActiveDoctorMiddleware
from alliance.models import Role

PERSONAS = ["owner", "inst_admin_a", "specialist", "stranger", "alliance_admin"]


def _through_middleware(user: Any) -> Principal:
    seen: list[Principal] = []

    def view(request: HttpRequest) -> HttpResponse:
        seen.append(access.principal_of(request))
        return HttpResponse()

    request = RequestFactory().get("/")
    request.user = user
    request.session = SessionStore()
    ActiveDoctorMiddleware(view)(request)
    return seen[0]


def test_the_middleware_resolves_the_principal_once_per_request(alliance_world, django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    owner = alliance_world.owner
    user = type(owner.user).objects.get(pk=owner.user.pk)
    with django_assert_num_queries(1):
        principal = _through_middleware(user)
        assert (principal.doctor, principal.institution_id, principal.roles) == (
            owner,
            owner.institution_id,
            {"clinician"},
        )
        assert principal.alliance == alliance_world.alliance and principal.is_clinical
    assert not hasattr(user, "_active_doctor")  # nothing is cached on the user object


def test_a_user_set_by_another_authentication_is_resolved_once(alliance_world, django_assert_num_queries) -> None:  # type: ignore[no-untyped-def]
    request = RequestFactory().get("/")
    request.user = AnonymousUser()
    request.principal = resolve_principal(request.user)  # type: ignore[attr-defined]
    request.user = alliance_world.specialist.user  # as DRF's forced or another authentication does
    with django_assert_num_queries(1):
        assert access.principal_of(request).doctor == alliance_world.specialist
        assert access.principal_of(request) is access.principal_of(request)


def test_anonymous_and_switched_off_doctors_are_nobody(alliance_world) -> None:  # type: ignore[no-untyped-def]
    assert _through_middleware(AnonymousUser()).doctor is None
    services.doctor_set_active(doctor=alliance_world.stranger, active=False, by=audit.SYSTEM)
    assert _through_middleware(alliance_world.stranger.user).doctor is None


def test_a_specialists_pools_and_groups_reach_its_principal(alliance_world) -> None:  # type: ignore[no-untyped-def]
    specialist = resolve_principal(alliance_world.specialist.user)
    assert specialist.pool_ids == [alliance_world.pool.pk]
    groups = {row["pk"] for row in specialist.group_ids}  # type: ignore[index]
    assert groups == {alliance_world.hosp.group_id, alliance_world.pool.group_id}
    assert resolve_principal(alliance_world.owner.user).pool_ids == []


def test_the_actor_of_a_principal_names_the_user_and_institution(alliance_world) -> None:  # type: ignore[no-untyped-def]
    owner = resolve_principal(alliance_world.owner.user)
    assert owner.actor == audit.Actor("user", str(owner.user.pk), "owner", alliance_world.clin_a.pk)
    assert NOBODY.actor == audit.ANONYMOUS


def test_who_manages_which_institutions(alliance_world) -> None:  # type: ignore[no-untyped-def]
    w = alliance_world
    managed = {p: set(access.institutions_managed_by(resolve_principal(getattr(w, p).user))) for p in PERSONAS}
    assert managed["alliance_admin"] == {w.hosp, w.clin_a, w.clin_b, w.office}
    assert managed["inst_admin_a"] == {w.clin_a}
    assert managed["owner"] == managed["specialist"] == managed["stranger"] == set()
    assert not access.institutions_managed_by(NOBODY).exists()


def test_only_an_alliance_admin_makes_alliance_admins(alliance_world) -> None:  # type: ignore[no-untyped-def]
    admin = resolve_principal(alliance_world.alliance_admin.user)
    inst_admin = resolve_principal(alliance_world.inst_admin_a.user)
    assert Role.ALLIANCE_ADMIN in access.assignable_roles(admin)
    assert access.assignable_roles(inst_admin) == [r for r in Role.values if r != Role.ALLIANCE_ADMIN]
    assert access.assignable_roles(resolve_principal(alliance_world.owner.user)) == []
