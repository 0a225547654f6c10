"""okq command semantics for the server role: request -> what to do -> exact reply bytes.

Owns: command lookup (Go upper-casing, ``%q`` in ``unknown command``), arity, every argument
quirk (``EX`` only right after the queue name, ``NOBLOCK`` only as the 4th argument, Atoi
errors), every error string of protocol doc section 5, the reply encoders (QSTATUS, QINFO's
padding, events), QNOTIFY's notification bookkeeping (`NotifyHub`) and the NOBLOCK worker
count.
Must not know: sockets, clocks, tasks, or how storage is done.  A `Dispatcher` turns a request
into an `Action`; the I/O layer carries it out without deciding anything about okq:

* `Reply`: send ``data``.
* `RunOp`: run ``op`` on the storage, send the op's renderer applied to its result
  (`render_push`, `encode_event`, `render_ack`, ``OK``, `render_status` / `render_info`).
* `RunInBackground`: send ``reply`` now, run ``op`` a moment later, then call
  `Dispatcher.background_done`.
* `WaitForNotify`: ask the storage for ``first_with_unclaimed(queues)``; ``after_check``
  gives the reply, or None to block: then `NotifyHub.start_wait`, wait until woken (the hub's
  `NotifyHub.publish` names the waiters to wake) or ``wait_s`` passes, then send
  `NotifyHub.end_wait`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, final

from okq_proto._engine import QueueStatus
from okq_proto._gocompat import AtoiError, atoi, go_quote, go_upper, rune_count
from okq_proto._server import CommandReceived, InvalidCommandReceived

__all__ = [
    "DEFAULT_NOBLOCK_WORKERS",
    "Ack",
    "Action",
    "Dispatcher",
    "Flush",
    "NotifyHub",
    "Peek",
    "Pop",
    "Push",
    "Register",
    "Reply",
    "RunInBackground",
    "RunOp",
    "Status",
    "StorageOp",
    "WaitForNotify",
    "encode_bulk",
    "encode_error",
    "encode_event",
    "render_ack",
    "render_info",
    "render_push",
    "render_status",
]

DEFAULT_NOBLOCK_WORKERS: Final = 128
"""okq's ``--bg-push-pool-size`` default."""

OK: Final = b"+OK\r\n"
PONG: Final = b"+PONG\r\n"
NIL: Final = b"$-1\r\n"
EMPTY_ARRAY: Final = b"*0\r\n"
ERR_MISSING_ARGS: Final = b"-ERR missing args\r\n"
ERR_INVALID_COMMAND: Final = b"-ERR invalid command\r\n"
ERR_TOO_BUSY: Final = b"-ERR too busy to process NOBLOCK event\r\n"
ERR_SERVER_SIDE: Final = b"-ERR unexpected server-side error\r\n"

_MIN_ARGS: Final = {
    "PING": 0,
    "QLPUSH": 3,
    "QRPUSH": 3,
    "QLPEEK": 1,
    "QRPEEK": 1,
    "QRPOP": 1,
    "QACK": 2,
    "QREGISTER": 0,
    "QNOTIFY": 1,
    "QFLUSH": 1,
    "QSTATUS": 0,
    "QINFO": 0,
}
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


# -- storage operations -------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Push:
    """Store an event; ``right`` for QRPUSH.  Result: ``bool`` (False = duplicate id)."""

    queue: bytes
    event_id: bytes
    contents: bytes
    right: bool


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Peek:
    """Look at an end's unclaimed event.  Result: ``(id, contents) | None``."""

    queue: bytes
    left: bool


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Pop:
    """Claim the next event (``expire_s`` None = default, 0 = also ack).

    Result: ``(id, contents) | None``; the storage raises on failure (huge expiry).
    """

    queue: bytes
    expire_s: int | None


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """Delete an event by id.  Result: ``int`` (0 or 1)."""

    queue: bytes
    event_id: bytes


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Flush:
    """Delete all events of a queue.  Result: None."""

    queue: bytes


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    """Queue counters for ``queues`` (None = every listed queue).  Result: list of `QueueStatus`.

    ``info`` selects QINFO's text rendering over QSTATUS's arrays.
    """

    queues: tuple[bytes, ...] | None
    info: bool


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Register:
    """Make the calling connection a consumer of exactly ``queues`` (empty: of none).

    Result: None.
    """

    queues: tuple[bytes, ...]


