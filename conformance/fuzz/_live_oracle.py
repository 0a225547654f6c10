"""The live fuzzer's wire side: markers, sentinels, one checked exchange, the verdict.

This module owns how one batch of inputs is judged on a live server. ``Wire`` knows the
server's address, the reply timeout and the marker (an unknown command with a unique name,
whose exact ``-ERR unknown command`` reply is learnt by ``calibrate``); ``Sentinel`` is a
bystander connection that pushes, peeks, pops and acks one event on its own queue and
compares the exact replies (or only PINGs, for a server that does not speak those commands).
``exchange`` writes a batch in one go and checks every reply against the model
(``_live_model``); ``classify`` turns what went wrong into an oracle's verdict: ``crash``,
``hang``, ``framing``, ``desync`` or ``damage`` (``slow`` when a late reply did come).
Standard library only.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from conformance._net import Connection, ReadFailure, connect
from conformance._resp import encode_command

from ._live_model import Ending, Expectation

__all__ = ["Item", "Problem", "Sentinel", "UsageError", "Wire", "classify", "exchange"]

PING: Final = encode_command(b"PING")
PONG: Final = b"+PONG\r\n"
#: How long an input that may end open is watched for the server's close (a crash shows here).
_OPEN_END_WAIT_S: Final = 0.05


class UsageError(Exception):
    """The run cannot start: the server is unreachable or does not answer as a RESP server."""


@dataclass(slots=True)
class Item:
    """One input of a batch: its bytes, what the model expects, its marker (request, reply)."""

    data: bytes
    expectation: Expectation
    marker: tuple[bytes, bytes] | None


@dataclass(slots=True)
class Problem:
    """What went wrong, on which input of the batch."""

    kind: str
    index: int
    detail: str


class Wire:
    """The server's address, the reply timeout and the marker format."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.token = secrets.token_hex(4).encode()
        self.marker_format: tuple[bytes, bytes] | None = None
        #: Every sentinel's queue (flushed at the end of a run).
        self.sentinel_queues: list[bytes] = []

    def connect(self, label: str) -> Connection:
        """A new connection (raises ``OSError`` when refused)."""
        return connect(self.host, self.port, label, timeout_s=self.timeout_s)

    def alive(self) -> bool:
        """A new connection is accepted and answers PING (three tries)."""
        for attempt in range(3):
            try:
                conn = self.connect("probe")
            except OSError:
                time.sleep(0.05 * (attempt + 1))
                continue
            try:
                conn.send(PING, self.timeout_s)
                reply, _ = conn.read_reply(time.monotonic() + self.timeout_s)
                return reply == PONG
            except (OSError, ReadFailure):
                time.sleep(0.05 * (attempt + 1))
            finally:
                conn.close()
        return False

    def marker(self, lane: int, n: int) -> tuple[bytes, bytes]:
        """Marker ``n`` of ``lane``: its request and its exact reply."""
        if self.marker_format is None:
            return PING, PONG
        name = b"FZ%s-%d-%d" % (self.token, lane, n)
        return encode_command(name), self.marker_format[0] + name + self.marker_format[1]

    def calibrate(self) -> None:
        """Learn how the server answers an unknown command (the marker's reply).

        Raises:
            UsageError: no RESP reply came.
        """
        name = b"FZ%s-0" % self.token
        try:
            conn = self.connect("calibrate")
        except OSError as exc:
            raise UsageError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        try:
            conn.send(encode_command(name), self.timeout_s)
            reply, _ = conn.read_reply(time.monotonic() + self.timeout_s)
        except (OSError, ReadFailure) as exc:
            raise UsageError(f"the server does not answer an unknown command: {exc}") from exc
        finally:
            conn.close()
        if reply.count(name) == 1 and reply.startswith(b"-"):
            head, _, tail = reply.partition(name)
            self.marker_format = (head, tail)

    def flush(self, queues: Sequence[bytes]) -> None:
        """``QFLUSH`` the queues, on a connection of its own (errors ignored)."""
        if not queues:
            return
        with contextlib.suppress(OSError, ReadFailure):
            conn = self.connect("flush")
            try:
                for start in range(0, len(queues), 200):
                    chunk = queues[start : start + 200]
                    conn.send(b"".join(encode_command(b"QFLUSH", q) for q in chunk), 10.0)
                    for _ in chunk:
                        conn.read_reply(time.monotonic() + 10.0)
            finally:
                conn.close()


