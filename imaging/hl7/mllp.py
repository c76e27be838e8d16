"""MLLP (HL7 v2 over TCP, the <VT>message<FS><CR> block) both ways, through the `hl7`
library's asyncio streams: a server that answers each block, and a client that sends one
message and reads its ACK. Nothing here touches the database; `answer` is given."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from hl7.mllp import InvalidBlockError, open_hl7_connection, start_hl7_server

log = logging.getLogger(__name__)
MAX_BLOCK = 16 * 1024 * 1024


async def serve(host: str, port: int, answer: Callable[[str, str], str], *, encoding: str) -> asyncio.Server:
    """Listen on host:port; each message received is answered with answer(text, peer), which
    runs in a thread (it uses the database), one message at a time per connection."""

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = peer[0] if isinstance(peer, tuple) else ""
        try:
            while True:
                try:
                    block = await reader.readblock()  # type: ignore[attr-defined]
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                except (InvalidBlockError, ValueError) as exc:
                    log.warning("hl7: a block from %s that is not MLLP: %s", source, exc)
                    break
                reply = await asyncio.to_thread(answer, block.decode(encoding, "replace"), source)
                writer.writeblock(reply.encode(encoding, "replace"))  # type: ignore[attr-defined]
                await writer.drain()
        finally:
            writer.close()

    return await start_hl7_server(connected, host, port, encoding=encoding, limit=MAX_BLOCK)


async def _exchange(host: str, port: int, message: str, encoding: str) -> str:
    reader, writer = await open_hl7_connection(host, port, encoding=encoding, limit=MAX_BLOCK)
    try:
        writer.writeblock(message.encode(encoding))
        await writer.drain()
        block = await reader.readblock()
        return str(block.decode(encoding, "replace"))
    finally:
        writer.close()


def send(host: str, port: int, message: str, *, encoding: str, timeout: float) -> str:
    """Send one message and return the answer (its ACK); OSError or TimeoutError when the peer
    is away, refuses, closes without answering or takes longer than `timeout` seconds."""
    try:
        return asyncio.run(asyncio.wait_for(_exchange(host, port, message, encoding), timeout))
    except asyncio.IncompleteReadError as exc:
        raise ConnectionError("the peer closed the connection without an answer") from exc
    except (InvalidBlockError, ValueError) as exc:
        raise ConnectionError(f"the peer's answer is not an MLLP block: {exc}") from exc
