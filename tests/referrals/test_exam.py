"""A referral's receiving side schedules an exam of the referred patient on its worklist."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from imaging.models import ScheduledStep
from referrals.models import Status
from tests.conftest import client_for
from tests.referrals.conftest import walk

pytestmark = pytest.mark.django_db


def test_the_desk_schedules_an_exam_for_an_accepted_referral(world: Any) -> None:
    referral = walk(world, Status.ACCEPTED)
    client = client_for(world.desk)
    page = client.get(f"/referrals/{referral.pk}/")
    assert b'id="schedule-exam"' in page.content
    form = client.get(f"/referrals/{referral.pk}/exam/")
    local = timezone.localtime(referral.appointment_at).strftime("%Y-%m-%dT%H:%M")
    assert local.encode() in form.content  # the appointment is the default start
    response = client.post(
        f"/referrals/{referral.pk}/exam/",
        {"modality": "CT", "scheduled_at": local, "procedure_description": "CT chest"},
    )
    assert response.status_code == 302
    step = ScheduledStep.objects.get()
    assert (step.institution_id, step.source, step.referral_id) == (world.hosp.pk, "referral", referral.pk)
    assert step.patient_id == referral.patient_id  # the referrer's Patient ID, no local one recorded
    assert step.accession_number.encode() in client.get(f"/referrals/{referral.pk}/").content


@pytest.mark.parametrize("persona", ["owner", "stranger", "specialist"])
def test_others_cannot_schedule_an_exam_for_it(world: Any, persona: str) -> None:
    referral = walk(world, Status.ACCEPTED)
    response = client_for(getattr(world, persona)).post(
        f"/referrals/{referral.pk}/exam/", {"modality": "CT", "scheduled_at": "2030-01-01T09:00"}
    )
    assert response.status_code in (403, 404)
    assert not ScheduledStep.objects.exists()


def test_a_referral_not_yet_accepted_offers_no_exam(world: Any) -> None:
    referral = walk(world, Status.REQUESTED)
    client = client_for(world.desk)
    assert b'id="schedule-exam"' not in client.get(f"/referrals/{referral.pk}/").content
    assert client.get(f"/referrals/{referral.pk}/exam/").status_code == 403
