"""imaging.access and imaging.grants: own institution, grants with a basis, expiry and revocation,
for every persona: the owner, a colleague, the specialist on the case, a specialist not on it,
a clinician of an unrelated clinic, the alliance admin, anonymous, and a DICOM device."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.http import Http404
from django.utils import timezone

from alliance import audit, services
from alliance.access import NOBODY, AccessDenied, Principal, resolve_principal
from alliance.models import AuditEvent, Pool, PoolMembership
from imaging import access, grants
from imaging.models import Patient, Study, StudyGroupGrant
from tests import factories

PERSONAS = ["owner", "colleague", "specialist", "outsider_specialist", "stranger", "alliance_admin"]


def _study(institution, uid="1.2.3.4"):  # type: ignore[no-untyped-def]
    patient = Patient.objects.create(issuer=institution, patient_id="1001", name="ZHANG^SAN")
    return Study.objects.create(study_uid=uid, patient=patient, institution=institution)


@pytest.fixture
def study_a(alliance_world):  # type: ignore[no-untyped-def]
    return _study(alliance_world.clin_a)


def principal(world, persona: str) -> Principal:  # type: ignore[no-untyped-def]
    return resolve_principal(getattr(world, persona).user)


def seers(world, study) -> set[str]:  # type: ignore[no-untyped-def]
    return {p for p in PERSONAS if access.studies_visible_to(principal(world, p)).filter(pk=study.pk).exists()}


def share_with_pool(world, study, basis="consult:1", write=False):  # type: ignore[no-untyped-def]
    grants.grant_study(study=study, grantee=grants.Grantee.pool(world.pool), basis=basis, by=audit.SYSTEM, write=write)


def test_owner_and_colleague_see_own_institution_study_and_no_one_else(alliance_world, study_a):  # type: ignore[no-untyped-def]
    assert seers(alliance_world, study_a) == {"owner", "colleague"}
    assert access.basis_for(principal(alliance_world, "owner"), study_a) == "own-institution"
    assert access.basis_for(principal(alliance_world, "specialist"), study_a) == ""


def test_anonymous_sees_nothing_and_has_no_basis(alliance_world, study_a):  # type: ignore[no-untyped-def]
    anonymous = resolve_principal(AnonymousUser())
    assert not access.studies_visible_to(anonymous).exists()
    assert access.bases_for(anonymous, [study_a]) == {study_a.pk: ""}
    with pytest.raises(Http404):
        access.get_study_for(NOBODY, study_a.study_uid)


def test_pool_grant_opens_study_to_the_specialist_on_the_case_only(alliance_world, study_a):  # type: ignore[no-untyped-def]
    share_with_pool(alliance_world, study_a)
    assert seers(alliance_world, study_a) == {"owner", "colleague", "specialist"}
    assert access.basis_for(principal(alliance_world, "specialist"), study_a) == "consult:1"


def test_revoked_grant_ends_access_and_is_audited(alliance_world, study_a):  # type: ignore[no-untyped-def]
    share_with_pool(alliance_world, study_a, basis="consult:2")
    assert grants.revoke_grants(basis="consult:2", by=audit.SYSTEM) == 1
    assert "specialist" not in seers(alliance_world, study_a)
    assert AuditEvent.objects.filter(action="grant.revoke", basis="consult:2").exists()


def test_expired_grant_gives_no_access(alliance_world, study_a):  # type: ignore[no-untyped-def]
    grants.grant_study(
        study=study_a,
        grantee=grants.Grantee(user=alliance_world.stranger.user),
        basis="referral:1",
        by=audit.SYSTEM,
        expires_at=timezone.now() - timedelta(minutes=1),
    )
    assert "stranger" not in seers(alliance_world, study_a)
    assert access.basis_for(principal(alliance_world, "stranger"), study_a) == ""


def test_missing_and_forbidden_study_raise_the_same_404(alliance_world, study_a):  # type: ignore[no-untyped-def]
    stranger = principal(alliance_world, "stranger")
    with pytest.raises(Http404) as forbidden:
        access.get_study_for(stranger, study_a.study_uid)
    with pytest.raises(Http404) as missing:
        access.get_study_for(stranger, "9.9.9")
    assert str(forbidden.value) == str(missing.value)


def test_write_grant_drops_to_read_only(alliance_world, study_a):  # type: ignore[no-untyped-def]
    share_with_pool(alliance_world, study_a, basis="consult:3", write=True)
    specialist = principal(alliance_world, "specialist")
    assert access.may_write_study(specialist, study_a)
    grants.revoke_grants(basis="consult:3", by=audit.SYSTEM, write_only=True)
    assert not access.may_write_study(specialist, study_a)
    assert "specialist" in seers(alliance_world, study_a)


def test_only_the_owning_clinicians_may_write_without_a_grant(alliance_world, study_a):  # type: ignore[no-untyped-def]
    writers = {p for p in PERSONAS if access.may_write_study(principal(alliance_world, p), study_a)}
    assert writers == {"owner", "colleague"}
    assert not access.may_write_study(NOBODY, study_a)


def test_device_sees_own_institution_and_institution_grants(alliance_world, study_a):  # type: ignore[no-untyped-def]
    dev_b = services.device_create(
        institution=alliance_world.clin_b, ae_title="CLINB_CT", host="127.0.0.1", port=104, by=audit.SYSTEM
    )
    device = Principal.for_device(dev_b)
    assert not access.studies_visible_to(device).filter(pk=study_a.pk).exists()
    grants.grant_study(
        study=study_a, grantee=grants.Grantee.institution(alliance_world.clin_b), basis="referral:7", by=audit.SYSTEM
    )
    assert access.studies_visible_to(device).filter(pk=study_a.pk).exists()
    assert access.basis_for(device, study_a) == "referral:7"
    assert not access.may_write_study(device, study_a)


def test_a_switched_off_device_acts_for_nobody(alliance_world, study_a):  # type: ignore[no-untyped-def]
    dev_a = services.device_create(
        institution=alliance_world.clin_a, ae_title="CLINA_CT", host="127.0.0.1", port=104, by=audit.SYSTEM
    )
    assert access.studies_visible_to(Principal.for_device(dev_a)).filter(pk=study_a.pk).exists()
    dev_a.active = False
    assert Principal.for_device(dev_a) is NOBODY


def test_break_glass_needs_a_clinician_and_a_reason(alliance_world, study_a):  # type: ignore[no-untyped-def]
    stranger = principal(alliance_world, "stranger")
    with pytest.raises(ValidationError):
        grants.break_glass(by=stranger, study=study_a, reason="")
    with pytest.raises(AccessDenied):
        grants.break_glass(by=principal(alliance_world, "alliance_admin"), study=study_a, reason="Unconscious in ER")
    review = grants.break_glass(by=stranger, study=study_a, reason="Unconscious patient in ER")
    assert "stranger" in seers(alliance_world, study_a)
    assert access.basis_for(stranger, study_a) == f"break-glass:{review.pk}"
    assert AuditEvent.objects.filter(action="break-glass", object_id=study_a.study_uid).exists()


def _seated_since(world, when):  # type: ignore[no-untyped-def]
    PoolMembership.objects.filter(pool=world.pool, doctor=world.specialist).update(since=when)


def test_a_pools_grants_reach_a_specialist_who_sat_on_the_desk_when_the_case_was_sent(alliance_world, study_a):  # type: ignore[no-untyped-def]
    share_with_pool(alliance_world, study_a)
    sent = StudyGroupGrant.objects.get(group=alliance_world.pool.group).created_at
    _seated_since(alliance_world, sent + timedelta(minutes=1))
    assert "specialist" not in seers(alliance_world, study_a)
    _seated_since(alliance_world, sent)
    assert "specialist" in seers(alliance_world, study_a)


def test_a_pools_grants_reach_only_the_members_pool_since_counts_as_on_the_desk(alliance_world, study_a):  # type: ignore[no-untyped-def]
    """The desk rule of consults (Principal.pool_since: a specialist of an active pool) decides
    who a pool's grants reach: not a member without the specialist role, nor an inactive pool."""
    w = alliance_world
    clinician = factories.make_doctor(institution=w.hosp, roles=["clinician"], username="desk-clinician")
    services.pool_set_members(pool=w.pool, members=[w.specialist, clinician], by=audit.SYSTEM)
    share_with_pool(w, study_a)
    desk_clinician = resolve_principal(clinician.user)
    assert desk_clinician.pool_since == {}
    assert not access.studies_visible_to(desk_clinician).filter(pk=study_a.pk).exists()
    assert access.basis_for(desk_clinician, study_a) == ""
    specialist = resolve_principal(w.specialist.user)
    assert set(specialist.pool_since) == {w.pool.pk}
    assert access.studies_visible_to(specialist).filter(pk=study_a.pk).exists()
    Pool.objects.filter(pk=w.pool.pk).update(active=False)
    assert "specialist" not in seers(w, study_a)


