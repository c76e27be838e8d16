"""PostgreSQL's CPU per new study on the spool's batch path (ingest.index_spooled_new), in process.

    .venv/bin/python bench/index_cost.py [--batches 300] [--batch-size 4] [--rounds 3] [--base REV]

Stores --batches batches of --batch-size single-instance studies (32x32 CT, each its own
patient) through ingest.index_spooled_new, as the DICOM server's indexer does, on a fresh
PostgreSQL database, and prints the CPU the database backend spent per instance (from /proc:
only that backend, so other load on the machine moves it far less than throughput) and the
Python process's own. With --base REV, a git worktree of REV runs the same, round by round
alternately with this checkout. No DICOM association and no file store latency: what it
isolates is the index's SQL. Needs PostgreSQL on 127.0.0.1:5432 with trust.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG = "postgres://postgres@127.0.0.1:5432"


def measure(batches: int, size: int) -> tuple[float, float]:
    """In a process whose settings point at a fresh database: (backend ms, client ms) per instance."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from alliance import audit
    from imaging import index, ingest
    from imaging.received import read
    from tests import factories
    from tests.imaging.dicomgen import make_ct_series, part10_bytes

    call_command("migrate", verbosity=0)
    clinic = factories.make_institution(name="Bench clinic", ae_title="BENCHCLIN")
    actor = audit.Actor("device", "1", "BENCH_CT", clinic.pk)
    folder = Path(tempfile.mkdtemp(prefix="index-cost-"))
    warm = 10
    all_entries = []
    for b in range(batches + warm):
        entries = []
        for k in range(size):
            path = folder / f"{b}-{k}.dcm"
            path.write_bytes(part10_bytes(make_ct_series(1, 32, 32, patient_id=f"P{b}-{k}")[0]))
            parsed = read(path, None)
            entries.append((path, parsed, index.known_key(parsed.attributes, clinic), "127.0.0.1:4100"))
        all_entries.append(entries)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]

    def backend_cpu() -> float:
        fields = Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    for entries in all_entries[:warm]:
        assert ingest.index_spooled_new(entries, institution=clinic, actor=actor, via="dimse")
    server, client = backend_cpu(), time.process_time()
    for entries in all_entries[warm:]:
        assert ingest.index_spooled_new(entries, institution=clinic, actor=actor, via="dimse")
    n = batches * size
    result = (1000 * (backend_cpu() - server) / n, 1000 * (time.process_time() - client) / n)
    connection.close()
    shutil.rmtree(folder, ignore_errors=True)
    return result


def run_in(root: Path, batches: int, size: int) -> tuple[float, float]:
    """One measurement in `root` (a checkout), on a database of its own dropped after."""
    name = f"bench_index_{uuid.uuid4().hex[:8]}"
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {name}"], check=True)
    data = Path(tempfile.mkdtemp(prefix="index-cost-data-"))
    try:
        env = {**os.environ, "DATABASE_URL": f"{PG}/{name}", "DATA_DIR": str(data), "PYTHONPATH": str(root)}
        env["DJANGO_SETTINGS_MODULE"] = "alliance.settings"
        code = (
            f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import index_cost;"
            f" print(*index_cost.measure({batches}, {size}))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=root, env=env, check=True, capture_output=True, text=True
        )
        backend, client = (float(x) for x in out.stdout.split()[-2:])
        return backend, client
    finally:
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE IF EXISTS {name}"], check=False
        )
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--base", help="a commit to run alternately with this checkout")
    args = parser.parse_args()
    trees = {"this": ROOT}
    work = Path(tempfile.mkdtemp(prefix="index-cost-trees-"))
    if args.base:
        trees = {"base": work / "base", "this": ROOT}
        subprocess.run(
            ["git", "worktree", "add", "-q", "--detach", str(trees["base"]), args.base], cwd=ROOT, check=True
        )
    try:
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
        print(f"{args.batches} batches of {args.batch_size} new single-instance studies; load {os.getloadavg()[0]:.1f}")
        for round_ in range(args.rounds):
            line = []
            for name, root in trees.items():
                backend, client = run_in(root, args.batches, args.batch_size)
                figures[name].append((backend, client))
                line.append(f"{name}: PostgreSQL {backend:.3f} ms, Python {client:.3f} ms")
            print(f"round {round_ + 1}: " + "   ".join(line), flush=True)
        for name, values in figures.items():
            backend = statistics.median(v[0] for v in values)
            client = statistics.median(v[1] for v in values)
            print(f"| {name} | {backend:.3f} | {client:.3f} |")
    finally:
        if args.base:
            subprocess.run(["git", "worktree", "remove", "--force", str(trees["base"])], cwd=ROOT, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
