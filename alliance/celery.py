"""The Celery app. Embedded mode uses kombu's filesystem transport (no broker server)."""

import os
from typing import Any

from celery import Celery
from celery.signals import before_task_publish

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "alliance.settings")

app = Celery("alliance")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# RabbitMQ's record of a message's dead-lettering. Celery's native delayed delivery holds a
# countdown in a chain of quorum queues that dead-letter into each other, so a delayed
# message arrives carrying these; a retry sends the task again with the headers it arrived
# with. RabbitMQ then finds the retry's way through the delay queues in that history, takes it
# for a cycle and keeps the message in its delay queue for good: from the second retry on,
# a task was never run again (Celery's issues 9867 and 10111). A task sent is a new message.
DEAD_LETTER_HEADERS = (
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
)


@before_task_publish.connect(weak=False)
def _without_dead_letter_history(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Celery publishes the very dict it sends this signal: what is dropped here is not sent."""
    if not headers:
        return
    for name in DEAD_LETTER_HEADERS:
        headers.pop(name, None)
