"""What every page may show of consults: the menu entry and the "Request a consult" buttons
of other apps' pages (the study page), decided by consults.access."""

from typing import Any

from django.http import HttpRequest

from alliance.access import principal_of
from consults import access


def consults(request: HttpRequest) -> dict[str, Any]:
    may_request = access.may_request_consult(principal_of(request))
    return {"nav_consults": may_request, "may_request_consult": may_request}
