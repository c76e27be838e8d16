"""What a signed-in doctor must do before anything else: give the code of their authenticator,
set one up (when the alliance's policy asks it of their role), or change a password an admin set.

Until then every page leads to that step (sign-out and the language switch stay open) and the
API and DICOMweb answer 403 with the step's code. The decision reads only what the request's
principal already loaded (the doctor's flags, the alliance's settings): no query of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import Resolver404, resolve, reverse
from django.utils.translation import gettext

from alliance.access import principal_of, second_factor_required

_JSON_PREFIXES = ("/api/", "/dicomweb/", "/fhir/")
ALWAYS_OPEN = frozenset({"logout", "set_language", "javascript-catalog"})


@dataclass(frozen=True)
class Step:
    url_name: str
    code: str

    def message(self) -> str:
        return {
            "second_factor_required": gettext("Enter the code of your authenticator first."),
            "second_factor_enrolment_required": gettext("Set up a second factor (an authenticator app) first."),
            "password_change_required": gettext("Change the password an admin set for you first."),
        }[self.code]


VERIFY = Step("account:verify", "second_factor_required")
ENROL = Step("account:two_factor", "second_factor_enrolment_required")
CHANGE_PASSWORD = Step("account:password", "password_change_required")


def step_for(request: HttpRequest) -> Step | None:
    """The step this session's user must take now, or None."""
    user: Any = request.user
    doctor = principal_of(request).doctor
    if doctor is None:
        return None
    if doctor.second_factor:
        if not user.is_verified():
            return VERIFY
    elif second_factor_required(principal_of(request)):
        return ENROL
    if doctor.must_change_password:
        return CHANGE_PASSWORD
    return None


class AccountGateMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        step = step_for(request) if request.user.is_authenticated else None
        request.account_step = step  # type: ignore[attr-defined]  # base.html hides the main menu meanwhile
        if step is None or _is_open(request, step):
            return self.get_response(request)
        if request.path_info.startswith(_JSON_PREFIXES):
            body = {"error": {"code": step.code, "message": step.message(), "fields": {}}}
            return JsonResponse(body, status=403)
        target = reverse(step.url_name)
        if request.method == "GET" and request.get_full_path() != "/":
            target += "?" + urlencode({"next": request.get_full_path()})
        return redirect(target)


def _is_open(request: HttpRequest, step: Step) -> bool:
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return True  # a 404 shows nothing
    return match.view_name == step.url_name or match.view_name in ALWAYS_OPEN
