"""Consuming, written once: the reconnecting delivery stream (the pull consumer).

Owns: driving okq_proto's `Consumer` machine over a stream of the client's pool (flush after
every call into the machine, read within the machine's budget for the reply awaited, feed),
reconnecting with the consumer's `Backoff` after a connection failure (re-registering on a
fresh machine; what was claimed and not acked is reported; a run of failures is logged on
`FailureLog`'s schedule, its end once), abandoning a ``QNOTIFY`` wait
when asked to stop, and the final ack of a consumer stopped or cancelled with an ack owed.
The push-style `consume` and its workers are ``okq_transports._async.workers``.
Must not know: okq's consumer rules (okq_proto's), how a backend waits, races or runs workers,
handlers.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Final

from okq_proto import (
    NEED_DATA,
    AckSettled,
    Backoff,
    ClientClosed,
    Consumer,
    ConsumerState,
    ConsumerStopped,
    Delivered,
    Delivery,
    LateAck,
    LocalProtocolError,
    RemoteProtocolError,
    ReplyError,
    SendData,
    TimeoutError,
    TransportError,
)
from okq_proto.policy import (
    CONNECTION_FAILURES,
    Address,
    FailureLog,
    is_transient,
    read_time_left,
)
from okq_transports._exceptions import ConnectionBusyError
from okq_transports._observe import (
    active_hooks,
    call_hook,
    handler_failed,
    late_ack,
    lost,
    reconnecting,
    recovered,
    where,
)

from .client import AsyncClientCore
from .streams import AsyncStream, StopEvent, close_quietly

__all__ = ["FINAL_ACK_S", "STOPPING_STATES", "AsyncDeliveryStream"]

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


class AsyncDeliveryStream:
    """Deliveries from one or more queues on one dedicated connection, pulled one at a time.

    Use ``async with`` and ``async for``; report each delivery before taking the next with
    `ack` (or by leaving ``async with stream.handling(delivery):`` without an exception).  A
    delivery not acked when the next one is taken is left to expire (redelivered by the
    server).  Acks are pipelined: an ack leaves in the same write as the next pop.

    The stream reconnects by itself after a connection failure (its `Backoff`: capped
    exponential with full jitter, failing over along the client's addresses) and registers
    again; what was claimed and not acked then is logged and comes back once its claim
    expires.  It ends (``StopAsyncIteration``) when `stop` is set or after `aclose`; a
    ``QNOTIFY`` wait is abandoned at once, a claimed delivery is always handed out and its
    final ack sent.

    Not safe for two callers at once: each consumer needs its own stream.
    """

    def __init__(
        self,
        core: AsyncClientCore,
        queues: Sequence[str],
        *,
        expire_seconds: int,
        stop: StopEvent | None = None,
        on_registered: Callable[[], None] | None = None,
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
        self._stream: AsyncStream | None = None
        self._address: Address | None = None
        self._in_hand: Delivery | None = None
        self._verdict = False
        self._reported = False
        self._closing = False
        self._busy = False
        self._registered = False  # the machine on the current stream got past REGISTERING
        self._backoff: Backoff = (backoff or core.new_backoff)()
        self._failures = FailureLog()  # which reconnect failures are logged at WARNING
        self._hooks = active_hooks(core.hooks)
        # Validate the arguments now, not at the first pop.
        Consumer(self._queues, expire_s=expire_seconds, notify_timeout_s=core.notify_timeout_s)

    async def __aenter__(self) -> AsyncDeliveryStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncDeliveryStream:
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
            ClientClosed: the client is closed.
            ConnectionBusyError: another caller is inside this call on the same stream.
        """
        if self._busy:
            raise ConnectionBusyError(
                "another task is taking deliveries from this stream: each consumer needs its "
                "own stream"
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
            acking = False  # the ack of a handled delivery leaves with this pump
            if in_hand is not None:
                if self._verdict and in_hand.needs_ack and self._backend.cancel_pending():
                    # Cancelled right after the delivery was acked (a handler that cancels
                    # its nursery and returns true): the ack still leaves, alone.
                    await self._send_final_ack()
                    return None
                self._in_hand = None
                if not self._verdict and not self._reported:
                    handler_failed(self._hooks, in_hand, None)
                # finished at or after the claim's deadline: a late ack
                consumer.handled(in_hand, self._verdict, self._now())
                acking = self._verdict and in_hand.needs_ack
            try:
                event = await self._pump(consumer)
            except (*CONNECTION_FAILURES, ReplyError) as exc:
                if not is_transient(exc):  # the server refuses us: give up, as okq-go does
                    await self._drop()
                    raise
                await self._lost(consumer, exc)
                continue
            except BaseException:
                if acking:  # cancelled with a handled delivery's ack in flight: it is kept
                    await self._settle_final_ack(consumer)
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
                late_ack(self._hooks, event.delivery, removed=event.removed)
            else:  # ConsumerStopped
                await self._drop()
                return None

    def _now(self) -> float:
        stream = self._stream
        return stream.now() if stream is not None else self._backend.now()

    def _stopping(self) -> bool:
        return self._closing or (self._stop is not None and self._stop.is_set())

    async def _pump(self, consumer: Consumer) -> Delivered | AckSettled | LateAck | ConsumerStopped:
        """Move bytes until the machine has something for us (STYLE §7's loop).

        One read budget per reply awaited (`Consumer.reply_budget_s`: the read timeout, plus
        a ``QNOTIFY``'s wait), however its bytes trickle in: it starts when a new reply is
        awaited (here, or once the machine read a reply and sent again by itself), and each
        read waits what is left of it."""
        stream = self._stream
        assert stream is not None
        backend = self._backend
        now = stream.now
        conn = consumer.connection
        read_timeout_s = self._core.read_timeout_s
        started = 0.0
        seen = -1  # conn.replies_read when the budget started
        while True:
            event = consumer.step(now())  # the machines' contract: queued bytes come first
            if type(event) is SendData:
                await stream.send_all(event.data)
                continue
            if event is not NEED_DATA:
                out = consumer.data_to_send()  # what reading this event queued leaves now
                if out:
                    await stream.send_all(out)
                return event  # type: ignore[return-value]  # a ConsumerEvent: step's others are above
            state = consumer.state
            if state is not _REGISTERING:
                if self._on_registered is not None:
                    self._on_registered()
                    self._on_registered = None
                if not self._registered:
                    self._registered = True
                    self._backoff.reset()  # registered: the next failure retries soon again
                    ended = self._failures.recovered(now())
                    if ended is not None:
                        recovered(self._address, *ended)
            budget_s = consumer.reply_budget_s(read_timeout_s)
            if conn.replies_read != seen:  # a new reply: its first read waits it all
                started, seen = now(), conn.replies_read
                wait_s = budget_s
            else:  # the same reply: wait only what is left of its budget
                left = read_time_left(started, budget_s, now(), 0.0, where(self._address))
                wait_s = budget_s if left is None else left
            stop = self._stop
            if state is _WAITING and stop is not None:
                # Nothing is popped while waiting: a stop may abandon the wait at once (the
                # connection is closed then, so its late reply reaches nobody).
                if not await backend.fill_or_stop(stream, consumer, wait_s, stop):
                    consumer.stop()  # the next next_event says ConsumerStopped
            else:
                await stream.fill(consumer, wait_s)

    async def _connect(self) -> bool:
        """Open a stream and start a fresh machine on it; on failure sleep the backoff.
        Returns False when stopped while connecting or waiting."""
        stop = self._stop
        pool = self._core.pool
        try:
            if stop is not None:
                # A connect may hang for minutes (SYNs dropped; trio has no connect timeout,
                # a redis-py pool's socket_connect_timeout may be long): a stop abandons it
                # where the backend can cancel a call.  An opener cancelled midway leaves
                # nothing behind: a stream is not handed out yet, and redis-py's
                # get_connection releases the connection it was connecting on any error.
                opened = await self._backend.race_stop(pool.open_stream, stop)
                if opened is None:
                    return False
                stream, address = opened
            else:
                stream, address = await pool.open_stream()
        except ClientClosed:
            raise
        except TransportError as exc:
            return await self._pause(exc)
        self._stream, self._address = stream, address
        self._registered = False
        self._consumer = Consumer(
            self._queues,
            expire_s=self._expire_s,
            notify_timeout_s=self._core.notify_timeout_s,
            connection=stream.new_machine("auto", pool.max_reply_bytes),
        )
        return True

    async def _pause(self, exc: BaseException) -> bool:
        delay = self._backoff.next_delay()
        address = self._address or self._core.pool.preferred_address
        failures, now = self._failures, self._backend.now()
        report = failures.failed(now)
        reconnecting(
            self._hooks,
            address,
            exc,
            self._backoff.attempt,
            delay,
            failures=failures.failures,
            failing_s=failures.failing_s(now),
            report=report,
        )
        if self._stop is None:
            await self._backend.sleep(delay)
            return True
        return await self._backend.sleep_or_stop(delay, self._stop)

    async def _lost(self, consumer: Consumer, exc: BaseException) -> None:
        # The backoff was reset when the machine got past REGISTERING (`_pump`): asking the
        # machine now would be too late, it is in ERROR whatever state it failed in.
        lost(consumer.unacked, consumer.pop_in_flight, self._address, exc)
        await self._drop()
        await self._pause(exc)

    async def _drop(self) -> None:
        self._consumer = None
        self._in_hand = None
        stream, self._stream = self._stream, None
        if stream is not None:
            await close_quietly(stream)

    async def send_final_ack(self) -> None:
        """Stop at once, sending the ack of the delivery in hand (if `ack` was called) and
        waiting for its reply, shielded from cancellation for at most `FINAL_ACK_S`; then
        close.  For a consumer being cancelled: its handler succeeded, so the event must not
        come back.  Nothing else is popped.  Connection failures are logged, not raised (the
        event is then redelivered once its claim expires)."""
        await self._send_final_ack()

    async def _send_final_ack(self) -> None:
        self._closing = True
        consumer, delivery = self._consumer, self._in_hand
        try:
            if consumer is None or self._stream is None or delivery is None or not self._verdict:
                return
            self._in_hand = None
            if consumer.state not in STOPPING_STATES:
                consumer.stop()  # HANDLING -> FINISHING: the verdict sends the final QACK only
            consumer.handled(delivery, True)
            await self._settle_final_ack(consumer)
        finally:
            await self._drop()

    async def _settle_final_ack(self, consumer: Consumer) -> None:
        """Stop a machine whose ack is in flight and read that ack's reply, shielded from
        cancellation for at most `FINAL_ACK_S` (a pop in flight with it is handed back
        unacked: its event comes back once the claim expires)."""
        self._closing = True
        if consumer.state not in STOPPING_STATES:
            consumer.stop()
        if not await self._backend.shielded(functools.partial(self._finish, consumer), FINAL_ACK_S):
            lost(consumer.unacked, None, self._address, TimeoutError("final ack timed out"))

    async def _finish(self, consumer: Consumer) -> None:
        """Pump a stopping machine until it has stopped (bounded: the final ack, and a pop
        already in flight, are all that is left)."""
        try:
            for _ in range(4):
                event = await self._pump(consumer)
                if isinstance(event, AckSettled):
                    call_hook(self._hooks, "acked", event.delivery)
                elif isinstance(event, LateAck):
                    late_ack(self._hooks, event.delivery, removed=event.removed)
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
            if self._consumer is not None and self._stream is not None:
                with contextlib.suppress(TransportError, RemoteProtocolError):
                    # Stopping: the final ack leaves; a delivery claimed by a pop already in
                    # flight is handed back unacked (bounded: one pop at most is in flight).
                    for _ in range(3):
                        if await self.next_delivery() is None:
                            break
        finally:
            await self._drop()
