"""The worklist with 10,000 open cases: a constant number of queries, whatever the page."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from tests.conftest import client_for
from tests.consults.bulk import bulk_open_consults
from tests.factories import StudyFactory, make_doctor

OPEN_CASES = 10_000


@pytest.fixture
def busy_world(world: Any) -> Any:
    others = [make_doctor(institution=world.hosp, roles=["specialist"]) for _ in range(3)]
    world.pool.members.add(*others)
    studies = [StudyFactory(institution=world.clin_a) for _ in range(5)]
    bulk_open_consults(
        requester=world.owner, pool=world.pool, studies=studies, count=OPEN_CASES, owners=[world.specialist, *others]
    )
    return world


def _queries(client: Any, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.integration
def test_worklist_pages_and_api_take_the_same_few_queries_with_10000_open_cases(
    busy_world: Any, django_assert_max_num_queries: Any
) -> None:
    spec = client_for(busy_world.specialist)
    counts = [_queries(spec, f"/consults/?tab=unclaimed&page={n}") for n in (1, 2, 200)]
    assert counts[0] == counts[1] == counts[2] <= 16, counts
    page = spec.get("/consults/?tab=unclaimed")
    assert dict(page.context["tabs"])["unclaimed"] == OPEN_CASES - OPEN_CASES // 7 - 1
    rows = [c for c, _d in page.context["rows"]]
    assert [c.priority for c in rows[:3]] == ["stat", "stat", "stat"]
    assert rows == sorted(rows, key=lambda c: (c.priority_rank, c.due_at))
    clinic = client_for(busy_world.colleague)
    assert _queries(clinic, "/consults/?tab=waiting&page=1") == _queries(clinic, "/consults/?tab=waiting&page=300")
    # The API on the same data (one test: building 10,000 cases twice would double the time).
    api = APIClient()
    api.force_authenticate(busy_world.specialist.user)
    with django_assert_max_num_queries(10):
        small = api.get("/api/v1/consults/?tab=unclaimed&limit=5")
    with django_assert_max_num_queries(10):
        big = api.get("/api/v1/consults/?tab=unclaimed&limit=200&offset=5000")
    assert small.status_code == big.status_code == 200
    assert len(big.json()["results"]) == 200
    assert big.json()["count"] == small.json()["count"]
