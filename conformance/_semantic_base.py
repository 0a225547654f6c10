"""Shared machinery of the semantic checks: sessions, expected reply bytes, tolerances.

Owns: `Session` (the raw connections one check opens, each command sent and its reply
compared byte for byte), `CheckFailed` (a check's first mismatch, with lines saying what
was expected and what came back), `guarded` (turns it into a FAIL finding), the builders
of okq's exact reply bytes (events, QSTATUS entries, QINFO lines) and the timing
tolerances every check uses, each with the measurement it comes from
(okq-protocol.md §6 and §13).  Uses only ``_net`` and ``_resp``; knows no transcripts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Final

from ._check import ProbeFinding
from ._net import Connection, ReadFailure, connect
from ._report import Outcome
from ._resp import FramingError, encode_command, parse_reply

__all__ = [
    "CONSUMER_DROP_MAX_S",
    "FAST_REPLY_MAX_S",
    "NOBLOCK_VISIBLE_MAX_S",
    "POLL_INTERVAL_S",
    "QNOTIFY_EARLY_S",
    "QNOTIFY_LATE_S",
    "QNOTIFY_WAKE_MAX_S",
    "REDELIVERY_EARLY_S",
    "REDELIVERY_SLACK_S",
    "REPLY_TIMEOUT_S",
    "SUBSCRIBE_SETTLE_S",
    "CheckFailed",
    "Session",
    "bulk",
    "command_text",
    "error",
    "event",
    "guarded",
    "integer",
    "mismatch",
    "qinfo",
    "show",
    "status",
]

# -- tolerances ----------------------------------------------------------------------

#: Seconds to wait for an ordinary reply before calling the server unresponsive.
REPLY_TIMEOUT_S: Final = 10.0

#: A ``QNOTIFY <t>`` with nothing to report must not return its nil earlier than
#: ``t - QNOTIFY_EARLY_S`` after our write.  okq measured 1.000 to 1.001 s for ``QNOTIFY 1``
#: (§13); the server cannot have started its timer before our last byte was written, so
#: only clock granularity can make an honest reply early: 20 ms covers that.
QNOTIFY_EARLY_S: Final = 0.02
#: ... and not later than ``t + QNOTIFY_LATE_S``.  okq: +0.001 s at most (§13); 0.2 s leaves
#: room for a loaded machine (other checks run at the same time) while a server that waits
#: a whole extra second, or twice its timeout, fails.
QNOTIFY_LATE_S: Final = 0.2
#: A push from another connection must wake a waiting QNOTIFY within this many seconds
#: of the pusher's ``+OK``.  okq: 0.01 to 0.2 ms, the notification being published before
#: the push replies (§13); 0.2 s tolerates a busy machine, not a poll loop of a second.
QNOTIFY_WAKE_MAX_S: Final = 0.2
#: A command that must not block (QNOTIFY that finds work, QNOTIFY 0, a NOBLOCK push)
#: must reply within this many seconds.  okq replies in well under a millisecond here.
FAST_REPLY_MAX_S: Final = 0.2
#: Pause after QREGISTER before a QNOTIFY that a push must wake: okq subscribes to the
#: queue's channel asynchronously, "a moment later (milliseconds)" (§6); the defect probes
#: and transcripts use the same 0.3 s.
SUBSCRIBE_SETTLE_S: Final = 0.3
#: A NOBLOCK push must be visible to a peek within this many seconds of its ``+OK``.  okq:
#: "well under 0.3 s in all recordings" (§6, §13); 2 s is generous yet bounded.
NOBLOCK_VISIBLE_MAX_S: Final = 2.0
#: After a registered connection is closed, its consumer count must drop within this many
#: seconds (an idle connection: okq notices the close at once, §8; the transcript
#: ``qregister_disconnect_deregisters`` checks 0.5 s later).
CONSUMER_DROP_MAX_S: Final = 2.0
#: Redelivery window: an expired claim comes back "between EX and EX + 10 s (plus a few
#: ms)" after the pop (§6); measured up to 14.8 s for EX 5 (§13).  The slow checks poll up to
#: ``EX + REDELIVERY_SLACK_S`` (okq's 10 s sweep plus 2 s), whatever the server's sweep period.
REDELIVERY_SLACK_S: Final = 12.0
#: A claim must not come back before ``EX - REDELIVERY_EARLY_S`` seconds after the pop was
#: sent (Redis TTLs are exact to the millisecond; 50 ms covers our own clock reads).
REDELIVERY_EARLY_S: Final = 0.05
#: How often the slow checks poll QSTATUS (§13's measurements polled every 5 to 20 ms).
POLL_INTERVAL_S: Final = 0.05

# -- expected bytes ------------------------------------------------------------------

OK: Final = b"+OK\r\n"
NIL: Final = b"$-1\r\n"
PONG: Final = b"+PONG\r\n"


def bulk(value: bytes) -> bytes:
    """``$<len>\\r\\n<value>\\r\\n``."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def integer(value: int) -> bytes:
    """``:<n>\\r\\n``."""
    return b":%d\r\n" % value


