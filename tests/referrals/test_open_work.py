"""Referrals that wait for the user on the home page (referrals.selectors.waiting_for_action)."""

from __future__ import annotations

from typing import Any

from referrals import open_work, selectors
from referrals.models import Status
from tests.conftest import client_for
from tests.referrals.conftest import principal, walk


def test_request_waits_for_the_receiving_desk_only(world: Any) -> None:
    referral = walk(world, Status.REQUESTED)
    assert [r.pk for r in selectors.waiting_for_action(principal(world.desk))] == [referral.pk]
    assert [r.pk for r in selectors.waiting_for_action(principal(world.hosp_admin))] == [referral.pk]
    assert selectors.waiting_for_action(principal(world.receiver)) == []  # not on the desk
    assert selectors.waiting_for_action(principal(world.owner)) == []  # the desk has to answer
    assert selectors.waiting_for_action(principal(world.stranger)) == []


def test_proposed_date_waits_for_the_referrer(world: Any) -> None:
    referral = walk(world, Status.ON_HOLD)
    assert [r.pk for r in selectors.waiting_for_action(principal(world.owner))] == [referral.pk]
    assert selectors.waiting_for_action(principal(world.colleague)) == []
    assert selectors.waiting_for_action(principal(world.desk)) == []
    [item] = open_work.waiting(principal(world.owner), None)
    assert "Lead Hospital" in item.asked
    assert item.url.endswith(f"/referrals/{referral.pk}/")


def test_accepted_referral_no_longer_waits(world: Any) -> None:
    walk(world, Status.ACCEPTED)
    assert selectors.waiting_for_action(principal(world.desk)) == []


def test_desk_home_page_lists_the_request_with_the_patient(world: Any) -> None:
    referral = walk(world, Status.REQUESTED)
    page = client_for(world.desk).get("/").content.decode()
    assert 'id="home-work-referrals"' in page
    assert referral.patient.patient_id in page
    assert f"/referrals/{referral.pk}/" in page
