"""The real parts for the process and broker fault tests: a private redis-server, the DICOM
server, gunicorn, a Celery worker and beat, all on the test database and one DATA_DIR (the
test's own, which the in-process settings point at too), and dcmtk to send and retrieve."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from kombu import Connection
from pydicom import dcmread

from imaging import reconcile
from tests.processes import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def database_url() -> str:
    db = settings.DATABASES["default"]
    host, port = db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
    return f"postgres://{db.get('USER') or 'postgres'}@{host}:{port}/{db['NAME']}"


class Stack:
    """Processes started for one test, each logging to DATA_DIR/<name>.log, all stopped at the end."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "DATA_DIR": str(data_dir),
            "CELERY_TASK_ALWAYS_EAGER": "0",
            "LANGUAGE_CODE": "en",
            "EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend",
            **env,
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], **env: str) -> subprocess.Popen[bytes]:
        with (self.data_dir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                args, cwd=ROOT, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.data_dir / f"{name}.log").read_text(errors="replace")

    def dicom_server(self, port: int, processes: int = 1, name: str = "dicom") -> subprocess.Popen[bytes]:
        proc = self.start(
            name, [sys.executable, "manage.py", "dicom_server"], DICOM_PORT=str(port), DICOM_PROCESSES=str(processes)
        )
        wait_for_port(port, proc, 120)
        return proc

    def web(self) -> str:
        port = free_port()
        site = f"http://127.0.0.1:{port}"
        args = [str(BIN / "gunicorn"), "alliance.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2", "--timeout", "120"]
        proc = self.start("web", args, SITE_URL=site)
        wait_for_port(port, proc, 120)
        return site

    def worker(self, name: str = "worker", queues: tuple[str, ...] = (), **env: str) -> subprocess.Popen[bytes]:
        """A worker on `queues` (their names without CELERY_QUEUE_PREFIX), or on every queue."""
        args = [str(BIN / "celery"), "-A", "alliance", "worker", "-l", "INFO", "--concurrency", "1"]
        args += ["--without-gossip", "--without-mingle", "-n", f"{name}-{os.getpid()}@%h"]
        if queues:
            prefix = {**self.env, **env}.get("CELERY_QUEUE_PREFIX", "")
            args += ["-Q", ",".join(prefix + queue for queue in queues)]
        return self.start(name, args, **env)

    def beat(self, **env: str) -> subprocess.Popen[bytes]:
        schedule = str(self.data_dir / "celerybeat-schedule")
        return self.start("beat", [str(BIN / "celery"), "-A", "alliance", "beat", "-l", "INFO", "-s", schedule], **env)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal the part's whole process group (a worker and its pool, say)."""
        try:
            os.killpg(os.getpgid(self.procs[name].pid), sig)
        except ProcessLookupError:
            pass
        self.procs[name].wait(timeout=60)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(os.getpgid(proc.pid), signal.SIGTERM)
        for name in self.procs:
            try:
                self.procs[name].wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill(name)


class PrivateRedis:
    """A redis-server of the test's own on a free port, without persistence: stopping it
    loses what it held, as a broker crash does."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        with (self.folder / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen([*args, "--dir", str(self.folder)], stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


class PrivateRabbitMQ:
    """A RabbitMQ node of the test's own (Debian's rabbitmq-server, run as a second node beside
    any other on the machine): its own node name, AMQP and distribution ports, config, data,
    logs and Erlang cookie (HOME) under `folder`, registered with the machine's epmd. Its data
    outlives stop(): start() again brings back its durable (quorum) queues and their messages,
    as a restarted broker does. stop() ends only the node started here, by its PID."""

    SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")  # not the /usr/sbin wrapper, which su's to rabbitmq

    def __init__(self, folder: Path) -> None:
        self.folder = folder / "rabbitmq"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port, self.dist_port = free_port(), free_port()
        self.node = f"alliance-test-{os.getpid()}-{self.port}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        (self.folder / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n")
        (self.folder / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's, which names the shared node
        (self.folder / "enabled_plugins").write_text("[].\n")  # no management or Prometheus listener
        self.env = {
            **os.environ,
            "HOME": str(self.folder),  # its own .erlang.cookie
            "RABBITMQ_CONF_ENV_FILE": str(self.folder / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.folder / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.folder / "enabled_plugins"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.folder / "log"),
            "RABBITMQ_PID_FILE": str(self.folder / "node.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.folder / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [str(self.SERVER)], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for_port(self.port, self.proc, 180)

    def stop(self) -> None:
        """SIGTERM to the script started here, which stops its node cleanly and waits for it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the node and nothing else
            self.proc.wait(timeout=30)

    def messages(self, queue: str) -> int:
        """How many messages wait in `queue` (a passive declare: nothing is created)."""
        with Connection(self.url, connect_timeout=10) as conn:
            _name, count, _consumers = conn.channel().queue_declare(queue=queue, passive=True)
        return int(count)

    def log(self) -> str:
        return (self.folder / "server.log").read_text(errors="replace")


def children_of(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is `pid`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_for(check: Callable[[], Any], timeout: float = 120, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return bool(check())


def storescu(port: int, files: list[Path], log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """storescu sending `files` on one association, verbose into `log` (acknowledged())."""
    args = ["storescu", "-v", "-aet", "CT_A", "-aec", "CLINA", *extra, "127.0.0.1", str(port), *map(str, files)]
    with log.open("wb") as out:
        env = {**os.environ, "TCP_NODELAY": "1"}
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


_SENDING = re.compile(r"Sending file: (\S+)")


def acknowledged(log: Path) -> list[Path]:
    """The files storescu was answered Success for (its -v log: each "Sending file" line is
    followed by its "Received Store Response")."""
    done, current = [], None
    for line in log.read_text(errors="replace").splitlines():
        sending = _SENDING.search(line)
        if sending:
            current = Path(sending.group(1))
        elif "Received Store Response (Success)" in line and current is not None:
            done.append(current)
            current = None
    return done


def body_sha256(path: Path) -> tuple[str, str]:
    """(SOP Instance UID, sha256 of the data set after the file meta): what travels on the wire."""
    ds = dcmread(path, stop_before_pixels=True)
    with path.open("rb") as f:
        f.seek(132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength))
        return str(ds.SOPInstanceUID), hashlib.sha256(f.read()).hexdigest()


def retrieved_with_getscu(port: int, study_uid: str, folder: Path) -> dict[str, str]:
    """The study as C-GET returns it: SOP Instance UID to the sha256 of its data set."""
    folder.mkdir(parents=True, exist_ok=True)
    args = ["getscu", "-aet", "CT_A", "-aec", "CLINA", "-S", "-od", str(folder)]
    args += ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", "127.0.0.1", str(port)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(body_sha256(p) for p in folder.iterdir() if p.is_file())


def storage_check() -> tuple[int, str, list[str]]:
    """dicom_storage_check on the test's DATA_DIR and store (the settings the parts share):
    its exit status and report, and the stored files no row points at, however young (the
    command leaves those younger than a minute to an ingest that may still be running)."""
    out = StringIO()
    try:
        call_command("dicom_storage_check", stdout=out)
        status = 0
    except SystemExit as exc:
        status = int(exc.code or 0)
    return status, out.getvalue(), list(reconcile.orphan_keys(older_than=timedelta(0)))
