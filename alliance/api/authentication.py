"""Token authentication that honours deactivation, expiry and revocation at once.

Accepts `Authorization: Token <key>` and `Authorization: Bearer <key>` (DICOMweb clients
send the latter). Tokens are kept as SHA-256 digests (alliance.models.ApiToken): a key is
looked up by its digest. A token of an inactive user or doctor is refused like a wrong one;
one whose password an admin set answers 403 "password_change_required" until they change it.
"""

from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from alliance.access import Principal
from alliance.accounts import token_digest
from alliance.joined import Joined, Part
from alliance.models import Alliance, ApiToken, Doctor, Institution


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
        token = _load_token(token_digest(key))
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


# --- the token with its user, doctor, institution and alliance in one statement -------------
# Every API and DICOMweb request loads these: the join is written once (alliance.joined), not
# built and compiled by select_related on each request (about a millisecond of a QIDO-RS
# answer's few).


def _token_parts() -> list[Part]:
    user = get_user_model()
    return [
        Part(ApiToken, "t", f'FROM "{ApiToken._meta.db_table}" t'),
        Part(user, "u", f'JOIN "{user._meta.db_table}" u ON u."id" = t."user_id"'),
        Part(Doctor, "d", f'LEFT JOIN "{Doctor._meta.db_table}" d ON d."user_id" = u."id"'),
        Part(Institution, "i", f'LEFT JOIN "{Institution._meta.db_table}" i ON i."id" = d."institution_id"'),
        Part(Alliance, "a", f'LEFT JOIN "{Alliance._meta.db_table}" a ON a."id" = i."alliance_id"'),
    ]


_TOKEN = Joined(_token_parts, 'WHERE t."digest" = %s AND t."revoked_at" IS NULL LIMIT 1')


def _load_token(digest: str) -> ApiToken | None:
    """The live (unrevoked) token of this digest with token.user, user.doctor (or its absence),
    doctor.institution and institution.alliance loaded, as select_related would leave them."""
    loaded = _TOKEN.first([digest])
    if loaded is None:
        return None
    token, user, doctor, institution, alliance = loaded
    assert isinstance(token, ApiToken) and isinstance(user, get_user_model())
    token.user = user  # type: ignore[assignment]
    Doctor.user.field.remote_field.set_cached_value(user, doctor)  # user.doctor, or its absence
    if isinstance(doctor, Doctor) and isinstance(institution, Institution):
        doctor.user = user  # type: ignore[assignment]
        doctor.institution = institution
        institution.alliance = alliance  # type: ignore[assignment]
    return token


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
