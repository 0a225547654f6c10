"""Tests for the server role: okq_proto._server (framing), _dispatch (commands) and _gocompat.

No sockets, no sleeps: a tiny synchronous harness carries out the dispatcher's actions on a
`QueueEngine` with a fake clock.
"""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from okq_proto._dispatch import (
    NIL,
    Ack,
    Action,
    Dispatcher,
    Flush,
    NotifyHub,
    Peek,
    Pop,
    Push,
    Register,
    Reply,
    RunInBackground,
    RunOp,
    Status,
    WaitForNotify,
    encode_event,
    render_ack,
    render_info,
    render_push,
    render_status,
)
from okq_proto._engine import ExpiryTooLargeError, QueueEngine, QueueStatus
from okq_proto._errors import LocalProtocolError
from okq_proto._gocompat import AtoiError, atoi, go_quote, go_upper, rune_count
from okq_proto._resp import NEED_DATA
from okq_proto._server import (
    CloseWithoutReply,
    CommandReceived,
    InvalidCommandReceived,
    PeerClosed,
    ServerConnection,
    ServerState,
)

BLOCKED = b"<blocked>"


def cmd(*args: bytes) -> bytes:
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%b\r\n" % (len(a), a)
    return out


class Harness:
    """One engine + dispatcher; any number of connections; actions run synchronously."""

    def __init__(self, noblock_workers: int = 128) -> None:
        self.now = 0.0
        self.engine = QueueEngine(now=0.0)
        self.dispatcher = Dispatcher(rng=random.Random(7), noblock_workers=noblock_workers)
        self.background: list[Push] = []

    def run(self, consumer: str, action: Action) -> bytes:
        e = self.engine
        match action:
            case Reply():
                return action.data
            case RunInBackground():
                self.background.append(action.op)
                return action.reply
            case WaitForNotify():
                reply = action.after_check(e.first_with_unclaimed(action.queues))
                return BLOCKED if reply is None else reply
            case RunOp(op=Push() as op):
                stored = e.push(op.queue, op.event_id, op.contents, right=op.right)
                if stored:
                    self.dispatcher.hub.publish(op.queue)
                return render_push(op, stored)
            case RunOp(op=Peek() as op):
                return encode_event(e.peek(op.queue, left=op.left))
            case RunOp(op=Pop() as op):
                try:
                    return encode_event(e.pop(op.queue, op.expire_s, self.now))
                except ExpiryTooLargeError:
                    return b"-ERR unexpected server-side error\r\n"
            case RunOp(op=Ack() as op):
                return render_ack(e.ack(op.queue, op.event_id))
            case RunOp(op=Flush() as op):
                e.flush(op.queue)
                return b"+OK\r\n"
            case RunOp(op=Register() as op):
                e.register(consumer, op.queues)
                return b"+OK\r\n"
            case RunOp(op=Status() as op):
                entries = e.status(op.queues)
                return render_info(entries) if op.info else render_status(entries)
        raise AssertionError(action)

    def feed(self, data: bytes, consumer: str = "c0", chunks: list[bytes] | None = None) -> bytes:
        """Feed data (optionally in chunks), answer everything; return the output."""
        conn = ServerConnection()
        out = b""
        for chunk in chunks if chunks is not None else [data]:
            conn.receive_data(chunk)
            out += self._drain(conn, consumer)
        return out

    def _drain(self, conn: ServerConnection, consumer: str) -> bytes:
        while True:
            event = conn.next_event()
            if event is NEED_DATA or isinstance(event, (CloseWithoutReply, PeerClosed)):
                return conn.data_to_send()
            conn.send_reply(self.run(consumer, self.dispatcher.handle(consumer, event)))

    def one(self, *args: bytes, consumer: str = "c0") -> bytes:
        return self.feed(cmd(*args), consumer)


def events(data: bytes, **limits: int) -> list[object]:
    """Every event for ``data`` followed by EOF, answering requests with a dummy reply."""
    conn = ServerConnection(**limits)
    conn.receive_data(data)
    conn.receive_eof()
    out: list[object] = []
    for _ in range(1000):
        ev = conn.next_event()
        out.append(ev)
        if isinstance(ev, (CloseWithoutReply, PeerClosed)):
            return out
        assert ev is not NEED_DATA
        conn.send_reply(b"+X\r\n")
    raise AssertionError("no end")


