"""Asking a signed-in user again who they are, before an act that cannot be undone (signing a
report, approving a privilege change).

One decision: `confirm_identity` answers whether the secret the user typed proves it is them.
A wrong secret counts toward the same sign-in lockout as the sign-in page (django-axes, through
Django's `user_login_failed` signal) and is audited; a locked account is refused whatever it types.
A user with a confirmed authenticator (alliance.accounts) proves it with a current TOTP code or
an unused recovery code instead of the password: what they type is the second factor.
"""

from __future__ import annotations

from typing import Any

from axes.handlers.proxy import AxesProxyHandler
from django.contrib.auth.signals import user_login_failed
from django.http import HttpRequest

from alliance import accounts, audit
from alliance.access import address_refused
from alliance.models import AuditEvent


class IdentityNotConfirmed(Exception):
    """The secret did not prove the user's identity (wrong, missing, or the account is locked)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "missing", "wrong" or "locked"


def _credentials(user: Any) -> dict[str, str]:
    return {"username": user.get_username()}


def is_locked(request: HttpRequest, user: Any) -> bool:
    """Whether the sign-in lockout holds this user here (as the sign-in page would refuse them):
    their (username, address) pair, or the address for every username."""
    if address_refused(audit.source_of(request)):
        return True
    return not AxesProxyHandler.is_allowed(request, _credentials(user))


def confirm_identity(*, request: HttpRequest, user: Any, secret: str, purpose: str) -> None:
    """Raise IdentityNotConfirmed unless `secret` is this user's current TOTP code or an unused
    recovery code (when they have a confirmed authenticator), or else their password.

    `purpose` names the act in the audit row of a refusal (e.g. "consult.sign").
    """
    if not secret:
        raise IdentityNotConfirmed("missing")
    if is_locked(request, user):
        _refused(request, user, purpose, "locked")
        raise IdentityNotConfirmed("locked")
    if _proves(user, secret):
        return
    # The same signal the sign-in form sends: axes counts it toward the lockout.
    user_login_failed.send(sender=__name__, credentials=_credentials(user), request=request)
    _refused(request, user, purpose, "wrong")
    raise IdentityNotConfirmed("wrong")


def asks_for_code(user: Any) -> bool:
    """Whether confirm_identity takes the authenticator's code from this user (else their
    password): what the page that asks for it must say."""
    return accounts.has_second_factor(user)


def _proves(user: Any, secret: str) -> bool:
    if asks_for_code(user):
        return accounts.verify_second_factor(user, secret) is not None
    return bool(user.check_password(secret))


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
