"""The blocking backend of the one driver: a TCP socket as a stream, threads' primitives.

Owns: connecting (TCP_NODELAY, keepalive), a blocking socket as a `SyncStream` (read once into
a machine within a deadline, write all, close, tell whether the peer spoke unasked), and the
clock, waiter and lock the generated blocking driver (``okq_transports._sync``) asks for.
Every socket failure leaves as an okq error (`_exceptions.to_okq_error`).
Must not know: okq commands, pools, retries, consumers.

Timeouts are kernel socket options (``SO_RCVTIMEO`` / ``SO_SNDTIMEO``) on a *blocking* socket,
not Python's ``settimeout``: Python's timeout mode polls before every ``recv`` (one extra
system call per reply), the socket options cost nothing until they fire, and are set again
only when a read's deadline differs from the last one's.  A read that hits the deadline fails
with ``EAGAIN``, which becomes okq's `TimeoutError`.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Final, cast

from okq_proto import ClientConnection, DecoderBackend

from ._exceptions import to_okq_error
from ._sync.streams import Feedable, Waiter

__all__ = ["SOCKETS", "SocketBackend", "SocketStream", "keep_alive", "readable_now"]

READ_SIZE: Final = 65536
_USE_SOCKOPT_TIMEOUTS: Final = sys.platform != "win32" and hasattr(socket, "SO_RCVTIMEO")
# Linux keepalive tuning (seconds): first probe after 60 s idle, then every 10 s, 6 probes.
_KEEPALIVE: Final = (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 6))
_NO_TIMEOUT: Final = bytes(struct.calcsize("ll"))  # a zero timeval: wait forever
_POLL: Final = hasattr(select, "poll")


def _timeval(seconds: float) -> bytes:
    seconds = max(seconds, 0.001)  # 0 would mean "no timeout"
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


def readable_now(fileno: int) -> bool:
    """Can the socket `fileno` be read at once (bytes, the peer's end of file, or an error)?
    One ``poll`` with no wait: how a pool tells that an idle connection heard something.
    An unusable descriptor answers True: reading it would fail, so nobody should."""
    try:
        if _POLL:
            poller = select.poll()
            poller.register(fileno, select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([fileno], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def keep_alive(setsockopt: Callable[[int, int, int], object]) -> None:
    """Turn on TCP keepalive with okq's tuning, through a socket's ``setsockopt`` (a
    `socket.socket`'s, asyncio's ``TransportSocket``'s or a ``trio.SocketStream``'s): a server
    that vanished without a FIN or RST is noticed after about two minutes of silence.

    Raises:
        OSError: the socket refused an option.
    """
    setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in _KEEPALIVE:
        option = getattr(socket, name, None)
        if option is not None:
            setsockopt(socket.IPPROTO_TCP, option, value)


class SocketStream:
    """A connected blocking socket as a `SyncStream`.  One thread at a time."""

    __slots__ = ("_buf", "_timeout_now", "_view", "sock", "where")

    def __init__(self, sock: socket.socket, where: str) -> None:
        self.sock = sock
        self.where = where
        self._buf = bytearray(READ_SIZE)
        self._view = memoryview(self._buf)
        self._timeout_now: float | None = -1.0  # forces the first _set_timeout

    def new_machine(self, decoder: DecoderBackend, max_reply_bytes: int | None) -> ClientConnection:
        return ClientConnection(backend=decoder, max_reply_bytes=max_reply_bytes)

    def _set_timeout(self, seconds: float | None) -> None:
        self._timeout_now = seconds
        try:
            if not _USE_SOCKOPT_TIMEOUTS:
                self.sock.settimeout(seconds)
                return
            value = _timeval(seconds) if seconds is not None else _NO_TIMEOUT
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
        except OSError as exc:
            raise to_okq_error(exc, f"configure {self.where}") from exc

    def fill(self, machine: Feedable, timeout_s: float | None) -> None:
        if timeout_s != self._timeout_now:
            self._set_timeout(timeout_s)
        try:
            n = self.sock.recv_into(self._buf)
        except OSError as exc:
            raise to_okq_error(exc, f"read from {self.where}") from exc
        if n:
            machine.receive_data(self._view[:n])
        else:
            machine.receive_eof()

    def send_all(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise to_okq_error(exc, f"send to {self.where}") from exc

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def has_unread(self) -> bool:
        return readable_now(self.sock.fileno())


class _Waiter(threading.Event):
    """A `threading.Event` that a pool waits on (the driver's waiter)."""


class SocketBackend:
    """Blocking sockets and threads: the backend of the generated blocking driver."""

    name = "sync"

    def connect(self, host: str, port: int, timeout_s: float | None) -> SocketStream:
        """A TCP connection to ``host:port``.

        Raises:
            ConnectError: the connection was refused or failed.
            TimeoutError: connecting took longer than `timeout_s`.
        """
        what = f"connect to {host}:{port}"
        try:
            sock = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as exc:
            raise to_okq_error(exc, what, connecting=True) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            keep_alive(sock.setsockopt)
            if _USE_SOCKOPT_TIMEOUTS:
                sock.settimeout(None)
        except OSError as exc:
            sock.close()
            raise to_okq_error(exc, what, connecting=True) from exc
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return SocketStream(sock, where)

    def now(self) -> float:
        return time.monotonic()

    def event(self) -> threading.Event:
        return _Waiter()

    def wait(self, waiter: Waiter, timeout_s: float | None) -> bool:
        return cast(threading.Event, waiter).wait(timeout_s)  # made by `event`

    def lock(self) -> threading.Lock:
        return threading.Lock()


SOCKETS: Final = SocketBackend()
