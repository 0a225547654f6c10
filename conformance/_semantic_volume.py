"""Semantic checks of okq under volume: many events, deep pipelines, concurrency, big payloads.

Owns the bodies and records of the checks of order across hundreds of events (§1, §4
QLPUSH/QRPUSH/QLPEEK/QRPEEK/QRPOP), pipelining (§2.1), several consumers or producers on one
queue at once (§4 QRPOP, QLPUSH) and large binary payloads (§1, §2.1).  Every body raises
`CheckFailed` at the first departure from the notes.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Final

from ._check import SemanticCheck
from ._resp import FramingError, encode_command, parse_reply
from ._semantic_base import (
    NIL,
    OK,
    PONG,
    REPLY_TIMEOUT_S,
    CheckFailed,
    Session,
    command_text,
    error,
    event,
    guarded,
    integer,
    show,
    status,
)

PREFIX: Final = b"conformance-sem-"

# -- order across many events ---------------------------------------------------------

Q_ORDER: Final = PREFIX + b"order"
#: Events in the order check.
ORDER_EVENTS: Final = 200
#: High-priority (QRPUSH) events pushed after them.
ORDER_URGENT: Final = 5


def _eid(i: int) -> bytes:
    return b"e%03d" % i


def check_order(host: str, port: int) -> list[str]:
    """200 QLPUSHes pop in push order; each QRPUSH jumps to the front; peeks see both ends."""
    q = Q_ORDER
    with Session(host, port) as s:
        c = s.open("conn 0")
        s.expect(c, NIL, b"QRPEEK", q, why="empty queue")
        for i in range(ORDER_EVENTS):
            s.expect(c, OK, b"QLPUSH", q, _eid(i), b"c%d" % i)
            if i in (0, 1, ORDER_EVENTS - 1):
                s.expect(
                    c, event(_eid(i), b"c%d" % i), b"QLPEEK", q, why="QLPEEK: the newest QLPUSH"
                )
                s.expect(c, event(_eid(0), b"c0"), b"QRPEEK", q, why="QRPEEK: the oldest QLPUSH")
        for j in range(ORDER_URGENT):
            s.expect(c, OK, b"QRPUSH", q, b"u%d" % j, b"urgent %d" % j)
            s.expect(
                c,
                event(b"u%d" % j, b"urgent %d" % j),
                b"QRPEEK",
                q,
                why="QRPEEK: the latest QRPUSH is next to be consumed",
            )
        s.expect(
            c,
            event(_eid(ORDER_EVENTS - 1), b"c%d" % (ORDER_EVENTS - 1)),
            b"QLPEEK",
            q,
            why="QRPUSH does not change the left end",
        )
        total = ORDER_EVENTS + ORDER_URGENT
        s.expect_counts(c, q, total, 0, 0, f"{total} events pushed")
        expected = [(b"u%d" % j, b"urgent %d" % j) for j in reversed(range(ORDER_URGENT))]
        expected += [(_eid(i), b"c%d" % i) for i in range(ORDER_EVENTS)]
        claimed = 0
        for n, (event_id, contents) in enumerate(expected):
            if n == 100:
                # A QRPUSH in the middle of consuming jumps ahead of the remaining events.
                s.expect(c, OK, b"QRPUSH", q, b"mid", b"m")
                s.expect(c, event(b"mid", b"m"), b"QRPOP", q, b"EX", b"0", why="QRPUSH mid-way")
            ex = b"30" if n % 7 == 0 else b"0"
            s.expect(
                c,
                event(event_id, contents),
                b"QRPOP",
                q,
                b"EX",
                ex,
                why=f"pop number {n + 1}: FIFO order after the QRPUSHed ones (latest first)",
            )
            claimed += ex == b"30"
            if n % 50 == 0 and n + 1 < len(expected):
                nxt = expected[n + 1]
                s.expect(c, event(*nxt), b"QRPEEK", q, why="QRPEEK skips claimed events")
        s.expect(c, NIL, b"QRPOP", q, why="emptied")
        s.expect(c, NIL, b"QLPEEK", q, why="only claimed events left")
        s.expect_counts(c, q, claimed, claimed, 0, "the EX 30 claims are still held")
        s.expect(c, OK, b"QFLUSH", q)
        s.expect_counts(c, q, 0, 0, 0, "flushed")
    return [f"{total + 1} events came out in the documented order ({claimed} left claimed)"]


# -- pipelining ----------------------------------------------------------------------

Q_PIPE: Final = PREFIX + b"pipeline"
#: Events pushed in the pipelining check (each with several commands around it).
PIPE_EVENTS: Final = 150


def _pipeline_plan() -> list[tuple[tuple[bytes, ...], bytes]]:
    """(command, exact expected reply) pairs whose replies depend on their order."""
    q = Q_PIPE
    plan: list[tuple[tuple[bytes, ...], bytes]] = []
    for i in range(PIPE_EVENTS):
        eid, contents = b"p%d" % i, b"pipelined %d\r\n" % i
        plan.append(((b"QLPUSH", q, eid, contents), OK))
        plan.append(((b"QLPEEK", q), event(eid, contents)))
        plan.append(((b"QSTATUS", q), status((q, i + 1, 0, 0))))
        if i % 10 == 0:
            plan.append(((b"QLPUSH", q, eid, b"dup"), error(b"ERR duplicate event " + eid)))
            plan.append(((b"PING", b"x%d" % i), PONG))
            plan.append(((b"NOSUCH%d" % i,), error(b'ERR unknown command "NOSUCH%d"' % i)))
            plan.append(((b"QACK", q), error(b"ERR missing args")))
    for i in range(PIPE_EVENTS):
        eid, contents = b"p%d" % i, b"pipelined %d\r\n" % i
        plan.append(((b"QRPEEK", q), event(eid, contents)))
        if i % 2:
            plan.append(((b"QRPOP", q, b"EX", b"0"), event(eid, contents)))
            plan.append(((b"QACK", q, eid), integer(0)))
        else:
            plan.append(((b"QRPOP", q), event(eid, contents)))
            plan.append(((b"QACK", q, eid), integer(1)))
    plan.append(((b"QRPOP", q), NIL))
    plan.append(((b"QSTATUS", q), status((q, 0, 0, 0))))
    return plan


def check_pipelining(host: str, port: int) -> list[str]:
    """Hundreds of commands in one write are answered one by one, in order (§2.1)."""
    plan = _pipeline_plan()
    with Session(host, port) as s:
        c = s.open("conn 0")
        blob = b"".join(encode_command(*args) for args, _ in plan)
        try:
            c.send(blob, REPLY_TIMEOUT_S)
        except OSError as exc:
            raise CheckFailed([f"writing {len(plan)} pipelined commands: {exc!r}"]) from exc
        deadline = time.monotonic() + 30.0
        for n, (args, expected) in enumerate(plan):
            reply, _ = s.read(
                c,
                f"reply {n + 1} of {len(plan)} ({command_text(args)})",
                max(0.1, deadline - time.monotonic()),
            )
            if reply != expected:
                raise CheckFailed(
                    [
                        f"reply {n + 1} of {len(plan)} pipelined in one write, to"
                        f" {command_text(args)}:",
                        f"  expected: {show(expected)}",
                        f"  got:      {show(reply)}",
                    ]
                )
        left = c.pending(0.2)
        if left:
            raise CheckFailed(
                [f"after all {len(plan)} replies: expected nothing more, got {show(left)}"]
            )
        # One request dribbled one byte per TCP segment: nothing comes before it is complete.
        request = encode_command(b"QLPUSH", Q_PIPE, b"split", b"in pieces")
        for k in range(len(request) - 1):
            c.send(request[k : k + 1], REPLY_TIMEOUT_S)
            if k % 16 == 15:
                early = c.pending(0.005)
                if early:
                    raise CheckFailed(
                        [f"expected no reply before the request was complete, got {show(early)}"]
                    )
        c.send(request[-1:], REPLY_TIMEOUT_S)
        reply, _ = s.read(c, "QLPUSH written one byte at a time")
        if reply != OK:
            raise CheckFailed(
                [
                    "QLPUSH written one byte at a time:",
                    f"  expected: {show(OK)}",
                    f"  got:      {show(reply)}",
                ]
            )
        s.expect(c, event(b"split", b"in pieces"), b"QRPOP", Q_PIPE, b"EX", b"0")
    return [
        f"{len(plan)} commands ({len(blob)} bytes) in one write: every reply exact and in"
        " order; a request split into 1-byte segments answered once complete"
    ]


# -- concurrency ---------------------------------------------------------------------

Q_CONC: Final = PREFIX + b"concurrent"
#: Events and consumer connections of the concurrent-consumers check.
CONC_EVENTS: Final = 300
CONC_CONSUMERS: Final = 6


def _in_threads(n: int, body: Callable[[int], None]) -> list[str]:
    """Run ``body(i)`` for i in range(n) at the same time; return the failures' lines."""
    problems: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            body(i)
        except CheckFailed as exc:
            with lock:
                problems.extend(exc.lines)
        except (OSError, threading.BrokenBarrierError) as exc:
            with lock:
                problems.append(f"thread {i}: {exc!r}")

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        if t.is_alive():
            problems.append("a thread did not finish within 60 s")
    return problems


