"""Break-glass in the figures (issue 16): openings per owning institution and month,
approved, flagged and waiting, and the time to review, against numbers worked out by hand.

Times are Asia/Shanghai; the range is 2026-03-01 to 2026-04-30 (tests.alliance.figures_fixture).

  r1 clinic A  03-01 00:30 (02-28 in UTC)  approved after 2 h
  r2 clinic A  03-10 08:00                 flagged after 24 h
  r3 clinic A  03-20 09:00                 approved after 6 h
  r4 clinic A  04-05 09:00                 waiting
  r5 clinic B  04-06 09:00                 approved after 1 h
  r6 clinic A  02-27 09:00 (before the range), approved 03-01
  r7 clinic A  04-30 23:30 (in April here, 15:30 UTC)  waiting

Clinic A, March: 3 opened, 2 approved, 1 flagged; review 2, 6, 24 h: p50 6 h,
p90 6 + 0.8 * (24 - 6) = 20.4 h. Clinic A, April: 2 waiting. Clinic B, April: 1 approved
after 1 h. Months: March 3/2/1/0, April 3/1/0/2.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.urls import reverse

from alliance.models import AuditEvent
from imaging.break_glass_figures import compute
from imaging.models import BreakGlassReview
from tests.alliance import figures_fixture as fx
from tests.alliance.test_figures import scope_of, tables
from tests.conftest import client_for
from tests.factories import StudyFactory

pytestmark = pytest.mark.django_db
State = BreakGlassReview.State


def opened(
    study: Any, by: Any, at: datetime, state: str = State.PENDING, hours: float | None = None, reviewer: Any = None
) -> BreakGlassReview:
    return BreakGlassReview.objects.create(
        study=study,
        owner_institution=study.institution,
        user=by.user,
        user_institution=by.institution,
        reason="Unconscious patient, prior CT needed now",
        opened_at=at,
        expires_at=at + timedelta(hours=4),
        state=state,
        reviewed_by=reviewer.user if reviewer else None,
        reviewed_at=at + timedelta(hours=hours) if hours is not None else None,
    )


@pytest.fixture
def world(alliance_world: Any) -> Any:
    w = alliance_world
    a = StudyFactory(institution=w.clin_a, series=0)
    b = StudyFactory(institution=w.clin_b, series=0)
    opened(a, w.stranger, fx.at(3, 1, 0, 30), State.APPROVED, 2, w.inst_admin_a)
    opened(a, w.stranger, fx.at(3, 10, 8), State.FLAGGED, 24, w.inst_admin_a)
    opened(a, w.stranger, fx.at(3, 20, 9), State.APPROVED, 6, w.inst_admin_a)
    opened(a, w.stranger, fx.at(4, 5, 9))
    opened(b, w.owner, fx.at(4, 6, 9), State.APPROVED, 1, w.hosp_admin)
    opened(a, w.stranger, fx.at(2, 27, 9), State.APPROVED, 48, w.inst_admin_a)
    opened(a, w.stranger, fx.at(4, 30, 23, 30))
    return w


def test_break_glass_counted_per_month_by_review_for_the_whole_alliance(world: Any) -> None:
    got = tables(compute(scope_of(world.alliance_admin), None))
    assert got["break-glass-month"] == [["2026-03", 3, 2, 1, 0], ["2026-04", 3, 1, 0, 2]]


def test_break_glass_per_owning_institution_and_month_with_the_review_time(world: Any) -> None:
    got = tables(compute(scope_of(world.alliance_admin), None))
    assert got["break-glass-institution"] == [
        ["Clinic A", "2026-03", 3, 2, 1, 0, 6.0, 20.4],
        ["Clinic A", "2026-04", 2, 0, 0, 2, None, None],
        ["Clinic B", "2026-04", 1, 1, 0, 0, 1.0, 1.0],
    ]


def test_an_institution_admin_sees_only_the_accesses_to_their_own_studies(world: Any) -> None:
    got = tables(compute(scope_of(world.inst_admin_a), None))
    assert [row[0] for row in got["break-glass-institution"]] == ["Clinic A", "Clinic A"]
    assert got["break-glass-month"] == [["2026-03", 3, 2, 1, 0], ["2026-04", 2, 0, 0, 2]]


def test_no_break_glass_in_the_range_shows_no_rows(alliance_world: Any) -> None:
    got = tables(compute(scope_of(alliance_world.alliance_admin), None))
    assert got == {"break-glass-month": [], "break-glass-institution": []}


def test_break_glass_tables_are_on_the_page_and_export_as_csv(world: Any) -> None:
    client = client_for(world.alliance_admin)
    page = client.get(reverse("figures"), fx.RANGE, HTTP_ACCEPT_LANGUAGE="en")
    assert page.status_code == 200
    assert "Emergency accesses per institution and month" in page.content.decode()
    response = client.get(
        reverse("figures_csv", args=["break_glass", "break-glass-institution"]), fx.RANGE, HTTP_ACCEPT_LANGUAGE="en"
    )
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8")[1:])))
    assert rows[0][:3] == ["Institution", "Month", "Accesses opened"] and rows[0][-1] == "Review p90 (h)"
    assert rows[1] == ["Clinic A", "2026-03", "3", "2", "1", "0", "6.0", "20.4"]
    assert rows[2] == ["Clinic A", "2026-04", "2", "0", "0", "2", "", ""]
    assert AuditEvent.objects.filter(action="figures.export", object_id="break_glass/break-glass-institution").exists()
