"""The alliance admin's turnaround policy page (/consults/policy/)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import translation

from alliance.models import Alliance, AuditEvent
from consults import priorities
from consults.models import PriorityPolicy
from tests import factories
from tests.conftest import client_for
from tests.consults.conftest import walk


def _body(**changes: int) -> dict[str, int]:
    body = {
        "stat_deadline_minutes": 60,
        "stat_claim_timeout_minutes": 10,
        "asap_deadline_minutes": 120,
        "asap_claim_timeout_minutes": 30,
        "urgent_deadline_minutes": 480,
        "urgent_claim_timeout_minutes": 60,
        "routine_deadline_minutes": 1440,
        "routine_claim_timeout_minutes": 240,
    }
    body.update(changes)
    return body


def test_alliance_admin_sees_the_policy_in_force_with_defaults(world: Any) -> None:
    page = client_for(world.alliance_admin).get("/consults/policy/")
    assert page.status_code == 200
    assert page.context["form"]["urgent_deadline_minutes"].value() == 480


def test_alliance_admin_changes_one_priority_and_only_that_is_written_and_audited(world: Any) -> None:
    response = client_for(world.alliance_admin).post("/consults/policy/", _body(urgent_deadline_minutes=240))
    assert response.status_code == 302 and response["Location"] == "/consults/policy/"
    row = PriorityPolicy.objects.get()
    assert (row.priority, row.deadline_minutes, row.claim_timeout_minutes) == ("urgent", 240, 60)
    assert AuditEvent.objects.filter(action="consult.policy").count() == 1
    assert priorities.policy_for(world.hosp.alliance_id, "urgent")[0].total_seconds() == 240 * 60


def test_policy_errors_name_the_field_and_nothing_is_written(world: Any) -> None:
    body = _body(stat_deadline_minutes=240, asap_claim_timeout_minutes=500)
    response = client_for(world.alliance_admin).post("/consults/policy/", body)
    assert response.status_code == 200
    assert set(response.context["form"].errors) == {"asap_claim_timeout_minutes"}
    assert not PriorityPolicy.objects.exists()


def test_policy_form_refuses_zero_and_text(world: Any) -> None:
    body = _body(routine_deadline_minutes=0, stat_claim_timeout_minutes="ten")  # type: ignore[arg-type]
    response = client_for(world.alliance_admin).post("/consults/policy/", body)
    assert set(response.context["form"].errors) == {"routine_deadline_minutes", "stat_claim_timeout_minutes"}
    assert not PriorityPolicy.objects.exists()


@pytest.mark.parametrize("persona", ["owner", "specialist", "inst_admin_a", "hosp_admin", "stranger"])
def test_only_the_alliance_admin_opens_or_posts_the_policy(world: Any, persona: str) -> None:
    client = client_for(getattr(world, persona))
    assert client.get("/consults/policy/").status_code == 403
    assert client.post("/consults/policy/", _body(urgent_deadline_minutes=5)).status_code == 403
    assert not PriorityPolicy.objects.exists()


def test_another_alliances_admin_sets_only_their_own_alliance(world: Any) -> None:
    other = factories.make_institution(alliance=Alliance.objects.create(name="Other alliance"), ae_title="OTHER")
    admin = factories.make_doctor(institution=other, roles=["alliance_admin"], username="other_admin")
    client_for(admin).post("/consults/policy/", _body(stat_deadline_minutes=30))
    assert list(PriorityPolicy.objects.values_list("alliance_id", "priority")) == [(other.alliance_id, "stat")]
    assert priorities.policy_for(world.hosp.alliance_id, "stat")[0].total_seconds() == 3600


def test_alliance_admin_home_links_to_the_policy(world: Any) -> None:
    assert "/consults/policy/" in client_for(world.alliance_admin).get("/").content.decode()


def test_a_new_request_the_form_the_labels_and_the_figures_read_one_policy(world: Any) -> None:
    """consults.priorities is the one home of the policy in force: every reader of it agrees."""
    client_for(world.alliance_admin).post("/consults/policy/", _body(routine_deadline_minutes=300))
    consult = walk(world, "requested")
    assert consult.due_at - consult.requested_at == timedelta(minutes=300)
    table = {row["priority"]: row["deadline_minutes"] for row in priorities.policy_table(world.alliance)}
    assert table == {"stat": 60, "asap": 120, "urgent": 480, "routine": 300}
    assert priorities.priority_deadlines(world.alliance)[-1] == {"priority": "routine", "minutes": 300}
    with translation.override("en"):
        assert priorities.priority_labels(world.alliance)["routine"] == "Routine · within 5 hours"
        assert priorities.within_short(300) == "within 5 h"
