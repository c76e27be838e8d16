"""The top bar's unread counts (the consults bell, the referrals and screening menu entries):
one query a page, whichever of them the page shows."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from alliance import unread
from consults.models import Notification, Status
from tests.consults.conftest import walk


@pytest.mark.django_db
def test_unread_counts_of_every_kind_in_one_query_once_a_request(
    alliance_world: Any, django_assert_num_queries: Any
) -> None:
    world = alliance_world
    consult = walk(world, Status.REQUESTED)
    now = timezone.now()
    Notification.objects.filter(user=world.owner.user).delete()
    Notification.objects.create(user=world.owner.user, consult=consult, verb="requested", created_at=now)
    Notification.objects.create(user=world.owner.user, consult=consult, verb="claimed", created_at=now)
    Notification.objects.create(user=world.owner.user, consult=consult, verb="read", created_at=now, read_at=now)
    request = SimpleNamespace(user=world.owner.user)
    with django_assert_num_queries(1):
        counts = unread.unread_counts(request)
        assert unread.unread_counts(request) is counts  # the second caller of the page reads the first's
    assert counts == {"consults": 2, "screening": 0, "referrals": 0}


@pytest.mark.django_db
def test_nobody_signed_in_has_nothing_unread_and_costs_no_query(django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(0):
        counts = unread.unread_counts(SimpleNamespace(user=AnonymousUser()))
    assert set(counts.values()) == {0}
