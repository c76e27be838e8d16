"""alliance.joined on PostgreSQL: the join is loaded into its objects, prepared once per database
session (alliance.prepared has the session's rules)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from alliance.joined import Joined, Part
from alliance.models import Alliance, Institution
from tests import factories
from tests.alliance.test_prepared import _session_statements

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


@pytest.mark.django_db
def test_the_first_use_on_a_session_prepares_the_later_ones_only_execute() -> None:
    made = factories.make_institution(name="青山镇卫生院")
    joined = _by_name()
    (first, sql_first), (second, sql_second) = _loaded(joined, made.name), _loaded(joined, made.name)
    name = sql_first.split()[1]
    assert sql_first.startswith(f"PREPARE {name} AS SELECT ")
    assert f"; EXECUTE {name}(" in sql_first
    assert sql_second.startswith(f"EXECUTE {name}(")
    assert name in _session_statements()
    for loaded in (first, second):
        assert loaded is not None
        institution, alliance = loaded
        assert (institution.pk, institution.name, alliance.pk) == (made.pk, made.name, made.alliance_id)
    assert joined.first(["no such institution"]) is None
