"""imaging.access.bases_for: the basis of each study in a multi-study answer, for its one audit event."""

from __future__ import annotations

from alliance import audit
from alliance.access import NOBODY, resolve_principal
from imaging import access, grants
from imaging.models import Patient, Study


def _study(institution, uid: str) -> Study:  # type: ignore[no-untyped-def]
    patient, _ = Patient.objects.get_or_create(issuer=institution, patient_id="P1")
    return Study.objects.create(study_uid=uid, patient=patient, institution=institution)


def test_bases_name_own_institution_and_the_grant_and_nothing_else(
    alliance_world, django_assert_max_num_queries
) -> None:  # type: ignore[no-untyped-def]
    w = alliance_world
    own = _study(w.clin_b, "1.2.3.1")
    granted = _study(w.clin_a, "1.2.3.2")
    hidden = _study(w.clin_a, "1.2.3.3")
    grants.grant_study(study=granted, grantee=grants.Grantee.institution(w.clin_b), basis="consult:7", by=audit.SYSTEM)
    principal = resolve_principal(w.stranger.user)
    with django_assert_max_num_queries(3):
        bases = access.bases_for(principal, [own, granted, hidden])
    assert bases == {own.pk: "own-institution", granted.pk: "consult:7", hidden.pk: ""}
    assert bases[granted.pk] == access.basis_for(principal, granted)


def test_bases_of_someone_without_a_doctor_are_empty(alliance_world) -> None:  # type: ignore[no-untyped-def]
    study = _study(alliance_world.clin_a, "1.2.3.4")
    assert access.bases_for(NOBODY, [study]) == {study.pk: ""}
