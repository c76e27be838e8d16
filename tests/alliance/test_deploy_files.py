"""The systemd files in deploy/: the owner role's credentials (DATABASE_MIGRATE_URL) reach the
migrate step only, never the environment every long-running service reads."""

from __future__ import annotations

import re
from pathlib import Path

SYSTEMD = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
MIGRATE_ENV = "/etc/alliance/migrate.env"


def _settings(path: Path) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^([A-Z_][A-Z0-9_]*)=", path.read_text(), re.MULTILINE)}


def _environment_files(unit: Path) -> list[str]:
    return re.findall(r"^EnvironmentFile=-?(\S+)$", unit.read_text(), re.MULTILINE)


def test_the_shared_environment_holds_no_owner_credentials() -> None:
    assert "DATABASE_URL" in _settings(SYSTEMD / "alliance.env.example")
    assert "DATABASE_MIGRATE_URL" not in _settings(SYSTEMD / "alliance.env.example")
    assert _settings(SYSTEMD / "migrate.env.example") == {"DATABASE_MIGRATE_URL"}


def test_only_the_migrate_step_reads_the_owner_credentials() -> None:
    readers = {unit.name for unit in SYSTEMD.glob("*.service") if MIGRATE_ENV in _environment_files(unit)}
    assert readers == {"alliance-migrate.service"}
    migrate = (SYSTEMD / "alliance-migrate.service").read_text()
    assert "Type=oneshot" in migrate and "manage.py migrate" in migrate
    assert "User=alliance" in migrate, "systemd reads the root-only file; the step itself runs unprivileged"