def _parse_event(reply: bytes, what: str) -> tuple[bytes, bytes] | None:
    if reply == NIL:
        return None
    try:
        value = parse_reply(reply)
    except FramingError as exc:
        raise CheckFailed(
            [f"{what}: expected an event or $-1, got bytes that are not RESP: {exc}"]
        ) from exc
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], bytes)
        and isinstance(value[1], bytes)
        and reply == event(value[0], value[1])
    ):
        return value[0], value[1]
    raise CheckFailed([f"{what}: expected an event *2 [id, contents] or $-1, got {show(reply)}"])


def check_concurrent_consumers(host: str, port: int) -> list[str]:
    """Several connections popping one queue at once get distinct events, none lost (§4)."""
    q = Q_CONC
    with Session(host, port) as s:
        c = s.open("producer")
        blob = b"".join(
            encode_command(b"QLPUSH", q, b"c%d" % i, b"v%d" % i) for i in range(CONC_EVENTS)
        )
        c.send(blob, REPLY_TIMEOUT_S)
        for i in range(CONC_EVENTS):
            reply, _ = s.read(c, f"pipelined QLPUSH {i + 1}")
            if reply != OK:
                raise CheckFailed([f"QLPUSH c{i}: expected {show(OK)}, got {show(reply)}"])
        consumers = [s.open(f"consumer {i}") for i in range(CONC_CONSUMERS)]
        got: list[list[bytes]] = [[] for _ in consumers]

        def consume(i: int) -> None:
            conn = consumers[i]
            acked = i % 2 == 0  # half use EX 30 + QACK, half EX 0
            while True:
                args = (b"QRPOP", q, b"EX", b"30" if acked else b"0")
                found = _parse_event(s.call(conn, *args), f"{conn.label}: {command_text(args)}")
                if found is None:
                    return
                event_id, contents = found
                if contents != b"v" + event_id[1:]:
                    raise CheckFailed(
                        [
                            f"{conn.label}: event {event_id!r}: expected contents"
                            f" {b'v' + event_id[1:]!r}, got {contents!r}"
                        ]
                    )
                got[i].append(event_id)
                if len(got[i]) > CONC_EVENTS:
                    raise CheckFailed(
                        [
                            f"{conn.label}: expected at most the {CONC_EVENTS} events pushed;"
                            f" popped more (the latest: {event_id!r}): pops do not claim?"
                        ]
                    )
                if acked:
                    reply = s.call(conn, b"QACK", q, event_id)
                    if reply != integer(1):
                        raise CheckFailed(
                            [
                                f"{conn.label}: QACK of its own claim {event_id!r}: expected :1,"
                                f" got {show(reply)}"
                            ]
                        )

        problems = _in_threads(CONC_CONSUMERS, consume)
        if problems:
            raise CheckFailed(problems)
        everything = [e for part in got for e in part]
        wanted = {b"c%d" % i for i in range(CONC_EVENTS)}
        twice = sorted({e for e in everything if everything.count(e) > 1})
        lost = sorted(wanted - set(everything))
        if twice or lost or len(everything) != CONC_EVENTS:
            raise CheckFailed(
                [
                    f"{CONC_CONSUMERS} consumers popping {CONC_EVENTS} events concurrently:",
                    "  expected each delivered exactly once;"
                    f" got {len(everything)} deliveries, twice: {twice[:10]!r};"
                    f" lost: {lost[:10]!r}",
                ]
            )
        s.expect_counts(c, q, 0, 0, 0, "everything consumed and acknowledged")
    sizes = sorted(len(part) for part in got)
    return [
        f"{CONC_EVENTS} events popped by {CONC_CONSUMERS} connections at once, each exactly"
        f" once (per consumer: {sizes})"
    ]


