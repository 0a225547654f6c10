"""Probes for the known defects D1-D3 of the real okq server (okq-protocol.md §9).

The transcripts record what the real server does, quirks included; three of its
behaviours are *defects* that a conforming server must not copy. Each probe here
drives a server over raw sockets and classifies what it sees:

* ``Outcome.PASS``: the server behaves as §9 says a fixed server must ("fixed");
* ``Outcome.DEFECT_REPRODUCED``: it behaves like the real okq ("okq defect Dn
  reproduced"), which is a failure, but of a known okq defect rather than a
  violation of the recorded standard;
* ``Outcome.FAIL``: neither (something else is wrong).

D1 can crash a real okq process, so its probe is ``final``: the runner runs it
last, alone. This module owns the probe logic and uses only ``_net``/``_resp``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from ._check import ProbeFinding
from ._net import Connection, ReadFailure, connect
from ._report import Outcome
from ._resp import FramingError, encode_command, parse_reply

__all__ = ["DefectProbe", "ProbeFinding", "defect_probes"]

#: Seconds a probe waits for a single reply or for a close.
_REPLY_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DefectProbe:
    """A built-in check for one known okq defect.

    Attributes:
        name: the check's name (``defect_d1_crash_inputs``, ...).
        defect: the defect it probes (``"D1"``, ``"D2"``, ``"D3"``).
        description: one sentence on what is checked.
        queues: queue names the probe uses (flushed before and after it runs).
        run: the probe itself: ``run(host, port)`` returns a ``ProbeFinding``.
        final: run last and alone (it may crash a buggy server).
        slow: waits for a restore sweep (about 13 s).
        estimated_duration_s: rough running time, used to start slow checks first.
    """

    name: str
    defect: str
    description: str
    queues: tuple[bytes, ...]
    run: Callable[[str, int], ProbeFinding]
    final: bool = False
    slow: bool = False
    estimated_duration_s: float = 0.0


class _ProbeError(Exception):
    """A probe could not even get to its question (server unreachable, odd reply)."""


@contextmanager
def _connections(host: str, port: int) -> Iterator[Callable[[str], Connection]]:
    """Yield a factory of connections that are all closed on exit."""
    opened: list[Connection] = []

    def open_one(label: str) -> Connection:
        try:
            conn = connect(host, port, label)
        except OSError as exc:
            raise _ProbeError(f"cannot connect to {host}:{port}: {exc}") from exc
        opened.append(conn)
        return conn

    try:
        yield open_one
    finally:
        for conn in opened:
            conn.close()


def _call(conn: Connection, *args: bytes, timeout_s: float = _REPLY_TIMEOUT_S) -> bytes:
    """Send one command and return its complete reply's bytes."""
    try:
        conn.send(encode_command(*args), timeout_s)
        reply, _ = conn.read_reply(time.monotonic() + timeout_s)
    except ReadFailure as exc:
        raise _ProbeError(
            f"{conn.label}: {args[0].decode()}: {exc.detail}; got {exc.got!r}"
        ) from exc
    except OSError as exc:
        raise _ProbeError(f"{conn.label}: {args[0].decode()}: {exc}") from exc
    return reply


def _expect(conn: Connection, expected: bytes, *args: bytes) -> None:
    reply = _call(conn, *args)
    if reply != expected:
        raise _ProbeError(f"{conn.label}: {args!r}: expected {expected!r}, got {reply!r}")


def _guarded(probe: Callable[[str, int], ProbeFinding]) -> Callable[[str, int], ProbeFinding]:
    """Turn a ``_ProbeError`` or ``OSError`` escaping ``probe`` into a FAIL finding."""

    def run(host: str, port: int) -> ProbeFinding:
        try:
            return probe(host, port)
        except (_ProbeError, OSError) as exc:
            return ProbeFinding(Outcome.FAIL, (f"probe could not complete: {exc}",))

    run.__doc__ = probe.__doc__
    return run


def _verdict(
    reproduced: list[str], failed: list[str], fixed: list[str], notes: Sequence[str] = ()
) -> ProbeFinding:
    details = tuple(failed + reproduced + fixed + list(notes))
    if failed:
        return ProbeFinding(Outcome.FAIL, details)
    if reproduced:
        return ProbeFinding(Outcome.DEFECT_REPRODUCED, details)
    return ProbeFinding(Outcome.PASS, details)


