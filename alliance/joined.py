"""A select_related join written once as SQL from the models' columns, loaded into model objects.

The ORM builds and compiles a select_related query on every call: about a millisecond, where
the statement itself takes a fifth of that. What every API request (its token) and every DICOM
association (its device) loads is written once here instead, from the models' own columns, and
each row becomes the objects select_related would have made (from_db, the fields' converters).

On PostgreSQL the statement is also prepared, once per database session (alliance.prepared):
planning the five-table join took about 0.25 ms of the 0.35 ms its execution took (a third of a
QIDO-RS request's own database time).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from django.db import connection
from django.db.models import Model

from alliance import prepared


class Part:
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

    def build(self, values: Sequence[Any]) -> Model | None:
        if values[0] is None:  # the pk of a LEFT JOIN that found nothing
            return None
        converted = list(values)
        for index, (converters, column) in enumerate(self.converters):
            for converter in converters:
                converted[index] = converter(converted[index], column, connection)
        return self.model.from_db(connection.alias, self.attnames, converted)


class Joined:
    """`parts()` (the first part's join clause is its FROM) joined, and `tail` after them (a
    WHERE with %s parameters, an ORDER BY, a LIMIT): written the first time it is used (the
    models must be loaded by then), then only executed."""

    def __init__(self, parts: Callable[[], list[Part]], tail: str) -> None:
        self._make_parts = parts
        self._tail = tail
        self._written: tuple[str, list[Part]] | None = None
        self._lock = threading.Lock()

    def _statement(self) -> tuple[str, list[Part]]:
        with self._lock:
            if self._written is None:
                parts = self._make_parts()
                columns = ", ".join(f'{p.alias}."{f.column}"' for p in parts for f in p.fields)
                joins = " ".join(p.join for p in parts)
                self._written = (f"SELECT {columns} {joins} {self._tail}", parts)
            return self._written

    def first(self, params: Sequence[Any]) -> list[Model | None] | None:
        """The objects of the first row (one per part, None for a LEFT JOIN that found
        nothing), or None when no row matches; the caller links them to each other."""
        sql, parts = self._statement()
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                prepared.execute(cursor, [(sql, list(params))])
            else:
                cursor.execute(sql, list(params))
            row = cursor.fetchone()
        if row is None:
            return None
        loaded = []
        start = 0
        for part in parts:
            loaded.append(part.build(row[start : start + len(part.fields)]))
            start += len(part.fields)
        return loaded
