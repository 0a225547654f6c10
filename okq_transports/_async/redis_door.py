"""The redis-py door, written once: a borrowed connection as a stream, the lender, the client.

Owns: a connection of the user's ``redis.asyncio`` pool as a stream of the one driver (bytes
leave through ``send_packed_command``, replies come back parsed by redis-py and reach the
machine through `ParsedReplies`), lending the pool's connections to the driver's borrowing
pool (``okq_transports._async.borrowed``), and `AsyncRedisPoolClient`.  Its blocking twin
(the ``redis.ConnectionPool`` door, `RedisPoolClient`) is generated from this file; what
differs between the two, reading one reply and giving a connection back, is in
``okq_transports._redis_io``.
Must not know: okq's reply shapes, retries, consumer rules (the driver's).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio

from okq_proto import (
    DEFAULT_NOTIFY_TIMEOUT_S,
    ClientConnection,
    ConnectError,
    DecoderBackend,
    Hooks,
    IdFactory,
)
from okq_proto.policy import DEFAULT_RETRIES, Address
from okq_transports._asyncio_backend import ASYNCIO
from okq_transports._observe import where
from okq_transports._redis_io import (
    FAILURES,
    ParsedReplies,
    async_clock,
    async_hand_back,
    async_idle_connected,
    async_read_reply,
    check_pool,
    connection_getter,
    okq_error,
    pool_address,
)

from .borrowed import AsyncBorrowedPool
from .streams import Feedable
from .workers import AsyncClient

__all__ = ["AsyncRedisLender", "AsyncRedisPoolClient", "AsyncRedisStream"]


class AsyncRedisStream:
    """A connection borrowed from the user's pool, as a stream of the one driver."""

    __slots__ = ("_feed", "_pool", "_rconn", "_returned", "_where", "now")

    def __init__(self, pool: Any, rconn: Any, address: Address) -> None:
        self._pool = pool
        self._rconn = rconn
        self._feed = ParsedReplies()
        self._returned = False
        self._where = where(address)
        self.now = async_clock()  # the backend's clock, looked up once

    def new_machine(self, decoder: DecoderBackend, max_reply_bytes: int | None) -> ClientConnection:
        return ClientConnection(self._feed)  # redis-py parses: our decoder never sees bytes

    async def send_all(self, data: bytes) -> None:
        try:
            await self._rconn.send_packed_command([data])
        except FAILURES as exc:
            raise okq_error(exc, f"okq over redis-py to {self._where}") from exc

    async def fill(self, machine: Feedable, timeout_s: float | None) -> None:
        try:
            self._feed.push(await async_read_reply(self._rconn, timeout_s, self._where))
        except FAILURES as exc:
            raise okq_error(exc, f"okq over redis-py from {self._where}") from exc

    def has_unread(self) -> bool:
        return False  # redis-py's pool checks a connection it hands out (can_read)

    async def give_back(self) -> None:
        """Hand the connection back to the pool as it is (nothing is owed on it)."""
        if not self._returned:
            self._returned = True
            await async_hand_back(self._pool, self._rconn, disconnect=False)

    async def aclose(self) -> None:
        """Disconnect and hand back: a reply may still be owed (or, for a consumer, it is
        registered), so the connection is never handed back as it is."""
        if not self._returned:
            self._returned = True
            await async_hand_back(self._pool, self._rconn, disconnect=True)


class AsyncRedisLender:
    """Lends the connections of the user's pool (`AsyncLender`)."""

    def __init__(self, pool: Any) -> None:
        check_pool(pool.connection_kwargs)
        self._pool = pool
        self._get = connection_getter(pool)
        self.address = pool_address(pool)

    def idle_count(self) -> int:
        return async_idle_connected(self._pool)

    async def borrow(self) -> AsyncRedisStream:
        try:
            rconn = await self._get()
        except FAILURES as exc:
            raise ConnectError(f"okq over redis-py: cannot connect: {exc}") from exc
        return AsyncRedisStream(self._pool, rconn, self.address)


class AsyncRedisPoolClient(AsyncClient):
    """The okq client over a user's redis-py pool: the methods, consumers and pull consumers
    of the door's own client (okq-go v2's ``RedisPool``), every byte through the user's pool.

    The pool stays the caller's: closing the client does not close it, its TLS, unix socket,
    limits and timeouts hold.  Each request borrows a connection, pipelines its commands in
    one ``send_packed_command``, reads the replies redis-py parsed, and gives the connection
    back (disconnected first if a reply might still be owed, so no later user can read it).
    Each consumer borrows a connection of its own for as long as it runs; a ``QNOTIFY`` wait
    may outlast redis-py's ``socket_timeout`` (the consumer times it itself).

    Args:
        pool: the user's pool (``redis.asyncio.ConnectionPool``), made with ``protocol=2``
            (see `check_pool`).
        notify_timeout_s: the ``QNOTIFY`` wait of consumers, in whole seconds.
        retries: how many times a retry-safe request is sent again on a new connection after
            a connection failure (`okq_proto.policy.may_retry`; the same on every door).
        id_factory: makes event ids for `push` (uuid4 text by default).
        hooks: metrics hooks.

    Raises:
        LocalProtocolError: the pool cannot talk to okq (`check_pool`).
    """

    BACKEND = ASYNCIO

    def __init__(
        self,
        pool: redis.asyncio.ConnectionPool,
        *,
        notify_timeout_s: int = DEFAULT_NOTIFY_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        id_factory: IdFactory | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        lender = AsyncRedisLender(pool)
        super().__init__(
            lender.address,
            retries=retries,
            notify_timeout_s=notify_timeout_s,
            id_factory=id_factory,
            hooks=hooks,
            pool=AsyncBorrowedPool(lender),
        )

    def __repr__(self) -> str:
        """``<okq_transports.redis.AsyncRedisPoolClient redis-py pool HOST:PORT open>`` (where
        the redis-py pool's connections go: ``unix:PATH`` for a unix socket), ``closed``
        once closed (the pool itself stays the caller's)."""
        host, port = self.addresses[0]  # the redis-py pool's (`pool_address`)
        where = host if host.startswith("unix:") else f"{host}:{port}"
        state = "closed" if getattr(self.pool, "closed", False) else "open"
        return f"<okq_transports.redis.AsyncRedisPoolClient redis-py pool {where} {state}>"

    async def aclose(self) -> None:
        """Refuse further requests (`okq_proto.ClientClosed`); the pool stays open: it
        belongs to the caller."""
        await super().aclose()
