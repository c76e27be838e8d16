"""Asking again who a signed-in user is, before an irreversible act (alliance/reauth.py)."""

import pytest
from django.test import RequestFactory

from alliance.models import AuditEvent
from alliance.reauth import IdentityNotConfirmed, confirm_identity, is_locked
from tests.factories import PASSWORD


def _request():  # type: ignore[no-untyped-def]
    request = RequestFactory().post("/x/", REMOTE_ADDR="10.1.2.3")
    return request


def test_the_right_password_confirms(alliance_world):  # type: ignore[no-untyped-def]
    user = alliance_world.specialist.user
    confirm_identity(request=_request(), user=user, secret=PASSWORD, purpose="consult.sign")
    assert not AuditEvent.objects.filter(action="auth.reconfirm").exists()


def test_an_empty_secret_is_refused_as_missing(alliance_world):  # type: ignore[no-untyped-def]
    with pytest.raises(IdentityNotConfirmed) as refused:
        confirm_identity(request=_request(), user=alliance_world.specialist.user, secret="", purpose="consult.sign")
    assert refused.value.reason == "missing"


def test_a_wrong_password_is_refused_audited_and_counts_toward_the_lockout(alliance_world, settings):  # type: ignore[no-untyped-def]
    settings.AXES_FAILURE_LIMIT = 3
    user = alliance_world.specialist.user
    for _ in range(3):
        with pytest.raises(IdentityNotConfirmed) as refused:
            confirm_identity(request=_request(), user=user, secret="not-it", purpose="consult.sign")
        assert refused.value.reason == "wrong"
    row = AuditEvent.objects.filter(action="auth.reconfirm").latest("time")
    assert row.outcome == AuditEvent.Outcome.FAILURE
    assert row.detail["purpose"] == "consult.sign"
    assert row.source == "10.1.2.3"
    assert is_locked(_request(), user)
    # once locked, even the right password is refused
    with pytest.raises(IdentityNotConfirmed) as refused:
        confirm_identity(request=_request(), user=user, secret=PASSWORD, purpose="consult.sign")
    assert refused.value.reason == "locked"


def _enrolled(user):  # type: ignore[no-untyped-def]
    from django_otp.oath import totp

    from alliance import accounts, audit

    device = accounts.totp_begin(user=user, by=audit.SYSTEM)
    code = totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits)
    codes = accounts.totp_confirm(user=user, device=device, code=f"{code:06d}", by=audit.SYSTEM)
    return device, codes


def _next_code(device):  # type: ignore[no-untyped-def]
    from django_otp.oath import totp

    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=1):06d}"


def test_with_an_authenticator_a_current_code_confirms_and_the_password_does_not(alliance_world):  # type: ignore[no-untyped-def]
    user = alliance_world.specialist.user
    device, _codes = _enrolled(user)
    with pytest.raises(IdentityNotConfirmed) as refused:
        confirm_identity(request=_request(), user=user, secret=PASSWORD, purpose="consult.sign")
    assert refused.value.reason == "wrong"
    device.refresh_from_db()
    device.throttling_failure_count = 0  # the password's failure throttled the device; start afresh
    device.throttling_failure_timestamp = None
    device.save()
    confirm_identity(request=_request(), user=user, secret=_next_code(device), purpose="consult.sign")


def test_with_an_authenticator_a_recovery_code_confirms_once(alliance_world):  # type: ignore[no-untyped-def]
    user = alliance_world.specialist.user
    _device, codes = _enrolled(user)
    confirm_identity(request=_request(), user=user, secret=codes[3], purpose="consult.sign")
    with pytest.raises(IdentityNotConfirmed) as refused:
        confirm_identity(request=_request(), user=user, secret=codes[3], purpose="consult.sign")
    assert refused.value.reason == "wrong"


def test_wrong_codes_count_toward_the_lockout(alliance_world, settings):  # type: ignore[no-untyped-def]
    settings.AXES_FAILURE_LIMIT = 2
    user = alliance_world.specialist.user
    _enrolled(user)
    for _ in range(2):
        with pytest.raises(IdentityNotConfirmed):
            confirm_identity(request=_request(), user=user, secret="000000", purpose="consult.sign")
    assert is_locked(_request(), user)
    assert AuditEvent.objects.filter(action="auth.reconfirm", outcome=AuditEvent.Outcome.FAILURE).count() == 2
