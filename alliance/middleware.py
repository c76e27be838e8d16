"""Request middleware: who is asking (request.principal), deactivation at once, a strict CSP,
and 503 rather than 500 while the database is unavailable."""

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth import logout
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import render
from django.template import loader
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext

from alliance import audit
from alliance.access import module_off_message, module_refused, principal_of, resolve_principal
from alliance.pdf import MissingFont

log = logging.getLogger(__name__)
R = TypeVar("R", bound=HttpResponseBase)

# What a lost or refused database connection raises (psycopg2's OperationalError and
# InterfaceError, through Django's wrappers).
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)
RETRY_AFTER_SECONDS = 30
_JSON_PREFIXES = ("/api/", "/dicomweb/", "/fhir/")


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


class AuditContextMiddleware:
    """Refused reads (alliance.audit.denied) name this request's route and source, and are
    written once the response has been sent (Django calls a response's closers after the server
    has sent it), so a refusal answers as fast as a missing object's 404."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with audit.collecting_denials(request) as denials:
            response = self.get_response(request)
        if denials:
            response._resource_closers.append(  # type: ignore[attr-defined]
                functools.partial(audit.record_denials, denials)
            )
        return response


class NoStoreMiddleware:
    """Every answer may carry patient data, so none is kept by a browser or a shared cache
    (Cache-Control: no-store), unless its view chose otherwise: pixel data may be cached
    privately (alliance.middleware.cache_privately). Static files are answered before this."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if "Cache-Control" not in response.headers:
            response.headers["Cache-Control"] = "no-store"
        return response


def cache_privately(response: R, seconds: int, *, token: bool = True) -> R:
    """Pixel data: the browser of the one who asked may keep it, no shared cache may. What it
    keeps is kept per credential (Vary: Cookie, and Authorization where the view accepts a
    token: `token`), so that another user signed in on the same browser, or another token,
    is asked for again and passes the access check, instead of being shown the first one's
    copy."""
    response.headers["Cache-Control"] = f"private, max-age={seconds}"
    patch_vary_headers(response, ("Cookie", "Authorization") if token else ("Cookie",))
    return response


class NulInQueryMiddleware:
    """A query parameter (a QIDO key, an API or page filter) holding a NUL byte answers 400
    naming the parameter: no filter of ours means one, and the database refuses it in a string
    (500 before). One check for every entry point instead of one per filter."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        for name, values in request.GET.lists():
            if "\x00" in name or any("\x00" in value for value in values):
                return bad_parameter(request, name.replace("\x00", "\\x00"))
        return self.get_response(request)


def bad_parameter(request: HttpRequest, name: str) -> HttpResponse:
    message = f"The query parameter {name} holds a NUL byte."
    if request.path.startswith("/api/"):
        body = {"code": "invalid", "message": "The request has invalid fields.", "fields": {name: [message]}}
        return JsonResponse({"error": body}, status=400)
    if request.path.startswith("/dicomweb/"):
        return JsonResponse({"detail": message}, status=400)
    return HttpResponse(message, status=400, content_type="text/plain; charset=utf-8")


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


class DatabaseUnavailableMiddleware:
    """A view that finds the database unavailable answers 503 Service Unavailable with
    Retry-After (RFC 9110 15.6.4), not 500: the client may simply try again. What fails
    before the view (the session, the signed-in user) is answered so by
    alliance.views.server_error. A PDF refused for want of a Chinese font (alliance.pdf)
    is answered 503 too, with what to install."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, MissingFont):
            # A PDF this server cannot print with its Chinese: say what to install, print nothing.
            log.error("PDF refused on %s: no CJK font", request.path)
            return HttpResponse(loader.render_to_string("503.html", {"message": str(exception)}), status=503)
        if not isinstance(exception, DATABASE_UNAVAILABLE):
            return None
        return database_unavailable(request, exception)


def database_unavailable(request: HttpRequest, exception: BaseException) -> HttpResponse:
    """503 with Retry-After: JSON for the API and DICOMweb (their error format), else a
    plain page that needs neither the database nor the signed-in user."""
    log.error("the database is unavailable (%s %s): %s", request.method, request.path, exception)
    message = gettext("The database is unavailable at the moment. Please try again in a minute.")
    response: HttpResponse
    if request.path_info.startswith(_JSON_PREFIXES) or "application/json" in request.headers.get("Accept", ""):
        body = {"error": {"code": "database_unavailable", "message": message, "fields": {}}}
        response = JsonResponse(body, status=503)
    else:
        response = HttpResponse(loader.render_to_string("503.html", {"message": message}), status=503)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class ModuleSwitchMiddleware:
    """A page of a module switched off for the doctor's institution answers 404 with a page that
    says so (C11: what is off is absent). Token requests are decided by the REST API's
    permission (alliance.api.permissions.IsActiveDoctor) once the token is read."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view: Callable[..., Any], args: Any, kwargs: Any
    ) -> HttpResponse | None:
        principal = principal_of(request)
        module = module_refused(principal, view)
        if module is None:
            return None
        return module_off(request, module, principal.institution)


def module_off(request: HttpRequest, module: str, institution: Any) -> HttpResponse:
    """404: JSON in the API's error format for the API and DICOMweb, else a page."""
    message = module_off_message(module, institution)
    if request.path_info.startswith(_JSON_PREFIXES) or "application/json" in request.headers.get("Accept", ""):
        return JsonResponse({"error": {"code": "module_off", "message": message, "fields": {}}}, status=404)
    return render(request, "module_off.html", {"message": message, "module": module}, status=404)
