"""Region capacity (issue 19 item 5): a million instances in the index, measured beside 10,000 studies.

    nice -n 19 .venv/bin/python bench/region_bench.py --compare --files 0.1   # 1,000,000 and 100,000 instances
    .venv/bin/python bench/region_bench.py --scale 0.1                          # the 10,000-study region alone
    .venv/bin/python bench/region_bench.py --instances 20000 --rounds 1         # a quick look

A region of 30 institutions (2 hospitals, each with a reading desk of 10 specialists, and 28
township clinics), `--instances` x `--scale` instances in studies of 10 (two CT series of
five), one patient for every five studies, received evenly at 100 studies a day region-wide
(a clinic's 30 days hold about 100 studies at every scale: a 1M region is one with a longer
history), and a consult for every tenth clinic study, sent to the clinic's hospital desk.
Consults of the last five days are open, with the desk's read grant (basis consult:<id>);
older ones were signed by one of the desk, whose own read grant ends 30 days after signing
(the desk's grant revoked at the claim), as consults.services leaves them.

Loading: each scale gets its own database (alliance_regionbench_<studies>; the environment's
REGIONBENCH_DB replaces alliance_regionbench), copied from a migrated template, people made
by the project's services, then patients, studies, series, consults and grants by
INSERT ... SELECT over generate_series inside PostgreSQL, and the
instance rows by COPY from this process, each with its file's real size and SHA-256 under
the storage key imaging.storage gives. `--files F` writes that fraction of the studies' files
(small real PS3.10 files, 8x8 CT, from pydicom templates) into the local DICOM store of the
scale's DATA_DIR; the index always holds every instance row.

Measured for each scale, in interleaved rounds (`--rounds`; the machine is shared):
- QIDO-RS /studies by PatientID and by a 30-day StudyDate range, as a clinic's clinician and
  as a hospital desk's specialist with grants (in-process, django.test.Client: the Django
  stack, the access filter and the audit event; no network);
- study-level C-FIND (PatientID; 30-day StudyDate range) from the clinic's registered device
  to `manage.py dicom_server` on one association;
- the consult worklist: the specialist's unclaimed and signed tabs and the clinician's
  reports tab (pages), the API's unclaimed list (in-process);
- C-STORE of a `--store-instances` CT (512x512, 16 bit) with dcmtk's storescu on 4 parallel
  associations into dicom_server (`--processes`), onto the loaded index;
- the index size: pg_total_relation_size of the imaging tables (patient, study, series,
  instance, the grants), their indexes and TOAST included, per million instances.

`--orthanc` adds Orthanc at the 10,000-study scale (its index loaded over its REST API, one
small instance per study with the same patients and dates; a million through that door is
out of reach here): the same C-STORE, C-FIND and QIDO-RS (DICOMweb plugin) queries, no
access filter. Databases and data folders are dropped at the end unless `--keep`; `--reuse`
measures an already loaded database of the same size instead of loading it again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PG = "postgres://postgres@127.0.0.1:5432"
# REGIONBENCH_DB names the databases (its children inherit it): a helper's own names.
DB_PREFIX = os.environ.get("REGIONBENCH_DB", "alliance_regionbench")
TEMPLATE = f"{DB_PREFIX}_tpl"
HOSPITALS = 2
CLINICS = 28
DESK = 10  # specialists per hospital desk
PER_SERIES = 5
SERIES_PER_STUDY = 2
PER_STUDY = PER_SERIES * SERIES_PER_STUDY
STUDIES_PER_PATIENT = 5
STUDIES_PER_DAY = 100  # region-wide
CONSULT_EVERY = 10  # clinic studies
OPEN_DAYS = 5
READER_DAYS = 30
CALLING_AE = "RB_CLINIC"  # the clinic's modality, registered as a device
CLINIC_AE = "RBC01"  # the measured clinic's AE title on our server
ORTHANC_AE = "ORTHANC"
CLINICIAN = "rb_clinician"
SPECIALIST = "rb_specialist"
IMAGING_TABLES = [
    "imaging_patient",
    "imaging_study",
    "imaging_series",
    "imaging_instance",
    "imaging_studygroupgrant",
    "imaging_studyusergrant",
]
NODELAY_ENV = {**os.environ, "TCP_NODELAY": "1"}
# Placeholders of the file templates: the same lengths as the generated values.
P_STUDY = "2.25.7999999999"
P_PATIENT = "RP9999999"
P_NAME = "Region^Patient9999999"
P_ACCESSION = "RA999999999"
P_DATE = "19000101"


def study_uid(g: int) -> str:
    return f"2.25.7{g:09d}"


def patient_id(p: int) -> str:
    return f"RP{p:07d}"


class Scale:
    """One region size: its counts, its database, its data folder."""

    def __init__(self, instances: int, work: Path) -> None:
        if instances < PER_STUDY * STUDIES_PER_PATIENT * (HOSPITALS + CLINICS):
            raise SystemExit(f"--instances must be at least {PER_STUDY * STUDIES_PER_PATIENT * (HOSPITALS + CLINICS)}")
        self.instances = instances - instances % PER_STUDY
        self.studies = self.instances // PER_STUDY
        self.patients = self.studies // STUDIES_PER_PATIENT
        self.days = max(60, self.studies // STUDIES_PER_DAY)
        self.db = f"{DB_PREFIX}_{self.studies}"
        self.data = work / f"data-{self.studies}"
        self.label = f"{self.studies:,} studies ({self.instances:,} instances)"
        self._today: dt.date | None = None

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **NODELAY_ENV,
            "DATABASE_URL": f"{PG}/{self.db}",
            "DATA_DIR": str(self.data),
            "LOG_LEVEL": "WARNING",
            **extra,
        }

    def today(self) -> dt.date:
        """The database server's current_date, from which the studies' dates were counted."""
        if self._today is None:
            self._today = dt.date.fromisoformat(psql("postgres", "SELECT current_date"))
        return self._today

    def date_windows(self, count: int, seed: int) -> list[tuple[dt.date, dt.date]]:
        rng = random.Random(seed)
        today = self.today()
        starts = [today - dt.timedelta(days=rng.randrange(29, self.days)) for _ in range(count)]
        return [(s, s + dt.timedelta(days=29)) for s in starts]


# --- loading (runs in a child process with DATABASE_URL and DATA_DIR of one scale) ---------------------


PATIENTS_SQL = """
INSERT INTO imaging_patient (issuer_id, patient_id, name, birth_date, sex, created_at)
SELECT (%(institutions)s::bigint[])[1 + (g - 1) %% cardinality(%(institutions)s::bigint[])],
       'RP' || lpad(g::text, 7, '0'), 'Region^Patient' || lpad(g::text, 7, '0'), date '1960-01-01', 'F', now()
