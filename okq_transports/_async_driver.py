"""The one async driver behind the asyncio and trio clients: connection, pool, client methods.

Owns: moving bytes between a `ClientConnection` and an `AsyncStream` (pipelining included),
poisoning a connection whose request was interrupted, the busy check (two tasks on one
connection), a bounded connection pool with address failover, and the client methods (push,
peeks, status...) with okq_proto's retry policy.  Written once, against `_backends.Backend`;
`asyncio.py` and `trio.py` only pick a backend and add their own conventions.
Must not know: asyncio or trio (that is `_backends`), okq's reply shapes (that is okq_proto).
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, TypeVar

from okq_proto import (
    CONNECTION_FAILURES,
    DEFAULT_MAX_REPLY_BYTES,
    NEED_DATA,
    Backoff,
    ClientConnection,
    Command,
    CommandReplied,
    ConnectError,
    ConnectionClosed,
    ConnectionState,
    DecoderBackend,
    Event,
    Hooks,
    IdFactory,
    LocalProtocolError,
    OkqError,
    PushFlag,
    PushOutcome,
    QueueStatus,
    TransportError,
    check_client_options,
    new_event_id,
    parse_addresses,
    read_time_left,
    retry_safe,
)

from . import _plans as plans
from ._backends import READ_SIZE, AsyncStream, Backend, Waiter
from ._observe import active_hooks, retrying
from ._plans import Contents, Plan

__all__ = [
    "AsyncClientCore",
    "AsyncConnection",
    "AsyncPool",
    "ConnectionBusyError",
    "close_quietly",
]

T = TypeVar("T")


OPEN: Final = ConnectionState.OPEN


class ConnectionBusyError(LocalProtocolError):
    """Two tasks used one connection at the same time (trio's ``BusyResourceError`` idea).

    Nothing was sent for the second task; the first one carries on undisturbed.
    """


class AsyncConnection:
    """One okq connection driven over an `AsyncStream`; requests may be pipelined.

    A request interrupted after its bytes were written and before its reply was read
    (cancellation, timeout, error) **poisons** the connection: it is closed at once and every
    later call raises `ConnectionClosed`, so no later caller can read another caller's reply
    (the bug class of CVE-2023-28858).  Two tasks calling at once get `ConnectionBusyError`.

    Args:
        stream: the byte stream (closed by `aclose`).
        read_timeout_s: how long a whole reply may take, however its bytes trickle in: from
            the request's write (or the previous pipelined reply) to the reply's last byte,
            plus the waits of blocking commands in flight (`okq_proto.read_time_left`); None
            for no deadline of our own (trio: cancel scopes rule).
        address: where the stream goes, for messages.
        decoder: ``"auto"`` (hiredis when installed), ``"python"`` or ``"hiredis"``.
        max_reply_bytes: the most bytes one reply may buffer while incomplete (None: no
            cap); beyond it the request raises `RemoteProtocolError` and the connection is
            closed (`ClientConnection`'s ``max_reply_bytes``).
        clock: the monotonic clock the read timeout is measured with (the pool passes its
            backend's; default ``time.monotonic``).
    """

    __slots__ = (
        "_busy",
        "_clock",
        "_closed",
        "_conn",
        "_source",
        "_stream",
        "address",
        "read_timeout_s",
    )

    def __init__(
        self,
        stream: AsyncStream,
        *,
        read_timeout_s: float | None = None,
        address: tuple[str, int] | None = None,
        decoder: DecoderBackend = "auto",
        max_reply_bytes: int | None = DEFAULT_MAX_REPLY_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        # hiredis when installed (its one-reply-per-feed path beats the pure decoder), as for
        # the sync client; "python" forces the pure decoder.
        self._conn = ClientConnection(backend=decoder, max_reply_bytes=max_reply_bytes)
        self._busy = False
        self._closed = False
        self._clock = clock
        self.read_timeout_s = read_timeout_s
        self.address = address
        self._source = "the server" if address is None else f"{address[0]}:{address[1]}"

    @property
    def usable(self) -> bool:
        """False once poisoned, broken or closed, or when the server sent something since
        the last reply (a reply nobody asked for, or its end of file): such a connection is
        never reused."""
        return (
            not (self._closed or self._busy)
            and self._conn.state is OPEN
            and not self._stream.has_unread()
        )

    async def request(
        self, command: Command[Any], timeout_s: float | None = None
    ) -> CommandReplied:
        """Send one command and return its reply (an error reply is in ``.error``).

        Args:
            command: what to send.
            timeout_s: how long the whole reply may take; default: ``read_timeout_s`` plus
                the command's own blocking wait.

        Raises:
            ConnectionBusyError: another task is using this connection.
            ConnectionClosed, TimeoutError: the connection failed (it is now closed).
            RemoteProtocolError: the server broke the protocol, or a reply went past
                ``max_reply_bytes`` (the connection is now closed).
        """
        return (await self.request_many((command,), timeout_s))[0]

    async def request_many(
        self, commands: Sequence[Command[Any]], timeout_s: float | None = None
    ) -> list[CommandReplied]:
        """Send the commands in one write and return their replies in order (pipelining).

        Each reply must be complete within its budget (`timeout_s`, default ``read_timeout_s``
        plus the blocking waits of the batch), counted from the write for the first reply and
        from the previous reply for each later one; every read waits what is left of it.
        """
        if self._busy or self._closed:
            raise self._unusable()
        self._busy = True
        conn = self._conn
        stream = self._stream
        try:
            count = len(commands)
            if count == 1:
                conn.send(commands[0])
            else:
                conn.send_many(commands)
            budget_s = timeout_s
            blocking_s = 0.0
            if budget_s is None and self.read_timeout_s is not None:
                budget_s = self.read_timeout_s
                for command in commands:  # a QNOTIFY may keep the server silent that long
                    blocking_s += command.blocking_s
            await stream.send_all(conn.data_to_send())
            replies: list[CommandReplied] = []
            started: float | None = None  # when the budget of the awaited reply began
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    wait_s: float | None = None
                    if budget_s is not None:
                        if started is None:  # a new reply: its first read waits it all
                            started = self._clock()
                            wait_s = budget_s + blocking_s
                        else:  # the same reply: wait only what is left of its budget
                            wait_s = read_time_left(
                                started, budget_s, self._clock(), blocking_s, self._source
                            )
                    data = await stream.receive_some(READ_SIZE, wait_s)
                    if data:
                        conn.receive_data(data)
                    else:
                        conn.receive_eof()
                    continue
                if type(event) is not CommandReplied:
                    # CLOSED cannot come with replies owed (the machine raises); be safe
                    raise ConnectionClosed("the server closed the connection")
                replies.append(event)
                if len(replies) == count:
                    self._busy = False
                    if conn.has_unsolicited():  # a reply nobody asked for: never reuse
                        self._closed = True
                        await close_quietly(stream)
                    return replies
                started = None
        except BaseException:
            # Interrupted mid-request (cancelled, timed out, broken): the stream may still
            # carry our reply, so nobody may use it again.
            self._busy = False
            self._closed = True
            await close_quietly(stream)
            raise

    def _unusable(self) -> OkqError:
        if self._busy:
            return ConnectionBusyError(
                "another task is using this okq connection: each task needs its own "
                "(take one from the client's pool)"
            )
        return ConnectionClosed(
            "this okq connection is closed (a request on it was interrupted, or it failed)"
        )

    async def aclose(self) -> None:
        """Close the connection (idempotent)."""
        self._closed = True
        await close_quietly(self._stream)


async def close_quietly(stream: AsyncStream) -> None:
    """Close a stream that may already be failing; errors are dropped (nothing to report)."""
    with contextlib.suppress(Exception):
        await stream.aclose()


class AsyncPool:
    """A bounded pool of `AsyncConnection`s, with failover along the server addresses.

    At most `size` connections exist at once; a task wanting more waits.  A connection that
    is not `usable` when given back is dropped, never handed out again.
    """

    def __init__(
        self,
        backend: Backend,
        addresses: Sequence[tuple[str, int]],
        *,
        size: int,
        connect_timeout_s: float | None,
        read_timeout_s: float | None,
        connect: Callable[[tuple[str, int]], Awaitable[AsyncStream]] | None = None,
        max_reply_bytes: int | None = DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        if size < 1:
            raise LocalProtocolError(f"pool size must be at least 1, not {size}")
        self._backend = backend
        self._addresses = list(addresses)
        self._size = size
        self._out = 0  # connections handed out (bounded by size)
        self._waiters: deque[Waiter] = deque()
        self._idle: list[AsyncConnection] = []
        self._closed = False
        self._current = 0
        self._connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_reply_bytes = max_reply_bytes
        self._connect = connect

    async def open_stream(self) -> tuple[AsyncStream, tuple[str, int]]:
        """A new stream outside the pool's count (consumers own theirs), trying each address
        in turn from the last one that worked.  Returns the stream and its address.

        Raises:
            ConnectError: no address accepted a connection (the last failure is chained).
        """
        if self._closed:
            raise ConnectionClosed("the client is closed")
        failure: OkqError | None = None
        n = len(self._addresses)
        for i in range(n):
            index = (self._current + i) % n
            address = self._addresses[index]
            try:
                if self._connect is not None:
                    stream = await self._connect(address)
                else:
                    stream = await self._backend.connect(*address, self._connect_timeout_s)
            except TransportError as exc:
                failure = exc
                continue
            self._current = index
            return stream, address
        raise ConnectError(f"no okq server reachable at {self._addresses}: {failure}") from failure

    async def open_connection(self) -> AsyncConnection:
        """A new `AsyncConnection` outside the pool's count (see `open_stream`)."""
        stream, address = await self.open_stream()
        return AsyncConnection(
            stream,
            read_timeout_s=self.read_timeout_s,
            address=address,
            max_reply_bytes=self.max_reply_bytes,
            clock=self._backend.now,
        )

    @property
    def open_count(self) -> int:
        """Connections open: handed out plus idle."""
        return self._out + len(self._idle)

    @property
    def idle(self) -> tuple[AsyncConnection, ...]:
        """The idle connections."""
        return tuple(self._idle)

    def try_acquire(self) -> AsyncConnection | None:
        """An idle usable connection at once, or None (then `acquire`): the hot path, with
        no coroutine at all."""
        if self._out < self._size and not self._waiters:
            idle = self._idle
            if idle and idle[-1].usable:
                self._out += 1
                return idle.pop()
        return None  # `acquire` closes an idle connection that is not usable

    def release_nowait(self, conn: AsyncConnection) -> bool:
        """Give back a connection whose last request just completed (so it is usable);
        False (nothing done) when the pool is closed: then call `release`."""
        if self._closed:
            return False
        if self._waiters:
            self._waiters.popleft().set()
        else:
            self._out -= 1
        self._idle.append(conn)
        return True

    async def acquire(self) -> AsyncConnection:
        """Take a connection (an idle one, else a new one); waits while `size` are out.

        The fast path does not yield: the request that follows is the checkpoint."""
        if self._out < self._size and not self._waiters:
            self._out += 1
        else:
            await self._wait_for_slot()
        try:
            idle = self._idle
            while idle:  # bounded: each pass takes one idle connection away
                conn = idle.pop()
                if conn.usable:
                    return conn
                await conn.aclose()
            return await self.open_connection()
        except BaseException:
            self._give_back_slot()
            raise

    async def _wait_for_slot(self) -> None:
        waiter = self._backend.event()
        self._waiters.append(waiter)
        try:
            await waiter.wait()  # a release handed its slot over
        except BaseException:
            if waiter.is_set():
                self._give_back_slot()  # handed over just as we were cancelled
            else:
                self._waiters.remove(waiter)
            raise

    def _give_back_slot(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()  # the slot passes to the oldest waiter
        else:
            self._out -= 1

    async def release(self, conn: AsyncConnection) -> None:
        """Give a connection back: kept if usable and the pool is open, else closed."""
        self._give_back_slot()
        if conn.usable and not self._closed:
            self._idle.append(conn)
        else:
            await conn.aclose()

    async def aclose(self) -> None:
        """Close idle connections; connections still out are closed when given back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.aclose()


class AsyncClientCore:
    """The client methods, written once for asyncio and trio (same names and semantics as
    ``okq_transports.sync.Client``).  See the front doors for constructor arguments."""

    def __init__(
        self,
        backend: Backend,
        address: str | tuple[str, int] | Sequence[str | tuple[str, int]],
        *,
        pool_size: int,
        connect_timeout_s: float | None,
        read_timeout_s: float | None,
        notify_timeout_s: int,
        id_factory: IdFactory | None,
        hooks: Hooks | None,
        connect: Callable[[tuple[str, int]], Awaitable[AsyncStream]] | None = None,
        max_reply_bytes: int | None = DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        check_client_options(
            pool_size=pool_size,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            notify_timeout_s=notify_timeout_s,
            id_factory=id_factory,
            hooks=hooks,
            max_reply_bytes=max_reply_bytes,
        )
        self._backend = backend
        self.addresses = parse_addresses(address)
        self._pool = AsyncPool(
            backend,
            self.addresses,
            size=pool_size,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            connect=connect,
            max_reply_bytes=max_reply_bytes,
        )
        self.notify_timeout_s = notify_timeout_s
        #: The most bytes one reply may take while incomplete (None: no cap).
        self.max_reply_bytes = max_reply_bytes
        self._id_factory = id_factory or new_event_id
        self.hooks = hooks or Hooks()
        # None when no hook is overridden: the hot paths then skip calling no-ops.
        self.active_hooks = active_hooks(self.hooks)

    @property
    def backend(self) -> Backend:
        """The backend in use."""
        return self._backend

    @property
    def open_connections(self) -> int:
        """Pooled connections open now (idle or in use)."""
        return self._pool.open_count

    @property
    def idle_connections(self) -> int:
        """Pooled connections open and idle now."""
        return len(self._pool.idle)

    @property
    def pool(self) -> AsyncPool:
        """The connection pool."""
        return self._pool

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        """Borrow a pooled `AsyncConnection` for raw or pipelined requests
        (``await conn.request_many([...])``); it goes back to the pool after the block
        (closed instead if a request on it was interrupted)."""
        conn = await self._pool.acquire()
        try:
            yield conn
        finally:
            await self._pool.release(conn)

    async def _run(self, commands: Sequence[Command[Any]]) -> tuple[list[CommandReplied], bool]:
        """Run commands pipelined on one pooled connection; retry once on a fresh connection
        when the first one failed and every command is retry-safe.  Returns (replies, retried).
        """
        pool = self._pool
        conn = pool.try_acquire() or await pool.acquire()
        try:
            replies = await conn.request_many(commands)
        except CONNECTION_FAILURES as exc:
            await pool.release(conn)
            if not all(map(retry_safe, commands)):
                raise
            retrying(self.active_hooks, commands, conn.address, exc, 1)
        except BaseException:
            await pool.release(conn)
            raise
        else:
            if not pool.release_nowait(conn):
                await pool.release(conn)
            return replies, False
        conn = await pool.acquire()
        try:
            return await conn.request_many(commands), True
        finally:
            await pool.release(conn)

    async def _execute(self, plan: Plan[T]) -> T:
        if not plan.commands:
            return plan.finish([], False)
        replies, retried = await self._run(plan.commands)
        return plan.finish(replies, retried)

    async def push(self, queue: str, contents: Contents, flags: PushFlag = PushFlag.NORMAL) -> str:
        """Push an event with a fresh id (uuid4 by default) and return the id.

        Raises:
            DuplicateEventError: the id is already in the queue (only with a custom id factory).
            TooBusyError: a NO_BLOCK push found every server worker busy.
            TransportError: the connection failed (after one safe retry).
        """
        event_id, command = plans.push(queue, contents, flags, self._id_factory)
        replies, retried = await self._run((command,))
        plans.settle_push(queue, event_id, replies[0], retried, self.active_hooks)
        return event_id

    async def push_event(self, event: Event, flags: PushFlag = PushFlag.NORMAL) -> None:
        """Push `event` with its own id (okq-go's ``PushEvent``).  Raises as `push` does.

        A duplicate reply to our own retry means the first attempt landed: that is success.
        """
        await self._execute(plans.push_event(event, flags, self.active_hooks))

    async def push_many(
        self, queue: str, contents: Iterable[Contents], flags: PushFlag = PushFlag.NORMAL
    ) -> list[PushOutcome]:
        """Push a batch in one write on one connection (`plans.BATCH` pushes per write); one
        `PushOutcome` per item, in order.

        Raises:
            TransportError: the connection failed twice (a write is retried once whole).
        """
        outcomes: list[PushOutcome] = []
        for plan in plans.push_many(queue, contents, flags, self._id_factory, self.active_hooks):
            batch = await self._execute(plan)
            outcomes += batch
        return outcomes

    async def execute(self, command: Command[T]) -> T:
        """Send any okq command from `okq_proto` on a pooled connection; return its result
        (the sync client's escape hatch).  Retry-safe commands are retried like the named
        methods; ``QRPOP`` and ``QACK`` never.

        Raises:
            LocalProtocolError: for ``QREGISTER`` / ``QNOTIFY``: use `consume` for those.
            ReplyError: the server replied with an error.
            TransportError: the connection failed.
        """
        return await self._execute(plans.execute(command))

    async def peek_next(self, queue: str) -> Event | None:
        """The event the next pop would return (``QRPEEK``), or None."""
        return await self._execute(plans.peek_next(queue))

    async def peek_last(self, queue: str) -> Event | None:
        """The event consumed last (``QLPEEK``), or None."""
        return await self._execute(plans.peek_last(queue))

    async def status(self, *queues: str) -> list[QueueStatus]:
        """Counters of these queues (every known queue when none are named)."""
        return await self._execute(plans.status(queues))

    async def info(self, *queues: str) -> list[str]:
        """One human-readable line per queue (``QINFO``)."""
        return await self._execute(plans.info(queues))

    async def flush(self, queue: str) -> None:
        """Delete every event of the queue, claimed ones included."""
        await self._execute(plans.flush(queue))

    async def ping(self) -> None:
        """Check that the server answers."""
        await self._execute(plans.ping())

    async def aclose(self) -> None:
        """Close the pool's connections (consumers close their own when they end)."""
        await self._pool.aclose()

    def new_backoff(self) -> Backoff:
        """The reconnect backoff consumers use (capped exponential, full jitter)."""
        return Backoff()
