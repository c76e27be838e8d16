"""`manage.py dicom_server`: the DICOM network service (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET).

Wires settings and the Django-side services into imaging/dicom/scp.py. With --processes N
(or DICOM_PROCESSES) N processes share one listening socket, the least busy taking each
new association (scp.AcceptLoad), so that parallel associations are not all bound by one
interpreter.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import connections

from imaging import spool, storage, tasks
from imaging.dicom import accel
from imaging.dicom.scp import AcceptLoad, build_ae, listening_socket, make_server
from imaging.dimse_services import DjangoServices

GIL_SWITCH_SECONDS = 0.0005
GC_YOUNG_THRESHOLD = 20_000


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def _collect_less() -> None:
    """The cyclic garbage collector took ~7% of the server's CPU under load (perf): every
    C-STORE allocates thousands of short-lived objects, each 700 allocations start a young
    collection, and the oldest generation holds Django's, pydicom's and pynetdicom's
    several hundred thousand long-lived objects, walked again at every full collection.
    Those are frozen out of the collector once started (gc.freeze), and young collections
    start after 20,000 allocations instead of 700. Reference counting still frees almost
    everything at once; only cycles wait a little longer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


class Command(BaseCommand):
    help = "Run the DICOM server on DICOM_HOST:DICOM_PORT (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.DICOM_HOST)
        parser.add_argument("--port", type=int, default=settings.DICOM_PORT)
        parser.add_argument("--processes", type=int, default=settings.DICOM_PROCESSES)
        parser.add_argument("--ae-title", default=settings.DICOM_AE_TITLE, help="our AE title when we call out")

    def handle(self, *args: Any, **options: Any) -> None:
        host, port, processes = options["host"], options["port"], max(1, options["processes"])
        signal.signal(signal.SIGTERM, _stop)
        recovered = spool.recover()  # what a server that stopped answered but did not index
        if recovered:
            self.stdout.write(f"indexed {recovered} instance(s) left in the spool")
        connections.close_all()  # forked processes must not share this one's connection
        shared = (listening_socket(host, port), AcceptLoad(processes)) if processes > 1 else None
        children: list[int] = []
        for _ in range(processes - 1):
            pid = os.fork()
            if pid == 0:
                try:
                    self._serve(host, port, options["ae_title"], shared=shared, slot=len(children) + 1)
                finally:
                    os._exit(0)
            children.append(pid)
        try:
            self.stdout.write(f"DICOM server listening on {host}:{port} ({processes} process(es))")
            sys.stdout.flush()
            self._serve(host, port, options["ae_title"], shared=shared, slot=0)
        finally:
            for pid in children:
                os.kill(pid, signal.SIGTERM)
            for pid in children:
                os.waitpid(pid, 0)

    def _serve(
        self, host: str, port: int, ae_title: str, *, shared: tuple[socket.socket, AcceptLoad] | None, slot: int
    ) -> None:
        # Each C-STORE crosses several threads (pynetdicom's two reactors, the pool that
        # checksums and fsyncs the file while it is parsed): a thread that finished its
        # system call waits for the interpreter lock up to the switch interval (5 ms by
        # default) while another runs Python. 0.5 ms gave ~8% more instances/s on one
        # association in interleaved runs (bench/RESULTS.md).
        sys.setswitchinterval(GIL_SWITCH_SECONDS)
        tasks.load()  # Celery's modules, imported now (before any fork) and not by the first store
        _collect_less()
        accel.install(
            storage.temp_dir(),
            enabled=settings.DICOM_ACCELERATE,
            debug=settings.DEBUG,
            max_file_bytes=settings.DICOM_MAX_FILE_BYTES,
        )
        ae = build_ae(ae_title)
        services = DjangoServices(check_host=settings.DICOM_CHECK_DEVICE_HOST, write_ahead=settings.DICOM_WRITE_AHEAD)
        listening, load = shared if shared is not None else (None, None)
        server = make_server(ae, host, port, services, listening=listening, load=load, slot=slot)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
            spool.drain()