# -- D1 ------------------------------------------------------------------------------

#: Inputs that crash the real okq process (§2.1): headers shorter than 3 bytes and
#: absurd lengths that okq tries to allocate before reading the data.
D1_INPUTS: Final[tuple[tuple[str, bytes], ...]] = (
    ("array header '*\\n' (shorter than 3 bytes)", b"*\n"),
    ("bulk header '$\\n' (shorter than 3 bytes)", b"$\n"),
    ("simple-string header '+\\n' (shorter than 3 bytes)", b"+\n"),
    ("bulk length 10^15", b"*1\r\n$1000000000000000\r\n"),
    ("array count 10^15", b"*1000000000000000\r\n"),
)


def _ping_works(open_conn: Callable[[str], Connection], conn: Connection | None) -> str | None:
    """PING on ``conn`` (or a new connection); None if +PONG came back, else why not."""
    try:
        target = conn if conn is not None else open_conn("new connection")
        reply = _call(target, b"PING")
    except (_ProbeError, OSError) as exc:
        return str(exc)
    return None if reply == b"+PONG\r\n" else f"PING answered {reply!r}"


#: D1's control: inputs right next to the crash inputs that okq answers normally: the
#: shortest header lines that are valid (3 bytes: a type byte and CR LF) and an ordinary
#: length.  (bytes to send, exact reply, label).
D1_CONTROLS: Final[tuple[tuple[bytes, bytes, str], ...]] = (
    (
        b"+\r\n*1\r\n$4\r\nPING\r\n",
        b"+PONG\r\n",
        "3-byte header '+\\r\\n' (an empty simple string, ignored), then PING",
    ),
    (
        b"*0\r\n",
        b'-ERR unknown command ""\r\n',
        "the empty array '*0\\r\\n' (a command with the empty name)",
    ),
    (b"$-1\r\n*1\r\n$4\r\nPING\r\n", b"+PONG\r\n", "nil bulk '$-1' (ignored), then PING"),
    (
        b"*1\r\n$15\r\n100000000000000\r\n",
        b'-ERR unknown command "100000000000000"\r\n',
        "a 15-byte name (the digits of 10^14) with an ordinary length",
    ),
)


def _ping_state(conn: Connection) -> str:
    """``ok``, ``closed`` (EOF or reset: what a crashed process leaves) or what else happened."""
    try:
        conn.send(encode_command(b"PING"), _REPLY_TIMEOUT_S)
        reply, _ = conn.read_reply(time.monotonic() + _REPLY_TIMEOUT_S)
    except ReadFailure as exc:
        return "closed" if exc.reason == "eof" else f"{exc.detail}; got {exc.got!r}"
    except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
        return "closed"
    except OSError as exc:
        return f"write failed: {exc!r}"
    return "ok" if reply == b"+PONG\r\n" else f"PING answered {reply!r}"


def _connect_state(host: str, port: int) -> str:
    """``ok`` (a new connection answers PING), ``refused`` (nothing listens), ``closed``
    (accepted by a dying listener, then dropped) or what else happened."""
    try:
        conn = connect(host, port, "new connection")
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return f"connect failed: {exc!r}"
    try:
        return _ping_state(conn)
    finally:
        conn.close()


def _d1_control(open_conn: Callable[[str], Connection], data: bytes, expected: bytes) -> str | None:
    """Send one control input on a new connection; None if answered ``expected`` and the
    connection is still usable, else what happened."""
    try:
        conn = open_conn("control")
        conn.send(data, _REPLY_TIMEOUT_S)
        reply, _ = conn.read_reply(time.monotonic() + _REPLY_TIMEOUT_S)
    except ReadFailure as exc:
        return f"{exc.detail}; got {exc.got!r}"
    except (_ProbeError, OSError) as exc:
        return str(exc)
    after = _ping_state(conn)
    if reply != expected or after != "ok":
        return f"got {reply!r}, then PING: {after}"
    return None


