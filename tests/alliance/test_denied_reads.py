"""Issue 22 item 2: a 404 on an object that exists but is not the caller's is a denied read in
the audit trail (actor, object, route, source), one row per actor, object and minute plus one
with the count once the minute is over; the answer is the same as a missing object's."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from alliance import audit
from alliance.access import resolve_principal
from alliance.models import AuditEvent, DeniedReadTally
from consults import access as consult_access
from imaging import access as imaging_access
from imaging.dicom.handlers import Peer
from imaging.dicom.identifiers import QueryRequest
from imaging.dimse_services import DjangoServices
from referrals import access as referral_access
from tests.consults.conftest import walk as walk_consult
from tests.factories import SeriesFactory, StudyFactory
from tests.referrals.conftest import walk as walk_referral

pytestmark = pytest.mark.django_db


def stranger_client(world: Any, address: str = "198.51.100.4") -> Client:
    client = Client(REMOTE_ADDR=address)
    client.force_login(world.stranger.user)
    return client


def denied_events() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(outcome=AuditEvent.Outcome.DENIED).order_by("id"))


def test_a_refused_study_page_is_audited_with_actor_object_route_and_source(alliance_world: Any) -> None:
    study = StudyFactory(institution=alliance_world.clin_a)
    response = stranger_client(alliance_world).get(reverse("imaging:study_detail", args=[study.study_uid]))
    assert response.status_code == 404
    (event,) = denied_events()
    assert (event.action, event.actor_name, event.actor_institution_id) == (
        audit.DENIED_READ,
        "stranger",
        alliance_world.clin_b.pk,
    )
    assert (event.object_type, event.object_id, event.patient) == ("study", study.study_uid, str(study.patient_id))
    assert event.source == "198.51.100.4"
    assert event.detail["route"] == "imaging:study_detail"


def test_a_missing_study_is_no_denied_read(alliance_world: Any) -> None:
    response = stranger_client(alliance_world).get(reverse("imaging:study_detail", args=["1.2.3.999"]))
    assert response.status_code == 404
    assert denied_events() == []


def test_the_refusal_answers_exactly_as_a_missing_study(alliance_world: Any) -> None:
    study = StudyFactory(institution=alliance_world.clin_a, study_uid="1.2.826.0.1.77")
    client = stranger_client(alliance_world)
    forbidden = client.get(reverse("imaging:study_detail", args=[study.study_uid]))
    missing = client.get(reverse("imaging:study_detail", args=["1.2.826.0.1.78"]))
    assert forbidden.status_code == missing.status_code == 404
    assert forbidden.content.replace(b"77", b"78") == missing.content
    assert sorted(forbidden.headers.items()) == sorted(missing.headers.items())


def test_a_scan_of_thousands_writes_one_row_per_actor_object_and_minute(alliance_world: Any) -> None:
    study = StudyFactory(institution=alliance_world.clin_a)
    client = stranger_client(alliance_world)
    for _ in range(60):
        assert client.get(reverse("imaging:study_detail", args=[study.study_uid])).status_code == 404
    events = denied_events()
    tallies = list(DeniedReadTally.objects.all())
    # a minute may turn during the loop: then there are two of each
    assert len(events) == len(tallies) in (1, 2)
    assert sum(t.count for t in tallies) == 60


def test_the_count_of_a_minute_is_written_once_it_is_over(alliance_world: Any) -> None:
    study = StudyFactory(institution=alliance_world.clin_a)
    stranger = resolve_principal(alliance_world.stranger.user)
    for _ in range(25):
        with pytest.raises(Exception, match="No such study"):
            imaging_access.get_study_for(stranger, study.study_uid)
    later = timezone.now() + timedelta(minutes=2)
    repeated = sum(t.count for t in DeniedReadTally.objects.all() if t.count > 1)
    assert audit.summarize_denials(later) >= 1
    assert audit.summarize_denials(later) == 0  # safe to run twice
    counts = AuditEvent.objects.filter(action=audit.DENIED_READ_COUNT)
    assert sum(e.detail["count"] for e in counts) == repeated
    assert {e.object_id for e in counts} == {study.study_uid}
    assert all(e.outcome == AuditEvent.Outcome.DENIED and e.patient == str(study.patient_id) for e in counts)


MINUTE = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)


def _denial(world: Any, object_id: str, *, seconds: int = 10, object_type: str = "study") -> audit.Denial:
    actor = resolve_principal(world.stranger.user).actor
    return audit.Denial(
        actor, object_type, object_id, "", "imaging:study_detail", "", MINUTE + timedelta(seconds=seconds)
    )


def test_a_summarised_minute_leaves_no_tally_behind(alliance_world: Any) -> None:
    audit.record_denials([_denial(alliance_world, "1.2.3"), _denial(alliance_world, "1.2.3", seconds=20)])
    audit.record_denials([_denial(alliance_world, "1.2.4")])
    assert audit.summarize_denials(MINUTE + timedelta(minutes=3)) == 1
    assert not DeniedReadTally.objects.exists()
    (count,) = AuditEvent.objects.filter(action=audit.DENIED_READ_COUNT)
    assert (count.object_id, count.detail["count"]) == ("1.2.3", 2)


def test_a_minute_just_over_is_left_for_denials_still_being_written(alliance_world: Any) -> None:
    audit.record_denials([_denial(alliance_world, "1.2.3"), _denial(alliance_world, "1.2.3", seconds=59)])
    # a response sent at 09:15:59 writes its denials a moment after the minute turned
    assert audit.summarize_denials(MINUTE + timedelta(minutes=1, seconds=5)) == 0
    audit.record_denials([_denial(alliance_world, "1.2.3", seconds=58)])
    assert audit.summarize_denials(MINUTE + timedelta(minutes=2, seconds=5)) == 1
    count = AuditEvent.objects.get(action=audit.DENIED_READ_COUNT)
    assert count.detail["count"] == 3


def test_one_denial_that_cannot_be_written_does_not_stop_the_others(alliance_world: Any, caplog: Any) -> None:
    too_long = _denial(alliance_world, "1.2.3", object_type="x" * 200)
    with caplog.at_level(logging.ERROR, logger="alliance.audit"):
        audit.record_denials([too_long, _denial(alliance_world, "1.2.4")])
    assert [e.object_id for e in denied_events()] == ["1.2.4"]
    assert any(r.levelno == logging.ERROR and "1.2.3" in r.getMessage() for r in caplog.records)


def test_a_refused_series_thumbnail_is_a_denied_read_of_the_series(alliance_world: Any) -> None:
    series = SeriesFactory(study=StudyFactory(institution=alliance_world.clin_a))
    url = reverse("imaging:thumbnail", args=[series.study.study_uid, series.series_uid])
    assert stranger_client(alliance_world).get(url).status_code == 404
    assert {(e.object_type, e.detail["route"]) for e in denied_events()} <= {
        ("study", "imaging:thumbnail"),
        ("series", "imaging:thumbnail"),
    }
    assert denied_events()


def test_a_refused_consult_and_its_report_are_denied_reads(alliance_world: Any) -> None:
    consult = walk_consult(alliance_world, "completed")
    client = stranger_client(alliance_world)
    assert client.get(reverse("consults:detail", args=[consult.pk])).status_code == 404
    assert client.get(reverse("consults:report_pdf", args=[consult.pk])).status_code == 404
    events = denied_events()
    assert {(e.object_type, e.object_id) for e in events} == {("consult", str(consult.pk))}
    assert events[0].patient == str(consult.studies.get().patient_id)
    assert DeniedReadTally.objects.get().count == 2


def test_consult_access_function_audits_outside_a_request_too(alliance_world: Any) -> None:
    consult = walk_consult(alliance_world, "requested")
    with pytest.raises(Exception, match="No such consult"):
        consult_access.get_consult_for(resolve_principal(alliance_world.stranger.user), consult.pk)
    with pytest.raises(Exception, match="No such consult"):
        consult_access.get_consult_for(resolve_principal(alliance_world.stranger.user), consult.pk + 1000)
    (event,) = denied_events()
    assert (event.object_type, event.object_id, event.detail["route"]) == ("consult", str(consult.pk), "")


def test_a_refused_referral_is_a_denied_read(alliance_world: Any) -> None:
    alliance_world.desk = alliance_world.hosp_admin
    referral = walk_referral(alliance_world, "requested")
    response = stranger_client(alliance_world).get(reverse("referrals:detail", args=[referral.pk]))
    assert response.status_code == 404
    (event,) = denied_events()
    assert (event.object_type, event.object_id, event.patient) == (
        "referral",
        str(referral.pk),
        str(referral.patient_id),
    )
    with pytest.raises(Exception, match="No such referral"):
        referral_access.get_referral_for(resolve_principal(alliance_world.stranger.user), referral.pk + 1000)
    assert len(denied_events()) == 1


def _peer(world: Any) -> Peer:
    from alliance import services

    device = services.device_create(institution=world.clin_a, ae_title="WS_A", host="*", port=104, by=audit.SYSTEM)
    return Peer("WS_A", "CLINA", "127.0.0.1", 4100, principal=device)


def test_c_find_events_record_the_query_keys(alliance_world: Any) -> None:
    study = StudyFactory(institution=alliance_world.clin_a, patient__patient_id="P-77")
    criteria = {"PatientID": "P-77", "StudyInstanceUID": study.study_uid, "PatientName": ""}
    query = QueryRequest(root="study", level="STUDY", criteria=criteria, keywords=list(criteria))
    assert len(list(DjangoServices(check_host=False).find(_peer(alliance_world), query))) == 1
    event = AuditEvent.objects.get(action="dicom.find")
    assert event.detail["keys"] == {"PatientID": "P-77", "StudyInstanceUID": study.study_uid}
    assert event.detail["level"] == "STUDY"


def test_c_get_events_record_the_query_keys_even_when_nothing_matched(alliance_world: Any) -> None:
    query = QueryRequest(
        root="study",
        level="SERIES",
        criteria={"StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.3.4"},
        keywords=["StudyInstanceUID", "SeriesInstanceUID"],
    )
    DjangoServices(check_host=False).retrieve(_peer(alliance_world), query, None)
    event = AuditEvent.objects.get(action="dicom.get")
    assert event.detail["keys"] == {"StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.3.4"}
    assert (event.detail["level"], event.detail["instances"]) == ("SERIES", 0)


def test_one_tally_that_cannot_be_summarised_does_not_stop_the_others(
    alliance_world: Any, caplog: Any, monkeypatch: Any
) -> None:
    for object_id in ("1.2.3", "1.2.4"):
        audit.record_denials([_denial(alliance_world, object_id), _denial(alliance_world, object_id, seconds=30)])
    record = audit.record

    def failing_for_one(**kwargs: Any) -> Any:
        if kwargs["object_id"] == "1.2.3":
            raise RuntimeError("audit write failed")
        return record(**kwargs)

    monkeypatch.setattr(audit, "record", failing_for_one)
    with caplog.at_level(logging.ERROR, logger="alliance.audit"):
        assert audit.summarize_denials(MINUTE + timedelta(minutes=3)) == 1
    assert [t.object_id for t in DeniedReadTally.objects.all()] == ["1.2.3"]  # kept for the next run
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
