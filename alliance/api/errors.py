"""One error format for the whole REST API: {"error": {"code", "message", "fields"}}."""

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from alliance.access import AccessDenied


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    if isinstance(exc, AccessDenied):
        exc = exceptions.PermissionDenied(str(exc))
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(exc, exceptions.ValidationError):
        fields = data if isinstance(data, dict) else {"non_field_errors": data}
        body = {"code": "invalid", "message": "The request has invalid fields.", "fields": fields}
    else:
        detail = data.get("detail", data) if isinstance(data, dict) else data
        code = getattr(detail, "code", None) or _code_for(response.status_code)
        body = {"code": str(code), "message": str(detail), "fields": {}}
    response.data = {"error": body}
    return response


def _code_for(status_code: int) -> str:
    return {status.HTTP_404_NOT_FOUND: "not_found", status.HTTP_403_FORBIDDEN: "forbidden"}.get(status_code, "error")
