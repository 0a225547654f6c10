"""The blocking socket pump under the sync client: connect, write, read, keep time.

Owns: one TCP socket per `SyncConnection` (TCP_NODELAY, keepalive), read deadlines, the loop
that flushes a machine's ``data_to_send`` and feeds what it reads back, and turning socket
errors into okq errors (through `okq_transports._exceptions`).
Also the bounded, thread-safe `Pool` of such connections with address failover.
Must not know: okq's rules (that is okq_proto), retries, consumers.

The read timeout bounds a whole reply, not each read: a reply's deadline is computed once (when
the request is written, or the previous pipelined reply completed), the first read waits the
full timeout and every further read of the same reply waits only what is left
(`okq_proto._ops.read_time_left`), so a peer that dribbles a byte at a time is cut off at the
deadline.  How many bytes an incomplete reply may take is the machine's ``max_reply_bytes``.

Timeouts are kernel socket options (``SO_RCVTIMEO`` / ``SO_SNDTIMEO``) on a *blocking* socket,
not Python's ``settimeout``: Python's timeout mode polls before every ``recv`` (one extra
system call per reply), the socket options cost nothing until they fire.  A read that hits the
deadline fails with ``EAGAIN``, which becomes okq's `TimeoutError`.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from okq_proto import (
    CLOSED,
    DEFAULT_MAX_REPLY_BYTES,
    NEED_DATA,
    ClientConnection,
    Command,
    CommandReplied,
    ConnectError,
    ConnectionClosed,
    ConnectionState,
    LocalProtocolError,
    OkqError,
    TimeoutError,
    read_time_left,
)

from ._exceptions import to_okq_error
from ._observe import log

__all__ = ["Pool", "SyncConnection", "connect", "keep_alive", "readable_now"]

_READ_SIZE: Final = 65536
_USE_SOCKOPT_TIMEOUTS: Final = sys.platform != "win32" and hasattr(socket, "SO_RCVTIMEO")
# Linux keepalive tuning (seconds): first probe after 60 s idle, then every 10 s, 6 probes.
_KEEPALIVE: Final = (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 6))


_NO_TIMEOUT: Final = bytes(struct.calcsize("ll"))  # a zero timeval: wait forever


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


_POLL: Final = hasattr(select, "poll")


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


def connect(
    host: str,
    port: int,
    *,
    connect_timeout_s: float | None,
    read_timeout_s: float | None,
    max_reply_bytes: int | None = DEFAULT_MAX_REPLY_BYTES,
) -> SyncConnection:
    """Open a TCP connection to an okq server and wrap it.

    Raises:
        ConnectError: the connection was refused or failed.
        TimeoutError: connecting took longer than `connect_timeout_s`.
    """
    what = f"connect to {host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=connect_timeout_s)
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
    return SyncConnection(sock, (host, port), read_timeout_s, max_reply_bytes)


class SyncConnection:
    """A blocking socket driving a `ClientConnection`.

    Not thread-safe: one thread at a time (the pool hands it out exclusively).  After any
    error it is `broken` and must be closed, never reused: a reply may still be owed.

    Args:
        sock: a connected socket.
        address: ``(host, port)``, for messages and failover.
        read_timeout_s: how long a whole reply may take, from the request's write to the
            reply's last byte (plus, for ``QNOTIFY``, its wait).
        max_reply_bytes: the most bytes an incomplete reply may take (None: no cap); beyond
            it the read fails with `RemoteProtocolError` and the connection is broken.
    """

    __slots__ = (
        "_buf",
        "_timeout_now",
        "_view",
        "address",
        "broken",
        "conn",
        "read_timeout_s",
        "sock",
    )

    def __init__(
        self,
        sock: socket.socket,
        address: tuple[str, int],
        read_timeout_s: float | None,
        max_reply_bytes: int | None = DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        self.sock = sock
        self.address = address
        self.read_timeout_s = read_timeout_s
        self.conn = ClientConnection(max_reply_bytes=max_reply_bytes)
        self.broken = False
        self._buf = bytearray(_READ_SIZE)
        self._view = memoryview(self._buf)
        self._timeout_now: float | None = -1.0  # forces the first set_read_timeout
        self.set_read_timeout(read_timeout_s)

    def set_read_timeout(self, seconds: float | None) -> None:
        """Let the next reads (and writes) wait at most `seconds` (None: forever)."""
        if seconds == self._timeout_now:
            return
        self._timeout_now = seconds
        try:
            if not _USE_SOCKOPT_TIMEOUTS:
                self.sock.settimeout(seconds)
                return
            value = _timeval(seconds) if seconds is not None else _NO_TIMEOUT
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
        except OSError as exc:
            self.broken = True
            raise to_okq_error(exc, f"configure {self._where()}") from exc

    def _where(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def flush(self, data: bytes) -> None:
        """Write all of `data`.

        Raises:
            TransportError: the write failed (the connection is then broken).
        """
        try:
            self.sock.sendall(data)
        except OSError as exc:
            self.broken = True
            raise to_okq_error(exc, f"send to {self._where()}") from exc

    def fill(self) -> None:
        """Read once (blocking up to the read timeout) and feed the connection machine.

        Raises:
            TransportError: the read failed or timed out (the connection is then broken).
        """
        try:
            n = self.sock.recv_into(self._buf)
        except OSError as exc:
            self.broken = True
            raise to_okq_error(exc, f"read from {self._where()}") from exc
        if n:
            self.conn.receive_data(self._view[:n])
        else:
            self.conn.receive_eof()

    def fill_rest(self, started: float) -> None:
        """Read once more for a reply whose budget (the read timeout) began at `started`:
        the read waits only what is left of it.

        Raises:
            TimeoutError: the budget is spent, or ran out during the read (broken).
            TransportError: the read failed (broken).
        """
        try:
            left = read_time_left(
                started, self.read_timeout_s, time.monotonic(), 0.0, self._where()
            )
        except TimeoutError:
            self.broken = True
            raise
        self.set_read_timeout(left)
        self.fill()

    def fill_by(self, deadline: float) -> bool:
        """Read once, waiting until `deadline` (monotonic) at most.  False if nothing came."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.set_read_timeout(remaining)
        try:
            n = self.sock.recv_into(self._buf)
        except OSError as exc:
            error = to_okq_error(exc, f"read from {self._where()}")
            if isinstance(error, TimeoutError):
                return False
            self.broken = True
            raise error from exc
        if n:
            self.conn.receive_data(self._view[:n])
        else:
            self.conn.receive_eof()
        return True

    def request(self, command: Command[Any]) -> CommandReplied:
        """Send one command and return its reply (an error reply is in ``.error``).

        Raises:
            TransportError: the connection failed (broken).
            RemoteProtocolError: the server broke the protocol (broken).
        """
        conn = self.conn
        try:
            conn.send(command)
            if self._timeout_now != self.read_timeout_s:  # a deadline shortened the last one
                self.set_read_timeout(self.read_timeout_s)
            self.flush(conn.data_to_send())
            started = time.monotonic()  # the reply's deadline: read_timeout_s from here
            # Nothing else is in flight on a pooled connection, so no reply can be complete
            # yet: read first (the full timeout), parse after.
            self.fill()
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    self.fill_rest(started)
                    continue
                if event is CLOSED:
                    raise ConnectionClosed(f"{self._where()} closed the connection")
                if conn.has_unsolicited():  # a reply nobody asked for: never reuse
                    self.broken = True
                return event
        except OkqError:
            self.broken = True
            raise

    def request_many(self, commands: list[Command[Any]]) -> list[CommandReplied]:
        """Send `commands` in one write and return their replies, in order.

        Raises:
            ConnectionClosed: the connection failed; ``.unanswered`` lists what got no reply
                (the replies received before are lost with it: use `read_replies`).
        """
        conn = self.conn
        conn.send_many(commands)
        if self._timeout_now != self.read_timeout_s:  # a deadline shortened the last one
            self.set_read_timeout(self.read_timeout_s)
        self.flush(conn.data_to_send())
        return self.read_replies(len(commands))

    def read_replies(
        self, count: int, into: list[CommandReplied] | None = None
    ) -> list[CommandReplied]:
        """Read `count` replies to commands already sent, appending to `into` as they come
        (so a caller keeps what arrived before a failure).

        Each reply must be complete within the read timeout of the previous one (of the call,
        for the first): its first read waits the full timeout, later reads what is left."""
        replies = into if into is not None else []
        conn = self.conn
        timeout = self.read_timeout_s
        try:
            started = time.monotonic()
            fresh = True  # no read yet for this reply
            while count:
                event = conn.next_event()
                if event is NEED_DATA:
                    if fresh:
                        fresh = False
                        if self._timeout_now != timeout:
                            self.set_read_timeout(timeout)
                        self.fill()
                    else:
                        self.fill_rest(started)
                    continue
                if event is CLOSED:
                    raise ConnectionClosed(f"{self._where()} closed the connection")
                replies.append(event)
                count -= 1
                if not fresh:
                    started = time.monotonic()
                    fresh = True
        except OkqError:
            self.broken = True
            raise
        if conn.has_unsolicited():  # a reply nobody asked for: never reuse
            self.broken = True
        return replies

    def heard_while_idle(self) -> bool:
        """Did the server send anything (bytes, or its end of file) since the last reply?
        With nothing asked, that is a reply nobody may read, or a hang-up: the pool closes
        such a connection instead of handing it out."""
        return readable_now(self.sock.fileno())

    @property
    def usable(self) -> bool:
        """True when the connection may go back to a pool: nothing owed, nothing broken.

        Every failure marks the connection `broken`, and `request` / `read_replies` read every
        reply they asked for, so ``broken`` alone decides on the hot path.
        """
        return not self.broken and self.conn.state is ConnectionState.OPEN

    def close(self) -> None:
        """Close the socket.  Idempotent."""
        self.broken = True
        with contextlib.suppress(OSError):
            self.sock.close()