Q_RACE: Final = PREFIX + b"push-race"
#: Ids pushed by every producer at once in the duplicate race.
RACE_IDS: Final = 20
RACE_PRODUCERS: Final = 5


def check_concurrent_duplicates(host: str, port: int) -> list[str]:
    """Producers pushing the same ids at once: exactly one +OK per id, the rest duplicates."""
    q = Q_RACE
    with Session(host, port) as s:
        producers = [s.open(f"producer {i}") for i in range(RACE_PRODUCERS)]
        winners: dict[bytes, list[int]] = {}
        lock = threading.Lock()

        def produce(i: int) -> None:
            conn = producers[i]
            order = list(range(RACE_IDS))
            blob = b"".join(encode_command(b"QLPUSH", q, b"r%d" % k, b"from %d" % i) for k in order)
            conn.send(blob, REPLY_TIMEOUT_S)
            for k in order:
                eid = b"r%d" % k
                reply, _ = s.read(conn, f"QLPUSH {eid.decode()}")
                if reply == OK:
                    with lock:
                        winners.setdefault(eid, []).append(i)
                elif reply != error(b"ERR duplicate event " + eid):
                    raise CheckFailed(
                        [
                            f"{conn.label}: QLPUSH {eid.decode()}: expected +OK or the"
                            f" duplicate error, got {show(reply)}"
                        ]
                    )

        problems = _in_threads(RACE_PRODUCERS, produce)
        if problems:
            raise CheckFailed(problems)
        bad = {k: v for k, v in winners.items() if len(v) != 1}
        missing = [b"r%d" % k for k in range(RACE_IDS) if b"r%d" % k not in winners]
        if bad or missing:
            raise CheckFailed(
                [
                    f"{RACE_PRODUCERS} producers pushing the same {RACE_IDS} ids at once:",
                    "  expected exactly one +OK per id and the duplicate error for the rest;"
                    f" got ids accepted more than once: {bad!r}; never accepted: {missing!r}",
                ]
            )
        c = producers[0]
        s.expect_counts(c, q, RACE_IDS, 0, 0, "one event per id")
        popped: dict[bytes, bytes] = {}
        for _ in range(RACE_IDS):
            args = (b"QRPOP", q, b"EX", b"0")
            found = _parse_event(s.call(c, *args), command_text(args))
            if found is None:
                break
            popped[found[0]] = found[1]
        # The order across ids depends on how the pushes interleaved; the contents do not.
        wanted = {eid: b"from %d" % who[0] for eid, who in winners.items()}
        if popped != wanted:
            raise CheckFailed(
                [
                    f"popping the {RACE_IDS} accepted events:",
                    "  expected each id once, with the accepted push's contents:",
                    f"  {sorted(wanted.items())!r}",
                    f"  got {sorted(popped.items())!r}",
                ]
            )
        s.expect(c, NIL, b"QRPOP", q, why="no rejected duplicate was stored")
    return [f"{RACE_PRODUCERS} producers x {RACE_IDS} ids: each id accepted exactly once"]