def _d1_controls(open_conn: Callable[[str], Connection]) -> tuple[list[str], str]:
    """Run D1's control part: (failures, a one-line summary of what passed)."""
    failed: list[str] = []
    for label in ("control 1", "control 2"):
        try:
            state = _ping_state(open_conn(label))
        except _ProbeError as exc:
            state = str(exc)
        if state != "ok":
            failed.append(f"control: PING on a new connection before any crash input: {state}")
    for data, expected, label in D1_CONTROLS:
        problem = _d1_control(open_conn, data, expected)
        if problem is not None:
            failed.append(
                f"control: {label}: expected {expected!r} and the connection still usable;"
                f" {problem}"
            )
    summary = (
        f"control: two connections answered PING and {len(D1_CONTROLS)} near-miss inputs"
        " (3-byte header lines, an ordinary length) were answered normally"
    )
    return failed, summary


@_guarded
def probe_d1(host: str, port: int) -> ProbeFinding:
    """D1: each crash input closes only its own connection, silently.

    The control part comes first: two connections answer PING, and inputs right next to
    the crash inputs (3-byte header lines, an ordinary length) are answered normally.  If
    the control fails the outcome is FAIL and no crash input is sent.  "okq defect D1
    reproduced" needs what a crash of the real okq looks like: the victim and a bystander
    connection closed by the server, and nothing listening any more; a server that hangs
    or stops answering is a FAIL.
    """
    reproduced: list[str] = []
    failed: list[str] = []
    fixed: list[str] = []
    notes: list[str] = []
    with _connections(host, port) as open_conn:
        control_failed, control_passed = _d1_controls(open_conn)
    if control_failed:
        return _verdict([], control_failed, [], ["crash inputs not tried: the control failed"])
    for label, data in D1_INPUTS:
        if reproduced or failed:
            notes.append(f"{label}: not tried, the server misbehaved on an earlier input")
            continue
        with _connections(host, port) as open_conn:
            bystander = open_conn("bystander")
            _expect(bystander, b"+PONG\r\n", b"PING")
            victim = open_conn("victim")
            victim.send(data, _REPLY_TIMEOUT_S)
            problem = victim.expect_eof(time.monotonic() + _REPLY_TIMEOUT_S)
            other = _ping_state(bystander)
            fresh = _connect_state(host, port)
            if other == "ok" and fresh == "ok":
                if problem is None:
                    fixed.append(f"{label}: connection closed without a reply; others unaffected")
                else:
                    failed.append(f"{label}: expected a silent close of that connection; {problem}")
            elif problem is None and other == "closed" and fresh in ("refused", "closed"):
                reproduced.append(
                    f"{label}: the server stopped serving other connections: the whole server"
                    f" went down (victim and bystander connections closed, a new connection"
                    f" {fresh}), as the real okq crashes"
                )
            else:
                failed.append(
                    f"{label}: expected the victim closed silently and everything else working;"
                    f" victim: {problem or 'closed silently'}; bystander PING: {other};"
                    f" new connection: {fresh}"
                )
    if reproduced:
        notes.append(control_passed)
    return _verdict(reproduced, failed, fixed, notes)


# -- D2 ------------------------------------------------------------------------------

_D2_QUEUE: Final = b"defect-d2-q"
#: (id, reply of a fixed server, reply of the real okq) for the duplicate push.
D2_CASES: Final[tuple[tuple[bytes, bytes, bytes], ...]] = (
    (b"x\r\ny", b"-ERR duplicate event x\\r\\ny\r\n", b"-ERR duplicate event x\r\ny\r\n"),
    (b"a\nb\rc", b"-ERR duplicate event a\\nb\\rc\r\n", b"-ERR duplicate event a\nb\rc\r\n"),
)
#: D2's control: ids without CR or LF, whose duplicate error every server (okq included)
#: must send exactly as okq does: the raw id bytes (nothing else is escaped).
D2_CONTROLS: Final[tuple[bytes, ...]] = (b"plain", b'tab\t"quote" back\\slash \x00nul \xc3\xa9')


