"""Fixtures for DICOMweb: a stored CT study of clinic A, and token clients per persona."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from rest_framework.test import APIClient

from alliance import audit, services
from imaging import ingest
from tests.imaging.dicomgen import make_ct_series, part10_bytes

BASE = "/dicomweb"


def token_client(doctor: Any) -> APIClient:
    client = APIClient()
    token = services.token_create(doctor=doctor, by=audit.SYSTEM)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def store(datasets: list[Any], institution: Any) -> list[bytes]:
    files = [part10_bytes(ds) for ds in datasets]
    for data in files:
        ingest.ingest_bytes(data, institution=institution, actor=audit.SYSTEM, via="test")
    return files


@pytest.fixture(autouse=True)
def _fast_passwords(settings) -> None:  # type: ignore[no-untyped-def]
    """Personas are made with passwords; Argon2 would dominate these tests' run time."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def ct(alliance_world) -> SimpleNamespace:  # type: ignore[no-untyped-def]
    """Three 64x64 CT slices of patient P1001 stored by clinic A."""
    datasets = make_ct_series(3, 64, 64, patient_id="P1001", patient_name="Doe^Jane")
    files = store(datasets, alliance_world.clin_a)
    first = datasets[0]
    return SimpleNamespace(
        datasets=datasets,
        files=files,
        study=first.StudyInstanceUID,
        series=first.SeriesInstanceUID,
        sops=[ds.SOPInstanceUID for ds in datasets],
        url=f"{BASE}/studies/{first.StudyInstanceUID}",
        instance_url=f"{BASE}/studies/{first.StudyInstanceUID}/series/{first.SeriesInstanceUID}/instances/"
        f"{first.SOPInstanceUID}",
    )


@pytest.fixture
def owner_client(alliance_world) -> APIClient:  # type: ignore[no-untyped-def]
    return token_client(alliance_world.owner)


@pytest.fixture
def stranger_client(alliance_world) -> APIClient:  # type: ignore[no-untyped-def]
    return token_client(alliance_world.stranger)
