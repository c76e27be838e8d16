from typing import Any

from django.http import HttpRequest

from alliance import access


def doctor(request: HttpRequest) -> dict[str, Any]:
    """The signed-in doctor and what their navigation may show."""
    principal = access.principal_of(request)
    d = principal.doctor
    return {
        "current_doctor": d,
        "nav_manage": bool(d) and access.institutions_managed_by(principal).exists(),
        "nav_alliance_admin": principal.is_alliance_admin,
        "nav_figures": access.may_see_figures(principal),
        "nav_clinical": principal.is_clinical,
        "nav_images": principal.is_clinical and principal.has_module("image_store"),
    }
