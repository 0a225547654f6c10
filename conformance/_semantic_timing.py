"""Semantic checks of okq's timing: NOBLOCK, QNOTIFY waits and wake-ups, claim expiry.

Owns the bodies of the checks that measure time (okq-protocol.md §4 QLPUSH/QNOTIFY/QRPOP,
§6, §7, §13).  Each body takes ``(host, port)``, returns PASS lines (what was measured) or
raises `CheckFailed` at the first departure from the notes.  The tolerances are the
constants of ``_semantic_base``.
"""

from __future__ import annotations

import time
from typing import Final

from ._net import Connection, ReadFailure
from ._resp import encode_command
from ._semantic_base import (
    FAST_REPLY_MAX_S,
    NIL,
    NOBLOCK_VISIBLE_MAX_S,
    OK,
    POLL_INTERVAL_S,
    QNOTIFY_EARLY_S,
    QNOTIFY_LATE_S,
    QNOTIFY_WAKE_MAX_S,
    REDELIVERY_EARLY_S,
    REDELIVERY_SLACK_S,
    REPLY_TIMEOUT_S,
    SUBSCRIBE_SETTLE_S,
    CheckFailed,
    Session,
    bulk,
    command_text,
    error,
    event,
    integer,
    mismatch,
    show,
)

PREFIX: Final = b"conformance-sem-"

#: How long a dropped NOBLOCK duplicate is given to (wrongly) show up before the counts are
#: read: okq stores NOBLOCK pushes "well under 0.3 s" after replying (§6).
NOBLOCK_SETTLE_S: Final = 0.5
#: The claim duration the redelivery check uses (short, so the check is quick; long enough
#: to see that the claim is not given back early).
REDELIVERY_EX_S: Final = 2


def _fast(s: Session, conn: Connection, expected: bytes, *args: bytes, why: str) -> float:
    """A command that must reply ``expected`` at once (within FAST_REPLY_MAX_S)."""
    reply, elapsed = s.timed(conn, *args)
    if reply != expected:
        raise mismatch(conn, args, expected, reply, why)
    if elapsed > FAST_REPLY_MAX_S:
        raise CheckFailed(
            [
                f"{conn.label}: {command_text(args)} ({why}):",
                f"  expected the reply within {FAST_REPLY_MAX_S} s; it took {elapsed:.3f} s",
            ]
        )
    return elapsed


def _wait_reply(
    s: Session, conn: Connection, expected: bytes, lo: float, hi: float, what: str
) -> float:
    """Read the reply to a command already sent; insist on its bytes and on its timing.

    The elapsed time is counted from the latest write on ``conn`` and must be in [lo, hi].
    """
    reply, arrived = s.read(conn, what, timeout_s=hi + 5.0)
    elapsed = arrived - conn.last_write
    if reply != expected:
        raise CheckFailed(
            [
                f"{conn.label}: {what}:",
                f"  expected: {show(expected)} after {lo:.2f} to {hi:.2f} s",
                f"  got:      {show(reply)} after {elapsed:.3f} s",
            ]
        )
    if not lo <= elapsed <= hi:
        raise CheckFailed(
            [
                f"{conn.label}: {what}:",
                f"  expected {show(expected)} after {lo:.2f} to {hi:.2f} s",
                f"  it came after {elapsed:.3f} s",
            ]
        )
    return elapsed


def _notify_timeout(s: Session, conn: Connection, seconds: int, why: str) -> float:
    """``QNOTIFY <seconds>`` must reply nil after that many seconds (within the tolerance)."""
    s.send(conn, b"QNOTIFY", b"%d" % seconds)
    return _wait_reply(
        s,
        conn,
        NIL,
        seconds - QNOTIFY_EARLY_S,
        seconds + QNOTIFY_LATE_S,
        f"QNOTIFY {seconds} ({why})",
    )


# -- NOBLOCK ---------------------------------------------------------------------------

Q_NOBLOCK: Final = PREFIX + b"noblock"


