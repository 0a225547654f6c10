"""A tiny fake okq server on loopback, for testing the conformance runner itself.

It understands just enough to exercise the runner: ``PING``, ``QFLUSH``, ``FLUSHALL``,
``QLPUSH`` with duplicate detection, ``SLOW`` (replies after 0.3 s), ``DOUBLE``
(two replies to one command) and ``SILENT`` (no reply). Inline commands and
unparsable headers close the connection. With ``crash_on_bad_header`` it behaves
like the real okq on D1's inputs (every connection dropped, the listener gone),
and with ``escape_ids`` it fixes D2 (CR/LF escaped in the duplicate error).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType

from conformance._resp import FramingError, RespError, RespSimple, frame_reply, parse_reply


class FakeServer:
    """A threaded loopback server; use as a context manager (``with FakeServer() as srv``)."""

    def __init__(self, *, crash_on_bad_header: bool = False, escape_ids: bool = True) -> None:
        self.crash_on_bad_header = crash_on_bad_header
        self.escape_ids = escape_ids
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.host, self.port = self.listener.getsockname()[:2]
        self.queues: dict[bytes, dict[bytes, bytes]] = {}
        self.lock = threading.Lock()
        self.clients: set[socket.socket] = set()
        self.flushes = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self.thread.join(timeout=5)

    def stop(self) -> None:
        """Close the listener and every client connection (also how a 'crash' looks)."""
        self.stopped.set()
        self.listener.close()
        with self.lock:
            clients = list(self.clients)
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)

    def _accept_loop(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.clients.add(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        buf = bytearray()
        try:
            while not self.stopped.is_set():
                while buf:
                    if bytes(buf[:1]) not in (b"*", b"$", b"+", b"-", b":"):
                        return  # inline command or garbage: close silently
                    if b"\n" in buf and buf.index(b"\n") < 3:
                        if self.crash_on_bad_header:
                            self.stop()
                        return
                    try:
                        end = frame_reply(buf)
                    except FramingError:
                        if self.crash_on_bad_header:
                            self.stop()
                        return
                    if end is None:
                        break
                    request = parse_reply(bytes(buf[:end]))
                    del buf[:end]
                    client.sendall(self._handle(request))
                chunk = client.recv(65536)
                if not chunk:
                    return
                buf += chunk
        except OSError:
            return
        finally:
            with self.lock:
                self.clients.discard(client)
            client.close()

    def _handle(self, request: object) -> bytes:
        if not isinstance(request, list) or not request:
            return b""
        args = [a.value if isinstance(a, RespSimple) else a for a in request]
        if not all(isinstance(a, bytes) for a in args) or any(
            isinstance(a, RespError) for a in args
        ):
            return b"-ERR invalid command\r\n"
        argv: list[bytes] = [a for a in args if isinstance(a, bytes)]
        name = argv[0].upper()
        if name == b"PING":
            return b"+PONG\r\n"
        if name == b"FLUSHALL":
            with self.lock:
                self.queues.clear()
                self.flushes += 1
            return b"+OK\r\n"
        if name == b"SLOW":
            time.sleep(0.3)
            return b"+PONG\r\n"
        if name == b"DOUBLE":
            return b"+OK\r\n+OK\r\n"
        if name == b"SILENT":
            return b""
        if name == b"QFLUSH" and len(argv) >= 2:
            with self.lock:
                self.queues.pop(argv[1], None)
            return b"+OK\r\n"
        if name == b"QLPUSH" and len(argv) >= 4:
            with self.lock:
                events = self.queues.setdefault(argv[1], {})
                if argv[2] in events:
                    event_id = argv[2]
                    if self.escape_ids:
                        event_id = event_id.replace(b"\r", b"\\r").replace(b"\n", b"\\n")
                    return b"-ERR duplicate event " + event_id + b"\r\n"
                events[argv[2]] = argv[3]
            return b"+OK\r\n"
        return b'-ERR unknown command "' + argv[0] + b'"\r\n'
