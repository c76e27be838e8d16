"""Modality worklist benchmark: MWL C-FIND latency of our dicom_server with many scheduled steps.

    .venv/bin/python bench/mwl_bench.py [--steps 10000] [--rounds 400] [--port 0] [--accelerate 1]
                                        [--client pynetdicom|lean] [--checkout PATH]

Makes a fresh PostgreSQL database (migrated; dropped at the end), one institution with
--stations registered modalities, and --steps scheduled procedure steps over 60 days around
today (a tenth for no particular station, a fifth of the past ones completed), inserted in
bulk. Starts `manage.py dicom_server` and sends --rounds MWL C-FINDs on one association
(TCP_NODELAY), as modalities ask: today's list of one station; today's of one modality (no
station named); one station's and modality's next seven days; one Patient ID; one accession
number; a patient-name prefix. Each C-FIND writes its audit
rows, as in production. Prints p50 and p95 per kind and overall, as a Markdown table for
bench/RESULTS.md, with the server's CPU time and the client's (this process) per C-FIND.
Needs PostgreSQL on 127.0.0.1:5432 (trust); binds loopback only.

--client: `pynetdicom` (default) asks through pynetdicom's SCU, which decodes every
response's command set and identifier with pydicom: on two cores it spends as much CPU per
match as the server, and competes with it. `lean` speaks the upper layer itself on a plain
socket (as a modality's C or C++ toolkit would cost: next to nothing), its queries encoded
before the clock starts, each response's status read from its command set and the
identifier's bytes taken as they come. --checkout runs the server (and the seeding) from
another checkout of the project, e.g. a git worktree of an earlier commit, so that two
versions can be measured in turn with the same client.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.processes import free_port, wait_for_port  # noqa: E402

PG = "postgres://postgres@127.0.0.1:5432"
OUR_AE = "MWLBENCH"
MODALITIES = ["CT", "CT", "DX", "DX", "DX", "US", "MR", "MG"]

SEED = """
import datetime as dt
from django.utils import timezone
from alliance import audit, services
from imaging.models import Patient, ScheduledStep
from tests import factories
n, stations = {steps}, {stations}
inst = factories.make_institution(ae_title='{ae}')
for s in range(stations):
    services.device_create(institution=inst, ae_title=f'ST{{s:02d}}', host='127.0.0.1', port=104, by=audit.SYSTEM)
