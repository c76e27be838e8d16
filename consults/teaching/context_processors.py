"""What every page may show of teaching cases: the menu entry (only where the module is on)
and the "Make a teaching case" links of the consult and study pages."""

from typing import Any

from django.http import HttpRequest

from alliance.access import principal_of
from consults.teaching import access


def teaching(request: HttpRequest) -> dict[str, Any]:
    principal = principal_of(request)
    return {"nav_teaching": access.may_use_teaching(principal), "may_author_teaching": access.may_author(principal)}
