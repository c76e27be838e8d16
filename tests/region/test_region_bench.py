"""bench/region_bench.py's loading (issue 19 item 5): the rows and files it writes are the
region it describes, and the product's access functions find in them what each persona
should see: what the bench then times is the real access filter over a consistent index."""

from __future__ import annotations

import hashlib
import importlib.util
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import pydicom
import pytest
from django.db import connection
from django.db.models import F, Sum
from django.utils import timezone

from alliance.access import Principal, resolve_principal
from alliance.models import Device, Doctor, Institution, Pool
from consults import selectors
from consults.models import Consult
from imaging.access import studies_visible_to
from imaging.models import Instance, Patient, Series, Study, StudyGroupGrant, StudyUserGrant
from imaging.storage import storage_key_for

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the bench loads with PostgreSQL's SQL"),
]


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("region_bench", ROOT / "bench" / "region_bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def region(tmp_path: Path) -> tuple[ModuleType, Path, tuple[int, int]]:
    rb = bench()
    folder = tmp_path / "dicom"
    return rb, folder, rb.fill(20_000, 0.05, folder)


def test_counts_sizes_and_files_agree(region: tuple[ModuleType, Path, tuple[int, int]]) -> None:
    rb, folder, (files, written) = region
    assert (Patient.objects.count(), Study.objects.count(), Series.objects.count()) == (400, 2000, 4000)
    assert Instance.objects.count() == 20_000
    assert Institution.objects.count() == rb.HOSPITALS + rb.CLINICS
    # A twentieth of the studies have their files on disk, each under its key, with the index's size and hash.
    assert files == 1000
    on_disk = sorted(p for p in folder.rglob("*.dcm"))
    assert len(on_disk) == files and sum(p.stat().st_size for p in on_disk) == written
    with_file = 0
    for instance in Instance.objects.select_related("series__study__patient"):
        series, study = instance.series, instance.series.study
        assert instance.storage_key == storage_key_for(study.study_uid, series.series_uid, instance.sop_uid)
        path = folder / instance.storage_key
        if not path.exists():
            continue
        with_file += 1
        data = path.read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (instance.size_bytes, instance.sha256)
        if with_file % 37 == 1:
            ds = pydicom.dcmread(path)
            assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) == (
                study.study_uid,
                series.series_uid,
                instance.sop_uid,
            )
            assert ds.file_meta.MediaStorageSOPInstanceUID == instance.sop_uid
            assert (ds.PatientID, ds.InstanceNumber, ds.SeriesNumber) == (
                study.patient.patient_id,
                instance.instance_number,
                series.series_number,
            )
            assert ds.StudyDate == study.study_date.strftime("%Y%m%d")
    assert with_file == files
    study = Study.objects.first()
    assert study is not None
    assert study.size_bytes == Instance.objects.filter(series__study=study).aggregate(s=Sum("size_bytes"))["s"]


def test_the_clinic_and_its_device_see_their_own_studies_only(
    region: tuple[ModuleType, Path, tuple[int, int]],
) -> None:
    rb = region[0]
    clinic = Institution.objects.get(ae_title=rb.CLINIC_AE)
    own = set(Study.objects.filter(institution=clinic).values_list("pk", flat=True))
    assert own and len(own) == Patient.objects.filter(issuer=clinic).count() * rb.STUDIES_PER_PATIENT
    clinician = Doctor.objects.get(user__username=rb.CLINICIAN)
    assert set(studies_visible_to(resolve_principal(clinician.user)).values_list("pk", flat=True)) == own
    device = Device.objects.get(ae_title=rb.CALLING_AE)
    assert set(studies_visible_to(Principal(device=device)).values_list("pk", flat=True)) == own
    # Each study is at its patient's issuer.
    assert not Study.objects.exclude(institution_id=F("patient__issuer_id")).exists()


def test_the_specialist_sees_the_desk_cases_and_their_own_readings(
    region: tuple[ModuleType, Path, tuple[int, int]],
) -> None:
    rb = region[0]
    specialist = Doctor.objects.get(user__username=rb.SPECIALIST)
    pool = Pool.objects.get(members=specialist)
    principal = resolve_principal(specialist.user)
    now = timezone.now()
    open_cases = Consult.objects.filter(pool=pool, status="requested")
    signed = Consult.objects.filter(owner=specialist, status="completed")
    assert open_cases.exists() and signed.exists()
    assert not open_cases.filter(requested_at__lt=now - timedelta(days=rb.OPEN_DAYS)).exists()
    # What the access functions find: the hospital's own studies, the desk's open cases (its
    # group grant), and what the specialist signed in the last READER_DAYS (their user grant).
    recent = signed.filter(completed_at__gt=now - timedelta(days=rb.READER_DAYS))
    expected = (
        set(Study.objects.filter(institution=specialist.institution).values_list("pk", flat=True))
        | set(open_cases.values_list("studies", flat=True))
        | set(recent.values_list("studies", flat=True))
    )
    assert recent.exists() and signed.count() > recent.count()  # older readings are out of reach
    assert set(studies_visible_to(principal).values_list("pk", flat=True)) == expected
    # One grant per consult to the desk (revoked at the claim), one per signed consult to its owner.
    assert StudyGroupGrant.objects.count() == Consult.objects.count()
    assert StudyUserGrant.objects.count() == Consult.objects.filter(status="completed").count()
    # The worklist: the desk's open cases unclaimed, the specialist's signed ones.
    assert set(selectors.worklist(principal, "unclaimed").values_list("pk", flat=True)) == set(
        open_cases.values_list("pk", flat=True)
    )
    assert set(selectors.worklist(principal, "signed").values_list("pk", flat=True)) == set(
        signed.values_list("pk", flat=True)
    )
