"""The site mounted under a sub-path, as a reverse proxy in front of several services would
(/pacs/ here, given to Django as SCRIPT_NAME): the viewer still loads and draws, and every
request it makes stays under the sub-path."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from django.core.wsgi import get_wsgi_application
from django.test import Client
from django.urls import reverse, set_script_prefix

from tests.viewer.test_viewer_browser import LOAD_TIMEOUT_MS, pixels

pytestmark = pytest.mark.integration
PREFIX = "/pacs"


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def mounted(app: Callable[..., Any]) -> Callable[..., Any]:
    """What the proxy does: requests under PREFIX reach the app with SCRIPT_NAME set; the rest 404."""

    def proxy(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"outside the sub-path"]
        environ["SCRIPT_NAME"] = PREFIX
        environ["PATH_INFO"] = path[len(PREFIX) :] or "/"
        return app(environ, start_response)

    return proxy


@pytest.fixture
def subpath_site(orm_beside_playwright: None, transactional_db: None, settings: Any) -> Iterator[str]:
    """The app as `SCRIPT_NAME=/pacs` in the environment makes it (FORCE_SCRIPT_NAME), behind the proxy."""
    settings.FORCE_SCRIPT_NAME = PREFIX
    settings.STATIC_URL = "static/"  # as deployed; the change also drops the cached static storage
    settings.WHITENOISE_USE_FINDERS = True  # the files as in the tree: no collectstatic in the tests
    set_script_prefix(PREFIX)  # what django.setup() does with FORCE_SCRIPT_NAME at start-up
    try:
        server = make_server("127.0.0.1", 0, mounted(get_wsgi_application()), _ThreadingServer, _Quiet)
    finally:
        set_script_prefix("/")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_viewer_under_a_sub_path_loads_draws_and_stays_under_it(
    subpath_site: str, page: Any, alliance_world: Any, ct_study: Any, requests_seen: list[str], artifacts: Any
) -> None:
    client = Client()
    client.force_login(alliance_world.owner.user)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": subpath_site}])
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)

    page.goto(subpath_site + PREFIX + reverse("viewer:study", args=[ct_study.study_uid]))
    page.wait_for_function(
        "() => Number(document.querySelector(\"[data-pane='0']\").dataset.rendered || 0) > 0", timeout=LOAD_TIMEOUT_MS
    )
    page.wait_for_timeout(800)  # the tools' chunk, the thumbnails and the prefetcher

    shot = pixels(page.locator("[data-pane='0']").screenshot(path=artifacts / "viewer-subpath.png"))
    assert shot.std() > 20, "the slice is drawn, not a blank pane"
    paths = [urlsplit(u).path for u in requests_seen if u.startswith("http")]
    assert paths and all(p.startswith(PREFIX + "/") for p in paths), [p for p in paths if not p.startswith(PREFIX)]
    assert any("/static/viewer/" in p for p in paths) and any("/dicomweb/" in p for p in paths)
    assert not failed, failed
