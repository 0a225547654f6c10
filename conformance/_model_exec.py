"""Running a command sequence against a live okq server and judging every reply.

Owns: `execute`, which replays a sequence of `ModelStep` over raw TCP connections (one per
connection number, opened on first use), runs the same steps on a `ReferenceModel`, and stops
at the first step whose reply is not one the model allows or that breaks an invariant of the
`Ledger`; and `RunResult`, what it found.  Where okq finishes work after its reply (a NOBLOCK
push is stored a moment later, a closed consumer is deregistered once the server notices), it
polls ``QSTATUS`` of the sequence's queues on a connection of its own until the server agrees
with the model, within `SETTLE_S` (by default).

Every wait is bounded: a reply within `REPLY_TIMEOUT_S` (plus a QNOTIFY's own timeout), a settle
within `SETTLE_S` (by default).  Must not know: generation, shrinking, transcripts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ._model_gen import ModelStep, describe
from ._model_ledger import Ledger
from ._model_ref import Expected, ReferenceModel
from ._net import Connection, ReadFailure, connect
from ._resp import FramingError, encode_command, frame_reply

__all__ = [
    "QNOTIFY_AT_ONCE_S",
    "QNOTIFY_EARLY_S",
    "REPLY_TIMEOUT_S",
    "SETTLE_S",
    "WAKE_DELAY_S",
    "RunResult",
    "execute",
]

#: Seconds a reply may take (beyond a blocking QNOTIFY's own timeout).
REPLY_TIMEOUT_S: Final = 5.0
#: Seconds the server has to agree with the model after a NOBLOCK push or a consumer's close.
SETTLE_S: Final = 2.0
#: Pause after a NOBLOCK push of an id already stored: nothing to watch for, but the server
#: drops it in the background.
_NOBLOCK_DUPLICATE_PAUSE_S: Final = 0.002
_MAX_REPR: Final = 300
#: Seconds between a QNOTIFY that will wait and the push that wakes it: the server is then
#: waiting, and real okq has subscribed to a queue registered just before (okq-protocol.md §6).
WAKE_DELAY_S: Final = 0.05
#: A push that should wake a QNOTIFY comes at least this many times ``wake_delay_s`` after
#: the waiting connection's latest QREGISTER.
_REGISTER_FACTOR: Final = 3
#: A QNOTIFY that must wait may answer this much early (the server's clock, our clock).
QNOTIFY_EARLY_S: Final = 0.05
#: A QNOTIFY that must answer at once may take this long (a loaded machine).
QNOTIFY_AT_ONCE_S: Final = 0.8
#: How long the end of a run waits for bytes nobody asked for.
_STRAY_WAIT_S: Final = 0.002


@dataclass(frozen=True, slots=True)
class RunResult:
    """How one sequence went.

    Attributes:
        failed_at: index of the first failing step, or None if every step passed.
        lines: what went wrong (expected and received bytes, the broken invariant).
        steps_run: how many steps were carried out.
        setup_failed: the run never got to its first step (server unreachable, queues not
            emptied): not a finding about the steps.
    """

    failed_at: int | None
    lines: tuple[str, ...]
    steps_run: int
    setup_failed: bool = False

    @property
    def failed(self) -> bool:
        """Whether some step failed."""
        return self.failed_at is not None


class _Failure(Exception):
    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _short(data: bytes) -> str:
    text = repr(data)
    return text if len(text) <= _MAX_REPR else text[:_MAX_REPR] + "..."


def _allowed(expected: Expected) -> str:
    exact = expected.exact
    if exact is not None:
        return f"expected: {_short(exact)}"
    return "expected one of: " + ", ".join(_short(r) for r in sorted(expected.replies))


def _entries(reply: bytes) -> list[bytes]:
    """The entries of a QSTATUS reply, each as its bytes (``[]`` if it is not an array)."""
    if not reply.startswith(b"*"):
        return []
    try:
        pos = reply.index(b"\r\n") + 2
        count = int(reply[1 : pos - 2])
        entries = []
        for _ in range(max(count, 0)):
            end = frame_reply(reply, pos)
            if end is None:
                return []
            entries.append(reply[pos:end])
            pos = end
    except (ValueError, FramingError):
        return []
    return entries if pos == len(reply) else []


def _between(reply: bytes, allowed: list[tuple[bytes, bytes]]) -> bool:
    """Whether every entry of ``reply`` is its queue's entry before or after the step."""
    entries = _entries(reply)
    return len(entries) == len(allowed) and all(
        got in pair for got, pair in zip(entries, allowed, strict=True)
    )