def _poll_until(
    s: Session, conn: Connection, expected: bytes, args: tuple[bytes, ...], bound_s: float, why: str
) -> float:
    """Repeat a command until it replies ``expected``; return the seconds that took."""
    started = time.monotonic()
    while True:
        reply = s.call(conn, *args)
        waited = time.monotonic() - started
        if reply == expected:
            return waited
        if waited > bound_s:
            raise CheckFailed(
                [
                    f"{conn.label}: {command_text(args)} ({why}):",
                    f"  expected {show(expected)} within {bound_s} s",
                    f"  still {show(reply)} after {waited:.3f} s",
                ]
            )
        time.sleep(POLL_INTERVAL_S)


def check_noblock(host: str, port: int) -> list[str]:
    """NOBLOCK replies at once, stores the event a moment later and hides duplicates."""
    q = Q_NOBLOCK
    with Session(host, port) as s:
        c = s.open("conn 0")
        took = _fast(s, c, OK, b"QLPUSH", q, b"e1", b"c1", b"NOBLOCK", why="NOBLOCK push")
        seen = _poll_until(
            s,
            c,
            event(b"e1", b"c1"),
            (b"QRPEEK", q),
            NOBLOCK_VISIBLE_MAX_S,
            "the NOBLOCK push must become visible",
        )
        notes = [f"QLPUSH ... NOBLOCK replied in {took * 1000:.1f} ms; visible after {seen:.3f} s"]
        why_dup = "a NOBLOCK duplicate is not reported: +OK, then silently dropped (§4)"
        _fast(s, c, OK, b"QLPUSH", q, b"e1", b"other", b"NOBLOCK", why=why_dup)
        _fast(s, c, OK, b"QRPUSH", q, b"e1", b"other2", b"noblock", why=why_dup + ", any case")
        time.sleep(NOBLOCK_SETTLE_S)
        s.expect_counts(c, q, 1, 0, 0, f"{NOBLOCK_SETTLE_S} s after two NOBLOCK duplicates of e1")
        for peek in (b"QRPEEK", b"QLPEEK"):
            s.expect(c, event(b"e1", b"c1"), peek, q, why="the stored event is unchanged")
        _fast(s, c, OK, b"QRPUSH", q, b"e2", b"c2", b"NoBlock", why="NOBLOCK QRPUSH")
        _poll_until(
            s,
            c,
            event(b"e2", b"c2"),
            (b"QRPEEK", q),
            NOBLOCK_VISIBLE_MAX_S,
            "a NOBLOCK QRPUSH lands on the right (consuming) end",
        )
        s.expect(c, event(b"e1", b"c1"), b"QLPEEK", q, why="e1 stays on the left")
        s.expect(c, event(b"e2", b"c2"), b"QRPOP", q, b"EX", b"30", why="claim e2")
        _fast(s, c, OK, b"QLPUSH", q, b"e2", b"again", b"NOBLOCK", why=why_dup + " (id claimed)")
        time.sleep(NOBLOCK_SETTLE_S)
        s.expect_counts(c, q, 2, 1, 0, "e1 unclaimed, e2 claimed, no copy of either added")
        dup = error(b"ERR duplicate event e1")
        s.expect(c, dup, b"QLPUSH", q, b"e1", b"c", why="without NOBLOCK a duplicate is reported")
        s.expect(
            c,
            dup,
            b"QLPUSH",
            q,
            b"e1",
            b"c",
            b"extra",
            b"NOBLOCK",
            why="NOBLOCK counts only as the 4th argument (§4)",
        )
        s.expect(c, error(b"ERR duplicate event e2"), b"QRPUSH", q, b"e2", b"c", why="claimed id")
        s.expect(c, event(b"e1", b"c1"), b"QRPOP", q, b"EX", b"0")
        s.expect(c, NIL, b"QRPOP", q, why="nothing else was stored")
        s.expect(c, integer(1), b"QACK", q, b"e2")
        s.expect_counts(c, q, 0, 0, 0, "everything consumed")
    notes.append("NOBLOCK duplicates (unclaimed and claimed id) replied +OK and were dropped")
    return notes


