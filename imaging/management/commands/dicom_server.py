"""`manage.py dicom_server`: the DICOM network service (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET;
the modality worklist, MPPS and storage commitment), on DICOM_PORT and, when DICOM_TLS_PORT is
set, over TLS on that port too (PS3.15 B.1).

Wires settings and the Django-side services into imaging/dicom/scp.py. With --processes N
(or DICOM_PROCESSES) N processes share one listening socket, the least busy taking each
new association (scp.AcceptLoad), so that parallel associations are not all bound by one
interpreter. They are forked from this process, which then only supervises them: one that
dies is replaced after its spooled instances are indexed, and they all end with it.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

from alliance.collector import freeze_what_is_loaded
from alliance.supervise import Restarts, end_with_parent
from imaging import reconcile, spool, storage, tasks
from imaging.dicom import accel
from imaging.dicom.scp import AcceptLoad, Server, build_ae, listening_socket, make_server, tls_context
from imaging.dimse_services import DjangoServices

GIL_SWITCH_SECONDS = 0.0005
GC_YOUNG_THRESHOLD = 20_000


_WATCH_SECONDS = 0.5
_GONE = 1 << 30  # an association count no live process has
Shared = tuple[socket.socket, AcceptLoad, socket.socket | None]  # plain, load, TLS
log = logging.getLogger("imaging.dicom_server")


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(0)


class _Children:
    """The serving processes, one per slot of the shared AcceptLoad, forked from this one."""

    def __init__(self, serve: Callable[[int], None]) -> None:
        self.serve = serve
        self.pids: dict[int, tuple[int, float]] = {}  # pid: (slot, started)
        self.restarts: dict[int, Restarts] = {}

    def start(self, slot: int, load: AcceptLoad) -> None:
        load.counts[slot] = 0
        self.restarts.setdefault(slot, Restarts())
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                end_with_parent(parent)  # a killed parent must not leave it holding the port
                self.serve(slot)
            finally:
                os._exit(0)
        self.pids[pid] = (slot, time.monotonic())

    def reap(self) -> tuple[int, int, str, float] | None:
        """(pid, slot, how it ended, seconds it lived) of a process that has ended, if any."""
        while self.pids:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return None
            if pid in self.pids:
                slot, started = self.pids.pop(pid)
                return pid, slot, _how_it_ended(status), time.monotonic() - started
        return None

    def stop(self) -> None:
        for pid in self.pids:
            os.kill(pid, signal.SIGTERM)
        for pid in self.pids:
            os.waitpid(pid, 0)
        self.pids.clear()


def _how_it_ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def _collect_less() -> None:
    """The cyclic garbage collector took ~7% of the server's CPU under load (perf): every
    C-STORE allocates thousands of short-lived objects, each 700 allocations start a young
    collection, and the oldest generation holds Django's, pydicom's and pynetdicom's
    several hundred thousand long-lived objects, walked again at every full collection.
    Those are frozen out of the collector once started (alliance.collector), and young
    collections start after 20,000 allocations instead of 700. Reference counting still frees
    almost everything at once; only cycles wait a little longer."""
    freeze_what_is_loaded()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


class Command(BaseCommand):
    help = "Run the DICOM server on DICOM_HOST:DICOM_PORT (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.DICOM_HOST)
        parser.add_argument("--port", type=int, default=settings.DICOM_PORT)
        parser.add_argument("--processes", type=int, default=settings.DICOM_PROCESSES)
        parser.add_argument("--ae-title", default=settings.DICOM_AE_TITLE, help="our AE title when we call out")
        parser.add_argument("--tls-port", type=int, default=settings.DICOM_TLS_PORT, help="DICOM over TLS; 0: off")

    def handle(self, *args: Any, **options: Any) -> None:
        host, port, processes = options["host"], options["port"], max(1, options["processes"])
        self.tls_port = options["tls_port"]
        self.tls = self._tls_context() if self.tls_port else None
        signal.signal(signal.SIGTERM, _stop)
        self._tidy()
        connections.close_all()  # forked processes must not share this one's connection
        over_tls = f" and {host}:{self.tls_port} over TLS" if self.tls else ""
        self.stdout.write(f"DICOM server listening on {host}:{port}{over_tls} ({processes} process(es))")
        sys.stdout.flush()
        if processes == 1:  # one process serves; the service manager restarts it if it dies
            self._serve(host, port, options["ae_title"], shared=None, slot=0)
            return
        tls_socket = listening_socket(host, self.tls_port) if self.tls else None
        shared = (listening_socket(host, port), AcceptLoad(processes), tls_socket)
        children = _Children(lambda slot: self._serve(host, port, options["ae_title"], shared=shared, slot=slot))
        try:
            for slot in range(processes):
                children.start(slot, shared[1])
            self._supervise(children, shared[1])
        finally:
            children.stop()

    @staticmethod
    def _tls_context() -> ssl.SSLContext:
        """Fails loudly: a certificate, key or CA that cannot be read stops the server."""
        try:
            return tls_context(settings.DICOM_TLS_CERT, settings.DICOM_TLS_KEY, settings.DICOM_TLS_CA)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise CommandError(f"DICOM TLS: cannot use DICOM_TLS_CERT/KEY/CA: {exc}") from exc

    def _tidy(self) -> None:
        """What a stopped server left: answered instances not indexed, partial receives."""
        recovered = spool.recover()
        if recovered:
            self.stdout.write(f"indexed {recovered} instance(s) left in the spool")
        reconcile.remove_stale_temp(older_than=timedelta(seconds=settings.TEMP_MAX_AGE_SECONDS))

    def _supervise(self, children: _Children, load: AcceptLoad) -> None:
        """With several processes this one only watches them (forking from a process that
        serves would copy its threads' locks mid-use): a process that dies is replaced once
        what it answered and did not index is indexed, so its instances do not stay invisible."""
        while True:
            ended = children.reap()
            if ended is None:
                time.sleep(_WATCH_SECONDS)
                continue
            pid, slot, status, lived = ended
            log.error("DICOM server process %d of slot %d ended (%s) after %.0f s", pid, slot, status, lived)
            load.counts[slot] = _GONE  # no association waits for it meanwhile (AcceptLoad.wait_turn)
            try:
                recovered = spool.recover_process(pid)
            finally:
                connections.close_all()  # the next fork must not share it
            if recovered:
                log.warning("indexed %d instance(s) process %d answered and left in the spool", recovered, pid)
            delay = children.restarts[slot].delay_after(lived)
            if delay is None:
                raise CommandError(f"the DICOM server process of slot {slot} keeps ending ({status})")
            if delay:
                log.error("starting slot %d again in %.0f s", slot, delay)
                time.sleep(delay)
            children.start(slot, load)
            log.warning("DICOM server process of slot %d started again", slot)

    def _serve(self, host: str, port: int, ae_title: str, *, shared: Shared | None, slot: int) -> None:
        # Each C-STORE crosses several threads (pynetdicom's two reactors, the pool that
        # checksums and fsyncs the file while it is parsed): a thread that finished its
        # system call waits for the interpreter lock up to the switch interval (5 ms by
        # default) while another runs Python. 0.5 ms gave ~8% more instances/s on one
        # association in interleaved runs (bench/RESULTS.md).
        sys.setswitchinterval(GIL_SWITCH_SECONDS)
        # The server's connections live as long as the process (the web's are recycled after
        # CONN_MAX_AGE): a clinic that sends a study every few minutes would otherwise find the
        # association's and the indexer's connections expired, and wait for two new backends
        # and their cold catalog caches (~10 ms) on every study. A broken one is still found and
        # replaced before it is used (CONN_HEALTH_CHECKS).
        settings.DATABASES[DEFAULT_DB_ALIAS]["CONN_MAX_AGE"] = None
        tasks.load()  # Celery's modules, imported now and not by the first store
        tasks.warm_up()
        _collect_less()
        accel.install(
            storage.temp_dir(),
            enabled=settings.DICOM_ACCELERATE,
            debug=settings.DEBUG,
            max_file_bytes=settings.DICOM_MAX_FILE_BYTES,
        )
        ae = build_ae(ae_title)
        services = DjangoServices(check_host=settings.DICOM_CHECK_DEVICE_HOST, write_ahead=settings.DICOM_WRITE_AHEAD)
        services.start()
        listening, load, tls_listening = shared if shared is not None else (None, None, None)
        server = make_server(ae, host, port, services, listening=listening, load=load, slot=slot)
        servers = [server]
        if self.tls is not None:
            servers.append(
                make_server(
                    ae, host, self.tls_port, services, listening=tls_listening, load=load, slot=slot, tls=self.tls
                )
            )
            threading.Thread(target=servers[1].serve_forever, name="dicom-tls", daemon=True).start()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            _close(servers)
            spool.drain()
            services.close()


def _close(servers: list[Server]) -> None:
    """The first served in this thread and has stopped; the others still serve in theirs."""
    servers[0].server_close()
    for server in servers[1:]:
        server.shutdown()
