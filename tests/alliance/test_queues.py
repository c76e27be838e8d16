"""Celery's queues by kind: which task goes where, and the embedded mode's two workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from alliance.celery import app
from alliance.management.commands.run_embedded import RENDER_NICENESS, Command


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        ("imaging.tasks.render_instances", "render"),
        ("imaging.tasks.requeue_owed_renders", "render"),
        ("consults.tasks.report_into_studies", "followup"),
        ("consults.tasks.send_unsent_emails", "notify"),
        ("referrals.tasks.send_unsent_emails", "notify"),
        ("alliance.tasks.privilege_change_notice", "notify"),
        ("alliance.tasks.send_unsent_privilege_notices", "notify"),
        ("imaging.tasks.send_unsent_break_glass_emails", "notify"),
        ("consults.tasks.check_deadlines", "deadlines"),
        ("consults.tasks.escalate_critical_results", "deadlines"),
        ("referrals.tasks.remind_waiting", "deadlines"),
        ("imaging.tasks.roll_up_received_days", "housekeeping"),
        ("consults.tasks.roll_up_consult_days", "housekeeping"),
        ("alliance.tasks.send_atna", "housekeeping"),
        ("alliance.tasks.empty_atna_outbox", "housekeeping"),
        ("imaging.routing.tasks.send_route_item", "routing"),
        ("imaging.tasks.deliver_commitment", "routing"),
        ("imaging.tasks.resend_owed_commitments", "routing"),
        ("imaging.routing.tasks.sweep", "routing"),
        ("consults.tasks.send_result", "routing"),
        ("consults.tasks.write_missing_report_objects", "followup"),
        ("consults.screening.tasks.write_missing_reading_srs", "followup"),
        ("some.unrouted.task", "celery"),
    ],
)
def test_each_kind_of_task_goes_to_its_queue(task: str, queue: str) -> None:
    assert app.amqp.router.route({}, task)["queue"].name == queue


def test_every_routed_queue_is_one_a_worker_without_q_consumes() -> None:
    declared = set(app.amqp.queues)
    for route in app.conf.task_routes.values():
        assert route["queue"] in declared


def test_embedded_mode_renders_in_a_worker_of_its_own_at_lower_priority() -> None:
    command, bin_dir = Command(), Path("/venv/bin")
    main = command._worker_command(bin_dir)  # noqa: SLF001
    render = command._render_worker_command(bin_dir)  # noqa: SLF001
    main_queues = set(main[main.index("-Q") + 1].split(","))
    assert "render" not in main_queues and {"celery", "deadlines", "notify", "followup"} <= main_queues
    assert render[:3] == ["nice", "-n", str(RENDER_NICENESS)]
    assert render[render.index("-Q") + 1] == "render"


def test_every_task_of_ours_has_a_kind() -> None:
    """A new task must be given its queue in alliance/queues.py (else it lands in `celery`)."""
    app.loader.import_default_modules()
    ours = [name for name in app.tasks if name.split(".")[0] in {"alliance", "imaging", "consults", "referrals"}]
    assert ours
    unrouted = [name for name in ours if app.amqp.router.route({}, name)["queue"].name == "celery"]
    assert unrouted == []


def test_a_beat_run_expires_when_the_next_one_is_due() -> None:
    """Beat sends every periodic job with `expires` set to its period: a queue whose worker was
    away holds one run worth doing, the others are discarded as they are received."""
    from celery.beat import ScheduleEntry

    schedule = app.conf.beat_schedule
    assert schedule
    for name, entry in schedule.items():
        assert entry["options"]["expires"] == entry["schedule"], name
    owed = ScheduleEntry(name="owed-renders", app=app, **schedule["owed-renders"])
    assert owed.options["expires"] == float(app.conf.beat_schedule["owed-renders"]["schedule"])