# -- QNOTIFY -----------------------------------------------------------------------------

Q_NT: Final = PREFIX + b"notify-timeout"


def check_qnotify_timeout(host: str, port: int) -> list[str]:
    """QNOTIFY with nothing to do returns nil after exactly its timeout (§6, §13)."""
    with Session(host, port) as s:
        c = s.open("registered")
        u = s.open("unregistered")
        s.expect(c, OK, b"QREGISTER", q := Q_NT)
        one = _notify_timeout(s, c, 1, f"registered for the empty queue {q.decode()}")
        two = _notify_timeout(s, c, 2, "same, two seconds")
        _fast(s, c, NIL, b"QNOTIFY", b"0", why="QNOTIFY 0 never blocks")
        # An unregistered connection, with a PING pipelined behind its QNOTIFY.
        u.send(b"*2\r\n$7\r\nQNOTIFY\r\n$1\r\n1\r\n*1\r\n$4\r\nPING\r\n", 5.0)
        alone = _wait_reply(
            s, u, NIL, 1 - QNOTIFY_EARLY_S, 1 + QNOTIFY_LATE_S, "QNOTIFY 1 (no registrations)"
        )
        _wait_reply(s, u, b"+PONG\r\n", 0.0, 1 + QNOTIFY_LATE_S + 0.1, "PING pipelined behind it")
    return [
        f"QNOTIFY 1 -> nil after {one:.3f} s, QNOTIFY 2 after {two:.3f} s,"
        f" unregistered QNOTIFY 1 after {alone:.3f} s"
        f" (allowed: t - {QNOTIFY_EARLY_S} to t + {QNOTIFY_LATE_S} s)"
    ]


Q_WA: Final = PREFIX + b"wake-a"
Q_WB: Final = PREFIX + b"wake-b"
Q_WC: Final = PREFIX + b"wake-c"


def _woken(
    s: Session, waiter: Connection, name: bytes, pushed_at: float, ok_at: float, what: str
) -> float:
    """The waiter's QNOTIFY must return ``name`` between the push's write and ok + bound."""
    reply, arrived = s.read(waiter, what, timeout_s=10.0)
    if reply != bulk(name):
        raise CheckFailed(
            [
                f"{waiter.label}: {what}:",
                f"  expected: {show(bulk(name))}",
                f"  got:      {show(reply)}",
            ]
        )
    if arrived < pushed_at:
        raise CheckFailed(
            [
                f"{waiter.label}: {what}: expected the name after the push; it arrived"
                f" {pushed_at - arrived:.3f} s before the push was written"
            ]
        )
    latency = arrived - ok_at
    if latency > QNOTIFY_WAKE_MAX_S:
        raise CheckFailed(
            [
                f"{waiter.label}: {what}:",
                f"  expected the wake-up within {QNOTIFY_WAKE_MAX_S} s of the pusher's +OK",
                f"  it came {latency:.3f} s after it",
            ]
        )
    return latency


def _push(s: Session, conn: Connection, *args: bytes) -> tuple[float, float]:
    """Push; return (time of the write's start, time the +OK arrived)."""
    started = time.monotonic()
    s.send(conn, *args)
    reply, arrived = s.read(conn, command_text(args))
    if reply != OK:
        raise mismatch(conn, args, OK, reply, "push")
    return started, arrived