# -- framing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"*1\r\n$4\r\nPING\r\n", [CommandReceived(argv=(b"PING",))]),
        (b"*1\r\n+PING\r\n", [CommandReceived(argv=(b"PING",))]),  # simple-string element
        (b"*1X\n$4\r\nPINGxy", [CommandReceived(argv=(b"PING",))]),  # header/trailer quirks
        (b"*+1\r\n$+4\r\nPING\r\n", [CommandReceived(argv=(b"PING",))]),
        (b"*0\r\n", [CommandReceived(argv=())]),
        (b"*-1\r\n*-5\r\n+hi\r\n-err\r\n:5\r\n$3\r\nabc\r\n$-1\r\n", []),  # all ignored
        (b"*1\r\n:1\r\n", [InvalidCommandReceived()]),
        (b"*2\r\n$4\r\nPING\r\n$-1\r\n", [InvalidCommandReceived()]),
        (b"*2\r\n$4\r\nPING\r\n-e\r\n", [InvalidCommandReceived()]),
        (b"*2\r\n$4\r\nPING\r\n*-1\r\n", [InvalidCommandReceived()]),
        (b"*2\r\n*0\r\n$4\r\nPING\r\n", [InvalidCommandReceived()]),
        (b"*3\r\n*2\r\n*1\r\n$1\r\nx\r\n:2\r\n$1\r\ny\r\n+z\r\n", [InvalidCommandReceived()]),
        (b"*2\r\n*1\r\n$3\r\nabc\r\n$1\r\nq\r\n", [InvalidCommandReceived()]),
        (b"$0\r\n\r\n*1\r\n$0\r\n\r\n", [CommandReceived(argv=(b"",))]),
    ],
)
def test_framing(data: bytes, expected: list[object]) -> None:
    assert events(data) == [*expected, PeerClosed()]


@pytest.mark.parametrize(
    "data",
    [
        b"PING\r\n",  # inline command
        b"*1\r\n$abc\r\n",
        b"*x\r\n",
        b"* 1\r\n",
        b"*1\n",  # value empty
        b"*99999999999999999999\r\n",  # out of int64
        b":abc\r\n",
        b"*1\r\n:1.5\r\n",
        b"*1\r\n?x\r\n",  # bad type byte inside an array
        b"*\n",  # D1: short header
        b"$\n",
        b"+\n",
        b"*1\r\n$1000000000000000\r\n",  # D1: absurd length
        b"*1000000000000000\r\n",
    ],
)
def test_close_without_reply(data: bytes) -> None:
    evs = events(data)
    assert len(evs) == 1
    assert isinstance(evs[0], CloseWithoutReply)


def test_replies_before_bad_bytes_are_kept() -> None:
    h = Harness()
    assert h.feed(cmd(b"PING") + b"GARBAGE\r\n" + cmd(b"PING")) == b"+PONG\r\n"


def test_limits_are_constructor_arguments() -> None:
    assert isinstance(events(cmd(b"PING", b"x" * 11), max_bulk_bytes=10)[0], CloseWithoutReply)
    assert isinstance(events(b"*3\r\n", max_array_count=2)[0], CloseWithoutReply)
    nested = b"*1\r\n" * 5 + b"$1\r\nx\r\n"
    assert events(nested, max_nesting=5) == [InvalidCommandReceived(), PeerClosed()]
    assert isinstance(events(nested, max_nesting=4)[0], CloseWithoutReply)
    assert isinstance(events(b"+" + b"a" * 20 + b"\r\n", max_line_bytes=10)[0], CloseWithoutReply)


def test_query_cap_is_exact_and_closes_at_the_header() -> None:
    # Redis's client-query-buffer-limit: the request may hold the cap, not one byte more.
    body = b"$1000\r\n" + b"x" * 1000 + b"\r\n"
    at_cap = ServerConnection(max_query_bytes=len(body))
    at_cap.receive_data(b"*1\r\n" + body)
    assert at_cap.next_event() == CommandReceived(argv=(b"x" * 1000,))
    over = ServerConnection(max_query_bytes=len(body) - 1)
    over.receive_data(b"*1\r\n$1000\r\n")  # closed before any payload byte is buffered
    assert isinstance(over.next_event(), CloseWithoutReply)
    assert len(over._buf) == 0


