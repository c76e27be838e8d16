"""Issue 22 item 10: `manage.py check --deploy` is clean with the production settings:
DEBUG=0, ALLOW_DEV_SECRET_KEY=0 with a SECRET_KEY, ALLOWED_HOSTS and TLS=on (README,
"Production checklist")."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "DEBUG": "0",
    "ALLOW_DEV_SECRET_KEY": "0",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "pacs.example.org",
    "TLS": "on",
}


def check_deploy(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and manage.py
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        # As a deployment runs it: not with the async-unsafe switch pytest-playwright sets for
        # the browser tests in this process (Django's check refuses it in deployment, rightly).
        env={**{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_check_deploy_is_clean_with_the_production_settings() -> None:
    result = check_deploy(**PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_flags_a_deployment_without_tls() -> None:
    result = check_deploy(**{**PRODUCTION, "TLS": "off"})
    assert result.returncode != 0
    assert "security.W004" in result.stderr + result.stdout  # no HSTS


def test_the_smtp_server_is_set_from_the_environment() -> None:
    smtp = {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "smtp.hospital.example.cn",
        "EMAIL_PORT": "587",
        "EMAIL_USE_TLS": "1",
        "EMAIL_HOST_USER": "cloudpacs",
    }
    shown = subprocess.run(  # noqa: S603 - our own interpreter and manage.py
        [sys.executable, "manage.py", "diffsettings", "--all"],
        cwd=ROOT,
        env={**os.environ, **PRODUCTION, **smtp},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "EMAIL_HOST = 'smtp.hospital.example.cn'" in shown
    assert "EMAIL_PORT = 587" in shown
    assert "EMAIL_USE_TLS = True" in shown
    assert "EMAIL_HOST_USER = 'cloudpacs'" in shown


def test_starttls_and_implicit_tls_together_are_refused() -> None:
    result = check_deploy(**PRODUCTION, EMAIL_USE_TLS="1", EMAIL_USE_SSL="1")
    assert result.returncode != 0
    assert "EMAIL_USE_TLS and EMAIL_USE_SSL exclude each other" in result.stderr
