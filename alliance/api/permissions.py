from typing import Any

from rest_framework.exceptions import NotFound
from rest_framework.permissions import BasePermission

from alliance.access import institutions_managed_by, module_off_message, module_refused, principal_of


class IsActiveDoctor(BasePermission):
    """The API is for active doctors of active institutions, on the modules their institution
    has switched on (a switched-off module's endpoints answer 404, as its pages do); what
    they see is decided by the apps' access functions."""

    def has_permission(self, request: Any, view: Any) -> bool:
        principal = principal_of(request)
        module = module_refused(principal, view)
        if module is not None:
            raise NotFound(module_off_message(module, principal.institution), code="module_off")
        return principal.doctor is not None


class ManagesMembers(BasePermission):
    """Doctor and device administration: alliance admins, and institution admins for their own."""

    message = "Only institution and alliance admins manage doctors and devices."

    def has_permission(self, request: Any, view: Any) -> bool:
        principal = principal_of(request)
        return principal.doctor is not None and institutions_managed_by(principal).exists()
