"""Consuming, written once for asyncio and trio: a reconnecting delivery stream and workers.

Owns: driving okq_proto's `Consumer` machine over an `AsyncStream` (flush, read, feed, with
the read deadline the machine allows), reconnecting with capped backoff after a connection
failure (re-registering on a fresh machine), abandoning a ``QNOTIFY`` wait when asked to stop,
and the push-style `consume` built on the pull-style `DeliveryStream`: handlers (coroutine or
plain functions) run until their claim's deadline and are cancelled there.
Must not know: okq's consumer rules (that is `okq_proto._consumer`), asyncio or trio (that is
`_backends`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Final, Protocol, TypeVar

from okq_proto import (
    CONNECTION_FAILURES,
    DEFAULT_EXPIRE_S,
    DEFAULT_MAX_REPLY_BYTES,
    NEED_DATA,
    AckSettled,
    Backoff,
    ClientConnection,
    Consumer,
    ConsumerState,
    ConsumerStopped,
    Delivered,
    Delivery,
    LateAck,
    LocalProtocolError,
    RemoteProtocolError,
    ReplyError,
    TimeoutError,
    TransportError,
    check_consume_options,
    is_transient,
)

from ._async.client import AsyncClientCore
from ._async.streams import AsyncStream, close_quietly
from ._backends import STOPPED, Backend, StopEvent
from ._exceptions import ConnectionBusyError
from ._observe import active_hooks, call_hook, handler_failed, late_ack, lost, reconnecting

__all__ = [
    "FINAL_ACK_S",
    "STOPPING_STATES",
    "AsyncClient",
    "ConsumerLink",
    "DeliveryStream",
    "Handler",
    "StreamLink",
    "consume",
]

_C = TypeVar("_C", bound="AsyncClient")

#: A consumer handler: ``handler(delivery) -> bool``, plain or ``async``; true acks.
Handler = Callable[[Delivery], bool | Awaitable[bool]]

#: How long the final ack of a cancelled consumer may take (shielded from the cancellation).
FINAL_ACK_S: Final = 1.0

_WAITING: Final = ConsumerState.WAITING
_REGISTERING: Final = ConsumerState.REGISTERING
#: States in which a stop was already asked (`Consumer.stop` is then not called again).
STOPPING_STATES: Final = frozenset(
    {
        ConsumerState.STOP_POPPING,
        ConsumerState.FINISHING,
        ConsumerState.ACKING,
        ConsumerState.STOPPED,
    }
)


class ConsumerLink(Protocol):
    """How a `DeliveryStream` reaches the server: bytes over an `AsyncStream`
    (`StreamLink`), or replies parsed by redis-py (``okq_transports.redis``)."""

    address: tuple[str, int] | None
    #: The `ClientConnection` the consumer machine must wrap (None: a fresh default one).
    connection: ClientConnection | None
    #: Read deadline when nothing blocks (None: none of our own).
    read_timeout_s: float | None

    async def send(self, data: bytes) -> None:
        """Send the machine's outbound bytes."""
        ...

    async def receive(self, consumer: Consumer, timeout_s: float | None) -> None:
        """Read once and feed what arrived to `consumer` (``receive_eof`` at end of file)."""
        ...

    async def aclose(self) -> None:
        """Close (and never reuse) the connection."""
        ...


