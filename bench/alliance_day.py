"""A simulated alliance day (issue 16, item 4): does the worklist's order keep the deadlines?

20 clinics and 2 hospitals; each hospital has a reading desk (a pool) with half of the
specialists. 400 consults arrive as a Poisson process over 24 hours (5% stat, 15% asap,
30% urgent, 50% routine), each from a clinic to its parent hospital's desk, a share of them
(`--named`, default 20%) named to the clinic's usual specialist. Reading times are lognormal
per modality (median DX 3 min, CT 12 min, MR 15 min, sigma 0.5); 5% of the cases are put on
hold with a question half-way through the reading, answered after a lognormal delay (median
30 min). Each specialist works one shift a day (`--shift-hours`, default 8: the shifts start
at 00:00, 08:00 and 16:00 in turn, so a third of the desk is on duty at any time), finishes
the cases they started even past the end of the shift, and otherwise, when free, resumes
their own answered cases first, then claims the first case of their worklist's
"unclaimed" tab. The deadline job (consults.services.consult_check_deadlines) runs every
`--job-minutes` (default 5) simulated minutes. The simulation runs until every consult is
signed.

Why in-process and not through a running server's REST API (as the issue first
suggested): the simulation needs a compressed clock, and a running server reads the real
one; a day of 24 hours cannot be given to it without changing its code. So this script
sets the product's own clocks (consults.clock.now, and alliance.signals._now, which dates
pool memberships) to a simulated clock and calls the same services the REST API calls
(consults/services.py: consult_create, consult_request, consult_claim,
consult_start_report, consult_hold, consult_answer, consult_sign, and the deadline job),
with principals from alliance.access.resolve_principal as the API resolves them. The
next case is chosen by the product's own worklist query (consults.selectors.worklist,
ordered by priority_rank then due time), or first come first served (requested_at) for
the comparison. Escalation off: the deadline job still marks breaches (the figures count
them), but releases and widens nothing.

The day runs discrete-event, one event at a time, against a real PostgreSQL database: the
script's own scratch database (`--database`, default alliance_day_sim), created, migrated
and dropped by the script. Each variant runs inside one transaction that is rolled back
afterwards, so every variant starts from the same world; e-mails and other on-commit side
effects are never sent.

After each variant the figures check reads the consults section's turnaround and breaches
tables through the product's figures CSV export (GET /figures/consults/<table>.csv with
the Django test client, as the alliance admin), once for the simulated day (computed live
from the consults) and once for its month after the monthly roll-up
(consults.figures.roll_up_consult_days, as the hourly beat job runs it), and compares them
with the script's own counts from its own timeline: OK, or the differences.

    nice -n 10 .venv/bin/python bench/alliance_day.py                 # 10, 20, 50 specialists, 4 variants each
    nice -n 10 .venv/bin/python bench/alliance_day.py --quick         # 100 consults, 6 specialists
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import heapq
import io
import math
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

PRIORITIES = ("stat", "asap", "urgent", "routine")
PRIORITY_MIX = (0.05, 0.15, 0.30, 0.50)
# Modality: share of the consults, median reading minutes.
MODALITIES = (("DX", 0.50, 3.0), ("CT", 0.35, 12.0), ("MR", 0.15, 15.0))
READ_SIGMA = 0.5
HOLD_SHARE = 0.05
ANSWER_MEDIAN_MIN, ANSWER_SIGMA = 30.0, 0.8
# The simulated day: a Wednesday, alone in its month, so that the month's roll-up is this day.
DAY = date(2026, 11, 11)


@dataclass(frozen=True)
class Config:
    consults: int = 400
    specialists: int = 20
    clinics: int = 20
    hospitals: int = 2
    order: str = "worklist"  # or "fcfs"
    escalation: bool = True
    shift_hours: float = 8.0
    named: float = 0.2
    job_minutes: float = 5.0
    seed: int = 20261203
    tz: str = "Asia/Shanghai"


@dataclass
class Case:
    index: int
    arrival: float  # seconds after the day's start
    priority: str
    modality: str
    clinic: int
    named: bool
    read_seconds: float
    hold_after: float | None  # seconds of reading before the question, or None
    answer_delay: float
    # filled in by the run
    pk: int = 0
    deadline: float = 0.0
    owner: int = -1
    read_left: float = 0.0
    holds: list[tuple[float, float]] = field(default_factory=list)
    signed: float | None = None


def workload(cfg: Config) -> list[Case]:
    """The day's consults, the same for every variant of one seed (common random numbers)."""
    rng = random.Random(cfg.seed)
    # A Poisson process over the day, given its count: the arrival times are uniform order statistics.
    times = sorted(rng.uniform(0, 86400) for _ in range(cfg.consults))
    cases: list[Case] = []
    for t in times:
        modality = _pick(rng, [(m, share) for m, share, _ in MODALITIES])
        median = next(med for m, _s, med in MODALITIES if m == modality)
        read = 60 * median * math.exp(rng.gauss(0, READ_SIGMA))
        held = rng.random() < HOLD_SHARE
        cases.append(
            Case(
                index=len(cases),
                arrival=float(round(t)),
                priority=_pick(rng, list(zip(PRIORITIES, PRIORITY_MIX, strict=True))),
                modality=modality,
                clinic=rng.randrange(cfg.clinics),
                named=rng.random() < cfg.named,
                read_seconds=float(max(30, round(read))),
                hold_after=float(max(10, round(read / 2))) if held else None,
                answer_delay=float(max(60, round(60 * ANSWER_MEDIAN_MIN * math.exp(rng.gauss(0, ANSWER_SIGMA))))),
            )
        )
    cases.sort(key=lambda c: (c.arrival, c.index))
    return cases


