"""A task sent again (a retry) leaves behind RabbitMQ's dead-letter history of the message it
came in (alliance/celery.py); the rest of its headers go with it. The delay queues' part is
tests/imaging/test_routing_worker.py, on the real broker."""

from __future__ import annotations

from celery import Celery
from kombu import Connection, Queue

from alliance.celery import DEAD_LETTER_HEADERS


def test_a_task_sent_with_dead_letter_headers_is_published_without_them() -> None:
    app = Celery(broker="memory://", set_as_current=False)
    queue = Queue("headers-test")
    history = {
        "x-death": [{"queue": "celery_delayed_0", "reason": "expired", "count": 1}],
        "x-first-death-queue": "celery_delayed_1",
        "x-first-death-reason": "expired",
        "x-first-death-exchange": "celery_delayed_27",
        "x-last-death-queue": "celery_delayed_0",
        "x-last-death-reason": "expired",
        "x-last-death-exchange": "celery_delayed_0",
    }
    assert set(history) == set(DEAD_LETTER_HEADERS)
    with Connection("memory://") as conn:
        queue(conn.default_channel).declare()
        with app.producer_or_acquire(app.amqp.Producer(conn)) as producer:
            app.send_task(
                "imaging.tasks.render_instances",
                args=[[1]],
                headers={**history, "kept": "yes"},
                queue=queue,
                producer=producer,
            )
        message = queue(conn.default_channel).get(no_ack=True)
    assert message is not None
    assert message.headers["task"] == "imaging.tasks.render_instances"
    assert message.headers["kept"] == "yes"
    assert not set(DEAD_LETTER_HEADERS) & set(message.headers)
