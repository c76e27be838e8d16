"""A doctor's own account: password, second factor (TOTP with recovery codes), REST API tokens,
and the sign-in locks an admin lifts.

Writes are keyword-only services with one audit call each; who may do what is decided in
alliance.access (second_factor_required, may_reset_second_factor, sign_in_locks_visible_to).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import QuerySet, Sum
from django.utils import timezone
from django.utils.translation import gettext as _
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from alliance import audit
from alliance.models import ApiToken, Doctor

RECOVERY_CODE_COUNT = 10
TOTP_NAME = "authenticator"
RECOVERY_NAME = "recovery codes"


# --- password -------------------------------------------------------------------------


@transaction.atomic
def password_change(*, user: Any, new_password: str, by: audit.Actor) -> None:
    """The user's own new password (the form checked the old one); an admin's temporary
    password stops being asked to change."""
    try:
        validate_password(new_password, user)
    except ValidationError as exc:
        raise ValidationError({"new_password1": exc.messages}) from None
    user.set_password(new_password)
    user.save(update_fields=["password"])
    Doctor.objects.filter(user=user).update(must_change_password=False)
    audit.record(actor=by, action="account.password", object_type="user", object_id=user.pk)


# --- second factor --------------------------------------------------------------------


def confirmed_totp(user: Any) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=True).first()


def has_second_factor(user: Any) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


@transaction.atomic
def totp_begin(*, user: Any, by: audit.Actor) -> TOTPDevice:
    """An unconfirmed authenticator for the enrolment page (the same one until it is confirmed)."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name=TOTP_NAME, confirmed=False)
        audit.record(actor=by, action="account.second_factor.begin", object_type="user", object_id=user.pk)
    return device


@transaction.atomic
def totp_confirm(*, user: Any, device: TOTPDevice, code: str, by: audit.Actor) -> list[str]:
    """Confirm the authenticator with a code it shows; returns the new recovery codes (shown once)."""
    if device.user_id != user.pk or device.confirmed:
        raise ValidationError({"code": _("Start the set-up again.")})
    if not device.verify_token(code.strip()):
        raise ValidationError({"code": _("That code is not the one your authenticator shows now.")})
    TOTPDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    Doctor.objects.filter(user=user).update(second_factor=True)
    codes = _new_recovery_codes(user)
    audit.record(actor=by, action="account.second_factor.enrol", object_type="user", object_id=user.pk)
    return codes


@transaction.atomic
def recovery_codes_renew(*, user: Any, by: audit.Actor) -> list[str]:
    """Ten fresh recovery codes; the old ones stop working."""
    if not has_second_factor(user):
        raise ValidationError(_("Set up an authenticator first."))
    codes = _new_recovery_codes(user)
    audit.record(actor=by, action="account.second_factor.recovery_codes", object_type="user", object_id=user.pk)
    return codes


def _new_recovery_codes(user: Any) -> list[str]:
    StaticDevice.objects.filter(user=user).delete()
    device = StaticDevice.objects.create(user=user, name=RECOVERY_NAME, confirmed=True)
    codes = [_recovery_code() for _n in range(RECOVERY_CODE_COUNT)]
    StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in codes)
    return codes


def _recovery_code() -> str:
    alphabet = "23456789abcdefghjkmnpqrstuvwxyz"  # no 0/o, 1/l/i to misread
    return "".join(secrets.choice(alphabet) for _n in range(10))


def recovery_codes_left(user: Any) -> int:
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


def verify_second_factor(user: Any, code: str) -> Any:
    """The user's device that accepts `code` (a current TOTP code, or an unused recovery code,
    which is used up), or None."""
    code = "".join(code.split())
    if not code:
        return None
    totp = confirmed_totp(user)
    if totp is None:
        return None
    if code.isdigit() and totp.verify_token(code):
        return totp
    for device in StaticDevice.objects.filter(user=user, confirmed=True):
        if device.verify_token(code.lower()):
            return device
    return None


@transaction.atomic
def second_factor_reset(*, doctor: Doctor, by: audit.Actor) -> None:
    """Another admin removes a doctor's authenticator and recovery codes (a lost phone); the
    doctor sets up a new one at their next sign-in if the policy asks for one, and is told."""
    user = doctor.user
    TOTPDevice.objects.filter(user=user).delete()
    StaticDevice.objects.filter(user=user).delete()
    doctor.second_factor = False
    doctor.save(update_fields=["second_factor"])
    audit.record(actor=by, action="account.second_factor.reset", object_type="doctor", object_id=doctor.pk)
    if user.email:
        transaction.on_commit(lambda: _tell_owner_of_reset(user.email, by.name))


def _tell_owner_of_reset(email: str, admin: str) -> None:
    send_mail(
        _("Your second factor was reset"),
        _(
            "%(admin)s removed the authenticator and recovery codes of your account. If you did not "
            "ask for this, tell your institution's admin at once."
        )
        % {"admin": admin},
        None,
        [email],
        fail_silently=True,
    )


# --- REST API tokens ------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedToken:
    """A token as its owner sees it, once: the key is not stored anywhere."""

    token: ApiToken
    key: str


def token_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def tokens_of(user: Any) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user, revoked_at__isnull=True)


@transaction.atomic
def token_issue(*, user: Any, by: audit.Actor, name: str = "", replace: bool = False) -> IssuedToken:
    """A new token for `user`, working API_TOKEN_DAYS; `replace` revokes their others."""
    now = timezone.now()
    if replace:
        tokens_of(user).update(revoked_at=now)
    key = secrets.token_hex(20)
    token = ApiToken.objects.create(
        user=user,
        digest=token_digest(key),
        prefix=key[:8],
        name=name.strip()[:100],
        created_at=now,
        expires_at=now + timedelta(days=settings.API_TOKEN_DAYS),
    )
    audit.record(actor=by, action="token.create", object_type="user", object_id=user.pk, detail={"token": token.prefix})
    return IssuedToken(token=token, key=key)


@transaction.atomic
def token_revoke(*, token: ApiToken, by: audit.Actor) -> ApiToken:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit.record(
            actor=by, action="token.revoke", object_type="user", object_id=token.user_id, detail={"token": token.prefix}
        )
    return token


def revoke_all_tokens(user: Any) -> None:
    """Deactivation and a password reset by an admin end every token (their caller audits)."""
    tokens_of(user).update(revoked_at=timezone.now())


# --- sign-in locks --------------------------------------------------------------------


def refused_addresses() -> list[dict[str, Any]]:
    """Addresses refused for every username now (alliance.access.address_refused), busiest first."""
    from axes.models import AccessAttempt

    since = timezone.now() - timedelta(hours=settings.AXES_COOLOFF_TIME)
    rows = (
        AccessAttempt.objects.filter(attempt_time__gte=since)
        .values("ip_address")
        .annotate(failures=Sum("failures_since_start"))
        .filter(failures__gte=settings.LOGIN_ADDRESS_FAILURE_LIMIT)
        .order_by("-failures")
    )
    return list(rows)


@transaction.atomic
def sign_in_lock_lift(*, by: audit.Actor, address: str, username: str | None = None) -> int:
    """Lift the lock of one (username, address) pair, or every failure of one address."""
    from axes.models import AccessAttempt

    rows = AccessAttempt.objects.filter(ip_address=address)
    if username is not None:
        rows = rows.filter(username=username)
    lifted, _kinds = rows.delete()
    audit.record(
        actor=by,
        action="login.unlock",
        object_type="user" if username is not None else "address",
        object_id=username if username is not None else address,
        detail={"address": address},
    )
    return lifted