class StreamLink:
    """A `ConsumerLink` over an `AsyncStream` (asyncio and trio)."""

    __slots__ = ("_stream", "address", "connection", "read_timeout_s")

    def __init__(
        self,
        stream: AsyncStream,
        address: tuple[str, int] | None,
        read_timeout_s: float | None,
        max_reply_bytes: int | None = DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        self._stream = stream
        self.address = address
        # The consumer's machine runs on it: the client's cap on buffered reply bytes holds.
        self.connection: ClientConnection | None = stream.new_machine("auto", max_reply_bytes)
        self.read_timeout_s = read_timeout_s

    async def send(self, data: bytes) -> None:
        await self._stream.send_all(data)

    async def receive(self, consumer: Consumer, timeout_s: float | None) -> None:
        await self._stream.fill(consumer, timeout_s)

    async def aclose(self) -> None:
        await close_quietly(self._stream)


class DeliveryStream:
    """Deliveries from one or more queues on one dedicated connection, pulled one at a time.

    Use ``async with`` and ``async for``; report each delivery before taking the next with
    `ack` (or by leaving ``async with stream.handling(delivery):`` without an exception).  A
    delivery not acked when the next one is taken is left to expire (redelivered by the
    server).  Acks are pipelined: an ack leaves in the same write as the next pop.

    The stream reconnects by itself after a connection failure (capped exponential backoff
    with full jitter, failing over along the client's addresses) and registers again; what
    was claimed and not acked then is logged and comes back once its claim expires.  It ends
    (``StopAsyncIteration``) when `stop` is set or after `aclose`; a ``QNOTIFY`` wait is
    abandoned at once, a claimed delivery is always handed out and its final ack sent.

    Not safe for two tasks at once: each consuming task needs its own stream.
    """

    def __init__(
        self,
        core: AsyncClient,
        queues: Sequence[str],
        *,
        expire_seconds: int,
        stop: StopEvent | None = None,
        on_registered: Callable[[], None] | None = None,
        open_link: Callable[[], Awaitable[ConsumerLink]] | None = None,
        backoff: Callable[[], Backoff] | None = None,
    ) -> None:
        if isinstance(queues, str):
            raise LocalProtocolError("queues must be a list of names, not one name")
        self._core = core
        self._backend = core.backend
        self._queues = list(queues)
        self._expire_s = expire_seconds
        self._stop = stop
        self._on_registered = on_registered
        self._consumer: Consumer | None = None
        self._link: ConsumerLink | None = None
        self._open_link = open_link or self._open_stream_link
        self._address: tuple[str, int] | None = None
        self._in_hand: Delivery | None = None
        self._verdict = False
        self._reported = False
        self._closing = False
        self._busy = False
        self._registered = False  # the machine on the current link got past REGISTERING
        self._backoff: Backoff = (backoff or core.new_backoff)()
        self._hooks = active_hooks(core.hooks)
        # Validate the arguments now, not at the first pop.
        Consumer(self._queues, expire_s=expire_seconds, notify_timeout_s=core.notify_timeout_s)

    async def __aenter__(self) -> DeliveryStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> DeliveryStream:
        return self

    async def __anext__(self) -> Delivery:
        delivery = await self.next_delivery()
        if delivery is None:
            raise StopAsyncIteration
        return delivery

    def ack(self, delivery: Delivery) -> None:
        """Mark the delivery in hand as handled: its ``QACK`` leaves with the next pop (or when
        the stream closes).  At-most-once deliveries need no ack (this is then a no-op).

        Raises:
            LocalProtocolError: `delivery` is not the one in hand (each delivery must be
                reported before the next is taken).
        """
        if delivery is not self._in_hand:
            raise LocalProtocolError(
                f"cannot ack {delivery!r}: it is not the delivery in hand (ack each delivery "
                "before taking the next)"
            )
        self._verdict = True

    def fail(self, delivery: Delivery, error: BaseException | None = None) -> None:
        """Mark the delivery in hand as failed (no ack: redelivered once its claim expires)
        and report it to ``hooks.handler_failed`` now.  Not calling `ack` does the same,
        reported when the next delivery is taken."""
        self._fail(delivery, error, expired=False)

    def _fail(self, delivery: Delivery, error: BaseException | None, *, expired: bool) -> None:
        if delivery is self._in_hand and not self._reported:
            self._reported = True
            self._verdict = False
            handler_failed(self._hooks, delivery, error, expired=expired)

    @contextlib.asynccontextmanager
    async def handling(self, delivery: Delivery) -> AsyncIterator[Delivery]:
        """``async with stream.handling(d):`` acks `d` when the block exits without an
        exception; with one, the event is left to expire and be redelivered."""
        try:
            yield delivery
        except BaseException as exc:
            self.fail(delivery, exc)
            raise
        self.ack(delivery)

    async def next_delivery(self) -> Delivery | None:
        """The next delivery, or None once the stream is stopped (or closed).

        Raises:
            ReplyError: the server refused a consumer command (not retried: okq-go ends its
                consumer too).
            ConnectionBusyError: another task is inside this call on the same stream.
        """
        if self._busy:
            raise ConnectionBusyError(
                "another task is taking deliveries from this stream: each consuming task "
                "needs its own stream"
            )
        self._busy = True
        try:
            return await self._next_delivery()
        finally:
            self._busy = False

    async def _next_delivery(self) -> Delivery | None:
        while True:
            consumer = self._consumer
            if consumer is None:
                if self._stopping():
                    return None
                if not await self._connect():
                    return None
                continue
            if self._stopping() and consumer.state not in STOPPING_STATES:
                consumer.stop()
            in_hand = self._in_hand
            if in_hand is not None:
                if self._verdict and in_hand.needs_ack and self._backend.cancel_pending():
                    # Cancelled right after the delivery was acked (a handler that cancels
                    # its nursery and returns true): the ack still leaves, alone.
                    await self._send_final_ack()
                    return None
                self._in_hand = None
                if not self._verdict and not self._reported:
                    handler_failed(self._hooks, in_hand, None)
                consumer.handled(in_hand, self._verdict)
            try:
                event = await self._pump(consumer)
            except (*CONNECTION_FAILURES, ReplyError) as exc:
                if not is_transient(exc):  # the server refuses us: give up, as okq-go does
                    await self._drop()
                    raise
                await self._lost(consumer, exc)
                continue
            except BaseException:
                await self._drop()
                raise
            if isinstance(event, Delivered):
                delivery = event.delivery
                self._in_hand = delivery
                self._verdict = self._reported = False
                call_hook(self._hooks, "delivered", delivery)
                return delivery
            if isinstance(event, AckSettled):
                call_hook(self._hooks, "acked", event.delivery)
            elif isinstance(event, LateAck):
                late_ack(self._hooks, event.delivery)
            else:  # ConsumerStopped
                await self._drop()
                return None

    def _stopping(self) -> bool:
        return self._closing or (self._stop is not None and self._stop.is_set())

    async def _pump(self, consumer: Consumer) -> Delivered | AckSettled | LateAck | ConsumerStopped:
        """Move bytes until the machine has something for us (STYLE §7's loop)."""
        link = self._link
        assert link is not None
        backend = self._backend
        read_timeout_s = link.read_timeout_s
        while True:
            event = consumer.next_event(backend.now())
            out = consumer.data_to_send()  # flush after every call into the machine
            if out:
                await link.send(out)
            if event is not NEED_DATA:
                return event
            state = consumer.state
            if self._on_registered is not None and state is not _REGISTERING:
                self._on_registered()
                self._on_registered = None
            if not self._registered and state is not _REGISTERING:
                self._registered = True
                self._backoff.reset()  # registered: the next failure retries soon again
            timeout_s = consumer.reply_budget_s(read_timeout_s)
            stop = self._stop
            if state is _WAITING and stop is not None:
                # Nothing is popped while waiting: a stop may abandon the wait at once (the
                # connection is closed then, so its late reply reaches nobody).
                read = functools.partial(link.receive, consumer, timeout_s)
                if await backend.race_stop(read, stop) is STOPPED:
                    consumer.stop()  # STOPPED: the next next_event says ConsumerStopped
            else:
                await link.receive(consumer, timeout_s)

    async def _connect(self) -> bool:
        """Open a link and start a fresh machine on it; on failure sleep the backoff.
        Returns False when stopped while connecting or waiting."""
        stop = self._stop
        try:
            if stop is not None:
                # A connect may hang for minutes (SYNs dropped; trio has no connect timeout,
                # a redis-py pool's socket_connect_timeout may be long): a stop abandons it.
                # An opener cancelled midway leaves nothing behind: a byte stream is not
                # handed out yet, and redis-py's get_connection releases the connection it
                # was connecting on any BaseException.
                opened = await self._backend.race_stop(self._open_link, stop)
                if opened is STOPPED:
                    return False
                link = self._link = opened
            else:
                link = self._link = await self._open_link()
        except TransportError as exc:
            return await self._pause(exc)
        self._address = link.address
        self._registered = False
        self._consumer = Consumer(
            self._queues,
            expire_s=self._expire_s,
            notify_timeout_s=self._core.notify_timeout_s,
            connection=link.connection,
        )
        return True

    async def _open_stream_link(self) -> ConsumerLink:
        pool = self._core.pool
        stream, address = await pool.open_stream()
        return StreamLink(stream, address, pool.read_timeout_s, pool.max_reply_bytes)

    async def _pause(self, exc: BaseException) -> bool:
        delay = self._backoff.next_delay()
        address = self._address or self._core.addresses[0]
        reconnecting(self._hooks, address, exc, self._backoff.attempt, delay)
        if self._stop is None:
            await self._backend.sleep(delay)
            return True
        return await self._backend.race_stop(lambda: self._backend.sleep(delay), self._stop) is None

    async def _lost(self, consumer: Consumer, exc: BaseException) -> None:
        # The backoff was reset when the machine got past REGISTERING (`_pump`): asking the
        # machine now would be too late, it is in ERROR whatever state it failed in.
        lost(consumer.unacked, consumer.pop_in_flight, self._address, exc)
        await self._drop()
        await self._pause(exc)

    async def _drop(self) -> None:
        self._consumer = None
        self._in_hand = None
        link, self._link = self._link, None
        if link is not None:
            await link.aclose()

    async def _send_final_ack(self) -> None:
        """Stop at once, sending the ack of the delivery in hand (if `ack` was called) and
        waiting for its reply, shielded from cancellation for at most `FINAL_ACK_S`; then
        close.  For a task being cancelled: its handler succeeded, so the event must not
        come back.  Nothing else is popped.  Connection failures are logged, not raised (the
        event is then redelivered once its claim expires)."""
        self._closing = True
        consumer, delivery = self._consumer, self._in_hand
        try:
            if consumer is None or self._link is None or delivery is None or not self._verdict:
                return
            self._in_hand = None
            if consumer.state not in STOPPING_STATES:
                consumer.stop()  # HANDLING -> FINISHING: the verdict sends the final QACK only
            consumer.handled(delivery, True)
            if not await self._backend.shielded(
                functools.partial(self._finish, consumer), FINAL_ACK_S
            ):
                lost(consumer.unacked, None, self._address, TimeoutError("final ack timed out"))
        finally:
            await self._drop()

    async def _finish(self, consumer: Consumer) -> None:
        """Pump a stopping machine until it has stopped (bounded: the final ack, and a pop
        already in flight, are all that is left)."""
        try:
            for _ in range(4):
                event = await self._pump(consumer)
                if isinstance(event, AckSettled):
                    call_hook(self._hooks, "acked", event.delivery)
                elif isinstance(event, LateAck):
                    late_ack(self._hooks, event.delivery)
                elif isinstance(event, Delivered):  # claimed by a pop in flight: not handled
                    consumer.handled(event.delivery, False)
                else:
                    return
        except (*CONNECTION_FAILURES, ReplyError) as exc:
            lost(consumer.unacked, consumer.pop_in_flight, self._address, exc)

    async def aclose(self) -> None:
        """Stop: the delivery in hand is reported (acked if `ack` was called), the final ack
        is sent, then the connection is closed.  Idempotent."""
        self._closing = True
        try:
            if self._consumer is not None and self._link is not None:
                with contextlib.suppress(TransportError, RemoteProtocolError):
                    # Stopping: the final ack leaves; a delivery claimed by a pop already in
                    # flight is handed back unacked (bounded: one pop at most is in flight).
                    for _ in range(3):
                        if await self.next_delivery() is None:
                            break
        finally:
            await self._drop()


async def _call_handler(handler: Handler, delivery: Delivery, outcome: list[bool]) -> bool:
    result = handler(delivery)
    if inspect.isawaitable(result):
        result = await result
    ok = bool(result)
    outcome.append(ok)  # seen even if our caller is cancelled before it reads the result
    return ok


async def consume(
    core: AsyncClient,
    handler: Handler,
    queues: Sequence[str],
    *,
    expire_seconds: int,
    concurrency: int,
    stop: StopEvent | None,
    on_registered: Callable[[], None] | None = None,
    open_link: Callable[[], Awaitable[ConsumerLink]] | None = None,
    backoff: Callable[[], Backoff] | None = None,
) -> None:
    """Run `concurrency` consumer connections until `stop` is set (or cancellation).

    Each handler call runs until its delivery's claim deadline and is cancelled there (no
    ack; the server redelivers).  A handler that raises or returns false is reported through
    the log and ``hooks.handler_failed``; the consumer carries on.
    """
    queues = check_consume_options(
        handler, queues, expire_seconds=expire_seconds, concurrency=concurrency
    )
    backend = core.backend
    pending = [concurrency]

    def registered() -> None:
        pending[0] -= 1
        if pending[0] == 0 and on_registered is not None:
            on_registered()

    async def worker() -> None:
        async with DeliveryStream(
            core,
            queues,
            expire_seconds=expire_seconds,
            stop=stop,
            on_registered=registered,
            open_link=open_link,
            backoff=backoff,
        ) as stream:
            async for delivery in stream:
                error: BaseException | None = None
                outcome: list[bool] = []
                try:
                    if delivery.needs_ack:
                        finished, ok = await backend.run_until(
                            functools.partial(_call_handler, handler, delivery, outcome),
                            delivery.deadline,
                        )
                    else:
                        finished, ok = True, await _call_handler(handler, delivery, outcome)
                except Exception as exc:
                    finished, ok, error = True, False, exc
                except BaseException:
                    # Cancelled just as the handler returned true (asyncio): still ack it.
                    if outcome and outcome[0] and delivery.needs_ack:
                        stream.ack(delivery)
                        await stream._send_final_ack()
                    raise
                if finished and ok:
                    stream.ack(delivery)
                else:
                    stream._fail(delivery, error, expired=not finished)

    await backend.run_all([worker] * concurrency)


class AsyncClient(AsyncClientCore):
    """`AsyncClientCore` plus consuming: the base of the asyncio, trio and ``redis.asyncio``
    clients (each consumer opens a stream of its own from the client's pool)."""

    backend: Backend  # consumers need the whole backend, not only the pool's part

    async def consume(
        self,
        handler: Handler,
        queues: Sequence[str],
        *,
        expire_seconds: int = DEFAULT_EXPIRE_S,
        concurrency: int = 1,
        stop: StopEvent | None = None,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        """Consume from `queues` until `stop` is set, or until cancelled.

        Each delivery goes to ``handler(delivery)`` (``async def`` or plain; a plain function
        runs on the event loop, so keep it short).  True acks it; false or an exception
        leaves it to be redelivered (reported through logging and ``hooks.handler_failed``).
        The handler is cancelled when the event's claim expires (``delivery.deadline``, loop
        time), as okq-go cancels the handler's context.

        Stop: setting `stop` abandons ``QNOTIFY`` waits at once, lets running handlers finish
        and sends their acks, then returns.  Cancelling instead cancels handlers too (their
        events are redelivered); a handler that has already returned true keeps its ack,
        sent (and its reply read) shielded from the cancellation for at most `FINAL_ACK_S`.
        Connection failures reconnect with backoff (reset once a new connection registered).

        Args:
            handler: called with each `Delivery`.
            queues: the queue names.
            expire_seconds: claim length; -1 for at-most-once (never acked, never cancelled).
            concurrency: consumer connections (and handlers) running side by side.
            stop: an ``asyncio.Event`` (asyncio) or ``trio.Event`` (trio).
            backoff: makes the reconnect `Backoff` of each consumer.

        Raises:
            ReplyError: the server refused a consumer command.
        """
        await self._consume(handler, queues, expire_seconds, concurrency, stop, None, backoff)

    async def _consume(
        self,
        handler: Handler,
        queues: Sequence[str],
        expire_seconds: int,
        concurrency: int,
        stop: StopEvent | None,
        on_registered: Callable[[], None] | None,
        backoff: Callable[[], Backoff],
    ) -> None:
        await consume(
            self,
            handler,
            queues,
            expire_seconds=expire_seconds,
            concurrency=concurrency,
            stop=stop,
            on_registered=on_registered,
            backoff=backoff,
        )

    def deliveries(
        self,
        *queues: str,
        expire_seconds: int = DEFAULT_EXPIRE_S,
        stop: StopEvent | None = None,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> DeliveryStream:
        """A pull consumer on its own connection: use as ``async with`` and ``async for``.

        ::

            async with client.deliveries("q1", "q2", expire_seconds=30) as stream:
                async for delivery in stream:
                    async with stream.handling(delivery):   # acks unless the block raises
                        await work(delivery)

        Or call ``stream.ack(delivery)``.  The ack leaves with the next pop.  `backoff`
        makes the stream's reconnect `Backoff`.
        """
        return DeliveryStream(
            self, queues, expire_seconds=expire_seconds, stop=stop, backoff=backoff
        )