class Sentinel:
    """A bystander connection checking its own queue (``full``) or only PING (``ping``)."""

    def __init__(self, wire: Wire, lane: int, mode: str = "full") -> None:
        self.wire = wire
        # A queue of its own per sentinel: a server restarted over the same storage (okq over
        # its Redis) may still hold a half-done round of an earlier sentinel.
        self.queue = b"fuzz-sentinel-%s-%d-%s" % (wire.token, lane, secrets.token_hex(3).encode())
        wire.sentinel_queues.append(self.queue)
        self.mode = mode
        self.count = 0
        self.conn: Connection | None = None

    def plan(self, n: int) -> tuple[bytes, bytes]:
        """Round ``n``: request bytes and the exact reply bytes."""
        if self.mode == "ping":
            return PING, PONG
        q = self.queue
        event_id = b"s%d" % n
        event = b"*2\r\n$%d\r\n%s\r\n$1\r\nc\r\n" % (len(event_id), event_id)
        request = (
            encode_command(b"QLPUSH", q, event_id, b"c")
            + encode_command(b"QRPEEK", q)
            + encode_command(b"QRPOP", q, b"EX", b"30")
            + encode_command(b"QACK", q, event_id)
        )
        return request, b"+OK\r\n" + event + event + b":1\r\n"

    def close(self) -> None:
        """Close the sentinel's connection (a new one is opened by the next round)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def round(self) -> str | None:
        """One round; None if every reply was exact, else what went wrong."""
        self.count += 1
        request, expected = self.plan(self.count)
        timeout = self.wire.timeout_s
        try:
            if self.conn is None:
                self.conn = self.wire.connect("sentinel")
            self.conn.send(request, timeout)
            got, _ = self.conn.read_exact(len(expected), time.monotonic() + timeout)
        except ReadFailure as exc:
            self.close()
            return f"sentinel: {exc.detail}; got {exc.got[:200]!r}"
        except OSError as exc:
            self.close()
            return f"sentinel: {exc}"
        if got != expected:
            self.close()
            return f"sentinel: expected {expected!r}, got {got[:300]!r}"
        return None

    def calibrate(self) -> str | None:
        """Fall back to PING rounds if the full round fails; what failed, if it did.

        Raises:
            UsageError: not even PING works.
        """
        problem = self.round()
        if problem is None:
            return None
        self.mode = "ping"
        self.close()
        if self.round() is not None:
            raise UsageError(f"the server does not answer PING: {problem}")
        return problem


def _read(conn: Connection, index: int, deadline: float, what: str) -> bytes | Problem:
    try:
        reply, _ = conn.read_reply(deadline)
    except ReadFailure as exc:
        kind = {"framing": "framing", "eof": "eof"}.get(exc.reason, "timeout")
        return Problem(kind, index, f"{what}: {exc.detail}; got {exc.got[:200]!r}")
    return reply


def _check_item(conn: Connection, index: int, item: Item, deadline: float) -> Problem | None:
    exp = item.expectation
    marker_reply = item.marker[1] if item.marker else None
    for n in range(exp.replies):
        reply = _read(conn, index, deadline, f"reply {n + 1} of {exp.replies}")
        if isinstance(reply, Problem):
            return reply
        if marker_reply is not None and reply == marker_reply:
            return Problem("desync", index, f"{n} replies instead of {exp.replies}")
    if exp.ending is Ending.COMPLETE and marker_reply is not None:
        reply = _read(conn, index, deadline, "the marker's reply")
        if isinstance(reply, Problem):
            return reply
        if reply != marker_reply:
            return Problem("desync", index, f"an extra reply {reply[:200]!r}")
    elif exp.ending is Ending.CLOSE:
        trouble = conn.expect_eof(deadline)
        if trouble is not None:
            return Problem("desync", index, f"{exp.reason}, so okq closes; but {trouble}")
    elif exp.ending is Ending.INCOMPLETE:
        extra = conn.pending(0.0)
        if extra:
            return Problem("desync", index, f"a reply to a cut-off request: {extra[:200]!r}")
    elif exp.ending is Ending.OPEN_END:
        conn.expect_eof(time.monotonic() + _OPEN_END_WAIT_S)
    return None


def exchange(conn: Connection, items: Sequence[Item], timeout_s: float) -> Problem | None:
    """Write the items in one go and check every reply; the first problem, if any.

    A problem's kind here is ``timeout``, ``eof``, ``framing`` or ``desync``.
    """
    payload = b"".join(i.data + (i.marker[0] if i.marker else b"") for i in items)
    block = sum(i.expectation.block_s for i in items)
    with contextlib.suppress(OSError):  # a server closing early: its replies still count
        conn.send(payload, timeout_s + block)
    for index, item in enumerate(items):
        # Each input's replies (or close) are due within timeout_s (plus its own QNOTIFY
        # waits) of the previous input's: a slow input early in a batch delays the rest.
        deadline = time.monotonic() + timeout_s + item.expectation.block_s
        problem = _check_item(conn, index, item, deadline)
        if problem is not None:
            return problem
    return None


def classify(
    wire: Wire,
    sentinel: Sentinel,
    conn: Connection,
    problem: Problem | None,
    items: Sequence[Item],
    *,
    run_sentinel: bool,
    grace: bool = True,
) -> Problem | None:
    """The oracle's verdict on an exchange (``problem`` as `exchange` returned it).

    A timeout is a ``hang`` only if a second chance of ``timeout_s`` (with ``grace``) brings
    nothing while the sentinel answers (else ``slow``), or the sentinel fails too on a
    server that still accepts connections; an EOF is a ``crash`` when no new connection is
    accepted, else a ``desync``. A clean exchange is followed by a sentinel round when
    ``run_sentinel``.
    """
    last = max(len(items) - 1, 0)
    if problem is not None and problem.kind == "timeout":
        trouble = sentinel.round()
        if trouble is not None and not wire.alive():
            return Problem("crash", problem.index, f"the server went down: {problem.detail}")
        if trouble is not None:
            return Problem("hang", problem.index, f"{problem.detail}; and {trouble}")
        if grace:
            late = _read(conn, problem.index, time.monotonic() + wire.timeout_s, "late")
            if not isinstance(late, Problem):
                return Problem("slow", problem.index, problem.detail)
        return Problem("hang", problem.index, problem.detail + " (the sentinel still answers)")
    if problem is not None and problem.kind == "eof":
        if not wire.alive():
            return Problem("crash", problem.index, f"the server went down: {problem.detail}")
        return Problem("desync", problem.index, f"unexpected close: {problem.detail}")
    if problem is not None:
        return problem
    if not run_sentinel:
        return None
    trouble = sentinel.round()
    if trouble is None:
        return None
    if not wire.alive():
        return Problem("crash", last, f"the server went down ({trouble})")
    return Problem("damage", last, trouble)
