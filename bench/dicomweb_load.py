"""Prepare our side of the DICOMweb benchmark: schema, one clinic, one doctor, and the query set.

Run by dicomweb_bench.py with DATABASE_URL set to a fresh database; reads the studies as
JSON on stdin, writes their index rows in bulk, and prints the doctor's API token last.
The rows carry no files: QIDO-RS reads only the index.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "alliance.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian  # noqa: E402

from alliance import audit, services  # noqa: E402
from imaging.models import Instance, Patient, Series, Study  # noqa: E402

BATCH = 2000


def provision() -> tuple[object, object]:
    alliance = services.alliance_get_or_create(name="Bench Alliance", by=audit.SYSTEM)
    clinic = services.institution_create(
        alliance=alliance, name="Bench Clinic", level="township", ae_title="BENCH", parent=None, by=audit.SYSTEM
    )
    doctor = services.doctor_create(
        institution=clinic,
        username="bench",
        roles=["clinician"],
        password="Bench-password-42!",  # noqa: S106 - a throw-away benchmark database
        full_name="Bench Doctor",
        specialties=None,
        by=audit.SYSTEM,
    )
    return clinic, services.token_create(doctor=doctor, by=audit.SYSTEM)


def load(rows: list[dict[str, object]], clinic: object) -> None:
    names = {r["patient"][0]: r["patient"][1] for r in rows}  # type: ignore[index]
    Patient.objects.bulk_create(
        [Patient(issuer=clinic, patient_id=pid, name=name, sex="O") for pid, name in names.items()], batch_size=BATCH
    )
    patients = dict(Patient.objects.values_list("patient_id", "pk"))
    Study.objects.bulk_create([_study(r, clinic, patients) for r in rows], batch_size=BATCH)
    studies = dict(Study.objects.values_list("study_uid", "pk"))
    Series.objects.bulk_create(
        [
            Series(series_uid=r["series_uid"], study_id=studies[r["study_uid"]], modality="CT", series_number=1)
            for r in rows
        ],
        batch_size=BATCH,
    )
    series = dict(Series.objects.values_list("series_uid", "pk"))
    Instance.objects.bulk_create([_instance(r, series) for r in rows], batch_size=BATCH)


def _study(row: dict[str, object], clinic: object, patients: dict[str, int]) -> Study:
    return Study(
        study_uid=row["study_uid"],
        patient_id=patients[row["patient"][0]],  # type: ignore[index]
        institution=clinic,
        study_date=dt.date.fromisoformat(str(row["date"])),
        study_time=dt.time(10, 15),
        accession_number=f"A{abs(hash(row['study_uid'])) % 10**8:08d}",
        study_id="1",
        description="BENCH CT",
        modalities="CT",
        num_series=1,
        num_instances=1,
    )


def _instance(row: dict[str, object], series: dict[str, int]) -> Instance:
    sop = f"{row['study_uid']}.1"
    return Instance(
        sop_uid=sop,
        series_id=series[row["series_uid"]],  # type: ignore[index]
        sop_class_uid=CTImageStorage,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        instance_number=1,
        rows=8,
        columns=8,
        storage_key=f"bench/{sop}.dcm",
        size_bytes=0,
        sha256=hashlib.sha256(sop.encode()).hexdigest(),
    )


def main() -> int:
    call_command("migrate", verbosity=0)
    rows = json.load(sys.stdin)
    clinic, token = provision()
    load(rows, clinic)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(token.key)  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