def test_query_cap_counts_the_arguments_already_read() -> None:
    conn = ServerConnection(max_query_bytes=10_000)
    conn.receive_data(b"*1000\r\n")
    sent = 0
    for _ in range(1000):
        event = conn.next_event()
        if isinstance(event, CloseWithoutReply):
            break
        assert event is NEED_DATA
        conn.receive_data(b"$100\r\n" + b"y" * 100 + b"\r\n")
        sent += 1
    assert 90 <= sent <= 100  # 100-byte arguments: about a hundred fit under 10,000
    # A partial line on top of the arguments read so far counts too.
    lines = ServerConnection(max_query_bytes=50)
    lines.receive_data(b"*10\r\n+" + b"a" * 30 + b"\r\n+" + b"b" * 19)
    assert lines.next_event() is NEED_DATA  # 30 + 20 = 50: at the cap
    lines.receive_data(b"b")
    assert isinstance(lines.next_event(), CloseWithoutReply)


def test_query_cap_spares_pipelines_and_skipped_values() -> None:
    conn = ServerConnection(max_query_bytes=20)
    conn.receive_data(cmd(b"PING") * 50)  # 700 bytes of complete requests: each is 14
    for _ in range(50):
        assert conn.next_event() == CommandReceived(argv=(b"PING",))
        conn.send_reply(b"+PONG\r\n")
    assert conn.next_event() is NEED_DATA
    skipped = ServerConnection(max_query_bytes=1000)
    skipped.receive_data(b"*2\r\n*1\r\n$100000\r\n")  # thrown away, never held
    for _ in range(10):
        assert skipped.next_event() is NEED_DATA
        skipped.receive_data(b"z" * 10_000)
    skipped.receive_data(b"\r\n$1\r\nq\r\n")
    assert skipped.next_event() == InvalidCommandReceived()
    # A new request starts from nothing: what the last one held is not carried over.
    again = ServerConnection(max_query_bytes=30)
    again.receive_data(cmd(b"a" * 12) * 3)
    for _ in range(3):
        assert again.next_event() == CommandReceived(argv=(b"a" * 12,))
        again.send_reply(b"+X\r\n")


def test_endless_header_is_cut_off_without_buffering_everything() -> None:
    conn = ServerConnection(max_line_bytes=1000)
    conn.receive_data(b"*")
    assert conn.next_event() is NEED_DATA
    for _ in range(2):
        conn.receive_data(b"1" * 400)
        assert conn.next_event() is NEED_DATA
    conn.receive_data(b"1" * 400)  # 1201 bytes and still no LF
    assert isinstance(conn.next_event(), CloseWithoutReply)
    assert len(conn._buf) == 0


def test_garbage_first_byte_closes_at_once() -> None:
    conn = ServerConnection()
    conn.receive_data(b"1")
    assert isinstance(conn.next_event(), CloseWithoutReply)


def test_large_nested_bulk_is_skipped_streaming() -> None:
    conn = ServerConnection()
    conn.receive_data(b"*2\r\n*1\r\n$100000\r\n")
    assert conn.next_event() is NEED_DATA
    for _ in range(10):
        conn.receive_data(b"x" * 10000)
        assert conn.next_event() is NEED_DATA
        assert len(conn._buf) == 0  # thrown away as it arrives
    conn.receive_data(b"\r\n$1\r\nq\r\n")
    assert conn.next_event() == InvalidCommandReceived()


def test_eof_mid_request_and_sticky_end() -> None:
    conn = ServerConnection()
    conn.receive_data(b"*2\r\n$4\r\nPING\r\n")
    assert conn.next_event() is NEED_DATA
    conn.receive_eof()
    conn.receive_eof()
    assert conn.next_event() == PeerClosed()
    assert conn.next_event() == PeerClosed()
    assert conn.state is ServerState.CLOSED
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"x")


