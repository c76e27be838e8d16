"""The figures pages against numbers worked out by hand (tests/alliance/figures_fixture.py),
who may see which institution, the CSV export, bad filters and constant query counts."""

from __future__ import annotations

import csv
import io
from datetime import datetime, time, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.functional import Promise

from alliance import figures
from alliance.access import figures_institutions_for, resolve_principal
from alliance.models import AuditEvent
from consults import tasks as consult_tasks
from consults.figures import compute as consult_figures
from consults.figures import roll_up_consult_days
from consults.models import Consult, ConsultMonth, ConsultRollUp, ReaderDay, Status
from imaging.figures import compute as imaging_figures
from imaging.figures import roll_up_received_days
from imaging.models import ReceivedDay, Study
from tests.alliance import figures_fixture as fx
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(alliance_world: Any) -> Any:
    fx.build(alliance_world)
    return alliance_world


def scope_of(doctor: Any, *, only: Any = None) -> figures.Scope:
    ids = (
        [only.pk]
        if only
        else list(figures_institutions_for(resolve_principal(doctor.user)).values_list("pk", flat=True))
    )
    return figures.Scope(
        alliance_id=doctor.institution.alliance_id,
        institution_ids=tuple(sorted(ids)),
        start=datetime.combine(fx.at(3, 1).date(), time.min, tzinfo=fx.SHANGHAI),
        end=datetime.combine(fx.at(5, 1).date(), time.min, tzinfo=fx.SHANGHAI),
        now=timezone.now(),
        tz=fx.SHANGHAI,
    )


def tables(rows: list[figures.Table]) -> dict[str, list[list[Any]]]:
    with translation.override("en"):
        return {t.key: [[str(v) if isinstance(v, Promise) else v for v in row] for row in t.rows] for t in rows}


# --- the numbers ------------------------------------------------------------------------


def test_volume_per_month_and_priority_counts_the_consults_requested_in_the_range(world: Any) -> None:
    got = tables(consult_figures(scope_of(world.alliance_admin)))
    # Month, STAT, ASAP, Urgent, Routine, Total
    assert got["volume-month"] == [["2026-03", 2, 0, 0, 1, 3], ["2026-04", 1, 0, 0, 2, 3]]


def test_volume_by_modality_uses_the_consults_modality(world: Any) -> None:
    got = tables(consult_figures(scope_of(world.alliance_admin)))
    assert got["volume-modality"] == [["CT", 2, 0, 0, 2, 4], ["DX", 0, 0, 0, 1, 1], ["MR", 1, 0, 0, 0, 1]]


def test_turnaround_percentiles_leave_out_time_on_hold_and_compare_with_the_deadline(world: Any) -> None:
    got = tables(consult_figures(scope_of(world.alliance_admin)))
    # STAT turnarounds 30, 90 and 50 min: p50 50; p90 at 0.9 * 2 = 1.8, so 50 + 0.8 * 40 = 82.
    # Two of three within 60 min. Routine: one, 600 min, within 24 h.
    assert got["turnaround"] == [
        ["STAT", 3, 50.0, 82.0, 60, 66.7],
        ["ASAP", 0, None, None, 120, None],
        ["Urgent", 0, None, None, 480, None],
        ["Routine", 1, 600.0, 600.0, 1440, 100.0],
    ]


def test_breaches_and_their_share_per_priority(world: Any) -> None:
    got = tables(consult_figures(scope_of(world.alliance_admin)))
    assert got["breaches"] == [
        ["STAT", 3, 1, 33.3],
        ["ASAP", 0, 0, None],
        ["Urgent", 0, 0, None],
        ["Routine", 3, 0, 0.0],
        ["All", 6, 1, 16.7],
    ]


def test_backlog_counts_what_is_open_now_by_state_and_age(world: Any) -> None:
    got = tables(consult_figures(scope_of(world.alliance_admin)))
    # State, <1 h, 1-4 h, 4-24 h, 1-3 days, >3 days, Total
    assert got["backlog"] == [
        ["Requested", 0, 0, 0, 0, 2, 2],
        ["Accepted", 0, 1, 0, 0, 0, 1],
        ["In progress", 0, 0, 0, 0, 0, 0],
        ["On hold", 0, 0, 0, 0, 0, 0],
        ["Preliminary report", 0, 0, 0, 0, 0, 0],
    ]


