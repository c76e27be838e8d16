"""Sign-in lockout (django-axes) for the web sign-in form, plus the per-address rate."""

from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.exceptions import AxesBackendPermissionDenied
from django.http import HttpRequest

from alliance import audit
from alliance.access import address_refused


class LockoutBackend(AxesStandaloneBackend):
    """Axes' lockout check, applied where there is a request to lock out.

    Axes locks one (username, address) pair (settings.AXES_LOCKOUT_PARAMETERS); an address
    that failed too often for any usernames is refused here for every username
    (alliance.access.address_refused), answered by axes' lockout page as a locked pair is.

    Password sign-in over the network only happens through the sign-in page (the REST
    API takes tokens), and that always passes the request. Authentication without a
    request (a script or a test client calling authenticate) has no client to lock
    out, so it is left to ModelBackend instead of raising.
    """

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> None:  # type: ignore[override]
        if request is None:
            return None
        if address_refused(audit.source_of(request)):
            request.axes_locked_out = True  # type: ignore[attr-defined]
            raise AxesBackendPermissionDenied("too many failed sign-ins from this address")
        return super().authenticate(request, username=username, password=password, **kwargs)
