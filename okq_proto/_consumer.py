"""The okq consumer loop as a sans-I/O machine, wrapping one `ClientConnection`.

Owns: what a consumer sends and when (``QREGISTER`` once; ``QNOTIFY``; ``QRPOP q EX n``;
``QACK``), the deliveries it hands out with their claim deadlines, draining a busy queue and
pipelining the ack of one event with the pop of the next, graceful stop, and the report of what
was popped and not acked when something fails.  The states and the transition table are in
`okq_proto._consumer_state`.
Must not know: sockets, clocks, threads, handlers, logging, reconnecting (a transport makes a
new `Consumer` on a new connection).

Use (a transport moves bytes and time; it decides nothing)::

    consumer = Consumer(["jobs"], expire_s=30, notify_timeout_s=30)
    while True:
        sock.sendall(consumer.data_to_send())
        event = consumer.next_event(now=time.monotonic())
        if event is NEED_DATA:          # read; deadline: read timeout + allowed_silence_s()
            data = sock.recv(65536)
            consumer.receive_data(data) if data else consumer.receive_eof()
        elif type(event) is Delivered:
            ok = handler(event.delivery)
            consumer.handled(event.delivery, ok, now=time.monotonic())  # QACK + next QRPOP
        elif type(event) is ConsumerStopped:
            break                        # close the connection
        # AckSettled / LateAck (finished after the deadline, or QACK replied 0): metrics

Beyond okq-go: after a pop the same queue is popped again before waiting in ``QNOTIFY`` (up
to `max_drain` events in a row, then the next registered queue gets a turn), and the ack of
the finished event leaves in the same write as that pop, so a busy queue costs one round trip
per event instead of three.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, final

from ._client import CLOSED, ClientConnection, CommandReplied
from ._commands import DEFAULT_EXPIRE_S, QAck, QNotify, QRegister, QRPop, expire_argument
from ._consumer_state import ConsumerInput, ConsumerState, next_state
from ._errors import (
    ConnectionClosed,
    LocalProtocolError,
    OkqError,
    ProtocolError,
    RemoteProtocolError,
)
from ._machine import SendData, step
from ._ops import DEFAULT_NOTIFY_TIMEOUT_S, Delivery
from ._resp import NEED_DATA, NeedData
from ._types import Event, from_wire, to_wire

__all__ = [
    "DEFAULT_MAX_DRAIN",
    "NOTIFY_MARGIN_S",
    "REPLY_TIMEOUT_S",
    "AckSettled",
    "Consumer",
    "ConsumerEvent",
    "ConsumerStopped",
    "Delivered",
    "LateAck",
]

#: Events popped from one queue in a row before the next registered queue gets a turn.
DEFAULT_MAX_DRAIN: Final = 100
#: What a consumer's ``QNOTIFY`` read deadline adds to the wait itself: the server answers at
#: the end of the wait (whole seconds), and a reply that comes just then must still be read.
NOTIFY_MARGIN_S: Final = 5.0
#: How long a consumer waits for the reply to a command okq answers at once (``QREGISTER``,
#: ``QRPOP``, ``QACK``) when its transport has no read timeout of its own (trio, or
#: ``read_timeout_s=None``): past it the connection is taken for dead and replaced.  Below
#: 5 s, so that a stop set while such a reply is owed on a dead connection is honoured soon.
REPLY_TIMEOUT_S: Final = 4.0

_INF: Final = float("inf")
_S = ConsumerState
_I = ConsumerInput


@final
@dataclass(frozen=True, slots=True)
class Delivered:
    """An event was claimed for this consumer: hand `delivery` to the application, then
    report the outcome with `Consumer.handled`."""

    delivery: Delivery


@final
@dataclass(frozen=True, slots=True)
class AckSettled:
    """``QACK`` of `delivery` replied 1 and the handler finished before the claim's
    deadline: the event is gone from the queue, handled once by this consumer."""

    delivery: Delivery


@final
@dataclass(frozen=True, slots=True)
class LateAck:
    """A late ack: the handler finished at or after `delivery`'s deadline (its claim had
    expired, so the server may have delivered the event again), or ``QACK`` replied 0 (the
    event was no longer there: flushed, or redelivered and finished by another consumer).

    The work may have been done twice, whatever the reply.  `removed` is the reply: True
    when the ``QACK`` still removed the event, which after a redelivery may be the copy
    another consumer is handling now (its own ack will then be late too).
    """

    delivery: Delivery
    removed: bool = False


@final
@dataclass(frozen=True, slots=True)
class ConsumerStopped:
    """The consumer stopped gracefully: every ack has been answered.  Close the connection
    (it may still owe the reply of an abandoned ``QNOTIFY``)."""


#: Everything `Consumer.next_event` hands back besides `NEED_DATA`.
ConsumerEvent = Delivered | AckSettled | LateAck | ConsumerStopped

_STOPPED_EVENT: Final = ConsumerStopped()


class Consumer:
    """One okq consumer connection's protocol state, without any I/O.

    Creating it queues ``QREGISTER``: flush `data_to_send` first.

    Args:
        queues: the queues to consume from (at least one; `str`, or `bytes` as on the wire).
        expire_s: the claim length asked for with each pop (okq-go's ``ExpireSeconds``);
            -1 (`NO_ACK`) for at-most-once delivery: pops are sent as ``EX 0`` and never acked.
        notify_timeout_s: the ``QNOTIFY`` wait in whole seconds; a transport's read deadline
            while waiting must exceed it (see `allowed_silence_s`).
        max_drain: events popped from one queue in a row before the next registered queue
            is popped instead.
        connection: the `ClientConnection` to drive (a fresh one by default); it must have
            nothing in flight.
        report_acks: hand out `AckSettled` for every successful ack (False: only `LateAck`
            is reported, which saves a step per event when nobody counts acks).

    Raises:
        LocalProtocolError: for no queues or a bad argument.  Nothing is queued then.
    """

    __slots__ = (
        "_ack_done",
        "_acks",
        "_conn",
        "_error",
        "_expire_s",
        "_in_hand",
        "_max_drain",
        "_names",
        "_next",
        "_notify",
        "_pop_queue",
        "_queues",
        "_report_acks",
        "_state",
        "_streak",
        "_wire",
    )

    def __init__(
        self,
        queues: Iterable[str | bytes],
        *,
        expire_s: int = DEFAULT_EXPIRE_S,
        notify_timeout_s: int = DEFAULT_NOTIFY_TIMEOUT_S,
        max_drain: int = DEFAULT_MAX_DRAIN,
        connection: ClientConnection | None = None,
        report_acks: bool = True,
    ) -> None:
        if isinstance(queues, (str, bytes)):
            raise LocalProtocolError("queues must be a list of names, not one name")
        wire = tuple(dict.fromkeys(to_wire(q) for q in queues))
        if not wire:
            raise LocalProtocolError("a consumer needs at least one queue")
        expire_argument(expire_s)  # validates
        if isinstance(max_drain, bool) or not isinstance(max_drain, int) or max_drain < 1:
            raise LocalProtocolError(f"max_drain must be an int >= 1, not {max_drain!r}")
        self._notify = QNotify(notify_timeout_s)
        conn = connection if connection is not None else ClientConnection()
        if conn.in_flight:
            raise LocalProtocolError("the consumer's connection must have nothing in flight")
        self._conn = conn
        self._wire = wire
        self._names = {from_wire(q): i for i, q in enumerate(wire)}
        self._queues = tuple(from_wire(q) for q in wire)
        self._expire_s = expire_s
        self._max_drain = max_drain
        self._report_acks = bool(report_acks)
        # One QRPOP per queue, built once: the busy path only looks them up.
        self._pop_queue: str | None = None
        self._next = [QRPop(q, expire_s) for q in wire]
        self._streak = 0
        self._in_hand: Delivery | None = None
        self._acks: deque[Delivery] = deque()
        self._ack_done: deque[float | None] = deque()  # when each verdict came, if known
        self._error: OkqError | None = None
        self._state = _S.REGISTERING
        conn.send(QRegister(wire))

    # -- introspection ---------------------------------------------------------------------

    @property
    def state(self) -> ConsumerState:
        """The current `ConsumerState`."""
        return self._state

    @property
    def queues(self) -> tuple[str, ...]:
        """The registered queues, in registration order, without repeats."""
        return self._queues

    @property
    def connection(self) -> ClientConnection:
        """The wrapped `ClientConnection` (do not send on it)."""
        return self._conn

    @property
    def unacked(self) -> tuple[Delivery, ...]:
        """Deliveries claimed by this consumer whose ack is not confirmed: the one with the
        application, and any whose ``QACK`` is in flight.  After a failure these are what the
        server will hand out again once their claims expire (an ack in flight may also have
        landed).  At-most-once deliveries are never listed: the server acked them on pop.
        """
        pending = tuple(self._acks)
        if self._in_hand is not None and self._in_hand.needs_ack:
            return (self._in_hand, *pending)
        return pending

    @property
    def pop_in_flight(self) -> str | None:
        """The queue of a ``QRPOP`` whose reply has not been read, else None.  If the
        connection fails now, that pop may have claimed an event this consumer never saw; the
        server hands it out again once the claim expires (or lost it, at-most-once)."""
        return self._pop_queue

    def allowed_silence_s(self) -> float:
        """How long the server may stay silent with the commands now in flight (the
        ``QNOTIFY`` wait): a transport's read deadline is its read timeout plus this.

        Only WAITING has a ``QNOTIFY`` in flight that is still read (what `stop` abandons is
        never read), so this is the notify timeout there and 0 elsewhere.
        """
        return self._notify.blocking_s if self._state is _S.WAITING else 0.0

    def reply_budget_s(self, read_timeout_s: float | None) -> float:
        """How long the reply now awaited may take as a whole, on a transport whose read
        timeout is `read_timeout_s` (None: it has none).

        A consumer never reads without a deadline: behind a half-open connection (the server
        side gone without a FIN or RST reaching us) it would wait for good, deaf to `stop`.
        While waiting in ``QNOTIFY`` the budget is the wait plus `NOTIFY_MARGIN_S` plus the
        read timeout; otherwise the read timeout, or `REPLY_TIMEOUT_S` without one.
        """
        silence = self.allowed_silence_s()
        if silence:
            return silence + NOTIFY_MARGIN_S + (read_timeout_s or 0.0)
        return REPLY_TIMEOUT_S if read_timeout_s is None else read_timeout_s

    def next_deadline(self) -> float | None:
        """The claim deadline of the delivery with the application, else None.

        Nothing happens here at that time (the claim just lapses on the server); a transport
        may use it to cancel a handler, as okq-go cancels its context.
        """
        return self._in_hand.deadline if self._in_hand is not None else None

    # -- bytes -----------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Drain the outbound buffer: the bytes to write now, or ``b""``.  Call after every
        other method."""
        return self._conn.data_to_send()

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Hand over bytes read from the server (copied; parsed by `next_event`).  Ignored
        once STOPPED: a stopped consumer reads nothing more."""
        if self._state is not _S.STOPPED:
            self._conn.receive_data(data)

    def receive_eof(self) -> None:
        """Tell the machine the server closed its side.  Idempotent; ignored once STOPPED."""
        if self._state is not _S.STOPPED:
            self._conn.receive_eof()

    # -- the loop --------------------------------------------------------------------------

    def step(self, now: float | None = None) -> SendData | ConsumerEvent | NeedData:
        """What to do next (the contract of every machine, `okq_proto.Machine`): `SendData`
        with the bytes queued (``QREGISTER``, ``QNOTIFY``, ``QRPOP``, acks: the consumer
        queues them itself), else `next_event`'s answer.

        Raises:
            LocalProtocolError: without `now` (the caller's monotonic clock), or as
                `next_event`.
        """
        return step(self, now)  # type: ignore[return-value]  # one of those, by construction

    def _next_for_step(self, now: float | None) -> object:
        if now is None:
            raise LocalProtocolError("Consumer.step needs now=, the caller's monotonic clock")
        return self.next_event(now)

    def next_event(self, now: float) -> ConsumerEvent | NeedData:
        """Read replies until there is something for the caller.

        Legal in REGISTERING, WAITING, POPPING, STOP_POPPING, ACKING (reading) and STOPPED
        (returns `ConsumerStopped` again).  Nil replies are handled inside: a ``QNOTIFY``
        timeout sends ``QNOTIFY`` again, an empty pop goes back to waiting.

        Args:
            now: the caller's monotonic clock; a delivery's deadline is ``now + expire_s``.

        Returns:
            `Delivered` (state HANDLING or FINISHING: call `handled` next), `AckSettled` /
            `LateAck`, `ConsumerStopped`, or `NEED_DATA` (read more, with a read deadline of at
            least `allowed_silence_s`, then call again).

        Raises:
            ReplyError: the server answered with an error (state ERROR).
            ConnectionClosed: the server closed the connection with replies owed (ERROR).
            RemoteProtocolError: a reply okq never sends (ERROR).
            LocalProtocolError: called while a delivery is with the application, or after an
                error.
        In every error case `unacked` and `pop_in_flight` say what was left claimed.
        """
        conn = self._conn
        while True:
            state = self._state
            if state is _S.STOPPED:
                return _STOPPED_EVENT
            if state in (_S.HANDLING, _S.FINISHING, _S.ERROR):
                self._check_not_error("read replies")
                self._state = _S.ERROR
                raise self._remember(
                    LocalProtocolError(
                        f"cannot read replies while {state.name}: report the delivery with "
                        "handled() first"
                    )
                )
            try:
                replied = conn.next_event()
            except ConnectionClosed as exc:
                raise self._fail(_I.CONNECTION_LOST, exc) from None
            except RemoteProtocolError as exc:
                raise self._fail(_I.BAD_REPLY, exc) from None
            if replied is NEED_DATA:
                return NEED_DATA
            if replied is CLOSED:  # cannot happen with a command in flight; be safe
                raise self._fail(_I.CONNECTION_LOST, ConnectionClosed("the server closed"))
            event = self._on_reply(replied, now)
            if event is not None:
                return event

    def handled(self, delivery: Delivery, success: bool, now: float | None = None) -> None:
        """Report the application's verdict on the delivery in hand.

        Legal in HANDLING and FINISHING, for the delivery `next_event` handed out.  On
        success the event is acked (unless at-most-once); either way, in HANDLING, the next
        pop leaves with the ack in one write (state POPPING); in FINISHING, the final ack
        is sent (ACKING), or the consumer is STOPPED if there is nothing to ack.  Without
        success no ack is sent: the server hands the event out again once the claim expires.

        Args:
            delivery: the delivery in hand.
            success: the handler's verdict (True: ack it).
            now: the caller's monotonic clock when the handler finished.  An ack whose
                handler finished at or after ``delivery.deadline`` is reported as `LateAck`
                whatever ``QACK`` replies.  None: the time passed to the `next_event` that
                reads the ack's reply stands in (never earlier, so never a false
                `AckSettled`).

        Raises:
            LocalProtocolError: in another state, or for a different delivery (state ERROR).
        """
        self._check_not_error("report a delivery")
        if delivery is not self._in_hand:
            state, self._state = self._state, _S.ERROR
            raise self._remember(
                LocalProtocolError(
                    f"cannot report {delivery!r} while {state.name}: it is not the delivery in hand"
                )
            )
        ack = bool(success) and delivery.needs_ack
        new = self._move(_I.ACK if ack else _I.SKIP)
        self._in_hand = None
        if ack:
            self._acks.append(delivery)
            self._ack_done.append(now)
            self._conn.send(QAck(to_wire(delivery.queue), to_wire(delivery.id)))
        if new is _S.POPPING:
            index = self._names[delivery.queue]
            if self._streak >= self._max_drain:  # fairness: give the next queue a turn
                index = (index + 1) % len(self._next)
                self._streak = 0
            self._send_pop(index)

    def stop(self) -> None:
        """Stop gracefully: no new pops; a delivery in hand is still reported and acked.

        Legal in every state but ERROR, and idempotent.  While waiting (or registering)
        nothing has been popped, so the consumer is STOPPED at once; the reply still owed is
        abandoned with the connection.  With a pop in flight, an event it returns is still
        handed out (it is claimed already).

        Raises:
            LocalProtocolError: after an error.
        """
        self._check_not_error("stop")
        self._move(_I.STOP)

    # -- moves -----------------------------------------------------------------------------

    def _on_reply(self, replied: CommandReplied, now: float) -> ConsumerEvent | None:
        command = replied.command
        if replied.error is not None:
            raise self._fail(_I.ERROR_REPLY, replied.error)
        result = replied.result
        kind = type(command)
        if kind is QRPop:
            self._pop_queue = None
            if result is None:
                if self._move(_I.EMPTY) is _S.WAITING:
                    self._conn.send(self._notify)
                    return None
                return _STOPPED_EVENT
            assert isinstance(result, Event)
            self._move(_I.POPPED)
            self._streak += 1
            expire_s = self._expire_s
            if expire_s > 0:
                delivery = Delivery(
                    result.queue, result.id, result.contents, now + expire_s, expire_s
                )
            else:
                delivery = Delivery(result.queue, result.id, result.contents, _INF, expire_s)
            self._in_hand = delivery
            return Delivered(delivery)
        if kind is QAck:
            self._move(_I.ACK_REPLY)
            delivery = self._acks.popleft()
            done = self._ack_done.popleft()
            if done is None:
                done = now
            if done >= delivery.deadline:  # the claim had expired: maybe delivered again
                return LateAck(delivery, removed=result == 1)
            if result == 1:
                return AckSettled(delivery) if self._report_acks else None
            return LateAck(delivery)
        if kind is QNotify:
            if result is None:
                self._move(_I.NOTIFY_TIMEOUT)
                self._conn.send(self._notify)
                return None
            assert isinstance(result, str)
            index = self._names.get(result)
            if index is None:
                raise self._fail(
                    _I.BAD_REPLY,
                    RemoteProtocolError(f"QNOTIFY named {result!r}, a queue not registered"),
                )
            self._move(_I.NOTIFIED)
            self._streak = 0
            self._send_pop(index)
            return None
        if kind is QRegister:
            self._move(_I.REGISTERED)
            self._conn.send(self._notify)
            return None
        raise self._fail(_I.BAD_REPLY, RemoteProtocolError(f"a reply to {command!r}"))

    def _send_pop(self, index: int) -> None:
        pop = self._next[index]
        self._pop_queue = self._queues[index]
        self._conn.send(pop)

    def _move(self, event: ConsumerInput) -> ConsumerState:
        try:
            new = next_state(self._state, event)
        except ProtocolError as exc:
            self._state = _S.ERROR
            raise self._remember(exc) from None
        self._state = new
        return new

    def _fail(self, event: ConsumerInput, error: OkqError) -> OkqError:
        """Apply a failure input (legal or not, the state becomes ERROR) and return the
        error to raise."""
        self._move(event)
        return self._remember(error)

    def _remember(self, error: OkqError) -> OkqError:
        if self._error is None:
            self._error = error
        return error

    def _check_not_error(self, action: str) -> None:
        if self._state is _S.ERROR:
            raise LocalProtocolError(
                f"cannot {action}: the consumer failed ({self._error})"
            ) from self._error
