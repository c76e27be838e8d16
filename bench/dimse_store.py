"""DIMSE benchmark: our dicom_server (PostgreSQL index) against Orthanc, in one run.

    .venv/bin/python bench/dimse_store.py [--instances 500] [--studies 10000] [--processes 2] [--repeat 3]
        [--small-studies N --per-study K [--study-associations M]] [--with-worker]

Generates one CT study (512x512, 16 bit) with the project's generator, then for each
server: C-STORE it with dcmtk's storescu on 1 association and on 4 parallel associations
(a fresh, empty store for every run), and measures C-FIND latency (p50, p95) at study level
with --studies studies indexed. Both servers and storescu run with TCP_NODELAY=1 in their
environment (Debian's dcmtk and Orthanc leave Nagle on otherwise). Our index rows for the
C-FIND part are inserted in bulk; Orthanc's are stored as small instances over C-STORE.
With --small-studies N, also N studies of --per-study K 512x512 instances each (every study
its own patient) on one association and on 4 (each study whole on one of them), ours against
Orthanc, in a table of their own; with --study-associations M, also the first M of those studies
each on an association of its own, one after the other (storescu started for each: a modality
or gateway that sends each study when it is complete), where what an association costs counts.
With --with-worker, our server runs beside the Celery workers `make run` starts
(run_embedded's commands: the render worker at its lower CPU priority, and the one for the
other queues), on the same DATA_DIR and broker, so that rendering the thumbnails of what
arrives competes with ingest for the cores; each run of ours then also says how many of its
instances were rendered when the store ended, and how long the backlog took to drain after
it.
Prints a Markdown table (paste it into bench/RESULTS.md). Needs PostgreSQL on
127.0.0.1:5432 (trust), dcmtk and the Debian `orthanc` package; binds loopback ports only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.processes import free_port, wait_for_port  # noqa: E402

PG = "postgres://postgres@127.0.0.1:5432"
CALLING_AE = "BENCH_CT"
OUR_AE = "BENCHPACS"
ORTHANC_AE = "ORTHANC"
NODELAY_ENV = {**os.environ, "TCP_NODELAY": "1"}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (our --processes workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # fields[1]: parent pid
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def postgres_cpu_seconds() -> float:
    """User + system CPU of every PostgreSQL process on the machine (its backends, WAL writer,
    checkpointer): what a store costs the database, when nothing else uses it meanwhile."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, rest = stat.read_text().split(" (", 1)[1].rsplit(")", 1)
        except (OSError, ValueError):
            continue
        if name == "postgres":
            fields = rest.split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# What a finished run stored is not deleted right away. This machine kind's ext4 has no
# journal, and there a new inode is not taken from those freed in the last 30 s (the kernel's
# recently_deleted(), checked per candidate inode): after deleting a run's thousands of files,
# the next server's file creations scanned past them, 10% of our server's CPU samples in one
# profile, whichever server came next. Stores are moved aside and deleted in bulk, then the
# bench waits that window out before it measures again.
TRASH_BYTES = 8 * 1024**3
RECENTLY_DELETED_SECONDS = 35


class Trash:
    def __init__(self, work: Path) -> None:
        self.folder = work / "trash"
        self.bytes = 0
        self.count = 0

    def discard(self, path: Path) -> None:
        if not path.exists():
            return
        self.folder.mkdir(exist_ok=True)
        self.bytes += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        self.count += 1
        path.rename(self.folder / f"{self.count}-{path.name}")

    def empty_if_full(self) -> None:
        """Before a run: delete what was put aside once it is large, and wait out the window."""
        if self.bytes > TRASH_BYTES:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.bytes = 0
            time.sleep(RECENTLY_DELETED_SECONDS)


_trash: Trash | None = None  # main() sets it; other scripts that use these classes delete at once


def file_creation_us(work: Path) -> float:
    """What creating a file in the work folder costs, in microseconds.

    Both servers create a file (and, in an empty store, folders) for every instance, so what
    that costs here weighs on both. On this machine kind's ext4 (no journal) it was 14-20 us
    in a new top-level folder and 200-1,200 us in /tmp after a day of benches (the kernel
    scanning inodes it had freed, recently_deleted()), in the same hour: set TMPDIR to a new
    folder when the figure printed is high."""
    probe = work / "creation-probe"
    probe.mkdir()
    started = time.perf_counter()
    for n in range(200):
        os.close(os.open(probe / str(n), os.O_CREAT | os.O_WRONLY, 0o600))
    per_file = (time.perf_counter() - started) / 200 * 1e6
    discard(probe)
    return per_file


