"""Access follows the case: granted on request, read-only after sign, gone after cancel or reject."""

from __future__ import annotations

from typing import Any

import pytest
from django.http import Http404

from alliance import access
from consults import services
from consults.models import Status
from tests.consults.conftest import walk
from tests.factories import StudyFactory


def _sees_study(user: Any, study: Any) -> bool:
    try:
        access.get_study_for(user, study.study_uid)
    except Http404:
        return False
    return access.studies_visible_to(user).filter(pk=study.pk).exists()


def test_request_grants_the_pool_exactly_the_attached_studies(world: Any) -> None:
    other = StudyFactory(institution=world.clin_a)
    consult = walk(world, Status.REQUESTED)
    study = consult.studies.get()
    assert _sees_study(world.specialist.user, study)
    assert access.may_write_study(world.specialist.user, study)
    assert not _sees_study(world.specialist.user, other)
    assert not _sees_study(world.outsider_specialist.user, study)
    assert not _sees_study(world.stranger.user, study)
    assert not _sees_study(world.alliance_admin.user, study)


def test_named_request_grants_only_the_named_specialist(world: Any) -> None:
    consult = walk(world, Status.REQUESTED, named=True)
    study = consult.studies.get()
    assert _sees_study(world.specialist.user, study)
    assert access.basis_for(world.specialist.user, study) == f"consult:{consult.pk}"


@pytest.mark.parametrize("how", ["cancel", "reject"])
def test_after_cancel_or_reject_the_specialist_side_sees_nothing(world: Any, how: str) -> None:
    consult = walk(world, Status.REQUESTED)
    study = consult.studies.get()
    if how == "cancel":
        services.consult_cancel(consult=consult, by=world.owner.user, reason="Transferred.")
    else:
        services.consult_reject(consult=consult, by=world.hosp_admin.user, reason="Wrong desk.")
    user = world.specialist.user
    with pytest.raises(Http404):
        access.get_study_for(user, study.study_uid)
    assert not access.studies_visible_to(user).filter(pk=study.pk).exists()
    assert not access.consults_visible_to(user).filter(pk=consult.pk).exists()
    with pytest.raises(Http404):
        access.get_consult_for(user, consult.pk)
    assert _sees_study(world.owner.user, study)


def test_after_cancel_of_a_claimed_case_the_owner_sees_nothing(world: Any) -> None:
    consult = walk(world, Status.ACCEPTED)
    study = consult.studies.get()
    services.consult_cancel(consult=consult, by=world.owner.user, reason="Transferred.")
    assert not _sees_study(world.specialist.user, study)
    assert not access.consults_visible_to(world.specialist.user).filter(pk=consult.pk).exists()


def test_after_sign_the_specialist_keeps_read_only_access(world: Any) -> None:
    consult = walk(world, Status.COMPLETED)
    study = consult.studies.get()
    assert _sees_study(world.specialist.user, study)
    assert not access.may_write_study(world.specialist.user, study)
    assert access.consults_visible_to(world.specialist.user).filter(pk=consult.pk).exists()


def test_the_requesting_clinic_sees_its_requests_and_others_do_not(world: Any) -> None:
    consult = walk(world, Status.REQUESTED)
    draft = walk(world, Status.DRAFT)
    visible = {p: set(access.consults_visible_to(getattr(world, p).user)) for p in ("owner", "colleague", "stranger")}
    assert {consult, draft} <= visible["owner"]
    assert consult in visible["colleague"] and draft not in visible["colleague"]
    assert not visible["stranger"]
    assert not access.consults_visible_to(world.alliance_admin.user).exists()
    assert not access.consults_visible_to(world.outsider_specialist.user).exists()


def test_a_claimed_case_leaves_the_other_candidates_worklist(world: Any) -> None:
    from tests.factories import make_doctor

    second = make_doctor(institution=world.hosp, roles=["specialist"], username="second_reader")
    world.pool.members.add(second)
    consult = walk(world, Status.ACCEPTED)
    assert not access.consults_visible_to(second.user).filter(pk=consult.pk).exists()
    assert access.consults_visible_to(world.specialist.user).filter(pk=consult.pk).exists()


def test_with_the_consults_module_off_the_clinic_has_no_consults(world: Any) -> None:
    from alliance import services as membership
    from alliance.audit import SYSTEM
    from tests.conftest import client_for

    consult = walk(world, Status.REQUESTED)
    membership.institution_update(institution=world.clin_a, modules=["image_store"], by=SYSTEM)
    client = client_for(world.owner)
    assert client.get("/consults/").status_code == 403
    assert client.get(f"/consults/{consult.pk}/").status_code == 404
    assert client.get("/consults/new/").status_code == 403
    assert not access.may_request_consult(type(world.owner.user).objects.get(pk=world.owner.user.pk))


def test_pools_of_an_institution_without_consults_are_not_offered(world: Any) -> None:
    from alliance import services as membership
    from alliance.audit import SYSTEM

    membership.institution_update(institution=world.hosp, modules=["image_store"], by=SYSTEM)
    pools, specialists = access.consult_targets_for(world.owner.user)
    assert not pools.exists() and not specialists.exists()
