"""What every page may show of screening: the menu entry with the unread notices. Nothing at
all where the institution's "screening" module is off."""

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from alliance.access import principal_of
from alliance.unread import unread_counts
from consults.screening import access


def screening(request: HttpRequest) -> dict[str, Any]:
    principal = principal_of(request)
    if not access.may_use_screening(principal):
        return {"nav_screening": False}
    return {
        "nav_screening": True,
        # Read with the bell's count, in its one query (alliance.unread).
        "screening_unread": SimpleLazyObject(lambda: unread_counts(request).get("screening", 0)),
    }
