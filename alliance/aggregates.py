"""SQL aggregates the figures pages need, on PostgreSQL and on the embedded SQLite alike.

PostgreSQL has the ordered-set aggregate percentile_cont; SQLite has none, so the same
name is registered on every new SQLite connection as a Python aggregate that interpolates
exactly as PostgreSQL does (continuous percentile: linear between the two nearest rows).
The pages therefore show the same numbers whichever database the alliance runs on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from django.db.models import Aggregate, Expression, Field, FloatField, Func
from django.db.models.sql.compiler import SQLCompiler


def percentile_cont(values: list[float], fraction: float) -> float | None:
    """PostgreSQL's percentile_cont: the value at position fraction * (n - 1) of the sorted
    values, interpolated linearly between its neighbours; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class SQLitePercentileCont:
    """The SQLite aggregate percentile_cont(value, fraction), NULL values skipped as in PostgreSQL."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.fraction = 0.5

    def step(self, value: Any, fraction: float) -> None:
        self.fraction = fraction
        if value is not None:
            self.values.append(float(value))

    def finalize(self) -> float | None:
        return percentile_cont(self.values, self.fraction)


class SQLitePercentilesCont(SQLitePercentileCont):
    """percentiles_cont(value, '[0.5, 0.9]'): several percentiles of one sort, as a JSON list."""

    def step(self, value: Any, fraction: Any) -> None:  # type: ignore[override]
        self.fractions = fraction
        if value is not None:
            self.values.append(float(value))

    def finalize(self) -> str | None:  # type: ignore[override]
        if not self.values:
            return None
        return json.dumps([percentile_cont(self.values, f) for f in json.loads(self.fractions)])


def register_sqlite_functions(sender: Any, connection: Any, **kwargs: Any) -> None:
    """connection_created receiver: give SQLite the aggregates PostgreSQL has built in."""
    if connection.vendor == "sqlite":
        connection.connection.create_aggregate("percentile_cont", 2, SQLitePercentileCont)
        connection.connection.create_aggregate("percentiles_cont", 2, SQLitePercentilesCont)


class PercentileCont(Aggregate):
    """percentile_cont(fraction) WITHIN GROUP (ORDER BY expression); a FILTER works as for Count."""

    function = "percentile_cont"
    name = "PercentileCont"
    output_field = FloatField()
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression: Any, fraction: float, **extra: Any) -> None:
        if not 0.0 <= float(fraction) <= 1.0:
            raise ValueError("A percentile's fraction lies between 0 and 1.")
        # A validated float is written into the SQL: PostgreSQL wants a constant here.
        super().__init__(expression, fraction=repr(float(fraction)), **extra)

    def as_sqlite(self, compiler: SQLCompiler, connection: Any, **extra_context: Any) -> Any:
        # The template on a copy, not as an argument: Aggregate.as_sql passes its own
        # template argument when it adds the FILTER clause.
        fallback = self.copy()
        fallback.template = "%(function)s(%(expressions)s, %(fraction)s)"
        return fallback.as_sql(compiler, connection, **extra_context)


class FloatListField(Field):  # type: ignore[type-arg]
    """The result of PercentilesCont: a PostgreSQL array, or SQLite's JSON text, as a list."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> list[float] | None:
        if value is None or isinstance(value, list):
            return value
        return [float(v) for v in json.loads(value)]


class PercentilesCont(Aggregate):
    """Several percentiles from one sort: percentile_cont(ARRAY[...]) WITHIN GROUP (ORDER BY
    expression) on PostgreSQL; a list of floats, in the order of `fractions`, or None for no rows."""

    function = "percentile_cont"
    name = "PercentilesCont"
    output_field = FloatListField()
    template = "%(function)s(ARRAY[%(fractions)s]::double precision[]) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression: Any, fractions: Sequence[float], **extra: Any) -> None:
        if not fractions or not all(0.0 <= float(f) <= 1.0 for f in fractions):
            raise ValueError("A percentile's fraction lies between 0 and 1.")
        listed = ", ".join(repr(float(f)) for f in fractions)
        super().__init__(expression, fractions=listed, **extra)

    def as_sqlite(self, compiler: SQLCompiler, connection: Any, **extra_context: Any) -> Any:
        fallback = self.copy()
        fallback.template = "percentiles_cont(%(expressions)s, '[%(fractions)s]')"
        return fallback.as_sql(compiler, connection, **extra_context)


class SecondsBetween(Func):
    """The seconds from `start` to `end` (two datetime expressions) as a float."""

    output_field = FloatField()
    arity = 2

    def __init__(self, start: Any, end: Any, **extra: Any) -> None:
        super().__init__(start, end, **extra)

    def _sides(self, compiler: SQLCompiler) -> tuple[str, str, list[Any]]:
        """Both sides compiled; the parameters in the order the SQL names them: end, then start."""
        start: Expression
        end: Expression
        start, end = self.get_source_expressions()  # type: ignore[assignment]
        start_sql, start_params = compiler.compile(start)
        end_sql, end_params = compiler.compile(end)
        return start_sql, end_sql, [*end_params, *start_params]

    def as_sql(self, compiler: SQLCompiler, connection: Any, *args: Any, **extra_context: Any) -> Any:
        start, end, params = self._sides(compiler)
        # date_part, not EXTRACT: EXTRACT returns numeric since PostgreSQL 14, several times
        # slower per row than date_part's double precision over a year of consults.
        return f"date_part('epoch', {end} - {start})", params

    def as_sqlite(self, compiler: SQLCompiler, connection: Any, **extra_context: Any) -> Any:
        start, end, params = self._sides(compiler)
        return f"((julianday({end}) - julianday({start})) * 86400.0)", params