def check_qnotify_wake(host: str, port: int) -> list[str]:
    """A push wakes every waiting consumer of that queue promptly, and only those (§4, §7)."""
    with Session(host, port) as s:
        w1 = s.open("waiter 1")
        w2 = s.open("waiter 2")
        p = s.open("pusher")
        s.expect(w1, OK, b"QREGISTER", Q_WA, Q_WB)
        s.expect(w2, OK, b"QREGISTER", Q_WB)
        time.sleep(SUBSCRIBE_SETTLE_S)
        for w in (w1, w2):
            s.send(w, b"QNOTIFY", b"5")
        time.sleep(0.5)
        pushed, ok = _push(s, p, b"QLPUSH", Q_WB, b"e1", b"c1")
        lat1 = _woken(s, w1, Q_WB, pushed, ok, "QNOTIFY 5, woken by QLPUSH from another connection")
        lat2 = _woken(s, w2, Q_WB, pushed, ok, "QNOTIFY 5 on a second consumer of the same queue")
        s.expect(w1, event(b"e1", b"c1"), b"QRPOP", Q_WB, b"EX", b"0")
        s.expect(w2, NIL, b"QRPOP", Q_WB, why="the other consumer took it: woken means pushed")
        s.send(w1, b"QNOTIFY", b"5")
        time.sleep(0.3)
        pushed, ok = _push(s, p, b"QRPUSH", Q_WA, b"e2", b"c2")
        lat3 = _woken(s, w1, Q_WA, pushed, ok, "QNOTIFY 5, woken by QRPUSH to its other queue")
        s.expect(w1, event(b"e2", b"c2"), b"QRPOP", Q_WA, b"EX", b"0")
        # Routing: w1 re-registers for C only, w2 stays on B; a push to A wakes neither.
        s.expect(w1, OK, b"QREGISTER", Q_WC)
        time.sleep(SUBSCRIBE_SETTLE_S)
        for w in (w1, w2):
            s.send(w, b"QNOTIFY", b"1")
        time.sleep(0.3)
        _push(s, p, b"QLPUSH", Q_WA, b"e3", b"c3")
        lo, hi = 1 - QNOTIFY_EARLY_S, 1 + QNOTIFY_LATE_S
        _wait_reply(
            s, w1, NIL, lo - 0.3, hi, "QNOTIFY 1 after re-registering away from the pushed queue"
        )
        _wait_reply(s, w2, NIL, lo - 0.3, hi, "QNOTIFY 1 registered for another queue only")
        s.expect(p, integer(1), b"QACK", Q_WA, b"e3")
    return [
        f"wake-up latency after the pusher's +OK: {lat1 * 1000:.1f} / {lat2 * 1000:.1f} ms (QLPUSH,"
        f" 2 waiters), {lat3 * 1000:.1f} ms (QRPUSH); bound {QNOTIFY_WAKE_MAX_S} s",
        "pushes to an unregistered or de-registered queue woke nobody",
    ]


Q_IA: Final = PREFIX + b"immediate-a"
Q_IB: Final = PREFIX + b"immediate-b"


def check_qnotify_immediate(host: str, port: int) -> list[str]:
    """QNOTIFY answers at once when a registered queue has unclaimed work, else waits (§4, §7)."""
    with Session(host, port) as s:
        c = s.open("consumer")
        s.expect(c, OK, b"QREGISTER", Q_IA, Q_IB)
        s.expect(c, OK, b"QLPUSH", Q_IB, b"e1", b"c1")
        t5 = _fast(s, c, bulk(Q_IB), b"QNOTIFY", b"5", why="a registered queue already has work")
        _fast(s, c, bulk(Q_IB), b"QNOTIFY", b"0", why="QNOTIFY 0 with work")
        s.expect(c, event(b"e1", b"c1"), b"QRPOP", Q_IB, b"EX", b"30")
        _fast(s, c, NIL, b"QNOTIFY", b"0", why="the only event is claimed: nothing unclaimed")
        # A push while not waiting leaves a notification that the next QNOTIFY discards (§7).
        s.expect(c, OK, b"QLPUSH", Q_IA, b"e2", b"c2")
        s.expect(c, integer(1), b"QACK", Q_IA, b"e2", why="QACK deletes an unclaimed event")
        waited = _notify_timeout(s, c, 1, "the earlier push's notification must be discarded")
        s.expect(c, OK, b"QRPUSH", Q_IA, b"e3", b"c3")
        _fast(s, c, bulk(Q_IA), b"QNOTIFY", b"1", why="work on the other registered queue")
        s.expect(c, integer(1), b"QACK", Q_IA, b"e3")
        s.expect(c, integer(1), b"QACK", Q_IB, b"e1")
    return [
        f"QNOTIFY 5 with work answered in {t5 * 1000:.1f} ms; with only claimed or stale work"
        f" QNOTIFY 1 waited {waited:.3f} s"
    ]


