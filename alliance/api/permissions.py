from typing import Any

from rest_framework.permissions import BasePermission

from alliance.access import institutions_managed_by, principal_of


class IsActiveDoctor(BasePermission):
    """The API is for active doctors of active institutions; what they see is decided by the apps' access functions."""

    def has_permission(self, request: Any, view: Any) -> bool:
        return principal_of(request).doctor is not None


class ManagesMembers(BasePermission):
    """Doctor and device administration: alliance admins, and institution admins for their own."""

    message = "Only institution and alliance admins manage doctors and devices."

    def has_permission(self, request: Any, view: Any) -> bool:
        principal = principal_of(request)
        return principal.doctor is not None and institutions_managed_by(principal).exists()
