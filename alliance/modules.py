"""What switching a module off would leave behind: the open cases of higher apps.

The alliance console asks before it switches a module off for an institution that still
has open cases. Alliance may not import the apps that hold the cases (consults,
referrals), so each registers a counter here from its AppConfig.ready().
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from alliance.models import Institution


@dataclass(frozen=True)
class OpenCases:
    """How many open cases a module has at an institution, and what switching it off does to them."""

    module: str
    count: int
    consequence: str


Counter = Callable[[Institution], OpenCases | None]
_COUNTERS: dict[str, list[Counter]] = {}


def register_open_cases(module: str, counter: Counter) -> None:
    """Called once by an app's AppConfig.ready(); the counter returns None when there are none."""
    if counter not in _COUNTERS.setdefault(module, []):
        _COUNTERS[module].append(counter)


def open_cases(institution: Institution, modules: set[str]) -> list[OpenCases]:
    """The open cases that switching these modules off at the institution would leave."""
    found = (counter(institution) for module in sorted(modules) for counter in _COUNTERS.get(module, []))
    return [cases for cases in found if cases is not None and cases.count]
