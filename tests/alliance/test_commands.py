"""The provisioning commands: a stable interface that scripts and the README use."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from alliance import accounts
from alliance.models import Alliance, ApiToken, AuditEvent, Device, Doctor, Institution, Pool, Role, Specialty
from tests import factories

pytestmark = pytest.mark.django_db
User = get_user_model()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    """Argon2 costs seconds per persona on a busy CI machine; hashing strength is not tested here."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def run(*args: str, stdin: str | None = None) -> str:
    out = io.StringIO()
    extra = {"stdin": io.StringIO(stdin)} if stdin is not None else {}
    call_command(*args, stdout=out, stderr=io.StringIO(), **extra)
    return out.getvalue()


def refused(*args: str, stdin: str | None = None) -> str:
    with pytest.raises(CommandError) as caught:
        run(*args, stdin=stdin)
    return str(caught.value)


def counts() -> tuple[int, ...]:
    models = (Alliance, Institution, Device, Doctor, User, Pool, Specialty, ApiToken, AuditEvent)
    return tuple(model.objects.count() for model in models)


@pytest.fixture
def clinic() -> Institution:
    return factories.make_institution(alliance=factories.AllianceFactory(name="A"), ae_title="CLINIC")


# --- institution_add ------------------------------------------------------------------


def test_institution_add_creates_default_alliance_when_none_and_audits_as_the_command() -> None:
    out = run("institution_add", "--name", "青山镇卫生院", "--level", "township", "--ae-title", "qingshan")
    institution = Institution.objects.get(ae_title="QINGSHAN")
    assert institution.alliance.name == "Default Alliance"
    assert "QINGSHAN" in out
    event = AuditEvent.objects.get(action="institution.create")
    assert (event.actor_type, event.actor_name) == ("system", "manage.py institution_add")


def test_institution_add_joins_the_only_alliance_under_its_parent(clinic: Institution) -> None:
    run(
        "institution_add", "--name", "Village post", "--level", "community", "--ae-title", "VPOST", "--parent", "clinic"
    )
    post = Institution.objects.get(ae_title="VPOST")
    assert (post.alliance, post.parent) == (clinic.alliance, clinic)


def test_institution_add_needs_alliance_named_when_there_are_several(clinic: Institution) -> None:
    factories.AllianceFactory(name="B")
    before = counts()
    assert "--alliance" in refused("institution_add", "--name", "X", "--level", "township", "--ae-title", "X1")
    run("institution_add", "--name", "X", "--level", "township", "--ae-title", "X1", "--alliance", "B")
    assert Institution.objects.get(ae_title="X1").alliance.name == "B"
    assert counts() != before


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--name", "Dup", "--level", "township", "--ae-title", "CLINIC"], "--ae-title"),
        (["--name", "Dup", "--level", "township", "--ae-title", "clinic"], "--ae-title"),
        (["--name", "Bad", "--level", "galaxy", "--ae-title", "BAD"], "--level"),
        (["--name", "Bad", "--level", "township", "--ae-title", "BAD", "--parent", "NOPE"], "--parent"),
        (["--name", "Bad", "--level", "township", "--ae-title", "BAD AE"], "--ae-title"),
        (["--name", "Institution 1", "--level", "township", "--ae-title", "BAD"], "--name"),
    ],
)
def test_institution_add_refuses_bad_input_naming_the_option_and_saves_nothing(
    clinic: Institution, args: list[str], named: str
) -> None:
    clinic.name = "Institution 1"
    clinic.save()
    before = counts()
    assert refused("institution_add", *args).startswith(named)
    assert counts() == before


def test_institution_add_refuses_parent_from_another_alliance_without_creating_the_alliance(
    clinic: Institution,
) -> None:
    before = counts()
    message = refused(
        "institution_add", "--name", "X", "--level", "township", "--ae-title", "X1", "--alliance", "Other", "--parent",
        "CLINIC",
    )  # fmt: skip
    assert message == "--parent: The parent institution belongs to another alliance."
    assert counts() == before
    assert not Alliance.objects.filter(name="Other").exists()


# --- device_add -----------------------------------------------------------------------