# -- claims --------------------------------------------------------------------------------

Q_HIDDEN: Final = PREFIX + b"claim-hidden"


#: How long `check_claim_hidden` watches its claims (EX 4 and the default 30 s): longer
#: than a server with a short default expiry (2 s) plus a quick sweep would keep them.
CLAIM_WATCH_S: Final = 3.0


def check_claim_hidden(host: str, port: int) -> list[str]:
    """A claimed event is invisible, counted as processing and blocks its id until acked."""
    q = Q_HIDDEN
    with Session(host, port) as s:
        c = s.open("conn 0")
        for i in (1, 2, 3):
            s.expect(c, OK, b"QLPUSH", q, b"e%d" % i, b"c%d" % i)
        s.expect(c, event(b"e1", b"c1"), b"QRPOP", q, b"EX", b"4")
        s.expect(c, event(b"e2", b"c2"), b"QRPOP", q, why="default expiry: 30 s")
        started = time.monotonic()
        polls = 0
        while time.monotonic() - started < CLAIM_WATCH_S:
            why = f"e1 claimed with EX 4 and e2 for 30 s, {time.monotonic() - started:.1f} s ago"
            s.expect_counts(c, q, 3, 2, 0, why)
            s.expect(c, event(b"e3", b"c3"), b"QRPEEK", q, why="peeks skip the claimed events")
            s.expect(c, event(b"e3", b"c3"), b"QLPEEK", q, why="peeks skip the claimed events")
            polls += 1
            time.sleep(0.1)
        s.expect(c, error(b"ERR duplicate event e1"), b"QLPUSH", q, b"e1", b"x", why="claimed id")
        s.expect(c, error(b"ERR duplicate event e2"), b"QRPUSH", q, b"e2", b"x", why="claimed id")
        s.expect(c, event(b"e3", b"c3"), b"QRPOP", q, b"EX", b"3")
        for cmd in (b"QRPOP", b"QRPEEK", b"QLPEEK"):
            s.expect(c, NIL, cmd, q, why="all three claimed")
        s.expect_counts(c, q, 3, 3, 0, "all three claimed")
        s.expect(c, integer(1), b"QACK", q, b"e1")
        s.expect(c, integer(0), b"QACK", q, b"e1", why="already acknowledged")
        s.expect(c, integer(1), b"QACK", q, b"e2")
        s.expect(c, integer(1), b"QACK", q, b"e3")
        s.expect_counts(c, q, 0, 0, 0, "all acknowledged")
        s.expect(c, OK, b"QLPUSH", q, b"e1", b"again", why="an acked id may be reused")
        s.expect(c, event(b"e1", b"again"), b"QRPOP", q, b"EX", b"0")
    return [f"claimed events stayed hidden and processing over {polls} polls in {CLAIM_WATCH_S} s"]


Q_REDELIVER: Final = PREFIX + b"redelivery"
Q_QUIET: Final = PREFIX + b"redelivery-quiet"


