"""deploy/compose.yaml held to deploy/systemd (issue 19 item 4). Docker here has neither the
compose plugin nor the images, so CI does not run the file; this test reads it instead: every
systemd unit has its service with the same command (so the same queues per worker), restart
policy and stop timeout; every app service has the settings a production region needs (the
env file's example with its placeholders is a production configuration for `manage.py check
--deploy`), DATA_DIR (the DICOM spool) and every server's data on named volumes, secrets only
in env files that are not committed; the image installs what the app needs at run time; and
the nginx configuration of the containers keeps deploy/nginx's rules."""

from __future__ import annotations

import re
import secrets
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from alliance import queues
from tests.alliance.test_check_deploy import PRODUCTION, check_deploy

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
SYSTEMD = DEPLOY / "systemd"
VENV_BIN = "/opt/alliance/.venv/bin/"
# deploy/systemd unit -> deploy/compose.yaml service
SERVICES = {
    "alliance-web.service": "web",
    "alliance-dicom.service": "dicom",
    "alliance-worker.service": "worker",
    "alliance-render.service": "render",
    "alliance-beat.service": "beat",
    "alliance-hl7.service": "hl7",
    "alliance-migrate.service": "migrate",
}
APP = sorted(SERVICES.values())
# What a region's app needs beyond alliance.env.example's settings: the bucket (README
# "Images on S3-compatible storage").
REGION = {"S3_BUCKET", "S3_ENDPOINT_URL", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())  # resolves the x-app anchor and its merge keys
    assert isinstance(loaded, dict)
    return loaded


def _unit(name: str) -> dict[str, list[str]]:
    """A unit's [Service] settings: name -> every value it is given."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in (SYSTEMD / name).read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if re.match(r"^[A-Z_][A-Z0-9_]*=", line))
    return {key: value for key, value in pairs}


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """What the service's container is given: its env files (read from their committed
    examples) and then its own `environment`."""
    env: dict[str, str] = {}
    for name in service.get("env_file", []):
        env |= _env_file(DEPLOY / f"{name}.example")
    return env | {key: str(value) for key, value in (service.get("environment") or {}).items()}


def _words(command: str) -> list[str]:
    words = shlex.split(command)
    return words[1:] if words[:1] == ["exec"] else words


def _unit_command(unit: dict[str, list[str]]) -> list[str]:
    """ExecStart as words, with the venv's path taken off the program (the image puts the venv
    first on PATH) and systemd's %% as the % the program gets."""
    (exec_start,) = unit["ExecStart"]
    words = shlex.split(exec_start.replace("%%", "%"))
    if words[:2] == ["/bin/sh", "-c"]:
        words = _words(words[2])
    program = words[0].removeprefix(VENV_BIN)
    if "Nice" in unit:
        return ["nice", "-n", unit["Nice"][0], program, *words[1:]]
    return [program, *words[1:]]


def _service_command(service: dict[str, Any]) -> list[str]:
    """The service's command as words, with compose's $$ as the $ the container gets."""
    command = service["command"]
    assert isinstance(command, list), "a command as a list: no word splitting by compose"
    for word in command:
        assert not re.search(r"(?<!\$)\$(?!\$)", word.replace("$$", "")), f"an unescaped $ in {word!r}"
    words = [word.replace("$$", "$") for word in command]
    if words[:2] == ["/bin/sh", "-c"]:
        return _words(words[2])
    return words


def _queues(words: list[str]) -> list[str]:
    return words[words.index("-Q") + 1].split(",") if "-Q" in words else []


def _seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)(s|m)?", value)
    assert match, value
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def test_every_systemd_unit_has_its_service_with_the_same_command(compose: dict[str, Any]) -> None:
    assert sorted(unit.name for unit in SYSTEMD.glob("*.service")) == sorted(SERVICES)
    for name, service_name in SERVICES.items():
        unit, service = _unit(name), compose["services"][service_name]
        assert _service_command(service) == _unit_command(unit), service_name
        restart = "no" if unit.get("Type") == ["oneshot"] else unit["Restart"][0]
        assert service["restart"] == restart, service_name
        if "TimeoutStopSec" in unit:
            assert _seconds(service["stop_grace_period"]) == int(unit["TimeoutStopSec"][0]), service_name


