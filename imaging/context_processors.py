"""What every page may show of imaging: the emergency-access links of the navigation."""

from typing import Any

from django.http import HttpRequest

from alliance.access import principal_of
from alliance.models import Role
from imaging import access
from imaging.models import BreakGlassReview
from imaging.routing import access as routing_access


def imaging(request: HttpRequest) -> dict[str, Any]:
    principal = principal_of(request)
    is_admin = principal.has_role(Role.INSTITUTION_ADMIN) and principal.has_module(access.IMAGE_STORE_MODULE)
    pending = (
        access.break_glass_reviews_for(principal).filter(state=BreakGlassReview.State.PENDING).count()
        if is_admin
        else 0
    )
    return {
        "nav_break_glass": access.may_break_glass(principal),
        "nav_worklist": access.may_schedule(principal),
        "nav_break_glass_reviews": is_admin,
        "break_glass_pending": pending,
        "nav_routing": routing_access.routing_institution_of(principal) is not None,
    }
