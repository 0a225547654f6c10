"""Semantic checks of okq's exact reply shapes, argument rules, counts and listings.

Owns the bodies and records of the checks that an altered server could get wrong in the
bytes rather than in the timing: nil bulk ``$-1`` where okq never sends ``*-1``, QACK's
``:1``/``:0``, the duplicate-id and argument errors (§2.2, §5), QRPOP's ``EX`` rules
(§3.1, §4 QRPOP), QACK and QFLUSH semantics (§4), consumer counts (§7, §8) and the
no-argument QSTATUS/QINFO listing (§4 QSTATUS/QINFO; needs an empty server).
"""

from __future__ import annotations

import re
import time
from typing import Final

from ._check import SemanticCheck
from ._net import Connection
from ._resp import FramingError, parse_reply
from ._semantic_base import (
    CONSUMER_DROP_MAX_S,
    NIL,
    OK,
    POLL_INTERVAL_S,
    PONG,
    QNOTIFY_LATE_S,
    SUBSCRIBE_SETTLE_S,
    CheckFailed,
    Session,
    error,
    event,
    guarded,
    integer,
    mismatch,
    qinfo,
    show,
    status,
)

__all__ = ["checks"]

PREFIX: Final = b"conformance-sem-"
_ENTRY: Final = "*4 [name, :total, :processing, :consumers]"

# -- reply shapes ----------------------------------------------------------------------

Q_SA: Final = PREFIX + b"shape-a"
Q_SB: Final = PREFIX + b"shape-b"
Q_SC: Final = PREFIX + b"shape-unknown"


def check_reply_shapes(host: str, port: int) -> list[str]:
    """The exact reply forms of §2.2: +OK/+PONG, :n, $-1 (never *-1), *2 events, errors."""
    a, b, unknown = Q_SA, Q_SB, Q_SC
    with Session(host, port) as s:
        c = s.open("conn 0")
        s.expect(c, PONG, b"PING")
        s.expect(c, PONG, b"PING", b"hello", b"world", why="arguments are not echoed")
        for cmd in (b"QRPOP", b"QLPEEK", b"QRPEEK"):
            s.expect(c, NIL, cmd, unknown, why="nothing there: nil bulk $-1, never *-1")
        s.expect(c, NIL, b"QRPOP", unknown, b"EX", b"0", why="nothing there")
        s.expect(c, NIL, b"QNOTIFY", b"0", why="QNOTIFY 0 with nothing registered")
        s.expect(c, integer(0), b"QACK", unknown, b"e1", why="unknown queue")
        s.expect(c, OK, b"QLPUSH", a, b"e1", b"c1")
        s.expect(c, OK, b"qlpush", a, b"e2", b"c2", why="command names in any case")
        s.expect(c, OK, b"QRPUSH", b, b"e1", b"other queue", why="ids are per queue")
        dup = error(b"ERR duplicate event e1")
        s.expect(c, dup, b"QLPUSH", a, b"e1", b"x", why="duplicate id (unclaimed)")
        s.expect(c, dup, b"QRPUSH", a, b"e1", b"x", why="duplicate id via QRPUSH")
        s.expect(c, integer(0), b"QACK", a, b"nope", why="unknown id")
        s.expect(c, integer(0), b"QACK", unknown, b"e1", why="the id exists, but in another queue")
        s.expect(c, event(b"e1", b"c1"), b"QRPEEK", a)
        s.expect(c, event(b"e2", b"c2"), b"QLPEEK", a)
        s.expect(c, event(b"e1", b"c1"), b"QRPOP", a, why="claim e1")
        s.expect(c, dup, b"QLPUSH", a, b"e1", b"x", why="duplicate id (claimed)")
        entries = [(a, 2, 1, 0), (unknown, 0, 0, 0), (b, 1, 0, 0), (a, 2, 1, 0)]
        s.expect(
            c,
            status(*entries),
            b"QSTATUS",
            a,
            unknown,
            b,
            a,
            why="argument order, unknown queue as zeros, repeated name repeated",
        )
        s.expect(c, qinfo(*entries), b"QINFO", a, unknown, b, a, why="same, as QINFO lines")
        s.expect(c, integer(1), b"QACK", a, b"e1", why="acknowledge the claim")
        s.expect(c, integer(0), b"QACK", a, b"e1", why="already acknowledged")
        s.expect(c, integer(1), b"qack", a, b"e2", why="QACK deletes an unclaimed event too")
        s.expect(c, OK, b"QREGISTER")
        s.expect(c, OK, b"QFLUSH", unknown, why="flushing an unknown queue is fine")
        missing = error(b"ERR missing args")
        for args in (
            (b"QLPUSH", a, b"e1"),
            (b"QRPUSH", a),
            (b"QLPEEK",),
            (b"QRPEEK",),
            (b"QRPOP",),
            (b"QACK", a),
            (b"QNOTIFY",),
            (b"QFLUSH",),
        ):
            s.expect(c, missing, *args, why="fewer than the minimum arguments")
        s.expect(c, error(b'ERR unknown command "qFoo"'), b"qFoo", why="the name as sent")
        for text, tail in (
            (b"abc", b'strconv.Atoi: parsing "abc": invalid syntax'),
            (b"1.5", b'strconv.Atoi: parsing "1.5": invalid syntax'),
            (b"-3", b"-3 < 0"),
            (
                b"99999999999999999999",
                b'strconv.Atoi: parsing "99999999999999999999": value out of range',
            ),
        ):
            s.expect(c, error(b"ERR bad timeout value: " + tail), b"QNOTIFY", text)
        s.expect(c, PONG, b"PING", why="errors keep the connection open")
        s.expect(c, status((a, 0, 0, 0), (b, 1, 0, 0)), b"QSTATUS", a, b)
        s.expect(c, integer(1), b"QACK", b, b"e1")
    return [
        "replies were okq's exact forms: +OK, +PONG, :1/:0, $-1, *2 events, QSTATUS/QINFO"
        " in argument order, duplicate/missing-args/unknown/timeout errors"
    ]


