"""Starting real processes on loopback for integration tests and benchmarks."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable

_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on right now, and not one this process was given before:
    two calls before either port is bound (a server's plain and TLS ports) could otherwise get
    the same port from the kernel, and the server refuses to start (seen 2026-12-05)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 60) -> None:  # type: ignore[type-arg]
    """Return once something accepts on the port; fail early if the process dies first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{proc.args[0]} did not listen on {port}")


def until(check: Callable[[], bool], seconds: float = 60, every: float = 0.1) -> bool:
    """Whether `check` comes true within `seconds` (looked at every `every` seconds): for what
    another thread or process does in its own time."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True
