"""The bounded connection pool, with failover along the server addresses.

Owns: how many connections exist at once (``size``; a caller wanting more waits, at most
``pool_timeout_s``), handing out idle connections (never one that is not `usable`), opening
new ones in `okq_proto.policy.Failover` order, and closing.  Written once: the asyncio and
trio clients run it on their backends, the blocking client runs the generated twin
(``okq_transports._sync.pool``) with a real lock.
Must not know: requests, retries, consumers, how a stream is made (that is the backend's).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from ssl import SSLContext

from okq_proto import (
    DEFAULT_MAX_REPLY_BYTES,
    ClientClosed,
    DecoderBackend,
    LocalProtocolError,
    OkqError,
    TimeoutError,
    TransportError,
)
from okq_proto.policy import Address, Failover

from .connection import AsyncConnection
from .streams import AsyncBackend, AsyncStream, Waiter

__all__ = ["AsyncPool"]


class AsyncPool:
    """A bounded pool of `AsyncConnection`s, with failover along the server addresses.

    At most `size` connections are handed out at once; a caller wanting more waits (at most
    `pool_timeout_s`, then `TimeoutError`).  A connection that is not `usable` when given back
    is closed, never handed out again.

    Args:
        backend: the I/O world (connect, clock, waiters, lock).
        addresses: where the servers are, in failover order.
        size: the most connections handed out at once.
        connect_timeout_s: how long connecting may take (None: the backend's own limit).
        read_timeout_s: each connection's read timeout (`AsyncConnection`).
        pool_timeout_s: how long `acquire` waits for a free slot (None: forever).
        connect: opens a stream to an address instead of the backend (tests, memory streams).
        max_reply_bytes: each connection's cap on an incomplete reply.
        decoder: each connection's decoder.
        tls: connect in TLS with this context (None: plain TCP).
    """

    def __init__(
        self,
        backend: AsyncBackend,
        addresses: Sequence[Address],
        *,
        size: int,
        connect_timeout_s: float | None,
        read_timeout_s: float | None,
        pool_timeout_s: float | None = None,
        connect: Callable[[Address], Awaitable[AsyncStream]] | None = None,
        max_reply_bytes: int | None = DEFAULT_MAX_REPLY_BYTES,
        decoder: DecoderBackend = "auto",
        tls: SSLContext | None = None,
    ) -> None:
        if size < 1:
            raise LocalProtocolError(f"pool size must be at least 1, not {size}")
        self._backend = backend
        self.failover = Failover(addresses)
        self.size = size
        self._out = 0  # connections handed out (bounded by size)
        self._waiters: deque[Waiter] = deque()
        self._idle: list[AsyncConnection] = []
        self._lock = backend.lock()
        self.closed = False
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.pool_timeout_s = pool_timeout_s
        self.max_reply_bytes = max_reply_bytes
        self.decoder: DecoderBackend = decoder
        self._connect = connect
        self.tls = tls

    @property
    def addresses(self) -> tuple[Address, ...]:
        """The server addresses, in failover order."""
        return self.failover.addresses

    @property
    def preferred_address(self) -> Address:
        """The address tried first (the last one that worked)."""
        return self.failover.preferred

    async def open_stream(self) -> tuple[AsyncStream, Address]:
        """A new stream outside the pool's count (consumers own theirs), trying each address
        in `Failover` order.  Returns the stream and its address.

        Raises:
            ClientClosed: the pool is closed.
            ConnectError, TimeoutError: no address accepted a connection
                (`Failover.error`).
        """
        if self.closed:
            raise ClientClosed()
        failures: list[tuple[Address, OkqError]] = []
        for address in self.failover.order():
            try:
                if self._connect is not None:
                    stream = await self._connect(address)
                else:
                    stream = await self._backend.connect(
                        *address, self.connect_timeout_s, tls=self.tls
                    )
            except TransportError as exc:
                failures.append((address, exc))
                continue
            self.failover.succeeded(address)
            return stream, address
        raise self.failover.error(failures)

    async def open_connection(self) -> AsyncConnection:
        """A new `AsyncConnection` outside the pool's count (see `open_stream`)."""
        stream, address = await self.open_stream()
        return AsyncConnection(
            stream,
            read_timeout_s=self.read_timeout_s,
            address=address,
            decoder=self.decoder,
            max_reply_bytes=self.max_reply_bytes,
        )

    @property
    def open_count(self) -> int:
        """Connections open: handed out plus idle."""
        return self._out + len(self._idle)

    @property
    def idle_count(self) -> int:
        """Connections open and idle."""
        return len(self._idle)

    def try_acquire(self) -> AsyncConnection | None:
        """An idle usable connection at once, or None (then `acquire`): the hot path, with
        no coroutine at all."""
        with self._lock:
            idle = self._idle
            if idle and self._out < self.size and not self._waiters and idle[-1].usable:
                self._out += 1
                return idle.pop()
        return None  # `acquire` closes an idle connection that is not usable

    def release_nowait(self, conn: AsyncConnection) -> bool:
        """Give back a connection whose last request just completed (so it is usable);
        False (nothing done) when the pool is closed: then call `release`."""
        with self._lock:
            if self.closed:
                return False
            self._idle.append(conn)
            self._give_back_slot()
        return True

    async def acquire(self) -> AsyncConnection:
        """Take a connection (an idle one, else a new one); waits while `size` are out.

        The fast path does not yield: the request that follows is the checkpoint.

        Raises:
            ClientClosed: the pool is closed.
            TimeoutError: no slot came free within `pool_timeout_s`.
            ConnectError: a new connection was needed and no address accepted one.
        """
        with self._lock:
            if self.closed:
                raise ClientClosed()
            waiter = None
            if self._out < self.size and not self._waiters:
                self._out += 1
            else:
                waiter = self._backend.event()
                self._waiters.append(waiter)
        if waiter is not None:
            await self._wait_for_slot(waiter)
        try:
            while True:  # bounded: each pass takes one idle connection away
                with self._lock:
                    conn = self._idle.pop() if self._idle else None
                if conn is None:
                    return await self.open_connection()
                if conn.usable:
                    return conn
                await conn.aclose()
        except BaseException:
            with self._lock:
                self._give_back_slot()
            raise

    async def _wait_for_slot(self, waiter: Waiter) -> None:
        try:
            handed = await self._backend.wait(waiter, self.pool_timeout_s)
        except BaseException:
            with self._lock:
                if waiter.is_set():
                    self._give_back_slot()  # handed over just as we were cancelled
                else:
                    self._waiters.remove(waiter)
            raise
        if handed:
            if self.closed:
                with self._lock:
                    self._give_back_slot()
                raise ClientClosed()
            return
        with self._lock:
            if waiter.is_set():  # handed over just as the wait ran out: take it
                return
            self._waiters.remove(waiter)
        raise TimeoutError(
            f"no pooled connection free within {self.pool_timeout_s} s (pool size {self.size})"
        )

    def _give_back_slot(self) -> None:
        """One slot is free: it passes to the oldest waiter, else back to the count.  Call
        with the lock held."""
        if self._waiters:
            self._waiters.popleft().set()
        else:
            self._out -= 1

    async def release(self, conn: AsyncConnection) -> None:
        """Give a connection back: kept if usable and the pool is open, else closed."""
        with self._lock:
            keep = conn.usable and not self.closed
            if keep:
                self._idle.append(conn)
            self._give_back_slot()
        if not keep:
            await conn.aclose()

    async def aclose(self) -> None:
        """Close idle connections; connections still out are closed when given back; every
        caller waiting for a slot gets `ClientClosed`.  Idempotent."""
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
            waiters = list(self._waiters)
        for waiter in waiters:
            waiter.set()  # the woken waiter sees `closed`
        for conn in idle:
            await conn.aclose()
