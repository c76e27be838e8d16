"""percentile_cont on PostgreSQL and its SQLite fallback give the same, hand-computed values."""

from __future__ import annotations

import sqlite3

import pytest
from django.db.models import Q

from alliance.aggregates import PercentileCont, PercentilesCont, SQLitePercentileCont, percentile_cont
from imaging.models import Study
from tests import factories
from tests.factories import StudyFactory

# Hand-computed: sorted 10, 20, 30, 40; p50 at 0.5 * 3 = 1.5 -> 20 + 0.5 * 10 = 25;
# p90 at 2.7 -> 30 + 0.7 * 10 = 37; p0 is the least, p100 the greatest.
VALUES = [40.0, 10.0, 30.0, 20.0]
EXPECTED = {0.0: 10.0, 0.5: 25.0, 0.9: 37.0, 1.0: 40.0}


@pytest.mark.parametrize(("fraction", "expected"), EXPECTED.items())
def test_percentile_interpolates_between_the_nearest_values(fraction: float, expected: float) -> None:
    assert percentile_cont(VALUES, fraction) == pytest.approx(expected)


def test_percentile_of_nothing_is_none_and_of_one_value_is_that_value() -> None:
    assert percentile_cont([], 0.5) is None
    assert percentile_cont([7.0], 0.9) == 7.0


def sqlite_percentiles(values: list[float | None], fraction: float) -> list[tuple[str, float | None]]:
    db = sqlite3.connect(":memory:")
    db.create_aggregate("percentile_cont", 2, SQLitePercentileCont)  # type: ignore[arg-type]
    db.execute("CREATE TABLE t (g TEXT, v REAL)")
    db.executemany("INSERT INTO t VALUES (?, ?)", [("a", v) for v in values] + [("b", 5.0)])
    rows = db.execute("SELECT g, percentile_cont(v, ?) FROM t GROUP BY g ORDER BY g", [fraction]).fetchall()
    db.close()
    return rows


@pytest.mark.parametrize(("fraction", "expected"), EXPECTED.items())
def test_sqlite_fallback_gives_the_hand_computed_values_per_group(fraction: float, expected: float) -> None:
    rows = sqlite_percentiles([*VALUES, None], fraction)
    assert rows[0][0] == "a" and rows[0][1] == pytest.approx(expected)
    assert rows[1] == ("b", 5.0)


def test_a_fraction_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        PercentileCont("x", 1.5)


@pytest.mark.django_db
@pytest.mark.parametrize(("fraction", "expected"), EXPECTED.items())
def test_the_database_gives_the_hand_computed_values(fraction: float, expected: float) -> None:
    """On PostgreSQL percentile_cont itself; on the embedded SQLite the registered fallback."""
    institution = factories.make_institution()
    for size in VALUES:
        StudyFactory(institution=institution, series=0, size_bytes=int(size))
    got = Study.objects.aggregate(
        p=PercentileCont("size_bytes", fraction),
        tiny=PercentileCont("size_bytes", fraction, filter=Q(size_bytes__lt=15)),
    )
    assert got["p"] == pytest.approx(expected)
    assert got["tiny"] == pytest.approx(10.0)


@pytest.mark.django_db
def test_several_percentiles_from_one_sort_match_the_single_ones() -> None:
    institution = factories.make_institution()
    for size in VALUES:
        StudyFactory(institution=institution, series=0, size_bytes=int(size))
    got = Study.objects.aggregate(
        p=PercentilesCont("size_bytes", tuple(EXPECTED)), none=PercentilesCont("size_bytes", (0.5,), filter=Q(pk=-1))
    )
    assert got["p"] == pytest.approx(list(EXPECTED.values()))
    assert got["none"] is None