def test_claims_and_reports_per_specialist_in_the_range(world: Any) -> None:
    got = tables(consult_figures(scope_of(world.alliance_admin)))
    assert got["readers"] == [[world.specialist.display_name, "Lead Hospital", 4, 4]]


def test_studies_and_gigabytes_per_institution_and_month(world: Any) -> None:
    got = tables(imaging_figures(scope_of(world.alliance_admin)))
    assert got["received-month"] == [["2026-03", 2, 3.0], ["2026-04", 2, 3.5]]
    assert got["per-institution"] == [["Clinic A", 3, 3.5, 7.5], ["Clinic B", 1, 3.0, 3.0]]
    assert got["institution-month"] == [
        ["Clinic A", "2026-03", 2, 3.0, 7.0],
        ["Clinic A", "2026-04", 1, 0.5, 7.5],
        ["Clinic B", "2026-03", 0, 0.0, 0.0],
        ["Clinic B", "2026-04", 1, 3.0, 3.0],
    ]


@pytest.mark.parametrize("rolled_up_to", [(3, 10), (4, 21), (6, 1)])
def test_rolled_up_days_and_live_days_sum_to_the_same_figures(world: Any, rolled_up_to: tuple[int, int]) -> None:
    """The roll-up ends before, inside and after the range: every study counts once."""
    roll_up_received_days(now=fx.at(*rolled_up_to, 12))
    roll_up_received_days(now=fx.at(*rolled_up_to, 13))  # a second run changes nothing
    got = tables(imaging_figures(scope_of(world.alliance_admin)))
    assert got["received-month"] == [["2026-03", 2, 3.0], ["2026-04", 2, 3.5]]
    assert got["per-institution"] == [["Clinic A", 3, 3.5, 7.5], ["Clinic B", 1, 3.0, 3.0]]
    assert got["institution-month"][1] == ["Clinic A", "2026-04", 1, 0.5, 7.5]


def test_roll_up_sums_again_the_last_days_where_studies_still_grow(world: Any) -> None:
    roll_up_received_days(now=fx.at(3, 5, 12))
    Study.objects.filter(received_at=fx.at(3, 3, 13)).update(size_bytes=2 * 10**9)
    roll_up_received_days(now=fx.at(3, 6, 12))
    day = ReceivedDay.objects.get(institution=world.clin_a, day=fx.at(3, 3).date())
    assert (day.studies, day.size_bytes) == (2, 4 * 10**9)


def every_consult_table(world: Any) -> list[dict[str, list[list[Any]]]]:
    """The consults' tables for the alliance admin, a requesting and a receiving institution."""
    scopes = [
        scope_of(world.alliance_admin),
        scope_of(world.inst_admin_a),
        scope_of(world.hosp_admin),
        scope_of(world.alliance_admin, only=world.clin_b),
    ]
    whole = [figures.Scope(**{**vars(scopes[0]), "whole_alliance": True})]
    return [tables(consult_figures(scope)) for scope in [*scopes, *whole]]


@pytest.mark.parametrize("rolled_up_to", [(3, 4), (3, 25), (6, 1)])
def test_consult_roll_up_and_live_days_give_the_same_figures(world: Any, rolled_up_to: tuple[int, int]) -> None:
    """The consults' roll-up ends before the range, or stops at the month of the oldest open
    consult (c7, 03-20): every table of every institution stays the same."""
    live = every_consult_table(world)
    roll_up_consult_days(now=fx.at(*rolled_up_to, 12))
    roll_up_consult_days(now=fx.at(*rolled_up_to, 13))  # a second run changes nothing
    assert ConsultMonth.objects.filter(month=fx.at(2, 1).date()).exists()
    assert every_consult_table(world) == live


def test_consult_roll_up_stops_at_the_month_of_the_oldest_open_consult(world: Any) -> None:
    roll_up_consult_days(now=fx.at(6, 1, 12))
    assert ConsultRollUp.objects.get().until == fx.at(3, 1).date()
    assert not ConsultMonth.objects.filter(month__gte=fx.at(3, 1).date()).exists()