def test_one_reply_per_request() -> None:
    conn = ServerConnection()
    with pytest.raises(LocalProtocolError, match="IDLE"):
        conn.send_reply(b"+OK\r\n")
    conn.receive_data(cmd(b"PING") * 2)
    assert conn.next_event() == CommandReceived(argv=(b"PING",))
    assert conn.state is ServerState.AWAITING_REPLY
    with pytest.raises(LocalProtocolError, match="AWAITING_REPLY"):
        conn.next_event()
    conn.send_reply(bytearray(b"+PONG\r\n"))  # type: ignore[arg-type]
    assert conn.next_event() == CommandReceived(argv=(b"PING",))
    conn.send_reply(b"+PONG\r\n")
    out = conn.data_to_send()
    assert out == b"+PONG\r\n+PONG\r\n"
    assert type(out) is bytes
    assert conn.data_to_send() == b""


def test_argv_are_bytes_not_views() -> None:
    conn = ServerConnection()
    conn.receive_data(memoryview(bytearray(cmd(b"QACK", b"q", b"id"))))
    ev = conn.next_event()
    assert isinstance(ev, CommandReceived)
    assert all(type(a) is bytes for a in ev.argv)


# -- chunking --------------------------------------------------------------------------------------

SESSION = (
    cmd(b"QLPUSH", b"q", b"e1", b"c\r\n1")
    + b"*1\r\n+PING\r\n"
    + b"*-1\r\n"
    + cmd(b"QRPUSH", b"q", b"e0", b"")
    + b"*1\r\n:1\r\n"
    + cmd(b"QSTATUS")
    + cmd(b"QRPOP", b"q", b"EX", b"0")
    + cmd(b"QINFO", b"q")
    + b"*1X\n$4\r\nPINGzz"
    + cmd(b"qlpush", b"q", b"e1", b"dup")
)


def _expected_session() -> bytes:
    return Harness().feed(SESSION)


def test_session_output_exact() -> None:
    assert _expected_session() == (
        b"+OK\r\n+PONG\r\n+OK\r\n-ERR invalid command\r\n"
        b"*1\r\n*4\r\n$1\r\nq\r\n:2\r\n:0\r\n:0\r\n"
        b"*2\r\n$2\r\ne0\r\n$0\r\n\r\n"
        b"*1\r\n$40\r\nq  total: 1  processing: 0  consumers: 0\r\n"
        b"+PONG\r\n-ERR duplicate event e1\r\n"
    )


def test_chunking_byte_by_byte() -> None:
    chunks = [SESSION[i : i + 1] for i in range(len(SESSION))]
    assert Harness().feed(b"", chunks=chunks) == _expected_session()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(SESSION)), max_size=12))
def test_chunking_random_splits(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(SESSION)]
    chunks = [SESSION[a:b] for a, b in itertools.pairwise(points)]
    assert Harness().feed(b"", chunks=chunks) == _expected_session()


def test_chunking_with_trailing_partial_request() -> None:
    assert Harness().feed(SESSION + b"*2\r\n$4\r\nPI") == _expected_session()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=60))
def test_garbage_gives_events_or_close(data: bytes) -> None:
    evs = events(b"*1\r\n$4\r\nPING\r\n" + data)
    assert evs[0] == CommandReceived(argv=(b"PING",))
    assert isinstance(evs[-1], (CloseWithoutReply, PeerClosed))


