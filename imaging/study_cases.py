"""The cases opened on studies, for the study list and the study page.

Imaging may not import the apps that own the cases (consults, referrals). Each registers,
from its AppConfig.ready(), a finder that answers "which of your cases are on these studies,
visible to this principal" through its own access functions: one query for a whole page of
studies, never one per study. An app may also register the actions it offers on one study's
page (a button), decided by its own access functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from alliance import audit
from alliance.access import Principal
from imaging.models import Study


@dataclass(frozen=True)
class StudyCase:
    """One case on a study as the principal may see it: what it is, its state, where it opens,
    and its signed report where it has one."""

    kind: str  # "consult", "referral"
    number: int
    label: str | Promise  # "Consult #12"
    state: str | Promise  # the case's status, in the reader's language
    url: str
    report_url: str = ""  # the signed report on the case page; "" without one
    report_pdf_url: str = ""
    awaits_report: bool = False  # a report is asked for and not signed yet

    @property
    def has_report(self) -> bool:
        return bool(self.report_url)

    @property
    def basis(self) -> str:
        """The grant basis of the case ("consult:12"), as its own app's audit events name it."""
        return f"{self.kind}:{self.number}"


Finder = Callable[[Principal, Sequence[int]], dict[int, list[StudyCase]]]
_FINDERS: dict[str, Finder] = {}

# The report status column of the study list.
REPORT_SIGNED, REPORT_PENDING, REPORT_NONE = "signed", "pending", "none"
REPORT_LABELS = {
    REPORT_SIGNED: _("Report signed"),
    REPORT_PENDING: _("Awaiting report"),
    REPORT_NONE: _("No request"),
}


def register_study_cases(kind: str, finder: Finder) -> None:
    """Called from the owning app's AppConfig.ready(): finder(principal, study pks) returns
    {study pk: [StudyCase]} for the studies that have cases the principal may see."""
    _FINDERS[kind] = finder


def cases_of(principal: Principal, study_ids: Sequence[int]) -> dict[int, list[StudyCase]]:
    """Every registered kind's cases on these studies: one query per kind."""
    out: dict[int, list[StudyCase]] = {}
    if not study_ids:
        return out
    for kind in sorted(_FINDERS):
        for study_id, cases in _FINDERS[kind](principal, study_ids).items():
            out.setdefault(study_id, []).extend(cases)
    return out


def audit_cases(request: Any, cases: Mapping[int, list[StudyCase]], studies: Sequence[Study], *, via: str) -> None:
    """A page showed these cases beside their studies (cases_of): a read of each, audited as
    the list audits its studies, one "<kind>.list" event per case naming its patients and its
    basis; one write per kind of case."""
    patients = {study.pk: study.audit_patient for study in studies}
    shown: dict[str, dict[str, set[str]]] = {}  # kind -> case basis -> the patients of its studies
    for study_id, on_study in cases.items():
        for case in on_study:
            shown.setdefault(case.kind, {}).setdefault(case.basis, set()).add(patients.get(study_id, ""))
    for kind, of_kind in sorted(shown.items()):
        audit.record_many(
            read=True,
            actor=audit.actor_of(request),
            action=f"{kind}.list",
            object_type=kind,
            items=[(basis.partition(":")[2], ",".join(sorted(of)), basis) for basis, of in of_kind.items()],
            source=audit.source_of(request),
            detail={"via": via},
        )


@dataclass(frozen=True)
class StudyAction:
    """A button of another app on the study page ("Tag as a screening CT"): shown only when that
    app's own access rules allow it for this principal and study."""

    key: str  # the element's id: study-action-<key>
    label: str | Promise
    url: str


ActionFinder = Callable[[Principal, Any], list[StudyAction]]
_ACTIONS: dict[str, ActionFinder] = {}


def register_study_actions(kind: str, finder: ActionFinder) -> None:
    """Called from the owning app's AppConfig.ready(): finder(principal, study) returns the
    actions the principal may take on the study ([] for none)."""
    _ACTIONS[kind] = finder


def actions_of(principal: Principal, study: Any) -> list[StudyAction]:
    return [action for kind in sorted(_ACTIONS) for action in _ACTIONS[kind](principal, study)]


def report_status(cases: Sequence[StudyCase]) -> str:
    """A study's report status: signed when a case carries a signed report, pending while a
    case on it still awaits one, none otherwise."""
    if any(c.has_report for c in cases):
        return REPORT_SIGNED
    if any(c.awaits_report for c in cases):
        return REPORT_PENDING
    return REPORT_NONE