services.device_create(institution=inst, ae_title='BENCH', host='127.0.0.1', port=104, by=audit.SYSTEM)
patients = Patient.objects.bulk_create(
    Patient(issuer=inst, patient_id=f'P{{i:06d}}', name=f'NAME{{i:06d}}^GIVEN') for i in range(n // 2))
start = timezone.localtime().replace(hour=7, minute=0, second=0, microsecond=0) - dt.timedelta(days=30)
modalities = {modalities!r}
def step(i):
    when = start + dt.timedelta(days=i % 60, minutes=(i // 60) * 7 % 660)  # 7:00 to 18:00
    past = when < timezone.now()
    return ScheduledStep(
        institution=inst, patient=patients[i % len(patients)], patient_name=patients[i % len(patients)].name,
        sex='F' if i % 2 else 'M', accession_number=f'A{{i:08d}}', requested_procedure_id=f'A{{i:08d}}',
        procedure_description='Exam', study_uid=f'2.25.{{700000000 + i}}',
        modality=modalities[(i // 61) % len(modalities)],  # day, station and modality vary independently
        station_ae='' if (i // 60) % 10 == 0 else f'ST{{(i // 60) % stations:02d}}', scheduled_at=when,
        status='completed' if past and (i // 60) % 5 == 1 else 'scheduled', source='api')
ScheduledStep.objects.bulk_create((step(i) for i in range(n)), batch_size=2000)
from django.db import connection
with connection.cursor() as cursor:  # statistics, as autovacuum keeps them on a live table
    cursor.execute("ANALYZE")
"""


def percentile(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def queries(steps: int, stations: int) -> dict[str, Callable[[int], object]]:
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    from pydicom.dataset import Dataset

    today = datetime.now(ZoneInfo(os.environ.get("TIME_ZONE", "Asia/Shanghai"))).date()  # the server's day

    def base(**top: str) -> tuple[Dataset, Dataset]:
        ds = Dataset()
        for keyword in ("PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID", "RequestedProcedureID"):
            setattr(ds, keyword, top.get(keyword, ""))
        item = Dataset()
        for keyword in (
            "ScheduledStationAETitle",
            "ScheduledProcedureStepStartDate",
            "ScheduledProcedureStepStartTime",
            "Modality",
            "ScheduledProcedureStepID",
            "ScheduledProcedureStepDescription",
        ):
            setattr(item, keyword, "")
        ds.ScheduledProcedureStepSequence = [item]
        return ds, item

    def station_today(i: int) -> Dataset:
        ds, item = base()
        item.ScheduledStationAETitle = f"ST{i % stations:02d}"
        item.ScheduledProcedureStepStartDate = today.strftime("%Y%m%d")
        return ds

    def modality_today(i: int) -> Dataset:
        ds, item = base()
        item.Modality = MODALITIES[i % len(MODALITIES)]
        item.ScheduledProcedureStepStartDate = today.strftime("%Y%m%d")
        return ds

    def modality_next_week(i: int) -> Dataset:
        ds, item = base()
        item.Modality = MODALITIES[i % len(MODALITIES)]
        item.ScheduledStationAETitle = f"ST{i % stations:02d}"
        item.ScheduledProcedureStepStartDate = f"{today + timedelta(days=1):%Y%m%d}-{today + timedelta(days=7):%Y%m%d}"
        return ds

    def patient_id(i: int) -> Dataset:
        return base(PatientID=f"P{(i * 7919) % (steps // 2):06d}")[0]

    def accession(i: int) -> Dataset:
        return base(AccessionNumber=f"A{(i * 104729) % steps:08d}")[0]

    def name_prefix(i: int) -> Dataset:
        return base(PatientName=f"NAME{(i * 31) % (steps // 2):06d}*")[0]

    return {
        "one station, today": station_today,
        "one modality, today (no station)": modality_today,
        "one station and modality, next 7 days": modality_next_week,
        "Patient ID": patient_id,
        "accession number": accession,
        "patient name prefix": name_prefix,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Result = tuple[list[float], int, float, float]  # ms per C-FIND, matches, server and client CPU ms per C-FIND


Client = Callable[[object], tuple[int, int]]  # a query -> (matches, final status)


def run_finds(
    port: int, pid: int, kinds: dict[str, Callable[[int], object]], rounds: int, client: str
) -> dict[str, Result]:
    """Each kind's C-FINDs in a block of their own (so the server's and the client's CPU time
    per C-FIND can be told apart), after ten warm-up queries; all on one association."""
    opened = pynetdicom_client(port) if client == "pynetdicom" else LeanClient(port)
    results: dict[str, Result] = {}

    def one(name: str, i: int) -> tuple[float, int]:
        query = opened.prepare(kinds[name](i))
        start = time.perf_counter()
        matches, status = opened.find(query)
        elapsed = (time.perf_counter() - start) * 1000
        if status != 0:
            raise RuntimeError(f"MWL C-FIND {name} failed: 0x{status:04X}")
        return elapsed, matches

    try:
        for i in range(10):
            one(list(kinds)[i % len(kinds)], i)
        per_kind = max(1, rounds // len(kinds))
        for name in kinds:
            cpu, mine = cpu_seconds(pid), sum(os.times()[:2])
            runs = [one(name, i) for i in range(per_kind)]
            cpu_ms = (cpu_seconds(pid) - cpu) * 1000 / per_kind
            client_ms = (sum(os.times()[:2]) - mine) * 1000 / per_kind
            results[name] = ([t for t, _ in runs], sum(m for _, m in runs), cpu_ms, client_ms)
    finally:
        opened.release()
    return results


class pynetdicom_client:  # noqa: N801 - named as --client names it
    """pynetdicom's SCU, on one association with TCP_NODELAY."""

    def __init__(self, port: int) -> None:
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import ModalityWorklistInformationFind

        from imaging.dicom.handlers import set_no_delay

        self.sop_class = ModalityWorklistInformationFind
        ae = AE(ae_title="BENCH")
        ae.add_requested_context(ModalityWorklistInformationFind)
        self.assoc = ae.associate("127.0.0.1", port, ae_title=OUR_AE, evt_handlers=[(evt.EVT_CONN_OPEN, set_no_delay)])
        if not self.assoc.is_established:
            raise RuntimeError("MWL association refused")

    def prepare(self, query: object) -> object:
        return query

    def find(self, query: object) -> tuple[int, int]:
        answers = [status.Status for status, _ in self.assoc.send_c_find(query, self.sop_class)]
        return len(answers) - 1, answers[-1]

    def release(self) -> None:
        self.assoc.release()


WORKLIST_FIND = b"1.2.840.10008.5.1.4.31"
IMPLICIT_LE = b"1.2.840.10008.1.2"


class LeanClient:
    """The upper layer spoken on a plain socket (PS3.8 9.3): one presentation context (the
    worklist, Implicit VR Little Endian); each C-FIND-RQ (PS3.7 9.3.2.1) sent as one P-DATA-TF
    of two PDVs; responses read until the final status."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.message_id = 0
        self.sock.sendall(_associate_rq())
        pdu_type, body = self._pdu()
        if pdu_type != 0x02 or not _context_accepted(body):
            raise RuntimeError(f"MWL association refused (PDU type 0x{pdu_type:02X})")

    def prepare(self, query: object) -> bytes:
        from pynetdicom.dsutils import encode

        self.message_id = self.message_id % 65535 + 1
        identifier = encode(query, True, True)  # type: ignore[arg-type]
        command = _command(
            (0x0002, _even(WORKLIST_FIND, b"\0")),
            (0x0100, struct.pack("<H", 0x0020)),
            (0x0110, struct.pack("<H", self.message_id)),
            (0x0700, struct.pack("<H", 0)),
            (0x0800, struct.pack("<H", 0x0001)),
        )
        pdvs = _pdv(command, 0x03) + _pdv(identifier, 0x02)  # type: ignore[arg-type]
        return struct.pack(">BBL", 0x04, 0, len(pdvs)) + pdvs

    def find(self, request: bytes) -> tuple[int, int]:
        self.sock.sendall(request)
        matches, command = 0, b""
        while True:
            pdu_type, body = self._pdu()
            if pdu_type != 0x04:
                raise RuntimeError(f"PDU type 0x{pdu_type:02X} during a C-FIND")
            for control, value in _pdvs(body):
                if not control & 0x01:
                    continue  # a pending response's identifier: its bytes are not looked into
                command += value
                if control & 0x02:
                    status, command = _status(command), b""
                    if status not in (0xFF00, 0xFF01):
                        return matches, status
                    matches += 1

    def release(self) -> None:
        self.sock.sendall(struct.pack(">BBLL", 0x05, 0, 4, 0))
        self._pdu()
        self.sock.close()

    def _pdu(self) -> tuple[int, bytes]:
        pdu_type, _, length = struct.unpack(">BBL", self._exactly(6))
        return pdu_type, self._exactly(length)

    def _exactly(self, n: int) -> bytes:
        parts, left = [], n
        while left:
            part = self.sock.recv(left)
            if not part:
                raise ConnectionError("the server closed the connection")
            parts.append(part)
            left -= len(part)
        return b"".join(parts)


def _even(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def _associate_rq() -> bytes:
    context = struct.pack(">BBBB", 1, 0, 0, 0) + _item(0x30, WORKLIST_FIND) + _item(0x40, IMPLICIT_LE)
    user = _item(0x51, struct.pack(">L", 1 << 20)) + _item(0x52, b"1.2.826.0.1.3680043.9.3811.0")
    body = (
        struct.pack(">HH", 1, 0)
        + OUR_AE.encode().ljust(16)
        + b"BENCH".ljust(16)
        + bytes(32)
        + _item(0x10, b"1.2.840.10008.3.1.1.1")
        + _item(0x20, context)
        + _item(0x50, user)
    )
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def _context_accepted(body: bytes) -> bool:
    pos = 68  # past the protocol version, the AE titles and the reserved bytes
    while pos + 4 <= len(body):
        item_type, _, length = struct.unpack_from(">BBH", body, pos)
        if item_type == 0x21:
            return body[pos + 6] == 0  # result: acceptance
        pos += 4 + length
    return False


def _command(*elements: tuple[int, bytes]) -> bytes:
    body = b"".join(struct.pack("<HHL", 0x0000, element, len(value)) + value for element, value in elements)
    return struct.pack("<HHLL", 0x0000, 0x0000, 4, len(body)) + body


def _pdv(value: bytes, control: int) -> bytes:
    return struct.pack(">LBB", len(value) + 2, 1, control) + value


def _pdvs(body: bytes) -> list[tuple[int, bytes]]:
    values, pos = [], 0
    while pos < len(body):
        (length,) = struct.unpack_from(">L", body, pos)
        values.append((body[pos + 5], body[pos + 6 : pos + 4 + length]))
        pos += 4 + length
    return values


def _status(command: bytes) -> int:
    """Status (0000,0900) of a command set (Implicit VR Little Endian, PS3.7 6.3.1)."""
    pos = 0
    while pos < len(command):
        _, element, length = struct.unpack_from("<HHL", command, pos)
        if element == 0x0900:
            return int(struct.unpack_from("<H", command, pos + 8)[0])
        pos += 8 + length
    return -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--stations", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--port", type=int, default=0, help="0: a free loopback port")
    parser.add_argument("--accelerate", default="1", choices=["0", "1"])
    parser.add_argument("--keep", metavar="DATABASE", help="seed this database once and keep it for the next runs")
    parser.add_argument("--client", default="pynetdicom", choices=["pynetdicom", "lean"])
    parser.add_argument("--checkout", type=Path, default=ROOT, help="run the server from this checkout")
    args = parser.parse_args()
    db = args.keep or f"bench_mwl_{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="mwl-bench-"))
    env = {**os.environ, "DATABASE_URL": f"{PG}/{db}", "DATA_DIR": str(work), "TCP_NODELAY": "1"}
    fresh = subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", db], check=not args.keep).returncode == 0
    proc = None
    manage = [sys.executable, "manage.py"]
    try:
        if fresh:
            subprocess.run([*manage, "migrate", "-v0"], cwd=args.checkout, env=env, check=True)
            seed = SEED.format(steps=args.steps, stations=args.stations, ae=OUR_AE, modalities=MODALITIES)
            subprocess.run(
                [*manage, "shell", "-c", seed], cwd=args.checkout, env=env, check=True, stdout=subprocess.DEVNULL
            )
        port = args.port or free_port()
        server_env = {**env, "DICOM_PORT": str(port), "DICOM_ACCELERATE": args.accelerate, "LOG_LEVEL": "WARNING"}
        log = (work / "server.log").open("w")
        proc = subprocess.Popen(
            [*manage, "dicom_server"], cwd=args.checkout, env=server_env, stdout=log, stderr=subprocess.STDOUT
        )
        wait_for_port(port, proc)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "alliance.settings")
        results = run_finds(port, proc.pid, queries(args.steps, args.stations), args.rounds, args.client)
        load = os.getloadavg()
        report(results, args, load)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        if not args.keep:
            subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", db], check=False)
        shutil.rmtree(work, ignore_errors=True)


def report(results: dict[str, Result], args: argparse.Namespace, load: tuple[float, ...]) -> None:
    every = [t for times, _, _, _ in results.values() for t in times]
    print(f"\n{args.steps} scheduled steps, {args.stations} stations, {len(every)} MWL C-FINDs on one association,")
    print(f"server from {args.checkout}, DICOM_ACCELERATE={args.accelerate}, client {args.client};")
    print(f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}\n")
    print("| query | C-FINDs | matches per C-FIND | p50 ms | p95 ms | server CPU ms per C-FIND | client CPU ms |")
    print("|---|---|---|---|---|---|---|")
    for name, (times, matched, cpu_ms, client_ms) in results.items():
        per = matched / len(times)
        p50, p95 = statistics.median(times), percentile(times, 95)
        print(f"| {name} | {len(times)} | {per:.1f} | {p50:.1f} | {p95:.1f} | {cpu_ms:.1f} | {client_ms:.1f} |")
    print(f"| **all** | {len(every)} | | {statistics.median(every):.1f} | {percentile(every, 95):.1f} | | |")


if __name__ == "__main__":
    main()
