"""Who may read, write and learn from teaching cases. One decision per function.

A published case holds no patient data (consults.teaching.deid, checked before publishing), so
every doctor of the alliance reads it whose institution has teaching cases switched on. A
draft or withdrawn case is its author's alone: its copies are not yet checked for burned-in
text. Making a case reads a study, so its source is found through imaging.access.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from django.http import Http404

from alliance.access import TEACHING, Principal
from alliance.models import Doctor, Role
from consults.teaching.models import EDITABLE, Status, TeachingCase
from imaging import access as imaging_access
from imaging.models import Study

# The audit trail's basis of a read of a published case: the alliance's teaching library.
LIBRARY_BASIS = "teaching-library"


def may_use_teaching(principal: Principal) -> bool:
    """The library, its pages and menu entry: doctors of institutions with the module on."""
    return principal.doctor is not None and principal.has_module(TEACHING)


def may_author(principal: Principal) -> bool:
    """Specialists make teaching cases of the studies they read."""
    return may_use_teaching(principal) and principal.has_role(Role.SPECIALIST)


def cases_visible_to(principal: Principal) -> QuerySet[TeachingCase]:
    """The alliance's published cases, and the principal's own in any state."""
    doctor = principal.doctor
    if doctor is None or not may_use_teaching(principal):
        return TeachingCase.objects.none()
    published = Q(status=Status.PUBLISHED, alliance_id=doctor.institution.alliance_id)
    return TeachingCase.objects.filter(published | Q(author_id=doctor.pk))


def library_for(principal: Principal) -> QuerySet[TeachingCase]:
    """The library's list: the published cases of the principal's alliance."""
    return cases_visible_to(principal).filter(status=Status.PUBLISHED)


def authored_by(principal: Principal) -> QuerySet[TeachingCase]:
    """The principal's own cases, whatever their state."""
    if principal.doctor is None or not may_use_teaching(principal):
        return TeachingCase.objects.none()
    return TeachingCase.objects.filter(author_id=principal.doctor.pk)


def get_case_for(principal: Principal, pk: Any) -> TeachingCase:
    """The case if the principal may read it; the same 404 whether it is missing or not theirs."""
    try:
        number = int(pk)
    except (TypeError, ValueError):
        raise Http404("No such teaching case.") from None
    found = (
        cases_visible_to(principal)
        .select_related("author__user", "author_institution", "answer")
        .filter(pk=number)
        .first()
    )
    if found is None:
        raise Http404("No such teaching case.")
    return found


def may_edit(principal: Principal, case: TeachingCase) -> bool:
    """The author edits a draft, or a case they withdrew."""
    return _is_author(principal, case) and case.status in EDITABLE


def may_publish(principal: Principal, case: TeachingCase) -> bool:
    return may_author(principal) and may_edit(principal, case)


def may_discard(principal: Principal, case: TeachingCase) -> bool:
    """A draft never published may be thrown away with its copies."""
    return _is_author(principal, case) and case.status == Status.DRAFT


def may_unpublish(principal: Principal, case: TeachingCase) -> bool:
    """The author, or the alliance's admin, withdraws a published case."""
    if case.status != Status.PUBLISHED or principal.doctor is None:
        return False
    same_alliance = principal.doctor.institution.alliance_id == case.alliance_id
    return _is_author(principal, case) or (principal.is_alliance_admin and same_alliance)


def may_discuss(principal: Principal, case: TeachingCase) -> bool:
    """Every reader of a published case writes in its thread."""
    return case.status == Status.PUBLISHED and cases_visible_to(principal).filter(pk=case.pk).exists()


def may_take_quiz(principal: Principal, case: TeachingCase) -> bool:
    """A reader answers a published case's quiz once; its author knows the answer."""
    return case.has_quiz and case.status == Status.PUBLISHED and not _is_author(principal, case)


def _is_author(principal: Principal, case: TeachingCase) -> bool:
    return principal.doctor is not None and case.author_id == principal.doctor.pk


# --- where a case comes from --------------------------------------------------------------


def get_source_study(principal: Principal, study_uid: str) -> Study:
    """A study an author may copy images from: one they may read (imaging.access decides and
    audits a refusal); the same 404 otherwise."""
    if not may_author(principal):
        raise Http404("No such study.")
    return imaging_access.get_study_for(principal, study_uid)


def may_copy_from(principal: Principal, study: Study) -> bool:
    """The service's own check of the study it is given (the view resolved it as above)."""
    return may_author(principal) and imaging_access.studies_visible_to(principal).filter(pk=study.pk).exists()


# --- continuing education -------------------------------------------------------------------


def may_see_learning(principal: Principal) -> bool:
    """An institution admin sees what their doctors learned (continuing-education credit)."""
    return may_use_teaching(principal) and principal.has_role(Role.INSTITUTION_ADMIN)


def learners_for(principal: Principal) -> QuerySet[Doctor]:
    """The doctors whose learning the principal sees: their own institution's."""
    if principal.doctor is None or not may_see_learning(principal):
        return Doctor.objects.none()
    return Doctor.objects.filter(institution_id=principal.doctor.institution_id)
