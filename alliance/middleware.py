"""Request middleware: who is asking (request.principal), deactivation at once, a strict CSP."""

from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse

from alliance.access import resolve_principal


class ActiveDoctorMiddleware:
    """Resolves the request's principal once (request.principal, passed to every access function).

    A doctor deactivated (or whose institution is switched off) loses a live session at once.
    Superusers without a doctor record keep Django admin access for operators.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        principal = resolve_principal(request.user)
        if principal.doctor is None and request.user.is_authenticated and not request.user.is_superuser:
            logout(request)
            principal = resolve_principal(request.user)  # now anonymous
        request.principal = principal  # type: ignore[attr-defined]
        return self.get_response(request)


class ContentSecurityPolicyMiddleware:
    """No third-party hosts: scripts, styles and images come from this server only."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.policy = getattr(
            settings,
            "CONTENT_SECURITY_POLICY",
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self' 'wasm-unsafe-eval'; "
            "worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'self'; base-uri 'self'; form-action 'self'",
        )

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", self.policy)
        return response