FROM generate_series(1, %(patients)s) g
"""

# Study g belongs to patient 1 + (g - 1) %% patients and to that patient's institution; the
# studies are spread evenly over the last `days` days, newest first.
STUDIES_SQL = """
INSERT INTO imaging_study (study_uid, patient_id, institution_id, study_date, study_time, accession_number,
  study_id, description, referring_physician, modalities, num_series, num_instances, size_bytes,
  received_at, updated_at, deleted_reason)
SELECT '2.25.7' || lpad(g::text, 9, '0'), %(first_patient)s + (g - 1) %% %(patients)s,
       (%(institutions)s::bigint[])[1 + ((g - 1) %% %(patients)s) %% cardinality(%(institutions)s::bigint[])],
       d, time '09:30', 'RA' || lpad(g::text, 9, '0'), '1', 'CT chest', 'Ref^Doctor', 'CT',
       %(series)s, %(per_study)s, 0, d + time '10:00', d + time '10:00', ''
FROM (SELECT g, current_date - ((g - 1)::bigint * %(days)s / %(studies)s)::int AS d
      FROM generate_series(1, %(studies)s) g) t
"""

SERIES_SQL = """
INSERT INTO imaging_series (series_uid, study_id, modality, series_number, description, body_part, num_instances)
SELECT s.study_uid || '.' || n, s.id, 'CT', n, 'Axial 5mm', 'CHEST', %(per_series)s
FROM imaging_study s CROSS JOIN generate_series(1, %(series)s) n
WHERE s.study_uid LIKE '2.25.7%%'
ORDER BY s.id, n
"""

# Every tenth study of each clinic (the newest first) has a consult to the clinic's hospital desk (clinic k of the
# list belongs to hospital 1 + (k - 1) %% 2), signed by each of the desk in turn; the question
# names the study, for the link below.
CONSULTS_SQL = """
WITH c AS (
  SELECT s.id AS study, s.received_at + interval '1 hour' AS req,
         array_position(%(clinics)s::bigint[], s.institution_id) AS k,
         row_number() OVER (PARTITION BY s.institution_id ORDER BY s.id) AS rn
  FROM imaging_study s WHERE s.institution_id = ANY(%(clinics)s::bigint[])
), q AS (
  SELECT c.*, 1 + (k - 1) %% 2 AS h, req <= now() - interval '%(open_days)s days' AS done
  FROM c WHERE rn %% %(every)s = 1
)
INSERT INTO consults_consult (question, history, priority, priority_rank, status, reason, created_at, requested_at,
  claimed_at, completed_at, deadline_seconds, claim_timeout_seconds, due_at, claim_due_at, paused_seconds,
  paused_since, remind_50_at, remind_80_at, reminded_50, reminded_80, widened_at, breached_at, owner_id, pool_id,
  requester_id, requesting_institution_id, second_opinion_of_id, specialist_id, modality)
SELECT 'Region consult on study ' || study, '', 'routine', 3, CASE WHEN done THEN 'completed' ELSE 'requested' END,
  '', req, req, CASE WHEN done THEN req + interval '2 hours' END, CASE WHEN done THEN req + interval '4 hours' END,
  86400, 14400, req + interval '1 day', req + interval '4 hours', 0, NULL, req + interval '12 hours',
  req + interval '19 hours', done, done, NULL, NULL,
  CASE WHEN done THEN (%(specialists)s::bigint[])[(h - 1) * %(desk)s + 1 + (rn / %(every)s + k) %% %(desk)s] END,
  (%(pools)s::bigint[])[h], (%(clinicians)s::bigint[])[k], (%(clinics)s::bigint[])[k], NULL, NULL, 'CT'