def _duplicate_reply(
    open_conn: Callable[[str], Connection], event_id: bytes
) -> tuple[bytes | None, str | None]:
    """Push ``event_id`` twice on a fresh connection: (the second reply plus anything after
    it within 0.3 s, or None; a problem seen, or None)."""
    conn = open_conn(f"id {event_id!r}")
    _expect(conn, b"+OK\r\n", b"QLPUSH", _D2_QUEUE, event_id, b"first")
    conn.send(encode_command(b"QLPUSH", _D2_QUEUE, event_id, b"second"), _REPLY_TIMEOUT_S)
    try:
        reply, _ = conn.read_reply(time.monotonic() + _REPLY_TIMEOUT_S)
    except ReadFailure as exc:
        return None, f"{exc.detail}; got {exc.got!r}"
    # The real okq's reply is an error line followed by junk: collect the junk.
    got = reply + conn.pending(0.3)
    return got, _ping_works(open_conn, conn)


@_guarded
def probe_d2(host: str, port: int) -> ProbeFinding:
    """D2: CR and LF in a duplicate id are escaped, so the error stays valid RESP.

    Control: duplicates of ids without CR or LF must give okq's exact error (raw id) and
    leave the connection usable; otherwise the outcome is FAIL whatever the CR/LF ids do.
    Each id is tried on its own connection (okq's reply puts a stream out of step).
    """
    reproduced: list[str] = []
    failed: list[str] = []
    fixed: list[str] = []
    with _connections(host, port) as open_conn:
        for event_id in D2_CONTROLS:
            expected = b"-ERR duplicate event " + event_id + b"\r\n"
            got, problem = _duplicate_reply(open_conn, event_id)
            if got == expected and problem is None:
                fixed.append(f"control: id {event_id!r}: {got!r}")
            else:
                failed.append(
                    f"control: id {event_id!r} (no CR/LF): expected {expected!r}, got {got!r}"
                    + (f"; {problem}" if problem else "")
                )
        for event_id, good, buggy in D2_CASES:
            got, problem = _duplicate_reply(open_conn, event_id)
            if got == good and problem is None:
                fixed.append(f"id {event_id!r}: {got!r}")
            elif got == buggy:
                reproduced.append(f"id {event_id!r}: raw id in the error line: {got!r}")
            else:
                failed.append(
                    f"id {event_id!r}: expected {good!r} (fixed) or {buggy!r} (okq), got {got!r}"
                    + (f"; then: {problem}" if problem else "")
                )
    return _verdict(reproduced, failed, fixed)


# -- D3 ------------------------------------------------------------------------------

_D3_CONTROL: Final = b"defect-d3-control"
#: The redelivery part's control: an ordinary name, claimed at the same time.
_D3_REDELIVER_CONTROL: Final = b"defect-d3-redeliver-control"
_D3_COLON_WAKE: Final = b"d3:wake"
_D3_COLON_LIST: Final = b"d3:list"
_D3_COLON_REDELIVER: Final = b"d3:redeliver"
_D3_EMPTY: Final = b""


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _woken_by_push(
    open_conn: Callable[[str], Connection], queue: bytes, event_id: bytes
) -> tuple[bool, str]:
    """Whether a push to ``queue`` wakes a QNOTIFY blocked on it (and what happened).

    ``queue`` must hold no unclaimed event when this starts (QNOTIFY's initial
    check would answer at once); pushes ``event_id`` to it.
    """
    waiter = open_conn("waiter")
    pusher = open_conn("pusher")
    _expect(waiter, b"+OK\r\n", b"QREGISTER", queue)
    time.sleep(0.3)  # registration subscribes asynchronously (section 6)
    waiter.send(encode_command(b"QNOTIFY", b"2"), _REPLY_TIMEOUT_S)
    time.sleep(0.4)
    _expect(pusher, b"+OK\r\n", b"QLPUSH", queue, event_id, b"c")
    try:
        reply, arrived = waiter.read_reply(time.monotonic() + _REPLY_TIMEOUT_S)
    except ReadFailure as exc:
        raise _ProbeError(f"QNOTIFY on {queue!r}: {exc.detail}") from exc
    elapsed = arrived - waiter.last_write
    if reply == _bulk(queue) and 0.3 <= elapsed < 1.8:
        return True, f"queue {queue!r}: QNOTIFY woken by the push after {elapsed:.3f} s"
    if reply == b"$-1\r\n":
        return False, f"queue {queue!r}: QNOTIFY not woken by the push (nil after {elapsed:.3f} s)"
    raise _ProbeError(f"QNOTIFY on {queue!r}: unexpected reply {reply!r} after {elapsed:.3f} s")