def _pick(rng: random.Random, weighted: Sequence[tuple[str, float]]) -> str:
    x, acc = rng.random(), 0.0
    for value, weight in weighted:
        acc += weight
        if x < acc:
            return value
    return weighted[-1][0]


class SimClock:
    def __init__(self, start: datetime) -> None:
        self.start = start
        self.seconds = 0.0

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.seconds)

    def at(self, seconds: float) -> datetime:
        return self.start + timedelta(seconds=seconds)


@contextlib.contextmanager
def product_clocks(clock: SimClock) -> Iterator[None]:
    """The product's clocks read the simulated one: consults.clock.now (every move and the
    deadline job) and alliance.signals._now (since when a doctor sits on a desk)."""
    from alliance import signals
    from consults import clock as consults_clock

    saved = consults_clock.now, signals._now
    consults_clock.now = clock.now  # type: ignore[assignment]
    signals._now = clock.now  # type: ignore[assignment]
    try:
        yield
    finally:
        consults_clock.now, signals._now = saved  # type: ignore[assignment]


@contextlib.contextmanager
def escalation_off() -> Iterator[None]:
    """The deadline job marks breaches as before, but releases and widens nothing."""
    from consults import services

    def breach_only(consult: Any, now: datetime) -> str:
        if consult.due_at <= now and consult.breached_at is None:
            consult.breached_at = now
            consult.save(update_fields=["breached_at"])
            return "breach"
        return "nothing"

    saved = services._escalate
    services._escalate = breach_only  # type: ignore[assignment]
    try:
        yield
    finally:
        services._escalate = saved  # type: ignore[assignment]