def discard(path: Path) -> None:
    if _trash is None:
        shutil.rmtree(path, ignore_errors=True)
    else:
        _trash.discard(path)


# --- data ----------------------------------------------------------------------------------


def generate_ct(folder: Path, instances: int) -> int:
    from tests.imaging import dicomgen

    datasets = dicomgen.make_ct_series(instances, patient_id="BENCH-CT", patient_name="Bench^CT")
    paths = dicomgen.write_series(datasets, folder)
    return sum(p.stat().st_size for p in paths)


def generate_small_studies(folder: Path, studies: int, per_study: int) -> int:
    """`studies` studies of `per_study` 512x512 CT instances each, each study its own patient:
    what township clinics send (single-instance DX studies, five-instance studies), where
    every study is a first instance of its series for the server (the careful path)."""
    import datetime as dt

    from tests.imaging import dicomgen

    folder.mkdir(parents=True)
    size = 0
    for i in range(studies):
        datasets = dicomgen.make_ct_series(
            per_study,
            patient_id=f"SMALL{i:06d}",
            patient_name=f"Small^Study{i:06d}",
            accession_number=f"S{i:07d}",
            study_date=dt.date(2026, 1, 1) + dt.timedelta(days=i % 300),
        )
        for j, ds in enumerate(datasets):
            path = folder / f"{i:06d}-{j:03d}.dcm"
            path.write_bytes(dicomgen.part10_bytes(ds))
            size += path.stat().st_size
    return size


def split(folder: Path, parts: int) -> list[Path]:
    """The same files in `parts` sub-folders (hard links), one per parallel association."""
    files = sorted(folder.glob("*.dcm"))
    chunks = []
    for i in range(parts):
        chunk = folder.parent / f"{folder.name}-part{i}"
        shutil.rmtree(chunk, ignore_errors=True)
        chunk.mkdir()
        for f in files[i::parts]:
            os.link(f, chunk / f.name)
        chunks.append(chunk)
    return chunks


def split_studies(folder: Path, parts: int) -> list[Path]:
    """split() keeping each small study whole on one association (files named <study>-<n>.dcm)."""
    studies = sorted({f.name.split("-")[0] for f in folder.glob("*.dcm")})
    chunks = []
    for i in range(parts):
        chunk = folder.parent / f"{folder.name}-studies{i}"
        shutil.rmtree(chunk, ignore_errors=True)
        chunk.mkdir()
        for study in studies[i::parts]:
            for f in folder.glob(f"{study}-*.dcm"):
                os.link(f, chunk / f.name)
        chunks.append(chunk)
    return chunks


def split_each_study(folder: Path, studies: int) -> list[Path]:
    """The first `studies` small studies, each in a folder of its own (hard links)."""
    names = sorted({f.name.split("-")[0] for f in folder.glob("*.dcm")})[:studies]
    chunks = []
    for study in names:
        chunk = folder.parent / f"{folder.name}-each" / study
        shutil.rmtree(chunk, ignore_errors=True)
        chunk.mkdir(parents=True)
        for f in folder.glob(f"{study}-*.dcm"):
            os.link(f, chunk / f.name)
        chunks.append(chunk)
    return chunks


def storescu_each(port: int, called_ae: str, folders: list[Path]) -> float:
    """Seconds for storescu to send every folder on an association of its own, one after the
    other: a modality or gateway that sends each study when it is complete."""
    start = time.perf_counter()
    for folder in folders:
        done = subprocess.run(
            ["storescu", "-aet", CALLING_AE, "-aec", called_ae, "+sd", "+r", "127.0.0.1", str(port), str(folder)],
            env=NODELAY_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"storescu failed: {done.stderr.decode()[-500:]}")
    return time.perf_counter() - start