Q_EX: Final = PREFIX + b"qrpop-ex"


def check_qrpop_arguments(host: str, port: int) -> list[str]:
    """QRPOP's EX rules: bad values pop nothing; EX only right after the queue (§3.1, §4)."""
    q = Q_EX
    with Session(host, port) as s:
        c = s.open("conn 0")
        for i in range(12):
            s.expect(c, OK, b"QLPUSH", q, b"x%d" % i, b"v%d" % i)
        bad = (
            (b"-1", b"-1 < 0"),
            (b"abc", b'strconv.Atoi: parsing "abc": invalid syntax'),
            (b"1.5", b'strconv.Atoi: parsing "1.5": invalid syntax'),
            (b" 1", b'strconv.Atoi: parsing " 1": invalid syntax'),
            (b"", b'strconv.Atoi: parsing "": invalid syntax'),
            (
                b"99999999999999999999",
                b'strconv.Atoi: parsing "99999999999999999999": value out of range',
            ),
        )
        for text, tail in bad:
            s.expect(c, error(b"ERR bad expires value: " + tail), b"QRPOP", q, b"EX", text)
        s.expect_counts(c, q, 12, 0, 0, "a rejected EX pops nothing")
        total, processing = 12, 0
        # (arguments after the queue name, auto-acked?)
        cases = (
            ((b"EX", b"0"), True),
            ((b"ex", b"-0"), True),
            ((b"Ex", b"0", b"NOACK"), True),
            ((b"EX", b"0", b"EX", b"30"), True),
            ((b"EX",), False),
            ((b"foo", b"EX", b"0"), False),
            ((b"NOACK",), False),
            ((b"EX", b"+20"), False),
            ((b"EX", b"30", b"EX", b"0"), False),
        )
        for n, (args, auto) in enumerate(cases):
            eid = b"x%d" % n
            s.expect(c, event(eid, b"v%d" % n), b"QRPOP", q, *args)
            total -= auto
            processing += not auto
            how = "auto-acknowledged (EX 0)" if auto else "claimed (EX ignored or not 0)"
            s.expect_counts(
                c, q, total, processing, 0, f"QRPOP {' '.join(a.decode() for a in args)}: {how}"
            )
            s.expect(c, integer(0 if auto else 1), b"QACK", q, eid)
            total -= not auto
            processing -= not auto
        s.expect(c, OK, b"QFLUSH", q)
    return [
        f"{len(bad)} bad EX values rejected with okq's errors; {len(cases)} argument forms"
        " claimed or auto-acked as documented"
    ]


