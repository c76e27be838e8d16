"""What every page may show of referrals: the menu entry with what waits for the user, the
home page's referral figures and the "refer this patient" buttons of other apps' pages.

alliance (the home page) must not import referrals, so the home page reads these from the
template context. Nothing at all where the institution's "referrals" module is off.
"""

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from alliance import unread
from alliance.access import Principal, principal_of
from referrals import access, selectors


def referrals(request: HttpRequest) -> dict[str, Any]:
    principal = principal_of(request)
    if not access.may_use_referrals(principal):
        return {"nav_referrals": False, "may_refer": False}
    return {
        "nav_referrals": True,
        "may_refer": access.may_refer(principal),
        "referrals_on_desk": SimpleLazyObject(lambda: access.is_desk_member(principal, principal.institution_id)),
        "referrals_manage_desk": SimpleLazyObject(
            lambda: principal.institution is not None and access.may_manage_desk(principal, principal.institution)
        ),
        "referrals_waiting": SimpleLazyObject(lambda: _waiting(principal)),
        # Read with the bell's count, in its one query (alliance.unread).
        "referrals_unread": SimpleLazyObject(lambda: unread.unread_counts(request).get("referrals", 0)),
        "referrals_summaries": SimpleLazyObject(lambda: selectors.summaries_returned(principal, limit=5)),
    }


def _waiting(principal: Principal) -> dict[str, int]:
    """What waits for the user, with the total the menu shows."""
    counts = dict(selectors.waiting_counts(principal))
    counts["total"] = sum(v for k, v in counts.items() if k != "total")
    return counts
