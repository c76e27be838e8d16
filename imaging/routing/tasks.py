"""Routing's Celery tasks: thin, by id, safe to run twice (the claim lets one worker send).

send_route_item makes one attempt; a transient failure is tried again after the backoff the
service chose (the item's next_attempt_at says when), held by the worker as a countdown (so
it stays below the broker's visibility timeout: ROUTE_RETRY_MAX_SECONDS). sweep, every
ROUTE_SWEEP_SECONDS, fires the study rules on quiet studies and queues again what a lost
message, a killed worker or a long backoff left waiting.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from imaging.routing import services


@shared_task(bind=True, acks_late=True, max_retries=None)
def send_route_item(self: Any, item_id: int) -> bool:
    attempt = services.send_item(item_id=item_id)
    if attempt.retry_in is not None:
        raise self.retry(countdown=attempt.retry_in)
    return attempt.ran


@shared_task(acks_late=True)
def sweep() -> dict[str, int]:
    routed = services.route_quiet_studies()
    again = services.owed_again()
    for item_id in again:
        send_route_item.delay(item_id)
    return {"routed": routed, "queued_again": len(again)}
