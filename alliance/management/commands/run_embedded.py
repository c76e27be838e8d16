"""Start everything of the embedded mode side by side: web app, DICOM server, Celery worker + beat.

`make run` calls this after migrate and seed_demo. Each part is a child process; when one
stops, the others are stopped too and the command exits with its code, so a broken
part is never silently missing. Ctrl-C stops all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from alliance.env import env_int, env_str
from alliance.models import Institution


class Command(BaseCommand):
    help = "Run the web app, the DICOM server and a Celery worker (with beat) together."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--no-dicom", action="store_true", help="do not start the DICOM server")
        parser.add_argument("--no-worker", action="store_true", help="do not start the Celery worker")

    def handle(self, *args: Any, **options: Any) -> None:
        host = env_str("WEB_HOST", "127.0.0.1")
        port = env_int("WEB_PORT", 8000, minimum=1, maximum=65535)
        bin_dir = Path(sys.executable).parent
        parts = {"web": self._web_command(bin_dir, host, port)}
        if not options["no_dicom"]:
            parts["dicom"] = [sys.executable, "manage.py", "dicom_server"]
        if not options["no_worker"]:
            parts["worker"] = self._worker_command(bin_dir)
        # Each part leads its own process group, so stopping it also stops its pool and beat children.
        children = {name: subprocess.Popen(cmd, start_new_session=True) for name, cmd in parts.items()}  # noqa: S603
        self._announce(host, port, dicom=not options["no_dicom"])
        self._supervise(children)

    def _web_command(self, bin_dir: Path, host: str, port: int) -> list[str]:
        gunicorn = bin_dir / "gunicorn"
        if not gunicorn.exists():
            raise CommandError("gunicorn is not installed in this environment (make install)")
        workers = str(env_int("WEB_WORKERS", 2, minimum=1, maximum=64))
        return [
            str(gunicorn),
            "alliance.wsgi",
            "-b",
            f"{host}:{port}",
            "-w",
            workers,
            "--threads",
            "4",
            "--timeout",
            "300",
            "--access-logfile",
            "-",
        ]

    def _worker_command(self, bin_dir: Path) -> list[str]:
        for folder in ("celery-queue", "celery-processed"):
            (settings.DATA_DIR / folder).mkdir(parents=True, exist_ok=True)
        return [
            str(bin_dir / "celery"),
            "-A",
            "alliance",
            "worker",
            "-B",
            "--loglevel",
            "INFO",
            "--concurrency",
            "2",
            "--schedule",
            str(settings.DATA_DIR / "celerybeat-schedule"),
        ]

    def _announce(self, host: str, port: int, *, dicom: bool) -> None:
        out = self.stdout
        out.write(self.style.SUCCESS(f"\nWeb app:      http://{host}:{port}/  (sign in with a demo login above)"))
        out.write(f"REST API:     http://{host}:{port}/api/v1/   docs: http://{host}:{port}/api/docs/")
        out.write(f"DICOMweb:     http://{host}:{port}/dicomweb/")
        if dicom:
            out.write(f"DICOM server: {settings.DICOM_HOST}:{settings.DICOM_PORT}, called AE titles:")
            for inst in Institution.objects.filter(active=True).order_by("name"):
                devices = ", ".join(d.ae_title for d in inst.devices.filter(active=True)) or "-"
                out.write(f"  {inst.ae_title:<16} {inst.name}   (registered devices: {devices})")
        out.write(f"Data folder:  {settings.DATA_DIR}\nPress Ctrl-C to stop.\n")

    def _supervise(self, children: dict[str, subprocess.Popen[bytes]]) -> None:
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        failed = ""
        while not stopping and not failed:
            for name, child in children.items():
                if child.poll() is not None:
                    failed = f"{name} exited with code {child.returncode}"
            time.sleep(0.5)
        for child in children.values():
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(child.pid, signal.SIGKILL)  # stragglers of the group
            except ProcessLookupError:
                pass
        if failed:
            raise CommandError(f"stopped everything because {failed}")
