"""What the image store holds: files in the DICOM storage folder and index rows."""

from __future__ import annotations

from pathlib import Path

from imaging.models import Instance, Patient, Series, Study


def stored_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def index_counts() -> tuple[int, int, int, int]:
    return (Patient.objects.count(), Study.objects.count(), Series.objects.count(), Instance.objects.count())