FROM q ORDER BY study
"""

CONSULT_STUDIES_SQL = """
INSERT INTO consults_consult_studies (consult_id, study_id)
SELECT id, substring(question from 25)::bigint FROM consults_consult WHERE question LIKE 'Region consult on study %%'
"""

# The desk's read grant from the request; revoked at the claim (narrowed to the owner).
GROUP_GRANTS_SQL = """
INSERT INTO imaging_studygroupgrant (basis, created_at, expires_at, revoked_at, content_object_id, group_id,
  permission_id, devices_only)
SELECT 'consult:' || c.id, c.requested_at, NULL, c.claimed_at, cs.study_id, p.group_id, %(permission)s, false
FROM consults_consult c JOIN consults_consult_studies cs ON cs.consult_id = c.id
JOIN alliance_pool p ON p.id = c.pool_id
"""

# The owner's read grant from the claim, ending READER_DAYS after the signature.
USER_GRANTS_SQL = """
INSERT INTO imaging_studyusergrant (basis, reason, created_at, expires_at, revoked_at, reviewed_at,
  content_object_id, permission_id, user_id)
SELECT 'consult:' || c.id, '', c.claimed_at, c.completed_at + interval '%(reader_days)s days', NULL, NULL,
  cs.study_id, %(permission)s, d.user_id
