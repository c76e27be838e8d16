"""Storage and index in agreement after a crash.

Ingest never commits a row without its file and deletes the file of a transaction that
fails; only a crash of the process between placing a file and committing its row can
leave a file that nothing indexes. `orphan_keys` finds those (old enough not to belong
to an ingest still running), `missing_files` finds rows whose file has gone.
`remove_stale_temp` clears what dead processes left half-received in DATA_DIR/tmp.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from django.utils import timezone

from alliance import audit
from imaging import storage
from imaging.models import Instance

log = logging.getLogger(__name__)


def _walk(folder: str = "") -> Iterator[tuple[str, list[str]]]:
    """(folder, file names) for every folder of the DICOM storage, through the Storage API.
    A local store's folder is made by the first store into it, so a folder that does not
    exist (yet, or any more) holds nothing. The render cache's folder, beside the objects in
    an S3 bucket, is no DICOM storage's."""
    try:
        folders, files = storage.dicom_storage().listdir(folder)
    except FileNotFoundError:
        return
    yield folder, files
    for name in sorted(folders):
        if not folder and name == storage.RENDER_CACHE_FOLDER:
            continue
        yield from _walk(f"{folder}/{name}" if folder else name)


def orphan_keys(*, older_than: timedelta = timedelta(hours=1)) -> Iterator[str]:
    """Stored keys no instance row points at, last modified before `older_than` ago."""
    backend = storage.dicom_storage()
    cutoff = timezone.now() - older_than
    for folder, files in _walk():
        if not files:
            continue
        prefix = f"{folder}/" if folder else ""
        indexed = set(Instance.objects.filter(storage_key__startswith=prefix).values_list("storage_key", flat=True))
        for name in files:
            key = prefix + name
            if key not in indexed and backend.get_modified_time(key) < cutoff:
                yield key


def missing_files() -> Iterator[Instance]:
    backend = storage.dicom_storage()
    for instance in Instance.objects.only("pk", "sop_uid", "storage_key").iterator(chunk_size=2000):
        if not backend.exists(instance.storage_key):
            yield instance


def remove_orphans(*, older_than: timedelta, actor: audit.Actor) -> list[str]:
    removed = []
    for key in orphan_keys(older_than=older_than):
        storage.delete_key(key)
        removed.append(key)
    if removed:
        audit.record(
            actor=actor,
            action="storage.remove-orphans",
            object_type="storage",
            object_id="dicom",
            detail={"count": len(removed), "keys": removed[:100]},
        )
    return removed


def remove_stale_temp(*, older_than: timedelta) -> int:
    """Delete what in DATA_DIR/tmp nothing has written to for `older_than`: partial receives
    and staged uploads of a process that died. A receive in progress writes all the time,
    and a folder counts as written when anything in it was; how many entries were removed."""
    folder = storage.temp_dir()
    cutoff = time.time() - older_than.total_seconds()
    removed = 0
    for entry in folder.iterdir():
        try:
            if _last_written(entry) >= cutoff:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:  # its owner removed it meanwhile
            continue
        removed += 1
    if removed:
        log.warning("removed %d stale entr(ies) from %s", removed, folder)
    return removed


def _last_written(entry: Path) -> float:
    stat = entry.lstat()
    if not entry.is_dir() or entry.is_symlink():
        return stat.st_mtime
    return max([stat.st_mtime, *(p.lstat().st_mtime for p in entry.rglob("*"))])
