"""Token authentication that honours deactivation, expiry and revocation at once.

Accepts `Authorization: Token <key>` and `Authorization: Bearer <key>` (DICOMweb clients
send the latter). Tokens are kept as SHA-256 digests (alliance.models.ApiToken): a key is
looked up by its digest. A token of an inactive user or doctor is refused like a wrong one;
one whose password an admin set answers 403 "password_change_required" until they change it.
"""

from typing import Any

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from alliance.access import Principal
from alliance.accounts import token_digest
from alliance.models import ApiToken


class PasswordChangeRequired(exceptions.PermissionDenied):
    default_detail = "Change the password an admin set for you on the web page first (My account)."
    default_code = "password_change_required"


class DoctorTokenAuthentication(BaseAuthentication):
    keywords = ("Token", "Bearer")

    def authenticate(self, request: Any) -> tuple[Any, Any] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "").split()
        if not header or header[0] not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Invalid token header.")
        user, token = self.authenticate_credentials(header[1])
        # The middleware saw no signed-in user: the principal of this request is the token's.
        principal = self.principal_for(user)
        request._request.principal = principal
        if principal.doctor is not None and principal.doctor.must_change_password:
            raise PasswordChangeRequired()
        return user, token

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        token = (
            ApiToken.objects.select_related("user__doctor__institution__alliance")
            .filter(digest=token_digest(key), revoked_at__isnull=True)
            .first()
        )
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if token.expires_at <= timezone.now():
            raise exceptions.AuthenticationFailed("Token expired: make a new one on the API tokens page.")
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
            "description": 'A token from the "API tokens" page (or `manage.py token_create`), sent as '
            '"Token <key>" or "Bearer <key>". It expires after API_TOKEN_DAYS.',
        }
