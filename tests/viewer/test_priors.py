"""Priors in the viewer: the patient's other studies the user may see (same issuer, or a
linked patient), never another issuer's study of a patient without a link; opening one is
an audited read."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.urls import reverse

from alliance import audit
from alliance.models import AuditEvent
from imaging import grants
from imaging.patients import link_patients
from tests import factories
from tests.conftest import client_for
from tests.viewer.test_views import config_of, viewer_url

pytestmark = pytest.mark.django_db


def prior_uids(client: Any, study_uid: str) -> list[str]:
    config = config_of(client.get(viewer_url(study_uid)).content.decode())
    return [p["study_uid"] for p in config["priors"]]


def test_same_patient_studies_are_listed_newest_first_and_the_study_itself_is_not(alliance_world: Any) -> None:
    w = alliance_world
    current = factories.StudyFactory(institution=w.clin_a, study_date=dt.date(2026, 3, 1))
    older = factories.StudyFactory(institution=w.clin_a, patient=current.patient, study_date=dt.date(2024, 5, 2))
    newer = factories.StudyFactory(institution=w.clin_a, patient=current.patient, study_date=dt.date(2025, 7, 9))
    factories.StudyFactory(institution=w.clin_a)  # another patient of the same clinic
    assert prior_uids(client_for(w.owner), current.study_uid) == [newer.study_uid, older.study_uid]


def test_a_prior_of_another_issuer_is_offered_only_once_the_patients_are_linked(alliance_world: Any) -> None:
    w = alliance_world
    current = factories.StudyFactory(institution=w.hosp)
    # The same patient ID, issued by clinic A: another patient until a link says otherwise,
    # even though the hospital may see the study (a consult's grant).
    same_id = factories.PatientFactory(issuer=w.clin_a, patient_id=current.patient.patient_id)
    theirs = factories.StudyFactory(institution=w.clin_a, patient=same_id)
    grants.grant_study(study=theirs, grantee=grants.Grantee.institution(w.hosp), basis="consult:1", by=audit.SYSTEM)
    client = client_for(w.hosp_admin)
    assert client.get(viewer_url(theirs.study_uid)).status_code == 200, "the hospital sees the study itself"
    assert prior_uids(client, current.study_uid) == []
    prior_url = reverse("viewer:prior", args=[current.study_uid, theirs.study_uid])
    assert client.get(prior_url).status_code == 404, "nor is it opened as a prior by its URL"

    link_patients(patient=current.patient, linked=same_id, basis="referral:1", by=audit.SYSTEM)
    assert prior_uids(client, current.study_uid) == [theirs.study_uid]
    assert client.get(prior_url).status_code == 200


def test_a_linked_patients_study_the_user_may_not_see_is_not_offered(alliance_world: Any) -> None:
    w = alliance_world
    current = factories.StudyFactory(institution=w.hosp)
    other = factories.PatientFactory(issuer=w.clin_b, patient_id="B-1")
    hidden = factories.StudyFactory(institution=w.clin_b, patient=other)
    link_patients(patient=current.patient, linked=other, basis="referral:2", by=audit.SYSTEM)
    client = client_for(w.hosp_admin)
    assert prior_uids(client, current.study_uid) == []
    assert client.get(reverse("viewer:prior", args=[current.study_uid, hidden.study_uid])).status_code == 404


def test_opening_a_prior_is_an_audited_read_of_that_study(alliance_world: Any, ct_study: Any) -> None:
    w = alliance_world
    prior = factories.StudyFactory(institution=w.clin_a, patient=ct_study.patient, study_date=dt.date(2024, 1, 2))
    client = client_for(w.owner)
    listed = config_of(client.get(viewer_url(ct_study.study_uid)).content.decode())["priors"]
    assert [p["study_uid"] for p in listed] == [prior.study_uid]
    assert AuditEvent.objects.filter(object_id=prior.study_uid, action="study.list").count() == 1
    response = client.get(listed[0]["url"])
    assert response.status_code == 200
    assert response.json()["study_uid"] == prior.study_uid
    events = AuditEvent.objects.filter(object_id=prior.study_uid, action="study.view")
    assert [e.detail for e in events] == [{"via": "viewer-prior"}]


def test_a_stranger_cannot_open_a_prior_through_a_study_of_their_own(alliance_world: Any, ct_study: Any) -> None:
    w = alliance_world
    theirs = factories.StudyFactory(institution=w.clin_b, patient=factories.PatientFactory(issuer=w.clin_b))
    response = client_for(w.stranger).get(reverse("viewer:prior", args=[theirs.study_uid, ct_study.study_uid]))
    assert response.status_code == 404
    assert not AuditEvent.objects.filter(object_id=ct_study.study_uid, action="study.view").exists()


def test_a_prior_refused_is_recorded_as_a_denied_read_of_that_study(alliance_world: Any) -> None:
    w = alliance_world
    current = factories.StudyFactory(institution=w.hosp)
    other = factories.PatientFactory(issuer=w.clin_b, patient_id="B-2")
    hidden = factories.StudyFactory(institution=w.clin_b, patient=other)
    link_patients(patient=current.patient, linked=other, basis="referral:3", by=audit.SYSTEM)
    response = client_for(w.hosp_admin).get(reverse("viewer:prior", args=[current.study_uid, hidden.study_uid]))
    assert response.status_code == 404
    (event,) = AuditEvent.objects.filter(action=audit.DENIED_READ, object_id=hidden.study_uid)
    assert (event.object_type, event.patient, event.outcome) == ("study", str(other.pk), "denied")
    missing = client_for(w.hosp_admin).get(reverse("viewer:prior", args=[current.study_uid, "1.2.3.404"]))
    assert missing.status_code == 404 and missing.content == response.content
    assert not AuditEvent.objects.filter(object_id="1.2.3.404").exists()
