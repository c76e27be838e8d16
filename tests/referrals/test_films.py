"""Cloud film for a completed referral: either side gives the patient the images and the
returned summary; the patient's "who looked" names the referral in plain words."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.test import Client
from django.urls import reverse

from imaging import films
from imaging.models import FilmLink
from referrals.models import Status
from tests.conftest import client_for
from tests.factories import PatientFactory, StudyFactory
from tests.referrals.conftest import principal, walk

DOB = dt.date(1961, 3, 9)


def _completed(world: Any) -> Any:
    patient = PatientFactory(issuer=world.clin_a, patient_id="R-5521", name="ZHAO^LEI", birth_date=DOB)
    study = StudyFactory(institution=world.clin_a, patient=patient, description="CT CHEST", series__instances=2)
    return walk(world, Status.COMPLETED, study=study), study


def _opened(made: films.Issued) -> Client:
    client = Client()
    response = client.post(made.path, {"answer": DOB.isoformat()}, REMOTE_ADDR="10.0.0.9")
    assert response.status_code == 303, response.content[:300]
    return client


def test_the_referrer_makes_a_film_link_for_a_completed_referral_through_the_api(world: Any) -> None:
    referral, study = _completed(world)
    response = client_for(world.owner).post(
        "/api/v1/films/", {"referral": referral.pk}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    link = FilmLink.objects.get(pk=response.json()["id"])
    assert link.case == referral.basis and list(link.studies.all()) == [study]


def test_the_patient_reads_the_returned_summary_through_the_link(world: Any) -> None:
    referral, _study = _completed(world)
    made = films.film_create_for_case(case=referral.basis, by=principal(world.owner))
    patient = _opened(made)
    home = patient.get(reverse("films:home", args=[made.handle]), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    report = patient.get(reverse("films:report", args=[made.handle, 1]), HTTP_ACCEPT_LANGUAGE="en")
    assert "CT CHEST" in home
    assert report.status_code == 200 and referral.feedback in report.content.decode()


def test_the_receiving_hospital_may_give_the_film_but_an_unrelated_clinic_may_not(world: Any) -> None:
    referral, _study = _completed(world)
    made = films.film_create_for_case(case=referral.basis, by=principal(world.desk))
    assert made.link.institution_id == world.hosp.pk
    refused = client_for(world.stranger).post(
        "/api/v1/films/", {"referral": referral.pk}, content_type="application/json"
    )
    assert refused.status_code == 400


def test_an_open_referral_has_no_film_yet(world: Any) -> None:
    referral = walk(world, Status.ACCEPTED)
    response = client_for(world.owner).post(
        "/api/v1/films/", {"referral": referral.pk}, content_type="application/json"
    )
    assert response.status_code == 400
    page = client_for(world.owner).get(reverse("referrals:detail", args=[referral.pk])).content.decode()
    assert 'id="film-links"' not in page


def test_the_case_page_offers_the_film_link_once_completed(world: Any) -> None:
    referral, _study = _completed(world)
    page = client_for(world.owner).get(reverse("referrals:detail", args=[referral.pk]), HTTP_ACCEPT_LANGUAGE="en")
    assert 'id="film-links"' in page.content.decode()
    assert f'value="{referral.basis}"' in page.content.decode()


def test_who_looked_shows_the_hospitals_reading_for_the_referral(world: Any) -> None:
    referral, study = _completed(world)
    client_for(world.desk).get(reverse("imaging:study_detail", args=[study.study_uid]))
    made = films.film_create_for_case(case=referral.basis, by=principal(world.owner))
    page = _opened(made).get(reverse("films:who", args=[made.handle]), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Lead Hospital" in page
    assert "A referral to another hospital" in page
    assert referral.basis not in page


def test_switching_referrals_off_with_an_open_referral_asks_first_and_says_what_happens(world: Any) -> None:
    walk(world, Status.REQUESTED)
    modules = [m for m in world.hosp.modules if m != "referrals"]
    data = {
        "name": world.hosp.name,
        "level": world.hosp.level,
        "parent": world.hosp.parent_id or "",
        "ae_title": world.hosp.ae_title,
        "modules": modules,
    }
    admin = client_for(world.alliance_admin)
    asked = admin.post(f"/manage/institutions/{world.hosp.pk}/edit/", data, HTTP_ACCEPT_LANGUAGE="en")
    assert asked.status_code == 200
    assert "Open referrals: 0 sent by Lead Hospital, 1 sent to it." in asked.content.decode()
    world.hosp.refresh_from_db()
    assert "referrals" in world.hosp.modules
