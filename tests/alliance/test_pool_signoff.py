"""The pool page of the console sets two-level sign-off and the pool's reviewers (issue 15)."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from rest_framework.test import APIClient

from alliance.models import AuditEvent, Pool
from tests.conftest import client_for


def _form(world: Any, **overrides: Any) -> dict[str, Any]:
    members = [world.specialist.pk, world.outsider_specialist.pk]
    return {"name": "CT reading desk", "specialty": world.pool.specialty_id, "members": members, **overrides}


def test_pool_admin_turns_on_two_level_sign_off_with_a_reviewer(alliance_world: Any) -> None:
    world = alliance_world
    data = _form(world, two_level_signoff="on", reviewers=[world.outsider_specialist.pk])
    answer = client_for(world.hosp_admin).post(reverse("manage:pool_edit", args=[world.pool.pk]), data)
    assert answer.status_code == 302
    pool = Pool.objects.get(pk=world.pool.pk)
    assert pool.two_level_signoff and list(pool.reviewers.all()) == [world.outsider_specialist]
    assert AuditEvent.objects.filter(action="pool.reviewers", object_id=str(pool.pk)).exists()


def test_a_reviewer_must_be_a_member_and_two_level_needs_one(alliance_world: Any) -> None:
    world = alliance_world
    url = reverse("manage:pool_edit", args=[world.pool.pk])
    client = client_for(world.hosp_admin)
    stranger = _form(world, members=[world.specialist.pk], reviewers=[world.outsider_specialist.pk])
    assert "reviewers" in client.post(url, stranger).context["form"].errors
    nobody = _form(world, two_level_signoff="on")
    assert "reviewers" in client.post(url, nobody).context["form"].errors
    assert not Pool.objects.get(pk=world.pool.pk).two_level_signoff


def test_a_member_who_leaves_the_pool_stops_being_its_reviewer(alliance_world: Any) -> None:
    world = alliance_world
    world.pool.members.add(world.outsider_specialist)
    world.pool.reviewers.add(world.outsider_specialist)
    data = _form(world, members=[world.specialist.pk])
    assert client_for(world.hosp_admin).post(reverse("manage:pool_edit", args=[world.pool.pk]), data).status_code == 302
    assert not world.pool.reviewers.exists()


def test_pool_api_sets_and_shows_two_level_sign_off(alliance_world: Any) -> None:
    world = alliance_world
    api = APIClient()
    api.force_authenticate(world.hosp_admin.user)
    body = {"two_level_signoff": True, "members": [world.specialist.pk], "reviewers": [world.specialist.pk]}
    answer = api.patch(f"/api/v1/pools/{world.pool.pk}/", body, format="json")
    assert answer.status_code == 200, answer.json()
    assert answer.json()["two_level_signoff"] is True and answer.json()["reviewers"] == [world.specialist.pk]
    refused = api.patch(f"/api/v1/pools/{world.pool.pk}/", {"reviewers": [world.outsider_specialist.pk]}, format="json")
    assert refused.status_code == 400 and "reviewers" in refused.json()["error"]["fields"]