def test_each_worker_takes_the_queues_of_its_unit_and_every_queue_has_a_worker(compose: dict[str, Any]) -> None:
    taken: list[str] = []
    for name, service_name in SERVICES.items():
        unit_queues = _queues(_unit_command(_unit(name)))
        assert _queues(_service_command(compose["services"][service_name])) == unit_queues
        taken += unit_queues
    assert sorted(taken) == sorted(queues.KINDS)  # each queue once: rendering apart, at a lower priority
    assert _service_command(compose["services"]["render"])[:3] == ["nice", "-n", "10"]
    beats = [name for name in APP if "beat" in _service_command(compose["services"][name])]
    assert beats == ["beat"] and "replicas" not in compose["services"]["beat"].get("deploy", {})  # one per region


def test_every_app_service_has_the_settings_of_a_production_region(compose: dict[str, Any]) -> None:
    services = compose["services"]
    needed = set(_env_file(SYSTEMD / "alliance.env.example")) | REGION | set(PRODUCTION)
    for name in APP:
        env = _environment(services[name])
        assert needed <= set(env), (name, sorted(needed - set(env)))
        assert ("DATABASE_MIGRATE_URL" in env) == (name == "migrate"), name  # the owner's URL: migrate alone
        # the parts they name are services of the file
        for url in ("DATABASE_URL", "CELERY_BROKER_URL", "S3_ENDPOINT_URL"):
            assert urlsplit(env[url]).hostname in services, (name, url)
        assert env["CELERY_BROKER_URL"].startswith("amqp://")  # quorum queues (alliance/queues.py)
        assert env["DICOM_HOST"] == env["WEB_HOST"] == env["HL7_HOST"] == "0.0.0.0"  # noqa: S104 - reached from other containers
    for name, service_name in SERVICES.items():  # a unit's own Environment= lines
        env = _environment(services[service_name])
        for setting in _unit(name).get("Environment", []):
            key, value = setting.split("=", 1)
            assert env.get(key) == value, (service_name, key)
        for runtime in _unit(name).get("RuntimeDirectory", []):  # emptied at each start: a tmpfs
            assert any(t.split(":")[0] == f"/run/{runtime}" for t in services[service_name]["tmpfs"])
    dicom = _environment(services["dicom"])
    assert f"{dicom['DICOM_PORT']}:{dicom['DICOM_PORT']}" in services["dicom"]["ports"]
    assert _environment(services["nginx"]) == {} and "env_file" not in services["nginx"]
    nginx_address = services["nginx"]["networks"]["default"]["ipv4_address"]
    assert _environment(services["web"])["TRUSTED_PROXIES"] == nginx_address


