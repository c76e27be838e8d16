from typing import Any

from rest_framework.permissions import BasePermission

from alliance.access import doctor_of


class IsActiveDoctor(BasePermission):
    """The API is for active doctors of active institutions; what they see is decided in access.py."""

    def has_permission(self, request: Any, view: Any) -> bool:
        return doctor_of(request.user) is not None
