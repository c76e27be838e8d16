"""The floor of the DIMSE benchmark: a pynetdicom C-STORE SCP that does nothing but write
each received data set to a file (no parsing, no index, no fsync), set up like our server
(TCP_NODELAY, 1 MiB PDUs, received straight into files, protocol logging off).

    python bench/bare_scp.py PORT FOLDER [--processes N] [--ours]

bench/dimse_store.py runs it beside our dicom_server and Orthanc: what pynetdicom itself
costs per instance on this machine, which no work of ours on top of it can go below. With
--ours it runs pynetdicom as our server does, with imaging/dicom/accel installed: reactors
woken by their work (wakeup.py), C-STORE's file meta and responses encoded by hand and P-DATA
taken apart in place (fastpath.py), cheaper negotiation (negotiation.py), and C-STORE served
on the reading thread with PDUs read in bulk (direct.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.transport import ThreadedAssociationServer

SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]


class Server(ThreadedAssociationServer):
    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # type: ignore[union-attr]
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, Any]:
        client, address = super().get_request()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address


def serve(port: int, folder: Path, ours: bool) -> None:
    _config.LOG_HANDLER_LEVEL = "none"
    _config.STORE_RECV_CHUNKED_DATASET = True
    counter = iter(range(10**9))

    def on_store(event: evt.Event) -> int:
        shutil.move(event.dataset_path, folder / f"{os.getpid()}-{next(counter)}.dcm")
        return 0x0000

    ae = AE("BARE")
    ae.maximum_pdu_size = 1024 * 1024
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, SYNTAXES)
    handlers: list[Any] = [(evt.EVT_C_STORE, on_store)]
    if ours:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from imaging.dicom import accel

        accel.install(folder)

        def store_direct(instance: Any) -> int:
            shutil.move(instance.path, folder / f"{os.getpid()}-{next(counter)}.dcm")
            return 0x0000

        def serve_directly(event: evt.Event) -> None:  # as our Handlers do once they accept
            accel.serve_stores_directly(event.assoc, store_direct, on_store, lambda: None)

        handlers.append((evt.EVT_REQUESTED, serve_directly))
    server = ae.make_server(("127.0.0.1", port), evt_handlers=handlers, server_class=Server)
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--ours", action="store_true", help="pynetdicom as our server runs it (see above)")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    import tempfile

    tempfile.tempdir = str(args.folder)  # pynetdicom receives into NamedTemporaryFiles there
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    children = []
    for _ in range(args.processes - 1):
        pid = os.fork()
        if pid == 0:
            serve(args.port, args.folder, args.ours)
            os._exit(0)
        children.append(pid)
    try:
        serve(args.port, args.folder, args.ours)
    finally:
        for pid in children:
            os.kill(pid, signal.SIGTERM)


if __name__ == "__main__":
    main()