Q_ACK: Final = PREFIX + b"ack-flush"
Q_ACK_OTHER: Final = PREFIX + b"ack-flush-other"


def check_ack_flush(host: str, port: int) -> list[str]:
    """QACK works by id from any connection; QFLUSH drops events but not consumers (§4)."""
    q, other = Q_ACK, Q_ACK_OTHER
    with Session(host, port) as s:
        a = s.open("consumer A")
        b = s.open("consumer B")
        reg = s.open("registered")
        s.expect(reg, OK, b"QREGISTER", q)
        for i in range(4):
            s.expect(a, OK, b"QLPUSH", q, b"k%d" % i, b"v%d" % i)
        s.expect(a, OK, b"QLPUSH", other, b"k0", b"keep")
        s.expect(a, event(b"k0", b"v0"), b"QRPOP", q, b"EX", b"30")
        s.expect(b, integer(1), b"QACK", q, b"k0", why="acks are by id, not by connection")
        s.expect(a, integer(0), b"QACK", q, b"k0", why="already acknowledged by B")
        s.expect(b, integer(1), b"QACK", q, b"k1", why="QACK removes an unclaimed event")
        s.expect(a, event(b"k2", b"v2"), b"QRPOP", q, why="k1 is gone: k2 is next")
        s.expect_counts(a, q, 2, 1, 1, "k2 claimed, k3 waiting, one consumer registered")
        s.expect(a, OK, b"QFLUSH", q)
        s.expect_counts(a, q, 0, 0, 1, "QFLUSH removes claimed and unclaimed, not registrations")
        s.expect(a, integer(0), b"QACK", q, b"k2", why="a flushed claim can no longer be acked")
        s.expect(a, NIL, b"QRPOP", q, why="flushed")
        s.expect(a, OK, b"QLPUSH", q, b"k2", b"new", why="a flushed id may be pushed again")
        s.expect(a, event(b"k0", b"keep"), b"QRPEEK", other, why="other queues are untouched")
        s.expect(a, event(b"k2", b"new"), b"QRPOP", q, b"EX", b"0")
        s.expect(a, integer(1), b"QACK", other, b"k0")
    return [
        "QACK by id from another connection, of unclaimed events, after flush; QFLUSH"
        " scope as documented"
    ]


# -- command names and request forms (§3, §2.1) -------------------------------------------

Q_NAMES: Final = PREFIX + b"names"
#: (command name as sent, okq's reply): Go's %q quoting of unknown names (§3).
UNKNOWN_NAMES: Final = (
    (b"f\x00o", b'-ERR unknown command "f\\x00o"\r\n'),
    (b"\xff\xfe", b'-ERR unknown command "\\xff\\xfe"\r\n'),
    (b'a"b\\c', b'-ERR unknown command "a\\"b\\\\c"\r\n'),
    (b"x\ty\r\nz\x07\x7f\x1b", b'-ERR unknown command "x\\ty\\r\\nz\\a\\x7f\\x1b"\r\n'),
    ("é\u00a0".encode(), '-ERR unknown command "é\\u00a0"\r\n'.encode()),
)


