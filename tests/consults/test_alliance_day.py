"""The simulated alliance day's core (bench/alliance_day.py) on a tiny day: 20 consults and
3 specialists through the real consult services on the simulated clock. Every consult ends
signed, and the figures pages' turnaround and breaches tables (the CSV export, live and
after the monthly roll-up) agree with the simulation's own counts."""

from __future__ import annotations

from typing import Any

import pytest

from bench.alliance_day import PRIORITIES, Config, simulate, workload
from consults.models import Consult, ConsultMonth, Status

pytestmark = pytest.mark.django_db

TINY = Config(consults=20, specialists=3, shift_hours=24, seed=7)


@pytest.fixture
def _tz(settings: Any) -> None:
    settings.TIME_ZONE = TINY.tz


def test_a_tiny_alliance_day_ends_with_every_consult_signed_and_the_figures_agreeing(_tz: None) -> None:
    result = simulate(TINY)

    assert result["all_signed"]
    assert Consult.objects.count() == 20
    assert Consult.objects.filter(status=Status.COMPLETED, completed_at__isnull=False).count() == 20
    assert sum(s["requested"] for s in result["stats"].values()) == 20
    assert sum(s["signed"] for s in result["stats"].values()) == 20
    # The figures check read both the day (live) and its month from the roll-up.
    assert ConsultMonth.objects.exists()
    assert result["check"] == []


def test_the_day_with_questions_on_hold_and_named_requests_agrees_with_the_figures(_tz: None) -> None:
    """A day where every case is named to a reader and a good share is put on hold: the
    turnaround less the hold, and the widenings at the claim timeout, still add up."""
    cfg = Config(consults=20, specialists=3, shift_hours=8, named=1.0, seed=11)
    cases = workload(cfg)
    for case in cases[::3]:
        case.hold_after, case.answer_delay = 60.0, 1800.0
    result = simulate(cfg, cases)

    assert result["all_signed"]
    assert Consult.objects.filter(paused_seconds=1800).count() == len(cases[::3])
    assert result["check"] == []
    assert set(result["stats"]) == set(PRIORITIES)


def test_a_wrong_count_shows_as_a_difference(_tz: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: with the script's count of signed stat consults off by one, the
    figures disagree and the difference names the table and the priority."""
    from bench import alliance_day

    real = alliance_day.summary

    def off_by_one(day: Any) -> dict[str, dict[str, Any]]:
        stats = real(day)
        stats["stat"]["signed"] += 1
        return stats

    monkeypatch.setattr(alliance_day, "summary", off_by_one)
    result = simulate(TINY)

    assert any(line.startswith("day turnaround stat:") for line in result["check"])