def error(text: bytes) -> bytes:
    """``-<text>\\r\\n`` (text includes ``ERR``)."""
    return b"-" + text + b"\r\n"


def event(event_id: bytes, contents: bytes) -> bytes:
    """An event as okq sends it: ``*2`` with the id and the contents."""
    return b"*2\r\n" + bulk(event_id) + bulk(contents)


def status(*entries: tuple[bytes, int, int, int]) -> bytes:
    """A QSTATUS reply for (name, total, processing, consumers) entries, in that order."""
    out = [b"*%d\r\n" % len(entries)]
    for name, total, processing, consumers in entries:
        out.append(
            b"*4\r\n" + bulk(name) + integer(total) + integer(processing) + integer(consumers)
        )
    return b"".join(out)


def _chars(name: bytes) -> int:
    # Go pads by runes: every invalid UTF-8 byte counts as one (surrogateescape does the same).
    return len(name.decode("utf-8", "surrogateescape"))


def qinfo(*entries: tuple[bytes, int, int, int]) -> bytes:
    """A QINFO reply for (name, total, processing, consumers) entries (§4 QINFO's layout)."""
    if not entries:
        return b"*0\r\n"
    width_name = max(1, *(len(e[0]) for e in entries))
    widths = [max(1, *(len(str(e[i])) for e in entries)) for i in (1, 2, 3)]
    out = [b"*%d\r\n" % len(entries)]
    for name, *numbers in entries:
        line = name + b" " * max(0, width_name - _chars(name))
        for label, number, width in zip(
            (b"  total: ", b"  processing: ", b"  consumers: "), numbers, widths, strict=True
        ):
            line += label + str(number).ljust(width).encode()
        out.append(bulk(line))
    return b"".join(out)


# -- rendering -----------------------------------------------------------------------

_MAX_SHOWN: Final = 200


def show(data: bytes) -> str:
    """``repr(data)``, shortened for long values (length and both ends)."""
    text = repr(data)
    if len(text) <= _MAX_SHOWN:
        return text
    return f"{len(data)} bytes: {data[:60]!r} ... {data[-40:]!r}"


def command_text(args: Sequence[bytes]) -> str:
    """A command as a human reads it: ``QLPUSH q e1 c1 NOBLOCK`` (long arguments shortened)."""
    parts = []
    for arg in args:
        text = arg.decode("utf-8", "backslashreplace")
        if len(arg) > 40 or any(c in arg for c in b"\r\n\x00 "):
            text = f"<{len(arg)} bytes>" if len(arg) > 40 else repr(arg)[1:]
        parts.append(text)
    return " ".join(parts)


def first_difference(expected: bytes, got: bytes) -> int:
    """Offset of the first byte where the two differ."""
    for i, (a, b) in enumerate(zip(expected, got, strict=False)):
        if a != b:
            return i
    return min(len(expected), len(got))


# -- sessions ------------------------------------------------------------------------


