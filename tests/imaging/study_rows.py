"""Index rows for page and API tests that need studies but not their files.

Rows are created directly, as ingest would leave them; tests of ingest itself and of
uploads go through imaging.ingest with real DICOM files instead.
"""

from __future__ import annotations

import itertools
from datetime import date

from alliance.models import Institution
from imaging.models import Instance, Patient, Series, Study

_seq = itertools.count(1)


def make_study(
    institution: Institution,
    *,
    patient_name: str = "ZHANG^SAN=张^三",
    patient_id: str = "",
    study_date: date | None = date(2026, 3, 1),
    modalities: str = "CT",
    accession: str = "",
    description: str = "Chest CT",
    series: int = 1,
    instances: int = 2,
) -> Study:
    n = next(_seq)
    patient, _ = Patient.objects.get_or_create(
        issuer=institution, patient_id=patient_id or f"P{n:05d}", defaults={"name": patient_name, "sex": "M"}
    )
    study = Study.objects.create(
        study_uid=f"1.2.826.0.1.3680043.10.{n}",
        patient=patient,
        institution=institution,
        study_date=study_date,
        accession_number=accession or f"A{n}",
        description=description,
        modalities=modalities,
        num_series=series,
        num_instances=series * instances,
    )
    for s in range(1, series + 1):
        row = Series.objects.create(
            series_uid=f"{study.study_uid}.{s}",
            study=study,
            modality=modalities.split("\\")[0],
            series_number=s,
            description=f"Series {s}",
            num_instances=instances,
        )
        for i in range(1, instances + 1):
            Instance.objects.create(
                sop_uid=f"{row.series_uid}.{i}",
                series=row,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                instance_number=i,
                rows=64,
                columns=64,
                storage_key=f"test/{row.series_uid}.{i}.dcm",
                size_bytes=1000,
                sha256="0" * 64,
            )
    return study
