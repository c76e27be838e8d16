from typing import Any

from django.http import HttpRequest

from alliance import access


def doctor(request: HttpRequest) -> dict[str, Any]:
    """The signed-in doctor and what their navigation may show."""
    d = access.doctor_of(getattr(request, "user", None))
    return {
        "current_doctor": d,
        "nav_manage": bool(d) and access.institutions_managed_by(request.user).exists(),
        "nav_alliance_admin": bool(d) and access.is_alliance_admin(request.user),
        "nav_clinical": bool(d) and access.has_clinical_role(request.user),
        "nav_images": bool(d)
        and access.has_clinical_role(request.user)
        and access.has_module(request.user, "image_store"),
        "nav_consults": bool(d)
        and access.has_clinical_role(request.user)
        and access.has_module(request.user, "consults"),
    }