# -- commands and every error string -----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "reply"),
    [
        ((b"FOO",), b'-ERR unknown command "FOO"\r\n'),
        ((b"qpush", b"a"), b'-ERR unknown command "qpush"\r\n'),
        ((b"QUIT",), b'-ERR unknown command "QUIT"\r\n'),
        ((b"foo\r\nbar",), b'-ERR unknown command "foo\\r\\nbar"\r\n'),
        ((b"f\x00o",), b'-ERR unknown command "f\\x00o"\r\n'),
        ((b"\xff\xfe",), b'-ERR unknown command "\\xff\\xfe"\r\n'),
        (("é".encode(),), '-ERR unknown command "é"\r\n'.encode()),
        (("\u00a0".encode(),), b'-ERR unknown command "\\u00a0"\r\n'),
        ((b'a"b\\',), b'-ERR unknown command "a\\"b\\\\"\r\n'),
        (("ﬆ".encode(),), '-ERR unknown command "ﬆ"\r\n'.encode()),
        (("QREGIﬆER".encode(),), '-ERR unknown command "QREGIﬆER"\r\n'.encode()),
        (("p\u0131ng".encode(),), b"+PONG\r\n"),
        ((b"pInG", b"ignored"), b"+PONG\r\n"),
        ((), b'-ERR unknown command ""\r\n'),
        ((b"QLPUSH", b"q", b"id"), b"-ERR missing args\r\n"),
        ((b"QRPUSH", b"q", b"id"), b"-ERR missing args\r\n"),
        ((b"QLPEEK",), b"-ERR missing args\r\n"),
        ((b"QRPEEK",), b"-ERR missing args\r\n"),
        ((b"QRPOP",), b"-ERR missing args\r\n"),
        ((b"QACK", b"q"), b"-ERR missing args\r\n"),
        ((b"QNOTIFY",), b"-ERR missing args\r\n"),
        ((b"QFLUSH",), b"-ERR missing args\r\n"),
        ((b"QREGISTER",), b"+OK\r\n"),
        ((b"QSTATUS",), b"*0\r\n"),
        ((b"QINFO",), b"*0\r\n"),
        ((b"QFLUSH", b"nothing"), b"+OK\r\n"),
        ((b"QACK", b"q", b"x"), b":0\r\n"),
        ((b"QRPOP", b"q", b"EX", b"-1"), b"-ERR bad expires value: -1 < 0\r\n"),
        (
            (b"QRPOP", b"q", b"ex", b"abc"),
            b'-ERR bad expires value: strconv.Atoi: parsing "abc": invalid syntax\r\n',
        ),
        (
            (b"QRPOP", b"q", b"EX", b"99999999999999999999"),
            b'-ERR bad expires value: strconv.Atoi: parsing "99999999999999999999": '
            b"value out of range\r\n",
        ),
        ((b"QRPOP", b"q", b"EX", b"-0"), NIL),
        ((b"QNOTIFY", b"-5"), b"-ERR bad timeout value: -5 < 0\r\n"),
        (
            (b"QNOTIFY", b"1.5"),
            b'-ERR bad timeout value: strconv.Atoi: parsing "1.5": invalid syntax\r\n',
        ),
        (
            (b"QNOTIFY", b"\xff\n"),
            b'-ERR bad timeout value: strconv.Atoi: parsing "\\xff\\n": invalid syntax\r\n',
        ),
        (
            (b"QNOTIFY", b"-9223372036854775809"),
            b'-ERR bad timeout value: strconv.Atoi: parsing "-9223372036854775809": '
            b"value out of range\r\n",
        ),
        ((b"QNOTIFY", b"0"), NIL),
        ((b"QNOTIFY", b"+0"), NIL),
    ],
)
def test_command_replies(args: tuple[bytes, ...], reply: bytes) -> None:
    assert Harness().one(*args) == reply


def test_invalid_command_reply() -> None:
    assert Harness().feed(b"*1\r\n:1\r\n") == b"-ERR invalid command\r\n"


def test_push_dup_and_d2_escaping() -> None:
    h = Harness()
    assert h.one(b"QLPUSH", b"q", b"x\r\ny", b"c") == b"+OK\r\n"
    assert h.one(b"QRPUSH", b"q", b"x\r\ny", b"c") == b"-ERR duplicate event x\\r\\ny\r\n"
    assert h.one(b"QLPUSH", b"q", b"\xff", b"c") == b"+OK\r\n"
    assert h.one(b"QLPUSH", b"q", b"\xff", b"c") == b"-ERR duplicate event \xff\r\n"
    # 5th argument NOBLOCK does not count; extra args are ignored
    assert h.one(b"QLPUSH", b"q", b"\xff", b"c", b"x", b"NOBLOCK") == (
        b"-ERR duplicate event \xff\r\n"
    )


def test_noblock_replies_at_once_and_counts_workers() -> None:
    h = Harness(noblock_workers=2)
    assert h.one(b"QLPUSH", b"q", b"a", b"c", b"noblock") == b"+OK\r\n"
    assert h.one(b"QRPUSH", b"q", b"a", b"c", b"NoBlock") == b"+OK\r\n"  # dup hidden
    assert h.one(b"QLPUSH", b"q", b"b", b"c", b"NOBLOCK") == (
        b"-ERR too busy to process NOBLOCK event\r\n"
    )
    assert h.engine.status() == []  # nothing stored yet
    assert [op.event_id for op in h.background] == [b"a", b"a"]
    assert h.dispatcher.noblock_busy == 2
    h.dispatcher.background_done()
    assert h.one(b"QLPUSH", b"q", b"b", b"c", b"NOBLOCK") == b"+OK\r\n"
    h.dispatcher.background_done()
    h.dispatcher.background_done()
    with pytest.raises(RuntimeError):
        h.dispatcher.background_done()


