"""The audit page: alliance admins only, filters, CSV export, and reading it is audited."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from alliance import audit
from alliance.models import AuditEvent
from tests import factories
from tests.conftest import client_for


@pytest.fixture
def events(alliance_world):  # type: ignore[no-untyped-def]
    w = alliance_world
    owner = audit.Actor.for_user(w.owner.user)
    audit.record(
        actor=owner,
        action="study.view",
        object_type="study",
        object_id="1.2.3",
        patient="P-1001",
        basis="own-institution",
    )
    audit.record(
        actor=owner, action="study.view", object_type="study", object_id="1.2.4", patient="P-2002", outcome="denied"
    )
    audit.record(
        actor=audit.Actor.for_user(w.stranger.user),
        action="wado.retrieve",
        object_type="study",
        object_id="9.9",
        patient="P-3003",
    )
    other = factories.make_institution(
        alliance=factories.AllianceFactory(name="Other"), name="Elsewhere", ae_title="ELSE"
    )
    outsider = factories.make_doctor(institution=other, username="elsewhere_doc")
    audit.record(
        actor=audit.Actor.for_user(outsider.user),
        action="study.view",
        object_type="study",
        object_id="7.7",
        patient="P-7",
    )
    return w


def _rows(response) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    return list(response.context["page_obj"].object_list)


def test_anonymous_is_sent_to_sign_in(db: None) -> None:
    for name in ("audit_log", "audit_csv"):
        response = Client().get(reverse(name))
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("persona", ["owner", "specialist", "inst_admin_a", "hosp_admin"])
def test_only_alliance_admins_read_the_audit_log(events, persona: str) -> None:  # type: ignore[no-untyped-def]
    client = client_for(getattr(events, persona))
    assert client.get(reverse("audit_log")).status_code == 403
    assert client.get(reverse("audit_csv")).status_code == 403
    assert not AuditEvent.objects.filter(action__startswith="audit.").exists()


def test_audit_log_shows_its_alliance_only(events) -> None:  # type: ignore[no-untyped-def]
    rows = _rows(client_for(events.alliance_admin).get(reverse("audit_log")))
    names = {row.actor_name for row in rows}
    assert {"owner", "stranger"} <= names
    assert "elsewhere_doc" not in names


def test_the_systems_events_about_a_patient_show_in_the_patients_alliance_only(events) -> None:  # type: ignore[no-untyped-def]
    """A job of no institution (routing, purge, reminders) is filed under the institution holding
    the patient it names: the audit log of that alliance shows it, another alliance's does not;
    its own jobs that name no patient show to every alliance admin."""
    other = factories.make_institution(alliance=factories.AllianceFactory(name="Far"), name="Far", ae_title="FAR")
    ours = factories.PatientFactory(issuer=events.clin_a)
    theirs = factories.PatientFactory(issuer=other)
    for patient, study in ((ours, "5.5.ours"), (theirs, "5.5.theirs")):
        audit.record(
            actor=audit.SYSTEM, action="route.send", object_type="study", object_id=study, patient=str(patient.pk)
        )
    audit.record(actor=audit.SYSTEM, action="maintenance.run", object_type="job", object_id="nightly")
    assert AuditEvent.objects.get(object_id="5.5.ours").actor_institution_id == events.clin_a.pk
    assert AuditEvent.objects.get(object_id="5.5.theirs").actor_institution_id == other.pk
    shown = {row.object_id for row in _rows(client_for(events.alliance_admin).get(reverse("audit_log")))}
    assert {"5.5.ours", "nightly"} <= shown
    assert "5.5.theirs" not in shown
    far_admin = factories.make_doctor(institution=other, username="far_admin", roles=["alliance_admin"])
    shown_far = {row.object_id for row in _rows(client_for(far_admin).get(reverse("audit_log")))}
    assert {"5.5.theirs", "nightly"} <= shown_far
    assert "5.5.ours" not in shown_far


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"actor": "own"}, {"1.2.3", "1.2.4"}),
        ({"action": "wado"}, {"9.9"}),
        ({"object_type": "study", "object_id": "1.2.4"}, {"1.2.4"}),
        ({"study": "1.2.3"}, {"1.2.3"}),
        ({"outcome": "denied"}, {"1.2.4"}),
        ({"action": "study", "actor": "stranger"}, set()),
    ],
)
def test_audit_filters(events, filters, expected) -> None:  # type: ignore[no-untyped-def]
    rows = _rows(client_for(events.alliance_admin).get(reverse("audit_log"), filters))
    assert {row.object_id for row in rows if row.object_type == "study"} == expected


def test_audit_filter_by_institution(events) -> None:  # type: ignore[no-untyped-def]
    rows = _rows(client_for(events.alliance_admin).get(reverse("audit_log"), {"institution": events.clin_b.pk}))
    assert {row.actor_name for row in rows} == {"stranger"}


def test_audit_date_range(events) -> None:  # type: ignore[no-untyped-def]
    client = client_for(events.alliance_admin)
    today = timezone.localdate()
    tomorrow = today + timedelta(days=1)
    assert _rows(client.get(reverse("audit_log"), {"date_from": today.isoformat(), "date_to": today.isoformat()}))
    assert not _rows(client.get(reverse("audit_log"), {"date_from": tomorrow.isoformat()}))
    assert not _rows(client.get(reverse("audit_log"), {"date_to": (today - timedelta(days=1)).isoformat()}))


def test_reversed_date_range_is_refused_on_the_end_date(events) -> None:  # type: ignore[no-untyped-def]
    today = timezone.localdate()
    response = client_for(events.alliance_admin).get(
        reverse("audit_log"), {"date_from": today.isoformat(), "date_to": (today - timedelta(days=2)).isoformat()}
    )
    assert "date_to" in response.context["form"].errors
    assert _rows(response) == []


def test_reading_the_audit_log_is_audited_with_its_filters(events) -> None:  # type: ignore[no-untyped-def]
    client_for(events.alliance_admin).get(reverse("audit_log"), {"study": "1.2.3"})
    event = AuditEvent.objects.get(action="audit.view")
    assert event.actor_name == "alliance_admin"
    assert event.detail["filters"] == {"study": "1.2.3"}


def test_audit_log_is_paginated_with_filters_kept(events, django_assert_max_num_queries) -> None:  # type: ignore[no-untyped-def]
    actor = audit.Actor.for_user(events.owner.user)
    for n in range(60):
        audit.record(actor=actor, action="study.view", object_type="study", object_id=f"bulk.{n}")
    client = client_for(events.alliance_admin)
    with django_assert_max_num_queries(12):
        first = client.get(reverse("audit_log"), {"actor": "owner"})
    assert len(_rows(first)) == 50
    assert "actor=owner&amp;page=2" in first.content.decode()
    second = client.get(reverse("audit_log"), {"actor": "owner", "page": 2})
    assert len(_rows(second)) == 62 - 50


def test_csv_export_streams_the_filtered_events_and_is_audited(events) -> None:  # type: ignore[no-untyped-def]
    response = client_for(events.alliance_admin).get(reverse("audit_csv"), {"actor": "owner", "action": "study"})
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {row["object_id"] for row in rows} == {"1.2.3", "1.2.4"}
    assert {row["patient"] for row in rows} == {"P-1001", "P-2002"}
    export = AuditEvent.objects.get(action="audit.export")
    assert export.detail["filters"] == {"actor": "owner", "action": "study"}


def test_csv_cells_cannot_become_spreadsheet_formulas(events) -> None:  # type: ignore[no-untyped-def]
    audit.record(actor=audit.Actor.for_user(events.owner.user), action="study.view", object_id="=HYPERLINK(1)")
    response = client_for(events.alliance_admin).get(reverse("audit_csv"), {"object_id": "=HYPERLINK(1)"})
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    assert [row["object_id"] for row in rows] == ["'=HYPERLINK(1)"]
