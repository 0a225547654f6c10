"""The client methods, written once: push, peeks, status... over a pool, with retries.

Owns: every request method of every door (`push`, `push_event`, `push_many`, `execute`,
`peek_next`, `peek_last`, `status`, `info`, `flush`, `ping`), running a method's `Plan`
(``okq_transports._plans``: its commands and how their replies become the result) on a pooled
connection, sending it again while `okq_proto.policy.may_retry` says so (the one meaning of
``retries=``), borrowing a connection (`connection`), and closing.
Must not know: how connections are made or pooled (the pool's), consumers.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from ssl import SSLContext
from typing import Any, ClassVar, Protocol, TypeVar

from okq_proto import (
    DEFAULT_MAX_REPLY_BYTES,
    Backoff,
    Command,
    CommandReplied,
    Event,
    Hooks,
    IdFactory,
    LocalProtocolError,
    PushFlag,
    PushOutcome,
    QueueStatus,
    new_event_id,
)
from okq_proto.policy import (
    DEFAULT_NOTIFY_TIMEOUT_S,
    DEFAULT_POOL_TIMEOUT_S,
    DEFAULT_RETRIES,
    Address,
    check_client_options,
    may_retry,
    parse_addresses,
)
from okq_transports import _plans as plans
from okq_transports._observe import active_hooks, commands_done, retried, retrying
from okq_transports._plans import Contents, Plan

from .connection import AsyncConnection
from .pool import AsyncPool
from .streams import AsyncBackend, AsyncStream

__all__ = ["AsyncClientCore", "AsyncConnectionSource"]

T = TypeVar("T")
C = TypeVar("C", bound="AsyncClientCore")


class AsyncConnectionSource(Protocol):
    """What the client needs of a pool: `AsyncPool` (ours, with failover), or a pool that
    borrows the connections of a redis-py pool."""

    read_timeout_s: float | None
    max_reply_bytes: int | None

    @property
    def addresses(self) -> tuple[Address, ...]: ...

    @property
    def preferred_address(self) -> Address: ...

    @property
    def open_count(self) -> int: ...

    @property
    def idle_count(self) -> int: ...

    def try_acquire(self) -> AsyncConnection | None: ...

    async def acquire(self) -> AsyncConnection: ...

    def release_nowait(self, conn: AsyncConnection) -> bool: ...

    async def release(self, conn: AsyncConnection) -> None: ...

    async def open_stream(self) -> tuple[AsyncStream, Address]: ...

    async def aclose(self) -> None: ...


class AsyncClientCore:
    """The request methods over a pool.  The doors' classes add their defaults and
    conventions (their docstrings describe every option).

    Args:
        address: ``"host:port"``, a comma-separated list of them, or a list (failover order).
        pool_size: the most pooled connections handed out at once.
        connect_timeout_s: how long connecting may take (None: the backend's own limit).
        read_timeout_s: how long a whole reply may take (None: no deadline of our own).
        pool_timeout_s: how long a request waits for a free pooled connection.
        retries: how many times a retry-safe request is sent again on a new connection after
            a connection failure (`okq_proto.policy.may_retry`).
        notify_timeout_s: the ``QNOTIFY`` wait of consumers.
        id_factory: makes event ids for `push` (uuid4 text by default).
        hooks: metrics hooks.
        connect: opens a stream to an address instead of the backend.
        max_reply_bytes: the most bytes one reply may take while incomplete.
        backend: the I/O world the pool and the consumers run on (default: `BACKEND`).
        pool: connections from elsewhere (a redis-py pool's) instead of a pool of our own;
            then `address` only names the server in messages.
        ssl: connect in TLS with this `ssl.SSLContext` (each server's certificate checked
            against its host name as the context says); None: plain TCP.

    Raises:
        LocalProtocolError: a bad address or option (`okq_proto.policy.check_client_options`).
    """

    #: The backend of the door (each door's class sets it; ``backend=`` overrides it).
    BACKEND: ClassVar[AsyncBackend]

    def __init__(
        self,
        address: str | Address | Sequence[str | Address] = "127.0.0.1:4777",
        *,
        pool_size: int = 10,
        connect_timeout_s: float | None = 5.0,
        read_timeout_s: float | None = 10.0,
        notify_timeout_s: int = DEFAULT_NOTIFY_TIMEOUT_S,
        pool_timeout_s: float | None = DEFAULT_POOL_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        id_factory: IdFactory | None = None,
        hooks: Hooks | None = None,
        max_reply_bytes: int | None = DEFAULT_MAX_REPLY_BYTES,
        backend: AsyncBackend | None = None,
        connect: Callable[[Address], Awaitable[AsyncStream]] | None = None,
        pool: AsyncConnectionSource | None = None,
        ssl: SSLContext | None = None,
    ) -> None:
        if ssl is not None and not isinstance(ssl, SSLContext):
            raise LocalProtocolError(
                f"ssl= takes an ssl.SSLContext (ssl.create_default_context()), not {ssl!r}"
            )
        check_client_options(
            pool_size=pool_size,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            pool_timeout_s=pool_timeout_s,
            retries=retries,
            notify_timeout_s=notify_timeout_s,
            id_factory=id_factory,
            hooks=hooks,
            max_reply_bytes=max_reply_bytes,
        )
        self.backend = backend = backend if backend is not None else type(self).BACKEND
        self._pool: AsyncConnectionSource = pool or AsyncPool(
            backend,
            parse_addresses(address),
            size=pool_size,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            pool_timeout_s=pool_timeout_s,
            connect=connect,
            max_reply_bytes=max_reply_bytes,
            tls=ssl,
        )
        self.retries = retries
        self.notify_timeout_s = notify_timeout_s
        self._id_factory = id_factory or new_event_id
        self.hooks = hooks if hooks is not None else Hooks()
        # None when no hook is overridden: the hot paths then skip calling no-ops.
        self.active_hooks = active_hooks(self.hooks)

    @property
    def addresses(self) -> list[Address]:
        """The server addresses, in failover order."""
        return list(self._pool.addresses)

    @property
    def read_timeout_s(self) -> float | None:
        """How long a whole reply may take (None: no deadline of the client's own)."""
        return self._pool.read_timeout_s

    @property
    def max_reply_bytes(self) -> int | None:
        """The most bytes one reply may take while incomplete (None: no cap)."""
        return self._pool.max_reply_bytes

    @property
    def pool(self) -> AsyncConnectionSource:
        """The connection pool."""
        return self._pool

    @property
    def open_connections(self) -> int:
        """Pooled connections open now (idle or in use)."""
        return self._pool.open_count

    @property
    def idle_connections(self) -> int:
        """Pooled connections open and idle now."""
        return self._pool.idle_count

    def __repr__(self) -> str:
        """``<module.Client okq://host:port[,host:port...] [tls] pool OPEN/SIZE open>``, or
        ``... closed`` once closed: every failover address, and how many pooled connections
        are open (of the pool's size, when it has one of its own)."""
        cls = type(self)
        pool = self._pool
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in pool.addresses)
        tls = " tls" if getattr(pool, "tls", None) is not None else ""
        if getattr(pool, "closed", False):
            state = "closed"
        else:
            size = getattr(pool, "size", None)  # a borrowed pool has none of its own
            of = "" if size is None else f"/{size}"
            state = f"pool {pool.open_count}{of} open"
        return f"<{cls.__module__}.{cls.__qualname__} okq://{hosts}{tls} {state}>"

    async def __aenter__(self: C) -> C:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections; connections in use are closed when given back, and
        later requests raise `okq_proto.ClientClosed`.  Running consumers own their
        connections (stop them with their ``stop``).  Idempotent."""
        await self._pool.aclose()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        """Borrow a pooled connection for raw or pipelined requests
        (``conn.request_many([...])``); it goes back to the pool after the block (closed
        instead if a request on it was interrupted)."""
        conn = await self._pool.acquire()
        try:
            yield conn
        finally:
            await self._pool.release(conn)

    def new_backoff(self) -> Backoff:
        """The reconnect backoff consumers use (capped exponential, full jitter)."""
        return Backoff()

    async def _run(self, commands: Sequence[Command[Any]]) -> tuple[list[CommandReplied], bool]:
        """Run commands pipelined on one pooled connection; after a connection failure, run
        them again on a new connection while `may_retry` allows.  Returns the replies and
        whether they answer a retry."""
        pool = self._pool
        attempt = 0
        hidden: tuple[Address | None, BaseException] | None = None  # what a retry hides
        hooks = self.active_hooks
        while True:
            conn = pool.try_acquire() or await pool.acquire()
            started = self.backend.now() if hooks is not None else 0.0
            try:
                replies = await conn.request_many(commands)
            except BaseException as exc:
                if hooks is not None:
                    commands_done(hooks, commands, None, self.backend.now() - started, exc)
                await pool.release(conn)
                if not may_retry(commands, exc, attempt, self.retries):
                    raise  # raised, so not logged (a failure before it was, at DEBUG)
                attempt += 1
                hidden = conn.address, exc
                retrying(self.active_hooks, commands, conn.address, exc, attempt)
                continue
            if hooks is not None:
                commands_done(hooks, commands, replies, self.backend.now() - started, None)
            if not pool.release_nowait(conn):
                await pool.release(conn)
            if hidden is not None:  # the caller never sees that failure: log it
                retried(commands, *hidden, attempt)
            return replies, attempt > 0

    async def _execute(self, plan: Plan[T]) -> T:
        if not plan.commands:
            return plan.finish([], False)
        replies, retried = await self._run(plan.commands)
        return plan.finish(replies, retried)

    async def push(self, queue: str, contents: Contents, flags: PushFlag = PushFlag.NORMAL) -> str:
        """Push a new event with a fresh id (okq-go's ``Push``).

        Args:
            queue: the queue's name.
            contents: the payload; `str` is sent as UTF-8.
            flags: `PushFlag.HIGH_PRIORITY` (``QRPUSH``: consumed next) and/or
                `PushFlag.NO_BLOCK` (the server replies before storing; duplicates are not
                reported).

        Returns:
            The new event's id (from `id_factory`).

        Raises:
            LocalProtocolError: bad arguments (nothing was sent).
            DuplicateEventError: the id is already in the queue (only with a custom
                `id_factory`).
            TooBusyError: ``NO_BLOCK`` and the server's workers are all busy.
            TransportError: the server could not be reached, even after `retries`.
        """
        event_id, command = plans.push(queue, contents, flags, self._id_factory)
        replies, retried = await self._run((command,))
        hooks = self.active_hooks
        if retried or hooks is not None or replies[0].error is not None:  # not the hot path
            plans.settle_push(queue, event_id, replies[0], retried, hooks)
        return event_id

    async def push_event(self, event: Event, flags: PushFlag = PushFlag.NORMAL) -> None:
        """Push `event` with its own id (okq-go's ``PushEvent``).  A duplicate reply to our
        own retry means the first attempt landed: that is success.

        Raises:
            DuplicateEventError: the queue already holds an event with this id (`is_dup`).
            LocalProtocolError, TooBusyError, TransportError: as for `push`.
        """
        await self._execute(plans.push_event(event, flags, self.active_hooks))

    async def push_many(
        self, queue: str, contents: Iterable[Contents], flags: PushFlag = PushFlag.NORMAL
    ) -> list[PushOutcome]:
        """Push one new event per item, pipelined: a batch (`plans.BATCH` pushes) leaves in
        one write.

        Never raises for one item: each `PushOutcome` says whether its event is stored
        (``ok``), carries the error otherwise (`is_dup`, `TooBusyError`...), and says whether
        it was sent again after a connection failure (``retried``; a duplicate reply to our
        own retry means the first attempt landed and counts as success).

        Raises:
            LocalProtocolError: a bad argument (nothing was sent).
            TransportError: the server could not be reached even after `retries`.
        """
        outcomes: list[PushOutcome] = []
        for plan in plans.push_many(queue, contents, flags, self._id_factory, self.active_hooks):
            batch = await self._execute(plan)
            outcomes += batch
        return outcomes

    async def execute(self, command: Command[T]) -> T:
        """Send any okq command from `okq_proto` on a pooled connection; return its result.

        The escape hatch for what the named methods do not cover, e.g. a one-off claim and
        acknowledgement (``execute(QRPop(to_wire("jobs"), 60))``, then
        ``execute(QAck(to_wire("jobs"), to_wire(event.id)))``).  Retry-safe commands are
        retried like the named methods; ``QRPOP`` and ``QACK`` never.

        Raises:
            LocalProtocolError: for ``QREGISTER`` / ``QNOTIFY``, which change or need a
                connection's consumer state: use `consume` for those.
            ReplyError: the server replied with an error.
            TransportError: the connection failed.
        """
        return await self._execute(plans.execute(command))

    async def peek_next(self, queue: str) -> Event | None:
        """The event a consumer would get next (``QRPEEK``), or None (okq-go's ``PeekNext``)."""
        return await self._execute(plans.peek_next(queue))

    async def peek_last(self, queue: str) -> Event | None:
        """The event consumed last (``QLPEEK``), or None (okq-go's ``PeekLast``)."""
        return await self._execute(plans.peek_last(queue))

    async def status(self, *queues: str) -> list[QueueStatus]:
        """Counters of these queues (unknown ones report zeros), or of every known queue when
        none is named (``QSTATUS``)."""
        return await self._execute(plans.status(queues))

    async def info(self, *queues: str) -> list[str]:
        """One human-readable line per queue (``QINFO``), selected like `status`."""
        return await self._execute(plans.info(queues))

    async def flush(self, queue: str) -> None:
        """Delete every event of `queue`, claimed ones included (``QFLUSH``)."""
        await self._execute(plans.flush(queue))

    async def ping(self) -> None:
        """Check the server answers (``PING``)."""
        await self._execute(plans.ping())