class CheckFailed(Exception):
    """The server did something other than the documented behaviour; ``lines`` say what."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = list(lines)


class Session:
    """The connections of one check; every one is closed by `close` (or ``with``)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.conns: list[Connection] = []

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self, label: str) -> Connection:
        """A new connection to the server."""
        try:
            conn = connect(self.host, self.port, label)
        except OSError as exc:
            raise CheckFailed(
                [f"cannot connect to {self.host}:{self.port} ({label}): {exc}"]
            ) from exc
        self.conns.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.conns:
            conn.close()

    # -- one command ---------------------------------------------------------------

    def send(self, conn: Connection, *args: bytes) -> None:
        """Write one command without reading its reply."""
        try:
            conn.send(encode_command(*args), REPLY_TIMEOUT_S)
        except OSError as exc:
            raise CheckFailed([f"{conn.label}: writing {command_text(args)}: {exc!r}"]) from exc

    def read(
        self, conn: Connection, what: str, timeout_s: float = REPLY_TIMEOUT_S
    ) -> tuple[bytes, float]:
        """Read one reply; return it and its arrival time (monotonic)."""
        try:
            return conn.read_reply(time.monotonic() + timeout_s)
        except ReadFailure as exc:
            raise CheckFailed(
                [f"{conn.label}: {what}: no complete reply: {exc.detail}", f"got: {show(exc.got)}"]
            ) from exc

    def call(self, conn: Connection, *args: bytes, timeout_s: float = REPLY_TIMEOUT_S) -> bytes:
        """Send one command and return its reply's bytes."""
        self.send(conn, *args)
        reply, _ = self.read(conn, command_text(args), timeout_s)
        return reply

    def timed(
        self, conn: Connection, *args: bytes, timeout_s: float = REPLY_TIMEOUT_S
    ) -> tuple[bytes, float]:
        """Send one command; return its reply and the seconds from our write to its arrival."""
        self.send(conn, *args)
        reply, arrived = self.read(conn, command_text(args), timeout_s)
        return reply, arrived - conn.last_write

    def expect(
        self,
        conn: Connection,
        expected: bytes,
        *args: bytes,
        why: str = "",
        timeout_s: float = REPLY_TIMEOUT_S,
    ) -> bytes:
        """Send one command and insist on ``expected`` as its exact reply."""
        reply = self.call(conn, *args, timeout_s=timeout_s)
        if reply != expected:
            raise mismatch(conn, args, expected, reply, why)
        return reply

    def expect_raw(self, conn: Connection, data: bytes, expected: bytes, why: str) -> None:
        """Write raw request bytes and insist on ``expected`` as the one reply."""
        try:
            conn.send(data, REPLY_TIMEOUT_S)
        except OSError as exc:
            raise CheckFailed([f"{conn.label}: writing {show(data)}: {exc!r}"]) from exc
        reply, _ = self.read(conn, f"the reply to {show(data)}")
        if reply != expected:
            raise CheckFailed(
                [
                    f"{conn.label}: sent {show(data)} ({why}):",
                    f"  expected: {show(expected)}",
                    f"  got:      {show(reply)}",
                ]
            )

    def status_of(self, conn: Connection, queue: bytes) -> tuple[int, int, int]:
        """``QSTATUS <queue>`` as (total, processing, consumers); insists on okq's shape."""
        reply = self.call(conn, b"QSTATUS", queue)
        try:
            value = parse_reply(reply)
        except FramingError as exc:
            raise CheckFailed([f"QSTATUS {command_text([queue])}: not RESP: {exc}"]) from exc
        if (
            isinstance(value, list)
            and len(value) == 1
            and isinstance(value[0], list)
            and len(value[0]) == 4
            and value[0][0] == queue
            and all(isinstance(v, int) for v in value[0][1:])
        ):
            total, processing, consumers = value[0][1:]
            assert isinstance(total, int)
            assert isinstance(processing, int)
            assert isinstance(consumers, int)
            if reply == status((queue, total, processing, consumers)):
                return total, processing, consumers
        raise CheckFailed(
            [
                f"{conn.label}: QSTATUS {command_text([queue])}:",
                "expected: *1 array holding one *4 entry [name, :total, :processing, :consumers]",
                f"got:      {show(reply)}",
            ]
        )

    def expect_counts(
        self, conn: Connection, queue: bytes, total: int, processing: int, consumers: int, why: str
    ) -> None:
        """Insist on QSTATUS counts for one queue."""
        self.expect(conn, status((queue, total, processing, consumers)), b"QSTATUS", queue, why=why)


def mismatch(
    conn: Connection, args: Sequence[bytes], expected: bytes, got: bytes, why: str
) -> CheckFailed:
    """The lines of a wrong reply: the command, why, expected and received bytes."""
    lines = [f"{conn.label}: {command_text(args)}" + (f" ({why})" if why else "") + ":"]
    lines.append(f"  expected: {show(expected)}")
    lines.append(f"  got:      {show(got)}")
    if len(repr(expected)) > _MAX_SHOWN or len(repr(got)) > _MAX_SHOWN:
        lines.append(f"  first difference at byte {first_difference(expected, got)}")
    return CheckFailed(lines)


def guarded(check: Callable[[str, int], list[str]]) -> Callable[[str, int], ProbeFinding]:
    """Run a check body: its returned lines make a PASS, a `CheckFailed` a FAIL."""

    def run(host: str, port: int) -> ProbeFinding:
        try:
            notes = check(host, port)
        except CheckFailed as exc:
            return ProbeFinding(Outcome.FAIL, tuple(exc.lines))
        except OSError as exc:
            return ProbeFinding(Outcome.FAIL, (f"connection error: {exc!r}",))
        return ProbeFinding(Outcome.PASS, tuple(notes))

    run.__name__ = check.__name__
    run.__doc__ = check.__doc__
    return run