def test_the_rule_over_a_mixed_set_of_studies(alliance_world):  # type: ignore[no-untyped-def]
    """studies_visible_to as a whole, each way in and each way out side by side: the own
    institution's studies; a pool's, a user's and an institution's grant; an expired, a revoked
    and a devices-only grant; a deleted study (owned or granted) and one never shared. The
    answer stays a QuerySet that callers narrow, order and annotate further."""
    w = alliance_world
    made: dict[str, Study] = {}

    def study(name: str, institution) -> Study:  # type: ignore[no-untyped-def]
        patient = Patient.objects.create(issuer=institution, patient_id=f"P-{name}", name="MIXED^CASE")
        made[name] = Study.objects.create(
            study_uid=f"1.2.826.9.{len(made) + 1}", patient=patient, institution=institution
        )
        return made[name]

    def grant(name: str, grantee: grants.Grantee, basis: str, **kw) -> None:  # type: ignore[no-untyped-def]
        grants.grant_study(study=made[name], grantee=grantee, basis=basis, by=audit.SYSTEM, **kw)

    study("hosp_own", w.hosp)
    study("hosp_deleted", w.hosp)
    for name in ["pool", "user", "institution", "expired", "revoked", "devices_only", "granted_deleted", "unshared"]:
        study(name, w.clin_a)
    grant("pool", grants.Grantee.pool(w.pool), "consult:1")
    grant("user", grants.Grantee(user=w.specialist.user), "referral:2")
    grant("institution", grants.Grantee.institution(w.hosp), "referral:3")
    grant(
        "expired",
        grants.Grantee(user=w.specialist.user),
        "referral:4",
        expires_at=timezone.now() - timedelta(minutes=1),
    )
    grant("revoked", grants.Grantee.pool(w.pool), "consult:5")
    grants.revoke_grants(basis="consult:5", by=audit.SYSTEM)
    grants.open_to_devices(studies=[made["devices_only"]], institution=w.hosp, basis="referral:6", by=audit.SYSTEM)
    grant("granted_deleted", grants.Grantee.pool(w.pool), "consult:7")
    Study.objects.filter(pk__in=[made["hosp_deleted"].pk, made["granted_deleted"].pk]).update(deleted_at=timezone.now())
    names = {s.pk: name for name, s in made.items()}

    def seen(who: Principal) -> set[str]:
        return {names[pk] for pk in access.studies_visible_to(who).values_list("pk", flat=True)}

    specialist = principal(w, "specialist")
    assert seen(specialist) == {"hosp_own", "pool", "user", "institution"}
    assert seen(principal(w, "outsider_specialist")) == {"hosp_own", "institution"}
    assert seen(principal(w, "owner")) == {
        "pool", "user", "institution", "expired", "revoked", "devices_only", "unshared",
    }  # fmt: skip
    assert seen(principal(w, "stranger")) == set()
    hosp_device = services.device_create(
        institution=w.hosp, ae_title="HOSP_CT", host="127.0.0.1", port=104, by=audit.SYSTEM
    )
    assert seen(Principal.for_device(hosp_device)) == {"hosp_own", "institution", "devices_only"}
    # Narrowed, ordered and annotated by the caller; the patients seen are those studies' patients.
    narrowed = (
        access.studies_visible_to(specialist)
        .filter(institution=w.clin_a)
        .annotate(series_count=Count("series"))
        .order_by("-study_uid")
    )
    assert [(names[s.pk], s.series_count) for s in narrowed] == [("institution", 0), ("user", 0), ("pool", 0)]
    assert set(access.patients_visible_to(specialist).values_list("patient_id", flat=True)) == {
        "P-hosp_own", "P-pool", "P-user", "P-institution",
    }  # fmt: skip
    bases = access.bases_for(specialist, [made[n] for n in ("hosp_own", "pool", "user", "institution", "expired")])
    assert [bases[made[n].pk] for n in ("hosp_own", "pool", "user", "institution", "expired")] == [
        "own-institution", "consult:1", "referral:2", "referral:3", "",
    ]  # fmt: skip