# -- payloads -------------------------------------------------------------------------

Q_BIG: Final = PREFIX + b"large"
#: Payload sizes of the large-payload check (1 MiB and 4 MiB, plus an odd size).
PAYLOAD_SIZES: Final = (1 << 20, 4 << 20, (1 << 20) + 13)


def _payload(size: int, seed: int) -> bytes:
    """Random bytes salted with CR, LF, NUL and fake RESP headers."""
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(size))
    salt = b"\r\n\x00$-1\r\n*2\r\n\r\n"
    for pos in range(0, size - len(salt), 4093):
        data[pos : pos + len(salt)] = salt
    data[-2:] = b"\r\n"
    return bytes(data)


def check_large_payloads(host: str, port: int) -> list[str]:
    """MiB-sized binary contents (and a binary id) round-trip byte-exact (§1, §2.1)."""
    q = Q_BIG
    with Session(host, port) as s:
        c = s.open("conn 0")
        timeout = 60.0
        items = [(b"big\r\n\x00%d" % n, _payload(size, n)) for n, size in enumerate(PAYLOAD_SIZES)]
        for event_id, contents in items:
            s.expect(c, OK, b"QLPUSH", q, event_id, contents, timeout_s=timeout)
        first, last = items[0], items[-1]
        s.expect(c, event(*first), b"QRPEEK", q, why="the oldest, byte-exact", timeout_s=timeout)
        s.expect(c, event(*last), b"QLPEEK", q, why="the newest, byte-exact", timeout_s=timeout)
        s.expect_counts(c, q, len(items), 0, 0, "large events stored")
        for n, (event_id, contents) in enumerate(items):
            ex = b"30" if n == 0 else b"0"
            s.expect(
                c,
                event(event_id, contents),
                b"QRPOP",
                q,
                b"EX",
                ex,
                why=f"{len(contents)} bytes",
                timeout_s=timeout,
            )
        s.expect(c, integer(1), b"QACK", q, items[0][0])
        s.expect(c, OK, b"QLPUSH", q, b"", b"", why="empty id and contents")
        s.expect(c, event(b"", b""), b"QRPOP", q, b"EX", b"0")
        s.expect_counts(c, q, 0, 0, 0, "all consumed")
    return [
        "contents of " + ", ".join(str(n) for n in PAYLOAD_SIZES) + " bytes (binary, CR/LF/NUL)"
        " round-tripped through QLPUSH, QRPEEK/QLPEEK and QRPOP"
    ]


