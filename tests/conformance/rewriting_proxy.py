"""A request/reply-rewriting TCP proxy for the conformance suite's mutation test.

`RewritingProxy` listens on the loopback interface and relays every client connection to an
upstream okq server on a connection of its own.  Requests and replies are cut at RESP frame
boundaries with the conformance suite's own framer (``conformance._resp.frame_reply``) and
paired in order, per connection, so a `Fault` can rewrite one request, one reply, or the
pairing itself.  With the identity `Fault` the proxy is transparent: what the client sends is
what the server reads and the other way round, closes included (a close on either side is
passed on as a half-close, so nothing in flight is lost and no reset is provoked).

Anything on the client's side that is not strictly framed RESP (inline commands, a lone LF in
a header, an unchecked bulk trailer, a length the framer refuses, a top-level value that is not
an array) puts that connection into raw mode: from then on bytes are relayed as they come,
through `Fault.rewrite_raw` only, and replies to those requests are relayed unpaired.  The
server's reading rules are looser than the framer's, so this is how the proxy stays
transparent for the suite's malformed-input checks.

Threads: one accept thread, and two pumps per connection (client to server, server to
client).  `RewritingProxy.stop` closes every socket and joins every thread.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final

from conformance._resp import (
    FramingError,
    RespError,
    RespSimple,
    RespValue,
    frame_reply,
    parse_reply,
)

__all__ = ["Fault", "ProxyConnection", "Request", "RewritingProxy", "encode_value"]

_RECV_SIZE: Final = 65536
#: A relayed connection idle this long (no byte either way) is given up (no check waits so long).
_IDLE_LIMIT_S: Final = 120.0
_ACCEPT_POLL_S: Final = 0.1
_JOIN_TIMEOUT_S: Final = 5.0
_CONNECT_TIMEOUT_S: Final = 5.0


def encode_value(value: RespValue) -> bytes:
    """Encode a parsed reply again (a nil becomes the nil bulk string ``$-1``)."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, RespSimple):
        return b"+" + value.value + b"\r\n"
    if isinstance(value, RespError):
        return b"-" + value.message + b"\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    return b"*%d\r\n" % len(value) + b"".join(encode_value(item) for item in value)


@dataclass(frozen=True, slots=True)
class Request:
    """One framed client request.

    Attributes:
        raw: its bytes as the client sent them.
        args: command name and arguments (simple-string elements included) or None when the
            array holds another kind of element (the server answers ``ERR invalid command``).
        expects_reply: False for a nil array (``*-1``), which the server ignores.
        batch_index: its position among the requests completed by the same read.
        batch_size: how many requests that read completed (several: they were pipelined).
    """

    raw: bytes
    args: tuple[bytes, ...] | None
    expects_reply: bool
    batch_index: int
    batch_size: int

    @property
    def name(self) -> bytes:
        """The command name upper-cased (ASCII), or ``b""``."""
        return self.args[0].upper() if self.args else b""


class Fault:
    """The identity fault: every hook passes its bytes through.  Subclasses change one thing.

    A rewritten request must still make the server send exactly one reply when the original
    would have (and none when it would not): rewrite a request you want to answer yourself
    into a ``PING`` and replace its ``+PONG``.

    Attributes:
        keep_server_connection: when the client closes, keep the connection to the server
            open (until the proxy stops), so the server never sees the client go.
    """

    keep_server_connection: bool = False

    def rewrite_request(self, conn: ProxyConnection, request: Request) -> bytes:
        """The bytes sent to the server in place of ``request``."""
        return request.raw

    def rewrite_reply(self, conn: ProxyConnection, request: Request, reply: bytes) -> bytes:
        """The bytes sent to the client in place of the server's ``reply`` to ``request``."""
        return reply

    def rewrite_raw(self, conn: ProxyConnection, data: bytes) -> bytes:
        """The bytes sent to the server for ``data`` received in raw mode."""
        return data