def test_a_kept_statement_still_ends_a_grant_at_its_expiry(alliance_world, study_a, monkeypatch):  # type: ignore[no-untyped-def]
    """studies_visible_to compiles a principal's grant subqueries once (access._granted_ids) and
    fills in the present on each use: the grant's expiry still ends it, on the same statement."""
    stranger = principal(alliance_world, "stranger")
    grants.grant_study(
        study=study_a,
        grantee=grants.Grantee(user=alliance_world.stranger.user),
        basis="referral:2",
        by=audit.SYSTEM,
        expires_at=timezone.now() + timedelta(hours=1),
    )
    assert access.studies_visible_to(stranger).filter(pk=study_a.pk).exists()
    kept = [key for key in access._COMPILED if key[2:4] == ("doctor", stranger.user.pk)]
    assert len(kept) == 1
    later = timezone.now() + timedelta(hours=1, minutes=1)
    monkeypatch.setattr(timezone, "now", lambda: later)
    assert not access.studies_visible_to(stranger).filter(pk=study_a.pk).exists()
    assert [key for key in access._COMPILED if key[2:4] == ("doctor", stranger.user.pk)] == kept
    Patient.objects.filter(pk=study_a.patient_id).update(name="LI^SI")  # and a subquery of it still reads so
    assert access.patients_visible_to(resolve_principal(alliance_world.owner.user)).get().name == "LI^SI"
