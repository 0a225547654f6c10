"""Two okq servers on one Redis, checked byte for byte: what one does, the other sees.

`check_two_instances` runs every check against a pair of addresses: two servers of ours on
one Redis, or ours and a real okq sharing its Redis (``OKQ_INTEROP_PEER``).  Queue names are
fresh per run, so nothing else in that Redis is touched or flushed.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from tests.redis_fixtures import Resp, bulk_strings

Address = tuple[str, int]

OK: Final = b"+OK\r\n"
NIL: Final = b"$-1\r\n"
#: How long a claimed event may take to come back: EX 1, then the next sweep of any instance
#: (ours sweep often in these tests; okq every 10 s).
REDELIVERY_WAIT_S: Final = 13.0


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def event(event_id: bytes, contents: bytes) -> bytes:
    return b"*2\r\n" + bulk(event_id) + bulk(contents)


def status(name: bytes, total: int, processing: int, consumers: int) -> bytes:
    return b"*4\r\n%s:%d\r\n:%d\r\n:%d\r\n" % (bulk(name), total, processing, consumers)


def poll(what: Callable[[], bytes], want: bytes, timeout_s: float) -> float:
    """Seconds until ``what()`` returns ``want`` (polled every 20 ms), or AssertionError."""
    started = time.monotonic()
    last = b""
    while time.monotonic() - started < timeout_s:
        last = what()
        if last == want:
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"still {last!r} after {timeout_s} s, want {want!r}")


@dataclass
class Findings:
    """What the run measured (printed by the test, for the record)."""

    wake_a_by_b_s: float = 0.0
    wake_b_by_a_s: float = 0.0
    redelivered_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def check_two_instances(a: Address, b: Address) -> Findings:
    """Everything an okq instance shares with another one on its Redis, both ways."""
    tag = uuid.uuid4().hex[:8].encode()
    q, q2, qc, qn, qr = (b"io-%s-%s" % (tag, s) for s in (b"q", b"q2", b"qc", b"qn", b"qr"))
    found = Findings()
    conns: list[Resp] = []

    def conn(addr: Address) -> Resp:
        c = Resp(*addr)
        conns.append(c)
        return c

    try:
        ca, cb = conn(a), conn(b)
        # pushed on A: peeked, popped and acknowledged on B
        assert ca.call("QLPUSH", q, "e1", "c1") == OK
        assert cb.call("QRPEEK", q) == event(b"e1", b"c1")
        assert cb.call("QLPEEK", q) == event(b"e1", b"c1")
        assert cb.call("QRPOP", q, "EX", 30) == event(b"e1", b"c1")
        for c in (ca, cb):
            assert c.call("QSTATUS", q) == b"*1\r\n" + status(q, 1, 1, 0)
            assert c.call("QRPEEK", q) == NIL
        assert cb.call("QACK", q, "e1") == b":1\r\n"
        assert ca.call("QACK", q, "e1") == b":0\r\n"
        # and back: pushed on B, popped on A (EX 0: acknowledged at once)
        assert cb.call("QRPUSH", q, "e2", "c2") == OK
        assert ca.call("QLPEEK", q) == event(b"e2", b"c2")
        assert ca.call("QRPOP", q, "EX", 0) == event(b"e2", b"c2")
        assert cb.call("QSTATUS", q) == b"*1\r\n" + status(q, 0, 0, 0)
        assert cb.call("QACK", q, "e2") == b":0\r\n"
        # duplicates are seen across instances, claimed or not
        assert ca.call("QLPUSH", q, "d1", "first") == OK
        assert cb.call("QLPUSH", q, "d1", "second") == b"-ERR duplicate event d1\r\n"
        assert cb.call("QRPOP", q) == event(b"d1", b"first")
        assert ca.call("QRPUSH", q, "d1", "third") == b"-ERR duplicate event d1\r\n"
        assert ca.call("QACK", q, "d1") == b":1\r\n"
        assert cb.call("QLPUSH", q, "d1", "again") == OK  # reusable once acknowledged
        # QSTATUS and QINFO: the same bytes on both
        assert ca.call("QLPUSH", q2, "x", "y") == OK
        assert ca.call("QLPUSH", q2, "x2", "y") == OK
        assert cb.call("QRPOP", q2, "EX", 60) == event(b"x", b"y")
        for command in (("QSTATUS", q, q2, b"io-none"), ("QINFO", q, q2), ("QINFO", q2)):
            assert ca.call(*command) == cb.call(*command), command
        assert ca.call("QSTATUS", q2) == b"*1\r\n" + status(q2, 2, 1, 0)
        mine = (b"QINFO", b"QSTATUS")
        for name in mine:
            listed_a, listed_b = ca.call(name), cb.call(name)
            if name == b"QINFO":
                lines_a = [x for x in bulk_strings(listed_a) if x.startswith(b"io-" + tag)]
                lines_b = [x for x in bulk_strings(listed_b) if x.startswith(b"io-" + tag)]
                assert lines_a == lines_b
                assert len(lines_a) == 2
            else:
                assert status(q, 1, 0, 0) in listed_a
                assert status(q, 1, 0, 0) in listed_b
                assert status(q2, 2, 1, 0) in listed_a
                assert status(q2, 2, 1, 0) in listed_b
        # D3: a name with ':' is listed exactly by a conforming server; okq lists it wrong
        colon = b"io-%s:colon" % tag
        assert ca.call("QLPUSH", colon, "k", "v") == OK
        for addr, c in ((a, ca), (b, cb)):
            if status(colon, 1, 0, 0) not in c.call("QSTATUS"):
                found.notes.append(f"D3 at {addr}: {colon!r} missing from QSTATUS's listing")
        assert cb.call("QSTATUS", colon) == b"*1\r\n" + status(colon, 1, 0, 0)
        assert cb.call("QFLUSH", colon) == OK
        # consumers add up across instances
        ra, rb, rb2 = conn(a), conn(b), conn(b)
        assert ra.call("QREGISTER", qc) == OK
        assert rb.call("QREGISTER", qc, q) == OK
        assert rb2.call("QREGISTER", qc, qc) == OK  # one connection counts once
        for c in (ca, cb):
            assert c.call("QSTATUS", qc, q) == b"*2\r\n" + status(qc, 0, 0, 3) + status(q, 1, 0, 1)
        assert ra.call("QREGISTER") == OK
        for c in (ca, cb):
            assert c.call("QSTATUS", qc) == b"*1\r\n" + status(qc, 0, 0, 2)
        rb2.close()
        conns.remove(rb2)
        poll(lambda: ca.call("QSTATUS", qc), b"*1\r\n" + status(qc, 0, 0, 1), 5.0)
        # a QNOTIFY waiting on one instance is woken by a push on the other
        for waiter_at, pusher, which in ((a, cb, "a"), (b, ca, "b")):
            w = conn(waiter_at)
            queue = qn + which.encode()
            assert w.call("QREGISTER", queue) == OK
            time.sleep(0.3)  # okq subscribes a moment after QREGISTER
            w.send("QNOTIFY", 10)
            time.sleep(0.2)
            assert pusher.call("QLPUSH", queue, "n1", "c") == OK
            pushed = time.monotonic()
            assert w.read() == bulk(queue)
            took = time.monotonic() - pushed
            assert took < 2.0
            if which == "a":
                found.wake_a_by_b_s = took
            else:
                found.wake_b_by_a_s = took
            assert w.call("QRPOP", queue, "EX", 0) == event(b"n1", b"c")
        # a claim taken on A and not acknowledged comes back, and B pops it
        assert ca.call("QLPUSH", qr, "r1", "redo") == OK
        assert ca.call("QRPOP", qr, "EX", 1) == event(b"r1", b"redo")
        assert cb.call("QRPEEK", qr) == NIL
        found.redelivered_s = poll(
            lambda: cb.call("QRPEEK", qr), event(b"r1", b"redo"), REDELIVERY_WAIT_S
        )
        assert cb.call("QRPOP", qr, "EX", 30) == event(b"r1", b"redo")
        assert cb.call("QACK", qr, "r1") == b":1\r\n"
        for c in (ca, cb):
            assert c.call("QSTATUS", qr) == b"*1\r\n" + status(qr, 0, 0, 0)
        return found
    finally:
        with contextlib.suppress(OSError):
            cleanup = Resp(*a)
            for queue in (q, q2, qr, qn + b"a", qn + b"b"):
                cleanup.call("QFLUSH", queue)
            cleanup.close()
        for c in conns:
            c.close()