StorageOp = Push | Peek | Pop | Ack | Flush | Status | Register
"""Everything the I/O layer may be asked to run on its storage."""


# -- actions ------------------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """Send ``data`` as the reply."""

    data: bytes


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class RunOp:
    """Run ``op`` on the storage and reply with its rendered result (see the module doc).

    If the storage fails, reply ``ERR_SERVER_SIDE`` (okq's ``unexpected server-side error``).
    """

    op: StorageOp


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class RunInBackground:
    """NOBLOCK push: send ``reply`` now, run ``op`` shortly after (ignoring its result), then
    call `Dispatcher.background_done` once it finished, failed or was abandoned."""

    op: Push
    reply: bytes


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class WaitForNotify:
    """QNOTIFY after its argument was checked and pending notifications were discarded.

    ``queues`` are the connection's registered queues in a fresh random order; ``wait_s`` is
    how long to block if nothing is found (Go's ``time.Duration(n) * time.Second``).
    """

    queues: tuple[bytes, ...]
    timeout_s: int
    wait_s: float

    def after_check(self, found: bytes | None) -> bytes | None:
        """The reply once the storage named the first queue with work, or None to block."""
        if found is not None:
            return encode_bulk(found)
        if self.wait_s <= 0:
            return NIL
        return None


Action = Reply | RunOp | RunInBackground | WaitForNotify
"""What a `Dispatcher` asks the I/O layer to do for one request."""


# -- reply encoders -----------------------------------------------------------------------------


def encode_bulk(data: bytes) -> bytes:
    """A RESP2 bulk string."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


def encode_error(message: bytes) -> bytes:
    """``-<message>\\r\\n``; the caller keeps CR/LF out of ``message``."""
    return b"-" + message + b"\r\n"


def encode_event(event: tuple[bytes, bytes] | None) -> bytes:
    """An event as okq sends it (``*2`` id contents), or nil."""
    if event is None:
        return NIL
    return b"*2\r\n" + encode_bulk(event[0]) + encode_bulk(event[1])


def render_status(entries: Sequence[QueueStatus]) -> bytes:
    """QSTATUS's reply: ``*n`` of ``*4 name :total :processing :consumers``."""
    parts = [b"*%d\r\n" % len(entries)]
    for e in entries:
        parts.append(b"*4\r\n" + encode_bulk(e.name))
        parts.append(b":%d\r\n:%d\r\n:%d\r\n" % (e.total, e.processing, e.consumers))
    return b"".join(parts)


def _pad(text: bytes, width: int) -> bytes:
    # Go fmt "%-*s": pads by runes, while okq computed `width` from byte lengths.
    return text + b" " * max(0, width - rune_count(text))


def render_info(entries: Sequence[QueueStatus]) -> bytes:
    """QINFO's reply: one padded text line per queue, as bulk strings."""
    rows = [(e.name, b"%d" % e.total, b"%d" % e.processing, b"%d" % e.consumers) for e in entries]
    widths = [max([1, *(len(row[i]) for row in rows)]) for i in range(4)]
    parts = [b"*%d\r\n" % len(rows)]
    for name, total, processing, consumers in rows:
        line = b"%b  total: %b  processing: %b  consumers: %b" % (
            _pad(name, widths[0]),
            _pad(total, widths[1]),
            _pad(processing, widths[2]),
            _pad(consumers, widths[3]),
        )
        parts.append(encode_bulk(line))
    return b"".join(parts)


