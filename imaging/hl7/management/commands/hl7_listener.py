"""`manage.py hl7_listener`: the MLLP listener for HIS orders (ORM^O01, OMI^O23).

Listens on HL7_HOST:HL7_PORT (or --host/--port) and answers every message with its ACK
(imaging.hl7.orders.receive). Stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from imaging.hl7 import mllp, orders

log = logging.getLogger("imaging.hl7_listener")


def _answer(text: str, peer: str) -> str:
    """One message, in a worker thread: its own database connection, closed when stale."""
    close_old_connections()
    try:
        return orders.receive(text, peer=peer)
    finally:
        close_old_connections()


class Command(BaseCommand):
    help = "Take HL7 v2 orders (ORM^O01, OMI^O23) from the registered HIS endpoints over MLLP."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.HL7_HOST)
        parser.add_argument("--port", type=int, default=settings.HL7_PORT)

    def handle(self, *args: Any, **options: Any) -> None:
        asyncio.run(self._run(options["host"], options["port"]))

    async def _run(self, host: str, port: int) -> None:
        server = await mllp.serve(host, port, _answer, encoding=settings.HL7_ENCODING)
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopped.set)
        log.info("HL7 listener on %s:%s", host, port)
        self.stdout.write(f"HL7 listener on {host}:{port}")
        async with server:
            await stopped.wait()