def check_command_names(host: str, port: int) -> list[str]:
    """Unknown names quoted like Go's %q; Unicode upper-casing; simple-string elements (§3)."""
    q = Q_NAMES
    with Session(host, port) as s:
        c = s.open("conn 0")
        for name, expected in UNKNOWN_NAMES:
            s.expect(c, expected, name, why="the name as sent, quoted with Go's %q rules")
        s.expect(c, PONG, "p\u0131ng".encode(), why="full Unicode upper-casing: dotless i is I")
        s.expect(c, PONG, b"pInG")
        s.expect_raw(c, b"*1\r\n+PING\r\n", PONG, "a simple-string element is a string")
        push = b"*4\r\n+QLPUSH\r\n$%d\r\n%s\r\n+e1\r\n+c1\r\n" % (len(q), q)
        s.expect_raw(c, push, OK, "simple-string command, id and contents")
        s.expect(c, event(b"e1", b"c1"), b"QRPOP", q, b"EX", b"0")
        invalid = error(b"ERR invalid command")
        for data in (
            b"*2\r\n$4\r\nPING\r\n:1\r\n",
            b"*2\r\n$4\r\nPING\r\n$-1\r\n",
            b"*2\r\n$4\r\nPING\r\n*1\r\n$1\r\nx\r\n",
        ):
            s.expect_raw(c, data, invalid, "an element that is not a string")
        s.expect(c, PONG, b"PING", why="the connection stays usable")
    return [
        f'{len(UNKNOWN_NAMES)} unknown names quoted exactly as okq (\\xNN, \\uNNNN, \\" ...);'
        " 'p\u0131ng' (dotless i) is PING; simple-string elements accepted; non-string"
        " elements refused"
    ]


# -- §9 quirks ---------------------------------------------------------------------------

Q_QUIRK: Final = PREFIX + b"quirks"
#: okq's example of an EX value too large for Redis's SET ... EX (§4 QRPOP, §9).
HUGE_EX: Final = b"9223372036854775"
#: How long `check_quirks` watches a claim that keeps a flushed claim's 30 s lock.
LOCK_WATCH_S: Final = 3.0
QUIRK_ATTEMPTS: Final = 3


def check_quirks(host: str, port: int) -> list[str]:
    """Huge EX fails but claims; claim locks survive QFLUSH (§4 QRPOP, §9)."""
    q = Q_QUIRK
    with Session(host, port) as s:
        c = s.open("conn 0")
        # The failed pop leaves a claim without a lock, which the server's restore sweep
        # gives back (§13): a sweep between the pop and our look is told apart from a
        # server that never claimed by trying again (a sweep seldom hits the same instant
        # twice; a server that does not claim shows the event unclaimed every time).
        for attempt in range(1, QUIRK_ATTEMPTS + 1):
            s.expect(c, OK, b"QLPUSH", q, b"huge", b"c")
            s.expect(
                c,
                error(b"ERR unexpected server-side error"),
                b"QRPOP",
                q,
                b"EX",
                HUGE_EX,
                why="too large for Redis's SET ... EX",
            )
            counts = s.status_of(c, q)
            peeked = s.call(c, b"QRPEEK", q)
            if counts == (1, 1, 0) and peeked == NIL:
                break
            if attempt == QUIRK_ATTEMPTS:
                s.expect_counts(c, q, 1, 1, 0, "the failed pop has claimed the event nevertheless")
                s.expect(c, NIL, b"QRPEEK", q, why="claimed")
                break
            s.expect(c, OK, b"QFLUSH", q, why="the claim was given back; once more")
        s.expect(c, integer(1), b"QACK", q, b"huge")
        # A claim's lock outlives QFLUSH: re-pushed and re-popped with EX 1, the id keeps the
        # old 30 s lock, so it is not redelivered after 1 s.
        s.expect(c, OK, b"QLPUSH", q, b"locked", b"c")
        s.expect(c, event(b"locked", b"c"), b"QRPOP", q, b"EX", b"30")
        s.expect(c, OK, b"QFLUSH", q)
        s.expect(c, OK, b"QLPUSH", q, b"locked", b"again", why="a flushed id may be pushed again")
        s.expect(c, event(b"locked", b"again"), b"QRPOP", q, b"EX", b"1")
        started = time.monotonic()
        while time.monotonic() - started < LOCK_WATCH_S:
            s.expect_counts(
                c,
                q,
                1,
                1,
                0,
                f"{time.monotonic() - started:.1f} s after QRPOP ... EX 1: the old 30 s lock,"
                " which QFLUSH left, still holds the claim (§9)",
            )
            time.sleep(0.1)
        s.expect(c, integer(1), b"QACK", q, b"locked")
    return [
        "QRPOP ... EX 9223372036854775 failed with the server-side error and left the event"
        f" claimed; a claim's lock survived QFLUSH ({LOCK_WATCH_S} s watched)"
    ]