def test_qrpop_argument_quirks() -> None:
    h = Harness()
    for i in range(5):
        h.one(b"QLPUSH", b"q", b"e%d" % i, b"c")
    assert h.one(b"QRPOP", b"q", b"EX") == encode_event((b"e0", b"c"))  # default expiry
    assert h.one(b"QRPOP", b"q", b"foo", b"EX", b"0") == encode_event((b"e1", b"c"))
    assert h.one(b"QRPOP", b"q", b"Ex", b"0", b"NOACK") == encode_event((b"e2", b"c"))
    assert h.one(b"QRPOP", b"q", b"EX", b"+20", b"EX", b"0") == encode_event((b"e3", b"c"))
    assert h.engine.status([b"q"]) == [QueueStatus(name=b"q", total=4, processing=3, consumers=0)]
    assert h.one(b"QRPOP", b"q", b"EX", b"9223372036854775807") == (
        b"-ERR unexpected server-side error\r\n"
    )
    assert h.engine.status([b"q"])[0].processing == 4


def test_qinfo_padding_bytes_vs_characters() -> None:
    h = Harness()
    h.one(b"QLPUSH", "é".encode(), b"1", b"c")
    h.one(b"QLPUSH", b"ab", b"1", b"c")
    out = h.one(b"QINFO")
    assert out == (
        b"*2\r\n"
        b"$41\r\nab  total: 1  processing: 0  consumers: 0\r\n"
        + b"$42\r\n"
        + "é   total: 1  processing: 0  consumers: 0".encode()
        + b"\r\n"
    )
    assert (
        Harness().one(b"QINFO", b"") == b"*1\r\n$40\r\n   total: 0  processing: 0  consumers: 0\r\n"
    )


def test_qinfo_column_widths_transcript() -> None:
    entries = [
        QueueStatus(name=b"iw-a", total=12, processing=0, consumers=0),
        QueueStatus(name=b"iw-longer-name", total=3, processing=2, consumers=0),
        QueueStatus(name=b"iw-mid", total=0, processing=0, consumers=10),
    ]
    assert render_info(entries) == (
        b"*3\r\n$55\r\niw-a            total: 12  processing: 0  consumers: 0 \r\n"
        b"$55\r\niw-longer-name  total: 3   processing: 2  consumers: 0 \r\n"
        b"$55\r\niw-mid          total: 0   processing: 0  consumers: 10\r\n"
    )


# -- QNOTIFY ------------------------------------------------------------------------------------


def test_qnotify_initial_check_and_blocking() -> None:
    h = Harness()
    assert h.one(b"QNOTIFY", b"5") == BLOCKED  # no queues: waits the full timeout
    h.one(b"QREGISTER", b"a", b"b", b"a")
    assert h.one(b"QNOTIFY", b"0") == NIL
    h.one(b"QLPUSH", b"b", b"1", b"c")
    assert h.one(b"QNOTIFY", b"0") == b"$1\r\nb\r\n"
    assert h.one(b"QNOTIFY", b"5") == b"$1\r\nb\r\n"


def test_qnotify_random_order_uses_injected_rng() -> None:
    seen = set()
    h = Harness()
    h.one(b"QREGISTER", b"a", b"b", b"c")
    h.one(b"QLPUSH", b"a", b"1", b"c")
    h.one(b"QLPUSH", b"b", b"1", b"c")
    for _ in range(40):
        seen.add(h.one(b"QNOTIFY", b"0"))
    assert seen == {b"$1\r\na\r\n", b"$1\r\nb\r\n"}


def test_qnotify_huge_timeout_wraps_like_go_duration() -> None:
    d = Dispatcher(rng=random.Random(0))
    action = d.handle("c", CommandReceived(argv=(b"QNOTIFY", b"9223372036854775807")))
    assert isinstance(action, WaitForNotify)
    assert action.wait_s < 0  # Go's Duration multiplication overflows: fires at once
    assert action.after_check(None) == NIL
    action = d.handle("c", CommandReceived(argv=(b"QNOTIFY", b"30")))
    assert isinstance(action, WaitForNotify)
    assert action.wait_s == 30.0
    assert action.after_check(None) is None