class _QuietWatch:
    """A consumer of ``queue`` that keeps a ``QNOTIFY 1`` going while a claim expires.

    okq's sweep publishes nothing (§6, §9): a waiting QNOTIFY is never woken by a
    redelivery; only the initial check of the next QNOTIFY finds the event, so a name must
    come back at once after a QNOTIFY was sent, never after it has waited.
    """

    def __init__(self, s: Session, conn: Connection, queue: bytes) -> None:
        self.s = s
        self.conn = conn
        self.queue = queue
        self.sent_at: float | None = None
        self.named_after: float | None = None
        self.cycles = 0

    def _start(self) -> None:
        self.s.send(self.conn, b"QNOTIFY", b"1")
        self.sent_at = time.monotonic()

    def poll(self) -> None:
        """Take the running QNOTIFY's reply if it has come; start the next one."""
        if self.named_after is not None:
            return
        if self.sent_at is None:
            self._start()
            return
        try:
            reply, arrived = self.conn.read_reply(time.monotonic() + 0.001)
        except ReadFailure as exc:
            waited = time.monotonic() - self.sent_at
            if exc.reason == "timeout" and waited < 1 + QNOTIFY_LATE_S + 2.0:
                return
            raise CheckFailed(
                [
                    f"{self.conn.label}: QNOTIFY 1: expected a reply; {exc.detail};"
                    f" got {show(exc.got)}"
                ]
            ) from exc
        waited = arrived - self.conn.last_write
        self.cycles += 1
        if reply == NIL and waited >= 1 - QNOTIFY_EARLY_S:
            self._start()
            return
        if reply == bulk(self.queue) and waited <= FAST_REPLY_MAX_S + POLL_INTERVAL_S:
            self.named_after = waited
            return
        raise CheckFailed(
            [
                f"{self.conn.label}: QNOTIFY 1, registered for {self.queue.decode()} whose only"
                " event is claimed and then redelivered by the sweep:",
                "  expected $-1 after 1 s (a redelivery wakes nobody, §6), or the name at once"
                " (the next QNOTIFY's initial check)",
                f"  got {show(reply)} after {waited:.3f} s",
            ]
        )


