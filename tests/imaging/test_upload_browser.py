"""The upload page in a real browser: the script uploads picked files in batches and shows
one result row per file. Debian's Chromium, driven by Playwright."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse
from playwright.sync_api import sync_playwright

from imaging.models import Instance
from tests.imaging.dicomgen import make_ct_series, write_series

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def upload_in_chromium(base_url: str, session: str, files: list[Path]) -> dict[str, int]:
    """Pick the files on the upload page and wait for the script to finish.

    No ORM call may happen in here: Playwright's sync API runs an event loop in this
    thread, and Django would treat (and keep) a connection opened now as async-local.
    """
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium package is needed (.ci/install-system-packages)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context(locale="en-US")
        context.add_cookies(
            [
                {"name": "sessionid", "value": session, "url": base_url},
                {"name": "django_language", "value": "en", "url": base_url},
            ]
        )
        page = context.new_page()
        page.goto(base_url + reverse("imaging:upload"))
        page.set_input_files("#img-pick-files", [str(f) for f in files])
        page.wait_for_selector("#img-status:has-text('Done.')", timeout=60_000)
        seen = {
            "rows": page.locator("#img-results tbody tr").count(),
            "stored": page.locator("#img-results tr.img-result-stored").count(),
            "refused": page.locator("#img-results tr.img-result-refused").count(),
            "progress": page.eval_on_selector("#img-progress", "el => el.value"),
        }
        browser.close()
    return seen


def test_picked_files_upload_with_progress_and_a_row_per_file(  # type: ignore[no-untyped-def]
    alliance_world, live_server, tmp_path: Path
):
    files = write_series(make_ct_series(10, 64, 64), tmp_path / "ct")
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    client = Client()
    client.force_login(alliance_world.owner.user)
    seen = upload_in_chromium(live_server.url, client.cookies["sessionid"].value, [*files, junk])
    # 11 files go in two batches of at most 8; every file gets its row.
    assert seen == {"rows": 11, "stored": 10, "refused": 1, "progress": 100}
    assert Instance.objects.count() == 10
