"""Asking a signed-in user again who they are, before an act that cannot be undone (signing a
report, approving a privilege change).

One decision: `confirm_identity` answers whether the secret the user typed proves it is them.
A wrong secret counts toward the same sign-in lockout as the sign-in page (django-axes, through
Django's `user_login_failed` signal) and is audited; a locked account is refused whatever it types.
The second-factor check (a TOTP code for a user who has one) belongs here too, so that every
caller asks the same question.
"""

from __future__ import annotations

from typing import Any

from axes.handlers.proxy import AxesProxyHandler
from django.contrib.auth.signals import user_login_failed
from django.http import HttpRequest

from alliance import audit
from alliance.models import AuditEvent


class IdentityNotConfirmed(Exception):
    """The secret did not prove the user's identity (wrong, missing, or the account is locked)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "missing", "wrong" or "locked"


def _credentials(user: Any) -> dict[str, str]:
    return {"username": user.get_username()}


def is_locked(request: HttpRequest, user: Any) -> bool:
    """Whether the sign-in lockout holds this user (as the sign-in page would refuse them)."""
    return not AxesProxyHandler.is_allowed(request, _credentials(user))


def confirm_identity(*, request: HttpRequest, user: Any, secret: str, purpose: str) -> None:
    """Raise IdentityNotConfirmed unless `secret` is this user's password.

    `purpose` names the act in the audit row of a refusal (e.g. "consult.sign").
    """
    if not secret:
        raise IdentityNotConfirmed("missing")
    if is_locked(request, user):
        _refused(request, user, purpose, "locked")
        raise IdentityNotConfirmed("locked")
    if user.check_password(secret):
        return
    # The same signal the sign-in form sends: axes counts it toward the lockout.
    user_login_failed.send(sender=__name__, credentials=_credentials(user), request=request)
    _refused(request, user, purpose, "wrong")
    raise IdentityNotConfirmed("wrong")


def _refused(request: HttpRequest, user: Any, purpose: str, reason: str) -> None:
    audit.record(
        actor=audit.Actor.for_user(user),
        action="auth.reconfirm",
        object_type="user",
        object_id=user.pk,
        source=audit.source_of(request),
        outcome=AuditEvent.Outcome.FAILURE,
        detail={"purpose": purpose, "reason": reason},
    )