def test_consult_roll_up_of_every_closed_day_gives_the_same_figures(world: Any) -> None:
    """With every consult closed, the whole range is summed from the roll-ups (March and
    April whole; a range cut inside a month reads its edges live)."""
    Consult.objects.filter(status__in=[Status.REQUESTED, Status.ACCEPTED]).update(status=Status.CANCELLED)
    live = every_consult_table(world)
    cut = scope_of(world.alliance_admin)
    cut = figures.Scope(**{**vars(cut), "start": fx.at(3, 3), "end": fx.at(4, 15)})
    live_cut = tables(consult_figures(cut))
    roll_up_consult_days(now=timezone.now() + timedelta(days=40))
    assert ConsultRollUp.objects.get().until > fx.at(5, 1).date()
    assert ConsultMonth.objects.filter(month=fx.at(3, 1).date(), signed__gt=0).exists()
    assert ReaderDay.objects.filter(day__lt=fx.at(5, 1).date()).exists()
    assert every_consult_table(world) == live
    assert tables(consult_figures(cut)) == live_cut


def test_the_consult_roll_up_is_an_hourly_beat_job(world: Any, settings: Any) -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["figures-consult-days"]
    assert (entry["task"], entry["schedule"]) == ("consults.tasks.roll_up_consult_days", 3600.0)
    assert consult_tasks.roll_up_consult_days() > 0  # February, before c7 (03-20) still open
    assert ConsultMonth.objects.filter(month=fx.at(2, 1).date(), signed=1).exists()


@pytest.mark.parametrize("key", ["volume-month", "volume-modality", "turnaround", "breaches", "backlog", "readers"])
def test_one_table_alone_equals_the_same_table_of_the_whole_section(world: Any, key: str) -> None:
    scope = scope_of(world.alliance_admin)
    alone = consult_figures(scope, key)
    assert [t.key for t in alone] == [key]
    assert tables(alone)[key] == tables(consult_figures(scope))[key]


def test_institution_admin_figures_hold_only_their_institutions_consults_and_studies(world: Any) -> None:
    scope = scope_of(world.inst_admin_a)
    assert scope.institution_ids == (world.clin_a.pk,)
    got = tables(consult_figures(scope))
    assert got["volume-month"] == [["2026-03", 2, 0, 0, 0, 2], ["2026-04", 1, 0, 0, 2, 3]]
    assert got["breaches"][-1] == ["All", 5, 1, 20.0]
    assert [row[0] for row in tables(imaging_figures(scope))["per-institution"]] == ["Clinic A"]


def test_receiving_institution_sees_the_consults_sent_to_its_pool(world: Any) -> None:
    got = tables(consult_figures(scope_of(world.hosp_admin)))
    assert got["breaches"][-1] == ["All", 6, 1, 16.7]


def test_an_empty_range_shows_no_rows(world: Any) -> None:
    scope = scope_of(world.alliance_admin)
    empty = figures.Scope(**{**scope.__dict__, "start": fx.at(6, 1), "end": fx.at(7, 1)})
    got = tables(consult_figures(empty))
    assert got["volume-month"] == [] and got["turnaround"] == [] and got["readers"] == []


# --- the page, who sees it, filters and CSV --------------------------------------------


def page(doctor: Any, **params: str) -> Any:
    return client_for(doctor).get(reverse("figures"), {**fx.RANGE, **params}, HTTP_ACCEPT_LANGUAGE="en")


def test_alliance_admin_sees_every_member_and_a_chart_per_figure(world: Any) -> None:
    response = page(world.alliance_admin)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Clinic B" in html and "Clinic A" in html
    assert html.count('<svg class="chart"') == 6
    assert 'role="img"' in html and "<title" in html


def test_institution_admin_sees_only_their_own_institution(world: Any) -> None:
    response = page(world.inst_admin_a)
    assert response.status_code == 200
    html = response.content.decode()
    assert '<th scope="row">Clinic A</th>' in html and "Clinic B" not in html


@pytest.mark.parametrize("persona", ["owner", "specialist", "stranger"])
def test_clinicians_and_specialists_are_refused(world: Any, persona: str) -> None:
    assert page(getattr(world, persona)).status_code == 403
    csv_url = reverse("figures_csv", args=["consults", "breaches"])
    assert client_for(getattr(world, persona)).get(csv_url).status_code == 403


def test_anonymous_is_sent_to_sign_in(world: Any, client: Any) -> None:
    assert client.get(reverse("figures")).status_code == 302


