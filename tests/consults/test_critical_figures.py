"""The critical results' figures against numbers worked out by hand, and their CSV export.

The fixture (times in Asia/Shanghai, the range March and April 2026):
  CT  03-05 10:00  read back after 4 min
  CT  03-20 10:00  read back after 10 min
  CT  04-02 09:00  read back after 30 min, escalated
  CT  04-30 23:30  never read back, escalated         (15:30 UTC: still April in Shanghai)
  CT  02-28 23:00  out of the range
  DX  03-31 23:30  read back after 6 min              (15:30 UTC: March in Shanghai)
  DX  05-01 00:10  out of the range                   (04-30 16:10 UTC)
Per month: March CT 2, DX 1; April CT 2.
CT: 3 read back in 4, 10, 30 min: p50 10, p90 10 + 0.8 * 20 = 26; 2 escalated.
All: 4 read back in 4, 6, 10, 30 min: p50 6 + 0.5 * 4 = 8, p90 10 + 0.7 * 20 = 24.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.functional import Promise

from alliance import figures
from consults.figures_critical import compute
from consults.models import Consult, CriticalResult, Status
from tests.conftest import client_for
from tests.consults.conftest import walk
from tests.factories import StudyFactory

pytestmark = pytest.mark.django_db
SHANGHAI = ZoneInfo("Asia/Shanghai")
RANGE = {"date_from": "2026-03-01", "date_to": "2026-04-30"}


def at(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=SHANGHAI)


def _flag(consult: Consult, flagged: datetime, ack_minutes: float | None = None, escalated: bool = False) -> None:
    CriticalResult.objects.create(
        consult=consult,
        text="critical",
        modality=consult.modality,
        flagged_by=consult.owner,
        flagged_at=flagged,
        acknowledged_by=None if ack_minutes is None else consult.requester,
        acknowledged_at=None if ack_minutes is None else flagged + timedelta(minutes=ack_minutes),
        escalated_at=flagged + timedelta(minutes=15) if escalated else None,
    )


@pytest.fixture
def flagged(world: Any) -> Any:
    ct = walk(world, Status.IN_PROGRESS, study=StudyFactory(institution=world.clin_a, modalities="CT"))
    dx = walk(world, Status.IN_PROGRESS, study=StudyFactory(institution=world.clin_a, modalities="DX"))
    _flag(ct, at(3, 5, 10), 4)
    _flag(ct, at(3, 20, 10), 10)
    _flag(ct, at(4, 2, 9), 30, escalated=True)
    _flag(ct, at(4, 30, 23, 30), None, escalated=True)
    _flag(ct, at(2, 28, 23), 1)
    _flag(dx, at(3, 31, 23, 30), 6)
    _flag(dx, at(5, 1, 0, 10), 1)
    return world


def _scope(world: Any) -> figures.Scope:
    return figures.Scope(
        alliance_id=world.alliance.pk,
        institution_ids=(world.clin_a.pk,),
        start=at(3, 1, 0),
        end=at(5, 1, 0),
        now=timezone.now(),
        tz=SHANGHAI,
    )


def _tables(scope: figures.Scope) -> dict[str, Any]:
    with translation.override("en"):
        return {
            t.key: ([str(c) for c in t.columns], [[str(v) if isinstance(v, Promise) else v for v in r] for r in t.rows])
            for t in compute(scope)
        }


def test_critical_results_per_month_and_modality(flagged: Any) -> None:
    columns, rows = _tables(_scope(flagged))["critical-month"]
    assert columns == ["Month", "CT", "DX", "Total"]
    assert rows == [["2026-03", 2, 1, 3], ["2026-04", 2, 0, 2]]


def test_time_to_acknowledgement_percentiles_and_escalations(flagged: Any) -> None:
    _columns, rows = _tables(_scope(flagged))["critical-ack"]
    assert rows == [
        ["CT", 4, 3, 10.0, 26.0, 2],
        ["DX", 1, 1, 6.0, 6.0, 0],
        ["All", 5, 4, 8.0, 24.0, 2],
    ]


def test_the_receiving_institution_counts_the_flags_of_the_cases_it_read(flagged: Any) -> None:
    scope = figures.Scope(**{**_scope(flagged).__dict__, "institution_ids": (flagged.hosp.pk,)})
    assert _tables(scope)["critical-ack"][1][-1] == ["All", 5, 4, 8.0, 24.0, 2]
    elsewhere = figures.Scope(**{**_scope(flagged).__dict__, "institution_ids": (flagged.clin_b.pk,)})
    assert _tables(elsewhere) == {
        "critical-month": (["Month", "Total"], []),
        "critical-ack": (
            [
                "Modality",
                "Critical results flagged",
                "Acknowledged",
                "p50 to acknowledge (min)",
                "p90 to acknowledge (min)",
                "Escalated",
            ],
            [],
        ),
    }


def test_csv_export_of_the_acknowledgement_table(flagged: Any) -> None:
    response = client_for(flagged.alliance_admin).get(
        reverse("figures_csv", args=["critical", "critical-ack"]), RANGE, HTTP_ACCEPT_LANGUAGE="en"
    )
    assert response.status_code == 200
    text = response.content.decode("utf-8").lstrip("\ufeff")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[-1] == ["All", "5", "4", "8.0", "24.0", "2"]


def test_figures_page_shows_the_critical_section(flagged: Any) -> None:
    response = client_for(flagged.alliance_admin).get(reverse("figures"), RANGE, HTTP_ACCEPT_LANGUAGE="en")
    html = response.content.decode()
    assert response.status_code == 200
    assert "Critical results flagged per month, by modality" in html
    assert "Critical results: time to acknowledgement and escalations" in html
