"""Generating random okq command sequences over several connections.

Owns: `ModelStep` (one step: a request on a connection, a pipeline of them, a QNOTIFY woken
by another connection's push, or a close), the `PROFILES` (how often each kind of step is
drawn) and `generate`, which draws a sequence from a seeded
`random.Random` while running it on a `ReferenceModel`, so that it can pick ids that make
sense (the claimed id to acknowledge, an id already stored to push again) as well as wrong
ones.  Every sequence ends with an audit: the status of every queue, a drain of every
unclaimed event with ``EX 0``, an ack of every claimed one, and the status again.

Never drawn (okq-protocol.md): expiring claims (``EX`` is 0, large, or the 30 s default), the
no-argument QSTATUS/QINFO (other checks' queues would show up), NOBLOCK inside a pipeline, and
the inputs of the known defects D1-D3 (no ``:`` or empty queue names, no CR/LF in ids, only
well-formed arrays of bulk strings).  Drawn rarely, as each costs a second: a QNOTIFY 1 that
times out (it is drawn when a registered queue has work or a push will wake it, and now and
then with a push to a queue it does not consume) and a close while a QNOTIFY waits.

Must not know: sockets, clocks, transcripts.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from ._model_ref import ReferenceModel

__all__ = ["CLIENTS", "PROFILES", "SECTIONS", "ModelStep", "describe", "generate"]

#: Logical clients of a sequence (each may disconnect and come back on a new connection).
CLIENTS: Final = 3


@dataclass(frozen=True, slots=True)
class ModelStep:
    """One step of a sequence on connection ``conn``.

    * ``argv`` None: the client closes ``conn`` (connection numbers are never reused).
    * ``argv`` alone: send it, read its reply.
    * with ``more``: those requests are pipelined behind ``argv`` in the same write; then every
      reply is read, in order.
    * with ``waker``: ``argv`` is a ``QNOTIFY`` that blocks; while it waits, connection
      ``waker[0]`` sends ``waker[1]`` (a push to a queue ``conn`` consumes) and reads its reply;
      then the QNOTIFY's reply is read.
    * with ``abandon``: ``argv`` (a ``QNOTIFY`` that waits) is sent and the client closes the
      connection without reading the reply; the server notices once the wait is over (§8).
    """

    conn: int
    argv: tuple[bytes, ...] | None
    more: tuple[tuple[bytes, ...], ...] = ()
    waker: tuple[int, tuple[bytes, ...]] | None = None
    abandon: bool = False

    @property
    def is_close(self) -> bool:
        """Whether this step closes the connection."""
        return self.argv is None

    @property
    def conns(self) -> frozenset[int]:
        """Every connection the step uses."""
        if self.waker is None:
            return frozenset((self.conn,))
        return frozenset((self.conn, self.waker[0]))

    @property
    def requests(self) -> tuple[tuple[bytes, ...], ...]:
        """``argv`` and the pipelined ``more`` (nothing for a close)."""
        return () if self.argv is None else (self.argv, *self.more)


def _words(argv: tuple[bytes, ...]) -> str:
    words = []
    for arg in argv:
        try:
            text = arg.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        if not text or not text.isprintable() or any(c in text for c in " \\\"'"):
            text = repr(arg)[1:]
        words.append(text)
    return " ".join(words)


def describe(step: ModelStep) -> str:
    """One line for a report: ``conn 1: QRPOP q EX 0``, ``conn 1: close``, pipelines joined by
    `` ; ``, a wake-up as ``conn 1: QNOTIFY 1 <- conn 2: QLPUSH ...``."""
    if step.argv is None:
        return f"conn {step.conn}: close"
    text = f"conn {step.conn}: " + " ; ".join(_words(argv) for argv in step.requests)
    if step.waker is not None:
        text += f" <- conn {step.waker[0]}: {_words(step.waker[1])}"
    if step.abandon:
        text += ", then close without reading"
    return text


#: Weights of the kinds of step, per profile.
PROFILES: Final[Mapping[str, Mapping[str, int]]] = {
    "events": {
        "push": 30,
        "pop": 20,
        "ack": 15,
        "peek": 8,
        "status": 10,
        "info": 4,
        "flush": 3,
        "register": 3,
        "notify": 3,
        "close": 3,
        "ping": 1,
        "error": 1,
        "pipeline": 5,
    },
    "consumers": {
        "push": 20,
        "pop": 12,
        "ack": 8,
        "peek": 3,
        "status": 12,
        "info": 4,
        "flush": 2,
        "register": 14,
        "notify": 14,
        "close": 10,
        "ping": 1,
        "error": 1,
        "pipeline": 3,
        "wake": 8,
        "abandon": 1,
    },
}

#: The protocol-notes sections each profile exercises.
SECTIONS: Final[Mapping[str, str]] = {
    "events": "§1, §4",
    "consumers": "§4, §7, §8",
}

#: The timeout of a QNOTIFY that a push to one of its queues wakes (it answers at once then).
WAKE_TIMEOUT: Final = b"3"
_LARGE_EX: Final = (b"3600", b"86400", b"1000000", b"999999999", b"+7200")
_CONTENTS: Final = (
    b"",
    b"x",
    b"hello world",
    b"two\r\nlines",
    b"\x00\xff\xfe bin",
    b"{}",
    b"$5\r\n*1\r\n",
    b"z" * 5000,
    b"L" * 150_000,
)


class _Drawer:
    """The state of one sequence being drawn."""

    def __init__(self, rng: random.Random, queues: Sequence[bytes], spare: bytes) -> None:
        self.rng = rng
        self.queues = tuple(queues)
        self.spare = spare  # a declared queue nothing is ever pushed to
        self.model = ReferenceModel()
        self.slots = list(range(CLIENTS))  # logical client -> its current connection
        self.next_conn = CLIENTS
        self.used: set[int] = set()
        self.ids_seen: list[bytes] = []
        self.counter = 0
        self.steps: list[ModelStep] = []
        self.batch: list[tuple[bytes, ...]] | None = None  # collecting a pipeline

    # -- small draws --------------------------------------------------------------------------

    def name(self, upper: bytes) -> bytes:
        return upper.lower() if self.rng.random() < 0.1 else upper

    def queue(self) -> bytes:
        return self.rng.choice(self.queues)

    def live_ids(self, queue: bytes) -> list[bytes]:
        return self.model.unclaimed(queue) + self.model.claimed(queue)

    def fresh_id(self) -> bytes:
        self.counter += 1
        new = b"e%d" % self.counter
        if self.rng.random() < 0.05:  # binary-safe ids (never CR or LF: defect D2)
            new = (
                self.rng.choice((b"", b"id with space", "\u00e9t\u00e9".encode(), b"\x00\xff"))
                + new
            )
        self.ids_seen.append(new)
        return new

    def extra(self) -> tuple[bytes, ...]:
        """Now and then an argument beyond the syntax (okq ignores it)."""
        return (b"extra",) if self.rng.random() < 0.05 else ()

    def emit(self, conn: int, argv: tuple[bytes, ...]) -> None:
        if self.batch is not None:
            self.batch.append(argv)
        else:
            self.steps.append(ModelStep(conn, argv))
        self.used.add(conn)
        self.model.send(conn, argv)

    # -- kinds of step ------------------------------------------------------------------------

    def push(self, conn: int) -> None:
        rng, queue = self.rng, self.queue()
        live = self.live_ids(queue)
        roll = rng.random()
        if live and roll < 0.25:
            event_id = rng.choice(live)  # a duplicate
        elif self.ids_seen and roll < 0.35:
            event_id = rng.choice(self.ids_seen)  # reused: acked, flushed or in another queue
        else:
            event_id = self.fresh_id()
        contents = rng.choice(_CONTENTS) if rng.random() < 0.3 else b"c-%d" % rng.randrange(1000)
        argv: tuple[bytes, ...] = (
            self.name(b"QRPUSH" if rng.random() < 0.3 else b"QLPUSH"),
            queue,
            event_id,
            contents,
        )
        roll = rng.random()
        if roll < 0.15 and self.batch is None:  # stored later: nothing may follow it at once
            argv += (rng.choice((b"NOBLOCK", b"noblock", b"NoBlock")),)
        elif roll < 0.2:
            argv += (b"extra", b"NOBLOCK")  # NOBLOCK not 4th: an ordinary push
        self.emit(conn, argv)

    def pop(self, conn: int) -> None:
        rng = self.rng
        argv: tuple[bytes, ...] = (self.name(b"QRPOP"), self.queue())
        roll = rng.random()
        if roll < 0.3:
            argv += (rng.choice((b"EX", b"ex", b"Ex")), rng.choice((b"0", b"0", b"-0")))
        elif roll < 0.6:
            argv += (b"EX", rng.choice(_LARGE_EX))
        elif roll < 0.65:
            argv += (
                b"EX",
                rng.choice((b"abc", b"-5", b"1.5", b"", b"99999999999999999999")),
            )  # bad values: errors
        elif roll < 0.7:
            argv += rng.choice(
                (
                    (b"EX",),
                    (b"foo", b"EX", b"0"),
                    (b"EX", b"0", b"NOACK"),
                    (b"EX", b"0", b"EX", b"3600"),  # only the first pair counts
                    (b"EX", b"3600", b"EX", b"0"),
                )
            )
        self.emit(conn, argv)

    def ack(self, conn: int) -> None:
        rng, queue = self.rng, self.queue()
        claimed, unclaimed = self.model.claimed(queue), self.model.unclaimed(queue)
        roll = rng.random()
        if claimed and roll < 0.6:
            event_id = rng.choice(claimed)
        elif unclaimed and roll < 0.7:
            event_id = rng.choice(unclaimed)  # QACK removes unclaimed events too
        elif self.ids_seen and roll < 0.85:
            event_id = rng.choice(self.ids_seen)
        else:
            event_id = b"never-%d" % rng.randrange(100)
        self.emit(conn, (self.name(b"QACK"), queue, event_id, *self.extra()))

    def peek(self, conn: int) -> None:
        command = b"QLPEEK" if self.rng.random() < 0.5 else b"QRPEEK"
        self.emit(conn, (self.name(command), self.queue(), *self.extra()))

    def status(self, conn: int, command: bytes = b"QSTATUS") -> None:
        rng = self.rng
        names = [*self.queues, self.spare]
        args = tuple(rng.choice(names) for _ in range(rng.randint(1, 4)))
        self.emit(conn, (self.name(command), *args))

    def info(self, conn: int) -> None:
        self.status(conn, b"QINFO")

    def flush(self, conn: int) -> None:
        self.emit(conn, (self.name(b"QFLUSH"), self.queue(), *self.extra()))

    def register(self, conn: int) -> None:
        rng = self.rng
        args = tuple(rng.choice(self.queues) for _ in range(rng.choice((0, 1, 1, 2, 2, 3))))
        self.emit(conn, (self.name(b"QREGISTER"), *args))

    def notify(self, conn: int) -> None:
        rng = self.rng
        has_work = any(self.model.unclaimed(q) for q in self.model.registered(conn))
        roll = rng.random()
        if roll < 0.05:
            timeout = rng.choice((b"x", b"-1", b"99999999999999999999"))  # errors
        elif has_work and roll < 0.3:
            timeout = b"1"  # answered at once: a registered queue has work
        else:
            timeout = rng.choice((b"0", b"0", b"+0", b"-0"))
        self.emit(conn, (self.name(b"QNOTIFY"), timeout))

    def abandon(self, conn: int) -> None:
        """A consumer closes while its QNOTIFY 1 waits: it counts until the wait is over."""
        registered = self.model.registered(conn)
        if not registered or any(self.model.unclaimed(q) for q in registered):
            self.notify(conn)
            return
        argv = (b"QNOTIFY", b"1")
        self.steps.append(ModelStep(conn, argv, abandon=True))
        self.model.send(conn, argv)
        self.model.close(conn)
        slot = self.slots.index(conn)
        self.slots[slot] = self.next_conn
        self.next_conn += 1

    def close(self, slot: int) -> None:
        conn = self.slots[slot]
        if conn not in self.used:
            self.push(conn)
            return
        self.steps.append(ModelStep(conn, None))
        self.model.close(conn)
        self.slots[slot] = self.next_conn
        self.next_conn += 1

    def ping(self, conn: int) -> None:
        self.emit(
            conn,
            self.rng.choice(((b"PING",), (b"ping",), (b"Ping", b"hello"), (b"PING", b"a", b"b"))),
        )

    def error(self, conn: int) -> None:
        """A request okq refuses: unknown command, too few arguments (the connection stays)."""
        queue = self.queue()
        argv = self.rng.choice(
            (
                (b"QPOP", queue),
                (b"qstatuss",),
                (b"QLPUSH", queue, b"e0"),
                (b"QRPUSH", queue),
                (b"QACK", queue),
                (b"QRPOP",),
                (b"QNOTIFY",),
                (b"QFLUSH",),
                (b"HELLO", b"3"),
            )
        )
        self.emit(conn, argv)

    def pipeline(self, conn: int) -> None:
        """2 to 5 requests in one write (nothing that blocks)."""
        self.batch = []
        kinds = (
            self.push,
            self.push,
            self.pop,
            self.ack,
            self.peek,
            self.status,
            self.flush,
            self.error,
        )
        for _ in range(self.rng.randint(2, 5)):
            self.rng.choice(kinds)(conn)
        batch, self.batch = self.batch, None
        self.steps.append(ModelStep(conn, batch[0], more=tuple(batch[1:])))

    def wake(self, conn: int) -> None:
        """A QNOTIFY 3 that waits, woken by another connection's push to one of its queues (or a
        QNOTIFY 1 that times out, the push going to a queue it does not consume)."""

        def idle(c: int) -> bool:
            queues = self.model.registered(c)
            return bool(queues) and not any(self.model.unclaimed(q) for q in queues)

        # A consumer registered a while ago if there is one (a fresh QREGISTER makes the
        # executor wait for okq to subscribe), else register this one now.
        ready = [c for c in self.slots if idle(c)]
        if ready and not idle(conn):
            conn = self.rng.choice(ready)
        if not self.model.registered(conn):
            empty = [q for q in self.queues if not self.model.unclaimed(q)]
            if empty:
                self.emit(
                    conn, (b"QREGISTER", *self.rng.sample(empty, self.rng.randint(1, len(empty))))
                )
        registered = sorted(self.model.registered(conn))
        if not registered or any(self.model.unclaimed(q) for q in registered):
            self.notify(conn)
            return
        others = [c for c in self.slots if c != conn]
        waker = self.rng.choice(others)
        queue = self.rng.choice(registered)
        elsewhere = [q for q in self.queues if q not in registered]
        if elsewhere and self.rng.random() < 0.05:
            queue = self.rng.choice(elsewhere)  # wakes nobody: the QNOTIFY times out
        push = (b"QRPUSH" if self.rng.random() < 0.3 else b"QLPUSH", queue, self.fresh_id(), b"w")
        # A push to a consumed queue is sure to wake it: a longer timeout, so a wake-up that a
        # loaded machine delivers late is not taken for one never delivered (a server that is
        # never woken still fails, with $-1 after it); a push elsewhere must wait 1 s out.
        timeout = WAKE_TIMEOUT if queue in registered else b"1"
        notify = (self.name(b"QNOTIFY"), timeout)
        self.steps.append(ModelStep(conn, notify, waker=(waker, push)))
        self.used.update((conn, waker))
        self.model.send_and_wake(conn, notify, waker, push)

    # -- the audit at the end ----------------------------------------------------------------

    def audit(self) -> None:
        conn = self.slots[0]
        self.emit(conn, (b"QSTATUS", *self.queues))
        for queue in self.queues:
            for _ in range(len(self.model.unclaimed(queue)) + 1):
                self.emit(conn, (b"QRPOP", queue, b"EX", b"0"))
            for event_id in list(self.model.claimed(queue)):
                self.emit(conn, (b"QACK", queue, event_id))
        self.emit(conn, (b"QSTATUS", *self.queues))


def generate(
    rng: random.Random,
    queues: Sequence[bytes],
    spare: bytes,
    steps: int,
    profile: str = "events",
) -> list[ModelStep]:
    """Draw one sequence of ``steps`` random steps followed by the audit.

    Args:
        rng: the only source of randomness.
        queues: the queues the sequence works on (no ``:``, not empty).
        spare: one more declared queue, only ever asked about (QSTATUS/QINFO).
        steps: how many random steps to draw before the audit.
        profile: a key of `PROFILES`.

    Raises:
        KeyError: unknown profile.
    """
    weights = PROFILES[profile]
    kinds = list(weights)
    drawer = _Drawer(rng, queues, spare)
    for _ in range(steps):
        kind = rng.choices(kinds, weights=[weights[k] for k in kinds])[0]
        slot = rng.randrange(CLIENTS)
        if kind == "close":
            drawer.close(slot)
        else:
            getattr(drawer, kind)(drawer.slots[slot])
    drawer.audit()
    return drawer.steps