def render_push(op: Push, stored: bool) -> bytes:
    """A push's reply: ``+OK``, or ``ERR duplicate event <id>`` when it was not stored.

    Defect D2 is not copied: CR and LF in the id would break the reply line, so they are
    written as the two-character escapes ``\\r`` and ``\\n``.
    """
    if stored:
        return OK
    safe = op.event_id.replace(b"\r", b"\\r").replace(b"\n", b"\\n")
    return encode_error(b"ERR duplicate event " + safe)


def render_ack(removed: int) -> bytes:
    """QACK's reply, ``:0`` or ``:1``."""
    return b":%d\r\n" % removed


# -- QNOTIFY bookkeeping ------------------------------------------------------------------------


@final
class NotifyHub:
    """Per-server notification state: local registrations, pending notifications, waiters.

    Each connection holds at most one pending notification (the first one wins, like okq's
    one-slot channel); it is discarded when a QNOTIFY begins.  Connections are identified by
    the same ``consumer`` string the storage counts them with.
    """

    def __init__(self) -> None:
        self._queues: dict[str, tuple[bytes, ...]] = {}
        self._by_queue: dict[bytes, set[str]] = {}
        self._pending: dict[str, bytes] = {}
        self._waiting: set[str] = set()

    def register(self, consumer: str, queues: Sequence[bytes]) -> None:
        """Replace the connection's queue list (duplicates count once)."""
        self.unregister(consumer)
        unique = tuple(dict.fromkeys(queues))
        if unique:
            self._queues[consumer] = unique
        for name in unique:
            self._by_queue.setdefault(name, set()).add(consumer)

    def unregister(self, consumer: str) -> None:
        """Forget the connection's registrations (its pending notification stays until it ends)."""
        for name in self._queues.pop(consumer, ()):
            members = self._by_queue[name]
            members.discard(consumer)
            if not members:
                del self._by_queue[name]

    def forget(self, consumer: str) -> None:
        """Drop every trace of a closed connection."""
        self.unregister(consumer)
        self._pending.pop(consumer, None)
        self._waiting.discard(consumer)

    def queues_of(self, consumer: str) -> tuple[bytes, ...]:
        """The connection's registered queues, in registration order."""
        return self._queues.get(consumer, ())

    def discard_pending(self, consumer: str) -> None:
        """QNOTIFY step 2: drop a notification that arrived while not waiting."""
        self._pending.pop(consumer, None)

    def publish(self, queue: bytes) -> list[str]:
        """A push to ``queue`` happened: notify every connection registered for it.

        Returns:
            the waiting connections that now have a notification: wake them.
        """
        wake = []
        for consumer in self._by_queue.get(queue, ()):
            if consumer not in self._pending:
                self._pending[consumer] = queue
            if consumer in self._waiting:
                wake.append(consumer)
        return wake

    def start_wait(self, consumer: str) -> bool:
        """The connection starts blocking.  Returns True if it already has a notification."""
        self._waiting.add(consumer)
        return consumer in self._pending

    def end_wait(self, consumer: str) -> bytes:
        """The wait ended (woken or timed out).  Returns the reply: the queue name or nil."""
        self._waiting.discard(consumer)
        queue = self._pending.pop(consumer, None)
        return NIL if queue is None else encode_bulk(queue)


# -- the dispatcher -----------------------------------------------------------------------------


def _int_arg(text: bytes, what: bytes) -> int | bytes:
    """okq's parseInt: the value, or the complete error reply."""
    try:
        n = atoi(text)
    except AtoiError as exc:
        return encode_error(b"ERR bad " + what + b" value: " + exc.message)
    if n < 0:
        return encode_error(b"ERR bad %b value: %d < 0" % (what, n))
    return n


def _wrap_int64(n: int) -> int:
    return (n - _INT64_MIN) % 2**64 + _INT64_MIN


