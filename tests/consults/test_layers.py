"""The consults' modules use one another's public names only: a private helper of services
that another module needs is made public there (consults.critical locks, names the acting
doctor and notifies through services.locked, acting_doctor and notify)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _private_reaches(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.value.id}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in {"services", "selectors", "access"}
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    ]


def test_no_app_module_reaches_into_a_private_helper_of_services_selectors_or_access() -> None:
    modules = [p for app in ("alliance", "imaging", "consults", "referrals") for p in (ROOT / app).rglob("*.py")]
    assert [hit for path in modules for hit in _private_reaches(path)] == []
