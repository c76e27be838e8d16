"""Statements prepared once per PostgreSQL session, then only executed.

Parsing, analysing and planning a statement cost PostgreSQL more than running it for the
statements the hot paths send most: the token's join (alliance.joined) and the index's rows of
a C-STORE (imaging.index), where they were about two fifths of the database's time per new
study. `execute` sends statements as EXECUTE of a statement this session has prepared; the first
use of a text on a session sends its PREPARE in the same round trip. A session Django opens
afresh (a reconnect) prepares again.

A PREPARE that ran stays even when what follows it in its round trip fails (a unique
violation a parallel store causes, a cancel), and one refused in an aborted transaction is not
there: after a failed round trip that prepared something, which of them are there is not known,
so the session's statements are prepared afresh under new names (the others are freed with the
session). So are they when PostgreSQL says a statement is not what this module thinks: absent
(deallocated behind Django's back, as a pooler in transaction mode would: not supported, but
not fatal to the session either), there already, or its cached plan made for columns of another
type (a migration altered a table a running process reads). Other failures of a statement
prepared before (a unique violation of a resent instance) leave the session's statements as they
are: they are still there and good.

Each runs its generic plan from its first execution (plan_cache_mode, which settings set on
every PostgreSQL session; Django's own queries are not prepared, so it does not touch them):
the statements prepared here are look-ups by key and inserts, whose plan does not depend on
the values, and PostgreSQL's own choice kept planning the batch's patients each time, as the
custom plan's estimate of a small array looked cheaper than the generic plan's ten elements.

Texts are the statements' own (written from the models' columns, never from input, with %s
placeholders); a statement's name is given to its text once per process. Past MAX_TEXTS texts,
a new text is only executed, not prepared: a caller writing a text per value would otherwise fill
every session with statements.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import connection

MAX_TEXTS = 1024
# SQLSTATEs saying a prepared statement is not what the session's record says: no such
# statement, one of that name already there, a cached plan whose result type changed
_STALE = frozenset({"26000", "42P05", "0A000"})

_names: dict[str, str] = {}
_lock = threading.Lock()


class _Session:
    """What this thread's database session has prepared, with the session it was said of."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.prepared: set[str] = set()
        self.generation = 0


def _session() -> _Session:
    """The current thread's session state (kept on Django's connection wrapper; a new session has
    prepared nothing)."""
    session = connection.connection
    kept: _Session | None = getattr(connection, "alliance_prepared", None)
    if kept is None or kept.session is not session:
        kept = _Session(session)
        connection.alliance_prepared = kept  # type: ignore[attr-defined]
    return kept


def _name(sql: str) -> str | None:
    """The name of `sql`'s statement (the same in every session of this process), or None past
    MAX_TEXTS."""
    name = _names.get(sql)
    if name is None:
        with _lock:
            name = _names.get(sql)
            if name is None and len(_names) < MAX_TEXTS:
                name = _names[sql] = f"alliance_p{len(_names) + 1}"
    return name


def execute(
    cursor: Any, statements: Sequence[tuple[str, Sequence[Any]]], *, prepare: bool = True, first: str = ""
) -> None:
    """Run each (sql, params) in order in one round trip (PostgreSQL, on `cursor`, which is
    connected), each as this session's prepared statement; the last one's rows are left on the
    cursor, as one execute of the statements joined by semicolons would leave them. `prepare`
    False: only executed (a caller whose texts grow with their rows keeps the large ones out of
    every session's memory). `first`: a statement without parameters sent as it is ahead of
    them (a SET LOCAL, which PREPARE does not take)."""
    state = _session()
    text, values, preparing_ = _compose(state, statements, prepare)
    if first:
        text = f"{first}; {text}"
    _run(state, preparing_, lambda: cursor.execute(text, values))


@contextmanager
def preparing() -> Iterator[None]:
    """Within the block, each query the ORM sends on this thread's connection (PostgreSQL) goes
    as a prepared statement of its text, as `execute` sends one: for a query a hot path repeats
    with other values, whose plan does not depend on them (a look-up by identifier), and whose
    text is not made from input (Django writes LIMIT and OFFSET into it: keep paging out). A
    text with a % that is not a placeholder is sent as it is. Elsewhere the block changes nothing."""
    if connection.vendor != "postgresql":
        yield
        return

    def send(execute: Any, sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        if many:
            return execute(sql, params, many, context)
        state = _session()
        text, values, preparing_ = _compose(state, [(sql, list(params or ()))], True)
        return _run(state, preparing_, lambda: execute(text, values, many, context))

    with connection.execute_wrapper(send):
        yield


def _compose(
    state: _Session, statements: Sequence[tuple[str, Sequence[Any]]], prepare: bool
) -> tuple[str, list[Any], list[str]]:
    """The round trip's text and values, and the names it prepares."""
    texts: list[str] = []
    values: list[Any] = []
    preparing_: list[str] = []
    for sql, params in statements:
        name = _name(sql) if prepare and preparable(sql) else None
        if name is None:
            texts.append(sql)
        else:
            name = f"{name}_{state.generation}"
            if name not in state.prepared:
                texts.append(f"PREPARE {name} AS {numbered(sql)}")
                preparing_.append(name)
            texts.append(f"EXECUTE {name}({', '.join(['%s'] * len(params))})" if params else f"EXECUTE {name}")
        values += params
    return "; ".join(texts), values, preparing_


def _run(state: _Session, preparing_: list[str], send: Callable[[], Any]) -> Any:
    try:
        result = send()
    except BaseException as exc:
        # which of them are there, or what they are, is not known (see the module's note)
        if preparing_ or getattr(exc.__cause__, "pgcode", None) in _STALE:
            state.generation += 1
            state.prepared.clear()
        raise
    state.prepared.update(preparing_)
    return result


def preparable(sql: str) -> bool:
    """Whether `sql` can be prepared: its only % are placeholders (a text with another, such as a
    LIKE pattern written into it, is only executed, by `execute` and in `preparing`)."""
    return "%" not in sql.replace("%s", "")


def numbered(sql: str) -> str:
    """`sql` with its %s placeholders numbered as PREPARE takes them ($1, $2 ...); the statements
    prepared are written from column names and have no other % in them."""
    if not preparable(sql):
        raise ValueError("a statement to prepare has a % that is not a placeholder")
    numbers = itertools.count(1)
    return re.sub("%s", lambda _: f"${next(numbers)}", sql)
