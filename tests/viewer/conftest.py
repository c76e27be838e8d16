"""Fixtures for the viewer: a stored CT study owned by clinic A, and a signed-in Chromium
page against the live server (Debian's /usr/bin/chromium; Playwright downloads nothing)."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from pydicom.dataset import Dataset

from alliance import audit
from imaging.ingest import ingest_bytes
from imaging.models import Study
from tests.viewer.ctgen import CtSpec, ct_series

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "viewer"


def store_series(datasets: list[Dataset], institution: Any) -> Study:
    """Store through the one ingest path, as a modality's C-STORE would."""
    for ds in datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        ingest_bytes(buffer.getvalue(), institution=institution, actor=audit.SYSTEM, via="test")
    return Study.objects.get(study_uid=datasets[0].StudyInstanceUID)


@pytest.fixture
def ct_study(alliance_world: Any) -> Study:
    return store_series(ct_series(CtSpec()), alliance_world.clin_a)


@pytest.fixture
def ct_with_prior(alliance_world: Any) -> tuple[Study, Study]:
    """Two CTs of one patient; the prior's slices lie 5 mm further toward the feet."""
    current = store_series(ct_series(CtSpec()), alliance_world.clin_a)
    prior_slices = ct_series(CtSpec())
    for ds in prior_slices:
        x, y, z = ds.ImagePositionPatient
        ds.ImagePositionPatient = [x, y, z - 5.0]
        ds.SliceLocation = z - 5.0
        ds.StudyDate, ds.AccessionNumber = "20240105", "A6001"
    prior = store_series(prior_slices, alliance_world.clin_a)
    assert prior.patient_id == current.patient_id
    return current, prior


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
def live_site(orm_beside_playwright: None, transactional_db: None, live_server: Any) -> Any:
    """The live server: the page, /static/ and the real /dicomweb/ in one process."""
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
