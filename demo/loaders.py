"""Which demo content each app gets, and in what order `seed_demo` loads it.

A loader is `load(*, stdout, actor)`: it creates what is missing, prints what it did and
leaves what is there. Loaders are named by dotted path and imported only when seed_demo
runs, so no product process (web, DICOM server, worker) loads the demo's generators.
"""

from __future__ import annotations

from typing import Any, Protocol

from django.apps import apps
from django.utils.module_loading import import_string

from alliance import audit


class Writer(Protocol):
    def write(self, msg: str) -> Any: ...


class Loader(Protocol):
    def __call__(self, *, stdout: Writer, actor: audit.Actor) -> object: ...


# The app label whose objects the loader creates -> the loader.
BY_APP_LABEL = {
    "alliance": "demo.alliance.load",
    "imaging": "demo.imaging.load",
    "consults": "demo.consults.load",
    "teaching": "demo.teaching.load",
    "referrals": "demo.referrals.load",
    "screening": "demo.screening.load",
}


def in_app_order() -> list[Loader]:
    """The installed apps' loaders in INSTALLED_APPS order, which lists an app after the apps
    it builds on (alliance, imaging, consults, teaching, referrals, screening): studies need their
    clinics, consults and referrals their studies, the teaching case its signed consult."""
    return [
        import_string(BY_APP_LABEL[config.label]) for config in apps.get_app_configs() if config.label in BY_APP_LABEL
    ]
