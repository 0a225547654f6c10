"""Semantic checks of QNOTIFY's shuffled choice and of the restore sweep (batch, wake-ups).

Owns the bodies of three checks (okq-protocol.md §4 QNOTIFY, §6, §7, §10):

* ``check_qnotify_shuffle``: with several registered queues holding work, repeated
  ``QNOTIFY 0`` calls name more than one of them (the initial check walks the registered
  queues in a freshly shuffled order) and never an empty or all-claimed queue.
* ``check_sweep_batch``: the sweep looks at the 50 oldest claims of a queue only
  (``LRANGE queue:{Q}:claimed -50 -1``): expired claims behind 50 unexpired older ones are
  never put back.
* ``check_redelivery_quick``: an EX 1 claim put back by a sweep wakes no waiting QNOTIFY
  (one QNOTIFY covers the whole window, so a short sweep always falls inside it).

Each body takes ``(host, port)``, returns PASS lines or raises `CheckFailed`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final

from ._net import Connection, ReadFailure
from ._resp import encode_command
from ._semantic_base import (
    FAST_REPLY_MAX_S,
    NIL,
    OK,
    POLL_INTERVAL_S,
    QNOTIFY_EARLY_S,
    QNOTIFY_LATE_S,
    REDELIVERY_EARLY_S,
    REDELIVERY_SLACK_S,
    REPLY_TIMEOUT_S,
    SUBSCRIBE_SETTLE_S,
    CheckFailed,
    Session,
    bulk,
    command_text,
    event,
    integer,
    mismatch,
    show,
)

PREFIX: Final = b"conformance-sem-"

# -- QNOTIFY's shuffled choice ------------------------------------------------------------

#: Registered queues that hold an unclaimed event.
Q_SHUFFLE_WORK: Final = tuple(PREFIX + b"shuffle-%d" % i for i in range(4))
#: A registered queue that is empty, and one whose only event is claimed.
Q_SHUFFLE_EMPTY: Final = PREFIX + b"shuffle-empty"
Q_SHUFFLE_CLAIMED: Final = PREFIX + b"shuffle-claimed"
Q_SHUFFLE: Final = (*Q_SHUFFLE_WORK, Q_SHUFFLE_EMPTY, Q_SHUFFLE_CLAIMED)

#: ``QNOTIFY 0`` calls made.  The initial check returns the first queue with work in a
#: uniformly shuffled order of the registered queues; by symmetry that is each of the
#: k = 4 queues with work with probability 1/4, independently per call.  All N calls name
#: the same queue with probability k * (1/k)^N = 4^(1 - N): N = 11 is the least with that
#: below 1e-6 (4^-10 = 9.5e-7); N = 16 gives 4^-15 = 9.3e-10, the chance a fair server
#: fails this check.
SHUFFLE_TRIES: Final = 16


def _read_fast(s: Session, conn: Connection, args: tuple[bytes, ...]) -> bytes:
    """Send one command that must answer at once; its reply."""
    reply, elapsed = s.timed(conn, *args)
    if elapsed > FAST_REPLY_MAX_S:
        raise CheckFailed(
            [
                f"{conn.label}: {command_text(args)} (never blocks):",
                f"  expected the reply within {FAST_REPLY_MAX_S} s; it took {elapsed:.3f} s",
            ]
        )
    return reply


def _fast_reply(
    s: Session, conn: Connection, expected: bytes, args: tuple[bytes, ...], why: str
) -> float:
    """Send one command that must answer ``expected`` at once; the seconds it took."""
    started = time.monotonic()
    reply = _read_fast(s, conn, args)
    if reply != expected:
        raise mismatch(conn, args, expected, reply, why)
    return time.monotonic() - started


def check_qnotify_shuffle(host: str, port: int) -> list[str]:
    """Repeated QNOTIFY 0 name more than one of the registered queues with work, and only
    those (§4 QNOTIFY step 3, §7)."""
    with Session(host, port) as s:
        c = s.open("consumer")
        for q in Q_SHUFFLE:
            s.expect(c, OK, b"QFLUSH", q)
        s.expect(c, OK, b"QREGISTER", *reversed(Q_SHUFFLE))
        for n, q in enumerate(Q_SHUFFLE_WORK):
            s.expect(c, OK, b"QLPUSH", q, b"e%d" % n, b"c%d" % n)
        s.expect(c, OK, b"QLPUSH", Q_SHUFFLE_CLAIMED, b"held", b"c-held")
        s.expect(c, event(b"held", b"c-held"), b"QRPOP", Q_SHUFFLE_CLAIMED, b"EX", b"30")
        work = {bulk(q): q for q in Q_SHUFFLE_WORK}
        seen: dict[bytes, int] = {}
        notify = (b"QNOTIFY", b"0")
        for attempt in range(SHUFFLE_TRIES):
            reply = _read_fast(s, c, notify)
            if reply not in work:
                raise CheckFailed(
                    [
                        f"{c.label}: QNOTIFY 0 (call {attempt + 1}), registered for"
                        f" {', '.join(q.decode() for q in Q_SHUFFLE)}:",
                        "  expected the name of one of the queues with an unclaimed event ("
                        + ", ".join(q.decode() for q in Q_SHUFFLE_WORK)
                        + "); the empty and the all-claimed queue are never named (§4)",
                        f"  got {show(reply)}",
                    ]
                )
            seen[work[reply]] = seen.get(work[reply], 0) + 1
        if len(seen) < 2:
            only = next(iter(seen)).decode()
            raise CheckFailed(
                [
                    f"{c.label}: {SHUFFLE_TRIES} QNOTIFY 0 with {len(Q_SHUFFLE_WORK)} registered"
                    f" queues holding work all named {only}:",
                    "  expected the initial check to walk the registered queues in a freshly"
                    " shuffled order, so calls pick different queues (§4 QNOTIFY step 3); a fair"
                    f" shuffle repeats one name {SHUFFLE_TRIES} times with probability"
                    f" {len(Q_SHUFFLE_WORK) ** (1 - SHUFFLE_TRIES):.1e}",
                ]
            )
        for n, q in enumerate(Q_SHUFFLE_WORK):
            s.expect(c, integer(1), b"QACK", q, b"e%d" % n)
        s.expect(c, integer(1), b"QACK", Q_SHUFFLE_CLAIMED, b"held")
        _fast_nil = _read_fast(s, c, notify)
        if _fast_nil != NIL:
            raise mismatch(c, notify, NIL, _fast_nil, "every event acked")
    counts = ", ".join(f"{q.decode()[len(PREFIX) :]} {n}" for q, n in sorted(seen.items()))
    return [
        f"{SHUFFLE_TRIES} QNOTIFY 0 named {len(seen)} of the {len(Q_SHUFFLE_WORK)} queues with"
        f" work ({counts}), never the empty or the all-claimed one"
    ]


# -- the sweep's batch -------------------------------------------------------------------

Q_BATCH: Final = PREFIX + b"sweep-batch"
Q_BATCH_CANARY: Final = PREFIX + b"sweep-batch-canary"
#: Claims the sweep looks at per queue and per sweep (§6, §10: ``LRANGE ... -50 -1``).
SWEEP_BATCH: Final = 50
#: Expired claims made after the `SWEEP_BATCH` unexpired ones.
BATCH_BEHIND: Final = 5
#: The unexpired claims' EX: far beyond the check's length (at most about 15 s).
BATCH_BLOCKER_EX_S: Final = 120
#: How long the queue is still watched once the canary came back: the rest of that sweep
#: (okq goes through the queues one after the other, in no set order) and more sweeps of a
#: server with a short sweep.
BATCH_CONFIRM_S: Final = 1.5


def _pipelined(s: Session, c: Connection, commands: Sequence[tuple[bytes, ...]]) -> list[bytes]:
    """Write ``commands`` at once; their replies in order."""
    c.send(b"".join(encode_command(*args) for args in commands), REPLY_TIMEOUT_S)
    return [s.read(c, command_text(args))[0] for args in commands]


def check_sweep_batch(host: str, port: int) -> list[str]:
    """Expired claims behind the 50 oldest (unexpired) claims of a queue are not put back
    (§6, §10 restore sweep)."""
    q, canary = Q_BATCH, Q_BATCH_CANARY
    token = b"%x" % time.time_ns()  # fresh ids: an earlier run's claim locks may outlive it
    blockers = [b"old-%s-%02d" % (token, i) for i in range(SWEEP_BATCH)]
    behind = [b"new-%s-%02d" % (token, i) for i in range(BATCH_BEHIND)]
    everything = blockers + behind
    with Session(host, port) as s:
        c = s.open("conn 0")
        s.expect(c, OK, b"QFLUSH", q)
        s.expect(c, OK, b"QFLUSH", canary)
        # QLPUSH in order: the first pushed is right-most, so the blockers are popped first
        # and are the oldest claims (the right end of the claimed list).
        pushes: list[tuple[bytes, ...]] = [(b"QLPUSH", q, i, b"c-" + i) for i in everything]
        for args, reply in zip(pushes, _pipelined(s, c, pushes), strict=True):
            if reply != OK:
                raise mismatch(c, args, OK, reply, "pipelined pushes")
        s.expect(c, OK, b"QLPUSH", canary, b"canary", b"c-canary")
        pops: list[tuple[bytes, ...]] = [(b"QRPOP", q, b"EX", b"%d" % BATCH_BLOCKER_EX_S)]
        pops *= SWEEP_BATCH
        pops += [(b"QRPOP", q, b"EX", b"1")] * BATCH_BEHIND
        for args, event_id, reply in zip(pops, everything, _pipelined(s, c, pops), strict=True):
            if reply != event(event_id, b"c-" + event_id):
                raise mismatch(c, args, event(event_id, b"c-" + event_id), reply, "pipelined")
        # Popped after the EX 1 claims, so it expires after them: a sweep that puts it back
        # ran once they had expired.
        popped = time.monotonic()
        s.expect(c, event(b"canary", b"c-canary"), b"QRPOP", canary, b"EX", b"1")
        held = len(everything)
        s.expect_counts(c, q, held, held, 0, "every event claimed")
        bound = 1 + REDELIVERY_SLACK_S
        canary_back: float | None = None
        polls = 0
        while True:  # bounded: ends BATCH_CONFIRM_S after the canary, or fails at `bound`
            total, processing, _ = s.status_of(c, q)
            since = time.monotonic() - popped
            polls += 1
            if (total, processing) != (held, held):
                raise CheckFailed(
                    [
                        f"QSTATUS {q.decode()} {since:.2f} s after {SWEEP_BATCH} claims with EX"
                        f" {BATCH_BLOCKER_EX_S} and then {BATCH_BEHIND} with EX 1:",
                        f"  expected (total, processing) ({held}, {held}): the sweep looks at the"
                        f" {SWEEP_BATCH} oldest claims of a queue only (§6, §10 LRANGE"
                        f" queue:{{Q}}:claimed -{SWEEP_BATCH} -1), none of which has expired, so"
                        " the expired claims behind them stay claimed",
                        f"  got ({total}, {processing})"
                        + (
                            "  (expired claims behind the batch were put back)"
                            if total == held
                            else ""
                        ),
                    ]
                )
            if canary_back is None:
                status = s.status_of(c, canary)
                since = time.monotonic() - popped
                if status[:2] == (1, 0):
                    if since < 1 - REDELIVERY_EARLY_S:
                        raise CheckFailed(
                            [
                                f"QSTATUS {canary.decode()}: expected the EX 1 claim held for 1 s;"
                                f" it was back after only {since:.3f} s"
                            ]
                        )
                    canary_back = since
                elif status[:2] != (1, 1):
                    raise CheckFailed(
                        [
                            f"QSTATUS {canary.decode()} {since:.2f} s after QRPOP ... EX 1:",
                            "  expected (total, processing) (1, 1) or (1, 0)",
                            f"  got {status[:2]}",
                        ]
                    )
                elif since > bound:
                    raise CheckFailed(
                        [
                            f"QSTATUS {canary.decode()}: the EX 1 claim was not redelivered"
                            f" within {bound:.1f} s (okq's sweep runs every 10 s)"
                        ]
                    )
            elif since > canary_back + BATCH_CONFIRM_S:
                break
            time.sleep(POLL_INTERVAL_S)
        s.expect(c, NIL, b"QRPEEK", q, why="nothing put back: every event still claimed")
        acks: list[tuple[bytes, ...]] = [(b"QACK", q, i) for i in everything]
        for args, reply in zip(acks, _pipelined(s, c, acks), strict=True):
            if reply != integer(1):
                raise mismatch(c, args, integer(1), reply, "claimed events are acked")
        s.expect(c, integer(1), b"QACK", canary, b"canary", why="redelivered, QACK removes it")
        s.expect_counts(c, q, 0, 0, 0, "all acked")
    return [
        f"{BATCH_BEHIND} expired EX 1 claims behind {SWEEP_BATCH} unexpired older claims stayed"
        f" claimed through the sweep that returned a later EX 1 claim of another queue"
        f" ({canary_back:.2f} s after the pop) and {BATCH_CONFIRM_S} s more ({polls} polls)"
    ]


# -- redelivery wakes nobody -------------------------------------------------------------

Q_QUIET_QUICK: Final = PREFIX + b"redelivery-quick"
#: How long the quick redelivery check waits for an EX 1 claim to come back, and the timeout
#: of the one QNOTIFY that waits through all of it.  okq's sweep runs every 10 s, so there
#: the claim is back within this window only sometimes; a server with a short sweep (a test
#: double's 0.5 s) always puts it back while that QNOTIFY waits.
QUICK_REDELIVERY_WINDOW_S: Final = 3


def check_redelivery_quick(host: str, port: int) -> list[str]:
    """Opportunistic: if an EX 1 claim comes back within a few seconds, it must not have come
    back early and must not have woken the QNOTIFY waiting on its queue (§6).

    One ``QNOTIFY 3`` is sent right after the pop and covers the whole window, so a claim
    back within it came back while that QNOTIFY waited (no gap between two QNOTIFYs where a
    redelivery would pass for the next one's initial check).
    """
    q = Q_QUIET_QUICK
    window = QUICK_REDELIVERY_WINDOW_S
    with Session(host, port) as s:
        c = s.open("conn 0")
        waiter = s.open("waiter")
        s.expect(waiter, OK, b"QREGISTER", q)
        s.expect(c, OK, b"QLPUSH", q, b"e1", b"c1")
        time.sleep(SUBSCRIBE_SETTLE_S)
        popped = time.monotonic()
        s.expect(c, event(b"e1", b"c1"), b"QRPOP", q, b"EX", b"1")
        s.send(waiter, b"QNOTIFY", b"%d" % window)
        sent = waiter.last_write - popped
        back: float | None = None
        reply: bytes | None = None
        waited = 0.0
        while reply is None:  # bounded: the QNOTIFY's reply is due within window + 2 s
            try:
                reply, arrived = waiter.read_reply(time.monotonic() + 0.001)
                waited = arrived - waiter.last_write
            except ReadFailure as exc:
                waited = time.monotonic() - waiter.last_write
                if exc.reason != "timeout" or waited > window + QNOTIFY_LATE_S + 2.0:
                    raise CheckFailed(
                        [
                            f"{waiter.label}: QNOTIFY {window}: expected a reply; {exc.detail};"
                            f" got {show(exc.got)}"
                        ]
                    ) from exc
            if back is None:
                total, processing, _ = s.status_of(c, q)
                since = time.monotonic() - popped
                if (total, processing) == (1, 0):
                    if since < 1 - REDELIVERY_EARLY_S:
                        raise CheckFailed(
                            [
                                f"QSTATUS {q.decode()}: expected the EX 1 claim held for 1 s;"
                                f" it was back after only {since:.3f} s"
                            ]
                        )
                    back = since
                elif (total, processing) != (1, 1):
                    raise CheckFailed(
                        [
                            f"QSTATUS {q.decode()} {since:.3f} s after QRPOP ... EX 1:",
                            "  expected (total, processing) (1, 1) or (1, 0)",
                            f"  got ({total}, {processing})",
                        ]
                    )
            if reply is None:
                time.sleep(POLL_INTERVAL_S)
        # A name at once is right only if the claim had already come back when the QNOTIFY
        # began (a stalled machine); otherwise the QNOTIFY must have waited its timeout.
        at_once = waited <= FAST_REPLY_MAX_S and sent >= 1 - REDELIVERY_EARLY_S
        if not (reply == NIL and waited >= window - QNOTIFY_EARLY_S) and not (
            reply == bulk(q) and at_once
        ):
            raise CheckFailed(
                [
                    f"{waiter.label}: QNOTIFY {window}, sent {sent:.3f} s after QRPOP {q.decode()}"
                    " EX 1 claimed its only event:",
                    f"  expected $-1 after {window} s: a redelivery wakes nobody (§4 QNOTIFY, §6),"
                    " only the next QNOTIFY's initial check finds it",
                    f"  got {show(reply)} after {waited:.3f} s"
                    + (f" (the claim was back {back:.3f} s after the pop)" if back else ""),
                ]
            )
        if back is None:  # one more look: it may have come back just before the reply
            total, processing, _ = s.status_of(c, q)
            if (total, processing) == (1, 0):
                back = time.monotonic() - popped
        found = None
        if back is not None and reply == NIL:
            found = _fast_reply(s, waiter, bulk(q), (b"QNOTIFY", b"0"), "the initial check")
        s.expect(c, integer(1), b"QACK", q, b"e1", why="claimed or redelivered, QACK removes it")
    if back is None:
        return [
            f"the EX 1 claim was not back within {window} s (okq's sweep runs every 10 s): the"
            " wake-up part was not observed this time"
        ]
    if found is None:
        return [f"EX 1 claim redelivered after {back:.2f} s, before the QNOTIFY began"]
    return [
        f"EX 1 claim redelivered after {back:.2f} s; it woke no waiting QNOTIFY {window} (nil"
        f" after {waited:.3f} s), QNOTIFY 0 then found it in {found * 1000:.1f} ms"
    ]
