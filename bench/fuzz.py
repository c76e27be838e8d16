"""The seeded fuzzer at scale: mutated DICOM files over C-STORE and STOW-RS against the real
servers, counted per outcome (tests/imaging/fuzzing.py; `make test` runs 1,000 of them).

    .venv/bin/python bench/fuzz.py [--seed 20261202] [--files 10000]
    .venv/bin/python bench/fuzz.py --seed 20261202 --case 1234 --write case.dcm   # one case again

Starts `manage.py dicom_server` and gunicorn on a fresh PostgreSQL database (created from
scratch, migrated, dropped afterwards) and a temporary DATA_DIR, sends even cases over C-STORE
(a pynetdicom SCU, a new association every 100 files and after an abort) and odd ones over
STOW-RS (one request each), then fetches every stored instance back (/metadata and the
instance, and each study's /metadata). Prints a Markdown table for bench/RESULTS.md: per
channel, files stored, refused (by status code), aborted without a status, hung, answered
5xx, stored but unservable, acknowledged but lost, and server crashes; then each class of
failure with a case that reproduces it. Exit 1 when anything failed. Needs PostgreSQL on
127.0.0.1:5432 (trust); binds loopback ports only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PG = "postgres://postgres@127.0.0.1:5432"
CALLING_AE = "FUZZ_SCU"
CALLED_AE = "FUZZPACS"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--case", type=int, help="only rebuild this case and describe it")
    parser.add_argument("--write", type=Path, help="with --case: write the case's file (what STOW sends) here")
    args = parser.parse_args()
    from tests.imaging import fuzzing

    if args.case is not None:
        case = fuzzing.make_case(args.seed, args.case)
        print(case.label, f"SOP Instance UID {case.sop_uid}, {len(case.file_bytes())} bytes")
        if args.write:
            args.write.write_bytes(case.file_bytes())
        return 0
    database = f"bench_fuzz_{os.getpid()}"
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", database], check=True)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as work:
            return _run(args, database, Path(work))
    finally:
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", database], check=False)


def _run(args: argparse.Namespace, database: str, work: Path) -> int:
    os.environ.update({"DATABASE_URL": f"{PG}/{database}", "DATA_DIR": str(work / "data")})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "alliance.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from alliance import audit, services
    from imaging.models import Instance
    from tests import factories
    from tests.imaging import fuzzing

    clinic = factories.make_institution(ae_title=CALLED_AE, name="Fuzzed clinic")
    services.device_create(institution=clinic, ae_title=CALLING_AE, host="127.0.0.1", port=104, by=audit.SYSTEM)
    token = services.token_create(doctor=factories.make_doctor(institution=clinic), by=audit.SYSTEM).key

    def stored() -> list[tuple[str, str, str]]:
        rows = Instance.objects.values_list("series__study__study_uid", "series__series_uid", "sop_uid")
        return [(study, series, sop_uid) for study, series, sop_uid in rows]

    outbox = work / "outbox"
    outbox.mkdir()
    started = time.monotonic()
    with fuzzing.servers(os.environ["DATABASE_URL"], work / "data") as running, _closing_connections():
        result = fuzzing.run(
            args.seed,
            args.files,
            servers=running,
            calling=CALLING_AE,
            called=CALLED_AE,
            token=token,
            folder=outbox,
            stored_instances=stored,
            progress=lambda message: print(f"[{time.monotonic() - started:6.0f} s] {message}", file=sys.stderr),
        )
    load = os.getloadavg()
    print(f"Seed {args.seed}, {args.files} files, {time.monotonic() - started:.0f} s, load {load[0]:.1f}.\n")
    print(result.report())
    return 0 if result.passed() else 1


@contextmanager
def _closing_connections() -> Iterator[None]:
    """This process's database connections closed at the end (else the database cannot be dropped)."""
    from django.db import connections

    try:
        yield
    finally:
        connections.close_all()


if __name__ == "__main__":
    sys.exit(main())
