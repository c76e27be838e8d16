"""The referral and cloud film sections of the figures pages, against numbers worked out by hand.

Referrals (Asia/Shanghai), range 2026-03-01 to 2026-04-30:
  r1 clinic A -> hospital  up    03-02 10:00  accepted, appointment 03-04 10:00 (2 days)
  r2 clinic A -> hospital  up    03-10 10:00  completed, appointment 03-20 10:00 (10 days)
  r3 clinic A -> hospital  up    04-01 10:00  rejected
  r4 hospital -> clinic A  down  04-05 10:00  requested (not answered)
  r5 clinic B -> hospital  up    02-01 10:00  accepted (before the range)
Hospital: received 3, answered 3, accepted 2 (66.7 %), days to appointment p50 6.0, p90 9.2.
Film saved at clinic A: 03-05 CT 2 sheets 36 yuan, 03-16 DX 1 sheet 18 yuan, 04-15 CT 2 sheets 36 yuan.
"""

from __future__ import annotations

from datetime import datetime, time
from decimal import Decimal
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.functional import Promise

from alliance import figures
from imaging.film_figures import compute as film_figures
from imaging.models import FilmSaving
from referrals.figures import compute as referral_figures
from referrals.models import Referral, Status
from tests.alliance.figures_fixture import SHANGHAI, at
from tests.conftest import client_for
from tests.factories import PatientFactory, StudyFactory

pytestmark = pytest.mark.django_db


def _referral(w: Any, *, src: Any, dst: Any, direction: str, requested: datetime, status: str, days: int = 0) -> None:
    referrer = w.owner if src == w.clin_a else w.specialist if src == w.hosp else w.stranger
    Referral.objects.create(
        referrer=referrer,
        from_institution=src,
        to_institution=dst,
        direction=direction,
        urgency="routine",
        patient=PatientFactory(issuer=src),
        reason="r",
        status=status,
        created_at=requested,
        requested_at=requested,
        appointment_at=requested.replace(day=requested.day + days) if days else None,
    )


@pytest.fixture
def world(alliance_world: Any) -> Any:
    w = alliance_world
    _referral(w, src=w.clin_a, dst=w.hosp, direction="up", requested=at(3, 2, 10), status=Status.ACCEPTED, days=2)
    _referral(w, src=w.clin_a, dst=w.hosp, direction="up", requested=at(3, 10, 10), status=Status.COMPLETED, days=10)
    _referral(w, src=w.clin_a, dst=w.hosp, direction="up", requested=at(4, 1, 10), status=Status.REJECTED)
    _referral(w, src=w.hosp, dst=w.clin_a, direction="down", requested=at(4, 5, 10), status=Status.REQUESTED)
    _referral(w, src=w.clin_b, dst=w.hosp, direction="up", requested=at(2, 1, 10), status=Status.ACCEPTED, days=3)
    for day, modality, sheets in ((at(3, 5, 12), "CT", 2), (at(3, 16, 12), "DX", 1), (at(4, 15, 12), "CT", 2)):
        study = StudyFactory(institution=w.clin_a, modalities=modality)
        FilmSaving.objects.create(
            study=study, institution=w.clin_a, sheets=sheets, cost=Decimal(18 * sheets), counted_at=day
        )
    return w


def scope(w: Any, ids: list[int], whole: bool = False) -> figures.Scope:
    return figures.Scope(
        alliance_id=w.hosp.alliance_id,
        institution_ids=tuple(sorted(ids)),
        start=datetime.combine(at(3, 1).date(), time.min, tzinfo=SHANGHAI),
        end=datetime.combine(at(5, 1).date(), time.min, tzinfo=SHANGHAI),
        now=timezone.now(),
        tz=SHANGHAI,
        whole_alliance=whole,
    )


def tables(found: list[figures.Table]) -> dict[str, list[list[Any]]]:
    with translation.override("en"):
        return {t.key: [[str(v) if isinstance(v, Promise) else v for v in row] for row in t.rows] for t in found}


def test_referrals_per_month_by_direction(world: Any) -> None:
    ids = [world.clin_a.pk, world.clin_b.pk, world.hosp.pk]
    got = tables(referral_figures(scope(world, ids, whole=True)))
    assert got["referrals-month"] == [["2026-03", 2, 0, 0], ["2026-04", 1, 1, 0]]


def test_referrals_per_institution_with_acceptance_and_days_to_appointment(world: Any) -> None:
    ids = [world.clin_a.pk, world.clin_b.pk, world.hosp.pk]
    got = tables(referral_figures(scope(world, ids, whole=True)))
    assert got["referrals-institution"] == [
        ["Clinic A", 3, 0, 0, 1, None, None, None],
        ["Lead Hospital", 0, 1, 0, 3, 66.7, 6.0, 9.2],
    ]


def test_an_institution_admin_sees_only_its_own_row(world: Any) -> None:
    got = tables(referral_figures(scope(world, [world.clin_a.pk])))
    assert [row[0] for row in got["referrals-institution"]] == ["Clinic A"]
    assert got["referrals-month"] == [["2026-03", 2, 0, 0], ["2026-04", 1, 1, 0]]


def test_film_saved_per_month_in_sheets_and_yuan(world: Any) -> None:
    got = tables(film_figures(scope(world, [world.clin_a.pk])))
    assert got["film-saved"] == [["2026-03", 2, 3, 54.0], ["2026-04", 1, 2, 36.0]]
    assert tables(film_figures(scope(world, [world.clin_b.pk])))["film-saved"] == []


def test_the_figures_page_shows_the_referral_and_film_sections(world: Any) -> None:
    response = client_for(world.alliance_admin).get(
        reverse("figures"), {"date_from": "2026-03-01", "date_to": "2026-04-30"}, HTTP_ACCEPT_LANGUAGE="en"
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "Referrals per institution" in html and "Printed film saved per month" in html
    csv_url = reverse("figures_csv", args=["referrals", "referrals-institution"])
    csv = client_for(world.alliance_admin).get(csv_url, {"date_from": "2026-03-01", "date_to": "2026-04-30"})
    assert csv.status_code == 200 and "Lead Hospital" in csv.content.decode()