def test_institution_admin_cannot_ask_for_another_institution(world: Any) -> None:
    response = page(world.inst_admin_a, institution=str(world.clin_b.pk))
    assert "<h2" not in response.content.decode()  # no section computed
    assert "Institution: not a member whose figures you may see." in response.content.decode()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"date_from": "2026-13-01"}, "From: enter a date as YYYY-MM-DD."),
        ({"date_to": "yesterday"}, "To: enter a date as YYYY-MM-DD."),
        ({"date_from": "2026-05-01", "date_to": "2026-04-01"}, "To: the end date is before the start date."),
        ({"date_from": "2020-01-01", "date_to": "2026-04-01"}, "From: the range may span at most three years."),
        ({"institution": "999999"}, "Institution: not a member whose figures you may see."),
        ({"institution": "x"}, "Institution: not a member whose figures you may see."),
    ],
)
def test_bad_filters_are_answered_with_a_message_naming_the_field(
    world: Any, params: dict[str, str], message: str
) -> None:
    response = page(world.alliance_admin, **params)
    assert response.status_code == 200
    html = response.content.decode()
    assert message in html and 'role="alert"' in html and "<h2" not in html
    csv_response = client_for(world.alliance_admin).get(
        reverse("figures_csv", args=["consults", "breaches"]), {**fx.RANGE, **params}, HTTP_ACCEPT_LANGUAGE="en"
    )
    assert csv_response.status_code == 400 and message in csv_response.content.decode()


def test_institution_filter_narrows_the_alliance_admins_figures(world: Any) -> None:
    response = page(world.alliance_admin, institution=str(world.clin_b.pk))
    html = response.content.decode()
    assert response.status_code == 200
    assert '<th scope="row">Clinic B</th>' in html and '<th scope="row">Clinic A</th>' not in html


def read_csv(response: Any) -> list[list[str]]:
    text = response.content.decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:])))


def test_every_table_exports_as_csv_with_the_same_numbers(world: Any) -> None:
    client = client_for(world.alliance_admin)
    for section in figures.sections():
        for table in section.compute(scope_of(world.alliance_admin), None):
            url = reverse("figures_csv", args=[section.key, table.key])
            response = client.get(url, fx.RANGE, HTTP_ACCEPT_LANGUAGE="en")
            assert response.status_code == 200, url
            assert response["Content-Type"].startswith("text/csv")
            assert len(read_csv(response)) == len(table.rows) + 1
    rows = read_csv(client.get(reverse("figures_csv", args=["consults", "turnaround"]), fx.RANGE))
    assert rows[1][1:] == ["3", "50.0", "82.0", "60", "66.7"]
    assert AuditEvent.objects.filter(action="figures.export", object_id="consults/turnaround").exists()


def test_csv_of_an_unknown_table_is_404(world: Any) -> None:
    client = client_for(world.alliance_admin)
    assert client.get(reverse("figures_csv", args=["consults", "nothing"])).status_code == 404
    assert client.get(reverse("figures_csv", args=["nothing", "breaches"])).status_code == 404


def test_the_page_speaks_chinese(world: Any) -> None:
    response = client_for(world.alliance_admin).get(reverse("figures"), fx.RANGE, HTTP_ACCEPT_LANGUAGE="zh-hans")
    html = response.content.decode()
    assert "统计" in html and "周转时间" in html


def test_opening_the_page_is_audited(world: Any) -> None:
    page(world.alliance_admin)
    assert AuditEvent.objects.filter(action="figures.view", actor_name="alliance_admin").exists()


def test_menu_shows_figures_to_admins_only(world: Any) -> None:
    home = reverse("home")
    assert reverse("figures") in client_for(world.inst_admin_a).get(home).content.decode()
    assert reverse("figures") not in client_for(world.owner).get(home).content.decode()


def test_page_makes_the_same_number_of_queries_whatever_the_data(world: Any) -> None:
    client = client_for(world.alliance_admin)
    client.get(reverse("figures"), fx.RANGE)
    with CaptureQueriesContext(connection) as before:
        client.get(reverse("figures"), fx.RANGE)
    for day in range(1, 20):
        fx.consult(world, priority="urgent", modality="US", requested=fx.at(3, day, 9), minutes=day * 10)
        fx.study(world.clin_b, fx.at(4, day, 9), 10**6)
    with CaptureQueriesContext(connection) as after:
        client.get(reverse("figures"), fx.RANGE)
    assert len(after) == len(before)
    assert (
        len(before) <= 34
    )  # 31 with the consults' roll-up (its mark, the oldest open consult, sums), 3 for critical results


def test_every_section_shows_a_duration_as_minutes_to_one_decimal() -> None:
    assert (figures.minutes(90), figures.minutes(3599), figures.minutes(None)) == (1.5, 60.0, None)