def storescu(port: int, called_ae: str, folders: list[Path]) -> float:
    """Seconds for storescu to send every folder, one association per folder, all at once."""
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["storescu", "-aet", CALLING_AE, "-aec", called_ae, "+sd", "+r", "127.0.0.1", str(port), str(f)],
            env=NODELAY_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for f in folders
    ]
    for p in procs:
        _, err = p.communicate(timeout=1800)
        if p.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-500:]}")
    return time.perf_counter() - start


# --- our server ------------------------------------------------------------------------------


class Ours:
    name = "ours (dicom_server, PostgreSQL)"

    def __init__(self, work: Path, processes: int, root: Path = ROOT, with_worker: bool = False) -> None:
        self.work = work
        self.processes = processes
        self.root = root  # the checkout whose dicom_server runs (bench/ab_store.py runs two)
        self.with_worker = with_worker
        if with_worker:
            self.name = "ours (dicom_server, PostgreSQL) beside the Celery workers"
        self.template = f"bench_dimse_tpl_{os.getpid()}"
        self.db = ""
        self.databases: set[str] = set()
        self.notes: list[str] = []  # what each run with the workers rendered

    def prepare(self) -> None:
        """A migrated database with one institution and its device, copied for every run."""
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", self.template], check=True)
        env = {**os.environ, "DATABASE_URL": f"{PG}/{self.template}", "DATA_DIR": str(self.work / "tpl")}
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        code = (
            "from alliance import audit, services\n"
            "from tests import factories\n"
            f"i = factories.make_institution(ae_title='{OUR_AE}')\n"
            f"services.device_create(institution=i, ae_title='{CALLING_AE}', host='127.0.0.1', port=104,"
            " by=audit.SYSTEM)\n"
        )
        subprocess.run([*manage, "shell", "-c", code], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)

    @contextmanager
    def running(self, label: str, processes: int) -> Iterator[tuple[int, int]]:
        # A database of its own for every run, all dropped at the end (cleanup): dropping the
        # last run's just before this one had PostgreSQL and the file system deleting its
        # files while this run wrote, and every round after the first came out slower.
        self.db = f"bench_dimse_{label}_{os.getpid()}_{len(self.databases)}"
        self.databases.add(self.db)
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", self.db], check=True)
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", "-T", self.template, self.db], check=True)
        data = self.work / f"ours-{label}"
        port = free_port()
        env = {
            **NODELAY_ENV,
            "DATABASE_URL": f"{PG}/{self.db}",
            "DATA_DIR": str(data),
            "DICOM_PORT": str(port),
            "LOG_LEVEL": "WARNING",
        }
        cmd = [sys.executable, "manage.py", "dicom_server", "--processes", str(processes)]
        log = (self.work / f"ours-{label}.log").open("w")
        workers = self._start_workers(label, env) if self.with_worker else []
        proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, proc)
            time.sleep(1.0 if processes > 1 else 0.2)  # every process bound
            yield port, proc.pid
            if workers:
                self._note_rendering(label)
        finally:
            stop(proc)
            for worker in workers:
                stop(worker)
            log.close()
            discard(data)

    def _start_workers(self, label: str, env: dict[str, str]) -> list[subprocess.Popen]:
        """The Celery workers as `make run` (run_embedded) starts them, ready to take tasks."""
        from alliance.management.commands.run_embedded import Command as RunEmbedded

        embedded, bin_dir = RunEmbedded(), Path(sys.executable).parent
        commands = {"render": embedded._render_worker_command(bin_dir), "worker": embedded._worker_command(bin_dir)}
        workers, logs = [], []
        for name, cmd in commands.items():
            path = self.work / f"ours-{label}-{name}.log"
            with path.open("w") as out:
                workers.append(subprocess.Popen(cmd, cwd=self.root, env=env, stdout=out, stderr=subprocess.STDOUT))
            logs.append(path)
        deadline = time.monotonic() + 120
        while not all(" ready." in path.read_text(errors="replace") for path in logs):
            if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
                for worker in workers:
                    stop(worker)
                raise RuntimeError(f"the Celery workers did not start: see {', '.join(map(str, logs))}")
            time.sleep(0.2)
        return workers

    def _note_rendering(self, label: str, drain_seconds: float = 300) -> None:
        """How many instances were rendered when the store ended, and how long the rest took."""
        start = time.monotonic()
        total, rendered = self.rendered()
        if total == 0:
            return
        at_end = rendered
        while rendered < total and time.monotonic() - start < drain_seconds:
            time.sleep(0.5)
            total, rendered = self.rendered()
        drained = f"all rendered {time.monotonic() - start:.0f} s later" if rendered == total else "not all rendered"
        self.notes.append(f"{label}: {at_end} of {total} rendered when the store ended, {drained}")

    def rendered(self) -> tuple[int, int]:
        sql = "select count(*), count(*) filter (where rendered or unrenderable) from imaging_instance"
        out = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", sql, self.db],
            capture_output=True,
            text=True,
            check=True,
        )
        total, rendered = out.stdout.strip().split("|")
        return int(total), int(rendered)

    def count(self) -> int:
        out = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", "select count(*) from imaging_instance", self.db],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(out.stdout.strip())

    def index_studies(self, n: int) -> None:
        """n studies of n/5 patients, inserted as index rows in bulk (no files: C-FIND reads the index)."""
        code = f"""
import datetime as dt
from alliance.models import Institution
from imaging.models import Patient, Study
inst = Institution.objects.get(ae_title='{OUR_AE}')
patients = Patient.objects.bulk_create(
    Patient(issuer=inst, patient_id=f'P{{i:06d}}', name=f'NAME{{i:06d}}^GIVEN') for i in range({n} // 5))
Study.objects.bulk_create(
    Study(study_uid=f'2.25.{{900000 + i}}', patient=patients[i % len(patients)], institution=inst,
          study_date=dt.date(2020, 1, 1) + dt.timedelta(days=i % 1500), accession_number=f'A{{i:07d}}',
          description='CT chest', modalities='CT', num_series=1, num_instances=1)
    for i in range({n}))
"""
        env = {**os.environ, "DATABASE_URL": f"{PG}/{self.db}", "DATA_DIR": str(self.work / "tpl")}
        subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env, check=True)

    def cleanup(self) -> None:
        for db in {*self.databases, self.template}:
            subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", db], check=False)


