"""A private PostgreSQL cluster for fault tests: started, restarted and stopped by the test.

The shared server of the machine is never touched. initdb refuses to run as root, so the
cluster's programs run as the user postgres (runuser) in a folder of its own under /tmp.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

from tests.processes import free_port

BIN = Path("/usr/lib/postgresql/15/bin")
DATABASE = "alliance"


def available() -> str:
    """Why a private cluster cannot be started here, or "" when it can."""
    if not (BIN / "initdb").exists():
        return f"PostgreSQL 15 is not installed in {BIN}"
    if shutil.which("runuser") is None or os.geteuid() != 0:
        return "the test runs PostgreSQL as the user postgres, which needs root and runuser"
    return ""


class PgCluster:
    """initdb into a temporary folder, pg_ctl start on a free loopback port, one database."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="pgfault-"))
        shutil.chown(self.base, "postgres", "postgres")
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {done.returncode}: {done.stdout}{done.stderr}")
        return done

    def start(self) -> None:
        self._run(str(BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        with (self.data / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.base}'\n")
            conf.write("fsync = off\nmax_connections = 60\n")  # fsync: the kernel survives a server restart
        self.pg_ctl("start")
        self._run(str(BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), DATABASE)

    def pg_ctl(self, action: str, *, mode: str = "") -> None:
        shutdown = ["-m", mode] if mode else []
        self._run(str(BIN / "pg_ctl"), action, "-D", str(self.data), "-l", str(self.log), *shutdown, "-w", "-t", "60")

    def restart(self, mode: str) -> None:
        """pg_ctl restart -m fast (sessions terminated, a checkpoint) or immediate (no
        checkpoint: crash recovery at the start)."""
        self.pg_ctl("restart", mode=mode)

    def stop(self) -> None:
        self.pg_ctl("stop", mode="immediate")

    def remove(self) -> None:
        try:
            self.stop()
        except RuntimeError:
            pass  # already stopped
        shutil.rmtree(self.base, ignore_errors=True)


class CuttingProxy:
    """A TCP proxy in front of the cluster that, once armed, closes the connection carrying a
    query that contains `marker` instead of forwarding it, `cuts` times: the client sees its
    connection broken, and the statement never ran (its outcome is known)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.marker = b""
        self.cuts = 0
        self.cut = 0  # connections cut so far
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, marker: bytes, cuts: int) -> None:
        with self._lock:
            self.marker, self.cuts = marker, cuts

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, dest: socket.socket, inspect: bool) -> None:
        tail = b""
        try:
            while data := source.recv(65536):
                if inspect and self._cutting(tail + data):
                    break
                tail = data[-64:]
                dest.sendall(data)
        except OSError:
            pass
        for sock in (source, dest):
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the other pump's recv
            except OSError:
                pass
            sock.close()

    def _cutting(self, data: bytes) -> bool:
        with self._lock:
            if self.cut >= self.cuts or not self.marker or self.marker not in data:
                return False
            self.cut += 1
            return True

    def close(self) -> None:
        self.listener.close()
