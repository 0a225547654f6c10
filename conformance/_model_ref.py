"""The reference model of the random command sequences: the project's pure okq engine.

Owns: `ReferenceModel`, which runs a sequence of requests through ``okq_proto.server`` (the
request framing of `ServerConnection`, the command meaning of `Dispatcher` and the queues of
`QueueEngine`) at a fixed time and says which reply bytes a conforming server may send for
each (`Expected`), and when a server needs a moment before the next step (a NOBLOCK push is
stored after its reply; a closed consumer's registration is dropped once the server notices
the close).  The time never advances, so no claim expires and no restore sweep runs: the
sequences use ``EX 0``, large ``EX`` values or the 30 s default only.

Must not know: sockets, clocks, transcripts.  It uses the public names of ``okq_proto.server``
only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from okq_proto.server import (
    ERR_SERVER_SIDE,
    OK,
    Ack,
    Action,
    CommandReceived,
    Dispatcher,
    ExpiryTooLargeError,
    Flush,
    InvalidCommandReceived,
    Peek,
    Pop,
    Push,
    QueueEngine,
    Register,
    Reply,
    RunInBackground,
    RunOp,
    ServerConnection,
    Status,
    StorageOp,
    WaitForNotify,
    encode_bulk,
    encode_event,
    render_ack,
    render_info,
    render_push,
    render_status,
)

from ._resp import encode_command

__all__ = ["Expected", "ModelError", "ReferenceModel"]

#: The model's clock: it never moves (no claim expires within a sequence).
_NOW = 0.0
#: The nil reply (``$-1``).
_NIL = encode_event(None)


class ModelError(RuntimeError):
    """The reference model could not take a request (a bug of the generator or the model)."""


@dataclass(frozen=True, slots=True)
class Expected:
    """What a conforming server may answer to one step.

    Attributes:
        replies: the acceptable replies; one element when the reply is fully determined, several
            where okq is nondeterministic (QNOTIFY's shuffled check among non-empty queues).
        settle: after this step the server finishes something in the background (a NOBLOCK
            push is stored, a closed consumer is deregistered); give it a moment.
        blocks_s: how long the server waits before it replies (QNOTIFY with nothing to report).
    """

    replies: frozenset[bytes]
    settle: bool = False
    blocks_s: float = 0.0

    @property
    def exact(self) -> bytes | None:
        """The one acceptable reply, or None when several are."""
        if len(self.replies) == 1:
            return next(iter(self.replies))
        return None


class ReferenceModel:
    """okq's state after a sequence of requests, as the project's pure engine computes it.

    Connections are numbered like the steps of a sequence; each has its own
    `ServerConnection` and a consumer id ``conn-<n>``.

    Args:
        seed: seeds the dispatcher's QNOTIFY shuffle (which queue the model itself picks).
    """

    def __init__(self, seed: int = 0) -> None:
        self.engine = QueueEngine(now=_NOW)
        self.dispatcher = Dispatcher(rng=random.Random(seed))
        self._conns: dict[int, ServerConnection] = {}
        # A request to run while a QNOTIFY waits (send_and_wake), and what it was answered.
        self._waker: tuple[int, tuple[bytes, ...]] | None = None
        self._woken_by: Expected | None = None

    @staticmethod
    def consumer(conn: int) -> str:
        """The consumer id of connection ``conn``."""
        return f"conn-{conn}"

    # -- queries for the generator and the executor -------------------------------------------

    def unclaimed(self, queue: bytes) -> list[bytes]:
        """The queue's unclaimed ids, left to right."""
        return self.engine.unclaimed_ids(queue)

    def claimed(self, queue: bytes) -> list[bytes]:
        """The queue's claimed ids, newest claim first."""
        return self.engine.claimed_ids(queue)

    def registered(self, conn: int) -> frozenset[bytes]:
        """The queues connection ``conn`` is registered for."""
        return self.engine.registered_queues(self.consumer(conn))

    def status_reply(self, queues: tuple[bytes, ...]) -> bytes:
        """The exact reply to ``QSTATUS <queues...>`` now."""
        return render_status(self.engine.status(queues))

    # -- steps --------------------------------------------------------------------------------

    def close(self, conn: int) -> Expected:
        """The client closes connection ``conn`` (never opened: nothing happens)."""
        self._conns.pop(conn, None)
        consumer = self.consumer(conn)
        was_registered = bool(self.engine.registered_queues(consumer))
        op = self.dispatcher.connection_closed(consumer)
        self.engine.register(consumer, op.queues)
        return Expected(frozenset(), settle=was_registered)

    def send(self, conn: int, argv: tuple[bytes, ...]) -> Expected:
        """One request on connection ``conn``: apply it and return what may be answered.

        Raises:
            ModelError: the request does not produce exactly one reply (the generator only
                sends whole arrays of bulk strings, so this is a bug).
        """
        machine = self._conns.get(conn)
        if machine is None:
            machine = self._conns[conn] = ServerConnection()
        machine.receive_data(encode_command(*argv))
        event = machine.next_event()
        if not isinstance(event, (CommandReceived, InvalidCommandReceived)):
            raise ModelError(f"request {argv!r} gave {event!r}, not a command")
        expected = self._carry_out(
            self.consumer(conn), self.dispatcher.handle(self.consumer(conn), event)
        )
        machine.send_reply(min(expected.replies))
        machine.data_to_send()
        return expected

    def send_and_wake(
        self,
        conn: int,
        argv: tuple[bytes, ...],
        waker_conn: int,
        waker_argv: tuple[bytes, ...],
    ) -> tuple[Expected, Expected]:
        """A QNOTIFY on ``conn`` and, while it waits, ``waker_argv`` on ``waker_conn``.

        If the QNOTIFY does not wait (a registered queue has work), the waker's request runs
        after it.

        Returns:
            what may be answered to the QNOTIFY and to the waker's request.
        """
        self._waker = (waker_conn, waker_argv)
        try:
            expected = self.send(conn, argv)
            woken_by = self._woken_by
            if woken_by is None:
                self._waker = None
                woken_by = self.send(waker_conn, waker_argv)
        finally:
            self._waker = None
            self._woken_by = None
        return expected, woken_by

    def _carry_out(self, consumer: str, action: Action) -> Expected:
        if isinstance(action, Reply):
            return Expected(frozenset((action.data,)))
        if isinstance(action, RunOp):
            return Expected(frozenset((self._run_op(consumer, action.op),)))
        if isinstance(action, RunInBackground):
            self._run_op(consumer, action.op)
            self.dispatcher.background_done()
            return Expected(frozenset((action.reply,)), settle=True)
        if isinstance(action, WaitForNotify):
            found = [q for q in action.queues if self.engine.unclaimed_count(q)]
            if found:
                return Expected(frozenset(encode_bulk(q) for q in found))
            immediate = action.after_check(None)
            if immediate is not None:
                return Expected(frozenset((immediate,)))
            hub = self.dispatcher.hub
            hub.start_wait(consumer)
            if self._waker is not None:  # send_and_wake: the other connection's request now
                waker, self._waker = self._waker, None
                self._woken_by = self.send(*waker)
            reply = hub.end_wait(consumer)
            woken = reply != _NIL
            return Expected(frozenset((reply,)), blocks_s=0.0 if woken else action.wait_s)
        raise ModelError(f"unknown action {action!r}")

    def _run_op(self, consumer: str, op: StorageOp) -> bytes:
        engine = self.engine
        if isinstance(op, Push):
            stored = engine.push(op.queue, op.event_id, op.contents, right=op.right)
            if stored:
                self.dispatcher.hub.publish(op.queue)
            return render_push(op, stored)
        if isinstance(op, Peek):
            return encode_event(engine.peek(op.queue, left=op.left))
        if isinstance(op, Pop):
            try:
                return encode_event(engine.pop(op.queue, op.expire_s, _NOW))
            except ExpiryTooLargeError:
                return ERR_SERVER_SIDE
        if isinstance(op, Ack):
            return render_ack(engine.ack(op.queue, op.event_id))
        if isinstance(op, Flush):
            engine.flush(op.queue)
            return OK
        if isinstance(op, Register):
            engine.register(consumer, op.queues)
            return OK
        if isinstance(op, Status):
            entries = engine.status(op.queues)
            return render_info(entries) if op.info else render_status(entries)
        raise ModelError(f"unknown storage op {op!r}")
