"""Background work on stored images: thumbnails and previews after ingest."""

from __future__ import annotations

import logging

from celery import shared_task

from imaging import render
from imaging.models import Instance

log = logging.getLogger(__name__)


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Errors worth a retry: the storage or the network was away, not the file bad."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError
    except ImportError:  # botocore comes with the S3 storage only
        return tuple(errors)
    return (*errors, BotoConnectionError, HTTPClientError)


@shared_task(
    acks_late=True,
    autoretry_for=_transient_errors(),
    retry_backoff=True,
    retry_backoff_max=300,
    max_retries=6,
)
def render_instance(instance_id: int) -> bool:
    """Render and cache the thumbnail and preview; True when the instance is now rendered.

    Safe to run twice: renders are cached by key and the flag is only ever set to True.
    """
    instance = Instance.objects.filter(pk=instance_id).first()
    if instance is None:
        return False
    try:
        render.thumbnail(instance)
        render.preview(instance)
    except render.RenderError as exc:
        log.info("instance %s has no renderable frame: %s", instance.sop_uid, exc)
        return False
    Instance.objects.filter(pk=instance_id, rendered=False).update(rendered=True)
    return True
