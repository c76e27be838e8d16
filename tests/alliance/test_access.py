"""The one access policy: own institution, grants with a basis, expiry and revocation."""

from datetime import timedelta

import pytest
from django.http import Http404
from django.utils import timezone

from alliance import access, audit
from alliance.models import AuditEvent
from imaging.models import Patient, Study


def _study(institution, uid="1.2.3.4"):  # type: ignore[no-untyped-def]
    patient = Patient.objects.create(issuer=institution, patient_id="1001", name="ZHANG^SAN")
    return Study.objects.create(study_uid=uid, patient=patient, institution=institution)


@pytest.fixture
def study_a(alliance_world):  # type: ignore[no-untyped-def]
    return _study(alliance_world.clin_a)


def visible(doctor, study) -> bool:  # type: ignore[no-untyped-def]
    return access.studies_visible_to(doctor.user).filter(pk=study.pk).exists()


def test_owner_and_colleague_see_own_institution_study(alliance_world, study_a):  # type: ignore[no-untyped-def]
    assert visible(alliance_world.owner, study_a)
    assert visible(alliance_world.colleague, study_a)
    assert access.basis_for(alliance_world.owner.user, study_a) == "own-institution"


def test_others_see_nothing_without_grant(alliance_world, study_a):  # type: ignore[no-untyped-def]
    for persona in ("specialist", "outsider_specialist", "stranger", "alliance_admin"):
        assert not visible(getattr(alliance_world, persona), study_a), persona


def test_pool_grant_opens_study_to_pool_members_only(alliance_world, study_a):  # type: ignore[no-untyped-def]
    access.grant_study(
        study=study_a, grantee=access.Grantee.pool(alliance_world.pool), basis="consult:1", by=audit.SYSTEM
    )
    assert visible(alliance_world.specialist, study_a)
    assert access.basis_for(alliance_world.specialist.user, study_a) == "consult:1"
    assert not visible(alliance_world.outsider_specialist, study_a)
    assert not visible(alliance_world.stranger, study_a)


def test_revoked_grant_ends_access_and_is_audited(alliance_world, study_a):  # type: ignore[no-untyped-def]
    access.grant_study(
        study=study_a, grantee=access.Grantee.pool(alliance_world.pool), basis="consult:2", by=audit.SYSTEM
    )
    assert access.revoke_grants(basis="consult:2", by=audit.SYSTEM) == 1
    assert not visible(alliance_world.specialist, study_a)
    assert AuditEvent.objects.filter(action="grant.revoke", basis="consult:2").exists()


def test_expired_grant_gives_no_access(alliance_world, study_a):  # type: ignore[no-untyped-def]
    access.grant_study(
        study=study_a,
        grantee=access.Grantee(user=alliance_world.stranger.user),
        basis="referral:1",
        by=audit.SYSTEM,
        expires_at=timezone.now() - timedelta(minutes=1),
    )
    assert not visible(alliance_world.stranger, study_a)


def test_missing_and_forbidden_study_raise_the_same_404(alliance_world, study_a):  # type: ignore[no-untyped-def]
    with pytest.raises(Http404) as forbidden:
        access.get_study_for(alliance_world.stranger.user, study_a.study_uid)
    with pytest.raises(Http404) as missing:
        access.get_study_for(alliance_world.stranger.user, "9.9.9")
    assert str(forbidden.value) == str(missing.value)


def test_write_grant_drops_to_read_only(alliance_world, study_a):  # type: ignore[no-untyped-def]
    access.grant_study(
        study=study_a, grantee=access.Grantee.pool(alliance_world.pool), basis="consult:3", by=audit.SYSTEM, write=True
    )
    assert access.may_write_study(alliance_world.specialist.user, study_a)
    access.revoke_grants(basis="consult:3", by=audit.SYSTEM, write_only=True)
    assert not access.may_write_study(alliance_world.specialist.user, study_a)
    assert visible(alliance_world.specialist, study_a)


def test_device_sees_own_institution_and_institution_grants(alliance_world, study_a):  # type: ignore[no-untyped-def]
    from alliance import services

    dev_b = services.device_create(
        institution=alliance_world.clin_b, ae_title="CLINB_CT", host="127.0.0.1", port=104, by=audit.SYSTEM
    )
    assert not access.studies_visible_to_device(dev_b).filter(pk=study_a.pk).exists()
    access.grant_study(
        study=study_a, grantee=access.Grantee.institution(alliance_world.clin_b), basis="referral:7", by=audit.SYSTEM
    )
    assert access.studies_visible_to_device(dev_b).filter(pk=study_a.pk).exists()
    assert access.basis_for_device(dev_b, study_a) == "referral:7"


def test_break_glass_needs_a_reason(alliance_world, study_a):  # type: ignore[no-untyped-def]
    with pytest.raises(access.AccessDenied):
        access.break_glass(user=alliance_world.stranger.user, study=study_a, reason="")
    access.break_glass(user=alliance_world.stranger.user, study=study_a, reason="Unconscious patient in ER")
    assert visible(alliance_world.stranger, study_a)
    assert AuditEvent.objects.filter(action="break-glass", object_id=study_a.study_uid).exists()
