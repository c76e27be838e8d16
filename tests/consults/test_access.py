"""Access follows the case: granted on request, read-only after sign, gone after cancel or reject."""

from __future__ import annotations

from typing import Any

import pytest
from django.http import Http404

from alliance.access import NOBODY, Principal, resolve_principal
from consults import access, services
from consults.models import Party, Status
from imaging import access as imaging_access
from tests.consults.conftest import walk
from tests.factories import StudyFactory


def who(doctor: Any) -> Principal:
    return resolve_principal(doctor.user)


def _sees_study(principal: Principal, study: Any) -> bool:
    try:
        imaging_access.get_study_for(principal, study.study_uid)
    except Http404:
        return False
    return imaging_access.studies_visible_to(principal).filter(pk=study.pk).exists()


def test_request_grants_the_pool_exactly_the_attached_studies(world: Any) -> None:
    other = StudyFactory(institution=world.clin_a)
    consult = walk(world, Status.REQUESTED)
    study = consult.studies.get()
    assert _sees_study(who(world.specialist), study)
    assert imaging_access.may_write_study(who(world.specialist), study)
    assert not _sees_study(who(world.specialist), other)
    assert not _sees_study(who(world.outsider_specialist), study)
    assert not _sees_study(who(world.stranger), study)
    assert not _sees_study(who(world.alliance_admin), study)


def test_named_request_grants_only_the_named_specialist(world: Any) -> None:
    consult = walk(world, Status.REQUESTED, named=True)
    study = consult.studies.get()
    assert _sees_study(who(world.specialist), study)
    assert imaging_access.basis_for(who(world.specialist), study) == f"consult:{consult.pk}"


@pytest.mark.parametrize("how", ["cancel", "reject"])
def test_after_cancel_or_reject_the_specialist_side_sees_nothing(world: Any, how: str) -> None:
    consult = walk(world, Status.REQUESTED)
    study = consult.studies.get()
    if how == "cancel":
        services.consult_cancel(consult=consult, by=who(world.owner), reason="Transferred.")
    else:
        services.consult_reject(consult=consult, by=who(world.hosp_admin), reason="Wrong desk.")
    user = who(world.specialist)
    with pytest.raises(Http404):
        imaging_access.get_study_for(user, study.study_uid)
    assert not imaging_access.studies_visible_to(user).filter(pk=study.pk).exists()
    assert not access.consults_visible_to(user).filter(pk=consult.pk).exists()
    with pytest.raises(Http404):
        access.get_consult_for(user, consult.pk)
    assert _sees_study(who(world.owner), study)


def test_after_cancel_of_a_claimed_case_the_owner_sees_nothing(world: Any) -> None:
    consult = walk(world, Status.ACCEPTED)
    study = consult.studies.get()
    services.consult_cancel(consult=consult, by=who(world.owner), reason="Transferred.")
    assert not _sees_study(who(world.specialist), study)
    assert not access.consults_visible_to(who(world.specialist)).filter(pk=consult.pk).exists()


def test_after_sign_the_specialist_keeps_read_only_access(world: Any) -> None:
    consult = walk(world, Status.COMPLETED)
    study = consult.studies.get()
    assert _sees_study(who(world.specialist), study)
    assert not imaging_access.may_write_study(who(world.specialist), study)
    assert access.consults_visible_to(who(world.specialist)).filter(pk=consult.pk).exists()


def test_the_requesting_clinic_sees_its_requests_and_others_do_not(world: Any) -> None:
    consult = walk(world, Status.REQUESTED)
    draft = walk(world, Status.DRAFT)
    visible = {p: set(access.consults_visible_to(who(getattr(world, p)))) for p in ("owner", "colleague", "stranger")}
    assert {consult, draft} <= visible["owner"]
    assert consult in visible["colleague"] and draft not in visible["colleague"]
    assert not visible["stranger"]
    assert not access.consults_visible_to(who(world.alliance_admin)).exists()
    assert not access.consults_visible_to(who(world.outsider_specialist)).exists()


def test_a_claimed_case_leaves_the_other_candidates_worklist(world: Any) -> None:
    from tests.factories import make_doctor

    second = make_doctor(institution=world.hosp, roles=["specialist"], username="second_reader")
    world.pool.members.add(second)
    consult = walk(world, Status.ACCEPTED)
    assert not access.consults_visible_to(who(second)).filter(pk=consult.pk).exists()
    assert access.consults_visible_to(who(world.specialist)).filter(pk=consult.pk).exists()


def test_with_the_consults_module_off_the_clinic_has_no_consults(world: Any) -> None:
    from alliance import services as membership
    from alliance.audit import SYSTEM
    from tests.conftest import client_for

    consult = walk(world, Status.REQUESTED)
    membership.institution_update(institution=world.clin_a, modules=["image_store"], by=SYSTEM)
    client = client_for(world.owner)
    assert client.get("/consults/").status_code == 404  # switched off: absent (issue 16)
    assert client.get(f"/consults/{consult.pk}/").status_code == 404
    assert client.get("/consults/new/").status_code == 404
    assert not access.may_request_consult(who(world.owner))


def test_pools_of_an_institution_without_consults_are_not_offered(world: Any) -> None:
    from alliance import services as membership
    from alliance.audit import SYSTEM

    membership.institution_update(institution=world.hosp, modules=["image_store"], by=SYSTEM)
    pools, specialists = access.consult_targets_for(who(world.owner))
    assert not pools.exists() and not specialists.exists()


def test_who_each_persona_is_to_a_requested_case(world: Any) -> None:
    consult = walk(world, Status.REQUESTED)
    personas = ["owner", "colleague", "specialist", "outsider_specialist", "stranger", "alliance_admin", "hosp_admin"]
    parties = {p: access.parties_of(who(getattr(world, p)), consult) for p in personas}
    assert parties == {
        "owner": {Party.REQUESTER},
        "colleague": frozenset(),
        "specialist": {Party.CANDIDATE},
        "outsider_specialist": frozenset(),
        "stranger": frozenset(),
        "alliance_admin": frozenset(),
        "hosp_admin": {Party.POOL_ADMIN},
    }
    assert access.actions_for(who(world.specialist), consult) == ["claim"]
    assert access.may_claim(who(world.specialist), consult)
    assert not access.may_claim(who(world.outsider_specialist), consult)


def test_anonymous_is_nobody_to_any_consult(world: Any) -> None:
    consult = walk(world, Status.REQUESTED)
    assert access.parties_of(NOBODY, consult) == frozenset()
    assert not access.consults_visible_to(NOBODY).exists()
    assert not access.may_request_consult(NOBODY)
    assert not access.studies_requestable_by(NOBODY).exists()
    with pytest.raises(Http404):
        access.get_consult_for(NOBODY, consult.pk)