def build_world(cfg: Config, clock: SimClock) -> SimpleNamespace:
    """The alliance, made an hour before the day starts (pool memberships date from then)."""
    from tests import factories

    clock.seconds = -3600
    alliance = factories.AllianceFactory(name="Simulated Alliance")
    hospitals = [
        factories.make_institution(alliance=alliance, level="tertiary", name=f"Hospital {h + 1}", ae_title=f"SIMH{h}")
        for h in range(cfg.hospitals)
    ]
    clinics = [
        factories.make_institution(
            alliance=alliance, name=f"Clinic {c + 1}", ae_title=f"SIMC{c}", parent=hospitals[c % cfg.hospitals]
        )
        for c in range(cfg.clinics)
    ]
    office = factories.make_institution(alliance=alliance, level="tertiary", name="Alliance office", ae_title="SIMO")
    radiology = factories.SpecialtyFactory()
    clinicians = [factories.make_doctor(institution=clinic) for clinic in clinics]
    desks: list[list[Any]] = [[] for _ in hospitals]
    specialists = []
    for s in range(cfg.specialists):
        h = s % cfg.hospitals
        doctor = factories.make_doctor(institution=hospitals[h], roles=["specialist"], specialties=[radiology])
        desks[h].append(doctor)
        specialists.append(SimpleNamespace(doctor=doctor, hospital=h, seat=len(desks[h]) - 1))
    pools = [
        factories.make_pool(institution=hospital, members=desks[h], name=f"Reading desk {h + 1}")
        for h, hospital in enumerate(hospitals)
    ]
    admin = factories.make_doctor(institution=office, roles=["alliance_admin"])
    clock.seconds = 0
    return SimpleNamespace(
        alliance=alliance,
        hospitals=hospitals,
        clinics=clinics,
        clinicians=clinicians,
        specialists=specialists,
        desks=desks,
        pools=pools,
        admin=admin,
    )