# -- consumers ---------------------------------------------------------------------

Q_CA: Final = PREFIX + b"consumers-a"
Q_CB: Final = PREFIX + b"consumers-b"
Q_CC: Final = PREFIX + b"consumers-c"
Q_CD: Final = PREFIX + b"consumers-d"


def _consumers(s: Session, conn: Connection, queues: tuple[bytes, ...]) -> list[int]:
    reply = s.call(conn, b"QSTATUS", *queues)
    try:
        value = parse_reply(reply)
    except FramingError as exc:
        raise CheckFailed(
            [f"QSTATUS: expected a RESP array, got bytes that are not RESP: {exc}"]
        ) from exc
    if not isinstance(value, list) or len(value) != len(queues):
        raise CheckFailed(
            [f"QSTATUS of {len(queues)} queues: expected {len(queues)} entries, got {show(reply)}"]
        )
    counts = []
    for entry in value:
        if not isinstance(entry, list) or len(entry) != 4 or not isinstance(entry[3], int):
            raise CheckFailed([f"QSTATUS: expected {_ENTRY} entries, got {show(reply)}"])
        counts.append(entry[3])
    return counts


def _wait_consumers(
    s: Session, conn: Connection, queues: tuple[bytes, ...], want: list[int], bound: float, why: str
) -> float:
    started = time.monotonic()
    while True:
        got = _consumers(s, conn, queues)
        waited = time.monotonic() - started
        if got == want:
            return waited
        if waited > bound:
            names = ", ".join(q.decode() for q in queues)
            raise CheckFailed(
                [
                    f"QSTATUS {names} ({why}):",
                    f"  expected consumers {want} within {bound:.1f} s",
                    f"  still {got} after {waited:.2f} s",
                ]
            )
        time.sleep(POLL_INTERVAL_S)


