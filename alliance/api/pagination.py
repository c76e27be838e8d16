"""Paging of every REST list: limit and offset are checked, not guessed (issue 22 item 9).

DRF's LimitOffsetPagination takes a limit that is not a number for the default and hands a
huge offset to the database, which answers 500 for one past its bigint. Here a bad value
answers 400 naming the parameter; a limit above the maximum is capped as before."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request

MAX_OFFSET = 10**9


class StrictLimitOffsetPagination(LimitOffsetPagination):
    max_limit = 1000

    def get_limit(self, request: Request) -> int | None:
        if self.limit_query_param not in request.query_params:
            return self.default_limit
        limit = _integer(request, self.limit_query_param, minimum=1)
        return min(limit, self.max_limit) if self.max_limit else limit

    def get_offset(self, request: Request) -> int:
        if self.offset_query_param not in request.query_params:
            return 0
        return _integer(request, self.offset_query_param, minimum=0)


def _integer(request: Request, name: str, *, minimum: int) -> int:
    raw: Any = request.query_params.get(name, "")
    if not (raw.isascii() and raw.isdigit()) or not minimum <= int(raw) <= MAX_OFFSET:
        raise ValidationError({name: [f"{name} must be an integer from {minimum} to {MAX_OFFSET}."]})
    return int(raw)
