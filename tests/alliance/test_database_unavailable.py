"""The web app while the database is unavailable: 503 with Retry-After, never a 500."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import InterfaceError, OperationalError
from django.test import Client

from alliance.api.authentication import DoctorTokenAuthentication
from tests.conftest import client_for


def _unavailable(*args: Any, **kwargs: Any) -> Any:
    raise OperationalError("could not connect to server: Connection refused")


@pytest.mark.parametrize("path", ["/dicomweb/studies", "/api/v1/studies/"])
def test_the_api_and_dicomweb_answer_503_json_with_retry_after(alliance_world, monkeypatch, path: str) -> None:  # type: ignore[no-untyped-def]
    """The token is checked inside the view (DRF): DatabaseUnavailableMiddleware answers."""
    client = Client(raise_request_exception=False)
    monkeypatch.setattr(DoctorTokenAuthentication, "authenticate", _unavailable)
    response = client.get(path, HTTP_AUTHORIZATION="Token abc", HTTP_ACCEPT="application/json")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert response.json()["error"]["code"] == "database_unavailable"


def test_a_page_whose_session_cannot_be_read_answers_a_plain_translated_503(alliance_world, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The session is read by a middleware, before any view: Django's handler500 path."""
    client = client_for(alliance_world.owner)
    client.raise_request_exception = False
    monkeypatch.setattr("django.contrib.sessions.backends.db.SessionStore.load", _lost_connection)
    response = client.get("/", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert response["Content-Type"].startswith("text/html")
    assert "数据库暂时不可用" in response.content.decode()


def _lost_connection(*args: Any, **kwargs: Any) -> Any:
    raise InterfaceError("connection already closed")


def test_other_errors_stay_500(alliance_world, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    client = Client(raise_request_exception=False)
    monkeypatch.setattr("django.contrib.sessions.backends.db.SessionStore.load", _broken)
    client.cookies["sessionid"] = "x" * 32
    assert client.get("/login/").status_code == 500


def _broken(*args: Any, **kwargs: Any) -> Any:
    raise ValueError("a defect")
