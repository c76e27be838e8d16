"""Wake pynetdicom's two reactor loops when there is work, instead of letting them poll.

pynetdicom 3 runs two threads per association and both poll. The DUL reactor sleeps 1 ms
whenever it finds nothing to do, then looks at its socket and at the PDUs queued for sending;
the association reactor sleeps 1 ms, then looks for a decoded DIMSE message. A C-STORE passes
those sleeps three times (the request in, the message to the handler, the response out): on
one association every instance waited for them, about as long as pynetdicom's own work, and
with many associations open the idle polling costs CPU.

`install(assoc)` turns each of those sleeps into a wait that ends as soon as there is
something to do: the DUL waits in select() on its socket and on an eventfd written when a
primitive is queued for sending; the association reactor waits on an Event set when a DIMSE
message or an ACSE primitive (release, abort) is queued for it. Both waits are bounded by
MAX_WAIT, so timers and kill flags are still checked as before. Only the sleeps of those two
loops change, recognised by the calling function and the thread; every other sleep in
pynetdicom, and every association without install(), behaves as it did. `disable()` puts
pynetdicom's modules back as they were.

This module depends on pynetdicom and the standard library only (Linux: os.eventfd), so that
it can be offered to pynetdicom as it stands; tests/imaging/test_dicom_accel_wakeup.py tests
it against plain pynetdicom servers.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from collections.abc import Callable
from queue import Queue
from types import CodeType
from typing import Any

from pynetdicom import association as _association_module
from pynetdicom import dul as _dul_module
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider

MAX_WAIT = 0.05  # seconds; the ARTIM and idle timers have second resolution
_ATTR = "_reactor_waker"
_DUL_LOOP: CodeType = DULServiceProvider.run_reactor.__code__
_ASSOCIATION_LOOP: CodeType = Association._run_reactor.__code__


class _AssociationWaker:
    """The association reactor waits here until a DIMSE message or ACSE primitive arrives."""

    loop = _ASSOCIATION_LOOP

    def __init__(self, assoc: Association) -> None:
        self._event = threading.Event()
        self._messages: Queue[Any] = assoc.dimse.msg_queue
        _notify_on_put(assoc.dimse.msg_queue, self._event.set)
        _notify_on_put(assoc.dul.to_user_queue, self._event.set)
        _notify_after(assoc, "kill", self._event.set)

    def wait(self, seconds: float) -> None:
        # The reactor takes one message per turn: with another already queued, go on at once.
        if self._messages.qsize():
            return
        self._event.wait(MAX_WAIT)
        self._event.clear()  # anything queued after this point sets it again


class _DulWaker:
    """The DUL reactor waits here until its socket has data or a primitive is queued to send.

    Its eventfd is only ever waited on, read and closed by the DUL thread itself (other
    threads only write to it, under the lock, while it is open), so a closed descriptor's
    number, reused by the process for another file, is never read. It is closed when the DUL
    thread ends (run wrapped when install() comes before the thread starts, as on the
    server), when the loop waits with its kill flag set, or at the latest when the DUL is
    collected.
    """

    loop = _DUL_LOOP

    def __init__(self, dul: DULServiceProvider) -> None:
        self._dul = dul
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._closed = threading.Lock()
        self._open = True
        self.held = False  # hold_socket(): another thread reads the socket for now
        _notify_on_put(dul.to_provider_queue, self.wake)
        _notify_after(dul, "kill_dul", self.wake)
        _notify_after(dul, "stop_dul", self.wake)
        run_at_thread_end(dul, self.close)  # when it has not started yet

    @property
    def is_open(self) -> bool:
        return self._open

    def wake(self) -> None:
        with self._closed:
            if self._open:
                os.eventfd_write(self._fd, 1)

    def close(self) -> None:
        with self._closed:
            if self._open:
                self._open = False
                os.close(self._fd)

    def wait(self, seconds: float) -> None:
        if self._dul.to_provider_queue.qsize():
            return
        wrapper = self._dul.socket
        raw = getattr(wrapper, "socket", None)
        if raw is None or not self._open:  # not connected yet, or closed: sleep as before
            time.sleep(seconds)
            return
        if self.held:
            readers = [self._fd]
        else:
            pending = getattr(raw, "pending", None)  # TLS: data already decrypted is invisible to select
            if pending is not None and pending():
                return
            readers = [raw, self._fd]
        try:
            select.select(readers, [], [], MAX_WAIT)
        except (OSError, ValueError):  # the socket closed under us; the loop sees it next turn
            time.sleep(seconds)
            return
        try:
            os.eventfd_read(self._fd)
        except (BlockingIOError, OSError):
            pass
        if getattr(self._dul, "_kill_thread", False):  # the loop ends now: in this thread, close
            self.close()

    def __del__(self) -> None:
        self.close()


def hold_socket(dul: DULServiceProvider, held: bool) -> None:
    """While held, the DUL's waker waits only for primitives to send, not on the socket, which
    another thread of ours reads meanwhile (imaging/dicom/accel/sender.py); a DUL without a
    waker polls as pynetdicom ships. The waker is woken to see the change now."""
    waker = getattr(dul, _ATTR, None)
    if isinstance(waker, _DulWaker):
        waker.held = held
        waker.wake()


def run_at_thread_end(thread: threading.Thread, fn: Callable[[], None]) -> bool:
    """Have `fn` run in `thread` when its run() ends, however it ends; False (and nothing done)
    when the thread has already started."""
    if thread.ident is not None:
        return False
    run = thread.run

    def run_then() -> None:
        try:
            run()
        finally:
            fn()

    # Thread.start() calls self.run(), found on the instance first.
    thread.run = run_then  # type: ignore[method-assign]
    return True


def _notify_on_put(queue: Queue[Any], notify: Callable[[], None]) -> None:
    """Call `notify` after every put on this queue object (only this one)."""
    put = queue.put

    def put_and_notify(item: Any, block: bool = True, timeout: float | None = None) -> None:
        put(item, block, timeout)
        notify()

    # An attribute of this one queue instance: pynetdicom calls queue.put() on it from its
    # state machine, its DIMSE provider and its ACSE, and offers no hook of its own.
    queue.put = put_and_notify  # type: ignore[method-assign]


def _notify_after(obj: Any, method: str, notify: Callable[[], None]) -> None:
    """Call `notify` after obj.method() (a kill or stop flag the waiting loop must see now)."""
    call = getattr(obj, method)

    def call_and_notify(*args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        finally:
            notify()

    setattr(obj, method, call_and_notify)


class _Time:
    """Stands in for the `time` module inside pynetdicom's association and dul modules; only
    sleep() differs, and only when called by a reactor loop whose thread has a waker."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        waker = getattr(threading.current_thread(), _ATTR, None)
        if waker is not None and sys._getframe(1).f_code is waker.loop:
            waker.wait(seconds)
        else:
            time.sleep(seconds)


