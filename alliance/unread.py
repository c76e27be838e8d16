"""The unread notices the top bar shows (the consults bell, the referrals and screening menu
entries), each app's table registered here from its AppConfig.ready(): a page reads them all
in one query, once per request, whichever of them it shows. alliance is below the apps, so it
knows them only by what they register."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, QuerySet, Subquery
from django.db.models.functions import Coalesce

# name -> the unread notices of a user.
UnreadNotices = Callable[[Any], QuerySet[Any]]
_UNREAD: dict[str, UnreadNotices] = {}


def register(name: str, notices: UnreadNotices) -> None:
    """Called from an app's AppConfig.ready()."""
    _UNREAD[name] = notices


def unread_counts(request: Any) -> dict[str, int]:
    """The user's unread notices per registered kind, in one query, once per request."""
    cached = getattr(request, "_unread_counts", None)
    if cached is not None:
        return cached
    user: Any = getattr(request, "user", None)
    counts = dict.fromkeys(_UNREAD, 0)
    if user is not None and user.is_authenticated and _UNREAD:
        each = {
            f"unread_{name}": Coalesce(
                Subquery(notices(user).order_by().values("user").annotate(n=Count("pk")).values("n")[:1]),
                0,
            )
            for name, notices in _UNREAD.items()
        }
        users: Any = get_user_model().objects  # values() of computed names: django-stubs types the row as {}
        row = users.filter(pk=user.pk).values(**each).get()
        counts.update({name: row[f"unread_{name}"] for name in _UNREAD})
    request._unread_counts = counts
    return counts