FROM consults_consult c JOIN consults_consult_studies cs ON cs.consult_id = c.id
JOIN alliance_doctor d ON d.id = c.owner_id
"""


def build_people() -> dict[str, Any]:
    from alliance import audit, services
    from alliance.models import PoolMembership
    from tests import factories

    alliance = factories.AllianceFactory(name="Region Bench")
    hospitals = [
        factories.make_institution(alliance=alliance, level="tertiary", name=f"Region Hospital {i}", ae_title=f"RBH{i}")
        for i in range(1, HOSPITALS + 1)
    ]
    clinics = [
        factories.make_institution(
            alliance=alliance, name=f"Township Clinic {i:02d}", ae_title=f"RBC{i:02d}", parent=hospitals[(i - 1) % 2]
        )
        for i in range(1, CLINICS + 1)
    ]
    specialists = []
    pools = []
    for h, hospital in enumerate(hospitals):
        desk = [
            factories.make_doctor(
                institution=hospital,
                roles=["specialist"],
                username=SPECIALIST if h == 0 and i == 0 else f"rb_reader_{h}_{i}",
                full_name=f"Reader {h}-{i}",
            )
            for i in range(DESK)
        ]
        specialists += desk
        pools.append(factories.make_pool(institution=hospital, members=desk, name="Reading desk"))
    clinicians = [
        factories.make_doctor(institution=c, username=CLINICIAN if i == 0 else f"rb_clinician_{i}")
        for i, c in enumerate(clinics)
    ]
    services.device_create(institution=clinics[0], ae_title=CALLING_AE, host="127.0.0.1", port=104, by=audit.SYSTEM)
    # The desks were seated before the region's history began: every case reaches them.
    PoolMembership.objects.update(since=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    return {
        "institutions": [i.pk for i in [*hospitals, *clinics]],
        "clinics": [c.pk for c in clinics],
        "clinicians": [d.pk for d in clinicians],
        "specialists": [d.pk for d in specialists],
        "pools": [p.pk for p in pools],
    }


def file_templates() -> dict[tuple[int, int], bytes]:
    """PS3.10 bytes of an 8x8 CT for every (series number, instance number), with placeholders."""
    from tests.imaging import dicomgen

    templates = {}
    for n in range(1, SERIES_PER_STUDY + 1):
        for i in range(1, PER_SERIES + 1):
            (ds,) = dicomgen.make_ct_series(
                1,
                8,
                8,
                patient_id=P_PATIENT,
                patient_name=P_NAME,
                study_uid=P_STUDY,
                series_uid=f"{P_STUDY}.8",
                accession_number=P_ACCESSION,
                series_number=n,
                study_date=dt.date(1900, 1, 1),
            )
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{P_STUDY}.8.6"
            ds.InstanceNumber = i
            ds.StudyTime = "093000"
            templates[(n, i)] = dicomgen.part10_bytes(ds)
    return templates


def file_bytes(template: bytes, study: str, series: str, sop: str, patient: str, name: str, date: str) -> bytes:
    return (
        template.replace(f"{P_STUDY}.8.6".encode(), sop.encode())
        .replace(f"{P_STUDY}.8".encode(), series.encode())
        .replace(P_STUDY.encode(), study.encode())
        .replace(P_PATIENT.encode(), patient.encode())
        .replace(P_NAME.encode(), name.encode())
        .replace(P_ACCESSION.encode(), ("RA" + study[6:]).encode())
        .replace(P_DATE.encode(), date.encode())
    )


def copy_instances(cursor: Any, fraction: float, folder: Path) -> tuple[int, int]:
    """Every instance row by COPY, and the files of `fraction` of the studies; (files, bytes) written."""
    from pydicom.uid import ExplicitVRLittleEndian

    from imaging.storage import storage_key_for
    from tests.imaging.dicomgen import CT_IMAGE_STORAGE

    templates = file_templates()
    cursor.execute(
        "SELECT se.id, se.series_uid, se.series_number, st.study_uid, st.study_date, st.received_at, p.patient_id,"
        " p.name FROM imaging_series se JOIN imaging_study st ON st.id = se.study_id"
        " JOIN imaging_patient p ON p.id = st.patient_id WHERE st.study_uid LIKE '2.25.7%%' ORDER BY se.id"
    )
    rows = cursor.fetchall()
    buffer = io.StringIO()
    files = written = 0
    sizes: dict[int, int] = {}
    for number, (series_pk, series, n, study, date, received, pid, name) in enumerate(rows):
        g = int(study[6:])
        with_files = int(g * fraction) != int((g - 1) * fraction)
        for i in range(1, PER_SERIES + 1):
            sop = f"{series}.{i}"
            data = file_bytes(templates[(n, i)], study, series, sop, pid, name, date.strftime("%Y%m%d"))
            key = storage_key_for(study, series, sop)
            if with_files:
                path = folder / key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                files += 1
                written += len(data)
            sizes[series_pk] = sizes.get(series_pk, 0) + len(data)
            sha = hashlib.sha256(data).hexdigest()
            buffer.write(
                f"{sop}\t{CT_IMAGE_STORAGE}\t{ExplicitVRLittleEndian}\t{i}\t8\t8\t1\t{key}\t{len(data)}\t{sha}\t"
                f"{received.isoformat()}\tt\t{series_pk}\tf\n"
            )
        if number % 20000 == 19999 or number == len(rows) - 1:
            buffer.seek(0)
            cursor.copy_expert(
                "COPY imaging_instance (sop_uid, sop_class_uid, transfer_syntax_uid, instance_number, rows, columns,"
                " number_of_frames, storage_key, size_bytes, sha256, received_at, rendered, series_id, unrenderable)"
                " FROM STDIN",
                buffer,
            )
            buffer = io.StringIO()
    # The studies' sizes, as ingest keeps them.
    cursor.execute(
        "UPDATE imaging_study s SET size_bytes = t.size FROM (SELECT se.study_id, sum(i.size_bytes) AS size"
        " FROM imaging_instance i JOIN imaging_series se ON se.id = i.series_id GROUP BY se.study_id) t"
        " WHERE t.study_id = s.id"
    )
    return files, written


def fill(instances: int, fraction: float, folder: Path) -> tuple[int, int]:
    """Write one region into the (empty, migrated) database, in one transaction, and the files
    of `fraction` of its studies under `folder` (the local DICOM store); (files, bytes) written."""
    from django.contrib.auth.models import Permission
    from django.db import connection, transaction
    from django.test import override_settings

    scale = Scale(instances, folder)
    started = time.perf_counter()
    with transaction.atomic():
        with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
            people = build_people()
        permission = Permission.objects.get(codename="read_study", content_type__app_label="imaging").pk
        with connection.cursor() as cursor:
            cursor.execute(PATIENTS_SQL, {**people, "patients": scale.patients})
            cursor.execute("SELECT min(id) FROM imaging_patient WHERE patient_id LIKE 'RP%%'")
            first_patient = cursor.fetchone()[0]
            values = {
                **people,
                "first_patient": first_patient,
                "patients": scale.patients,
                "studies": scale.studies,
                "days": scale.days,
                "series": SERIES_PER_STUDY,
                "per_study": PER_STUDY,
                "per_series": PER_SERIES,
                "every": CONSULT_EVERY,
                "open_days": OPEN_DAYS,
                "desk": DESK,
                "permission": permission,
                "reader_days": READER_DAYS,
            }
            cursor.execute(STUDIES_SQL, values)
            cursor.execute(SERIES_SQL, values)
            print(f"  patients, studies, series: {time.perf_counter() - started:.0f} s", flush=True)
            files, written = copy_instances(cursor, fraction, folder)
            print(f"  instances: {time.perf_counter() - started:.0f} s ({files:,} files written)", flush=True)
            cursor.execute(CONSULTS_SQL, values)
            cursor.execute(CONSULT_STUDIES_SQL)
            cursor.execute(GROUP_GRANTS_SQL, values)
            cursor.execute(USER_GRANTS_SQL, values)
    return files, written


def load(instances: int, fraction: float) -> None:
    """fill() the database of DATABASE_URL and the DICOM store of DATA_DIR; print what it took."""
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    started = time.perf_counter()
    files, written = fill(instances, fraction, Path(settings.STORAGES["dicom"]["OPTIONS"]["location"]))
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    seconds = time.perf_counter() - started
    print(json.dumps({"load_seconds": round(seconds), "files": files, "file_bytes": written}))


# --- in-process measurements (a child process per scale and round) -----------------------------------


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20, method="inclusive")[18]


def measure_web(instances: int, queries: int, seed: int) -> None:
    """QIDO-RS and the worklist in-process; prints {case: {"ms": [...], "results": [...]}}."""
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client, override_settings
    from rest_framework.test import APIClient

    from alliance.access import resolve_principal
    from imaging.access import studies_visible_to

    scale = Scale(instances, Path(settings.DATA_DIR).parent)
    users = get_user_model().objects
    rng = random.Random(seed)
    out: dict[str, dict[str, list[float]]] = {}
    with override_settings(ALLOWED_HOSTS=["*"], OTP_REQUIRED_DEFAULT=False):
        for persona, who in (("clinic", CLINICIAN), ("specialist", SPECIALIST)):
            user = users.get(username=who)
            visible = studies_visible_to(resolve_principal(user))
            patients = sorted(set(visible.values_list("patient__patient_id", flat=True)))
            client = Client()
            client.force_login(user)
            by_patient = [{"PatientID": rng.choice(patients)} for _ in range(queries)]
            by_dates = [
                {"StudyDate": f"{a:%Y%m%d}-{b:%Y%m%d}"} for a, b in scale.date_windows(queries, rng.randrange(10**6))
            ]
            for kind, params in (("PatientID", by_patient), ("30-day StudyDate range", by_dates)):
                out[f"QIDO-RS {kind}, {persona}"] = qido(client, params)
        specialist, clinician = Client(), Client()
        specialist.force_login(users.get(username=SPECIALIST))
        clinician.force_login(users.get(username=CLINICIAN))
        api = APIClient()
        api.force_authenticate(users.get(username=SPECIALIST))
        for name, client, url in (
            ("worklist page: specialist, unclaimed", specialist, "/consults/?tab=unclaimed"),
            ("worklist page: specialist, signed", specialist, "/consults/?tab=signed"),
            ("worklist page: clinician, reports", clinician, "/consults/?tab=reports"),
            ("worklist API: specialist, unclaimed, limit 25", api, "/api/v1/consults/?tab=unclaimed&limit=25"),
        ):
            out[name] = page(client, url, queries // 2)
    print(json.dumps(out))


def qido(client: Any, queries: list[dict[str, str]]) -> dict[str, list[float]]:
    accept = {"HTTP_ACCEPT": "application/dicom+json"}
    for params in queries[:5]:
        assert client.get("/dicomweb/studies", params, **accept).status_code in (200, 204)
    times, results = [], []
    for params in queries:
        start = time.perf_counter()
        response = client.get("/dicomweb/studies", params, **accept)
        body = response.content
        times.append((time.perf_counter() - start) * 1000)
        if response.status_code not in (200, 204):
            raise RuntimeError(f"QIDO {params} answered {response.status_code}: {body[:300]!r}")
        results.append(float(len(json.loads(body))) if body else 0.0)
    if not any(results):
        raise RuntimeError("QIDO matched nothing: is the region loaded?")
    return {"ms": times, "results": results}


def page(client: Any, url: str, runs: int) -> dict[str, list[float]]:
    for _ in range(3):
        assert client.get(url).status_code == 200, url
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")
    return {"ms": times, "results": []}


# --- servers -----------------------------------------------------------------------------------


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def our_server(scale: Scale, processes: int, log: Path) -> Iterator[tuple[int, int]]:
    from tests.processes import free_port, wait_for_port

    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "dicom_server", "--processes", str(processes)],
            cwd=ROOT,
            env=scale.env(DICOM_PORT=str(port)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc)
        time.sleep(1.0 if processes > 1 else 0.2)  # every process bound
        yield port, proc.pid
    finally:
        stop(proc)


def orthanc_plugin() -> str:
    listing = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=True).stdout
    return next(line for line in listing.splitlines() if line.endswith(".so") and "plugins" in line)


class Orthanc:
    """Orthanc (Debian package) with its DICOMweb plugin, on loopback ports, TCP_NODELAY=1."""

    def __init__(self, work: Path) -> None:
        from tests.processes import free_port

        self.folder = work / "orthanc"
        self.dicom, self.http = free_port(), free_port()
        self.site = f"http://127.0.0.1:{self.http}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from tests.processes import wait_for_port

        self.folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "regionbench",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "DicomAet": ORTHANC_AE,
            "DicomPort": self.dicom,
            "HttpPort": self.http,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpCompressionEnabled": False,
            "StorageCompression": False,
            "DicomCheckCalledAet": False,
            "DicomThreadsCount": 4,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowStore": True,
            "Plugins": [orthanc_plugin()],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        (self.folder / "orthanc.json").write_text(json.dumps(config))
        with (self.folder / "orthanc.log").open("ab") as log:
            self.process = subprocess.Popen(
                ["Orthanc", str(self.folder / "orthanc.json")], env=NODELAY_ENV, stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_port(self.dicom, self.process)
        wait_for_port(self.http, self.process)

    def load(self, scale: Scale) -> float:
        """One small instance per study of the scale (same patients, dates), over REST on 4 threads."""
        from concurrent.futures import ThreadPoolExecutor

        import requests

        templates = file_templates()
        today = scale.today()
        session = requests.Session()

        def post(g: int) -> None:
            p = 1 + (g - 1) % scale.patients
            date = today - dt.timedelta(days=(g - 1) * scale.days // scale.studies)
            study = study_uid(g)
            data = file_bytes(
                templates[(1, 1)],
                study,
                f"{study}.1",
                f"{study}.1.1",
                patient_id(p),
                f"Region^Patient{p:07d}",
                date.strftime("%Y%m%d"),
            )
            session.post(self.site + "/instances", data=data, timeout=60).raise_for_status()

        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(post, range(1, scale.studies + 1)))
        return time.perf_counter() - started

    def qido(self, scale: Scale, queries: int, seed: int) -> dict[str, dict[str, list[float]]]:
        import requests

        rng = random.Random(seed)
        session = requests.Session()
        out = {}
        by_patient = [{"PatientID": patient_id(rng.randrange(1, scale.patients + 1))} for _ in range(queries)]
        by_dates = [{"StudyDate": f"{a:%Y%m%d}-{b:%Y%m%d}"} for a, b in scale.date_windows(queries, seed)]
        for kind, params in (("PatientID", by_patient), ("30-day StudyDate range", by_dates)):
            times, results = [], []
            for q in params:
                start = time.perf_counter()
                response = session.get(
                    self.site + "/dicom-web/studies", params=q, headers={"Accept": "application/dicom+json"}, timeout=60
                )
                body = response.content
                times.append((time.perf_counter() - start) * 1000)
                response.raise_for_status()
                results.append(float(len(json.loads(body))) if body else 0.0)
            out[f"QIDO-RS {kind}, no access filter"] = {"ms": times, "results": results}
        return out

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None


# --- DIMSE measurements ---------------------------------------------------------------------------


def find_latencies(port: int, called_ae: str, queries: list[tuple[str, str]]) -> dict[str, list[float]]:
    """Milliseconds and matches per study-level C-FIND on one association (TCP_NODELAY)."""
    import socket

    from pydicom.dataset import Dataset
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    def no_delay(event: Any) -> None:
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    ae = AE(ae_title=CALLING_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae, evt_handlers=[(evt.EVT_CONN_OPEN, no_delay)])
    if not assoc.is_established:
        raise RuntimeError("C-FIND association refused")
    times, results = [], []
    try:
        for keyword, value in queries:
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.StudyInstanceUID = ds.PatientName = ds.StudyDate = ds.PatientID = ds.AccessionNumber = ""
            setattr(ds, keyword, value)
            start = time.perf_counter()
            answers = list(assoc.send_c_find(ds, StudyRootQueryRetrieveInformationModelFind))
            times.append((time.perf_counter() - start) * 1000)
            if not answers or "Status" not in answers[-1][0]:  # pynetdicom's empty status: no answer
                raise RuntimeError(f"C-FIND {keyword}={value} got no answer (aborted, or past the DIMSE timeout)")
            statuses = [status.Status for status, _ in answers]
            if statuses[-1] != 0:
                raise RuntimeError(f"C-FIND failed: 0x{statuses[-1]:04X}")
            results.append(float(len(statuses) - 1))
    finally:
        assoc.release()
    return {"ms": times, "results": results}


def find_queries(scale: Scale, patients: list[str], count: int, seed: int) -> dict[str, list[tuple[str, str]]]:
    rng = random.Random(seed)
    windows = scale.date_windows(count, seed + 1)
    return {
        "PatientID": [("PatientID", rng.choice(patients)) for _ in range(count)],
        "30-day StudyDate range": [("StudyDate", f"{a:%Y%m%d}-{b:%Y%m%d}") for a, b in windows],
    }


def clinic_patients(scale: Scale) -> list[str]:
    rows = psql(
        scale.db,
        "SELECT p.patient_id FROM imaging_patient p JOIN alliance_institution i ON i.id = p.issuer_id"  # noqa: S608
        f" WHERE i.ae_title = '{CLINIC_AE}'",
    )
    return rows.split()


def generate_ct(folder: Path, instances: int) -> list[Path]:
    """A fresh CT (new UIDs) split into four folders, one per association."""
    from tests.imaging import dicomgen

    shutil.rmtree(folder, ignore_errors=True)
    datasets = dicomgen.make_ct_series(instances, patient_id="RB-CT", patient_name="Region^CT")
    parts = [folder / f"part{i}" for i in range(4)]
    for i, part in enumerate(parts):
        dicomgen.write_series(datasets[i::4], part)
    return parts


def storescu(port: int, called_ae: str, folders: list[Path]) -> float:
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


def psql(db: str, sql: str) -> str:
    out = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", sql, db], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def index_size(scale: Scale) -> dict[str, int]:
    sizes = {}
    for table in IMAGING_TABLES:
        sizes[table] = int(psql(scale.db, f"SELECT pg_total_relation_size('{table}')"))
    return sizes


# --- the run ---------------------------------------------------------------------------------------


def prepare(scale: Scale, args: argparse.Namespace) -> dict[str, Any]:
    exists = psql("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{scale.db}'") == "1"  # noqa: S608
    if exists and args.reuse:
        count = int(psql(scale.db, "SELECT count(*) FROM imaging_instance"))
        if count >= scale.instances:
            print(f"{scale.label}: reusing {scale.db} ({count:,} instance rows)", flush=True)
            return {"load_seconds": None, "files": None, "file_bytes": None}
    if not psql("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{TEMPLATE}'"):  # noqa: S608
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", TEMPLATE], check=True)
        env = {**os.environ, "DATABASE_URL": f"{PG}/{TEMPLATE}", "DATA_DIR": str(args.work / "tpl")}
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", scale.db], check=True)
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", "-T", TEMPLATE, scale.db], check=True)
    shutil.rmtree(scale.data, ignore_errors=True)
    print(f"{scale.label}: loading into {scale.db}", flush=True)
    done = subprocess.run(
        ["nice", "-n", "19", sys.executable, __file__, "--load-only", "--instances", str(scale.instances)]
        + ["--files", str(args.files)],
        cwd=ROOT,
        env=scale.env(),
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = done.stdout.strip().splitlines()
    print("\n".join(lines[:-1]), flush=True)
    return json.loads(lines[-1])


def measure_round(
    scale: Scale, args: argparse.Namespace, seed: int, samples: dict[str, dict[str, list[float]]]
) -> None:
    def keep(found: dict[str, dict[str, list[float]]]) -> None:
        for name, got in found.items():
            entry = samples.setdefault(name, {"ms": [], "results": []})
            entry["ms"] += got["ms"]
            entry["results"] += got["results"]

    web = subprocess.run(
        [sys.executable, __file__, "--web-only", "--instances", str(scale.instances)]
        + ["--queries", str(args.queries), "--seed", str(seed)],
        cwd=ROOT,
        env=scale.env(),
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    keep(json.loads(web.stdout.strip().splitlines()[-1]))
    log = args.work / f"dicom_server-{scale.studies}.log"
    with our_server(scale, 1, log) as (port, _):
        queries = find_queries(scale, clinic_patients(scale), args.queries, seed)
        keep({f"C-FIND {kind}, clinic device": find_latencies(port, CLINIC_AE, q) for kind, q in queries.items()})
    if args.store_instances:
        parts = generate_ct(args.work / "ct", args.store_instances)
        before = int(psql(scale.db, "SELECT count(*) FROM imaging_instance"))
        with our_server(scale, args.processes, log) as (port, _):
            seconds = storescu(port, CLINIC_AE, parts)
        after = int(psql(scale.db, "SELECT count(*) FROM imaging_instance"))
        if after - before != args.store_instances:
            raise RuntimeError(f"the index gained {after - before} instances, not {args.store_instances}")
        keep({"C-STORE, 4 associations": {"ms": [args.store_instances / seconds], "results": []}})
    print(f"  {scale.label}: round {seed - args.seed + 1} measured", flush=True)


def measure_orthanc(scale: Scale, args: argparse.Namespace) -> tuple[dict[str, dict[str, list[float]]], float]:
    orthanc = Orthanc(args.work)
    orthanc.start()
    samples: dict[str, dict[str, list[float]]] = {}
    try:
        seconds = orthanc.load(scale)
        print(f"Orthanc: {scale.studies:,} studies loaded in {seconds:.0f} s", flush=True)
        for r in range(args.rounds):
            seed = args.seed + r
            for name, got in orthanc.qido(scale, args.orthanc_queries, seed).items():
                samples.setdefault(name, {"ms": [], "results": []})["ms"] += got["ms"]
                samples[name]["results"] += got["results"]
            patients = [patient_id(p) for p in range(1, scale.patients + 1)]
            for kind, q in find_queries(scale, patients, args.orthanc_queries, seed).items():
                got = find_latencies(orthanc.dicom, ORTHANC_AE, q)
                entry = samples.setdefault(f"C-FIND {kind}, no access filter", {"ms": [], "results": []})
                entry["ms"] += got["ms"]
                entry["results"] += got["results"]
            if args.store_instances:
                parts = generate_ct(args.work / "ct", args.store_instances)
                rate = args.store_instances / storescu(orthanc.dicom, ORTHANC_AE, parts)
                samples.setdefault("C-STORE, 4 associations", {"ms": [], "results": []})["ms"].append(rate)
    finally:
        orthanc.stop()
    return samples, seconds


def report(
    scales: list[Scale],
    results: dict[str, dict[str, dict[str, list[float]]]],
    loads: dict[str, dict[str, Any]],
    sizes: dict[str, dict[str, int]],
    orthanc: dict[str, dict[str, list[float]]] | None,
    args: argparse.Namespace,
) -> str:
    lines = []
    heads = [s.label for s in scales]
    cols = " | ".join(f"{h} p50 | {h} p95" for h in heads)
    lines.append(f"| measurement | {cols} |" + (f" Orthanc ({scales[0].studies:,} studies) p95 |" if orthanc else ""))
    lines.append("|---|" + "---|---|" * len(scales) + ("---|" if orthanc else ""))
    names = list(results[scales[0].db])
    for name in names:
        if name.startswith("C-STORE"):
            continue
        cells = []
        for s in scales:
            got = results[s.db][name]
            mean = f" ({statistics.mean(got['results']):.0f} matches)" if got["results"] else ""
            cells.append(f"{statistics.median(got['ms']):.1f} | **{p95(got['ms']):.1f}**{mean}")
        row = f"| {name} | " + " | ".join(cells) + " |"
        if orthanc:
            twin = next((k for k in orthanc if k.split(",")[0] == name.split(",")[0]), None)
            if twin and not name.endswith("specialist"):
                got = orthanc[twin]
                row += f" {p95(got['ms']):.1f} ({statistics.mean(got['results']):.0f} matches) |"
            else:
                row += " |"
        lines.append(row)
    lines.append("")
    if args.store_instances:
        lines.append(f"C-STORE of a {args.store_instances}-instance CT (512x512, 16 bit), storescu on 4 associations,")
        lines.append(f"our dicom_server with {args.processes} processes; instances/s of each round, median in bold:")
        lines.append("")
        for s in scales:
            rates = results[s.db]["C-STORE, 4 associations"]["ms"]
            each = ", ".join(f"{r:.0f}" for r in rates)
            lines.append(f"- ours, {s.label} indexed: **{statistics.median(rates):.0f}** ({each})")
        if orthanc and "C-STORE, 4 associations" in orthanc:
            rates = orthanc["C-STORE, 4 associations"]["ms"]
            each = ", ".join(f"{r:.0f}" for r in rates)
            held = f"{scales[0].studies:,} one-instance studies indexed"
            lines.append(f"- Orthanc, {held}: **{statistics.median(rates):.0f}** ({each})")
        lines.append("")
    lines.append("Index size (pg_total_relation_size: table, indexes, TOAST):")
    lines.append("")
    lines.append("| table | " + " | ".join(heads) + " |")
    lines.append("|---|" + "---|" * len(scales))
    for table in IMAGING_TABLES:
        lines.append(f"| {table} | " + " | ".join(f"{sizes[s.db][table] / 1e6:.1f} MB" for s in scales) + " |")
    totals = [sum(sizes[s.db].values()) for s in scales]
    lines.append("| **total** | " + " | ".join(f"**{t / 1e6:.1f} MB**" for t in totals) + " |")
    per_million = [t / s.instances * 1e6 / 1e9 for t, s in zip(totals, scales, strict=True)]
    lines.append("| **per million instances** | " + " | ".join(f"**{g:.2f} GB**" for g in per_million) + " |")
    lines.append("")
    for s in scales:
        load = loads[s.db]
        if load.get("load_seconds") is not None:
            lines.append(
                f"- {s.label}: loaded in {load['load_seconds']} s; {load['files']:,} files on disk "
                f"({load['file_bytes'] / 1e6:.0f} MB) under {s.data}/dicom, every instance row in the index."
            )
    if len(scales) == 2:
        small, big = sorted(scales, key=lambda s: s.instances)
        lines.append("")
        lines.append(f"Ratio of p95, {big.label} over {small.label} (target: at most 1.5):")
        lines.append("")
        for name in names:
            if name.startswith("C-STORE"):
                continue
            ratio = p95(results[big.db][name]["ms"]) / p95(results[small.db][name]["ms"])
            lines.append(f"- {name}: {ratio:.2f}{'' if ratio <= 1.5 else ' (over the target)'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies --instances (0.1: 10,000 studies)")
    parser.add_argument("--compare", action="store_true", help="also the 10,000-study region, rounds interleaved")
    parser.add_argument("--files", type=float, default=1.0, help="fraction of the studies whose files are written")
    parser.add_argument("--queries", type=int, default=100, help="queries of each kind per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store-instances", type=int, default=200, help="0 skips C-STORE")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--orthanc", action="store_true", help="Orthanc beside, at 10,000 studies")
    parser.add_argument(
        "--orthanc-queries",
        type=int,
        default=20,
        help="Orthanc's queries of each kind per round (its 30-day"
        " answers hold the whole region's studies: seconds each)",
    )
    parser.add_argument("--seed", type=int, default=20261204)
    parser.add_argument("--keep", action="store_true", help="keep the databases and data folders")
    parser.add_argument("--reuse", action="store_true", help="measure an already loaded database")
    parser.add_argument("--work", type=Path, default=None, help="data folders (default: a temporary folder)")
    parser.add_argument("--load-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--web-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "alliance.settings")
    if args.load_only:
        load(args.instances, args.files)
        return
    if args.web_only:
        measure_web(args.instances, args.queries, args.seed)
        return
    args.work = args.work or Path(tempfile.mkdtemp(prefix="regionbench-"))
    args.work.mkdir(parents=True, exist_ok=True)
    scales = [Scale(int(args.instances * args.scale), args.work)]
    if args.compare:
        scales.insert(0, Scale(100_000, args.work))
    started = dt.datetime.now(dt.UTC)
    try:
        loads = {s.db: prepare(s, args) for s in scales}
        sizes = {s.db: index_size(s) for s in scales}
        results: dict[str, dict[str, dict[str, list[float]]]] = {s.db: {} for s in scales}
        for r in range(args.rounds):
            for s in scales:
                measure_round(s, args, args.seed + r, results[s.db])
        orthanc = None
        if args.orthanc:
            try:
                orthanc, _ = measure_orthanc(scales[0], args)
            except Exception as exc:  # the region's figures are worth printing without Orthanc's
                print(f"Orthanc failed: {type(exc).__name__}: {exc}", flush=True)
        uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
        print()
        print(f"Started {started:%Y-%m-%d %H:%M} UTC, ended {dt.datetime.now(dt.UTC):%H:%M} UTC; uptime: {uptime}")
        print(f"{args.rounds} interleaved rounds of {args.queries} queries of each kind (pages: half as many).")
        print()
        print(report(scales, results, loads, sizes, orthanc, args))
    finally:
        if not args.keep:
            for s in scales:
                subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", s.db], check=False)
            subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", TEMPLATE], check=False)
            shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
