"""`make run` on a DATABASE_URL that cannot be reached (issue 19 item 7: setup that does not
surprise): migrate, its first step, says what is wrong and what to do, without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.db import connection

from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]


def _migrate(database_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "DATA_DIR": str(tmp_path)}
    env.pop("DATABASE_MIGRATE_URL", None)
    return subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_server_that_does_not_answer_is_named_without_a_traceback(tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()  # nothing listens there
    done = _migrate(f"postgres://postgres@127.0.0.1:{port}/alliance", tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"cannot connect to the database alliance on 127.0.0.1:{port}" in done.stderr
    assert "check that PostgreSQL is running there" in done.stderr


@pytest.mark.django_db
def test_a_database_not_created_yet_is_named_with_the_command_that_creates_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    if connection.vendor != "postgresql":
        pytest.skip("needs the PostgreSQL server the suite runs on")
    settings = connection.settings_dict
    host, port, user = settings["HOST"] or "127.0.0.1", settings["PORT"] or "5432", settings["USER"] or "postgres"
    name = f"alliance_missing_{uuid.uuid4().hex[:8]}"
    done = _migrate(f"postgres://{user}@{host}:{port}/{name}", tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f'database "{name}" does not exist' in done.stderr
    assert f"createdb -h {host} -p {port} -U {user} {name}" in done.stderr
