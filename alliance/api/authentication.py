"""Token authentication that honours deactivation at once.

Accepts `Authorization: Token <key>` and `Authorization: Bearer <key>` (DICOMweb clients
send the latter). A token of an inactive user or doctor is refused like a wrong one.
"""

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from alliance.access import Principal


class DoctorTokenAuthentication(TokenAuthentication):
    keywords = ("Token", "Bearer")

    def authenticate(self, request: Any) -> tuple[Any, Any] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "").split()
        if not header or header[0] not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Invalid token header.")
        user, token = self.authenticate_credentials(header[1])
        # The middleware saw no signed-in user: the principal of this request is the token's.
        request._request.principal = self.principal_for(user)
        return user, token

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        token = Token.objects.select_related("user__doctor__institution__alliance").filter(key=key).first()
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        user = token.user
        if not user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        if self.principal_for(user).doctor is None and not user.is_superuser:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return user, token

    @staticmethod
    def principal_for(user: Any) -> Principal:
        """The doctor loaded with the token (select_related above): no query of its own."""
        return Principal.for_doctor(user, getattr(user, "doctor", None))

    def authenticate_header(self, request: Any) -> str:
        return "Token"


class DoctorTokenScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes DoctorTokenAuthentication (both prefixes)."""

    target_class = DoctorTokenAuthentication
    name = "tokenAuth"
    priority = 1

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'A token from `manage.py token_create`, sent as "Token <key>" or "Bearer <key>".',
        }
