"""Test data built through the same service functions the product uses.

factory_boy factories for plain rows; membership goes through alliance.services so that
groups, roles and audit events are what production would create.
"""

from __future__ import annotations

import itertools
from typing import Any

import factory

from alliance import audit, services
from alliance.models import Alliance, Doctor, Institution, Pool, Specialty

PASSWORD = "Correct-horse-42!"
_seq = itertools.count(1)
SYSTEM = audit.SYSTEM


class AllianceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Alliance
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Alliance {n}")


class SpecialtyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Specialty
        django_get_or_create = ("code",)

    code = "radiology"
    name = "Radiology"


def make_institution(
    *,
    alliance: Alliance | None = None,
    level: str = "township",
    name: str = "",
    ae_title: str = "",
    parent: Institution | None = None,
) -> Institution:
    n = next(_seq)
    return services.institution_create(
        alliance=alliance or AllianceFactory(),
        name=name or f"Institution {n}",
        level=level,
        ae_title=ae_title or f"INST{n}",
        parent=parent,
        by=SYSTEM,
    )


def make_doctor(
    *,
    institution: Institution,
    roles: list[str] | None = None,
    username: str = "",
    specialties: list[Specialty] | None = None,
    **kwargs: Any,
) -> Doctor:
    n = next(_seq)
    return services.doctor_create(
        institution=institution,
        username=username or f"doctor{n}",
        roles=roles or ["clinician"],
        password=PASSWORD,
        full_name=kwargs.pop("full_name", f"Doctor {n}"),
        specialties=specialties,
        by=SYSTEM,
        **kwargs,
    )


def make_pool(*, institution: Institution, members: list[Doctor] | None = None, name: str = "") -> Pool:
    return services.pool_create(
        institution=institution,
        specialty=SpecialtyFactory(),
        name=name or f"Pool {next(_seq)}",
        members=members or [],
        by=SYSTEM,
    )
