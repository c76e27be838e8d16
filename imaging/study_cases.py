"""The cases opened on studies, for the study list and the study page.

Imaging may not import the apps that own the cases (consults, referrals). Each registers,
from its AppConfig.ready(), a finder that answers "which of your cases are on these studies,
visible to this principal" through its own access functions: one query for a whole page of
studies, never one per study.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from alliance.access import Principal


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


def report_status(cases: Sequence[StudyCase]) -> str:
    """A study's report status: signed when a case carries a signed report, pending while a
    case on it still awaits one, none otherwise."""
    if any(c.has_report for c in cases):
        return REPORT_SIGNED
    if any(c.awaits_report for c in cases):
        return REPORT_PENDING
    return REPORT_NONE