def check_consumer_counts(host: str, port: int) -> list[str]:
    """QREGISTER counts connections per queue; re-registering and closing update it (§7, §8)."""
    qs = (Q_CA, Q_CB, Q_CC)
    with Session(host, port) as s:
        obs = s.open("observer")
        c1, c2, c3 = s.open("consumer 1"), s.open("consumer 2"), s.open("consumer 3")
        s.expect(c1, OK, b"QREGISTER", Q_CA, Q_CB)
        s.expect(c2, OK, b"QREGISTER", Q_CA)
        s.expect(c3, OK, b"QREGISTER", Q_CA, Q_CA, why="a repeated name counts once")
        s.expect(
            obs,
            status((Q_CA, 0, 0, 3), (Q_CB, 0, 0, 1), (Q_CC, 0, 0, 0)),
            b"QSTATUS",
            *qs,
            why="QREGISTER takes effect for QSTATUS at once",
        )
        s.expect(obs, qinfo((Q_CA, 0, 0, 3), (Q_CB, 0, 0, 1), (Q_CC, 0, 0, 0)), b"QINFO", *qs)
        s.expect(c1, OK, b"QREGISTER", Q_CB, Q_CC, why="replaces the earlier list")
        s.expect(obs, status((Q_CA, 0, 0, 2), (Q_CB, 0, 0, 1), (Q_CC, 0, 0, 1)), b"QSTATUS", *qs)
        s.expect(c3, OK, b"QREGISTER", why="no arguments: registered for nothing")
        s.expect(obs, status((Q_CA, 0, 0, 1), (Q_CB, 0, 0, 1), (Q_CC, 0, 0, 1)), b"QSTATUS", *qs)
        c2.close()
        t2 = _wait_consumers(s, obs, qs, [0, 1, 1], CONSUMER_DROP_MAX_S, "consumer 2 closed")
        c1.close()
        t1 = _wait_consumers(s, obs, qs, [0, 0, 0], CONSUMER_DROP_MAX_S, "consumer 1 closed")
        # A connection closed while its QNOTIFY waits is noticed only when the wait ends (§8).
        w = s.open("waiter")
        s.expect(w, OK, b"QREGISTER", Q_CD)
        time.sleep(SUBSCRIBE_SETTLE_S)
        s.send(w, b"QNOTIFY", b"2")
        time.sleep(0.2)
        w.close()
        closed = time.monotonic()
        time.sleep(0.5)
        s.expect(
            obs,
            status((Q_CD, 0, 0, 1)),
            b"QSTATUS",
            Q_CD,
            why="closed during a 2 s QNOTIFY: still counted until the wait ends (§8)",
        )
        remaining = 2.0 - (time.monotonic() - closed) + QNOTIFY_LATE_S
        _wait_consumers(
            s,
            obs,
            (Q_CD,),
            [0],
            remaining + CONSUMER_DROP_MAX_S,
            "after the closed connection's QNOTIFY 2 has ended",
        )
    return [
        f"consumer counts followed QREGISTER; closes noticed after {t2:.2f} / {t1:.2f} s"
        f" (bound {CONSUMER_DROP_MAX_S} s); a close during QNOTIFY counted until it ended"
    ]


# -- the no-argument listing (needs an empty server) --------------------------------

LIST_PREFIX: Final = PREFIX + b"list-"
#: Suffixes in byte order (``B`` < ``_x`` < ``a`` < ``a2`` < ``b`` < ``reg`` < UTF-8 ``éé``).
LIST_NAMES: Final = tuple(
    LIST_PREFIX + n for n in (b"B", b"_x", b"a", b"a2", b"b", b"reg", "éé".encode())
)


#: Tries at a listing that nobody else changes between QSTATUS, QINFO and QSTATUS.
LISTING_ATTEMPTS: Final = 5


def _listing(s: Session, conn: Connection) -> tuple[bytes, list[tuple[bytes, int, int, int]]]:
    reply = s.call(conn, b"QSTATUS")
    try:
        value = parse_reply(reply)
    except FramingError as exc:
        raise CheckFailed(
            [f"QSTATUS: expected a RESP array, got bytes that are not RESP: {exc}"]
        ) from exc
    entries = []
    if not isinstance(value, list):
        raise CheckFailed([f"QSTATUS (no arguments): expected an array, got {show(reply)}"])
    for entry in value:
        if not (
            isinstance(entry, list)
            and len(entry) == 4
            and isinstance(entry[0], bytes)
            and all(isinstance(v, int) for v in entry[1:])
        ):
            raise CheckFailed([f"QSTATUS (no arguments): expected {_ENTRY} entries, got {entry!r}"])
        entries.append((entry[0], entry[1], entry[2], entry[3]))
    if reply != status(*entries):  # type: ignore[arg-type]
        raise CheckFailed(
            [
                "QSTATUS (no arguments): expected okq's exact encoding of the entries,"
                f" got {show(reply)}"
            ]
        )
    names = [e[0] for e in entries]
    if names != sorted(names) or len(set(names)) != len(names):
        raise CheckFailed(
            [
                "QSTATUS (no arguments): expected the queues sorted by bytes, without repeats;"
                f" got {names!r}"
            ]
        )
    return reply, entries  # type: ignore[return-value]


