"""A tiny fake okq server on loopback, for testing the conformance runner itself.

It understands just enough to exercise the runner: ``PING``, ``QFLUSH``, ``FLUSHALL``,
``QLPUSH`` with duplicate detection, ``SLOW`` (replies after 0.3 s), ``DOUBLE``
(two replies to one command) and ``SILENT`` (no reply). Inline commands and
unparsable headers close the connection. With ``crash_on_bad_header`` it behaves
like the real okq on D1's inputs (every connection dropped, the listener gone),
and with ``escape_ids`` it fixes D2 (CR/LF escaped in the duplicate error).

`faulty_server` is the other kind of fake: our embedded server behind `FaultyProxy`, a tiny
request/reply rewriting proxy that relays one request at a time per client connection (so it
can pair a request with its reply); a `Fault` may rewrite the request or the reply, delay the
reply, swap pipelined replies or keep the upstream connection open when the client closes.

Broken variants for the D1/D2 probes' controls: ``hang_on_bad_header`` (a bad header makes
the whole server stop answering, connections left open: not how okq fails),
``short_line_limit=3`` (a 3-byte header line such as ``+\r\n``, valid for okq, counts as
bad too) and ``escape_all_ids`` (the duplicate error escapes every non-printable byte, so an
id without CR/LF no longer gives okq's exact bytes).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType

from conformance._resp import FramingError, RespError, RespSimple, frame_reply, parse_reply
from okq_transports.server import run_in_thread


class FakeServer:
    """A threaded loopback server; use as a context manager (``with FakeServer() as srv``)."""

    def __init__(
        self,
        *,
        crash_on_bad_header: bool = False,
        escape_ids: bool = True,
        hang_on_bad_header: bool = False,
        short_line_limit: int = 2,
        escape_all_ids: bool = False,
    ) -> None:
        self.crash_on_bad_header = crash_on_bad_header
        self.escape_ids = escape_ids
        self.hang_on_bad_header = hang_on_bad_header
        #: A header line whose LF comes before this offset is a bad header (okq: 2, i.e. a
        #: line shorter than 3 bytes).
        self.short_line_limit = short_line_limit
        self.escape_all_ids = escape_all_ids
        self.hung = threading.Event()
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
                    if b"\n" in buf and buf.index(b"\n") < self.short_line_limit:
                        self._bad_header()
                        return
                    try:
                        end = frame_reply(buf)
                    except FramingError:
                        self._bad_header()
                        return
                    if end is None:
                        break
                    request = parse_reply(bytes(buf[:end]))
                    del buf[:end]
                    if self.hung.is_set():
                        continue  # a hung server reads but never answers
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

    def _bad_header(self) -> None:
        if self.crash_on_bad_header:
            self.stop()
        elif self.hang_on_bad_header:
            self.hung.set()

    def _handle(self, request: object) -> bytes:
        if not isinstance(request, list):
            return b""
        if not request:
            return b'-ERR unknown command ""\r\n'
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
                    if self.escape_all_ids:
                        event_id = repr(event_id)[2:-1].encode()
                    elif self.escape_ids:
                        event_id = event_id.replace(b"\r", b"\\r").replace(b"\n", b"\\n")
                    return b"-ERR duplicate event " + event_id + b"\r\n"
                events[argv[2]] = argv[3]
            return b"+OK\r\n"
        return b'-ERR unknown command "' + argv[0] + b'"\r\n'


# -- a faulty okq: the embedded server behind a rewriting proxy ---------------------------

Argv = list[bytes]


@dataclass
class Fault:
    """What `FaultyProxy` changes; every hook sees the arguments (the command upper-cased)."""

    request: Callable[[Argv], Argv] = lambda argv: argv
    reply: Callable[[Argv, bytes], bytes] = lambda argv, reply: reply
    delay: Callable[[Argv, bytes], float] = lambda argv, reply: 0.0
    swap_pipelined: bool = False
    keep_upstream_open: bool = False
    kept: list[socket.socket] = field(default_factory=list)


def _encode(argv: Argv) -> bytes:
    return b"*%d\r\n" % len(argv) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in argv)


def _argv(request: bytes) -> Argv | None:
    try:
        value = parse_reply(request)
    except FramingError:
        return None
    if not isinstance(value, list) or not value:
        return None
    out = []
    for item in value:
        if isinstance(item, RespSimple):
            item = item.value
        if not isinstance(item, bytes) or isinstance(item, RespError):
            return None
        out.append(item)
    return out


class FaultyProxy:
    """Relay client connections to ``upstream``, one request and one reply at a time."""

    def __init__(self, upstream: tuple[str, int], fault: Fault) -> None:
        self.upstream = upstream
        self.fault = fault
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.host, self.port = self.listener.getsockname()[:2]
        self.stopped = threading.Event()
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sockets += [client, server]
            threading.Thread(target=self._relay, args=(client, server), daemon=True).start()

    @staticmethod
    def _read_reply(server: socket.socket, buf: bytearray) -> bytes:
        while True:
            end = frame_reply(buf)
            if end is not None:
                reply = bytes(buf[:end])
                del buf[:end]
                return reply
            chunk = server.recv(1 << 20)
            if not chunk:
                raise ConnectionError("upstream closed")
            buf += chunk

    def _exchange(self, server: socket.socket, sbuf: bytearray, request: bytes) -> bytes:
        argv = _argv(request)
        if argv is None:  # not a plain command: relay as is, expect one reply
            server.sendall(request)
            return self._read_reply(server, sbuf)
        sent_name = argv[0]
        argv[0] = sent_name.upper()
        rewritten = self.fault.request(list(argv))
        if rewritten[0] == argv[0]:
            rewritten[0] = sent_name  # the name in the case the client sent it
        server.sendall(_encode(rewritten))
        reply = self.fault.reply(argv, self._read_reply(server, sbuf))
        pause = self.fault.delay(argv, reply)
        if pause:
            time.sleep(pause)
        return reply

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        cbuf = bytearray()
        sbuf = bytearray()
        try:
            while not self.stopped.is_set():
                frames = []
                pos = 0
                while True:
                    end = frame_reply(cbuf, pos)
                    if end is None:
                        break
                    frames.append(bytes(cbuf[pos:end]))
                    pos = end
                del cbuf[:pos]
                replies = [self._exchange(server, sbuf, f) for f in frames]
                if self.fault.swap_pipelined:
                    for i in range(0, len(replies) - 1, 2):
                        replies[i], replies[i + 1] = replies[i + 1], replies[i]
                if replies:
                    client.sendall(b"".join(replies))
                chunk = client.recv(1 << 20)
                if not chunk:
                    break
                cbuf += chunk
        except (OSError, ConnectionError, FramingError):
            pass
        finally:
            client.close()
            if self.fault.keep_upstream_open:
                self.fault.kept.append(server)
            else:
                server.close()


@contextlib.contextmanager
def faulty_server(fault: Fault, **server_options: float) -> Iterator[FaultyProxy]:
    """Our embedded server (a 0.5 s restore sweep unless told otherwise) behind the proxy."""
    options = {"sweep_interval_s": 0.5, **server_options}
    with run_in_thread(**options) as srv:  # type: ignore[arg-type]
        proxy = FaultyProxy((srv.host, srv.port), fault)
        try:
            yield proxy
        finally:
            proxy.stop()
