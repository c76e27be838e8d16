"""DICOMweb benchmark: this project (gunicorn + PostgreSQL) beside Orthanc with its DICOMweb plugin.

One run starts both servers on loopback ports with temporary storage, loads the same data
into each, and measures with the same client code:

- QIDO-RS latency (p50, p95) of a patient-ID query and of a 30-day StudyDate range query
  over --studies studies (one small instance each), each query asked of both servers in
  turn (the first alternating), so that a drift of the machine's speed moves both;
- WADO-RS retrieval of a whole --ct-instances CT study (512x512, 16 bit), in MB/s;
- STOW-RS ingest of such a study, in instances per second: --stow-rounds rounds, each with a
  study of its own, stored in both servers in turn (the first alternating); the median and
  each round's rate.

Loading: Orthanc gets every query-set instance through its REST API (POST /instances).
Ours gets the query set as index rows written in bulk (Patient, Study, Series, Instance),
because storing 10,000 files one by one through STOW would take longer than the run
should; QIDO reads only those rows. The CT studies go to both through STOW-RS.

  .venv/bin/python bench/dicomweb_bench.py                    # 10,000 studies, 500-slice CT
  .venv/bin/python bench/dicomweb_bench.py --studies 1000 --ct-instances 100   # quick look

Needs PostgreSQL on 127.0.0.1:5432 (trust auth) and the Debian packages orthanc and
orthanc-dicomweb. Prints a JSON summary; --results FILE rewrites that file's DICOMweb
section with the figures and the command that produced them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.processes import free_port  # noqa: E402

PG = "postgres://postgres@127.0.0.1:5432"
DICOM_JSON = "application/dicom+json"
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'
FIRST_DAY = dt.date(2023, 1, 1)
DAYS = 3 * 365


# --- data ---------------------------------------------------------------------------------


def instance_bytes(
    *,
    patient: tuple[str, str],
    study_uid: str,
    study_date: dt.date,
    series_uid: str,
    number: int,
    pixels: bytes,
    size: int,
) -> bytes:
    """One CT image as a Part 10 file (Explicit VR Little Endian)."""
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
    ds.PatientID, ds.PatientName = patient
    ds.PatientBirthDate, ds.PatientSex = "19600101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyDate = ds.SeriesDate = study_date.strftime("%Y%m%d")
    ds.StudyTime, ds.AccessionNumber, ds.StudyID = "101500", f"A{abs(hash(study_uid)) % 10**8:08d}", "1"
    ds.StudyDescription, ds.SeriesDescription, ds.Modality = "BENCH CT", "AXIAL", "CT"
    ds.ReferringPhysicianName = "Ref^Doctor"
    ds.SeriesNumber, ds.InstanceNumber = 1, number
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, -number], [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
    ds.PixelData = pixels
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def query_set(studies: int, patients: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for n in range(studies):
        p = n % patients
        rows.append(
            {
                "patient": (f"PAT{p:06d}", f"BENCH^PATIENT^{p:05d}"),
                "study_uid": generate_uid(),
                "series_uid": generate_uid(),
                "date": FIRST_DAY + dt.timedelta(days=rng.randrange(DAYS)),
            }
        )
    return rows


def ct_study(count: int, size: int = 512) -> list[bytes]:
    study_uid, series_uid = generate_uid(), generate_uid()
    rng = np.random.default_rng(7)
    base = (rng.integers(0, 200, (size, size)) + 900).astype(np.uint16)
    files = []
    for i in range(1, count + 1):
        base[i % size, :] = 2000  # a line that moves: no two slices are alike
        files.append(
            instance_bytes(
                patient=("CTBENCH", "BENCH^CT"),
                study_uid=study_uid,
                study_date=dt.datetime.now(dt.UTC).date(),
                series_uid=series_uid,
                number=i,
                pixels=base.tobytes(),
                size=size,
            )
        )
    return files


# --- servers ------------------------------------------------------------------------------


def wait_http(url: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=10)
            return
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


class Ours:
    """The project's web app under gunicorn on a fresh PostgreSQL database."""

    def __init__(self, work: Path, workers: int) -> None:
        self.db = f"bench_dicomweb_{os.getpid()}"
        self.port = free_port()
        self.site = f"http://127.0.0.1:{self.port}"
        self.base = self.site + "/dicomweb"
        self.workers = workers
        self.env = {
            **os.environ,
            "DATABASE_URL": f"{PG}/{self.db}",
            "DATA_DIR": str(work / "ours"),
            "SITE_URL": self.site,
            "LOG_LEVEL": "WARNING",
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.token = ""

    def provision(self, rows: list[dict[str, Any]]) -> None:
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", self.db], check=True)
        script = ROOT / "bench" / "dicomweb_load.py"
        done = subprocess.run(
            [sys.executable, str(script)],
            input=json.dumps([{**r, "date": r["date"].isoformat()} for r in rows]).encode(),
            env=self.env,
            cwd=ROOT,
            check=True,
            stdout=subprocess.PIPE,
        )
        self.token = done.stdout.decode().strip().splitlines()[-1]

    def start(self, log: Path) -> None:
        command = [sys.executable, "-m", "gunicorn", "alliance.wsgi", "-b", f"127.0.0.1:{self.port}"]
        command += ["-w", str(self.workers), "--threads", "4", "--timeout", "300"]  # as run_embedded starts it
        with log.open("wb") as out:
            self.process = subprocess.Popen(command, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        wait_http(self.base + "/studies")

    def session(self) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"Token {self.token}"
        return session

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", self.db], check=False)


def orthanc_plugin() -> str:
    listing = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=True).stdout
    return next(line for line in listing.splitlines() if line.endswith(".so") and "plugins" in line)


class Orthanc:
    """Orthanc with the DICOMweb plugin, on loopback ports, storage in the work folder."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.site = f"http://127.0.0.1:{self.port}"
        self.base = self.site + "/dicom-web"
        self.work = work / "orthanc"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, log: Path) -> None:
        self.work.mkdir(parents=True)
        config = {
            "Name": "bench",
            "StorageDirectory": str(self.work / "storage"),
            "IndexDirectory": str(self.work / "index"),
            "HttpPort": self.port,
            "DicomPort": free_port(),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpCompressionEnabled": False,
            "Plugins": [orthanc_plugin()],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        path = self.work / "orthanc.json"
        path.write_text(json.dumps(config))
        with log.open("wb") as out:
            self.process = subprocess.Popen(["Orthanc", str(path)], stdout=out, stderr=subprocess.STDOUT)
        wait_http(self.site + "/system")

    def load(self, files: Iterator[bytes], threads: int = 4) -> int:
        session = requests.Session()

        def post(data: bytes) -> None:
            # Orthanc now and then closes a kept-alive connection as a request goes out on it,
            # or answers 500, under four loading threads (three loads of five on one machine):
            # storing the same instance again is harmless, so the load tries again rather than
            # failing the whole run.
            for attempt in range(5):
                try:
                    session.post(self.site + "/instances", data=data, timeout=60).raise_for_status()
                    return
                except (requests.ConnectionError, requests.HTTPError):
                    if attempt == 4:
                        raise
                    time.sleep(0.1 * (attempt + 1))

        count = 0
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(post, files):
                count += 1
        return count

    def session(self) -> requests.Session:
        return requests.Session()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)


# --- measurements ---------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def time_queries(servers: dict[str, Any], queries: list[dict[str, str]], warmup: int) -> dict[str, dict[str, Any]]:
    """Each query asked of every server in turn (which goes first alternates), so that both
    see the machine as it is at that moment: its speed drifts by a third over a run here, and
    a p95 of one server measured a minute after the other's compared the minutes as much as
    the servers."""
    sessions = {name: server.session() for name, server in servers.items()}

    def ask(name: str, params: dict[str, str]) -> tuple[float, bytes]:
        start = time.perf_counter()
        response = sessions[name].get(
            servers[name].base + "/studies", params=params, headers={"Accept": DICOM_JSON}, timeout=60
        )
        body = response.content
        elapsed = (time.perf_counter() - start) * 1000
        response.raise_for_status()
        return elapsed, body

    names = list(servers)
    for params in queries[:warmup]:
        for name in names:
            ask(name, params)
    timings: dict[str, list[float]] = {name: [] for name in names}
    counts: dict[str, list[int]] = {name: [] for name in names}
    for n, params in enumerate(queries):
        for name in names if n % 2 == 0 else names[::-1]:
            elapsed, body = ask(name, params)
            timings[name].append(elapsed)
            counts[name].append(len(json.loads(body)) if body else 0)
    return {
        name: {
            "p50_ms": round(percentile(timings[name], 0.5), 2),
            "p95_ms": round(percentile(timings[name], 0.95), 2),
            "mean_results": round(statistics.mean(counts[name]), 1),
            "queries": len(queries),
        }
        for name in names
    }


def stow(session: requests.Session, url: str, files: list[bytes], batch: int) -> dict[str, Any]:
    boundary = uuid.uuid4().hex
    start = time.perf_counter()
    for first in range(0, len(files), batch):
        body = b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + f + b"\r\n"
            for f in files[first : first + batch]
        )
        body += f"--{boundary}--\r\n".encode()
        content_type = f"{MULTIPART_DICOM}; boundary={boundary}"
        response = session.post(
            url, data=body, headers={"Content-Type": content_type, "Accept": DICOM_JSON}, timeout=600
        )
        if response.status_code != 200:
            raise RuntimeError(f"STOW to {url} answered {response.status_code}: {response.text[:300]}")
    seconds = time.perf_counter() - start
    return {"instances": len(files), "seconds": round(seconds, 2), "instances_per_s": round(len(files) / seconds, 1)}


def wado(session: requests.Session, url: str, runs: int) -> dict[str, Any]:
    rates, size = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        size = 0
        with session.get(url, headers={"Accept": MULTIPART_DICOM}, stream=True, timeout=600) as response:
            response.raise_for_status()
            for chunk in response.iter_content(1 << 20):
                size += len(chunk)
        rates.append(size / (time.perf_counter() - start) / 1e6)
    return {
        "bytes": size,
        "runs": runs,
        "best_mb_s": round(max(rates), 1),
        "median_mb_s": round(statistics.median(rates), 1),
    }


def queries_for(rows: list[dict[str, Any]], count: int, seed: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    rng = random.Random(seed)
    patients = sorted({r["patient"][0] for r in rows})
    by_patient = [{"PatientID": rng.choice(patients)} for _ in range(count)]
    by_dates = []
    for _ in range(count):
        start = FIRST_DAY + dt.timedelta(days=rng.randrange(DAYS - 30))
        end = start + dt.timedelta(days=29)
        by_dates.append({"StudyDate": f"{start:%Y%m%d}-{end:%Y%m%d}"})
    return by_patient, by_dates


# --- the run --------------------------------------------------------------------------------


def measure_queries(servers: dict[str, Any], rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    by_patient, by_dates = queries_for(rows, args.queries, args.seed)
    by_kind = {
        "qido_patient_id": time_queries(servers, by_patient, args.warmup),
        "qido_30_day_range": time_queries(servers, by_dates, args.warmup),
    }
    return {name: {kind: result[name] for kind, result in by_kind.items()} for name in servers}


def measure_stow(servers: dict[str, Any], studies: list[list[bytes]], batch: int) -> dict[str, Any]:
    """STOW-RS of each study (its own UIDs) to both servers in turn, the first alternating, so
    that a drift of the machine's speed moves both: the median rate, and each round's."""
    rates: dict[str, list[float]] = {name: [] for name in servers}
    names = list(servers)
    for n, study in enumerate(studies):
        for name in names if n % 2 == 0 else names[::-1]:
            server = servers[name]
            rates[name].append(stow(server.session(), server.base + "/studies", study, batch)["instances_per_s"])
    return {
        name: {
            "stow": {
                "instances": len(studies[0]),
                "rounds": rounds,
                "instances_per_s": round(statistics.median(rounds), 1),
            }
        }
        for name, rounds in rates.items()
    }


def measure(server: Any, ct: list[bytes], args: argparse.Namespace) -> dict[str, Any]:
    study_uid = _study_uid(ct[0])
    return {"wado_study": wado(server.session(), f"{server.base}/studies/{study_uid}", args.wado_runs)}


def _study_uid(data: bytes) -> str:
    from pydicom import dcmread

    return str(dcmread(io.BytesIO(data), stop_before_pixels=True).StudyInstanceUID)


def timed(label: str, action: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    value = action()
    print(f"{label}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return value


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="dicomweb-bench-"))
    ours, orthanc = Ours(work, args.workers), Orthanc(work)
    try:
        rows = query_set(args.studies, args.patients, args.seed)
        tiny = (np.arange(64, dtype=np.uint16) + 1000).tobytes()
        studies = timed(
            "generate CT studies", lambda: [ct_study(args.ct_instances) for _ in range(max(1, args.stow_rounds))]
        )
        ct = studies[0]
        timed("load our index rows", lambda: ours.provision(rows))
        ours.start(work / "gunicorn.log")
        orthanc.start(work / "orthanc.log")
        files = (
            instance_bytes(
                patient=r["patient"],
                study_uid=r["study_uid"],
                study_date=r["date"],
                series_uid=r["series_uid"],
                number=1,
                pixels=tiny,
                size=8,
            )
            for r in rows
        )
        timed("load Orthanc through its REST API", lambda: orthanc.load(files))
        queries = timed(
            "QIDO-RS, both servers in turn", lambda: measure_queries({"ours": ours, "orthanc": orthanc}, rows, args)
        )
        stowed = timed(
            "STOW-RS, both servers in turn",
            lambda: measure_stow({"ours": ours, "orthanc": orthanc}, studies, args.stow_batch),
        )
        results = {
            "ours": {**queries["ours"], **stowed["ours"], **timed("WADO ours", lambda: measure(ours, ct, args))},
            "orthanc": {
                **queries["orthanc"],
                **stowed["orthanc"],
                **timed("WADO Orthanc", lambda: measure(orthanc, ct, args)),
            },
        }
    finally:
        ours.stop()
        orthanc.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "studies": args.studies,
        "patients": args.patients,
        "ct_instances": args.ct_instances,
        "ct_bytes": sum(len(f) for f in ct),
        "gunicorn_workers": args.workers,
        "load_average": [round(x, 1) for x in os.getloadavg()],
        **results,
    }


def markdown(summary: dict[str, Any], command: str) -> str:
    ours, orthanc = summary["ours"], summary["orthanc"]

    def row(label: str, key: str, field: str, unit: str) -> str:
        return f"| {label} | {ours[key][field]} {unit} | {orthanc[key][field]} {unit} |"

    lines = [
        "## DICOMweb",
        "",
        f"Run {summary['when']} on {summary['machine']}; {summary['studies']:,} studies of "
        f"{summary['patients']:,} patients indexed in each server; a {summary['ct_instances']}-instance CT study "
        f"({summary['ct_bytes'] / 1e6:.0f} MB, 512x512x16 bit). Ours: gunicorn ({summary['gunicorn_workers']} workers "
        "of 4 threads, as `make run` starts it) on PostgreSQL, every query filtered by the access policy "
        "and audited. Orthanc 1.10 with its "
        "DICOMweb plugin, SQLite index, HTTP compression off. Load average at the end of the run "
        f"{' / '.join(map(str, summary['load_average']))} (1, 5, 15 min): other work shared the two cores.",
        "",
        f"    {command}",
        "",
        "| measure | ours | Orthanc |",
        "|---|---|---|",
        row("QIDO-RS PatientID, p50", "qido_patient_id", "p50_ms", "ms"),
        row("QIDO-RS PatientID, p95", "qido_patient_id", "p95_ms", "ms"),
        row("QIDO-RS 30-day StudyDate range, p50", "qido_30_day_range", "p50_ms", "ms"),
        row("QIDO-RS 30-day StudyDate range, p95", "qido_30_day_range", "p95_ms", "ms"),
        row("studies per 30-day answer (mean)", "qido_30_day_range", "mean_results", ""),
        row("WADO-RS whole study (best of runs)", "wado_study", "best_mb_s", "MB/s"),
        row("WADO-RS whole study (median)", "wado_study", "median_mb_s", "MB/s"),
        row("STOW-RS ingest (median of rounds)", "stow", "instances_per_s", "instances/s"),
        f"| STOW-RS ingest, each round | {_rounds(ours)} | {_rounds(orthanc)} |",
        "",
        "QIDO-RS: each query was asked of both servers in turn, the first alternating. "
        "Loading: Orthanc received every query-set instance through POST /instances; ours got the same "
        "studies as index rows written in bulk (bench/dicomweb_load.py), since QIDO reads only the index. "
        "STOW-RS: a CT study of its own for each round, stored in both servers in turn (the first "
        "alternating); the first of them was then retrieved whole (WADO-RS).",
        "",
    ]
    return "\n".join(lines)


def _rounds(result: dict[str, Any]) -> str:
    return ", ".join(f"{rate:.0f}" for rate in result["stow"]["rounds"])


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmark results\n\n"
    start = text.find("## DICOMweb")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--patients", type=int, default=2_000)
    parser.add_argument("--ct-instances", type=int, default=500)
    parser.add_argument("--queries", type=int, default=200, help="timed queries of each kind")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--stow-batch", type=int, default=50, help="instances per STOW-RS request")
    parser.add_argument("--stow-rounds", type=int, default=3, help="STOW-RS rounds, each with a study of its own")
    parser.add_argument("--wado-runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for our server")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--results", type=Path, help="rewrite the DICOMweb section of this file")
    args = parser.parse_args()
    summary = run(args)
    print(json.dumps(summary, indent=1))
    if args.results:
        command = "python bench/dicomweb_bench.py " + " ".join(sys.argv[1:])
        write_section(args.results, markdown(summary, command.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
