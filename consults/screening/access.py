"""Who may see and do what in a screening programme. One decision per function, given the
request's principal (alliance.access.Principal); nothing of this app works where the
institution's "screening" module is off.

- The alliance admin keeps the programmes (name, clinics, reading pool) and sees their figures,
  never a participant: the admin sees no patient data by default.
- A clinical doctor of a participating clinic enrols, invites and follows up the clinic's own
  participants, and tags the clinic's own studies to their rounds.
- A specialist of the programme's reading pool reads the scans opened to the pool (the grant
  each tagged scan makes, imaging.grants) and sees the participants of those scans.
- An institution admin of a participating clinic sees the programme and that clinic's figures.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from django.http import Http404

from alliance.access import Principal
from alliance.models import Institution, Role
from consults.screening.models import Participant, Programme, Reading, Round
from imaging import access as imaging_access
from imaging.models import Study

SCREENING_MODULE = "screening"


def _takes_part(principal: Principal) -> bool:
    return principal.doctor is not None and principal.has_module(SCREENING_MODULE)


def may_use_screening(principal: Principal) -> bool:
    """The menu entry: a doctor whose institution has screening and who has a part in it (a
    clinical role, institution admins included, or the alliance admin)."""
    return _takes_part(principal) and (principal.is_clinical or principal.is_alliance_admin)


def may_manage_programmes(principal: Principal) -> bool:
    """The alliance admin creates programmes and chooses their clinics and reading pool."""
    return _takes_part(principal) and principal.is_alliance_admin


def programmes_managed_by(principal: Principal) -> QuerySet[Programme]:
    if not may_manage_programmes(principal) or principal.alliance is None:
        return Programme.objects.none()
    return Programme.objects.filter(alliance_id=principal.alliance.pk)


def programmes_visible_to(principal: Principal) -> QuerySet[Programme]:
    """The alliance admin's programmes, those a clinician's clinic takes part in, and those a
    specialist's pool reads for."""
    if not _takes_part(principal) or principal.doctor is None:
        return Programme.objects.none()
    q = Q(pk__in=[])
    if principal.is_alliance_admin:
        q |= Q(alliance_id=principal.doctor.institution.alliance_id)
    if principal.is_clinical:
        q |= Q(institutions=principal.institution_id)
    if principal.has_role(Role.SPECIALIST):
        q |= Q(reading_pool_id__in=principal.pool_ids)
    return Programme.objects.filter(pk__in=Programme.objects.filter(q).values("pk"))


def get_programme_for(principal: Principal, pk: Any) -> Programme:
    """The programme if the principal may see it; the same 404 when missing or forbidden (a
    programme is no patient data: the refusal is not audited)."""
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise Http404("No such programme.") from None
    programme = programmes_visible_to(principal).select_related("reading_pool__institution").filter(pk=pk).first()
    if programme is None:
        raise Http404("No such programme.")
    return programme


def is_participating(principal: Principal, programme: Programme) -> bool:
    """A clinical doctor of one of the programme's clinics (the clinic side of the programme)."""
    institution_id = principal.institution_id
    return (
        _takes_part(principal)
        and principal.is_clinical
        and institution_id is not None
        and programme.institutions.filter(pk=institution_id).exists()
    )


def may_enrol(principal: Principal, programme: Programme) -> bool:
    """A clinic of the programme enrols its patients while the programme is open."""
    return programme.active and is_participating(principal, programme)


def participants_visible_to(principal: Principal) -> QuerySet[Participant]:
    """A clinic's own participants; for a reader of a programme's pool, the participants whose
    scans were opened to them."""
    if not _takes_part(principal) or principal.doctor is None:
        return Participant.objects.none()
    q = Q(pk__in=[])
    if principal.is_clinical:
        q |= Q(institution_id=principal.institution_id)
    if principal.has_role(Role.SPECIALIST) and principal.pool_ids:
        scans = imaging_access.studies_visible_to(principal).values("pk")
        read = Round.objects.filter(
            participant__programme__reading_pool_id__in=principal.pool_ids, study_id__in=scans
        ).values("participant_id")
        q |= Q(pk__in=read)
    return Participant.objects.filter(q)


def get_participant_for(principal: Principal, pk: Any) -> Participant:
    """The participant if the principal may see them; the same 404 when missing or forbidden,
    and a refused read of an existing one is audited."""
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise Http404("No such participant.") from None
    found = (
        participants_visible_to(principal)
        .select_related("programme", "patient", "patient__issuer", "institution", "enrolled_by__user")
        .filter(pk=pk)
        .first()
    )
    if found is None:
        imaging_access.refuse(
            principal, Participant.audit_type, Participant.objects.filter(pk=pk), str(pk), "patient_id"
        )
    return found


def basis_for(principal: Principal, participant: Participant) -> str:
    """On what the principal sees the participant, for the audit trail."""
    if principal.institution_id == participant.institution_id:
        return imaging_access.OWN_INSTITUTION
    return participant.basis


def may_follow_up(principal: Principal, participant: Participant) -> bool:
    """The clinic's side of a participant: invite, tag its studies, withdraw, refer a positive result."""
    return _takes_part(principal) and principal.is_clinical and participant.institution_id == principal.institution_id


def rounds_to_read(principal: Principal) -> QuerySet[Round]:
    """Scanned rounds of the principal's pools not read yet (or whose reading they started),
    whose scan is open to them."""
    doctor = principal.doctor
    if not _takes_part(principal) or doctor is None or not principal.has_role(Role.SPECIALIST):
        return Round.objects.none()
    scans = imaging_access.studies_visible_to(principal).values("pk")
    mine_or_nobody = Q(reading__isnull=True) | Q(reading__reader_id=doctor.pk, reading__signed_at__isnull=True)
    return Round.objects.filter(
        mine_or_nobody,
        participant__programme__reading_pool_id__in=principal.pool_ids,
        participant__state=Participant.State.ACTIVE,
        study_id__in=scans,
        cancelled_at__isnull=True,
    )


def may_read(principal: Principal, round_: Round) -> bool:
    """A specialist of the reading pool reads a scanned round; the first to save holds it."""
    return rounds_to_read(principal).filter(pk=round_.pk).exists()


def may_sign(principal: Principal, reading: Reading) -> bool:
    return not reading.is_signed and reading.reader_id == getattr(principal.doctor, "pk", None)


def may_measure(principal: Principal, study: Study) -> bool:
    """The reader of a screening scan keeps viewer measurements on it (consults.access asks)."""
    return rounds_to_read(principal).filter(study_id=study.pk).exists()


def may_refer_from(principal: Principal, reading: Reading) -> bool:
    """A positive signed result is referred by the participant's clinic."""
    return reading.positive and may_follow_up(principal, reading.round.participant)


def figures_institutions_for(principal: Principal, programme: Programme) -> QuerySet[Institution]:
    """Whose figures of the programme the principal sees: every clinic for the alliance admin,
    their own for an institution admin of a participating clinic, none for anyone else."""
    clinics = programme.institutions.all()
    if not _takes_part(principal) or principal.doctor is None:
        return Institution.objects.none()
    if principal.is_alliance_admin and principal.doctor.institution.alliance_id == programme.alliance_id:
        return clinics
    if principal.has_role(Role.INSTITUTION_ADMIN) and principal.institution_id is not None:
        return clinics.filter(pk=principal.institution_id)
    return Institution.objects.none()


def may_see_figures(principal: Principal, programme: Programme) -> bool:
    return figures_institutions_for(principal, programme).exists()
