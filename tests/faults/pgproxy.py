"""A TCP proxy in front of PostgreSQL that loses the answer to a commit.

It forwards the PostgreSQL protocol both ways (PS: the frontend/backend protocol, each
message a type byte and a length). On the `cut_at`-th client message containing `marker`
(counted over every connection; a message that EXECUTEs a statement whose PREPARE held the
marker counts too: alliance.prepared sends a text once per session), it keeps forwarding the
client's messages but holds the server's answers back until the server reports, in
ReadyForQuery, whether a transaction is still open: while one is ('T', 'E') the answers go
through, so the client goes on to send its COMMIT; once none is ('I': the transaction
committed, or a statement in autocommit did), the answer is dropped and both sockets are
closed. The server has committed; the client never hears. With `refusing` set, new
connections are closed at once (a database that does not answer at all).

SSL is refused by the proxy itself (it answers 'N' to an SSLRequest or a GSSENCRequest), so
every byte it forwards can be read.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
from collections.abc import Callable

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_PREPARE = re.compile(rb"PREPARE (\w+) AS ([^;]*)")  # the statements prepared have no ';' of their own


class PgProxy:
    def __init__(self, upstream: tuple[str, int], *, marker: bytes, cut_at: int = 1) -> None:
        self.upstream = upstream
        self.marker = marker
        self.cut_at = cut_at
        self.seen = 0  # client messages that contained the marker
        self._executes: set[bytes] = set()  # EXECUTE of a statement prepared with the marker
        self.cut = threading.Event()  # set once an answer was swallowed
        self.refusing = False
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, name="pgproxy", daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            link = _Link(client, server, self._matches)
            with self._lock:
                self._links.append(link)
            link.start(self.cut)

    def _matches(self, message: bytes) -> bool:
        """Whether this client message is the one whose commit's answer is lost."""
        with self._lock:
            for name, text in _PREPARE.findall(message):
                if self.marker in text:
                    self._executes.add(b"EXECUTE " + name + b"(")
            if self.marker not in message and not any(execute in message for execute in self._executes):
                return False
            self.seen += 1
            return self.seen == self.cut_at


class _Link:
    def __init__(self, client: socket.socket, server: socket.socket, matches: Callable[[bytes], bool]) -> None:
        self.client = client
        self.server = server
        self.matches = matches
        self.armed = False  # the server's answers are held back until it is idle
        self.held: list[bytes] = []
        self._closing = threading.Lock()

    def start(self, cut: threading.Event) -> None:
        self.cut = cut
        threading.Thread(target=self._from_client, daemon=True).start()
        threading.Thread(target=self._from_server, daemon=True).start()

    def close(self) -> None:
        with self._closing:
            for sock in (self.client, self.server):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def _from_client(self) -> None:
        reader = _Reader(self.client)
        try:
            while True:  # the untyped start: SSLRequest / GSSENCRequest, then StartupMessage
                message = reader.untyped()
                if message is None:
                    return
                code = struct.unpack("!I", message[4:8])[0] if len(message) >= 8 else 0
                if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                    self.client.sendall(b"N")
                    continue
                self.server.sendall(message)
                break
            while (message := reader.typed()) is not None:
                if self.matches(message):
                    self.armed = True
                self.server.sendall(message)
        except OSError:
            pass
        finally:
            self.close()

    def _from_server(self) -> None:
        reader = _Reader(self.server)
        try:
            while (message := reader.typed()) is not None:
                if not self.armed:
                    self.client.sendall(message)
                    continue
                self.held.append(message)
                if message[:1] != b"Z":
                    continue
                if message[5:6] == b"I":  # no transaction open: what it did is committed
                    self.cut.set()
                    return
                self.client.sendall(b"".join(self.held))  # still in a transaction: let it go on
                self.held = []
        except OSError:
            pass
        finally:
            self.close()


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _take(self, n: int) -> bytes | None:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        taken, self.buffer = self.buffer[:n], self.buffer[n:]
        return taken

    def untyped(self) -> bytes | None:
        head = self._take(4)
        if head is None:
            return None
        body = self._take(struct.unpack("!I", head)[0] - 4)
        return None if body is None else head + body

    def typed(self) -> bytes | None:
        head = self._take(5)
        if head is None:
            return None
        body = self._take(struct.unpack("!I", head[1:5])[0] - 4)
        return None if body is None else head + body
