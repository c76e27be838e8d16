"""Fixtures for the viewer: a stored CT study owned by clinic A, and a signed-in Chromium
page against the live server (Debian's /usr/bin/chromium; Playwright downloads nothing)."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.test import Client
from pydicom.dataset import Dataset

from imaging.models import Instance, Patient, Series, Study
from tests.viewer.ctgen import CtSpec, ct_series

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "viewer"


def store_series(datasets: list[Dataset], institution: Any) -> Study:
    first = datasets[0]
    patient, _ = Patient.objects.get_or_create(
        issuer=institution,
        patient_id=first.PatientID,
        defaults={"name": str(first.PatientName), "sex": first.PatientSex},
    )
    study = Study.objects.create(
        study_uid=first.StudyInstanceUID,
        patient=patient,
        institution=institution,
        description=first.StudyDescription,
        modalities="CT",
        num_series=1,
        num_instances=len(datasets),
    )
    series = Series.objects.create(
        series_uid=first.SeriesInstanceUID,
        study=study,
        modality="CT",
        series_number=first.SeriesNumber,
        description=first.SeriesDescription,
        num_instances=len(datasets),
    )
    for ds in datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        data = buffer.getvalue()
        key = storages["dicom"].save(f"{ds.StudyInstanceUID}/{ds.SOPInstanceUID}.dcm", ContentFile(data))
        Instance.objects.create(
            sop_uid=ds.SOPInstanceUID,
            series=series,
            sop_class_uid=ds.SOPClassUID,
            transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
            instance_number=ds.InstanceNumber,
            rows=ds.Rows,
            columns=ds.Columns,
            storage_key=key,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
    return study


@pytest.fixture
def ct_study(alliance_world: Any) -> Study:
    return store_series(ct_series(CtSpec()), alliance_world.clin_a)


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, Any]:
    return {
        "executable_path": CHROMIUM,
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    }


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def orm_beside_playwright() -> None:
    """Playwright's sync API keeps an event loop in the test thread for the whole session;
    the ORM calls made there (fixtures, assertions, the database flush) are still plain
    synchronous calls, so Django's guard against async contexts is lifted for the session."""
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"


@pytest.fixture
def live_site(orm_beside_playwright: None, transactional_db: None, live_server: Any, settings: Any) -> Any:
    """The live server with the DICOMweb stand-in mounted (see dicomweb_double)."""
    settings.ROOT_URLCONF = "tests.viewer.dicomweb_double"
    return live_server


@pytest.fixture
def sign_in(live_site: Any, page: Any) -> Callable[[Any], Any]:
    def sign_in_as(doctor: Any) -> Any:
        client = Client()
        client.force_login(doctor.user)
        cookie = client.cookies["sessionid"]
        page.context.add_cookies([{"name": "sessionid", "value": cookie.value, "url": live_site.url}])
        return page

    return sign_in_as


@pytest.fixture
def requests_seen(page: Any) -> Iterator[list[str]]:
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    yield seen
