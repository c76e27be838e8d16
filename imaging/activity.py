"""Whether this node is taking in images right now, so that rendering can wait for a lull.

On a node that runs the DICOM server (or the web app's STOW-RS) and the render worker side
by side, rendering the thumbnails of a long store competes with the store for the cores: a
lower CPU priority (run_embedded's `nice`) does not keep it off them, and its database
queries run at normal priority. So ingest marks the node busy, and the render worker waits
for a lull before each instance, up to RENDER_DEFER_SECONDS per task, so that thumbnails
still come under a steady stream (the pages render on demand meanwhile).

The mark is the modification time of one file under DATA_DIR, which every process of a node
shares and no other node sees: a node's rendering waits for its own ingest only. Each
process touches it at most every MARK_EVERY seconds (a system call per half second, not one
per instance); the node is busy while the mark is younger than QUIET_AFTER seconds.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

log = logging.getLogger(__name__)

MARK_EVERY = 0.5
QUIET_AFTER = 1.0
POLL_SECONDS = 0.25

_last_mark = -MARK_EVERY  # time.monotonic() of this process's last touch


def mark_path() -> Path:
    return Path(settings.DATA_DIR) / "run" / "ingesting"


def mark_ingest() -> None:
    """Say that this node is taking in an image now (ingest calls it for every instance).
    Threads racing past the throttle only touch the file twice."""
    global _last_mark
    now = time.monotonic()
    if now - _last_mark < MARK_EVERY:
        return
    _last_mark = now
    path = mark_path()
    try:
        os.utime(path)
    except FileNotFoundError:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        except OSError as exc:
            log.debug("could not mark ingest at %s: %s", path, exc)
    except OSError as exc:  # a read-only or full disk: rendering then simply does not wait
        log.debug("could not mark ingest at %s: %s", path, exc)


def busy_for() -> float:
    """How much longer the node counts as busy, in seconds (0 when it is not)."""
    try:
        age = time.time() - mark_path().stat().st_mtime
    except OSError:  # never marked, or the folder is gone
        return 0.0
    if age < 0:  # the clock was set back: not a reason to wait
        return 0.0
    return max(0.0, QUIET_AFTER - age)


def wait_for_lull(
    limit: float, sleep: Callable[[float], object] = time.sleep, clock: Callable[[], float] = time.monotonic
) -> float:
    """Wait while the node is taking in images, at most `limit` seconds; how long it waited."""
    start = clock()
    waited = 0.0
    while waited < limit:
        remaining = busy_for()
        if remaining <= 0:
            break
        sleep(min(remaining + 0.01, POLL_SECONDS, limit - waited))
        waited = clock() - start
    return waited
