"""The referral lists with 10,000 referrals: the same few queries whatever the tab and page."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.conftest import client_for
from tests.factories import StudyFactory
from tests.referrals.bulk import bulk_referrals

REFERRALS = 10_000


def _queries(client: Any, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.integration
def test_incoming_and_outgoing_pages_take_the_same_few_queries_with_10000_referrals(alliance_world: Any) -> None:
    world = alliance_world
    studies = [StudyFactory(institution=world.clin_a) for _ in range(20)]
    bulk_referrals(
        referrers=[world.owner, world.colleague], to_institution=world.hosp, studies=studies, count=REFERRALS
    )
    desk, clinic = client_for(world.hosp_admin), client_for(world.owner)
    incoming = [_queries(desk, f"/referrals/incoming/?tab=waiting&page={n}") for n in (1, 2, 100)]
    assert incoming[0] == incoming[1] == incoming[2] <= 20, incoming
    assert _queries(desk, "/referrals/incoming/?tab=closed&page=3") == incoming[0]
    page = desk.get("/referrals/incoming/?tab=waiting")
    counts = {name: count for name, _label, count in page.context["tabs"]}
    assert sum(counts.values()) == REFERRALS and counts["waiting"] == REFERRALS * 7 // 20
    ranks = [r.urgency_rank for r in page.context["rows"]]
    assert ranks == sorted(ranks) and ranks[0] == 0
    outgoing = [_queries(clinic, f"/referrals/outgoing/?tab=closed&page={n}") for n in (1, 50)]
    assert outgoing[0] == outgoing[1] <= 20, outgoing
