"""Celery's queues, one per kind of work, so a node can give each kind workers of its own and a
burst of rendering never holds up a deadline check or a critical result's escalation.

A worker started without -Q consumes every queue here (the embedded mode, the tests). On
RabbitMQ the queues are quorum queues (replicated, kept across a broker restart) on topic
exchanges, which Celery's native delayed delivery needs to carry retry countdowns.
CELERY_QUEUE_PREFIX gives every name a prefix, so that several deployments (or test runs)
can share one broker without taking each other's tasks. No Django here: settings import it.
"""

from __future__ import annotations

from kombu import Exchange, Queue

KINDS = ("celery", "followup", "render", "notify", "deadlines", "housekeeping", "routing")

ROUTES = {
    "imaging.tasks.render_*": "render",
    "imaging.tasks.requeue_owed_renders": "render",
    "consults.tasks.report_into_studies": "followup",
    "consults.tasks.write_missing_report_objects": "followup",
    "consults.screening.tasks.write_reading_sr": "followup",
    "consults.screening.tasks.write_missing_reading_srs": "followup",
    "consults.screening.tasks.remind_due": "deadlines",
    "consults.screening.tasks.match_scans": "housekeeping",
    "imaging.routing.tasks.*": "routing",
    "imaging.tasks.deliver_commitment": "routing",
    "imaging.tasks.resend_owed_commitments": "routing",
    "consults.tasks.send_result": "routing",
    "consults.tasks.send_unsent_results": "routing",
    "*.send_notification_emails": "notify",
    "*.send_unsent_emails": "notify",
    "*.send_break_glass_email": "notify",
    "imaging.tasks.send_unsent_break_glass_emails": "notify",
    "alliance.tasks.privilege_change_notice": "notify",
    "alliance.tasks.send_unsent_privilege_notices": "notify",
    "consults.tasks.check_deadlines": "deadlines",
    "consults.tasks.escalate_critical_results": "deadlines",
    "referrals.tasks.remind_waiting": "deadlines",
    "*.roll_up_*": "housekeeping",
    "*.purge_deleted_studies": "housekeeping",
    "*.summarize_denied_reads": "housekeeping",
    "alliance.tasks.send_atna": "housekeeping",
    "alliance.tasks.empty_atna_outbox": "housekeeping",
    "imaging.tasks.remove_stale_temp_files": "housekeeping",
}


def is_rabbitmq(broker_url: str) -> bool:
    return broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))


def declare(prefix: str, *, quorum: bool) -> tuple[Queue, ...]:
    arguments = {"x-queue-type": "quorum"} if quorum else None
    return tuple(
        Queue(
            prefix + kind, Exchange(prefix + kind, type="topic"), routing_key=prefix + kind, queue_arguments=arguments
        )
        for kind in KINDS
    )


def routes(prefix: str) -> dict[str, dict[str, str]]:
    return {pattern: {"queue": prefix + kind} for pattern, kind in ROUTES.items()}
