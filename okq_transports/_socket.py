"""The blocking backend of the one driver: a TCP socket as a stream, threads' primitives.

Owns: connecting (TCP_NODELAY, keepalive), a blocking socket as a `SyncStream` (read once into
a machine within a deadline, write all, close, tell whether the peer spoke unasked), and what
the generated blocking driver (``okq_transports._sync``) asks of its backend: the clock, a
waiter and a lock for the pool; for consumers, sleeping and reading while watching a stop
flag (in slices of `STOP_POLL_S`), and consumer threads with a shared stop (`AnyStop`).  A
thread cannot be cancelled: a handler runs to its end, a connect to its timeout.
Every socket failure leaves as an okq error (`_exceptions.to_okq_error`).
Must not know: okq commands, pools, retries, consumers.

Timeouts are kernel socket options (``SO_RCVTIMEO`` / ``SO_SNDTIMEO``) on a *blocking* socket,
not Python's ``settimeout``: Python's timeout mode polls before every ``recv`` (one extra
system call per reply), the socket options cost nothing until they fire, and are set again
only when a read must wait longer than the last one, or at least `TIMEOUT_SLACK_S` less.  A
read that hits the deadline fails with ``EAGAIN``, which becomes okq's `TimeoutError`.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final, TypeVar, cast

from okq_proto import ClientConnection, DecoderBackend, TimeoutError

from ._exceptions import to_okq_error
from ._sync.streams import Feedable, StopEvent, SyncStream, Waiter

__all__ = [
    "SOCKETS",
    "STOP_POLL_S",
    "AnyStop",
    "SocketBackend",
    "SocketStream",
    "TLSSocketStream",
    "keep_alive",
    "readable_now",
]

T = TypeVar("T")

READ_SIZE: Final = 65536
#: How much longer than asked a read may wait, so that the socket's timeout is not set again
#: for every read of a reply whose budget shrinks by microseconds (two system calls each).
TIMEOUT_SLACK_S: Final = 0.05
#: How often a blocking consumer waiting in ``QNOTIFY`` (or a backoff) looks at its stop flag.
STOP_POLL_S: Final = 0.1
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

    __slots__ = ("_buf", "_poller", "_timeout_now", "_view", "now", "sock", "where")

    def __init__(self, sock: socket.socket, where: str) -> None:
        self.sock = sock
        self.where = where
        self._buf = bytearray(READ_SIZE)
        self._view = memoryview(self._buf)
        self._timeout_now: float | None = -1.0  # forces the first _set_timeout
        self._poller: select.poll | None = None
        self.now = time.monotonic

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
        current = self._timeout_now
        if timeout_s != current and (
            timeout_s is None
            or current is None
            or current < timeout_s  # a shorter timeout would fire before the budget is spent
            or current - timeout_s > TIMEOUT_SLACK_S
        ):
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
        poller = self._poller
        if poller is None:  # one poll object per socket, made when first asked
            if not _POLL:
                return readable_now(self.sock.fileno())
            poller = self._poller = select.poll()
            try:
                poller.register(self.sock.fileno(), select.POLLIN)
            except (OSError, ValueError):
                return True  # closed: reading it would fail, so nobody should
        try:
            return bool(poller.poll(0))  # POLLNVAL once closed: True, so never reused
        except OSError:
            return True


class TLSSocketStream(SocketStream):
    """A connected blocking TLS socket as a `SyncStream`.  One thread at a time.

    Its timeouts are Python's (``settimeout``): a kernel timeout under the TLS layer would
    surface as a TLS error in the middle of a record, not as a clean ``EAGAIN``.
    """

    __slots__ = ()

    def _set_timeout(self, seconds: float | None) -> None:
        self._timeout_now = seconds
        try:
            self.sock.settimeout(seconds)
        except OSError as exc:
            raise to_okq_error(exc, f"configure {self.where}") from exc

    def has_unread(self) -> bool:
        sock = cast(ssl.SSLSocket, self.sock)
        try:
            if sock.pending():  # decrypted bytes the TLS layer holds already
                return True
        except (OSError, ValueError):
            return True
        return super().has_unread()


class _Waiter(threading.Event):
    """A `threading.Event` that a pool waits on (the driver's waiter)."""


class SocketBackend:
    """Blocking sockets and threads: the backend of the generated blocking driver."""

    name = "sync"

    def connect(
        self, host: str, port: int, timeout_s: float | None, tls: ssl.SSLContext | None = None
    ) -> SocketStream:
        """A TCP connection to ``host:port``; in TLS with the context `tls` when given (the
        handshake, and the check of the server's certificate against ``host``, within
        `timeout_s` too).

        Raises:
            ConnectError: the connection was refused or failed, or the TLS handshake failed.
            TimeoutError: connecting took longer than `timeout_s`.
        """
        what = f"connect to {host}:{port}" + (" (TLS)" if tls is not None else "")
        try:
            sock = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as exc:
            raise to_okq_error(exc, what, connecting=True) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            keep_alive(sock.setsockopt)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=host)  # handshakes, in timeout_s
            elif _USE_SOCKOPT_TIMEOUTS:
                sock.settimeout(None)
        except OSError as exc:  # ssl.SSLError too
            sock.close()
            raise to_okq_error(exc, what, connecting=True) from exc
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return SocketStream(sock, where) if tls is None else TLSSocketStream(sock, where)

    def now(self) -> float:
        return time.monotonic()

    def event(self) -> threading.Event:
        return _Waiter()

    def wait(self, waiter: Waiter, timeout_s: float | None) -> bool:
        return cast(threading.Event, waiter).wait(timeout_s)  # made by `event`

    def lock(self) -> threading.Lock:
        return threading.Lock()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def sleep_or_stop(self, seconds: float, stop: StopEvent) -> bool:
        deadline = time.monotonic() + seconds
        while not stop.is_set():  # bounded by the deadline
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            _wait(stop, min(left, STOP_POLL_S))
        return False

    def fill_or_stop(
        self, stream: SyncStream, machine: Feedable, timeout_s: float, stop: StopEvent
    ) -> bool:
        """Read in slices of `STOP_POLL_S`, looking at `stop` between them (a read that
        times out has read nothing); past `timeout_s`, `TimeoutError`."""
        deadline = time.monotonic() + timeout_s
        while not stop.is_set():  # bounded by the deadline
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError(f"no reply within {timeout_s:.1f} s")
                stream.fill(machine, min(left, STOP_POLL_S))
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise
                continue
            return True
        return False

    def race_stop(self, fn: Callable[[], T], stop: StopEvent) -> T | None:
        return None if stop.is_set() else fn()  # a blocking call cannot be abandoned

    def stop_group(self, stop: StopEvent | None) -> AnyStop:
        return AnyStop(stop)

    def run_all(self, fns: Sequence[Callable[[], None]], group: StopEvent | None) -> None:
        """Run each function in a thread of its own (the first in the calling thread when
        there is only one); the first failure sets `group` (an `AnyStop`), which stops the
        others, and is raised once all have ended; so is a KeyboardInterrupt of the calling
        thread."""
        if len(fns) == 1:
            fns[0]()
            return
        halt = group if isinstance(group, AnyStop) else AnyStop(group)
        failures: list[BaseException] = []

        def run(fn: Callable[[], None]) -> None:
            try:
                fn()
            except BaseException as exc:
                failures.append(exc)
                halt.set()

        threads = [
            threading.Thread(target=run, args=(fn,), name=f"okq-consumer-{i}", daemon=True)
            for i, fn in enumerate(fns)
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)
        except BaseException:
            halt.set()
            for thread in threads:
                thread.join()
            raise
        if failures:
            raise failures[0]

    def cancel_pending(self) -> bool:
        return False

    def shielded(self, fn: Callable[[], None], timeout_s: float) -> bool:
        fn()  # nothing cancels a thread; the connection's read timeout bounds it
        return True


def _wait(stop: StopEvent, seconds: float) -> None:
    """Wait up to `seconds` for `stop` (its own ``wait`` when it has one)."""
    wait = getattr(stop, "wait", None)
    if callable(wait):
        wait(seconds)
    else:
        time.sleep(seconds)


class AnyStop:
    """The stop flag of consumer threads run together: set by the user's flag (if any) or by
    a sibling that failed (`set`), never setting the user's."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, outer: StopEvent | None) -> None:
        self._outer = outer
        self._inner = threading.Event()

    def is_set(self) -> bool:
        """True when either flag is set."""
        return self._inner.is_set() or (self._outer is not None and self._outer.is_set())

    def set(self) -> None:
        """Set the inner flag (the user's flag is left alone)."""
        self._inner.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for either flag (polling the user's, which may not be an Event)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():  # bounded by the deadline (None: until set)
            left = (
                STOP_POLL_S if deadline is None else min(STOP_POLL_S, deadline - time.monotonic())
            )
            if left <= 0:
                return False
            self._inner.wait(left)
        return True


SOCKETS: Final = SocketBackend()