# --- Orthanc ---------------------------------------------------------------------------------


class BarePynetdicom:
    """bench/bare_scp.py: pynetdicom writing what it receives to files, nothing more; with
    `ours`, pynetdicom as our server runs it (wake-ups, C-STORE fast path, negotiation)."""

    def __init__(self, work: Path, ours: bool = False) -> None:
        self.work = work
        self.ours = ours
        how = "with our protocol layer" if ours else "as shipped"
        self.name = f"floor: bare pynetdicom SCP {how} (no index, no fsync)"

    @contextmanager
    def running(self, label: str, processes: int = 1) -> Iterator[tuple[int, int]]:
        folder = self.work / f"bare-{label}-{self.ours}"
        port = free_port()
        cmd = [
            sys.executable,
            str(ROOT / "bench" / "bare_scp.py"),
            str(port),
            str(folder),
            "--processes",
            str(processes),
            *(["--ours"] if self.ours else []),
        ]
        proc = subprocess.Popen(cmd, env=NODELAY_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, proc)
            time.sleep(1.0 if processes > 1 else 0.2)
            yield port, proc.pid
        finally:
            stop(proc)
            discard(folder)


class Orthanc:
    name = "Orthanc (Debian package, TCP_NODELAY=1)"

    def __init__(self, work: Path) -> None:
        self.work = work

    def version(self) -> str:
        out = subprocess.run(["Orthanc", "--version"], capture_output=True, text=True, check=False)
        return out.stdout.splitlines()[0] if out.stdout else "Orthanc"

    @contextmanager
    def running(self, label: str, processes: int = 1) -> Iterator[tuple[int, int]]:
        folder = self.work / f"orthanc-{label}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        port, http = free_port(), free_port()
        config = {
            "Name": "bench",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"),
            "DicomAet": ORTHANC_AE,
            "DicomPort": port,
            "HttpPort": http,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
            "DicomCheckCalledAet": False,
            "StorageCompression": False,
            "DicomThreadsCount": 4,
            "DicomAlwaysAllowFind": True,  # Orthanc >= 1.9 refuses C-FIND from unknown modalities otherwise
        }
        (folder / "orthanc.json").write_text(json.dumps(config))
        log = (folder / "orthanc.log").open("w")
        proc = subprocess.Popen(
            ["Orthanc", str(folder / "orthanc.json")], env=NODELAY_ENV, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_for_port(port, proc)
            yield port, proc.pid
        finally:
            stop(proc)
            log.close()
            discard(folder / "storage")

    def index_studies(self, port: int, n: int) -> None:
        """n small instances, one study each, n/5 patients, sent over C-STORE on 4 associations."""
        folder = self.work / "small"
        if not folder.exists():
            write_small_studies(folder, n)
        storescu(port, ORTHANC_AE, split(folder, 4))


def write_small_studies(folder: Path, n: int) -> None:
    import datetime as dt

    from tests.imaging import dicomgen

    folder.mkdir(parents=True)
    for i in range(n):
        (ds,) = dicomgen.make_ct_series(
            1,
            8,
            8,
            patient_id=f"P{i // 5:06d}",
            patient_name=f"NAME{i // 5:06d}^GIVEN",
            study_uid=f"2.25.{900000 + i}",
            accession_number=f"A{i:07d}",
            study_date=dt.date(2020, 1, 1) + dt.timedelta(days=i % 1500),
        )
        (folder / f"{i:06d}.dcm").write_bytes(dicomgen.part10_bytes(ds))


# --- C-FIND latency ----------------------------------------------------------------------------


def find_latencies(port: int, called_ae: str, studies: int, rounds: int) -> list[float]:
    """Milliseconds per study-level C-FIND on one open association (TCP_NODELAY), mixed matching kinds."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    from imaging.dicom.handlers import set_no_delay

    def query(i: int) -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = ""
        ds.PatientName = ""
        ds.StudyDate = ""
        ds.PatientID = ""
        kind = i % 4
        if kind == 0:
            ds.PatientID = f"P{(i * 7919) % (studies // 5):06d}"
        elif kind == 1:
            ds.StudyInstanceUID = f"2.25.{900000 + (i * 104729) % studies}"
        elif kind == 2:
            ds.PatientName = f"NAME{(i * 31) % (studies // 5):06d}*"
        else:
            day = (i * 13) % 1400
            ds.StudyDate = f"{_date(day)}-{_date(day + 1)}"
        return ds

    from pynetdicom import evt

    ae = AE(ae_title=CALLING_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae, evt_handlers=[(evt.EVT_CONN_OPEN, set_no_delay)])
    if not assoc.is_established:
        raise RuntimeError("C-FIND association refused")
    times = []
    try:
        for i in range(rounds):
            start = time.perf_counter()
            statuses = [
                status.Status for status, _ in assoc.send_c_find(query(i), StudyRootQueryRetrieveInformationModelFind)
            ]
            times.append((time.perf_counter() - start) * 1000)
            if statuses[-1] != 0:
                raise RuntimeError(f"C-FIND failed: 0x{statuses[-1]:04X}")
            if len(statuses) < 2:
                raise RuntimeError(f"C-FIND {i} matched nothing: is the index loaded?")
    finally:
        assoc.release()
    return times


def _date(day: int) -> str:
    import datetime as dt

    return (dt.date(2020, 1, 1) + dt.timedelta(days=day)).strftime("%Y%m%d")


def percentile(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Row:
    server: str
    workload: str  # "ct", "small" (--small-studies), or "each" (--study-associations)
    associations: int
    processes: int
    instances: int
    size: int
    runs: list[tuple[float, float]]  # (wall seconds, server CPU seconds) of each repetition

    @property
    def seconds(self) -> float:
        return statistics.median(s for s, _ in self.runs)

    @property
    def rate(self) -> float:
        return self.instances / self.seconds

    def markdown(self) -> str:
        mb = self.size / self.seconds / 1e6
        cpu_ms = statistics.median(c for _, c in self.runs) / self.instances * 1000
        each = ", ".join(f"{self.instances / s:.0f}" for s, _ in self.runs)
        return (
            f"| {self.server} | {self.associations} | {self.processes} | {self.instances} | "
            f"{self.seconds:.1f} | **{self.rate:.0f}** ({each}) | {mb:.1f} | {cpu_ms:.1f} |"
        )


def measure_store(
    label: str, start: Callable, called_ae: str, folders: list[Path], processes: int, send: Callable = storescu
) -> tuple[float, float, float]:
    """(wall seconds, server CPU seconds, PostgreSQL CPU seconds) to store every folder (`send`:
    storescu, all at once, or storescu_each)."""
    if _trash is not None:
        _trash.empty_if_full()
    with start(label, processes) as (port, pid):
        # What earlier runs left for the kernel to write back (the floor's unsynced files, the
        # index's and the file system's metadata, a new database's pages) is written now, not
        # during this run: every run starts from a quiet disk.
        os.sync()
        cpu, database = cpu_seconds(pid), postgres_cpu_seconds()
        seconds = send(port, called_ae, folders)
        return seconds, cpu_seconds(pid) - cpu, postgres_cpu_seconds() - database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--studies", type=int, default=10000)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2, help="our processes for 4 associations")
    parser.add_argument("--find-rounds", type=int, default=200, help="0 skips the C-FIND part")
    parser.add_argument("--repeat", type=int, default=3, help="store runs per row, interleaved; the median is reported")
    parser.add_argument(
        "--small-studies", type=int, default=0, help="also store this many small studies on one association"
    )
    parser.add_argument("--per-study", type=int, default=1, help="instances in each small study (512x512)")
    parser.add_argument(
        "--study-associations",
        type=int,
        default=0,
        help="also store this many of the small studies each on an association of its own, one after another",
    )
    parser.add_argument(
        "--with-worker", action="store_true", help="run the Celery workers of `make run` beside our server"
    )
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "alliance.settings")
    os.environ.setdefault("DATABASE_URL", f"{PG}/postgres")
    import django

    django.setup()

    work = Path(tempfile.mkdtemp(prefix="bench-dimse-"))
    global _trash
    _trash = Trash(work)
    ours, orthanc = Ours(work, args.processes, with_worker=args.with_worker), Orthanc(work)
    bare, woken = BarePynetdicom(work), BarePynetdicom(work, ours=True)
    rows: dict[str, Row] = {}
    try:
        ct = work / "ct"
        size = generate_ct(ct, args.instances)
        parts = split(ct, 4)
        ours.prepare()
        plan: list[tuple[Any, str, int, list[Path]]] = [
            (ours, "one", 1, [ct]),
            (orthanc, "one", 1, [ct]),
            (ours, "four", args.processes, parts),
            (ours, "four1", 1, parts),
            (orthanc, "four", 1, parts),
            (bare, "one", 1, [ct]),
            (woken, "one", 1, [ct]),
            (woken, "four", args.processes, parts),
        ]
        workloads = {"ct": (args.instances, size)}
        if args.small_studies:
            small = work / "small"
            small_size = generate_small_studies(small, args.small_studies, args.per_study)
            workloads["small"] = (args.small_studies * args.per_study, small_size)
            small_parts = split_studies(small, 4)
            plan += [
                (ours, "small", 1, [small]),
                (orthanc, "small", 1, [small]),
                (ours, "small4", args.processes, small_parts),
                (orthanc, "small4", 1, small_parts),
            ]
            if args.study_associations:
                each = split_each_study(small, args.study_associations)
                workloads["each"] = (
                    len(each) * args.per_study,
                    sum(f.stat().st_size for study in each for f in study.iterdir()),
                )
                plan += [(ours, "each", 1, each), (orthanc, "each", 1, each)]
        creation = file_creation_us(work)
        print(f"creating a file in {work}: {creation:.0f} us", flush=True)
        for _ in range(args.repeat):
            for server, label, processes, folders in plan:
                called = {ours: OUR_AE, orthanc: ORTHANC_AE}.get(server, "BARE")
                workload = {"small": "small", "small4": "small", "each": "each"}.get(label, "ct")
                instances, data_size = workloads[workload]
                send = storescu_each if label == "each" else storescu
                seconds, cpu, _ = measure_store(label, server.running, called, folders, processes, send)
                key = f"{server.name}/{label}"
                row = rows.setdefault(
                    key, Row(server.name, workload, len(folders), processes, instances, data_size, [])
                )
                row.runs.append((seconds, cpu))
                print(f"{key}: {instances / seconds:.0f} instances/s", flush=True)
                if server is ours and ours.count() != instances:
                    raise RuntimeError(f"our index holds {ours.count()} instances, not {instances}")
        finds: dict[str, list[float]] = {}
        if args.find_rounds:
            measure_finds(ours, orthanc, args, finds)
        report(list(rows.values()), finds, args, orthanc.version(), ours.notes, creation)
    finally:
        ours.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def measure_finds(ours: Ours, orthanc: Orthanc, args: argparse.Namespace, finds: dict[str, list[float]]) -> None:
    with ours.running("find", 1) as (port, _):
        ours.index_studies(args.studies)
        finds["ours"] = find_latencies(port, OUR_AE, args.studies, args.find_rounds)
    with orthanc.running("find") as (port, _):
        orthanc.index_studies(port, args.studies)
        finds["Orthanc"] = find_latencies(port, ORTHANC_AE, args.studies, args.find_rounds)


def against_orthanc(row: Row, orthanc: Row) -> str:
    """The ratio of the medians, and of each round's two runs (the servers ran one after the
    other in it): the machine's speed drifts between rounds, which moves both runs of a round."""
    rounds = [o_seconds / seconds for (seconds, _), (o_seconds, _) in zip(row.runs, orthanc.runs, strict=False)]
    each = ", ".join(f"{r:.2f}" for r in rounds)
    return (
        f"- {row.server} on {row.associations} association(s), {row.processes} process(es): "
        f"{row.rate / orthanc.rate:.2f}x Orthanc (round by round {each}; median {statistics.median(rounds):.2f}x)"
    )