def _expect_listing(
    s: Session, conn: Connection, ours: list[tuple[bytes, int, int, int]], why: str
) -> int:
    """The no-argument QSTATUS must hold exactly ``ours`` among our names; QINFO must agree."""
    for _ in range(LISTING_ATTEMPTS):
        _, entries = _listing(s, conn)
        mine = [e for e in entries if e[0].startswith(LIST_PREFIX)]
        if mine != ours:
            raise CheckFailed(
                [
                    f"QSTATUS with no arguments ({why}):",
                    f"  expected our queues listed as {ours!r}",
                    f"  got {mine!r}",
                ]
            )
        info = s.call(conn, b"QINFO")
        _, again = _listing(s, conn)
        if again == entries:  # nobody else changed anything meanwhile: compare exactly
            if info != qinfo(*entries):
                raise mismatch(
                    conn,
                    (b"QINFO",),
                    qinfo(*entries),
                    info,
                    f"the queues QSTATUS listed, as QINFO lines ({why})",
                )
            return len(entries) - len(mine)
    # Other clients keep changing their queues: check our lines and the line count only.
    try:
        lines = parse_reply(info)
    except FramingError as exc:
        raise CheckFailed(
            [f"QINFO: expected a RESP array, got bytes that are not RESP: {exc}"]
        ) from exc
    if (
        not isinstance(lines, list)
        or len(lines) != len(again)
        or not all(isinstance(line, bytes) for line in lines)
    ):
        raise CheckFailed([f"QINFO ({why}): expected {len(again)} bulk lines, got {show(info)}"])
    for name, total, processing, consumers in ours:
        pattern = re.compile(
            re.escape(name)
            + rb" *  total: %d +  processing: %d +  consumers: %d *"
            % (total, processing, consumers)
        )
        if not any(pattern.fullmatch(line) for line in lines if isinstance(line, bytes)):
            raise CheckFailed(
                [
                    f"QINFO ({why}): expected a line for {name!r} with total {total},"
                    f" processing {processing}, consumers {consumers}",
                    f"  got {show(info)}",
                ]
            )
    return -(len(entries) - len(mine))  # negative: compared loosely


def check_listing(host: str, port: int) -> list[str]:
    """No-argument QSTATUS/QINFO list every queue with events or consumers, sorted (§4)."""
    big, under, a, a2, b, reg, accented = LIST_NAMES
    with Session(host, port) as s:
        c = s.open("conn 0")
        r = s.open("registered")
        for q in (b, a, big, a2, under, accented):
            s.expect(c, OK, b"QLPUSH", q, b"e1", b"c")
        s.expect(c, OK, b"QLPUSH", a, b"e2", b"c")
        s.expect(c, event(b"e1", b"c"), b"QRPOP", a2, why="a queue with only a claimed event")
        s.expect(r, OK, b"QREGISTER", reg, b)
        foreign = _expect_listing(
            s,
            c,
            [
                (big, 1, 0, 0),
                (under, 1, 0, 0),
                (a, 2, 0, 0),
                (a2, 1, 1, 0),
                (b, 1, 0, 1),
                (reg, 0, 0, 1),
                (accented, 1, 0, 0),
            ],
            "7 queues: events, a claim only, consumers only",
        )
        s.expect(c, OK, b"QFLUSH", b)
        s.expect(c, integer(1), b"QACK", a, b"e1")
        s.expect(c, integer(1), b"QACK", accented, b"e1")
        _expect_listing(
            s,
            c,
            [
                (big, 1, 0, 0),
                (under, 1, 0, 0),
                (a, 1, 0, 0),
                (a2, 1, 1, 0),
                (b, 0, 0, 1),
                (reg, 0, 0, 1),
            ],
            "flushed b keeps its consumer; acked-empty queue gone",
        )
        s.expect(r, OK, b"QREGISTER", reg)
        s.expect(c, integer(1), b"QACK", a2, b"e1")
        _expect_listing(
            s,
            c,
            [(big, 1, 0, 0), (under, 1, 0, 0), (a, 1, 0, 0), (reg, 0, 0, 1)],
            "b has neither events nor consumers; a2's claim acked",
        )
        s.expect(r, OK, b"QREGISTER")
        for q in (big, under, a):
            s.expect(c, OK, b"QFLUSH", q)
        _expect_listing(s, c, [], "everything flushed and deregistered")
    notes = [
        "no-argument QSTATUS/QINFO listed exactly the queues with events or consumers, in"
        " byte order, QINFO padding by characters"
    ]
    if foreign > 0:
        notes.append(f"({foreign} other queues were listed too; they were not ours)")
    elif foreign < 0:
        notes.append(
            f"({-foreign} other queues kept changing (other clients): QINFO was checked"
            " line by line for our queues, not byte for byte)"
        )
    return notes


