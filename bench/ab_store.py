"""A/B pairs for the DIMSE store path: our dicom_server at another commit against this checkout.

    .venv/bin/python bench/ab_store.py BASE_REV [--this REV] [--pairs 3] [--associations 1] [--processes 2]
    .venv/bin/python bench/ab_store.py BASE_REV --small-studies 200 --per-study 5 [--associations 4] [--with-worker]
    .venv/bin/python bench/ab_store.py BASE_REV --small-studies 100 --study-associations 100

Checks BASE_REV (and REV, else this checkout) out into temporary git worktrees and runs
both servers alternately (base, this, base, ...) on the same machine, each on a fresh copy of one migrated
PostgreSQL database, storing the same generated CT study (or, with --small-studies N, N
studies of --per-study K instances each, every one its own patient) with storescu. Prints each run's
instances per second, server CPU per instance and PostgreSQL's (all its processes), and with
--with-worker (beside the Celery workers `make run` starts) how much they had rendered (see
bench/dimse_store.py). Small studies on 4 associations keep each study whole on one. Single
runs on this machine swing by a third; only interleaved pairs compare a change fairly. Needs what bench/dimse_store.py
needs (PostgreSQL on 127.0.0.1:5432 with trust, dcmtk); binds loopback ports only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dimse_store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", help="the commit to compare with")
    parser.add_argument("--this", help="a commit to run instead of this checkout")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--associations", type=int, default=1, choices=(1, 4))
    parser.add_argument("--processes", type=int, default=2, help="server processes for 4 associations")
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--small-studies", type=int, default=0, help="store this many small studies instead")
    parser.add_argument("--per-study", type=int, default=1, help="instances in each small study (512x512)")
    parser.add_argument("--with-worker", action="store_true", help="run the Celery workers of `make run` beside")
    parser.add_argument(
        "--study-associations",
        type=int,
        default=0,
        help="store this many of the small studies each on an association of its own, one after another, instead",
    )
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "alliance.settings")
    os.environ.setdefault("DATABASE_URL", f"{dimse_store.PG}/postgres")
    import django

    django.setup()

    work = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    dimse_store._trash = dimse_store.Trash(work)  # no deletion just before a run (see Trash)
    trees = {"base": args.base, **({"this": args.this} if args.this else {})}
    roots = {"this": dimse_store.ROOT}
    for name, rev in trees.items():
        roots[name] = work / name
        subprocess.run(
            ["git", "worktree", "add", "-q", "--detach", str(roots[name]), rev], cwd=dimse_store.ROOT, check=True
        )
    processes = 1 if args.associations == 1 else args.processes
    servers = {
        name: dimse_store.Ours(work, processes, root=roots[name], with_worker=args.with_worker)
        for name in ("base", "this")
    }
    try:
        data = work / "data"
        if args.small_studies:
            dimse_store.generate_small_studies(data, args.small_studies, args.per_study)
            instances = args.small_studies * args.per_study
        else:
            dimse_store.generate_ct(data, args.instances)
            instances = args.instances
        split = dimse_store.split_studies if args.small_studies else dimse_store.split
        folders = [data] if args.associations == 1 else split(data, 4)
        send = dimse_store.storescu
        if args.small_studies and args.study_associations:
            folders = dimse_store.split_each_study(data, args.study_associations)
            instances = len(folders) * args.per_study
            send = dimse_store.storescu_each
        template = servers["this"]
        template.prepare()  # one migrated database (this checkout's schema), copied for every run
        # (the migrations have not changed between the commits compared here)
        servers["base"].template = template.template
        creation = dimse_store.file_creation_us(work)
        what = f"{args.small_studies} studies of {args.per_study} instance(s)" if args.small_studies else "one CT study"
        if send is dimse_store.storescu_each:
            what = f"{len(folders)} studies of {args.per_study} instance(s), each on an association of its own"
        beside = ", beside the Celery workers" if args.with_worker else ""
        print(
            f"{what}, {instances} instances on {args.associations} association(s), {processes} server process(es)"
            f"{beside}; load {' '.join(f'{x:.1f}' for x in os.getloadavg())}; creating a file {creation:.0f} us"
        )
        for pair in range(args.pairs):
            line = []
            for name, server in servers.items():
                seconds, cpu, database = dimse_store.measure_store(
                    f"{name}{pair}", server.running, dimse_store.OUR_AE, folders, processes, send
                )
                if server.count() != instances:
                    raise RuntimeError(f"{name}: the index holds {server.count()} instances, not {instances}")
                line.append(
                    f"{name} {instances / seconds:.0f}/s ({cpu / instances * 1000:.1f} ms CPU,"
                    f" PostgreSQL {database / instances * 1000:.2f})"
                )
            print(f"pair {pair + 1}: " + "   ".join(line), flush=True)
            for name, server in servers.items():
                for note in server.notes:
                    print(f"    {name} {note}", flush=True)
                server.notes.clear()
    finally:
        for server in servers.values():
            server.cleanup()
        for name in trees:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(roots[name])], cwd=dimse_store.ROOT, check=False
            )
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
