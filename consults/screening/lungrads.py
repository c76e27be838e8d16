"""ACR Lung-RADS v2022 (released November 2022): the assessment categories as data, and the
small engine that applies them to the nodules of one screening CT.

The tables below are the published assessment table, row by row; nothing else in the app
knows a threshold. A nodule is measured by its mean diameter, the mean of its long and short
axes rounded to one decimal (v2022: "report mean nodule diameter to one decimal point"); a
part-solid nodule also by the mean diameter of its solid component. Size ranges are
[at least, below) in mm.

Two decisions the table leaves open, and what this module does:
- Growth is "an increase in mean diameter > 1.5 mm within a 12-month interval". A screening
  follow-up is at most twelve months after the previous scan (a late one a little more); an
  increase over one such interval counts as growth whatever its length, which errs on the
  side of short-interval follow-up.
- A ground-glass nodule >= 30 mm that grows faster than "slowly" is not listed: it keeps its
  size category (3), as a new one would get.
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from django.utils.translation import gettext_lazy as _

VERSION = "Lung-RADS v2022"

# Worst last: an exam is categorised by its most suspicious finding.
ORDER = ("1", "2", "3", "4A", "4B", "4X")
INCOMPLETE = "0"
CATEGORIES = (INCOMPLETE, *ORDER)
# A positive screen (v2022: categories 3 and 4).
POSITIVE = frozenset({"3", "4A", "4B", "4X"})
GROWTH_MM = Decimal("1.5")

CATEGORY_LABELS = {
    "0": _("0 Incomplete"),
    "1": _("1 Negative"),
    "2": _("2 Benign"),
    "3": _("3 Probably benign"),
    "4A": _("4A Suspicious"),
    "4B": _("4B Very suspicious"),
    "4X": _("4X Very suspicious"),
}


class Kind:
    SOLID = "solid"
    PART_SOLID = "part_solid"
    GROUND_GLASS = "ground_glass"
    AIRWAY = "airway"
    CYST = "cyst"


KIND_LABELS = {
    Kind.SOLID: _("Solid"),
    Kind.PART_SOLID: _("Part-solid"),
    Kind.GROUND_GLASS: _("Ground-glass (non-solid)"),
    Kind.AIRWAY: _("Airway nodule"),
    Kind.CYST: _("Atypical pulmonary cyst"),
}
# Kinds measured by their diameters (an airway nodule and a cyst are categorised by what they are).
MEASURED_KINDS = frozenset({Kind.SOLID, Kind.PART_SOLID, Kind.GROUND_GLASS})


class Change:
    """What a nodule did since the previous screening CT."""

    BASELINE = "baseline"  # the participant's first screening CT
    NEW = "new"  # not seen on the previous CT
    GROWING = "growing"
    SLOW_GROWING = "slow_growing"  # growth over several CTs, never > 1.5 mm in one interval
    STABLE = "stable"  # unchanged or smaller


CHANGE_LABELS = {
    Change.BASELINE: _("baseline"),
    Change.NEW: _("new"),
    Change.GROWING: _("growing"),
    Change.SLOW_GROWING: _("slowly growing over several CTs"),
    Change.STABLE: _("stable or smaller"),
}

Span = tuple[Decimal | None, Decimal | None]
ANY: Span = (None, None)


def mm(at_least: str | None, below: str | None) -> Span:
    return (Decimal(at_least) if at_least else None, Decimal(below) if below else None)


@dataclass(frozen=True)
class SizeRule:
    """One row of the table: a kind of nodule in one situation, a size range, its category."""

    kind: str
    changes: frozenset[str]
    category: str
    mean: Span = ANY  # the nodule's mean diameter
    solid: Span = ANY  # the solid component's mean diameter (part-solid)
    juxtapleural: bool = False  # only a solid nodule with juxtapleural (perifissural) morphology


AT_BASELINE = frozenset({Change.BASELINE})
NEW = frozenset({Change.NEW})
GROWING = frozenset({Change.GROWING})
FIRST_SEEN = frozenset({Change.BASELINE, Change.NEW})

# The first rule that fits a nodule gives its category (the rows of one kind and situation
# do not overlap, except the juxtapleural row, which is listed first).
SIZE_RULES: tuple[SizeRule, ...] = (
    # Category 2: juxtapleural nodule < 10 mm, solid, smooth margins, oval/lentiform/triangular.
    SizeRule(Kind.SOLID, FIRST_SEEN, "2", mean=mm(None, "10"), juxtapleural=True),
    # Solid nodules
    SizeRule(Kind.SOLID, AT_BASELINE, "2", mean=mm(None, "6")),
    SizeRule(Kind.SOLID, AT_BASELINE, "3", mean=mm("6", "8")),
    SizeRule(Kind.SOLID, AT_BASELINE, "4A", mean=mm("8", "15")),
    SizeRule(Kind.SOLID, AT_BASELINE, "4B", mean=mm("15", None)),
    SizeRule(Kind.SOLID, NEW, "2", mean=mm(None, "4")),
    SizeRule(Kind.SOLID, NEW, "3", mean=mm("4", "6")),
    SizeRule(Kind.SOLID, NEW, "4A", mean=mm("6", "8")),
    SizeRule(Kind.SOLID, NEW, "4B", mean=mm("8", None)),
    SizeRule(Kind.SOLID, GROWING, "4A", mean=mm(None, "8")),
    SizeRule(Kind.SOLID, GROWING, "4B", mean=mm("8", None)),
    # Part-solid nodules: the total mean diameter, then the solid component
    SizeRule(Kind.PART_SOLID, AT_BASELINE, "2", mean=mm(None, "6")),
    SizeRule(Kind.PART_SOLID, AT_BASELINE, "3", mean=mm("6", None), solid=mm(None, "6")),
    SizeRule(Kind.PART_SOLID, AT_BASELINE, "4A", mean=mm("6", None), solid=mm("6", "8")),
    SizeRule(Kind.PART_SOLID, AT_BASELINE, "4B", mean=mm("6", None), solid=mm("8", None)),
    SizeRule(Kind.PART_SOLID, NEW, "3", mean=mm(None, "6")),
    SizeRule(Kind.PART_SOLID, NEW, "4A", solid=mm(None, "4")),
    SizeRule(Kind.PART_SOLID, NEW, "4B", solid=mm("4", None)),
    SizeRule(Kind.PART_SOLID, GROWING, "4A", solid=mm(None, "4")),  # a growing solid component
    SizeRule(Kind.PART_SOLID, GROWING, "4B", solid=mm("4", None)),
    # Non-solid (ground-glass) nodules
    SizeRule(Kind.GROUND_GLASS, FIRST_SEEN | GROWING, "2", mean=mm(None, "30")),
    SizeRule(Kind.GROUND_GLASS, FIRST_SEEN | GROWING, "3", mean=mm("30", None)),
)

# Nodules whose features decide, whatever their size.
BENIGN_FEATURES = {
    # Category 1: complete, central, popcorn or concentric-ring calcification; fat-containing.
    "calcified": "1",
    "fat": "1",
    # Category 2: a category 4B lesion proven benign by the diagnostic work-up.
    "proven_benign": "2",
}
FEATURE_LABELS = {
    "": _("None"),
    "calcified": _("Benign calcification (complete, central, popcorn, concentric rings)"),
    "fat": _("Fat-containing"),
    "juxtapleural": _("Juxtapleural: solid, smooth, oval, lentiform or triangular"),
    "proven_benign": _("Proven benign by diagnostic work-up"),
}

# Airway nodules (endobronchial or endotracheal).
AIRWAY_LEVEL_LABELS = {
    "segmental": _("Segmental or more proximal"),
    "subsegmental": _("Subsegmental"),
}
AIRWAY_RULES = {
    ("subsegmental", Change.BASELINE): "2",
    ("subsegmental", Change.NEW): "2",
    ("subsegmental", Change.STABLE): "2",
    ("subsegmental", Change.GROWING): "2",
    ("segmental", Change.BASELINE): "4A",
    ("segmental", Change.NEW): "4A",
    # still there (stable or growing) at the 3-month follow-up of a 4A airway nodule
    ("segmental", Change.STABLE): "4B",
    ("segmental", Change.GROWING): "4B",
}

# Atypical pulmonary cysts: what the reader sees -> category.
CYST_RULES = {
    "growing_cystic_component": "3",
    "thick_walled": "4A",
    "multilocular": "4A",
    "became_multilocular": "4A",
    "growing_wall": "4B",
    "growing_multilocular": "4B",
    "multilocular_denser": "4B",
}
CYST_LABELS = {
    "growing_cystic_component": _("Thick-walled cyst with a growing cystic component"),
    "thick_walled": _("Thick-walled cyst"),
    "multilocular": _("Multilocular cyst"),
    "became_multilocular": _("Thin- or thick-walled cyst that became multilocular"),
    "growing_wall": _("Thick-walled cyst with growing wall thickness or nodularity"),
    "growing_multilocular": _("Growing multilocular cyst"),
    "multilocular_denser": _("Multilocular cyst with more loculation or new or denser opacity"),
}

# Stepped management (v2022): a category 4A finding stable or smaller at its 3-month
# follow-up becomes 3; a category 3 finding stable at its 6-month follow-up becomes 2.
STEP_DOWN = {"1": "1", "2": "2", "3": "2", "4A": "3", "4B": "4B", "4X": "4B"}

# 4X: a category 3 or 4 finding with features that raise the suspicion of lung cancer.
RAISED_TO_4X = frozenset({"3", "4A", "4B"})

# Category 0: the reason the exam is incomplete.
INCOMPLETE_LABELS = {
    "prior_pending": _("Prior chest CT being located for comparison"),
    "not_evaluable": _("Part or all of the lungs cannot be evaluated"),
    "infectious": _("Findings suggest an inflammatory or infectious process"),
}


@dataclass(frozen=True)
class Management:
    """What a category asks for next, and in how many months the next look is due."""

    text: object
    months: int
    kind: str  # the next round: "annual", "interval" or "workup"


MANAGEMENT = {
    "0": Management(
        _("Comparison with prior chest CT, additional LDCT images, or LDCT in 1 to 3 months"), 1, "interval"
    ),
    "1": Management(_("Continue annual screening with LDCT in 12 months"), 12, "annual"),
    "2": Management(_("Continue annual screening with LDCT in 12 months"), 12, "annual"),
    "3": Management(_("LDCT in 6 months"), 6, "interval"),
    "4A": Management(
        _("LDCT in 3 months; PET/CT may be considered if there is a solid nodule or solid component of 8 mm or more"),
        3,
        "interval",
    ),
    "4B": Management(
        _(
            "Diagnostic chest CT with or without contrast; PET/CT may be considered if there is a solid nodule or "
            "solid component of 8 mm or more; tissue sampling; and/or referral for further clinical evaluation"
        ),
        1,
        "workup",
    ),
}
MANAGEMENT["4X"] = MANAGEMENT["4B"]


# --- the engine -------------------------------------------------------------------------------


def mean_diameter(long_axis: Decimal, short_axis: Decimal) -> Decimal:
    """The mean of the two axes, to one decimal (half up, as people round)."""
    return ((long_axis + short_axis) / 2).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Finding:
    """One nodule of one CT as the rules see it."""

    kind: str
    mean: Decimal | None = None  # mean diameter (mm), one decimal
    solid: Decimal | None = None  # solid component's mean diameter (part-solid)
    feature: str = ""  # a key of FEATURE_LABELS
    airway_level: str = ""
    cyst: str = ""  # a key of CYST_RULES
    suspicious: bool = False  # features that raise the suspicion of cancer (4X)


@dataclass(frozen=True)
class Earlier:
    """The same nodule on the previous CT: what it was, the category it had, and its mean
    diameters (oldest first) on the CTs before that, for slow growth."""

    finding: Finding
    category: str
    history: tuple[Decimal, ...] = ()


@dataclass(frozen=True)
class Assessment:
    category: str
    change: str


def _fits(span: Span, value: Decimal | None) -> bool:
    low, high = span
    if span == ANY:
        return True
    if value is None:
        return False
    return (low is None or value >= low) and (high is None or value < high)


def size_category(finding: Finding, change: str) -> str | None:
    """The category the size rules give (None: no row fits, e.g. a size missing)."""
    for rule in SIZE_RULES:
        if rule.kind != finding.kind or change not in rule.changes:
            continue
        if rule.juxtapleural and finding.feature != "juxtapleural":
            continue
        if _fits(rule.mean, finding.mean) and _fits(rule.solid, finding.solid):
            return rule.category
    return None


def _grew(now: Decimal | None, before: Decimal | None) -> bool:
    return now is not None and before is not None and now - before > GROWTH_MM


def change_of(finding: Finding, earlier: Earlier | None, *, baseline: bool) -> str:
    """Baseline, new, growing, slowly growing or stable: a part-solid nodule grows when its
    solid component does; slow growth is a rise on every CT, > 1.5 mm in all, never in one step."""
    if earlier is None:
        return Change.BASELINE if baseline else Change.NEW
    if earlier.finding.kind != finding.kind:
        return Change.NEW  # e.g. a ground-glass nodule with a new solid component
    measure = "solid" if finding.kind == Kind.PART_SOLID else "mean"
    now, before = getattr(finding, measure), getattr(earlier.finding, measure)
    if _grew(now, before):
        return Change.GROWING
    means = [*earlier.history, earlier.finding.mean, finding.mean]
    series = [m for m in means if m is not None]
    if len(series) >= 3 and len(series) == len(means):
        rising = all(b > a for a, b in zip(series, series[1:], strict=False))
        if rising and _grew(series[-1], series[0]):
            return Change.SLOW_GROWING
    return Change.STABLE


def _order(category: str) -> int:
    return ORDER.index(category)


def worst(categories: Iterable[str]) -> str:
    return max(categories, key=_order, default="1")


def _followed(finding: Finding, earlier: Earlier, change: str) -> str:
    """A nodule seen before that is not growing (by the size rules): stable or slowly growing."""
    if change == Change.SLOW_GROWING:
        return "2" if finding.kind == Kind.GROUND_GLASS else "4B"
    stepped = STEP_DOWN[earlier.category]
    if finding.kind == Kind.GROUND_GLASS:
        return "2"  # stable (or slowly growing) ground glass, whatever its size
    now = size_category(finding, Change.BASELINE)
    before = size_category(earlier.finding, Change.BASELINE)
    # A nodule crossing a size threshold is categorised by its size, growth or not.
    if now is not None and before is not None and _order(now) > _order(before):
        return worst([stepped, now])
    return stepped


def assess(finding: Finding, earlier: Earlier | None = None, *, baseline: bool = True) -> Assessment:
    """The category of one nodule on this CT (earlier: the same nodule on the previous CT)."""
    change = change_of(finding, earlier, baseline=baseline)
    category = _category(finding, earlier, change)
    if finding.suspicious and category in RAISED_TO_4X:
        category = "4X"
    return Assessment(category, change)


def _category(finding: Finding, earlier: Earlier | None, change: str) -> str:
    if finding.feature in BENIGN_FEATURES:
        return BENIGN_FEATURES[finding.feature]
    if finding.kind == Kind.CYST:
        return CYST_RULES[finding.cyst]
    if finding.kind == Kind.AIRWAY:
        looked = Change.STABLE if change == Change.SLOW_GROWING else change
        return AIRWAY_RULES[(finding.airway_level, looked)]
    if earlier is not None and change in (Change.STABLE, Change.SLOW_GROWING):
        return _followed(finding, earlier, change)
    found = size_category(finding, change)
    if found is None:
        raise ValueError(f"no Lung-RADS row for {finding} ({change})")
    return found


@dataclass(frozen=True)
class ExamResult:
    category: str
    significant: bool  # the S modifier

    @property
    def code(self) -> str:
        """As reported: "4A", "2S", "0"."""
        return f"{self.category}S" if self.significant else self.category

    @property
    def management(self) -> Management:
        return MANAGEMENT[self.category]

    @property
    def positive(self) -> bool:
        return self.category in POSITIVE


def exam(assessments: Sequence[Assessment], *, incomplete: str = "", significant: bool = False) -> ExamResult:
    """The exam's category: 0 when incomplete, else its most suspicious nodule's (1 with none);
    S added for a clinically significant finding that is not lung cancer."""
    if incomplete:
        return ExamResult(INCOMPLETE, significant)
    return ExamResult(worst(a.category for a in assessments), significant)


def add_months(day: date, months: int) -> date:
    """The same day `months` later (the month's last day when it is shorter)."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def due_after(scan_date: date, category: str) -> date:
    """When the next look is due after a CT of this category."""
    return add_months(scan_date, MANAGEMENT[category].months)


def volume_doubling_days(v1: float, v2: float, days: int) -> float | None:
    """Volume doubling time t·ln2 / ln(V2/V1) in days; None when it did not grow (or no interval)."""
    if v1 <= 0 or v2 <= v1 or days <= 0:
        return None
    return days * math.log(2) / math.log(v2 / v1)
