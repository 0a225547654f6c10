"""The anyio okq client: trio's conventions on either anyio backend, over the one shared driver.

Owns: only what is anyio's own: `open_client` (an async context manager) choosing the
driver's backend from the async library running it (``sniffio``: the trio backend under
trio, the asyncio backend under asyncio), no timeout arguments (the caller's anyio cancel
scopes, ``anyio.fail_after``, bound every call), an ``anyio.Event`` as `Client.consume`'s
`stop`, ``TaskGroup.start`` support for `Client.consume` (``started()`` called from the task
anyio started, as its asyncio backend requires), and any ``anyio.abc.ByteStream`` as a
transport (`AnyioStream`, for `stream_factory` and `connection_over`).
Must not know: okq commands, pools, consumers (the driver's), nor how either backend waits,
connects or cancels (``_asyncio_backend``, ``_trio_backend``): there is no third backend.

::

    async with open_client("127.0.0.1:4777") as client:
        await client.push("jobs", b"payload")

    async with anyio.create_task_group() as tg:
        await tg.start(client.consume, handle, ["jobs"])   # returns once registered

    anyio.run(main, backend="trio")   # or backend="asyncio"
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from ssl import SSLContext

try:
    import anyio
    import anyio.abc
    import sniffio
except ImportError as exc:
    raise ModuleNotFoundError(
        "okq_transports.anyio needs anyio: pip install 'okq[anyio]'", name=exc.name
    ) from exc

from okq_proto import (
    DEFAULT_EXPIRE_S,
    DEFAULT_MAX_REPLY_BYTES,
    DEFAULT_NOTIFY_TIMEOUT_S,
    Backoff,
    Delivery,
    Hooks,
    IdFactory,
    LocalProtocolError,
    TransportError,
)
from okq_proto.policy import DEFAULT_RETRIES

from ._async.connection import AsyncConnection
from ._async.consume import AsyncDeliveryStream as DeliveryStream
from ._async.streams import AsyncBackend, AsyncStream, StopEvent
from ._async.workers import AsyncClient, Handler, TaskStatus
from ._backends import ByteStream
from ._exceptions import ConnectionBusyError, to_okq_error
from ._socket import readable_now
from ._trio_backend import unwrap_single_group

__all__ = [
    "AnyioStream",
    "AsyncConnection",
    "Client",
    "ConnectionBusyError",
    "Delivery",
    "DeliveryStream",
    "Handler",
    "connection_over",
    "current_backend",
    "open_client",
]

#: Opens an ``anyio.abc.ByteStream`` to ``(host, port)``; replaces TCP
#: (``anyio.connect_tcp``, a TLS or proxy stream of your own).
StreamFactory = Callable[[tuple[str, int]], Awaitable[anyio.abc.ByteStream]]


def current_backend() -> AsyncBackend:
    """The driver's backend for the async library running the caller: the trio backend
    under trio, the asyncio backend under asyncio (``anyio.run(..., backend=...)`` either).

    Raises:
        LocalProtocolError: under another async library.
        sniffio.AsyncLibraryNotFoundError: outside any async library.
    """
    library = sniffio.current_async_library()
    if library == "trio":
        from ._trio_backend import trio_backend

        return trio_backend()
    if library == "asyncio":
        from ._asyncio_backend import ASYNCIO

        return ASYNCIO
    raise LocalProtocolError(f"okq_transports.anyio runs under asyncio or trio, not {library}")


class AnyioStream(ByteStream):
    """Any ``anyio.abc.ByteStream`` (``anyio.connect_tcp``'s, a TLS stream...) as an
    `AsyncStream`; its failures leave as okq errors."""

    __slots__ = ("_stream", "now")

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream
        self.now = anyio.current_time

    async def receive_some(self, max_bytes: int, timeout_s: float | None) -> bytes:
        try:
            if timeout_s is None:
                return bytes(await self._stream.receive(max_bytes))
            with anyio.fail_after(timeout_s):
                return bytes(await self._stream.receive(max_bytes))
        except anyio.EndOfStream:
            return b""
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            # builtins.TimeoutError (fail_after's) is an OSError: to_okq_error says timed out
            raise to_okq_error(exc, "receive") from exc
        except anyio.BusyResourceError as exc:
            raise TransportError(f"stream used by two tasks at once: {exc}") from exc

    async def send_all(self, data: bytes) -> None:
        try:
            await self._stream.send(data)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise to_okq_error(exc, "send") from exc
        except anyio.BusyResourceError as exc:
            raise TransportError(f"stream used by two tasks at once: {exc}") from exc

    async def aclose(self) -> None:
        await anyio.aclose_forcefully(self._stream)

    def has_unread(self) -> bool:
        # a socket stream's (under a TLS stream too: extra attributes pass through)
        sock = self._stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
        return sock is not None and readable_now(sock.fileno())


class _Registered:
    """The driver's `TaskStatus`: notes that every consumer registered, from whichever task
    the driver calls it."""

    __slots__ = ("event", "started_")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.started_ = False

    def started(self) -> None:
        self.started_ = True
        self.event.set()


class Client(AsyncClient):
    """An anyio okq client, on the trio or the asyncio backend of the shared driver; make it
    with `open_client`.

    Methods (async, same names and semantics as ``okq_transports.trio.Client``): `push`,
    `push_event`, `push_many`, `execute`, `peek_next`, `peek_last`, `status`, `info`,
    `flush`, `ping`, `consume`; plus `deliveries` (pull consumer) and `connection` (borrow a
    pooled connection).  Each call is bounded by the caller's anyio cancel scopes; a request
    cancelled after it was written closes its connection, which is never reused.

    `consume` reports to ``TaskGroup.start`` once every consumer registered
    (``await tg.start(functools.partial(client.consume, handler, ["q"], stop=stop))``); its
    `stop` is an ``anyio.Event`` (or the running library's own event).  Each ``async def``
    handler call is cancelled at its event's claim expiry (``delivery.deadline``, on
    ``anyio.current_time()``'s clock).
    """

    async def consume(
        self,
        handler: Handler,
        queues: Sequence[str],
        *,
        expire_seconds: int = DEFAULT_EXPIRE_S,
        concurrency: int = 1,
        stop: StopEvent | None = None,
        backoff: Callable[[], Backoff] = Backoff,
        task_status: TaskStatus | None = None,
    ) -> None:
        """`okq_transports.trio.Client.consume`, with anyio's ``TaskGroup.start``: when
        `task_status` is given, the driver runs in a child task and ``started()`` is called
        from this one once every consumer registered (anyio's asyncio backend only accepts
        it from the task it started)."""
        run = functools.partial(
            super().consume,
            handler,
            queues,
            expire_seconds=expire_seconds,
            concurrency=concurrency,
            stop=stop,
            backoff=backoff,
        )
        if task_status is None or task_status is anyio.TASK_STATUS_IGNORED:
            await run()
            return
        registered = _Registered()

        async def consuming() -> None:
            try:
                await run(task_status=registered)
            finally:
                registered.event.set()  # ended before registering: wake the waiter below

        with unwrap_single_group():
            async with anyio.create_task_group() as group:
                group.start_soon(consuming)
                await registered.event.wait()
                if registered.started_:
                    task_status.started()


def connection_over(
    stream: anyio.abc.ByteStream, *, max_reply_bytes: int | None = DEFAULT_MAX_REPLY_BYTES
) -> AsyncConnection:
    """An okq connection over any ``anyio.abc.ByteStream``, without a pool: one task at a
    time (a second one gets `ConnectionBusyError`); a request cancelled half way closes it.
    `max_reply_bytes` is `open_client`'s."""
    return AsyncConnection(AnyioStream(stream), max_reply_bytes=max_reply_bytes)


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
    It runs on the driver's trio backend under trio, its asyncio backend under asyncio
    (`current_backend`).

    Args:
        address: ``"host:port"``, ``okq://host:port``, a comma-separated list, or a list
            (failover order).
        pool_size: most pooled connections open at once.
        notify_timeout_s: the ``QNOTIFY`` wait of consumers, in whole seconds.
        pool_timeout_s: how long a request waits for a free pooled connection (None, the
            default: until the caller's cancel scope ends it).
        retries: how many times a retry-safe request (push with the same id, peeks, status,
            info, flush, ping) is sent again on a new connection after a connection failure
            (`okq_proto.policy.may_retry`; the same on every door).
        id_factory: makes event ids for `Client.push` (uuid4 text by default).
        hooks: metrics hooks (`okq_proto.Hooks`).
        stream_factory: opens an ``anyio.abc.ByteStream`` per connection instead of TCP.
        max_reply_bytes: the most bytes one reply may take while incomplete (64 MiB by
            default; None: no cap).  A reply (or announced bulk string) beyond it raises
            `RemoteProtocolError` and its connection is closed, never reused.  Time is the
            caller's to bound (``anyio.fail_after``).
        ssl: connect in TLS with this `ssl.SSLContext` (``ssl.create_default_context()``,
            or one with your CA: ``create_default_context(cafile=...)``); each server's
            certificate is checked against its host name.  None (default): plain TCP.

    Raises:
        LocalProtocolError: for a bad address or argument, or under an async library other
            than asyncio and trio.
    """
    connect: Callable[[tuple[str, int]], Awaitable[AsyncStream]] | None = None
    if stream_factory is not None and ssl is not None:
        raise LocalProtocolError("open_client takes ssl= or stream_factory=, not both")
    if stream_factory is not None:
        factory = stream_factory

        async def connect(address: tuple[str, int]) -> AsyncStream:
            return AnyioStream(await factory(address))

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
        backend=current_backend(),
    )
    try:
        yield client
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose()
