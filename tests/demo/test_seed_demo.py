"""seed_demo: the demo alliance, its sign-ins, and each app's demo loaded in order."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.authtoken.models import Token

import demo.imaging
from alliance.models import Alliance, AuditEvent, Device, Doctor, Institution, Pool, Role, Specialty
from demo import alliance as demo_alliance
from tests import factories

pytestmark = pytest.mark.django_db
User = get_user_model()


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def refused(*args: str) -> str:
    with pytest.raises(CommandError) as caught:
        run(*args)
    return str(caught.value)


def counts() -> tuple[int, ...]:
    models = (Alliance, Institution, Device, Doctor, User, Pool, Specialty, Token, AuditEvent)
    return tuple(model.objects.count() for model in models)


@pytest.fixture
def clinic() -> Institution:
    return factories.make_institution(alliance=factories.AllianceFactory(name="A"), ae_title="CLINIC")


@pytest.fixture(autouse=True)
def demo_studies(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """seed_demo's hand-over to the demo studies, recorded instead of ingesting hundreds of
    images (tests/demo/test_imaging.py covers the images)."""
    calls: list[object] = []
    monkeypatch.setattr(demo.imaging, "load", lambda *, stdout, actor: calls.append(stdout))
    return calls


def test_seed_demo_builds_an_alliance_with_every_level_role_a_pool_and_devices() -> None:
    out = run("seed_demo")
    alliance = Alliance.objects.get(name=demo_alliance.ALLIANCE)
    institutions = alliance.institutions.all()
    assert sorted(i.level for i in institutions) == sorted(
        ["tertiary", "secondary", "township", "township", "community"]
    )
    assert all(i.departments.exists() and i.devices.exists() for i in institutions)
    roles = {role for doctor in Doctor.objects.filter(institution__alliance=alliance) for role in doctor.roles}
    assert roles == set(Role.values)
    pool = Pool.objects.get(institution__level="tertiary", specialty__code="radiology")
    assert pool.members.count() == 2
    radiologist = Doctor.objects.get(user__username="radiologist")
    assert radiologist.user.check_password(demo_alliance.DEMO_PASSWORD)
    assert radiologist.user.groups.filter(pk=pool.group_id).exists()
    for person in demo_alliance.PEOPLE:
        assert person.username in out
    assert demo_alliance.DEMO_PASSWORD in out
    assert "CITYHOSP_CT" in out and "127.0.0.1:11201" in out


def test_seed_demo_names_the_address_the_web_app_will_listen_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_PORT", "8766")
    assert "Sign in at http://127.0.0.1:8766/ " in run("seed_demo")


def test_seed_demo_twice_changes_nothing() -> None:
    run("seed_demo")
    before = counts()
    out = run("seed_demo")
    assert counts() == before
    assert "alliance_admin" in out


def test_seed_demo_refuses_when_a_demo_ae_title_belongs_to_another_alliance(clinic: Institution) -> None:
    factories.make_institution(alliance=clinic.alliance, ae_title="DONGHU")
    before = counts()
    assert "DONGHU" in refused("seed_demo")
    assert counts() == before


def test_seed_demo_hands_over_to_the_imaging_demo_after_membership(demo_studies: list[object]) -> None:
    run("seed_demo")
    assert len(demo_studies) == 1


def test_seed_demo_loads_each_apps_demo_in_the_order_the_apps_build_on_each_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded: list[tuple[str, str]] = []

    def recorder(label: str) -> Any:
        return lambda *, stdout, actor: loaded.append((label, actor.name))

    for label in ("alliance", "imaging", "consults", "teaching"):
        monkeypatch.setattr(f"demo.{label}.load", recorder(label))
    run("seed_demo")
    assert loaded == [
        ("alliance", "manage.py seed_demo"),
        ("imaging", "manage.py seed_demo"),
        ("consults", "manage.py seed_demo"),
        ("teaching", "manage.py seed_demo"),
    ]
