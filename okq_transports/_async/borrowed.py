"""Connections borrowed from someone else's pool (a redis-py pool) for each request.

Owns: the pool face the client needs (`AsyncConnectionSource`) over a `AsyncLender` that
lends streams: a connection per request, given back to its owner right after (as it is when
the request completed, disconnected first when a reply may still be owed), and a dedicated
one per consumer.  The owner's pool keeps its own limits, TLS, unix socket and timeouts:
every byte goes through it.
Must not know: redis-py (the lender's), requests, retries.
"""

from __future__ import annotations

from typing import Protocol, cast

from okq_proto import ClientClosed, DecoderBackend
from okq_proto.policy import Address

from .connection import AsyncConnection
from .streams import AsyncStream

__all__ = ["AsyncBorrowedPool", "AsyncLender", "AsyncLentStream"]


class AsyncLentStream(AsyncStream, Protocol):
    """A stream that belongs to another pool: `aclose` disconnects it and gives it back."""

    async def give_back(self) -> None:
        """Hand the connection back to its owner as it is (nothing is owed on it)."""
        ...


class AsyncLender(Protocol):
    """Lends the connections of another pool."""

    @property
    def address(self) -> Address:
        """Where the owner's connections go, for messages."""
        ...

    async def borrow(self) -> AsyncLentStream:
        """A connection of the owner's pool.  Raises `ConnectError`."""
        ...

    def idle_count(self) -> int:
        """How many connections the owner's pool holds idle now (0 if it cannot tell)."""
        ...


class AsyncBorrowedPool:
    """The client's pool over a `AsyncLender`: nothing is kept here between requests.

    Args:
        lender: whose connections to use.
        decoder: the decoder of each borrowed connection's machine (a lender whose library
            parses replies itself ignores it).
    """

    read_timeout_s: float | None = None  # the owner's pool times reads (socket_timeout)
    max_reply_bytes: int | None = None  # replies arrive parsed by the owner's library

    def __init__(self, lender: AsyncLender, decoder: DecoderBackend = "auto") -> None:
        self._lender = lender
        self._decoder: DecoderBackend = decoder
        self._out = 0
        self.closed = False

    @property
    def addresses(self) -> tuple[Address, ...]:
        """The owner's address (no failover: the owner's pool has one)."""
        return (self._lender.address,)

    @property
    def preferred_address(self) -> Address:
        """The owner's address."""
        return self._lender.address

    @property
    def open_count(self) -> int:
        """Connections borrowed now plus those idle in the owner's pool."""
        return self._out + self._lender.idle_count()

    @property
    def idle_count(self) -> int:
        """Connections idle in the owner's pool (they are its, not ours)."""
        return self._lender.idle_count()

    def try_acquire(self) -> AsyncConnection | None:
        """None: borrowing is `acquire`'s."""
        return None

    async def open_stream(self) -> tuple[AsyncStream, Address]:
        """A dedicated borrowed connection (a consumer's), given back by its ``aclose``.

        Raises:
            ClientClosed: the client is closed.
            ConnectError: the owner's pool could not connect.
        """
        if self.closed:
            raise ClientClosed()
        return await self._lender.borrow(), self._lender.address

    async def acquire(self) -> AsyncConnection:
        """Borrow a connection for one request.

        Raises:
            ClientClosed: the client is closed.
            ConnectError: the owner's pool could not connect.
        """
        if self.closed:
            raise ClientClosed()
        stream = await self._lender.borrow()
        self._out += 1
        return AsyncConnection(
            stream,
            read_timeout_s=self.read_timeout_s,
            address=self._lender.address,
            decoder=self._decoder,
            max_reply_bytes=self.max_reply_bytes,
        )

    def release_nowait(self, conn: AsyncConnection) -> bool:
        """False: giving back is `release`'s."""
        return False

    async def release(self, conn: AsyncConnection) -> None:
        """Give the connection back to its owner (disconnected first unless `usable`)."""
        self._out -= 1
        if conn.usable:
            await cast(AsyncLentStream, conn.stream).give_back()
        else:
            await conn.aclose()

    async def aclose(self) -> None:
        """Refuse further requests; the connections are the owner's, left open."""
        self.closed = True
