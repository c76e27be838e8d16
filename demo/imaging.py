"""Demo studies for `manage.py seed_demo`: each clinic gets a chest CT, a chest radiograph
and a brain MR of its own patients, so that a newcomer sees images at once.

The pixels come from demo.synthetic; every file goes through imaging.ingest like any
upload. UIDs and names derive from the clinic's AE title, so a second run finds every
instance already stored and stores nothing new.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.db import connection
from django.db.models import QuerySet
from pydicom.dataset import Dataset

from alliance import audit
from alliance.models import Institution
from demo import synthetic
from demo.loaders import Writer
from imaging import storage
from imaging.ingest import ingest_path
from imaging.models import Instance

CLINIC_LEVELS = (Institution.Level.TOWNSHIP, Institution.Level.COMMUNITY)
CT_SLICES = 120
CT_SIZE = 512
MR_SLICES = 24
MR_SIZE = 256
INGEST_THREADS = 4

# (DICOM PN with its ideographic form, sex, birth date)
PATIENTS = (
    ("Wang^Xiuying=王^秀英", "F", dt.date(1956, 4, 12)),
    ("Li^Jianguo=李^建国", "M", dt.date(1962, 9, 3)),
    ("Zhang^Guilan=张^桂兰", "F", dt.date(1949, 1, 27)),
    ("Liu^Deming=刘^德明", "M", dt.date(1970, 6, 18)),
    ("Chen^Yumei=陈^玉梅", "F", dt.date(1983, 11, 5)),
    ("Yang^Zhiqiang=杨^志强", "M", dt.date(1958, 2, 14)),
    ("Zhao^Shuzhen=赵^淑珍", "F", dt.date(1944, 8, 30)),
    ("Huang^Yongqiang=黄^永强", "M", dt.date(1975, 12, 9)),
    ("Zhou^Xiulan=周^秀兰", "F", dt.date(1966, 5, 21)),
    ("Wu^Haitao=吴^海涛", "M", dt.date(1989, 3, 2)),
    ("Xu^Fengying=徐^凤英", "F", dt.date(1952, 10, 16)),
    ("Sun^Jianjun=孙^建军", "M", dt.date(1968, 7, 7)),
)


@dataclass(frozen=True)
class DemoStudy:
    kind: str  # "ct", "dx" or "mr"
    info: synthetic.StudyInfo

    def sop_uids(self) -> list[str]:
        count = {"ct": CT_SLICES, "dx": 1, "mr": MR_SLICES}[self.kind]
        return [self.info.uid(self.kind, i) for i in range(count)]

    def datasets(self) -> list[Dataset]:
        if self.kind == "ct":
            return synthetic.ct_series(self.info, slices=CT_SLICES, size=CT_SIZE)
        if self.kind == "dx":
            return [synthetic.chest_radiograph(self.info)]
        return synthetic.mr_series(self.info, slices=MR_SLICES, size=MR_SIZE)


def demo_studies_for(institution: Institution) -> list[DemoStudy]:
    """The clinic's three demo studies, each of its own patient; the same every time."""
    key = zlib.crc32(institution.ae_title.encode())
    plan = (
        ("ct", "胸部CT平扫 Chest CT", dt.date(2026, 11, 20), "101500"),
        ("dx", "胸部正位片 Chest PA", dt.date(2026, 11, 24), "084000"),
        ("mr", "头颅MR平扫 Brain MR", dt.date(2026, 11, 26), "143000"),
    )
    studies = []
    for n, (kind, description, date, time) in enumerate(plan):
        name, sex, birth = PATIENTS[(key + n) % len(PATIENTS)]
        patient = synthetic.PatientInfo(f"{(key // 7 + n * 7919) % 10**8:08d}", name, birth, sex)
        info = synthetic.StudyInfo(
            seed=f"alliance-demo:{institution.ae_title}:{kind}",
            patient=patient,
            date=date,
            time=time,
            accession_number=f"{institution.ae_title[:6]}{date:%y%m%d}{n + 1:02d}",
            description=description,
            institution_name=institution.name[:64],
            referring_physician="Zhou^Fang=周^芳",
        )
        studies.append(DemoStudy(kind, info))
    return studies


def demo_clinics() -> QuerySet[Institution]:
    return Institution.objects.filter(level__in=CLINIC_LEVELS, active=True).order_by("ae_title")


def load(*, stdout: Writer, actor: audit.Actor) -> None:
    """seed_demo's loader. The files are stored as the system's, whoever runs the command."""
    load_demo_studies(stdout=stdout)


def load_demo_studies(stdout: Writer | None = None, institutions: Iterable[Institution] | None = None) -> int:
    """Store each clinic's demo studies; returns how many instances were new."""
    stored = 0
    for institution in demo_clinics() if institutions is None else institutions:
        studies = demo_studies_for(institution)
        counts = [_load(study, institution) for study in studies]
        stored += sum(new for new, _total in counts)
        if stdout is not None:
            summary = ", ".join(
                f"{s.kind.upper()} {total} ({new} new)" for s, (new, total) in zip(studies, counts, strict=True)
            )
            stdout.write(f"Demo studies for {institution.ae_title}: {summary}\n")
    return stored


def _load(study: DemoStudy, institution: Institution) -> tuple[int, int]:
    """(instances stored now, instances in the series); generates nothing when all are there.

    The first instance creates the patient, study and series; the rest go through ingest
    on a few threads, because each one waits for its file and its commit to reach the disk.
    """
    uids = study.sop_uids()
    if Instance.objects.filter(sop_uid__in=uids).count() == len(uids):
        return 0, len(uids)
    first, *rest = study.datasets()
    new = _ingest_one(first, institution)
    if connection.in_atomic_block:  # other threads could not see what this transaction wrote
        return new + sum(_ingest_one(ds, institution) for ds in rest), len(uids)
    with ThreadPoolExecutor(max_workers=INGEST_THREADS) as pool:
        new += sum(pool.map(lambda ds: _ingest_in_thread(ds, institution), rest))
    return new, len(uids)


def _ingest_in_thread(ds: Dataset, institution: Institution) -> int:
    try:
        return _ingest_one(ds, institution)
    finally:
        connection.close()


def _ingest_one(ds: Dataset, institution: Institution) -> int:
    path = storage.temp_dir() / f"demo-{uuid.uuid4().hex}.dcm"
    try:
        path.write_bytes(synthetic.part10_bytes(ds))
        result = ingest_path(path, institution=institution, actor=audit.SYSTEM, via="demo", source="seed_demo")
    finally:
        path.unlink(missing_ok=True)
    return int(result.created)
