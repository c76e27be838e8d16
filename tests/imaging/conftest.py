"""Fixtures for the image store: an institution that sends, and a look at what got stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from alliance import audit
from imaging.dicom import accel
from tests import factories


@pytest.fixture
def clinic(db):  # type: ignore[no-untyped-def]
    return factories.make_institution(name="Clinic A", ae_title="CLINA")


@pytest.fixture
def other_clinic(db):  # type: ignore[no-untyped-def]
    return factories.make_institution(name="Clinic B", ae_title="CLINB")


@pytest.fixture
def actor(clinic) -> audit.Actor:  # type: ignore[no-untyped-def]
    return audit.Actor("device", "1", "CT_CLINA", clinic.pk)


@pytest.fixture
def dicom_dir(settings) -> Path:  # type: ignore[no-untyped-def]
    return Path(settings.STORAGES["dicom"]["OPTIONS"]["location"])


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):  # type: ignore[no-untyped-def]
    """The persona fixture sets ten passwords; Argon2 makes that seconds per test on two cores."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def accelerated(tmp_path: Path) -> Iterator[Path]:
    """imaging/dicom/accel installed for one test (undone after); received files go to the
    folder it yields."""
    folder = tmp_path / "rx"
    folder.mkdir()
    assert accel.install(folder)
    yield folder
    accel.uninstall()


@pytest.fixture(params=[True, False], ids=["accelerated", "plain"])
def dimse_path(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[bool]:
    """Each DIMSE path in turn, as DICOM_ACCELERATE=1 and =0 configure the server."""
    folder = tmp_path / "rx"
    folder.mkdir()
    assert accel.install(folder, enabled=request.param) is request.param
    yield request.param
    accel.uninstall()
