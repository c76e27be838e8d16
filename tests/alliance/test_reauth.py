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
