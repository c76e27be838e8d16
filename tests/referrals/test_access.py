"""referrals.access and referrals.selectors: who sees which referral, who is which party, where
one may refer to, the lists' tabs and counts, the calendar and what waits on the home page."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.http import Http404
from django.utils import timezone

from alliance import audit
from alliance.services import institution_update
from referrals import access, selectors, services
from referrals.models import Party, Status
from tests import factories
from tests.factories import StudyFactory
from tests.referrals.conftest import principal, walk

pytestmark = pytest.mark.django_db


def visible(world, who):  # type: ignore[no-untyped-def]
    return set(access.referrals_visible_to(principal(getattr(world, who))).values_list("pk", flat=True))


def test_drafts_are_their_authors_and_sent_referrals_both_sides(world) -> None:  # type: ignore[no-untyped-def]
    draft = walk(world, Status.DRAFT)
    sent = walk(world, Status.REQUESTED)
    assert visible(world, "owner") == {draft.pk, sent.pk}
    for who in ("colleague", "inst_admin_a", "desk", "hosp_admin", "receiver", "specialist"):
        assert visible(world, who) == {sent.pk}, who
    for who in ("stranger", "alliance_admin"):
        assert visible(world, who) == set(), who
    with pytest.raises(Http404):
        access.get_referral_for(principal(world.stranger), sent.pk)
    with pytest.raises(Http404):
        access.get_referral_for(principal(world.desk), draft.pk)
    with pytest.raises(Http404):
        access.get_referral_for(principal(world.owner), "nonsense")


def test_parties(world) -> None:  # type: ignore[no-untyped-def]
    referral = walk(world, Status.ACCEPTED)
    parties = {
        who: access.parties_of(principal(getattr(world, who)), referral) for who in ("owner", "desk", "receiver")
    }
    assert parties == {
        "owner": {Party.REFERRER},
        "desk": {Party.DESK},
        "receiver": {Party.RECEIVER},
    }
    assert access.parties_of(principal(world.hosp_admin), referral) == {Party.DESK}
    assert access.parties_of(principal(world.stranger), referral) == frozenset()
    assert access.actions_for(principal(world.desk), referral) == ["arrive", "no_show"]
    assert access.actions_for(principal(world.owner), referral) == ["cancel"]
    assert access.actions_for(principal(world.receiver), referral) == []


def test_the_module_switch_turns_referrals_off_for_the_institution(world) -> None:  # type: ignore[no-untyped-def]
    sent = walk(world, Status.REQUESTED)
    modules = [m for m in world.clin_a.modules if m != "referrals"]
    institution_update(institution=world.clin_a, modules=modules, by=audit.SYSTEM)
    owner = principal(world.owner)
    assert not access.may_use_referrals(owner) and not access.may_refer(owner)
    assert not access.referrals_visible_to(owner).exists()
    assert access.parties_of(owner, sent) == frozenset()
    assert selectors.outgoing_tabs(owner, {})[0] == {}
    assert selectors.waiting_counts(owner) == {"incoming": 0, "appointments_today": 0, "summaries": 0}
    assert not access.receiving_institutions_for(principal(world.desk)).filter(pk=world.clin_a.pk).exists()


def test_alliance_admin_does_not_refer(world) -> None:  # type: ignore[no-untyped-def]
    assert not access.may_use_referrals(principal(world.alliance_admin))


def test_receiving_institutions_follow_the_direction(world) -> None:  # type: ignore[no-untyped-def]
    factories.make_institution(level="tertiary", name="Other alliance", ae_title="OTHERA")
    owner = principal(world.owner)
    assert set(access.receiving_institutions_for(owner, "up")) == {world.hosp, world.office}
    assert set(access.receiving_institutions_for(owner, "same")) == {world.clin_b}
    assert set(access.receiving_institutions_for(owner, "down")) == set()
    assert set(access.receiving_institutions_for(principal(world.desk), "down")) == {world.clin_a, world.clin_b}


def test_studies_referable_are_the_institutions_own(world) -> None:  # type: ignore[no-untyped-def]
    own = StudyFactory(institution=world.clin_a)
    StudyFactory(institution=world.clin_b)
    assert list(access.studies_referable_by(principal(world.owner))) == [own]
    walk(world, Status.REQUESTED, study=own)
    assert own not in access.studies_referable_by(principal(world.desk))  # granted, not the hospital's own


def test_tabs_count_and_list_each_box(world) -> None:  # type: ignore[no-untyped-def]
    for state in (Status.DRAFT, Status.REQUESTED, Status.ON_HOLD, Status.ACCEPTED, Status.IN_PROGRESS):
        walk(world, state)
    walk(world, Status.COMPLETED)
    walk(world, Status.REJECTED)
    counts, rows = selectors.outgoing_tabs(principal(world.owner), {})
    assert counts == {"waiting": 2, "appointments": 1, "in_care": 1, "closed": 2, "drafts": 1}
    assert {r.status for r in rows} == {Status.REQUESTED, Status.ON_HOLD}
    counts, rows = selectors.incoming_tabs(principal(world.desk), {"tab": "appointments"})
    assert counts == {"waiting": 2, "appointments": 1, "in_care": 1, "closed": 2}
    assert [r.status for r in rows] == [Status.ACCEPTED]
    assert selectors.incoming_tabs(principal(world.owner), {})[0] == {
        "waiting": 0,
        "appointments": 0,
        "in_care": 0,
        "closed": 0,
    }
    # the colleague sees the institution's outgoing list but not the owner's draft
    assert selectors.outgoing_tabs(principal(world.colleague), {})[0]["drafts"] == 0


def test_filters(world) -> None:  # type: ignore[no-untyped-def]
    patient = factories.PatientFactory(issuer=world.clin_a, patient_id="PX-1", name="Li^Lei=李^雷")
    mine = walk(world, Status.REQUESTED, study=StudyFactory(institution=world.clin_a, patient=patient))
    walk(world, Status.REQUESTED)
    same = services.referral_create(
        by=principal(world.owner),
        studies=[StudyFactory(institution=world.clin_a)],
        direction="same",
        to_institution=world.clin_b,
        reason="r",
        send=True,
    )
    owner = principal(world.owner)

    def rows(**f):  # type: ignore[no-untyped-def]
        return {r.pk for r in selectors.outgoing_tabs(owner, f)[1]}

    assert rows(patient="李") == {mine.pk} == rows(patient="px-1")
    assert rows(direction="same") == {same.pk} == rows(institution=str(world.clin_b.pk))
    today = timezone.localdate()
    assert len(rows(date_from=str(today), date_to=str(today))) == 3
    assert rows(date_from=str(today + timedelta(days=1))) == set()
    assert len(rows(date_from="garbage")) == 3  # what does not parse does not filter


def test_waiting_counts_and_summaries_returned(world) -> None:  # type: ignore[no-untyped-def]
    walk(world, Status.REQUESTED)
    walk(world, Status.REQUESTED)
    today = walk(world, Status.REQUESTED)
    soon = timezone.now() + timedelta(minutes=5)
    if timezone.localtime(soon).date() != timezone.localdate():  # just before midnight: keep it today
        soon = timezone.now() + timedelta(seconds=5)
    services.referral_accept(
        referral=today, by=principal(world.desk), appointment_at=soon, department="Surgery", doctor=world.receiver
    )
    done = walk(world, Status.COMPLETED)
    assert selectors.waiting_counts(principal(world.desk)) == {"incoming": 2, "appointments_today": 1, "summaries": 0}
    assert selectors.waiting_counts(principal(world.receiver)) == {
        "incoming": 0,
        "appointments_today": 1,
        "summaries": 0,
    }
    assert selectors.waiting_counts(principal(world.owner))["summaries"] == 1
    assert selectors.summaries_returned(principal(world.owner)) == [done]
    services.notifications_mark_read(user=world.owner.user, referral=done)
    assert selectors.summaries_returned(principal(world.owner)) == []


def test_the_desk_calendar(world) -> None:  # type: ignore[no-untyped-def]
    accepted = walk(world, Status.ACCEPTED)
    walk(world, Status.REQUESTED)
    start = timezone.now()
    assert list(selectors.appointments_between(principal(world.desk), start, start + timedelta(days=2))) == [accepted]
    later = start + timedelta(days=3)
    assert not selectors.appointments_between(principal(world.desk), later, later + timedelta(days=7)).exists()
    assert not selectors.appointments_between(principal(world.stranger), start, start + timedelta(days=2)).exists()


def test_case_detail_lists_what_the_case_opens(world) -> None:  # type: ignore[no-untyped-def]
    study = StudyFactory(institution=world.clin_a)
    recent = StudyFactory(institution=world.clin_a, patient=study.patient, study_date=timezone.localdate())
    referral = walk(world, Status.IN_PROGRESS, study=study)
    case = selectors.case_detail(principal(world.desk), referral)
    assert case["studies"] == [study]
    assert case["arrival_studies"] == [recent]
    assert {g.content_object for g in case["grants"]} == {study, recent}
    assert case["linked_studies"] == [recent]
    assert [t.action for t in case["transitions"]] == ["create", "request", "accept", "arrive"]


def test_desk_pages_helpers(world) -> None:  # type: ignore[no-untyped-def]
    desk = selectors.desk_of(world.hosp)
    assert desk["admins"] == [world.hosp_admin] and [m.doctor for m in desk["members"]] == [world.desk]
    candidates = set(access.desk_candidates_for(principal(world.hosp_admin), world.hosp))
    assert world.desk not in candidates and world.receiver in candidates
    assert not access.desk_candidates_for(principal(world.desk), world.hosp).exists()
    referral = walk(world, Status.REQUESTED)
    assert world.receiver in access.appointment_doctors_for(principal(world.desk), referral)
    assert not access.appointment_doctors_for(principal(world.owner), referral).exists()