def test_the_example_environment_passes_check_deploy(compose: dict[str, Any], tmp_path: Path) -> None:
    env = _environment(compose["services"]["web"])
    assert env["SECRET_KEY"] == "change-me"  # the example's placeholder, replaced here as by the deployer
    env |= {"SECRET_KEY": secrets.token_urlsafe(50), "DATA_DIR": str(tmp_path), "STATIC_ROOT": str(tmp_path / "s")}
    result = check_deploy(**env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_data_dir_and_every_server_s_data_are_on_named_volumes(compose: dict[str, Any]) -> None:
    services, volumes = compose["services"], compose["volumes"]

    def mounted(service: dict[str, Any], target: str) -> bool:
        for volume in service.get("volumes", []):
            source, path = volume.split(":")[:2]
            if path == target and source in volumes:
                return True
        return False

    for name in APP:  # the DICOM server's spool (DATA_DIR/spool), beat's schedule, partial receives
        assert mounted(services[name], _environment(services[name])["DATA_DIR"]), name
    assert mounted(services["postgres"], "/var/lib/postgresql/data")
    assert mounted(services["rabbitmq"], "/var/lib/rabbitmq")  # the quorum queues outlive the container
    assert services["rabbitmq"]["hostname"]  # the node's name, and so its data folder, stays
    assert mounted(services["s3"], services["s3"]["command"][-1])


def test_secrets_come_from_env_files_that_are_not_committed(compose: dict[str, Any]) -> None:
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "deploy/compose/*.env" in ignored
    files = {name for service in compose["services"].values() for name in service.get("env_file", [])}
    assert files == {f"compose/{n}.env" for n in ("alliance", "migrate", "postgres", "rabbitmq", "s3")}
    for name in files:
        assert (DEPLOY / f"{name}.example").is_file() and not (DEPLOY / name).exists()
    for name, service in compose["services"].items():  # nothing secret written into the file itself
        for key in service.get("environment") or {}:
            assert not re.search(r"PASS|SECRET|KEY|TOKEN", key), (name, key)


def test_the_image_has_what_the_app_needs_at_run_time() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.MULTILINE)
    script = (ROOT / ".ci" / "install-system-packages").read_text()
    listed = re.search(r"^PKGS=\(([^)]*)\)", script, re.MULTILINE)
    assert listed
    runtime = [p for p in listed.group(1).split() if p.startswith(("fonts-", "libpango"))]
    assert len(runtime) == 3
    for package in [*runtime, "fontconfig"]:  # fontconfig: fc-list finds the CJK font (alliance/pdf.py)
        assert re.search(rf"apt-get install[^\n]*\s{re.escape(package)}(\s|$)", dockerfile), package
    assert "pip install --no-cache-dir --disable-pip-version-check -r requirements.txt" in dockerfile
    assert "manage.py collectstatic --noinput" in dockerfile
    assert re.search(r"pybabel -q compile -D django", dockerfile)  # the translations, as `make messages`
    assert "STATIC_ROOT=/opt/alliance/staticfiles" in dockerfile  # in the image, not on the DATA_DIR volume
    assert re.search(r"^USER alliance$", dockerfile, re.MULTILINE)
    assert f"PATH={VENV_BIN.rstrip('/')}:$PATH" in dockerfile  # the units' programs, by name in compose


# --- nginx ----------------------------------------------------------------------------

Directive = tuple[str, ...]


def _nginx(path: Path) -> list[Directive]:
    """Every directive as (enclosing blocks..., name, arguments...), comments left out."""
    text = re.sub(r"(?m)#.*$", "", path.read_text())
    tokens = re.findall(r"'[^']*'|\"[^\"]*\"|[{};]|[^\s{};]+", text)
    found: list[Directive] = []
    context: list[str] = []
    words: list[str] = []
    for token in tokens:
        if token == "{":
            context.append(" ".join(words))
            words = []
        elif token == "}":
            context.pop()
        elif token == ";":
            found.append((*context, *words))
            words = []
        else:
            words.append(token)
    return found


def _deployment_neutral(directives: list[Directive]) -> tuple[list[Directive], list[Directive]]:
    """(the directives that must be alike, those that name this deployment's files and hosts)."""
    alike: list[Directive] = []
    own: list[Directive] = []
    for d in directives:
        if d[0].startswith("upstream") and d[1] == "server":
            own.append(d)
        elif "ssl_certificate" in d or "ssl_certificate_key" in d:
            own.append(d)
        elif "access_log" in d and d[-1] != "off":  # the file is the deployment's, the format alike
            alike.append((*d[: d.index("access_log") + 1], d[-1]))
            own.append(d)
        elif "location /static/" in d and ("alias" in d or "proxy_pass" in d):
            own.append(d)
        else:
            alike.append(d)
    return alike, own


def test_the_containers_nginx_keeps_deploy_nginx_s_rules() -> None:
    host, host_own = _deployment_neutral(_nginx(DEPLOY / "nginx" / "alliance.conf"))
    containers, containers_own = _deployment_neutral(_nginx(DEPLOY / "compose" / "nginx.conf"))
    assert containers == host
    assert ("upstream alliance_web", "server", "web:8000") in containers_own
    # the static files: the app serves them from the image (whitenoise), nginx passes them on
    assert ("server", "location /static/", "proxy_pass", "http://alliance_web") in containers_own
    assert ("server", "location /dicomweb/", "proxy_buffering", "off") in containers  # WADO-RS streamed