def _listing(conn: Connection) -> list[tuple[bytes, int, int]]:
    """The no-argument QSTATUS as (name, total, processing) entries."""
    reply = _call(conn, b"QSTATUS")
    try:
        value = parse_reply(reply)
    except FramingError as exc:
        raise _ProbeError(f"QSTATUS: {exc}") from exc
    entries: list[tuple[bytes, int, int]] = []
    if not isinstance(value, list):
        raise _ProbeError(f"QSTATUS: not an array: {reply[:200]!r}")
    for entry in value:
        if (
            not isinstance(entry, list)
            or len(entry) < 4
            or not isinstance(entry[0], bytes)
            or not isinstance(entry[1], int)
            or not isinstance(entry[2], int)
        ):
            raise _ProbeError(f"QSTATUS: malformed entry {entry!r}")
        entries.append((entry[0], entry[1], entry[2]))
    return entries


#: Seconds to wait after a ``QRPOP ... EX 1`` for the restore sweep (as the transcripts do).
REDELIVERY_WAIT_S: Final = 12.5
#: Once the control claim is back, how long the others get to come back too (a server's
#: sweep may reach the queues one after another).
_REDELIVERY_GRACE_S: Final = 1.0


def _processing(conn: Connection, queue: bytes) -> tuple[int, int] | None:
    """QSTATUS ``queue`` as (total, processing), or None if the reply is not okq's shape."""
    reply = _call(conn, b"QSTATUS", queue)
    head = b"*1\r\n*4\r\n" + _bulk(queue)
    if not reply.startswith(head):
        return None
    try:
        value = parse_reply(reply)
    except FramingError:
        return None
    assert isinstance(value, list)
    assert isinstance(value[0], list)
    total, processing = value[0][1], value[0][2]
    if not isinstance(total, int) or not isinstance(processing, int):
        return None
    return total, processing


def _probe_d3(host: str, port: int, *, slow: bool) -> ProbeFinding:
    """D3: names with ':' and the empty name are listed, notified and (slow) redelivered.

    Each part has a control with an ordinary name (woken, listed, redelivered); when the
    control fails the outcome is FAIL, never "reproduced".  Order matters: the claims to
    be redelivered are made first (the control's last, so that it never expires before the
    others), so the wait overlaps the other checks.  The empty name's wake-up check runs
    right after its ``QRPOP ... EX 1``, well before that claim can expire, so QNOTIFY's
    initial check cannot see a redelivered event; and a redelivery never wakes a waiting
    QNOTIFY.
    """
    reproduced: list[str] = []
    failed: list[str] = []
    fixed: list[str] = []
    claimed = (_D3_COLON_REDELIVER, _D3_EMPTY, _D3_REDELIVER_CONTROL)
    with _connections(host, port) as open_conn:
        conn = open_conn("conn 0")
        popped_at = time.monotonic()
        if slow:
            for queue in claimed:
                _expect(conn, b"+OK\r\n", b"QLPUSH", queue, b"r1", b"c1")
            for queue in claimed:
                _expect(conn, b"*2\r\n$2\r\nr1\r\n$2\r\nc1\r\n", b"QRPOP", queue, b"EX", b"1")
            popped_at = time.monotonic()
        for queue in (_D3_CONTROL, _D3_EMPTY, _D3_COLON_WAKE):
            with _connections(host, port) as open_wake:
                woken, line = _woken_by_push(open_wake, queue, b"w1")
            if woken:
                fixed.append(line)
            elif queue == _D3_CONTROL:
                failed.append(
                    line + " (control, an ordinary name: notifications do not work at all)"
                )
            else:
                reproduced.append(line)
        _expect(conn, b"+OK\r\n", b"QLPUSH", _D3_COLON_LIST, b"l1", b"c1")
        listing = _listing(conn)
        names = [name for name, _, _ in listing]
        if names != sorted(names) or len(set(names)) != len(names):
            failed.append(f"no-argument QSTATUS is not sorted by bytes without repeats: {names!r}")
        for queue in (_D3_CONTROL, _D3_COLON_LIST, _D3_EMPTY):
            found = [(t, p) for name, t, p in listing if name == queue]
            if not found:
                line = f"queue {queue!r}: missing from the no-argument QSTATUS {names!r}"
                if queue == _D3_CONTROL:
                    failed.append(line + " (control, an ordinary name)")
                else:
                    reproduced.append(line)
            elif queue != _D3_EMPTY and found != [(1, 0)]:
                failed.append(f"queue {queue!r}: listed with (total, processing) {found!r}")
            else:
                fixed.append(f"queue {queue!r}: listed by the no-argument QSTATUS")
        if slow:
            _d3_redelivery(conn, popped_at, reproduced, failed, fixed)
    return _verdict(reproduced, failed, fixed)


