from typing import Any

from rest_framework.permissions import BasePermission

from alliance.access import doctor_of, institutions_managed_by


class IsActiveDoctor(BasePermission):
    """The API is for active doctors of active institutions; what they see is decided in access.py."""

    def has_permission(self, request: Any, view: Any) -> bool:
        return doctor_of(request.user) is not None


class ManagesMembers(BasePermission):
    """Doctor and device administration: alliance admins, and institution admins for their own."""

    message = "Only institution and alliance admins manage doctors and devices."

    def has_permission(self, request: Any, view: Any) -> bool:
        return doctor_of(request.user) is not None and institutions_managed_by(request.user).exists()
