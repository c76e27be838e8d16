"""Routing benchmark (issue 18): our C-STORE SCU sending a 500-instance CT to a local dcmtk
storescp, side by side with dcmtk's own storescu sending the same stored files to the same peer.

    .venv/bin/python bench/route_bench.py [--instances 500] [--pairs 3] [--plain] [--bare] [--checkout PATH]

Makes a throw-away database (PostgreSQL on 127.0.0.1:5432, trust) and data folder, stores a
generated 512x512 16-bit CT series through ingest, registers storescp (TCP_NODELAY=1, +B,
writing into a temporary folder) as a destination, then runs interleaved pairs: storescu
(TCP_NODELAY=1, one association, the files as they lie in our store) and one routing attempt
(imaging.routing.services.send_item: claim, C-STORE of every instance on one association,
the sent marks and the result in the database), each to an emptied folder. Prints a Markdown
table; --plain sends on pynetdicom's own path (DICOM_ACCELERATE=0) instead of imaging/dicom/accel.
--bare adds a third run to each pair: imaging.dicom.scu.send alone (the same stored files, one
association, no claim and no marks in the database), the sender's own rate, with the CPU time
per instance of storescu and of the bare sender (this process: its sending thread and
pynetdicom's). --checkout runs
ours from another checkout of the project (e.g. a git worktree of an earlier commit: its
imaging package is imported instead of this one's), so that two versions can be compared.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if "--checkout" in sys.argv:  # before anything of the project is imported
    ROOT = Path(sys.argv[sys.argv.index("--checkout") + 1]).resolve()
    # django.setup() puts the working directory first on sys.path (seen 2026-12-04): run from the
    # checkout, or its imaging package would give way to the one of the directory the bench ran in
    os.chdir(ROOT)
sys.path.insert(0, str(ROOT))
NODELAY = {**os.environ, "TCP_NODELAY": "1"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--plain", action="store_true")
    parser.add_argument("--bare", action="store_true")
    parser.add_argument("--checkout", type=Path, default=ROOT)
    parser.add_argument(
        "--peer-folder",
        type=Path,
        default=Path("/dev/shm") if Path("/dev/shm").is_dir() else None,
        help="where storescp writes what it receives (default: a folder in /dev/shm, so that the"
        " disk's writeback of one run's 263 MB does not slow the next)",
    )
    parser.add_argument("--database", default=f"alliance_route_bench_{os.getpid()}", help="made and dropped")
    args = parser.parse_args()
    name = args.database
    data = Path(tempfile.mkdtemp(prefix="route-bench-"))
    peer = Path(tempfile.mkdtemp(prefix="route-bench-peer-", dir=args.peer_folder))
    psql = ["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-c"]
    subprocess.run([*psql, f"CREATE DATABASE {name}"], check=True)
    os.environ.update(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{name}",
        DATA_DIR=str(data),
        DJANGO_SETTINGS_MODULE="alliance.settings",
        CELERY_TASK_ALWAYS_EAGER="1",
        DICOM_ACCELERATE="0" if args.plain else "1",
        LOG_LEVEL="WARNING",
    )
    storescp = None
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        storescp, port, received = start_storescp(peer)
        run(args, port, received)
    finally:
        if storescp is not None:
            storescp.terminate()
            storescp.wait(timeout=10)
        shutil.rmtree(peer, ignore_errors=True)
        from django.db import connections

        connections.close_all()
        subprocess.run([*psql, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=False)
        shutil.rmtree(data, ignore_errors=True)


def start_storescp(data: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    from tests.processes import free_port, wait_for_port

    port, received = free_port(), data / "received"
    received.mkdir()
    proc = subprocess.Popen(
        ["storescp", "+B", "-aet", "STORESCP", "-od", str(received), str(port)], env=NODELAY, stderr=subprocess.DEVNULL
    )
    wait_for_port(port, proc)
    return proc, port, received


def run(args: argparse.Namespace, port: int, received: Path) -> None:
    from alliance import audit
    from imaging import storage
    from imaging.dicom import scu
    from imaging.ingest import ingest_bytes
    from imaging.models import Instance
    from imaging.routing import services
    from imaging.routing.models import Destination, RouteItem, RouteSent
    from tests import factories
    from tests.imaging.dicomgen import make_ct_series, part10_bytes

    clinic = factories.make_institution(name="Bench clinic", ae_title="BENCHCLIN")
    for ds in make_ct_series(args.instances, patient_id="BENCH-1"):
        study = ingest_bytes(part10_bytes(ds), institution=clinic, actor=audit.SYSTEM, via="bench").study
    files = [str(storage.local_path(i)) for i in Instance.objects.filter(series__study=study)]
    size_mb = sum(Path(f).stat().st_size for f in files) / 1e6
    destination = Destination.objects.create(
        institution=clinic, name="storescp", ae_title="STORESCP", host="127.0.0.1", port=port
    )
    item = RouteItem.objects.create(destination=destination, study=study)
    objects = [services._stored(i) for i in Instance.objects.filter(series__study=study)]
    print(f"{args.instances} instances, {size_mb:.0f} MB, ours from {ROOT}; load average before: {os.getloadavg()}")
    bare_column = (" bare sender instances/s | bare ratio | CPU ms per instance, storescu / bare |", "---|---|---|")
    bare_column = bare_column if args.bare else ("", "")
    print(f"| pair | storescu instances/s | routing instances/s | ratio |{bare_column[0]}")
    print(f"|---|---|---|---|{bare_column[1]}")
    ratios, bare_ratios = [], []

    def storescu() -> tuple[float, float]:
        empty(received)
        children = _children_cpu()
        start = time.perf_counter()
        subprocess.run(
            ["storescu", "-aet", "BENCHCLIN", "-aec", "STORESCP", "127.0.0.1", str(port), *files],
            env=NODELAY,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        rate = args.instances / (time.perf_counter() - start)
        assert len(list(received.iterdir())) == args.instances
        return rate, (_children_cpu() - children) * 1000 / args.instances

    def routing() -> float:
        empty(received)
        RouteSent.objects.filter(item=item).delete()
        RouteItem.objects.filter(pk=item.pk).update(state="pending", attempts=0)
        start = time.perf_counter()
        services.send_item(item_id=item.pk)
        rate = args.instances / (time.perf_counter() - start)
        item.refresh_from_db()
        assert item.state == "sent" and len(list(received.iterdir())) == args.instances, item.reason
        return rate

    def bare_sender() -> tuple[float, float]:
        empty(received)
        peer = scu.PeerAE("STORESCP", "127.0.0.1", port, "BENCHCLIN")
        start, own = time.perf_counter(), sum(os.times()[:2])
        outcome = scu.send(peer, objects, accelerate=not args.plain)
        rate = args.instances / (time.perf_counter() - start)
        assert outcome.complete and len(list(received.iterdir())) == args.instances, outcome.reason
        return rate, (sum(os.times()[:2]) - own) * 1000 / args.instances

    for pair in range(1, args.pairs + 1):
        # every other pair the other way round, so that neither side always runs first
        if pair % 2:
            dcmtk, dcmtk_cpu = storescu()
            ours = routing()
            bare, bare_cpu = bare_sender() if args.bare else (0.0, 0.0)
        else:
            bare, bare_cpu = bare_sender() if args.bare else (0.0, 0.0)
            ours = routing()
            dcmtk, dcmtk_cpu = storescu()
        ratios.append(ours / dcmtk)
        row = f"| {pair} | {dcmtk:.0f} | {ours:.0f} | {ours / dcmtk:.2f} |"
        if args.bare:
            bare_ratios.append(bare / dcmtk)
            row += f" {bare:.0f} | {bare / dcmtk:.2f} | {dcmtk_cpu:.2f} / {bare_cpu:.2f} |"
        print(row)
    print(f"median ratio {sorted(ratios)[len(ratios) // 2]:.2f}; load average after: {os.getloadavg()}")
    if bare_ratios:
        print(f"median bare ratio {sorted(bare_ratios)[len(bare_ratios) // 2]:.2f}")


def _children_cpu() -> float:
    """CPU seconds of the finished child processes (storescu), user and system."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def empty(folder: Path) -> None:
    for path in folder.iterdir():
        path.unlink()


if __name__ == "__main__":
    main()
