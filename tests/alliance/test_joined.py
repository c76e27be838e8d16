"""alliance.joined on PostgreSQL: the join is prepared once per database session."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext

from alliance.joined import Joined, Part, _numbered
from alliance.models import Alliance, Institution
from tests import factories

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="PREPARE is PostgreSQL's")


def _institution_parts() -> list[Part]:
    return [
        Part(Institution, "i", f'FROM "{Institution._meta.db_table}" i'),
        Part(Alliance, "a", f'LEFT JOIN "{Alliance._meta.db_table}" a ON a."id" = i."alliance_id"'),
    ]


def _by_name() -> Joined:
    return Joined(_institution_parts, 'WHERE i."name" = %s AND i."active" LIMIT 1')


def _loaded(joined: Joined, name: str) -> tuple[Any, ...]:
    with CaptureQueriesContext(connection) as captured:
        loaded = joined.first([name])
    assert len(captured.captured_queries) == 1, "one round trip, prepared or not"
    sql = captured.captured_queries[0]["sql"]
    return (loaded, sql)


def _session_statements() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements")
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.django_db
def test_the_first_use_on_a_session_prepares_the_later_ones_only_execute() -> None:
    made = factories.make_institution(name="青山镇卫生院")
    joined = _by_name()
    (first, sql_first), (second, sql_second) = _loaded(joined, made.name), _loaded(joined, made.name)
    assert sql_first.startswith(f"PREPARE {joined.name} AS SELECT ")
    assert f"; EXECUTE {joined.name}(" in sql_first
    assert sql_second.startswith(f"EXECUTE {joined.name}(")
    assert joined.name in _session_statements()
    for loaded in (first, second):
        assert loaded is not None
        institution, alliance = loaded
        assert (institution.pk, institution.name, alliance.pk) == (made.pk, made.name, made.alliance_id)
    assert joined.first(["no such institution"]) is None


@pytest.mark.django_db(transaction=True)
def test_a_new_session_prepares_again() -> None:
    made = factories.make_institution(name="城区社区卫生服务中心")
    joined = _by_name()
    _loaded(joined, made.name)
    connection.close()  # Django opens a new session at the next query
    loaded, sql = _loaded(joined, made.name)
    assert sql.startswith("PREPARE ")
    assert loaded is not None and loaded[0].pk == made.pk


@pytest.mark.django_db(transaction=True)
def test_a_statement_prepared_in_a_rolled_back_transaction_is_still_there() -> None:
    made = factories.make_institution(name="县人民医院")
    joined = _by_name()
    with pytest.raises(RuntimeError), transaction.atomic():
        assert _loaded(joined, made.name)[1].startswith("PREPARE ")
        raise RuntimeError("roll back")
    loaded, sql = _loaded(joined, made.name)
    assert sql.startswith("EXECUTE ")
    assert loaded is not None and loaded[0].pk == made.pk


@pytest.mark.django_db(transaction=True)
def test_a_prepare_refused_by_an_aborted_transaction_is_sent_again() -> None:
    made = factories.make_institution(name="镇中心卫生院")
    joined = _by_name()
    with pytest.raises(DatabaseError), transaction.atomic():
        with pytest.raises(DatabaseError), connection.cursor() as cursor:
            cursor.execute("SELECT 1 / 0")
        joined.first([made.name])  # the transaction is aborted: refused, not prepared
    assert joined.name not in _session_statements()
    loaded, sql = _loaded(joined, made.name)
    assert sql.startswith("PREPARE ")
    assert loaded is not None and loaded[0].pk == made.pk


def test_placeholders_are_numbered_and_a_stray_percent_is_refused() -> None:
    assert (
        _numbered("SELECT 1 FROM t WHERE a = %s AND b = %s LIMIT 1")
        == "SELECT 1 FROM t WHERE a = $1 AND b = $2 LIMIT 1"
    )
    with pytest.raises(ValueError, match="placeholder"):
        _numbered("SELECT 1 FROM t WHERE a LIKE 'x%' AND b = %s")
