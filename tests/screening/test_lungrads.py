"""Lung-RADS v2022 (consults.screening.lungrads) against the published assessment table: one
case per row of the table and its size boundaries, the stepped management of v2022, 4X, S,
category 0, and the follow-up intervals. Nothing here touches the database."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from consults.screening import lungrads
from consults.screening.lungrads import Change, Earlier, Finding, Kind, assess, exam

D = Decimal


def solid(mean: str, **extra: object) -> Finding:
    return Finding(Kind.SOLID, D(mean), **extra)  # type: ignore[arg-type]


def part_solid(mean: str, solid_mm: str) -> Finding:
    return Finding(Kind.PART_SOLID, D(mean), D(solid_mm))


def ggn(mean: str) -> Finding:
    return Finding(Kind.GROUND_GLASS, D(mean))


# (the table's finding, the nodule, baseline?, the category)
BASELINE_AND_NEW = [
    # Category 1: no nodules (see the exam test) and benign features
    ("complete, central, popcorn or concentric calcification", solid("12", feature="calcified"), True, "1"),
    ("fat-containing nodule", solid("9", feature="fat"), True, "1"),
    # Category 2
    ("juxtapleural nodule < 10 mm at baseline", solid("9.9", feature="juxtapleural"), True, "2"),
    ("juxtapleural nodule < 10 mm, new", solid("9.9", feature="juxtapleural"), False, "2"),
    ("solid < 6 mm at baseline", solid("5.9"), True, "2"),
    ("solid new < 4 mm", solid("3.9"), False, "2"),
    ("part-solid < 6 mm total mean diameter at baseline", part_solid("5.9", "2"), True, "2"),
    ("non-solid < 30 mm at baseline", ggn("29.9"), True, "2"),
    ("non-solid < 30 mm, new", ggn("12"), False, "2"),
    ("airway nodule, subsegmental, at baseline", Finding(Kind.AIRWAY, airway_level="subsegmental"), True, "2"),
    # Category 3
    ("solid >= 6 to < 8 mm at baseline (lower edge)", solid("6.0"), True, "3"),
    ("solid >= 6 to < 8 mm at baseline (upper edge)", solid("7.9"), True, "3"),
    ("solid new 4 mm to < 6 mm", solid("4.0"), False, "3"),
    ("part-solid >= 6 mm total with solid component < 6 mm at baseline", part_solid("6.0", "5.9"), True, "3"),
    ("part-solid new < 6 mm total", part_solid("5.5", "2"), False, "3"),
    ("non-solid >= 30 mm at baseline", ggn("30.0"), True, "3"),
    ("non-solid >= 30 mm, new", ggn("31"), False, "3"),
    ("a juxtapleural nodule of 10 mm is measured as solid", solid("10.0", feature="juxtapleural"), True, "4A"),
    # Category 4A
    ("solid >= 8 to < 15 mm at baseline (lower edge)", solid("8.0"), True, "4A"),
    ("solid >= 8 to < 15 mm at baseline (upper edge)", solid("14.9"), True, "4A"),
    ("solid new 6 to < 8 mm", solid("6.0"), False, "4A"),
    ("part-solid >= 6 mm with solid component >= 6 to < 8 mm at baseline", part_solid("12", "6.0"), True, "4A"),
    ("part-solid with a new solid component < 4 mm", part_solid("9", "3.9"), False, "4A"),
    (
        "airway nodule, segmental or more proximal, at baseline",
        Finding(Kind.AIRWAY, airway_level="segmental"),
        True,
        "4A",
    ),
    ("airway nodule, segmental, new", Finding(Kind.AIRWAY, airway_level="segmental"), False, "4A"),
    ("atypical cyst: thick-walled", Finding(Kind.CYST, cyst="thick_walled"), True, "4A"),
    ("atypical cyst: multilocular at baseline", Finding(Kind.CYST, cyst="multilocular"), True, "4A"),
    ("atypical cyst: became multilocular", Finding(Kind.CYST, cyst="became_multilocular"), False, "4A"),
    # Category 4B
    ("solid >= 15 mm at baseline", solid("15.0"), True, "4B"),
    ("solid new >= 8 mm", solid("8.0"), False, "4B"),
    ("part-solid solid component >= 8 mm at baseline", part_solid("14", "8.0"), True, "4B"),
    ("part-solid new solid component >= 4 mm", part_solid("9", "4.0"), False, "4B"),
    ("atypical cyst: thick wall growing or nodular", Finding(Kind.CYST, cyst="growing_wall"), False, "4B"),
    ("atypical cyst: growing multilocular", Finding(Kind.CYST, cyst="growing_multilocular"), False, "4B"),
    (
        "atypical cyst: multilocular, more loculation or opacity",
        Finding(Kind.CYST, cyst="multilocular_denser"),
        False,
        "4B",
    ),
    # Category 3 (cysts)
    (
        "atypical cyst: thick-walled with a growing cystic component",
        Finding(Kind.CYST, cyst="growing_cystic_component"),
        False,
        "3",
    ),
    # 4X: category 3 or 4 with features that raise the suspicion of cancer
    ("4A with spiculation", solid("9", suspicious=True), True, "4X"),
    ("3 with suspicious features", solid("7", suspicious=True), True, "4X"),
    ("2 stays 2 whatever is ticked", solid("4", suspicious=True), True, "2"),
]


@pytest.mark.parametrize(
    ("row", "finding", "baseline", "expected"), BASELINE_AND_NEW, ids=[r[0] for r in BASELINE_AND_NEW]
)
def test_a_nodule_first_seen_gets_its_row_of_the_table(
    row: str, finding: Finding, baseline: bool, expected: str
) -> None:
    assert assess(finding, baseline=baseline).category == expected


# (the table's finding, the nodule now, the same nodule before with its category, the category)
FOLLOW_UP = [
    ("solid growing < 8 mm", solid("7.0"), Earlier(solid("5.4"), "2"), "4A"),
    ("solid growing >= 8 mm", solid("9.1"), Earlier(solid("7.5"), "3"), "4B"),
    ("an increase of 1.5 mm exactly is not growth", solid("6.9"), Earlier(solid("5.4"), "2"), "3"),
    (
        "part-solid with a growing solid component < 4 mm",
        part_solid("10", "3.6"),
        Earlier(part_solid("10", "2.0"), "3"),
        "4A",
    ),
    (
        "part-solid with a growing solid component >= 4 mm",
        part_solid("12", "5.0"),
        Earlier(part_solid("11", "3.4"), "3"),
        "4B",
    ),
    ("non-solid < 30 mm growing", ggn("20"), Earlier(ggn("15"), "2"), "2"),
    ("non-solid >= 30 mm stable", ggn("31"), Earlier(ggn("31"), "3"), "2"),
    ("category 3 stable at its 6-month CT becomes 2", solid("7.0"), Earlier(solid("7.1"), "3"), "2"),
    ("category 4A stable at its 3-month CT becomes 3", solid("9.0"), Earlier(solid("9.0"), "4A"), "3"),
    ("category 4A smaller at its 3-month CT becomes 3", solid("8.2"), Earlier(solid("9.0"), "4A"), "3"),
    ("category 2 stable stays 2", solid("5.0"), Earlier(solid("5.0"), "2"), "2"),
    (
        "crossing a size threshold without growth is categorised by size",
        solid("6.1"),
        Earlier(solid("5.0"), "2"),
        "3",
    ),
    (
        "airway nodule still there at the 3-month CT",
        Finding(Kind.AIRWAY, airway_level="segmental"),
        Earlier(Finding(Kind.AIRWAY, airway_level="segmental"), "4A"),
        "4B",
    ),
    (
        "slowly growing solid nodule over several CTs",
        solid("6.0"),
        Earlier(solid("5.2"), "2", history=(D("4.4"),)),
        "4B",
    ),
    ("slowly growing ground glass stays 2", ggn("32"), Earlier(ggn("31.2"), "2", history=(D("30.4"),)), "2"),
    (
        "ground glass with a new solid component is a new part-solid nodule",
        part_solid("14", "4.5"),
        Earlier(ggn("13"), "2"),
        "4B",
    ),
    ("4B proven benign after work-up", solid("16", feature="proven_benign"), Earlier(solid("16"), "4B"), "2"),
]


@pytest.mark.parametrize(("row", "now", "earlier", "expected"), FOLLOW_UP, ids=[r[0] for r in FOLLOW_UP])
def test_a_nodule_seen_before_is_categorised_by_its_change(
    row: str, now: Finding, earlier: Earlier, expected: str
) -> None:
    assert assess(now, earlier, baseline=False).category == expected


def test_changes_are_named() -> None:
    assert assess(solid("5"), baseline=True).change == Change.BASELINE
    assert assess(solid("5"), baseline=False).change == Change.NEW
    assert assess(solid("7.1"), Earlier(solid("5.5"), "2")).change == Change.GROWING
    assert assess(solid("5.5"), Earlier(solid("5.5"), "2")).change == Change.STABLE
    assert assess(solid("6.0"), Earlier(solid("5.2"), "2", (D("4.4"),))).change == Change.SLOW_GROWING


def test_the_exam_takes_its_most_suspicious_nodule() -> None:
    found = [assess(solid("5"), baseline=True), assess(solid("9"), baseline=True), assess(ggn("20"), baseline=True)]
    assert exam(found).category == "4A"
    assert exam([]).category == "1"  # no nodules: negative
    assert exam([assess(solid("7", suspicious=True)), assess(solid("16"))]).category == "4X"


def test_an_incomplete_exam_is_0_and_the_s_modifier_is_added() -> None:
    result = exam([assess(solid("9"))], incomplete="infectious", significant=True)
    assert result.category == "0" and result.code == "0S"
    assert exam([assess(solid("5"))], significant=True).code == "2S"
    assert not exam([assess(solid("5"))]).positive and exam([assess(solid("7"))]).positive


def test_the_mean_diameter_is_rounded_to_one_decimal_half_up() -> None:
    assert lungrads.mean_diameter(D("6.0"), D("5.9")) == D("6.0")  # 5.95 -> 6.0: category 3, not 2
    assert assess(Finding(Kind.SOLID, lungrads.mean_diameter(D("6.0"), D("5.9")))).category == "3"
    assert lungrads.mean_diameter(D("10"), D("7")) == D("8.5")


@pytest.mark.parametrize(
    ("category", "due"),
    [
        ("0", date(2026, 4, 30)),
        ("1", date(2027, 3, 31)),
        ("2", date(2027, 3, 31)),
        ("3", date(2026, 9, 30)),
        ("4A", date(2026, 6, 30)),
        ("4B", date(2026, 4, 30)),
        ("4X", date(2026, 4, 30)),
    ],
)
def test_each_category_has_its_follow_up_interval(category: str, due: date) -> None:
    assert lungrads.due_after(date(2026, 3, 31), category) == due


def test_every_category_has_a_management_and_a_label() -> None:
    assert set(lungrads.MANAGEMENT) == set(lungrads.CATEGORIES) == set(lungrads.CATEGORY_LABELS)
    assert lungrads.MANAGEMENT["4A"].months == 3 and lungrads.MANAGEMENT["3"].months == 6


def test_volume_doubling_time() -> None:
    # a nodule from 100 to 200 mm3 in 90 days doubled in 90 days
    assert lungrads.volume_doubling_days(100, 200, 90) == pytest.approx(90)
    assert lungrads.volume_doubling_days(100, 400, 180) == pytest.approx(90)
    assert lungrads.volume_doubling_days(200, 150, 90) is None  # smaller: no doubling time
    assert lungrads.volume_doubling_days(100, 200, 0) is None