def print_workload(title: str, rows: list[Row], columns: list[str]) -> None:
    """A workload's table, then ours against Orthanc's run with as many associations."""
    print(title)
    print()
    print("| " + " | ".join([*columns, "server CPU ms/instance"]) + " |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row.markdown())
    orthanc = {row.associations: row for row in rows if row.server == Orthanc.name}
    print()
    for row in rows:
        if row.server != Orthanc.name and row.associations in orthanc:
            print(against_orthanc(row, orthanc[row.associations]))
    print()


def report(
    rows: list[Row],
    finds: dict[str, list[float]],
    args: argparse.Namespace,
    orthanc_version: str,
    notes: list[str] | None = None,
    creation: float | None = None,
) -> None:
    notes = notes or []
    print()
    print(f"C-STORE of one {args.instances}-instance CT (512x512, 16 bit) with dcmtk storescu, TCP_NODELAY=1;")
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    created = f" creating a file in the work folder took {creation:.0f} us;" if creation is not None else ""
    print(f"{orthanc_version}; {os.cpu_count()} cores, load average {load} at the end;{created}")
    print("every run starts empty;")
    print(f"median of {args.repeat} interleaved runs (each run's rate in brackets).")
    print()
    columns = ["server", "associations", "server processes", "instances", "seconds", "instances/s", "MB/s"]
    print("| " + " | ".join([*columns, "server CPU ms/instance"]) + " |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        if row.workload == "ct":
            print(row.markdown())
    print()
    orthanc = {row.associations: row for row in rows if row.server == Orthanc.name and row.workload == "ct"}
    for row in rows:
        if row.server != Orthanc.name and row.associations in orthanc and row.workload == "ct":
            print(against_orthanc(row, orthanc[row.associations]))
    print()
    titles = {
        "small": lambda _: (
            f"C-STORE of {args.small_studies} studies of {args.per_study} instance(s) each (512x512, 16 bit, "
            "each study its own patient) with storescu on one association and on 4 (each study on one):"
        ),
        "each": lambda these: (
            f"C-STORE of {these[0].associations} of those studies, each on an association of its own, one after "
            "the other (storescu started for each study, as a gateway sends a study when it is complete):"
        ),
    }
    for workload, title in titles.items():
        these = [row for row in rows if row.workload == workload]
        if these:
            print_workload(title(these), these, columns)
    if notes:
        print("Rendering beside the store (the Celery workers of `make run`):")
        print()
        for note in notes:
            print(f"- {note}")
        print()
    print(f"Study-level C-FIND with {args.studies} studies indexed, {args.find_rounds} queries on one association")
    print("(PatientID, StudyInstanceUID, PatientName prefix wildcard, StudyDate range):")
    print()
    print("| server | p50 ms | p95 ms |")
    print("|---|---|---|")
    for name, times in finds.items():
        print(f"| {name} | {percentile(times, 50):.1f} | {percentile(times, 95):.1f} |")


if __name__ == "__main__":
    main()
