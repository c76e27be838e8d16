"""A consult is unfinished while its status can still change (consults.models.UNFINISHED_STATUSES):
a preliminary report waiting for its reviewer too. The figures' roll-up waits for it, the
backlog counts it, the receiving desk keeps it."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone, translation

from alliance import figures
from alliance.access import resolve_principal
from consults import access, selectors, services
from consults.figures import backlog, roll_up_consult_days
from consults.models import TRANSITIONS, UNFINISHED_STATUSES, Consult, ConsultRollUp, Status
from tests.alliance import figures_fixture as fx
from tests.consults.conftest import walk
from tests.factories import make_doctor

pytestmark = pytest.mark.django_db


@pytest.fixture
def preliminary(world: Any) -> Consult:
    """A junior's signed report waiting for a reviewer of the pool (two-level sign-off)."""
    senior = make_doctor(institution=world.hosp, roles=["specialist"], username="senior")
    world.pool.members.add(senior)
    world.pool.reviewers.add(senior)
    world.pool.two_level_signoff = True
    world.pool.save()
    consult = walk(world, Status.IN_PROGRESS)
    spec = resolve_principal(world.specialist.user)
    services.consult_sign(consult=consult, by=spec, findings="右上肺结节。", impression="Nodule 8 mm.")
    consult.refresh_from_db()
    assert consult.status == Status.PRELIMINARY
    return consult


def test_unfinished_is_every_status_a_requested_consult_can_still_leave() -> None:
    leaves = {s for move in TRANSITIONS.values() for s in move.sources if s != move.target}
    assert set(UNFINISHED_STATUSES) == leaves - {Status.DRAFT}
    assert Status.PRELIMINARY in UNFINISHED_STATUSES


def test_the_roll_up_stops_at_the_month_of_a_preliminary_report(world: Any) -> None:
    fx.consult(world, priority="urgent", modality="CT", requested=fx.at(2, 10, 9), minutes=60)
    fx.consult(world, priority="routine", modality="CT", requested=fx.at(3, 20, 9), status=Status.PRELIMINARY)
    roll_up_consult_days(now=fx.at(6, 1, 12))
    assert ConsultRollUp.objects.get().until == fx.at(3, 1).date()


def test_the_partial_index_of_unfinished_consults_holds_preliminary_ones() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'consults_unfinished_requested'")
        (definition,) = cursor.fetchone()
    assert all(f"'{s.value}'" in definition for s in UNFINISHED_STATUSES)


def test_the_backlog_counts_preliminary_reports(world: Any, preliminary: Consult) -> None:
    now = timezone.now()
    scope = figures.Scope(
        alliance_id=world.alliance.pk,
        institution_ids=(world.clin_a.pk, world.hosp.pk),
        start=datetime.combine(now.date(), time.min, tzinfo=now.tzinfo),
        end=now,
        now=now,
        tz=now.tzinfo,
    )
    with translation.override("en"):
        rows = {str(row[0]): row[-1] for row in backlog(scope).rows}
    assert rows["Preliminary report"] == 1


def test_the_receiving_desk_keeps_a_preliminary_report_in_its_tab_and_switch_warning(
    world: Any, preliminary: Consult
) -> None:
    admin = resolve_principal(world.hosp_admin.user)
    assert access.consults_visible_to(admin).filter(pk=preliminary.pk).exists()
    assert selectors.worklist_counts(admin)["desk"] == 1
    open_cases = selectors.open_cases_at(world.hosp)
    assert open_cases is not None and open_cases.count == 1
