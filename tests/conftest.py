"""Persona fixtures used by every permission test (ARCHITECTURE.md).

The alliance: a tertiary hospital (HOSP) with a radiology pool; clinic A (CLINA) whose
clinician owns the patient; clinic B (CLINB), unrelated. Personas:
owner (clinician at A), colleague (clinician at A), inst_admin_a (institution admin at A),
specialist (in HOSP's pool: the one who gets the case), outsider_specialist (HOSP, not in
the pool), stranger (clinician at B), alliance_admin (alliance office, no clinical role).
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from django.test import Client

from tests import celery_worker, factories
from tests.live_drain import in_flight

ROOT = Path(__file__).resolve().parent.parent
# The S3 server fixtures (s3_endpoint: one SeaweedFS for the whole session, s3, s3_gate).
pytest_plugins = ("tests.s3",)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile stale .po catalogs (as `make messages` does), so a bare pytest run speaks Chinese."""
    for po in [*ROOT.glob("*/locale/*/LC_MESSAGES/django.po"), *ROOT.glob("*/*/locale/*/LC_MESSAGES/django.po")]:
        mo = po.with_suffix(".mo")
        if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        with po.open("rb") as source:
            catalog = read_po(source)
        with mo.open("wb") as target:
            write_mo(target, catalog, use_fuzzy=True)


@pytest.fixture(autouse=True)
def _media_and_data(settings, tmp_path):  # type: ignore[no-untyped-def]
    """Every test stores files under its own temporary folder."""
    settings.DATA_DIR = tmp_path
    settings.STORAGES = {
        **settings.STORAGES,
        "dicom": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "dicom"},
        },
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "media"},
        },
        "renders": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "media"},
        },
    }
    settings.CELERY_TASK_ALWAYS_EAGER = True
    from alliance.celery import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True


@pytest.fixture(autouse=True)
def _broker_left_tidy():  # type: ignore[no-untyped-def]
    """The queues a test's real worker used are deleted from the shared broker when it ends
    (tests/celery_worker.py), so runs on one machine do not pile them up."""
    yield
    celery_worker.remove_taken_queues()


LIVE_SERVER_DRAIN_S = 60


@pytest.fixture
def transactional_db(transactional_db, request):  # type: ignore[no-untyped-def]
    """pytest-django's transactional_db; with the live server, its database is flushed only
    once the server has finished every request left behind by the test's browser
    (tests/live_drain.py)."""
    if "live_server" not in request.fixturenames:
        yield
        return
    counter = in_flight(request.getfixturevalue("live_server"))
    yield
    if not counter.wait_idle(LIVE_SERVER_DRAIN_S):
        warnings.warn(f"the live server still had {counter.count} connection(s) open before the flush", stacklevel=1)


DESKS_STAFFED_SINCE = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _desks_staffed_long_ago(monkeypatch):  # type: ignore[no-untyped-def]
    """Many tests run cases on a clock set in the past (consults.clock); a desk's members count
    as seated since long before, so that the desk-seat rule (alliance.models.PoolMembership)
    does not hide those cases. The rule's own tests ask for `desk_clock_real`."""
    from alliance import signals

    monkeypatch.setattr(signals, "_now", lambda: DESKS_STAFFED_SINCE)


@pytest.fixture
def desk_clock_real(monkeypatch):  # type: ignore[no-untyped-def]
    """Members join a desk at the real time of day (the desk-seat rule's tests)."""
    from django.utils import timezone

    from alliance import signals

    monkeypatch.setattr(signals, "_now", timezone.now)


@pytest.fixture
def unprepared(db):  # type: ignore[no-untyped-def]
    """This session's prepared statements dropped (alliance.prepared): tests share one database
    session, so a test that watches a text being prepared starts where no earlier one did."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("DEALLOCATE ALL")
        connection.alliance_prepared = None


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):  # type: ignore[no-untyped-def]
    """Argon2 is slow on purpose; tests that check the production hasher set it back."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _second_factor_policy_off(settings):  # type: ignore[no-untyped-def]
    """New alliances start without the second-factor requirement (as the demo does); the
    tests of the policy switch it on."""
    settings.OTP_REQUIRED_DEFAULT = False


@pytest.fixture
def alliance_world(db):  # type: ignore[no-untyped-def]
    alliance = factories.AllianceFactory(name="Test Alliance")
    hosp = factories.make_institution(alliance=alliance, level="tertiary", name="Lead Hospital", ae_title="HOSP")
    clin_a = factories.make_institution(
        alliance=alliance, level="township", name="Clinic A", ae_title="CLINA", parent=hosp
    )
    clin_b = factories.make_institution(
        alliance=alliance, level="township", name="Clinic B", ae_title="CLINB", parent=hosp
    )
    office = factories.make_institution(alliance=alliance, level="tertiary", name="Alliance Office", ae_title="OFFICE")
    radiology = factories.SpecialtyFactory()
    specialist = factories.make_doctor(
        institution=hosp, roles=["specialist"], username="specialist", specialties=[radiology]
    )
    outsider = factories.make_doctor(
        institution=hosp, roles=["specialist"], username="outsider_specialist", specialties=[radiology]
    )
    pool = factories.make_pool(institution=hosp, members=[specialist], name="CT reading desk")
    return SimpleNamespace(
        alliance=alliance,
        hosp=hosp,
        clin_a=clin_a,
        clin_b=clin_b,
        office=office,
        pool=pool,
        radiology=radiology,
        owner=factories.make_doctor(institution=clin_a, username="owner"),
        colleague=factories.make_doctor(institution=clin_a, username="colleague"),
        inst_admin_a=factories.make_doctor(institution=clin_a, roles=["institution_admin"], username="admin_a"),
        specialist=specialist,
        outsider_specialist=outsider,
        hosp_admin=factories.make_doctor(institution=hosp, roles=["institution_admin"], username="admin_hosp"),
        stranger=factories.make_doctor(institution=clin_b, username="stranger"),
        alliance_admin=factories.make_doctor(institution=office, roles=["alliance_admin"], username="alliance_admin"),
    )


def client_for(doctor) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(doctor.user)
    return client