class Pool:
    """A bounded, thread-safe pool of `SyncConnection` with address failover.

    `acquire` takes an idle connection without a lock (``deque.pop`` is atomic) or opens one
    while fewer than `size` are open, else waits; `release` closes a connection that is
    broken or still owes a reply instead of pooling it.
    """

    def __init__(
        self,
        addresses: list[tuple[str, int]],
        size: int,
        connect_timeout_s: float | None,
        read_timeout_s: float | None,
        wait_timeout_s: float | None,
        max_reply_bytes: int | None = DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        self.addresses = addresses
        self.max_reply_bytes = max_reply_bytes
        self.size = size
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.wait_timeout_s = wait_timeout_s
        self._idle: deque[SyncConnection] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._open = 0
        self._waiters = 0
        self._preferred = 0
        self.closed = False

    @property
    def preferred_address(self) -> tuple[str, int]:
        """The address of the last successful connection (failover starts there)."""
        return self.addresses[self._preferred]

    @property
    def open_count(self) -> int:
        return self._open

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    def connect_any(self, read_timeout_s: float | None) -> SyncConnection:
        """Connect to the preferred address, failing over along the list."""
        errors: list[OkqError] = []
        count = len(self.addresses)
        start = self._preferred
        for step in range(count):
            index = (start + step) % count
            host, port = self.addresses[index]
            try:
                connection = connect(
                    host,
                    port,
                    connect_timeout_s=self.connect_timeout_s,
                    read_timeout_s=read_timeout_s,
                    max_reply_bytes=self.max_reply_bytes,
                )
            except (ConnectError, TimeoutError) as exc:
                errors.append(exc)
                log.warning(
                    "okq: cannot connect to %s:%s: %s",
                    host,
                    port,
                    exc,
                    extra={"okq_address": f"{host}:{port}"},
                )
                continue
            self._preferred = index
            return connection
        if len(errors) == 1:
            raise errors[0]
        raise ConnectError("; ".join(str(e) for e in errors)) from errors[-1]

    def acquire(self) -> SyncConnection:
        """An idle connection, or a new one.  An idle connection that heard from its server
        while idle (`SyncConnection.heard_while_idle`) is closed, never handed out."""
        # Bounded: each pass takes one idle connection away.
        while True:
            try:
                connection = self._idle.pop()  # deque.pop is atomic: no lock on the fast path
            except IndexError:
                return self._acquire_slow()
            if not connection.heard_while_idle():
                return connection
            self.discard(connection)

    def _acquire_slow(self) -> SyncConnection:
        deadline = None if self.wait_timeout_s is None else time.monotonic() + self.wait_timeout_s
        with self._cond:
            self._waiters += 1
            try:
                while True:
                    if self.closed:
                        raise LocalProtocolError("the client is closed")
                    while True:  # bounded: each pass takes one idle connection away
                        try:
                            connection = self._idle.pop()  # others pop without the lock
                        except IndexError:
                            break
                        if not connection.heard_while_idle():
                            return connection
                        connection.close()
                        self._open -= 1
                    if self._open < self.size:
                        self._open += 1
                        break
                    timeout = None if deadline is None else deadline - time.monotonic()
                    if timeout is not None and timeout <= 0:
                        raise TimeoutError(
                            f"no pooled connection free within {self.wait_timeout_s} s "
                            f"(pool size {self.size})"
                        )
                    self._cond.wait(timeout)
            finally:
                self._waiters -= 1
        try:
            return self.connect_any(self.read_timeout_s)
        except BaseException:
            self._forget_one()
            raise

    def release(self, connection: SyncConnection) -> None:
        """Return a connection; one that is broken or owes a reply is closed instead."""
        if self.closed or not connection.usable:
            self.discard(connection)
            return
        self._idle.append(connection)
        if self._waiters:
            with self._cond:
                self._cond.notify()

    def discard(self, connection: SyncConnection) -> None:
        connection.close()
        self._forget_one()

    def _forget_one(self) -> None:
        with self._cond:
            self._open -= 1
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            idle = list(self._idle)
            self._idle.clear()
            self._open -= len(idle)
            self._cond.notify_all()
        for connection in idle:
            connection.close()
