"""`manage.py dicom_storage_check`: files without rows and rows without files in the DICOM storage.

Reports both, and what the DIMSE write-ahead spool holds: answered instances a running
server has not indexed yet (a backlog that stays means its indexer is stalled: see its
log), answered instances a stopped server left (the next `dicom_server` start indexes
them), and files kept in DATA_DIR/refused (answered with success, refused when indexed). With
--remove-orphans it deletes stored files that no instance row points at and that are older
than --older-than minutes (a crash between storing and indexing is the only way to leave
one). Rows without a file are reported, never deleted: that is data
loss for a person to look into. Exit status 1 when anything was found and not repaired.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from alliance import audit
from imaging import reconcile, spool


class Command(BaseCommand):
    help = "Check that the DICOM storage and the index agree; optionally remove orphaned files."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--remove-orphans", action="store_true", help="delete files no instance points at")
        parser.add_argument("--older-than", type=int, default=60, metavar="MINUTES", help="orphan age (default 60)")

    def handle(self, *args: Any, **options: Any) -> None:
        age = timedelta(minutes=max(1, options["older_than"]))
        if options["remove_orphans"]:
            orphans = reconcile.remove_orphans(older_than=age, actor=audit.SYSTEM)
            verb = "removed"
        else:
            orphans = list(reconcile.orphan_keys(older_than=age))
            verb = "found"
        for key in orphans:
            self.stdout.write(f"orphan file {verb}: {key}")
        missing = list(reconcile.missing_files())
        for instance in missing:
            self.stdout.write(f"missing file: {instance.storage_key} (SOP Instance UID {instance.sop_uid})")
        self.stdout.write(f"{len(orphans)} orphan file(s) {verb}, {len(missing)} instance(s) without a file")
        live, waiting, refused = spool.live_entries(), spool.waiting_entries(), spool.refused_files()
        for path in live:
            self.stdout.write(f"spooled, not indexed yet by the running dicom_server ({_age(path)}): {path}")
        for path in waiting:
            self.stdout.write(f"spooled, waiting for the next dicom_server start: {path}")
        for path in refused:
            self.stdout.write(f"answered but refused when indexed (see the audit log): {path}")
        if live or waiting or refused:
            self.stdout.write(
                f"{len(live)} spooled instance(s) not indexed yet, {len(waiting)} waiting for a restart,"
                f" {len(refused)} refused file(s) kept"
            )
        if missing or live or waiting or refused or (orphans and not options["remove_orphans"]):
            raise SystemExit(1)


def _age(path: Path) -> str:
    """How long ago the spooled instance was received (its file's modification time)."""
    try:
        return f"received {time.time() - path.stat().st_mtime:.0f} s ago"
    except FileNotFoundError:
        return "indexed meanwhile"