@dataclass(eq=False)
class ProxyConnection:
    """One relayed client connection: its two sockets, pumps, and pending requests."""

    proxy: RewritingProxy
    client: socket.socket
    upstream: socket.socket
    fault: Fault
    state: dict[str, object] = field(default_factory=dict)
    """Free per-connection state for the fault."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    pending: deque[Request] = field(default_factory=deque)
    threads: list[threading.Thread] = field(default_factory=list)
    _finished: int = 0
    _closed: bool = False

    def start(self) -> None:
        for target, label in ((self._pump_requests, "requests"), (self._pump_replies, "replies")):
            thread = threading.Thread(target=target, name=f"proxy-{label}", daemon=True)
            self.threads.append(thread)
            thread.start()

    # -- sockets --------------------------------------------------------------------------

    @staticmethod
    def _send(sock: socket.socket, data: bytes) -> None:
        if data:
            with contextlib.suppress(OSError):  # the peer is gone; its close reaches the other pump
                sock.sendall(data)

    @staticmethod
    def _recv(sock: socket.socket) -> bytes:
        try:
            return sock.recv(_RECV_SIZE)
        except OSError:  # reset, idle limit or our own shutdown: treated as a close
            return b""

    @staticmethod
    def _half_close(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Close both sockets now (idempotent); the pumps then end."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _pump_done(self) -> None:
        with self.lock:
            self._finished += 1
            last = self._finished == 2
        if last:
            self.close()

    # -- client to server -------------------------------------------------------------------

    def _pump_requests(self) -> None:
        try:
            self._relay_requests()
        finally:
            if not self.fault.keep_server_connection:
                self._half_close(self.upstream)
            self._pump_done()

    def _relay_requests(self) -> None:
        buf = bytearray()
        raw = False
        # Bounded: each pass blocks in recv, which ends with data, a close or the idle limit.
        while True:
            data = self._recv(self.client)
            if not data:
                return
            if raw:
                self._send(self.upstream, self.fault.rewrite_raw(self, data))
                continue
            buf += data
            frames: list[bytes] = []
            pos = 0
            while pos < len(buf):
                if buf[pos : pos + 1] != b"*":
                    raw = True
                    break
                try:
                    end = frame_reply(buf, pos)
                except FramingError:
                    raw = True
                    break
                if end is None:
                    raw = _stuck_in_lone_lf_header(buf, pos)
                    break
                frames.append(bytes(buf[pos:end]))
                pos = end
            out = bytearray()
            with self.lock:
                for index, frame in enumerate(frames):
                    request = _request(frame, index, len(frames))
                    if request.expects_reply:
                        self.pending.append(request)
                    out += self.fault.rewrite_request(self, request)
            self._send(self.upstream, bytes(out))
            del buf[:pos]
            if raw:
                rest = bytes(buf)
                buf.clear()
                self._send(self.upstream, self.fault.rewrite_raw(self, rest))

    # -- server to client -------------------------------------------------------------------

    def _pump_replies(self) -> None:
        try:
            self._relay_replies()
        finally:
            self._half_close(self.client)
            self._pump_done()

    def _relay_replies(self) -> None:
        buf = bytearray()
        raw = False
        # Bounded: each pass blocks in recv, which ends with data, a close or the idle limit.
        while True:
            data = self._recv(self.upstream)
            if not data:
                self._send(self.client, bytes(buf))
                return
            if raw:
                self._send(self.client, data)
                continue
            buf += data
            out = bytearray()
            pos = 0
            while pos < len(buf):
                try:
                    end = frame_reply(buf, pos)
                except FramingError:
                    raw = True
                    break
                if end is None:
                    break
                reply = bytes(buf[pos:end])
                pos = end
                with self.lock:
                    request = self.pending.popleft() if self.pending else None
                    if request is not None:
                        reply = self.fault.rewrite_reply(self, request, reply)
                    out += reply
            del buf[:pos]
            if raw:
                out += buf
                buf.clear()
            self._send(self.client, bytes(out))
            if self.state.get("close_now"):
                self.close()
                return


def _stuck_in_lone_lf_header(buf: bytearray, pos: int) -> bool:
    """Whether the unfinished request at ``buf[pos]`` waits in a header line that holds a LF
    without CR before it: the server ends a header at a lone LF, the framer never does.

    Only called where ``frame_reply`` returned None, so every complete header before that
    point has been validated already.
    """
    remaining = [1]
    # Bounded: every pass moves ``pos`` past one header line, or returns.
    while remaining:
        if remaining[-1] == 0:
            remaining.pop()
            continue
        remaining[-1] -= 1
        eol = buf.find(b"\r\n", pos)
        lf = buf.find(b"\n", pos)
        if lf >= 0 and (eol < 0 or lf <= eol):
            return True
        if eol < 0:
            return False
        kind = bytes(buf[pos : pos + 1])
        try:
            number = int(buf[pos + 1 : eol]) if kind in (b"$", b"*") else 0
        except ValueError:
            return True
        pos = eol + 2
        if kind == b"$" and number >= 0:
            if len(buf) < pos + number + 2:
                return False  # waiting in a payload, which may hold anything
            pos += number + 2
        elif kind == b"*" and number > 0:
            remaining.append(number)
    return False


def _request(frame: bytes, index: int, size: int) -> Request:
    value = parse_reply(frame)
    if value is None:
        return Request(frame, None, False, index, size)
    assert isinstance(value, list)
    args: list[bytes] = []
    for item in value:
        if isinstance(item, bytes):
            args.append(item)
        elif isinstance(item, RespSimple):
            args.append(item.value)
        else:
            return Request(frame, None, True, index, size)
    return Request(frame, tuple(args), True, index, size)


class RewritingProxy:
    """Relay loopback connections to ``upstream_host:upstream_port`` through ``fault``.

    ::

        with RewritingProxy("127.0.0.1", server.port, Fault()) as proxy:
            ...  # talk to proxy.host, proxy.port

    Args:
        upstream_host, upstream_port: the okq server behind the proxy.
        fault: what to change; the identity `Fault` by default.
    """

    def __init__(self, upstream_host: str, upstream_port: int, fault: Fault | None = None):
        self.upstream = (upstream_host, upstream_port)
        self.fault = fault or Fault()
        self.host = "127.0.0.1"
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, 0))
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._crashed = False
        self._lock = threading.Lock()
        self._connections: list[ProxyConnection] = []
        self._acceptor: threading.Thread | None = None

    def start(self) -> RewritingProxy:
        """Listen and accept in a background thread."""
        self._listener.listen(128)
        self._listener.settimeout(_ACCEPT_POLL_S)
        self._acceptor = threading.Thread(target=self._accept_loop, name="proxy-accept")
        self._acceptor.daemon = True
        self._acceptor.start()
        return self

    def crash(self) -> None:
        """Behave like a crashed server: drop every connection and every later one."""
        with self._lock:
            self._crashed = True
            connections = list(self._connections)
        for conn in connections:
            conn.close()

    def _accept_loop(self) -> None:
        # Bounded: polls every _ACCEPT_POLL_S until stop() sets the flag.
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(_IDLE_LIMIT_S)
            with self._lock:
                crashed = self._crashed
            try:
                if crashed:
                    raise OSError("crashed")
                upstream = socket.create_connection(self.upstream, timeout=_CONNECT_TIMEOUT_S)
            except OSError:
                client.close()
                continue
            upstream.settimeout(_IDLE_LIMIT_S)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = ProxyConnection(self, client, upstream, self.fault)
            with self._lock:
                self._connections.append(conn)
            conn.start()

    def stop(self) -> None:
        """Stop accepting, close every relayed connection and join every thread."""
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(_JOIN_TIMEOUT_S)
        self._listener.close()
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            conn.close()
        for conn in connections:
            for thread in conn.threads:
                thread.join(_JOIN_TIMEOUT_S)

    def __enter__(self) -> RewritingProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