def _d3_redelivery(
    conn: Connection,
    popped_at: float,
    reproduced: list[str],
    failed: list[str],
    fixed: list[str],
) -> None:
    """The slow part: wait for the control's claim to come back, then look at the others."""
    deadline = popped_at + REDELIVERY_WAIT_S
    control = None
    while True:
        control = _processing(conn, _D3_REDELIVER_CONTROL)
        if control != (1, 1) or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    waited = time.monotonic() - popped_at
    if control != (1, 0):
        failed.append(
            f"control queue {_D3_REDELIVER_CONTROL!r} (an ordinary name): expected its EX 1 claim"
            f" back (total 1, processing 0) within {REDELIVERY_WAIT_S} s; QSTATUS gave"
            f" (total, processing) = {control!r} after {waited:.1f} s"
            + (": the server does not redeliver expired claims at all" if control == (1, 1) else "")
        )
        return
    fixed.append(f"control queue {_D3_REDELIVER_CONTROL!r}: claim redelivered after {waited:.1f} s")
    time.sleep(_REDELIVERY_GRACE_S)
    for queue, total in ((_D3_COLON_REDELIVER, 1), (_D3_EMPTY, 2)):
        counts = _processing(conn, queue)
        if counts == (total, 0):
            fixed.append(f"queue {queue!r}: expired claim redelivered")
        elif counts == (total, 1):
            reproduced.append(
                f"queue {queue!r}: claim still processing {_REDELIVERY_GRACE_S} s after the"
                " control's came back (never redelivered)"
            )
        else:
            failed.append(f"queue {queue!r}: unexpected QSTATUS (total, processing) {counts!r}")


@_guarded
def probe_d3(host: str, port: int) -> ProbeFinding:
    """D3 with the redelivery check (about 14 s)."""
    return _probe_d3(host, port, slow=True)


@_guarded
def probe_d3_quick(host: str, port: int) -> ProbeFinding:
    """D3 without the redelivery check (about 2 s)."""
    return _probe_d3(host, port, slow=False)


def defect_probes(*, slow: bool = True) -> list[DefectProbe]:
    """The built-in defect probes, in the order they should be reported.

    Args:
        slow: let the D3 probe also check that expired claims are redelivered
            (it then waits ~13 s for a restore sweep; otherwise it takes ~2 s).

    Returns:
        Probes for D1 (``final``: it may crash a buggy server), D2 and D3.
    """
    probes = [
        DefectProbe(
            name="defect_d1_crash_inputs",
            defect="D1",
            description="headers shorter than 3 bytes and 10^15 lengths close only that"
            " connection, without a reply; other connections keep working",
            queues=(),
            run=probe_d1,
            final=True,
            estimated_duration_s=0.5,
        ),
        DefectProbe(
            name="defect_d2_crlf_in_duplicate_id",
            defect="D2",
            description="the duplicate-event error escapes CR and LF of the id (valid RESP)",
            queues=(_D2_QUEUE,),
            run=probe_d2,
            estimated_duration_s=1.0,
        ),
        DefectProbe(
            name="defect_d3_colon_and_empty_names",
            defect="D3",
            description="queue names with ':' and the empty name are listed by QSTATUS, their"
            " pushes wake a blocked QNOTIFY"
            + (" and their expired claims are redelivered" if slow else ""),
            queues=(
                _D3_CONTROL,
                _D3_COLON_WAKE,
                _D3_COLON_LIST,
                _D3_COLON_REDELIVER,
                _D3_EMPTY,
                _D3_REDELIVER_CONTROL,
            ),
            run=probe_d3 if slow else probe_d3_quick,
            slow=slow,
            estimated_duration_s=REDELIVERY_WAIT_S + 1.0 if slow else 2.5,
        ),
    ]
    return probes