def test_notify_hub_pending_and_waiters() -> None:
    hub = NotifyHub()
    hub.register("c1", [b"q", b"r"])
    hub.register("c2", [b"q"])
    assert hub.publish(b"q") == []  # nobody waiting: pending kept...
    hub.discard_pending("c1")  # ...until the next QNOTIFY begins
    assert hub.start_wait("c1") is False
    assert hub.start_wait("c2") is True  # c2's notification was never discarded
    assert sorted(hub.publish(b"r")) == ["c1"]
    assert sorted(hub.publish(b"q")) == ["c1", "c2"]
    assert hub.end_wait("c1") == b"$1\r\nr\r\n"  # first notification wins
    assert hub.end_wait("c2") == b"$1\r\nq\r\n"
    assert hub.end_wait("c2") == NIL
    hub.register("c1", [b"x"])
    assert hub.publish(b"q") == []
    assert hub.queues_of("c1") == (b"x",)
    hub.forget("c1")
    hub.forget("c2")
    assert hub.queues_of("c1") == ()
    assert hub.publish(b"x") == []


def test_connection_closed_deregisters() -> None:
    h = Harness()
    h.one(b"QREGISTER", b"q", consumer="c9")
    op = h.dispatcher.connection_closed("c9")
    assert op == Register(queues=())
    assert h.dispatcher.hub.queues_of("c9") == ()


# -- Go compatibility helpers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (b"0", 0),
        (b"-0", 0),
        (b"+20", 20),
        (b"9223372036854775807", 2**63 - 1),
        (b"-9223372036854775808", -(2**63)),
        (b"0012", 12),
    ],
)
def test_atoi_values(text: bytes, value: int) -> None:
    assert atoi(text) == value


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"", "invalid syntax"),
        (b"+", "invalid syntax"),
        (b"-", "invalid syntax"),
        (b" 1", "invalid syntax"),
        (b"1_000", "invalid syntax"),
        (b"0x10", "invalid syntax"),
        (b"+-1", "invalid syntax"),
        (b"9223372036854775808", "value out of range"),
        (b"-9223372036854775809", "value out of range"),
        (b"99999999999999999999x", "value out of range"),  # overflow found before the junk
        (b"9999999999999999999x", "invalid syntax"),
        (b"18446744073709551616", "value out of range"),
    ],
)
def test_atoi_errors(text: bytes, reason: str) -> None:
    with pytest.raises(AtoiError) as info:
        atoi(text)
    assert info.value.reason == reason
    assert (
        info.value.message == b"strconv.Atoi: parsing " + go_quote(text) + b": " + reason.encode()
    )


@pytest.mark.parametrize(
    ("data", "quoted"),
    [
        (b"abc", b'"abc"'),
        (b"\x07\x08\x0c\n\r\t\x0b", b'"\\a\\b\\f\\n\\r\\t\\v"'),
        (b"\x01\x7f", b'"\\x01\\x7f"'),
        ("\u00a0\u200b".encode(), b'"\\u00a0\\u200b"'),
        ("\U000e0001".encode(), b'"\\U000e0001"'),
        ("日本 😀".encode(), '"日本 😀"'.encode()),
        (b"\xe6\x97", b'"\\xe6\\x97"'),  # truncated sequence: byte by byte
        (b"\xed\xa0\x80", b'"\\xed\\xa0\\x80"'),  # encoded surrogate
        (b"\xc0\xaf", b'"\\xc0\\xaf"'),  # overlong
        ("\ufffd".encode(), '"\ufffd"'.encode()),  # a real U+FFFD is printable
    ],
)
def test_go_quote(data: bytes, quoted: bytes) -> None:
    assert go_quote(data) == quoted


def test_go_upper_and_rune_count() -> None:
    assert go_upper("p\u0131ng".encode()) == "PING"
    assert go_upper("\u017ftatus".encode()) == "STATUS"
    assert go_upper("ßﬆ".encode()) == "ßﬆ"
    assert go_upper(b"ex\xff") == "EX\ufffd"
    assert rune_count("é".encode() + b"\xff" + b"ab") == 4
