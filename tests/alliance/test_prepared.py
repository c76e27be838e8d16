"""alliance.prepared on PostgreSQL: a statement is prepared once per database session, and a
failed round trip never leaves the session unable to run it."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext

from alliance import prepared

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="PREPARE is PostgreSQL's")

DIVIDE = "SELECT 100 / %s::int, %s::text"
COUNT = "SELECT count(*) FROM unnest(%s::text[])"


def _run(*statements: tuple[str, list[Any]]) -> tuple[list[tuple[Any, ...]], str]:
    """The last statement's rows and the one round trip's text."""
    with CaptureQueriesContext(connection) as captured, connection.cursor() as cursor:
        prepared.execute(cursor, list(statements))
        rows = cursor.fetchall()
    assert len(captured.captured_queries) == 1, "one round trip, prepared or not"
    return rows, captured.captured_queries[0]["sql"]


def _session_statements() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements")
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.django_db
def test_the_first_use_on_a_session_prepares_the_later_ones_only_execute() -> None:
    rows, first = _run((DIVIDE, [4, "青山"]))
    assert rows == [(25, "青山")]
    name = first.split()[1]
    assert first.startswith(f"PREPARE {name} AS SELECT 100 / $1::int, $2::text; EXECUTE {name}(4, ")
    rows, again = _run((DIVIDE, [5, "城区"]))
    assert rows == [(20, "城区")]
    assert again.startswith(f"EXECUTE {name}(5, ")
    assert name in _session_statements()
    with connection.cursor() as cursor:  # generic from the first (settings: plan_cache_mode)
        cursor.execute("SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = %s", [name])
        assert cursor.fetchone() == (2, 0)


@pytest.mark.django_db
def test_several_statements_go_in_one_round_trip_and_the_last_one_answers() -> None:
    divide, count = f"{DIVIDE} /* two */", f"{COUNT} /* two */"  # texts no other test prepared on this session
    rows, sql = _run((divide, [2, "a"]), (count, [["x", "y", "z"]]))
    assert rows == [(3,)]
    assert sql.count("PREPARE ") == 2 and sql.count("EXECUTE ") == 2
    rows, sql = _run((divide, [2, "a"]), (count, [[]]))
    assert rows == [(0,)]
    assert "PREPARE" not in sql and sql.count("EXECUTE ") == 2


@pytest.mark.django_db(transaction=True)
def test_a_new_session_prepares_again() -> None:
    _run((DIVIDE, [4, "a"]))
    connection.close()  # Django opens a new session at the next query
    rows, sql = _run((DIVIDE, [4, "a"]))
    assert sql.startswith("PREPARE ")
    assert rows == [(25, "a")]


@pytest.mark.django_db(transaction=True)
def test_a_statement_prepared_in_a_rolled_back_transaction_is_still_there() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        assert _run((DIVIDE, [4, "a"]))[1].startswith("PREPARE ")
        raise RuntimeError("roll back")
    rows, sql = _run((DIVIDE, [4, "a"]))
    assert sql.startswith("EXECUTE ")
    assert rows == [(25, "a")]


@pytest.mark.django_db(transaction=True)
def test_a_prepare_refused_by_an_aborted_transaction_is_sent_again() -> None:
    with pytest.raises(DatabaseError), transaction.atomic():
        with pytest.raises(DatabaseError), connection.cursor() as cursor:
            cursor.execute("SELECT 1 / 0")
        with connection.cursor() as cursor:
            prepared.execute(cursor, [(DIVIDE, [4, "a"])])  # refused, not prepared
    assert not any(name.startswith("alliance_p") for name in _session_statements())
    rows, sql = _run((DIVIDE, [4, "a"]))
    assert sql.startswith("PREPARE ")
    assert rows == [(25, "a")]


@pytest.mark.django_db(transaction=True)
def test_a_statement_whose_first_execution_fails_after_its_prepare_still_runs_later() -> None:
    """PREPARE stays when the EXECUTE after it in its round trip fails (here a division by zero;
    on the index's path, a unique violation a parallel store caused): preparing the same name
    again would fail on this session for good, so the session prepares afresh under new names."""
    with pytest.raises(DatabaseError), connection.cursor() as cursor:
        prepared.execute(cursor, [(DIVIDE, [0, "a"])])
    left = {name for name in _session_statements() if name.startswith("alliance_p")}
    assert len(left) == 1, "the PREPARE ran"
    rows, sql = _run((DIVIDE, [4, "a"]))
    assert rows == [(25, "a")]
    assert sql.startswith("PREPARE ") and sql.split()[1] not in left
    assert _run((DIVIDE, [5, "a"]))[1].startswith("EXECUTE ")


@pytest.mark.django_db(transaction=True)
def test_a_statement_deallocated_behind_the_session_s_back_fails_once_then_is_prepared_again() -> None:
    """The session's record says prepared, PostgreSQL says no such statement (a pooler in
    transaction mode would do this): that request fails, the next ones do not."""
    rows, first = _run((DIVIDE, [4, "a"]))
    name = first.split()[1]
    with connection.cursor() as cursor:
        cursor.execute(f"DEALLOCATE {name}")
    with pytest.raises(DatabaseError), connection.cursor() as cursor:
        prepared.execute(cursor, [(DIVIDE, [4, "a"])])
    rows, sql = _run((DIVIDE, [4, "a"]))
    assert rows == [(25, "a")]
    assert sql.startswith("PREPARE ") and sql.split()[1] != name


@pytest.mark.django_db(transaction=True)
def test_a_prepared_statement_failing_on_its_values_keeps_the_session_s_statements() -> None:
    """A failure of the values (here a division by zero; a resent instance's unique violation on
    the index's path) says nothing about the statements: they are executed again, not prepared."""
    _run((DIVIDE, [4, "a"]))
    with pytest.raises(DatabaseError), connection.cursor() as cursor:
        prepared.execute(cursor, [(DIVIDE, [0, "a"])])
    rows, sql = _run((DIVIDE, [5, "a"]))
    assert rows == [(20, "a")]
    assert sql.startswith("EXECUTE ")


@pytest.mark.django_db
def test_past_the_limit_a_new_text_is_only_executed(monkeypatch: pytest.MonkeyPatch) -> None:
    _run((DIVIDE, [4, "a"]))  # named before the limit
    monkeypatch.setattr(prepared, "MAX_TEXTS", len(prepared._names))
    rows, sql = _run((f"{COUNT} /* past the limit */", [["x"]]))
    assert rows == [(1,)]
    assert sql == "SELECT count(*) FROM unnest(ARRAY['x']::text[]) /* past the limit */"
    assert _run((DIVIDE, [4, "a"]))[1].startswith("EXECUTE ")


def test_placeholders_are_numbered_and_a_stray_percent_is_refused() -> None:
    assert (
        prepared.numbered("SELECT 1 FROM t WHERE a = %s AND b = %s LIMIT 1")
        == "SELECT 1 FROM t WHERE a = $1 AND b = $2 LIMIT 1"
    )
    with pytest.raises(ValueError, match="placeholder"):
        prepared.numbered("SELECT 1 FROM t WHERE a LIKE 'x%' AND b = %s")


@pytest.mark.django_db
def test_within_preparing_the_orm_s_queries_are_prepared_and_outside_they_are_not() -> None:
    from django.contrib.auth.models import Group

    Group.objects.create(name="青山")
    lookup = Group.objects.filter(name="青山").values_list("name", flat=True)
    with CaptureQueriesContext(connection) as captured:
        with prepared.preparing():
            assert list(lookup) == ["青山"]
            assert list(Group.objects.filter(name="城区").values_list("name", flat=True)) == []
            percent = Group.objects.extra(where=["name NOT LIKE '%%城'"]).filter(name="青山")  # noqa: S610
            assert list(percent.values_list("name", flat=True)) == ["青山"]
        assert list(lookup.all()) == ["青山"]
    first, again, percent, outside = (q["sql"] for q in captured.captured_queries)
    name = first.split()[1]
    assert first.startswith(f"PREPARE {name} AS SELECT ") and "= $1" in first and f"; EXECUTE {name}(" in first
    assert again.startswith(f"EXECUTE {name}(")
    assert percent.startswith("SELECT "), "a text with a % of its own is sent as it is"
    assert outside.startswith("SELECT ")


@pytest.mark.django_db
def test_a_first_statement_goes_as_text_ahead_of_the_prepared_ones() -> None:
    first = "SET LOCAL synchronous_commit TO OFF"
    with CaptureQueriesContext(connection) as captured, transaction.atomic(), connection.cursor() as cursor:
        prepared.execute(cursor, [(f"{DIVIDE} /* first */", [4, "a"])], first=first)
        assert cursor.fetchall() == [(25, "a")]
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone() == ("off",)
    [sent] = [q["sql"] for q in captured.captured_queries if "PREPARE" in q["sql"]]
    assert sent.startswith(f"{first}; PREPARE ")