def check_redelivery(host: str, port: int) -> list[str]:
    """An expired claim comes back (right end) within EX..EX+sweep, waking no QNOTIFY;
    acked, EX 0 and default-expiry claims do not come back."""
    q = Q_REDELIVER
    ex = REDELIVERY_EX_S
    with Session(host, port) as s:
        c = s.open("conn 0")
        watch = _QuietWatch(s, s.open("waiter"), Q_QUIET)
        s.expect(watch.conn, OK, b"QREGISTER", Q_QUIET)
        s.expect(c, OK, b"QLPUSH", Q_QUIET, b"quiet", b"c-quiet")
        for event_id in (b"acked", b"expiring", b"expiring2", b"default", b"ex0"):
            s.expect(c, OK, b"QLPUSH", q, event_id, b"c-" + event_id)
        s.expect(c, event(b"acked", b"c-acked"), b"QRPOP", q, b"EX", b"%d" % ex)
        s.expect(c, integer(1), b"QACK", q, b"acked")
        popped = time.monotonic()
        # Two claims made in one write (well under a millisecond apart), so one sweep puts
        # both back: the oldest claim must come back right-most (§6).
        pops = (b"QRPOP", q, b"EX", b"%d" % ex)
        c.send(encode_command(*pops) * 2, REPLY_TIMEOUT_S)
        for event_id in (b"expiring", b"expiring2"):
            reply, _ = s.read(c, command_text(pops))
            if reply != event(event_id, b"c-" + event_id):
                raise mismatch(c, pops, event(event_id, b"c-" + event_id), reply, "pipelined")
        s.expect(c, event(b"quiet", b"c-quiet"), b"QRPOP", Q_QUIET, b"EX", b"%d" % ex)
        s.expect(c, event(b"default", b"c-default"), b"QRPOP", q, why="default expiry, 30 s")
        s.expect(c, event(b"ex0", b"c-ex0"), b"QRPOP", q, b"EX", b"0")
        s.expect(c, NIL, b"QRPOP", q, why="every event is claimed or gone")
        s.expect(c, NIL, b"QRPEEK", q, why="every event is claimed or gone")
        s.expect(c, error(b"ERR duplicate event expiring"), b"QLPUSH", q, b"expiring", b"x")
        s.expect(c, OK, b"QLPUSH", q, b"later", b"c-later")
        s.expect_counts(c, q, 4, 3, 0, "'expiring', 'expiring2', 'default' claimed, 'later' not")
        time.sleep(SUBSCRIBE_SETTLE_S)
        bound = ex + REDELIVERY_SLACK_S
        # (queue, (total, processing) while claimed, once back) -> seconds it took
        pending = {q: ((4, 3), (4, 1)), Q_QUIET: ((1, 1), (1, 0))}
        back: dict[bytes, float] = {}
        polls = 0
        split_sweeps = False  # the two claims came back in different sweeps
        while pending or watch.named_after is None:
            watch.poll()
            for queue, (claimed, returned) in list(pending.items()):
                total, processing, _ = s.status_of(c, queue)
                since = time.monotonic() - popped  # the reply's arrival: the latest it came back
                polls += 1
                if (total, processing) == returned:
                    if since < ex - REDELIVERY_EARLY_S:
                        raise CheckFailed(
                            [
                                f"QSTATUS {queue.decode()}: expected the EX {ex} claim held for"
                                f" {ex} s; it was back after only {since:.3f} s"
                            ]
                        )
                    back[queue] = since
                    del pending[queue]
                elif queue == q and (total, processing) == (4, 2):
                    split_sweeps = True  # a sweep ran between the two expiries
                elif (total, processing) != claimed:
                    raise CheckFailed(
                        [
                            f"QSTATUS {queue.decode()} {since:.3f} s after QRPOP ... EX {ex}:",
                            f"  expected (total, processing) {claimed} (waiting for the sweep)"
                            f" or {returned} (back)",
                            f"  got total {total}, processing {processing}"
                            + (
                                "  (an acked or EX 0 event came back?)"
                                if total > claimed[0]
                                else ""
                            ),
                        ]
                    )
            since = time.monotonic() - popped
            if pending and since > bound:
                raise CheckFailed(
                    [
                        f"QSTATUS {b', '.join(pending).decode()}: the EX {ex} claim was not"
                        f" redelivered within {bound:.1f} s (EX + {REDELIVERY_SLACK_S} s;"
                        " okq's sweep runs every 10 s)",
                    ]
                )
            if since > bound + 1 + QNOTIFY_LATE_S + 2.0:
                raise CheckFailed(
                    [
                        f"{watch.conn.label}: expected a QNOTIFY to find the redelivered event of"
                        f" {Q_QUIET.decode()} by its initial check; {watch.cycles} QNOTIFY 1 all"
                        " replied $-1",
                    ]
                )
            time.sleep(POLL_INTERVAL_S)
        first, second = (b"expiring2", b"expiring") if split_sweeps else (b"expiring", b"expiring2")
        why = (
            "redelivered events go back to the right (consuming) end, the oldest claim"
            " right-most when one sweep returns several (§6)"
        )
        if split_sweeps:
            why = "the claim returned by the later sweep is right-most"
        s.expect(c, event(first, b"c-" + first), b"QRPEEK", q, why=why)
        s.expect(c, event(b"later", b"c-later"), b"QLPEEK", q, why="QLPEEK: the newest push")
        s.expect(
            c,
            error(b"ERR duplicate event default"),
            b"QLPUSH",
            q,
            b"default",
            b"x",
            why="the default-expiry (30 s) claim is still held",
        )
        s.expect(c, event(first, b"c-" + first), b"QRPOP", q, b"EX", b"0")
        s.expect(c, event(second, b"c-" + second), b"QRPOP", q, b"EX", b"0", why=why)
        s.expect(c, event(b"later", b"c-later"), b"QRPOP", q, b"EX", b"0")
        s.expect(c, NIL, b"QRPOP", q, why="neither the acked nor the EX 0 event came back")
        s.expect(c, integer(0), b"QACK", q, b"acked")
        s.expect(c, integer(0), b"QACK", q, b"ex0")
        s.expect(c, integer(1), b"QACK", q, b"default")
        s.expect(c, event(b"quiet", b"c-quiet"), b"QRPOP", Q_QUIET, b"EX", b"0")
        s.expect_counts(c, q, 0, 0, 0, "all done")
    return [
        f"EX {ex} claims redelivered {back[q]:.2f} / {back[Q_QUIET]:.2f} s after the pop (window"
        f" {ex} to {bound:.0f} s, {polls} polls"
        + (", in two sweeps" if split_sweeps else ", oldest claim right-most")
        + "); acked, EX 0 and default-expiry claims were not",
        f"the redelivery woke no waiting QNOTIFY ({watch.cycles - 1} QNOTIFY 1 replied nil"
        f" after 1 s); the next one found it at once",
    ]