class Day:
    """One variant of the day: the event loop over the product's services."""

    def __init__(self, cfg: Config, world: SimpleNamespace, cases: list[Case], clock: SimClock) -> None:
        from alliance.access import resolve_principal
        from consults.priorities import deadlines_of

        self.cfg, self.world, self.clock = cfg, world, clock
        self.cases = [Case(**{k: v for k, v in vars(c).items() if k != "holds"}) for c in cases]
        self.by_pk: dict[int, Case] = {}
        self.events: list[tuple[float, int, str, Any]] = []
        self.seq = 0
        self.specs = world.specialists
        self.principals = [resolve_principal(s.doctor.user) for s in self.specs]
        self.requesters = [resolve_principal(d.user) for d in world.clinicians]
        self.busy: list[Case | None] = [None] * len(self.specs)
        self.resumable: list[list[Case]] = [[] for _ in self.specs]
        self.job_times: list[float] = []
        self.job_counts: dict[str, int] = {}
        self.open = 0
        self.deadlines = {p: d.total_seconds() for p, d in deadlines_of(world.alliance).items()}
        self.shifts = max(1, round(24 / cfg.shift_hours)) if cfg.shift_hours < 24 else 1

    # --- the event queue ---------------------------------------------------------------

    def push(self, t: float, kind: str, payload: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, self.seq, kind, payload))

    def on_duty(self, s: int, t: float) -> bool:
        if self.cfg.shift_hours >= 24:
            return True
        offset = (self.specs[s].seat % self.shifts) * self.cfg.shift_hours * 3600
        return (t - offset) % 86400 < self.cfg.shift_hours * 3600

    def usual_specialist(self, case: Case) -> int:
        """The clinic's usual reader at its parent hospital's desk."""
        h = case.clinic % self.cfg.hospitals
        desk = [i for i, s in enumerate(self.specs) if s.hospital == h]
        return desk[(case.clinic // self.cfg.hospitals) % len(desk)]

    def run(self) -> None:
        for case in self.cases:
            self.push(case.arrival, "arrive", case)
        step = self.cfg.job_minutes * 60
        # The job runs half a second after the whole second, so no move ever ties with it.
        self.push(step + 0.5, "job")
        if self.cfg.shift_hours < 24:
            for k in range(self.shifts * 14):  # shift starts for up to two weeks of draining
                self.push(k * self.cfg.shift_hours * 3600, "shift")
        pending = len(self.cases)
        while self.events:
            t, _seq, kind, payload = heapq.heappop(self.events)
            self.clock.seconds = t
            if kind == "arrive":
                self.arrive(payload)
                pending -= 1
                self.dispatch(t)
            elif kind == "job":
                self.job(t)
                if pending or self.open:
                    self.push(t + step, "job")
            elif kind == "shift":
                if pending or self.open:
                    self.dispatch(t)
            elif kind == "hold":
                self.hold(payload, t)
            elif kind == "answer":
                self.answer(payload, t)
            elif kind == "done":
                self.sign(payload, t)
            if not pending and not self.open:
                break

    # --- the moves, through the product's services ---------------------------------------

    def arrive(self, case: Case) -> None:
        from consults import services
        from tests.factories import StudyFactory

        by = self.requesters[case.clinic]
        study = StudyFactory(institution=self.world.clinics[case.clinic], modalities=case.modality, series=0)
        target: dict[str, Any] = {"pool": self.world.pools[case.clinic % self.cfg.hospitals]}
        if case.named:
            target = {"specialist": self.specs[self.usual_specialist(case)].doctor}
        consult = services.consult_create(
            by=by,
            studies=[study],
            question="Simulated question: findings?",
            history="Simulated day.",
            priority=case.priority,
            **target,
        )
        consult = services.consult_request(consult=consult, by=by)
        case.pk, case.deadline = consult.pk, float(consult.deadline_seconds)
        case.read_left = case.read_seconds
        self.by_pk[case.pk] = case
        self.open += 1

    def job(self, t: float) -> None:
        from consults import services

        self.job_times.append(t)
        counts = services.consult_check_deadlines(now=self.clock.now())
        for what, n in counts.items():
            self.job_counts[what] = self.job_counts.get(what, 0) + n
        if counts.get("widen") or counts.get("breach"):
            self.dispatch(t)  # a widened or released case may reach readers who were idle

    def dispatch(self, t: float, only: int | None = None) -> None:
        """Every free specialist (or the one just freed) takes the next case, if any."""
        candidates = [only] if only is not None else range(len(self.specs))
        for s in candidates:
            if self.busy[s] is None:
                self.next_case(s, t)

    def next_case(self, s: int, t: float) -> None:
        from consults import selectors, services
        from consults.models import Status

        principal = self.principals[s]
        if self.resumable[s]:
            # Their own answered cases first, in the order of their "mine" tab.
            ids = [c.pk for c in self.resumable[s]]
            pk = (
                selectors.worklist(principal, "mine")
                .filter(status=Status.IN_PROGRESS, pk__in=ids)
                .values_list("pk", flat=True)
                .first()
            )
            case = self.by_pk[pk]  # type: ignore[index]
            self.resumable[s].remove(case)
            self.read(s, case, t)
            return
        if not self.on_duty(s, t):
            return
        rows = selectors.worklist(principal, "unclaimed")
        if self.cfg.order == "fcfs":
            rows = rows.order_by("requested_at", "id")
        pk = rows.values_list("pk", flat=True).first()
        if pk is None:
            return
        case = self.by_pk[pk]
        consult = services.consult_claim(consult=_ref(pk), by=principal)
        services.consult_start_report(consult=consult, by=principal)
        case.owner = s
        self.read(s, case, t)

    def read(self, s: int, case: Case, t: float) -> None:
        self.busy[s] = case
        if case.hold_after is not None and not case.holds:
            self.push(t + case.hold_after, "hold", case)
        else:
            self.push(t + case.read_left, "done", case)

    def hold(self, case: Case, t: float) -> None:
        from consults import services

        services.consult_hold(consult=_ref(case.pk), by=self.principals[case.owner], question="Any prior imaging?")
        case.read_left = max(1.0, case.read_seconds - _set(case.hold_after))
        case.holds.append((t, math.inf))
        self.busy[case.owner] = None
        self.push(t + case.answer_delay, "answer", case)
        self.dispatch(t, only=case.owner)

    def answer(self, case: Case, t: float) -> None:
        from consults import services

        services.consult_answer(consult=_ref(case.pk), by=self.requesters[case.clinic], answer="No prior imaging.")
        case.holds[-1] = (case.holds[-1][0], t)
        self.resumable[case.owner].append(case)
        self.dispatch(t, only=case.owner)

    def sign(self, case: Case, t: float) -> None:
        from consults import services

        services.consult_sign(
            consult=_ref(case.pk),
            by=self.principals[case.owner],
            findings="Simulated findings.",
            impression="Simulated impression.",
        )
        case.signed = t
        self.busy[case.owner] = None
        self.open -= 1
        self.dispatch(t, only=case.owner)


def _ref(pk: int) -> Any:
    from consults.models import Consult

    return Consult(pk=pk)


def _set(value: float | None) -> float:
    assert value is not None
    return value


# --- the script's own counts --------------------------------------------------------------


def turnaround(case: Case) -> float:
    """Request to signed, less the time on hold (the deadline's clock)."""
    held = sum(end - start for start, end in case.holds)
    return _set(case.signed) - case.arrival - held


def seen_breached(case: Case, job_times: Sequence[float]) -> bool:
    """Whether a run of the deadline job found the case open, not on hold, past its deadline."""
    for tau in job_times:
        if tau < case.arrival:
            continue
        if tau >= _set(case.signed):
            return False
        if any(start <= tau < end for start, end in case.holds):
            continue
        due = case.arrival + case.deadline + sum(end - start for start, end in case.holds if end <= tau)
        if due <= tau:
            return True
    return False


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between the closest ranks (PostgreSQL's percentile_cont)."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(day: Day) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for p in PRIORITIES:
        mine = [c for c in day.cases if c.priority == p]
        turns = [turnaround(c) for c in mine]
        deadline = day.deadlines[p]
        out[p] = {
            "requested": len(mine),
            "signed": sum(c.signed is not None for c in mine),
            "p50": percentile(turns, 0.5),
            "p90": percentile(turns, 0.9),
            "deadline": deadline,
            "late": sum(turnaround(c) > c.deadline for c in mine),
            "breached": sum(seen_breached(c, day.job_times) for c in mine),
        }
    return out


def _minutes(seconds: float | None) -> str:
    return "" if seconds is None else f"{round(seconds / 60, 1):.1f}"


def _share(part: int, whole: int) -> str:
    return "" if not whole else f"{round(100 * part / whole, 1):.1f}"


def expected_tables(stats: dict[str, dict[str, Any]]) -> dict[str, list[list[str]]]:
    """The turnaround and breaches tables as the figures CSV should give them (numbers only)."""
    turn = [
        [
            str(s["signed"]),
            _minutes(s["p50"]),
            _minutes(s["p90"]),
            str(int(s["deadline"] // 60)),
            _share(s["signed"] - s["late"], s["signed"]),
        ]
        for s in stats.values()
    ]
    requested = sum(s["requested"] for s in stats.values())
    breached = sum(s["breached"] for s in stats.values())
    brs = [[str(s["requested"]), str(s["breached"]), _share(s["breached"], s["requested"])] for s in stats.values()]
    brs.append([str(requested), str(breached), _share(breached, requested)])
    return {"turnaround": turn, "breaches": brs}


def figures_tables(admin: Any, first: date, last: date) -> dict[str, list[list[str]]]:
    """The consults section's turnaround and breaches tables from the product's CSV export."""
    from django.test import Client
    from django.urls import reverse

    client = Client()
    client.force_login(admin.user)
    out = {}
    for table in ("turnaround", "breaches"):
        response = client.get(
            reverse("figures_csv", args=["consults", table]),
            {"date_from": first.isoformat(), "date_to": last.isoformat()},
            HTTP_ACCEPT_LANGUAGE="en",
        )
        if response.status_code != 200:
            raise RuntimeError(f"figures CSV {table}: HTTP {response.status_code}")
        rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))[1:]
        out[table] = [row[1:] for row in rows]
    return out


def figures_check(day: Day, stats: dict[str, dict[str, Any]]) -> list[str]:
    """Differences between the figures pages and the script's counts (empty: they agree):
    the simulated day live, then its month after the monthly roll-up."""
    from consults.figures import roll_up_consult_days

    expected = expected_tables(stats)
    differences = []
    month_first, month_last = DAY.replace(day=1), DAY.replace(day=30)
    checks = [("day", DAY, DAY)]
    for label, first, last in checks:
        differences += _compare(label, expected, figures_tables(day.world.admin, first, last))
    roll_up_consult_days(now=day.clock.at(40 * 86400))
    differences += _compare("month, rolled up", expected, figures_tables(day.world.admin, month_first, month_last))
    return differences


def _compare(label: str, expected: dict[str, list[list[str]]], got: dict[str, list[list[str]]]) -> list[str]:
    out = []
    for table, rows in expected.items():
        names = [*PRIORITIES, "all"]
        if len(got[table]) != len(rows):
            out.append(f"{label} {table}: {len(got[table])} rows, expected {len(rows)}")
            continue
        for name, want, have in zip(names, rows, got[table], strict=False):
            if want != have:
                out.append(f"{label} {table} {name}: figures {have}, script {want}")
    return out


def product_breaches() -> dict[str, int]:
    from django.db.models import Count, Q

    from consults.models import Consult

    rows = Consult.objects.values("priority").annotate(n=Count("pk", filter=Q(breached_at__isnull=False)))
    return {row["priority"]: row["n"] for row in rows}


def all_signed() -> bool:
    from consults.models import Consult, Status

    return not Consult.objects.exclude(status=Status.COMPLETED).exists()


def simulate(cfg: Config, cases: list[Case] | None = None) -> dict[str, Any]:
    """One variant on the current database (the caller owns the transaction): the world, the
    day, the script's own counts and the figures check."""
    tz = ZoneInfo(cfg.tz)
    clock = SimClock(datetime(DAY.year, DAY.month, DAY.day, tzinfo=tz))
    cases = cases if cases is not None else workload(cfg)
    escalation = contextlib.nullcontext() if cfg.escalation else escalation_off()
    with product_clocks(clock), escalation:
        world = build_world(cfg, clock)
        day = Day(cfg, world, cases, clock)
        started = time.perf_counter()
        day.run()
        elapsed = time.perf_counter() - started
        stats = summary(day)
        check = figures_check(day, stats)
    return {
        "config": cfg,
        "stats": stats,
        "check": check,
        "all_signed": all_signed() and all(c.signed is not None for c in day.cases),
        "job_counts": day.job_counts,
        "product_breaches": product_breaches(),
        "seconds": elapsed,
        "drained_hours": max(_set(c.signed) for c in day.cases) / 3600,
    }


# --- the report ---------------------------------------------------------------------------


def goal(result: dict[str, Any]) -> tuple[bool, str]:
    """No stat breach, and p90 under half the deadline for every priority."""
    stats = result["stats"]
    misses = []
    if stats["stat"]["late"] or stats["stat"]["breached"]:
        misses.append(f"{stats['stat']['late']} stat consults signed late")
    for p in PRIORITIES:
        s = stats[p]
        if s["p90"] is not None and s["p90"] >= s["deadline"] / 2:
            misses.append(f"{p} p90 {s['p90'] / 60:.0f} min >= {s['deadline'] / 120:.0f} min")
    return (not misses, "; ".join(misses) or "met")


def per_priority_table(result: dict[str, Any]) -> str:
    lines = [
        "| priority | requested | p50 (min) | p90 (min) | deadline (min) | p90 / deadline | late | breached (job) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p, s in result["stats"].items():
        ratio = "" if s["p90"] is None else f"{s['p90'] / s['deadline']:.2f}"
        lines.append(
            f"| {p} | {s['requested']} | {_minutes(s['p50'])} | {_minutes(s['p90'])} | {int(s['deadline'] // 60)} "
            f"| {ratio} | {s['late']} | {s['breached']} |"
        )
    return "\n".join(lines)


def comparison_table(results: list[dict[str, Any]]) -> str:
    head = "| specialists | order | escalation | " + " | ".join(f"{p} p90 (min)" for p in PRIORITIES)
    head += " | late (stat/asap/urgent/routine) | breached | widened | goal | figures |"
    lines = [head, "|" + "---|" * (8 + len(PRIORITIES))]
    for r in results:
        cfg, stats = r["config"], r["stats"]
        late = "/".join(str(stats[p]["late"]) for p in PRIORITIES)
        breached = sum(s["breached"] for s in stats.values())
        met, _why = goal(r)
        check = "OK" if not r["check"] else f"{len(r['check'])} differences"
        lines.append(
            f"| {cfg.specialists} | {cfg.order} | {'on' if cfg.escalation else 'off'} | "
            + " | ".join(_minutes(stats[p]["p90"]) for p in PRIORITIES)
            + f" | {late} | {breached} | {r['job_counts'].get('widen', 0)} | {'met' if met else 'not met'} "
            f"| {check} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--specialists", default="10,20,50", help="comma-separated desk sizes (default 10,20,50)")
    parser.add_argument("--consults", type=int, default=400)
    parser.add_argument("--shift-hours", type=float, default=8.0, help="one shift a day; 24: always on duty")
    parser.add_argument("--named", type=float, default=0.2, help="share of requests named to a specialist")
    parser.add_argument("--job-minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--variants", default="worklist+on,fcfs+on,worklist+off,fcfs+off")
    parser.add_argument("--quick", action="store_true", help="100 consults, 6 specialists, every variant")
    parser.add_argument("--database", default="postgres://postgres@127.0.0.1:5432/alliance_day_sim")
    args = parser.parse_args()
    if args.quick:
        args.consults, args.specialists = 100, "6"

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ["DATABASE_URL"] = args.database
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "alliance.settings")
    os.environ.setdefault("OTP_REQUIRED_DEFAULT", "0")
    import django

    django.setup()
    from django.conf import settings
    from django.db import transaction
    from django.test.utils import setup_databases, setup_test_environment, teardown_databases

    # The script's own database: created and migrated here, dropped at the end.
    settings.DATABASES["default"]["TEST"]["NAME"] = settings.DATABASES["default"]["NAME"]
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    setup_test_environment()
    started = time.perf_counter()
    old = setup_databases(verbosity=0, interactive=False)
    name = settings.DATABASES["default"]["NAME"]
    print(f"database {name} created and migrated in {time.perf_counter() - started:.0f} s")
    results = []
    try:
        for size in [int(n) for n in args.specialists.split(",")]:
            for variant in args.variants.split(","):
                order, escalation = variant.split("+")
                cfg = Config(
                    consults=args.consults,
                    specialists=size,
                    order=order,
                    escalation=escalation == "on",
                    shift_hours=args.shift_hours,
                    named=args.named,
                    job_minutes=args.job_minutes,
                    seed=args.seed,
                    tz=settings.TIME_ZONE,
                )
                with transaction.atomic():
                    result = simulate(cfg)
                    transaction.set_rollback(True)
                results.append(result)
                met, why = goal(result)
                print(
                    f"\n### {size} specialists, {order} order, escalation {escalation} "
                    f"({result['seconds']:.0f} s; last signature {result['drained_hours']:.1f} h after the start; "
                    f"every consult signed: {result['all_signed']})\n"
                )
                print(per_priority_table(result))
                print(f"\ngoal (no stat breach, p90 < deadline/2 for every priority): {why}")
                print(
                    f"deadline job: {result['job_counts']}; breached_at set by priority: {result['product_breaches']}"
                )
                print("figures check: " + ("OK" if not result["check"] else "DIFFERENCES"))
                for line in result["check"]:
                    print("  " + line)
                sys.stdout.flush()
    finally:
        teardown_databases(old, verbosity=0)
    print("\n## Comparison\n")
    print(comparison_table(results))


if __name__ == "__main__":
    main()