def test_device_add_registers_a_device_of_the_institution(clinic: Institution) -> None:
    out = run(
        "device_add", "--institution", "CLINIC", "--ae-title", "CLINIC_CT", "--host", "127.0.0.1", "--port", "11190",
        "--description", "CT",
    )  # fmt: skip
    device = Device.objects.get(ae_title="CLINIC_CT")
    assert (device.institution, device.host, device.port, device.description) == (clinic, "127.0.0.1", 11190, "CT")
    assert "CLINIC_CT 127.0.0.1:11190" in out
    assert AuditEvent.objects.get(action="device.create").actor_name == "manage.py device_add"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--institution", "NOPE", "--ae-title", "CT1", "--port", "104"], "--institution"),
        (["--institution", "CLINIC", "--ae-title", "CLINIC", "--port", "104"], "--ae-title"),
        (["--institution", "CLINIC", "--ae-title", "CT1", "--port", "70000"], "--port"),
        (["--institution", "CLINIC", "--ae-title", "THIS_IS_TOO_LONG_AE", "--port", "104"], "--ae-title"),
    ],
)
def test_device_add_refuses_bad_input_and_saves_nothing(clinic: Institution, args: list[str], named: str) -> None:
    before = counts()
    assert refused("device_add", "--host", "127.0.0.1", *args).startswith(named)
    assert counts() == before


def test_device_add_refuses_an_ae_title_another_device_has(clinic: Institution) -> None:
    run("device_add", "--institution", "CLINIC", "--ae-title", "CT1", "--host", "h", "--port", "104")
    before = counts()
    assert refused("device_add", "--institution", "CLINIC", "--ae-title", "ct1", "--host", "h", "--port", "105") == (
        "--ae-title: The AE title CT1 is already in use."
    )
    assert counts() == before


# --- doctor_add -----------------------------------------------------------------------


def test_doctor_add_with_password_on_stdin_can_sign_in(clinic: Institution) -> None:
    out = run(
        "doctor_add", "--institution", "CLINIC", "--username", "zhou", "--role", "clinician", "--role", "specialist",
        "--specialty", "radiology", "--full-name", "周 芳", "--password-stdin",
        stdin="Acc-pass-12345!\n",
    )  # fmt: skip
    doctor = Doctor.objects.get(user__username="zhou")
    assert doctor.institution == clinic
    assert doctor.roles == [Role.CLINICIAN, Role.SPECIALIST]
    assert [s.code for s in doctor.specialties.all()] == ["radiology"]
    assert doctor.user.check_password("Acc-pass-12345!")
    assert doctor.user.groups.filter(pk=clinic.group_id).exists()
    assert "zhou" in out
    assert AuditEvent.objects.get(action="doctor.create").actor_name == "manage.py doctor_add"


def test_doctor_add_without_password_leaves_only_token_sign_in(clinic: Institution) -> None:
    run("doctor_add", "--institution", "CLINIC", "--username", "robot", "--role", "clinician")
    assert not User.objects.get(username="robot").has_usable_password()


@pytest.mark.parametrize(
    ("args", "stdin", "named"),
    [
        (["--institution", "NOPE", "--username", "u1", "--role", "clinician"], None, "--institution"),
        (["--institution", "CLINIC", "--username", "u1", "--role", "boss"], None, "--role"),
        (["--institution", "CLINIC", "--username", "u1", "--role", "clinician", "--password-stdin"], "password\n",
         "--password-stdin"),
        (["--institution", "CLINIC", "--username", "u1", "--role", "clinician", "--password-stdin"], "\n",
         "--password-stdin"),
        (["--institution", "CLINIC", "--username", "u1", "--role", "clinician", "--specialty", "Not a slug"], None,
         "--specialty"),
        (["--institution", "CLINIC", "--username", "u1", "--role", "clinician", "--department", "Nowhere"], None,
         "--department"),
        (["--institution", "CLINIC", "--username", "taken", "--role", "clinician"], None, "--username"),
    ],
)  # fmt: skip
def test_doctor_add_refuses_bad_input_and_saves_nothing(
    clinic: Institution, args: list[str], stdin: str | None, named: str
) -> None:
    factories.make_doctor(institution=clinic, username="taken")
    before = counts()
    assert refused("doctor_add", *args, stdin=stdin).startswith(named)
    assert counts() == before


# --- token_create ---------------------------------------------------------------------


def test_token_create_prints_the_token_as_last_word_and_replaces_the_old_one(clinic: Institution) -> None:
    doctor = factories.make_doctor(institution=clinic, username="zhou")
    first = run("token_create", "zhou").strip().splitlines()[-1].split()[-1]
    second = run("token_create", "zhou").strip().splitlines()[-1].split()[-1]
    assert first != second
    working = accounts.tokens_of(doctor.user).values_list("digest", flat=True)
    assert list(working) == [accounts.token_digest(second)]
    assert AuditEvent.objects.filter(action="token.create", actor_name="manage.py token_create").count() == 2


def test_token_create_refuses_unknown_and_deactivated_doctors(clinic: Institution) -> None:
    from alliance import audit, services

    doctor = factories.make_doctor(institution=clinic, username="gone")
    services.doctor_set_active(doctor=doctor, active=False, by=audit.SYSTEM)
    assert "nobody" in refused("token_create", "nobody")
    assert "deactivated" in refused("token_create", "gone")
    assert not ApiToken.objects.exists()