def checks() -> list[SemanticCheck]:
    """The checks of this module."""
    return [
        SemanticCheck(
            name="semantic_fifo_priority_many",
            section="§4 QRPUSH",
            description=f"{ORDER_EVENTS} QLPUSHed events pop in push order, each QRPUSH is popped"
            " first (latest first), QLPEEK sees the newest QLPUSH and QRPEEK the next pop",
            queues=(Q_ORDER,),
            run=guarded(check_order),
            estimated_duration_s=1.0,
        ),
        SemanticCheck(
            name="semantic_pipelining_depth",
            section="§2.1",
            description="hundreds of commands written at once get every reply, exact and in order;"
            " a request split into 1-byte segments is answered only once complete",
            queues=(Q_PIPE,),
            run=guarded(check_pipelining),
            estimated_duration_s=1.0,
        ),
        SemanticCheck(
            name="semantic_concurrent_consumers",
            section="§4 QRPOP",
            description=f"{CONC_CONSUMERS} connections popping {CONC_EVENTS} events at once each"
            " get distinct events, none lost, none twice; QACK of each claim replies :1",
            queues=(Q_CONC,),
            run=guarded(check_concurrent_consumers),
            estimated_duration_s=1.5,
        ),
        SemanticCheck(
            name="semantic_concurrent_duplicates",
            section="§4 QLPUSH",
            description=f"{RACE_PRODUCERS} connections pushing the same ids at once: exactly one"
            " +OK per id, every other push the exact duplicate error",
            queues=(Q_RACE,),
            run=guarded(check_concurrent_duplicates),
            estimated_duration_s=0.5,
        ),
        SemanticCheck(
            name="semantic_large_payloads",
            section="§1",
            description="1 MiB and 4 MiB binary contents (CR, LF, NUL, fake RESP inside) and binary"
            " or empty ids round-trip byte-exact through push, peeks and pop",
            queues=(Q_BIG,),
            run=guarded(check_large_payloads),
            estimated_duration_s=2.0,
        ),
    ]
