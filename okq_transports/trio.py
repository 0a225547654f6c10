"""The trio okq client, following trio's conventions, over the one shared async driver.

Owns: only what is trio's own: `open_client` (an async context manager), no timeout
arguments (the caller's cancel scopes, ``trio.fail_after``, bound every call; the one
exception is the ``QNOTIFY`` wait the consumer chooses, read with a margin on top), any
``trio.abc.Stream`` as transport (``memory_stream_pair`` in tests), and ``nursery.start``
support for `Client.consume`.  No task is started outside the caller's nursery.

::

    async with open_client("127.0.0.1:4777") as client:
        await client.push("jobs", b"payload")

    async with trio.open_nursery() as nursery:
        await nursery.start(client.consume, handle, ["jobs"])   # returns once registered
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from ssl import SSLContext

try:
    import trio
except ImportError as exc:
    raise ModuleNotFoundError(
        "okq_transports.trio needs trio: pip install 'okq[trio]'", name=exc.name
    ) from exc

from okq_proto import (
    DEFAULT_MAX_REPLY_BYTES,
    DEFAULT_NOTIFY_TIMEOUT_S,
    Delivery,
    Hooks,
    IdFactory,
    LocalProtocolError,
)
from okq_proto.policy import DEFAULT_RETRIES

from ._async.connection import AsyncConnection
from ._async.consume import AsyncDeliveryStream as DeliveryStream
from ._async.workers import AsyncClient, Handler
from ._backends import AsyncStream
from ._exceptions import ConnectionBusyError
from ._trio_backend import TrioStream, trio_backend

__all__ = [
    "AsyncConnection",
    "Client",
    "ConnectionBusyError",
    "Delivery",
    "DeliveryStream",
    "Handler",
    "connection_over",
    "open_client",
]

#: Opens a ``trio.abc.Stream`` to ``(host, port)``; replaces TCP (tests: memory streams).
StreamFactory = Callable[[tuple[str, int]], Awaitable[trio.abc.Stream]]


class Client(AsyncClient):
    """A trio okq client; make it with `open_client`.

    Methods (async, same names and semantics as ``okq_transports.sync.Client``): `push`,
    `push_event`, `push_many`, `execute`, `peek_next`, `peek_last`, `status`, `info`,
    `flush`, `ping`, `consume`; plus `deliveries` (pull consumer) and `connection` (borrow a pooled
    connection).  Each call is bounded by the caller's cancel scopes; a request cancelled
    after it was written closes its connection, which is never reused.

    `consume` reports to ``nursery.start`` once every consumer registered
    (``await nursery.start(functools.partial(client.consume, handler, ["q"]))``).  Each
    handler call (``async def`` or plain) runs in a cancel scope whose deadline is its event's
    claim expiry (``delivery.deadline``, trio time).  Handlers and connections all live in
    that call's own nursery, inside the caller's; its `stop` is a ``trio.Event``.  Cancelling
    the caller's scope cancels running handlers; one that has already returned true still
    has its ack sent, alone, in a shielded cancel scope of at most one second.
    """

    BACKEND = trio_backend()


def connection_over(
    stream: trio.abc.Stream, *, max_reply_bytes: int | None = DEFAULT_MAX_REPLY_BYTES
) -> AsyncConnection:
    """An okq connection over any ``trio.abc.Stream`` (a TCP stream, TLS, or
    ``trio.testing.memory_stream_pair()`` in tests), without a pool: one task at a time
    (a second one gets `ConnectionBusyError`); a request cancelled half way closes it.
    `max_reply_bytes` is `open_client`'s."""
    return AsyncConnection(TrioStream(stream), max_reply_bytes=max_reply_bytes)


@asynccontextmanager
async def open_client(
    address: str | tuple[str, int] | Sequence[str | tuple[str, int]] = "127.0.0.1:4777",
    *,
    pool_size: int = 10,
    notify_timeout_s: int = DEFAULT_NOTIFY_TIMEOUT_S,
    pool_timeout_s: float | None = None,
    retries: int = DEFAULT_RETRIES,
    id_factory: IdFactory | None = None,
    hooks: Hooks | None = None,
    stream_factory: StreamFactory | None = None,
    max_reply_bytes: int | None = DEFAULT_MAX_REPLY_BYTES,
    ssl: SSLContext | None = None,
) -> AsyncIterator[Client]:
    """Open an okq client for the ``async with`` block; its connections close at the end.

    Args:
        address: ``"host:port"``, a comma-separated list, or a list (failover order).
        pool_size: most pooled connections open at once.
        notify_timeout_s: the ``QNOTIFY`` wait of consumers, in whole seconds.
        pool_timeout_s: how long a request waits for a free pooled connection (None, the
            default: until the caller's cancel scope ends it).
        retries: how many times a retry-safe request (push with the same id, peeks, status,
            info, flush, ping) is sent again on a new connection after a connection failure
            (`okq_proto.policy.may_retry`; the same on every door).
        id_factory: makes event ids for `Client.push` (uuid4 text by default).
        hooks: metrics hooks (`okq_proto.Hooks`).
        ssl: connect in TLS with this `ssl.SSLContext` (``ssl.create_default_context()``,
            or one with your CA: ``create_default_context(cafile=...)``); each server's
            certificate is checked against its host name.  None (default): plain TCP.
        stream_factory: opens a ``trio.abc.Stream`` per connection instead of TCP.
        max_reply_bytes: the most bytes one reply may take while incomplete (64 MiB by
            default; None: no cap).  A reply (or announced bulk string) beyond it raises
            `RemoteProtocolError` and its connection is closed, never reused.  Time is the
            caller's to bound: a reply dribbled byte by byte lasts until the caller's cancel
            scope (``trio.fail_after``) ends the call.

    Raises:
        LocalProtocolError: for a bad address or argument.
    """
    connect: Callable[[tuple[str, int]], Awaitable[AsyncStream]] | None = None
    if stream_factory is not None and ssl is not None:
        raise LocalProtocolError("open_client takes ssl= or stream_factory=, not both")
    if stream_factory is not None:
        factory = stream_factory

        async def connect(address: tuple[str, int]) -> AsyncStream:
            return TrioStream(await factory(address))

    client = Client(
        address,
        pool_size=pool_size,
        connect_timeout_s=None,
        read_timeout_s=None,
        pool_timeout_s=pool_timeout_s,
        retries=retries,
        notify_timeout_s=notify_timeout_s,
        id_factory=id_factory,
        hooks=hooks,
        connect=connect,
        max_reply_bytes=max_reply_bytes,
        ssl=ssl,
    )
    try:
        yield client
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()
