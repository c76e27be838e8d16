"""`manage.py dicom_storage_check`: files without rows and rows without files in the DICOM storage.

Reports both, and what the DIMSE write-ahead spool holds for a person to act on: answered
instances a stopped server left (the next `dicom_server` start indexes them) and files
kept in DATA_DIR/refused (answered with success, refused when indexed). With
--remove-orphans it deletes stored files that no instance row points at and that are older
than --older-than minutes (a crash between storing and indexing is the only way to leave
one). Rows without a file are reported, never deleted: that is data
loss for a person to look into. Exit status 1 when anything was found and not repaired.
"""

from __future__ import annotations

from datetime import timedelta
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
        waiting, refused = spool.waiting_entries(), spool.refused_files()
        for path in waiting:
            self.stdout.write(f"spooled, waiting for the next dicom_server start: {path}")
        for path in refused:
            self.stdout.write(f"answered but refused when indexed (see the audit log): {path}")
        if waiting or refused:
            self.stdout.write(f"{len(waiting)} spooled instance(s) waiting, {len(refused)} refused file(s) kept")
        if missing or waiting or refused or (orphans and not options["remove_orphans"]):
            raise SystemExit(1)