@final
class Dispatcher:
    """Turns requests into `Action` values, for every connection of one server.

    Args:
        rng: shuffles QNOTIFY's initial check order (inject a seeded one for determinism).
        noblock_workers: how many NOBLOCK pushes may be in flight before ``too busy``.
    """

    def __init__(
        self, *, rng: random.Random | None = None, noblock_workers: int = DEFAULT_NOBLOCK_WORKERS
    ) -> None:
        self._rng = rng if rng is not None else random.Random()
        self._noblock_workers = noblock_workers
        self._noblock_busy = 0
        self.hub = NotifyHub()
        """The notification state; the I/O layer calls its publish/start_wait/end_wait."""

    @property
    def noblock_busy(self) -> int:
        """NOBLOCK pushes handed out and not yet reported done."""
        return self._noblock_busy

    def background_done(self) -> None:
        """A `RunInBackground` op finished (however it ended): its worker is free again."""
        if self._noblock_busy <= 0:
            raise RuntimeError("background_done without a running NOBLOCK push")
        self._noblock_busy -= 1

    def connection_closed(self, consumer: str) -> Register:
        """The server noticed the connection is gone.  Returns the op that deregisters it."""
        self.hub.forget(consumer)
        return Register(queues=())

    def handle(self, consumer: str, request: CommandReceived | InvalidCommandReceived) -> Action:
        """Decide what one request does.

        Args:
            consumer: the connection's id (also its consumer id in storage).
            request: the event `ServerConnection.next_event` returned.
        """
        if isinstance(request, InvalidCommandReceived):
            return Reply(data=ERR_INVALID_COMMAND)
        argv = request.argv
        name = argv[0] if argv else b""
        command = go_upper(name)
        minimum = _MIN_ARGS.get(command)
        if minimum is None:
            return Reply(data=encode_error(b"ERR unknown command " + go_quote(name)))
        args = argv[1:]
        if len(args) < minimum:
            return Reply(data=ERR_MISSING_ARGS)
        match command:
            case "PING":
                return Reply(data=PONG)
            case "QLPUSH" | "QRPUSH":
                return self._push(args, right=command == "QRPUSH")
            case "QLPEEK" | "QRPEEK":
                return RunOp(op=Peek(queue=args[0], left=command == "QLPEEK"))
            case "QRPOP":
                return self._pop(args)
            case "QACK":
                return RunOp(op=Ack(queue=args[0], event_id=args[1]))
            case "QREGISTER":
                self.hub.register(consumer, args)
                return RunOp(op=Register(queues=tuple(args)))
            case "QNOTIFY":
                return self._notify(consumer, args[0])
            case "QFLUSH":
                return RunOp(op=Flush(queue=args[0]))
            case _:  # QSTATUS, QINFO
                return RunOp(op=Status(queues=tuple(args) or None, info=command == "QINFO"))

    def _push(self, args: Sequence[bytes], *, right: bool) -> Action:
        op = Push(queue=args[0], event_id=args[1], contents=args[2], right=right)
        if len(args) > 3 and go_upper(args[3]) == "NOBLOCK":
            if self._noblock_busy >= self._noblock_workers:
                return Reply(data=ERR_TOO_BUSY)
            self._noblock_busy += 1
            return RunInBackground(op=op, reply=OK)
        return RunOp(op=op)

    def _pop(self, args: Sequence[bytes]) -> Action:
        expire_s: int | None = None
        if len(args) > 2 and go_upper(args[1]) == "EX":
            parsed = _int_arg(args[2], b"expires")
            if isinstance(parsed, bytes):
                return Reply(data=parsed)
            expire_s = parsed
        return RunOp(op=Pop(queue=args[0], expire_s=expire_s))

    def _notify(self, consumer: str, arg: bytes) -> Action:
        parsed = _int_arg(arg, b"timeout")
        if isinstance(parsed, bytes):
            return Reply(data=parsed)
        self.hub.discard_pending(consumer)
        order = list(self.hub.queues_of(consumer))
        self._rng.shuffle(order)
        wait_ns = _wrap_int64(parsed * 1_000_000_000) if parsed else 0
        return WaitForNotify(queues=tuple(order), timeout_s=parsed, wait_s=wait_ns / 1e9)
