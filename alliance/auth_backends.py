"""Sign-in lockout (django-axes) for the web sign-in form."""

from typing import Any

from axes.backends import AxesStandaloneBackend
from django.http import HttpRequest


class LockoutBackend(AxesStandaloneBackend):
    """Axes' lockout check, applied where there is a request to lock out.

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
        return super().authenticate(request, username=username, password=password, **kwargs)
