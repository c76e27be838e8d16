"""A signed consult report makes the patient's cloud film link (alliance setting film_on_sign),
and the report PDF carries that link's QR apart from the doctors' (issue 14)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from alliance.access import resolve_principal, settings_of
from consults.models import Status
from imaging import films
from imaging.models import FilmLink
from tests.conftest import client_for
from tests.consults.conftest import walk


def _open(link: FilmLink) -> tuple[Client, films.Issued]:
    made = films.issued(link)
    client = Client()
    answer = made.pin or link.patient.birth_date.isoformat()
    assert client.post(made.path, {"answer": answer}).status_code == 303
    return client, made


def test_signing_makes_the_patients_film_link_for_the_requesting_clinic(world: Any) -> None:
    consult = walk(world, Status.COMPLETED)
    link = FilmLink.objects.get(case=consult.basis)
    assert link.kind == "patient" and link.institution == world.clin_a
    assert set(link.studies.all()) == set(consult.studies.all())
    assert films.is_usable(link)


def test_no_film_link_on_signing_when_the_alliance_switched_it_off(world: Any) -> None:
    knobs = settings_of(world.alliance.pk)
    knobs.film_on_sign = False
    knobs.save()
    walk(world, Status.COMPLETED)
    assert not FilmLink.objects.exists()


def test_no_film_link_on_signing_when_the_clinic_has_no_cloud_film(world: Any) -> None:
    world.clin_a.modules = ["image_store", "consults"]
    world.clin_a.save()
    walk(world, Status.COMPLETED)
    assert not FilmLink.objects.exists()


def test_the_patient_reads_the_signed_report_as_text_and_pdf_through_the_link(world: Any) -> None:
    consult = walk(world, Status.COMPLETED)
    client, made = _open(FilmLink.objects.get(case=consult.basis))
    home = client.get(made.path).content.decode()
    assert consult.studies.get().description in home
    report = client.get(reverse("films:report", args=[made.handle, 1])).content.decode()
    assert "右上肺结节，直径8毫米。" in report and "Nodule 8 mm." in report
    pdf = client.get(reverse("films:report_pdf", args=[made.handle, 1]))
    assert pdf["Content-Type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    assert client.get(reverse("films:report", args=[made.handle, 2])).status_code == 404


def test_a_finished_consults_film_is_made_by_the_requesting_clinic_only(world: Any) -> None:
    knobs = settings_of(world.alliance.pk)
    knobs.film_on_sign = False
    knobs.save()
    consult = walk(world, Status.COMPLETED)
    with pytest.raises(films.ValidationError):
        films.film_create_for_case(case=consult.basis, by=resolve_principal(world.specialist.user))
    response = client_for(world.owner).post(reverse("imaging:film_new"), {"case": consult.basis})
    assert response.status_code == 200
    assert FilmLink.objects.get().case == consult.basis
    detail = client_for(world.owner).get(reverse("consults:detail", args=[consult.pk])).content.decode()
    assert 'id="film-links"' in detail


def test_an_unfinished_consult_has_no_film(world: Any) -> None:
    consult = walk(world, Status.IN_PROGRESS)
    with pytest.raises(films.ValidationError):
        films.film_create_for_case(case=consult.basis, by=resolve_principal(world.owner.user))


@pytest.mark.integration  # runs poppler's pdftotext
@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils (pdftotext) is not installed")
def test_report_pdf_carries_the_patients_film_qr_apart_from_the_doctors(world: Any, tmp_path: Path) -> None:
    consult = walk(world, Status.COMPLETED)
    made = films.issued(FilmLink.objects.get(case=consult.basis))
    pdf = client_for(world.owner).get(f"/consults/{consult.pk}/report.pdf", HTTP_ACCEPT_LANGUAGE="en").content
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True, text=True)
    assert "Scan to open the case" in text.stdout
    assert "For the patient: scan to see your images and report" in text.stdout
    assert made.code_display in text.stdout
