"""What a web process does once at start (alliance/wsgi.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_web_process_loads_its_url_patterns_and_freezes_them_out_of_the_collector() -> None:
    code = (
        "import gc\n"
        "before = gc.get_freeze_count()\n"
        "import alliance.wsgi\n"
        "from django.urls import get_resolver\n"
        "print(before, gc.get_freeze_count(), 'url_patterns' in get_resolver().__dict__)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "alliance.settings"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before, frozen, loaded = done.stdout.split()
    assert int(before) == 0
    # Django and the apps: hundreds of thousands of objects, none of them walked by a full collection
    assert int(frozen) > 100_000
    assert loaded == "True"  # the URL patterns were built before the freeze, not at the first request