_enabled = threading.Lock()
_MODULES = (_association_module, _dul_module)


def _enable() -> None:
    with _enabled:
        for module in _MODULES:
            if not isinstance(module.time, _Time):  # type: ignore[attr-defined]
                module.time = _Time()  # type: ignore[attr-defined]


def disable() -> None:
    """Give pynetdicom's modules their `time` back: associations made from now on poll as
    pynetdicom ships (a waker already installed sleeps as before, its loop no longer asks)."""
    with _enabled:
        for module in _MODULES:
            if isinstance(module.time, _Time):  # type: ignore[attr-defined]
                module.time = time  # type: ignore[attr-defined]


def install(assoc: Association) -> None:
    """Give this association's two reactor threads their wakers (before or after they start)."""
    if getattr(assoc.dul, _ATTR, None) is not None:
        return
    _enable()
    setattr(assoc.dul, _ATTR, _DulWaker(assoc.dul))
    if assoc.is_acceptor:
        # On associations we request, a sender thread waits for its responses on the same
        # queue the reactor reads (pynetdicom pauses the reactor around it); a reactor woken
        # by each response would only compete for it, so it keeps its polling there.
        setattr(assoc, _ATTR, _AssociationWaker(assoc))


def install_on_open(event: Any) -> None:
    """An EVT_CONN_OPEN handler for associations we request (C-MOVE sub-associations)."""
    install(event.assoc)
