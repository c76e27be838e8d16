"""What waits for a doctor: the home page's lists of open work.

The home page belongs to alliance, which may not import the apps that hold the cases
(consults, referrals). Each of them registers, from its AppConfig.ready(), a function that
lists one kind of open work for a principal through its own selectors and access rules.
The home page asks every registered list and audits the patients it shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.utils.functional import Promise

from alliance.access import Principal
from alliance.models import AuditEvent


@dataclass(frozen=True)
class WorkItem:
    """One line of open work: the patient, the case, what is asked of the user, and where to do it."""

    patient: str  # the patient's name as the site shows it, with the patient ID
    case: str  # "Consult #12"
    asked: str  # what is asked, or what happened ("Answer the reader's question: ...")
    url: str  # opens the case
    at: datetime | None = None
    state: str = ""  # a CSS hint: "", "warn", "danger", "breached", "critical"
    # What the audit trail records for the patient data this line shows.
    audit_type: str = ""
    audit_id: str = ""
    audit_patient: str = ""
    basis: str = ""


@dataclass(frozen=True)
class WorkList:
    key: str
    title: str | Promise
    items: list[WorkItem]


Lister = Callable[[Principal, "datetime | None"], list[WorkItem]]


@dataclass(frozen=True)
class _Entry:
    key: str
    title: str | Promise
    lister: Lister
    order: int


_LISTS: dict[str, _Entry] = {}


def register(key: str, title: str | Promise, lister: Lister, *, order: int = 100) -> None:
    """Called once by an app's AppConfig.ready(). lister(principal, since) returns the open
    work of one kind, most pressing first; since is the user's previous sign-in (or None)."""
    _LISTS[key] = _Entry(key, title, lister, order)


def open_work(principal: Principal, since: datetime | None) -> list[WorkList]:
    """Every registered list for the principal, in their order, empty ones included."""
    entries = sorted(_LISTS.values(), key=lambda e: (e.order, e.key))
    return [WorkList(e.key, e.title, e.lister(principal, since)) for e in entries]


def audit_items(lists: list[WorkList]) -> dict[str, list[tuple[str, str, str]]]:
    """The lines shown, grouped by the audit trail's object type: (id, patient, basis)."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    seen: set[tuple[str, str]] = set()
    for work in lists:
        for item in work.items:
            if item.audit_type and (item.audit_type, item.audit_id) not in seen:
                seen.add((item.audit_type, item.audit_id))
                out.setdefault(item.audit_type, []).append((item.audit_id, item.audit_patient, item.basis))
    return out


def previous_sign_in(principal: Principal) -> datetime | None:
    """When the user signed in before this session: "since your last visit" starts there."""
    if principal.user is None or not getattr(principal.user, "is_authenticated", False):
        return None
    times = (
        AuditEvent.objects.filter(
            action="login", actor_type="user", actor_id=str(principal.user.pk), outcome=AuditEvent.Outcome.SUCCESS
        )
        .order_by("-time")
        .values_list("time", flat=True)[:2]
    )
    found = list(times)
    return found[1] if len(found) > 1 else None