class _Session:
    """The connections of one run, with the model and the ledger beside them."""

    def __init__(
        self,
        servers: Sequence[tuple[str, int]],
        queues: tuple[bytes, ...],
        settle_s: float,
        wake_delay_s: float,
    ) -> None:
        self.settle_s = settle_s
        self.wake_delay_s = wake_delay_s
        self.servers = tuple(servers)
        self.queues = queues
        self.model = ReferenceModel()
        self.ledger = Ledger()
        self.conns: dict[int, Connection] = {}
        self.observer: Connection | None = None
        self.registered_at: dict[int, float] = {}  # the latest QREGISTER of each connection
        self.elapsed = 0.0  # from the latest write on its connection to the latest reply read

    def _connect(self, label: str, number: int = 0) -> Connection:
        """Connection ``number`` goes to server ``number % len(servers)``."""
        host, port = self.servers[number % len(self.servers)]
        try:
            return connect(host, port, label)
        except OSError as exc:
            raise _Failure([f"cannot connect to {host}:{port}: {exc}"]) from exc

    def _request(self, conn: Connection, argv: tuple[bytes, ...], wait_s: float) -> bytes:
        try:
            conn.send(encode_command(*argv), REPLY_TIMEOUT_S)
            reply, _ = conn.read_reply(time.monotonic() + REPLY_TIMEOUT_S + wait_s)
        except OSError as exc:
            raise _Failure([f"write failed: {exc!r}"]) from exc
        except ReadFailure as exc:
            raise _Failure([exc.detail, f"got: {_short(exc.got)}"]) from exc
        return reply

    def settle(self, why: str, before: bytes | None = None, longer_s: float = 0.0) -> None:
        """Poll QSTATUS until the server agrees with the model (for at most ``settle_s``).

        Args:
            why: names the wait in a failure.
            before: the model's QSTATUS of the queues before the step, if known: while the
                server catches up, each queue's entry may only be as it was before or as it is
                after; anything else fails at once.
            longer_s: extra time the server may take (a QNOTIFY still waiting).
        """
        if self.observer is None:
            self.observer = self._connect("observer")
        want = self.model.status_reply(self.queues)
        allowed = None
        if before is not None:
            allowed = list(zip(_entries(before), _entries(want), strict=True))
        deadline = time.monotonic() + self.settle_s + longer_s
        pause = 0.001
        while True:
            got = self._request(self.observer, (b"QSTATUS", *self.queues), 0.0)
            if got == want:
                return
            late = time.monotonic() > deadline
            if late or (allowed is not None and not _between(got, allowed)):
                head = f"still differs after {self.settle_s + longer_s} s" if late else "is wrong"
                raise _Failure(
                    [
                        f"{why}: QSTATUS of the queues {head}",
                        f"expected: {_short(want)}",
                        f"got:      {_short(got)}",
                    ]
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _conn(self, number: int) -> Connection:
        conn = self.conns.get(number)
        if conn is None:
            conn = self.conns[number] = self._connect(f"conn {number}", number)
        return conn

    def _send(self, conn: Connection, data: bytes) -> None:
        try:
            conn.send(data, REPLY_TIMEOUT_S)
        except OSError as exc:
            raise _Failure([f"write failed: {exc!r}"]) from exc

    def _read(self, conn: Connection, wait_s: float) -> bytes:
        try:
            reply, arrived = conn.read_reply(time.monotonic() + REPLY_TIMEOUT_S + wait_s)
        except ReadFailure as exc:
            raise _Failure([exc.detail, f"got: {_short(exc.got)}"]) from exc
        self.elapsed = arrived - conn.last_write
        return reply

    def _timing(self, argv: tuple[bytes, ...], expected: Expected) -> None:
        """A QNOTIFY answers at once when it has something or a zero timeout, else after it."""
        if argv[0].upper() != b"QNOTIFY":
            return
        if expected.blocks_s > 0 and self.elapsed < expected.blocks_s - QNOTIFY_EARLY_S:
            raise _Failure(
                [f"QNOTIFY answered after {self.elapsed:.3f} s; it must wait {expected.blocks_s} s"]
            )
        if expected.blocks_s == 0 and self.elapsed > QNOTIFY_AT_ONCE_S:
            raise _Failure([f"QNOTIFY answered after {self.elapsed:.3f} s; it must answer at once"])

    def _judge(
        self, number: int, argv: tuple[bytes, ...], expected: Expected, got: bytes, what: str
    ) -> None:
        if got not in expected.replies:
            raise _Failure(
                [f"{what}{_allowed(expected)}", f"{' ' * len(what)}got:      {_short(got)}"]
            )
        problems = self.ledger.observe(number, argv, got)
        if problems:
            raise _Failure([f"{what}invariant broken: {p}" for p in problems])

    def run_step(self, step: ModelStep) -> None:
        if step.argv is None:
            conn = self.conns.pop(step.conn, None)
            if conn is not None:
                conn.close()
            self.ledger.closed(step.conn)
            before = self.model.status_reply(self.queues)
            if self.model.close(step.conn).settle:
                self.settle("after a registered connection closed", before)
            return
        if step.waker is not None:
            self._wake(step.conn, step.argv, *step.waker)
            return
        if step.abandon:
            self._abandon(step.conn, step.argv)
            return
        requests = step.requests
        before = self.model.status_reply(self.queues)
        expected = [self.model.send(step.conn, argv) for argv in requests]
        conn = self._conn(step.conn)
        self._send(conn, b"".join(encode_command(*argv) for argv in requests))
        for n, (argv, want) in enumerate(zip(requests, expected, strict=True)):
            what = f"reply {n + 1} of {len(requests)}: " if len(requests) > 1 else ""
            self._judge(step.conn, argv, want, self._read(conn, want.blocks_s), what)
            if len(requests) == 1:
                self._timing(argv, want)
            if argv[0].upper() == b"QREGISTER":
                self.registered_at[step.conn] = time.monotonic()
        if any(e.settle for e in expected):
            self.settle("after a NOBLOCK push", before)
            if before == self.model.status_reply(self.queues):
                time.sleep(_NOBLOCK_DUPLICATE_PAUSE_S)

    def _abandon(self, number: int, argv: tuple[bytes, ...]) -> None:
        expected = self.model.send(number, argv)
        conn = self._conn(number)
        self._send(conn, encode_command(*argv))
        time.sleep(self.wake_delay_s)  # the server has read the QNOTIFY before the close
        del self.conns[number]
        conn.close()
        self.ledger.closed(number)
        before = self.model.status_reply(self.queues)
        if self.model.close(number).settle:
            if expected.blocks_s > 0:  # okq notices the close only once the wait is over
                if self.observer is None:
                    self.observer = self._connect("observer")
                got = self._request(self.observer, (b"QSTATUS", *self.queues), 0.0)
                if got != before:
                    raise _Failure(
                        [
                            "a consumer closed during its QNOTIFY 1 must count until the wait"
                            " is over (okq-protocol.md §8)",
                            f"expected: {_short(before)}",
                            f"got:      {_short(got)}",
                        ]
                    )
            self.settle("after a consumer closed during its QNOTIFY", before, expected.blocks_s)

    def _wake(
        self, number: int, argv: tuple[bytes, ...], waker: int, push: tuple[bytes, ...]
    ) -> None:
        expected, pushed = self.model.send_and_wake(number, argv, waker, push)
        conn, other = self._conn(number), self._conn(waker)
        self._send(conn, encode_command(*argv))
        # okq subscribes a queue a moment after QREGISTER (§6); a loaded machine needs longer.
        registered = self.registered_at.get(number, -1e9) + _REGISTER_FACTOR * self.wake_delay_s
        time.sleep(max(self.wake_delay_s, registered - time.monotonic()))
        self._send(other, encode_command(*push))
        self._judge(waker, push, pushed, self._read(other, 0.0), f"conn {waker}'s push: ")
        self._judge(number, argv, expected, self._read(conn, expected.blocks_s), "QNOTIFY: ")

    def start(self) -> None:
        """Empty the queues, and wait for registrations of an earlier run to go."""
        self.observer = self._connect("observer")
        for queue in self.queues:
            if self._request(self.observer, (b"QFLUSH", queue), 0.0) != b"+OK\r\n":
                raise _Failure([f"set-up: QFLUSH {queue!r} did not answer +OK"])
        self.settle("before the first step (connections of an earlier run)")

    def stray_bytes(self) -> None:
        """Fail if a connection holds bytes no request asked for (a reply too many)."""
        if not self.conns:
            return
        time.sleep(_STRAY_WAIT_S)
        for number, conn in sorted(self.conns.items()):
            left = conn.pending(_STRAY_WAIT_S / 4)
            if left:
                raise _Failure(
                    [f"conn {number} has unread bytes after the last step: {_short(left)}"]
                )

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()
        self.conns.clear()
        if self.observer is not None:
            self.observer.close()


def execute(
    host: str,
    port: int,
    queues: Sequence[bytes],
    steps: Sequence[ModelStep],
    *,
    settle_s: float = SETTLE_S,
    wake_delay_s: float = WAKE_DELAY_S,
    others: Sequence[tuple[str, int]] = (),
) -> RunResult:
    """Run ``steps`` against the okq server at ``host:port`` and judge each reply.

    Args:
        queues: every queue the steps use; flushed first (and no connection may stay
            registered for them from before, within ``settle_s``).
        steps: the sequence.
        settle_s: how long the server may take to agree with the model after a NOBLOCK push
            or a consumer's close (polled with QSTATUS of ``queues``).
        wake_delay_s: pause between a QNOTIFY that waits and the push that wakes it.
        others: more okq servers sharing the first one's Redis: connection ``n`` goes to
            server ``n % (1 + len(others))`` (the first is ``host:port``), so pushes, pops,
            consumer counts and wake-ups cross instances (okq-protocol.md §11).

    Returns:
        The first failing step and why, or a pass.
    """
    session = _Session(((host, port), *others), tuple(queues), settle_s, wake_delay_s)
    index = -1
    try:
        session.start()
        for step in steps:
            index += 1
            session.run_step(step)
        session.stray_bytes()
    except _Failure as exc:
        lines = tuple("  " + line for line in exc.lines)
        if index < 0:
            return RunResult(None, ("set-up:", *lines), 0, setup_failed=True)
        return RunResult(index, (f"step {index} ({describe(steps[index])}):", *lines), index)
    finally:
        session.close()
    return RunResult(None, (), len(steps))