def checks() -> list[SemanticCheck]:
    """The checks of this module."""
    return [
        SemanticCheck(
            name="semantic_command_names",
            section="§3",
            description="unknown names quoted exactly like Go's %q (\\xNN lower-case, \\uNNNN,"
            " escaped quotes and backslashes), Unicode upper-casing"
            " ('p\u0131ng' with a dotless i is PING),"
            " simple-string elements accepted, other elements 'ERR invalid command'",
            queues=(Q_NAMES,),
            run=guarded(check_command_names),
            estimated_duration_s=0.3,
        ),
        SemanticCheck(
            name="semantic_quirks",
            section="§9",
            description="a too-large EX fails with the server-side error yet claims the event;"
            " claim locks survive QFLUSH (a re-popped id keeps the old lock, not its new EX 1)",
            queues=(Q_QUIRK,),
            run=guarded(check_quirks),
            estimated_duration_s=LOCK_WATCH_S + 0.5,
        ),
        SemanticCheck(
            name="semantic_reply_shapes",
            section="§2.2",
            description="okq's exact reply forms: nil bulk $-1 (never *-1) for empty pops, peeks"
            " and QNOTIFY, QACK :1/:0, QSTATUS/QINFO in argument order, the duplicate-id,"
            " missing-args, unknown-command and bad-timeout errors",
            queues=(Q_SA, Q_SB, Q_SC),
            run=guarded(check_reply_shapes),
            estimated_duration_s=0.3,
        ),
        SemanticCheck(
            name="semantic_qrpop_arguments",
            section="§4 QRPOP",
            description="bad EX values give okq's errors and pop nothing; EX is read only right"
            " after the queue name (EX 0 / -0 auto-ack, EX without a value, later EX, NOACK)",
            queues=(Q_EX,),
            run=guarded(check_qrpop_arguments),
            estimated_duration_s=0.3,
        ),
        SemanticCheck(
            name="semantic_ack_flush",
            section="§4 QACK",
            description="QACK by id from any connection and of unclaimed events; QFLUSH removes"
            " claimed and unclaimed events, keeps registrations, frees the ids",
            queues=(Q_ACK, Q_ACK_OTHER),
            run=guarded(check_ack_flush),
            estimated_duration_s=0.3,
        ),
        SemanticCheck(
            name="semantic_consumer_counts",
            section="§7",
            description="QSTATUS/QINFO consumers count registered connections (a repeated name"
            f" once); re-registering and closing bring it down (within {CONSUMER_DROP_MAX_S} s);"
            " a close during QNOTIFY is counted until the wait ends",
            queues=(Q_CA, Q_CB, Q_CC, Q_CD),
            run=guarded(check_consumer_counts),
            estimated_duration_s=3.5,
        ),
        SemanticCheck(
            name="semantic_listing_sorted",
            section="§4 QSTATUS",
            description="no-argument QSTATUS/QINFO list exactly the queues with events or"
            " consumers, sorted by bytes, with their counts; emptied queues drop out",
            queues=LIST_NAMES,
            run=guarded(check_listing),
            needs_empty_server=True,
            estimated_duration_s=0.5,
        ),
    ]
