"""Token authentication that honours deactivation, expiry and revocation at once.

Accepts `Authorization: Token <key>` and `Authorization: Bearer <key>` (DICOMweb clients
send the latter). Tokens are kept as SHA-256 digests (alliance.models.ApiToken): a key is
looked up by its digest. A token of an inactive user or doctor is refused like a wrong one;
one whose password an admin set answers 403 "password_change_required" until they change it.
"""

from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Model
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from alliance.access import Principal
from alliance.accounts import token_digest
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
# Every API and DICOMweb request loads these. The statement is written once from the models'
# columns: the ORM's select_related would build and compile the same join on each request
# (about a millisecond of a QIDO-RS answer's few).


class _Part:
    """One model of the join: its alias, its join clause, and how a row's values become it."""

    def __init__(self, model: type[Model], alias: str, join: str) -> None:
        self.model, self.alias, self.join = model, alias, join
        self.fields = list(model._meta.concrete_fields)
        self.attnames = [f.attname for f in self.fields]
        self.converters = []
        for field in self.fields:
            column = field.get_col(model._meta.db_table)
            found = connection.ops.get_db_converters(column) + field.get_db_converters(connection)  # type: ignore[attr-defined]
            self.converters.append((found, column))

    def build(self, values: tuple[Any, ...]) -> Model | None:
        if values[0] is None:  # the pk of a LEFT JOIN that found nothing
            return None
        converted = list(values)
        for index, (converters, column) in enumerate(self.converters):
            for converter in converters:
                converted[index] = converter(converted[index], column, connection)
        return self.model.from_db(connection.alias, self.attnames, converted)


_LOADER: list[tuple[str, list[_Part]]] = []


def _loader() -> tuple[str, list[_Part]]:
    if not _LOADER:
        user = get_user_model()
        parts = [
            _Part(ApiToken, "t", f'FROM "{ApiToken._meta.db_table}" t'),
            _Part(user, "u", f'JOIN "{user._meta.db_table}" u ON u."id" = t."user_id"'),
            _Part(Doctor, "d", f'LEFT JOIN "{Doctor._meta.db_table}" d ON d."user_id" = u."id"'),
            _Part(Institution, "i", f'LEFT JOIN "{Institution._meta.db_table}" i ON i."id" = d."institution_id"'),
            _Part(Alliance, "a", f'LEFT JOIN "{Alliance._meta.db_table}" a ON a."id" = i."alliance_id"'),
        ]
        columns = ", ".join(f'{p.alias}."{f.column}"' for p in parts for f in p.fields)
        joins = " ".join(p.join for p in parts)
        sql = f'SELECT {columns} {joins} WHERE t."digest" = %s AND t."revoked_at" IS NULL LIMIT 1'
        _LOADER.append((sql, parts))
    return _LOADER[0]


def _load_token(digest: str) -> ApiToken | None:
    """The live (unrevoked) token of this digest with token.user, user.doctor (or its absence),
    doctor.institution and institution.alliance loaded, as select_related would leave them."""
    sql, parts = _loader()
    with connection.cursor() as cursor:
        cursor.execute(sql, [digest])
        row = cursor.fetchone()
    if row is None:
        return None
    loaded = []
    start = 0
    for part in parts:
        loaded.append(part.build(row[start : start + len(part.fields)]))
        start += len(part.fields)
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
