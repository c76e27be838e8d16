"""Start everything of the embedded mode side by side: web app, DICOM server, Celery worker, beat.

`make run` calls this after migrate and seed_demo. Each part is a child process (beat its
own, so that the deadline checks do not die with the worker's pool). A part that stops is
started again, at once if it had run a while, else after a growing delay; one that keeps
stopping quickly stops everything, and the command exits non-zero naming it, so a broken
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
from alliance.supervise import Restarts

RENDER_NICENESS = 10
_QUIET = ("--loglevel", "INFO", "--concurrency", "1", "--without-gossip", "--without-mingle")


class Command(BaseCommand):
    help = "Run the web app, the DICOM server, a Celery worker and Celery beat together."

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
            parts["render"] = self._render_worker_command(bin_dir)
            parts["beat"] = self._beat_command(bin_dir)
        children = {name: _Part(name, cmd) for name, cmd in parts.items()}
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
            "--logger-class",
            "alliance.access_log.ScrubbingLogger",  # no patient data from query strings in the log
        ]

    def _worker_command(self, bin_dir: Path) -> list[str]:
        for folder in ("celery-queue", "celery-processed"):
            (settings.DATA_DIR / folder).mkdir(parents=True, exist_ok=True)
        render = settings.CELERY_QUEUE_PREFIX + "render"
        queues = ",".join(q for q in settings.CELERY_QUEUE_NAMES if q != render)
        return [str(bin_dir / "celery"), "-A", "alliance", "worker", "-Q", queues, "-n", "worker@%h", *_QUIET]

    def _render_worker_command(self, bin_dir: Path) -> list[str]:
        """Thumbnails and previews in a worker of their own at a lower CPU priority: on a
        machine that also runs the DICOM server, a burst of rendering yields to ingest, and
        never holds up a deadline check or a critical result's escalation."""
        celery = [
            str(bin_dir / "celery"),
            "-A",
            "alliance",
            "worker",
            "-Q",
            settings.CELERY_QUEUE_PREFIX + "render",
            "-n",
            "render@%h",
            *_QUIET,
        ]
        return ["nice", "-n", str(RENDER_NICENESS), *celery]

    def _beat_command(self, bin_dir: Path) -> list[str]:
        schedule = str(settings.DATA_DIR / "celerybeat-schedule")
        return [str(bin_dir / "celery"), "-A", "alliance", "beat", "--loglevel", "INFO", "--schedule", schedule]

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

    def _supervise(self, children: dict[str, _Part]) -> None:
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        failed = ""
        while not stopping and not failed:
            for part in children.values():
                failed = failed or self._restart_if_ended(part)
            time.sleep(0.5)
        for part in children.values():
            part.terminate()
        deadline = time.monotonic() + 10
        for part in children.values():
            part.wait_then_kill(max(0.1, deadline - time.monotonic()))
        if failed:
            raise CommandError(f"stopped everything because {failed}")

    def _restart_if_ended(self, part: _Part) -> str:
        """Start a part that ended again when its time has come; what failed when it keeps ending."""
        if part.ended is None:
            code = part.process.poll()
            if code is None:
                return ""
            part.kill_stragglers()  # e.g. web workers of a killed master, still on the port
            delay = part.restarts.delay_after(time.monotonic() - part.started)
            if delay is None:
                return f"{part.name} keeps exiting (last code {code})"
            part.ended = (time.monotonic() + delay, code)
            self.stderr.write(f"{part.name} exited with code {code}; starting it again in {delay:.0f} s")
        if time.monotonic() >= part.ended[0]:
            part.start()
        return ""


class _Part:
    """One part of the embedded mode: its command, its process, when it may start again."""

    def __init__(self, name: str, command: list[str]) -> None:
        self.name = name
        self.command = command
        self.restarts = Restarts()
        self.ended: tuple[float, int] | None = None  # (when it may start again, its exit code)
        self.start()

    def start(self) -> None:
        # It leads its own process group, so stopping it also stops its pool's children.
        self.process = subprocess.Popen(self.command, start_new_session=True)  # noqa: S603
        self.started = time.monotonic()
        self.ended = None

    def terminate(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)

    def wait_then_kill(self, seconds: float) -> None:
        try:
            self.process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pass
        self.kill_stragglers()

    def kill_stragglers(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
