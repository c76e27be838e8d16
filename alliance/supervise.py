"""What the process supervisors share (dicom_server's parent, run_embedded): when a part
that died may start again, and a child that ends with its parent."""

from __future__ import annotations

import ctypes
import os
import signal
from dataclasses import dataclass

PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass
class Restarts:
    """A part that ran at least `quick_seconds` starts again at once; one that died sooner
    waits `first_delay`, doubled with each quick death in a row up to `max_delay`, and after
    `give_up_after` quick deaths in a row it is not started again (restarting a part that
    cannot run only hides why)."""

    quick_seconds: float = 10.0
    first_delay: float = 1.0
    max_delay: float = 30.0
    give_up_after: int = 5
    quick_deaths: int = 0

    def delay_after(self, lived_seconds: float) -> float | None:
        """Seconds to wait before starting the part again; None: give up."""
        if lived_seconds >= self.quick_seconds:
            self.quick_deaths = 0
            return 0.0
        self.quick_deaths += 1
        if self.quick_deaths >= self.give_up_after:
            return None
        return min(self.max_delay, self.first_delay * 2 ** (self.quick_deaths - 1))


def end_with_parent(parent_pid: int, sig: int = signal.SIGTERM) -> None:
    """In a forked child: have the kernel send `sig` when the parent dies (Linux), and leave
    at once if it already has (it may have died before the request was made)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent's stop signal still reaches it
        pass
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)
