"""The client connection machine: pipelining, FIFO pairing, states, sticky errors, EOF."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

import okq_proto as okq
from okq_proto import (
    CLOSED,
    NEED_DATA,
    ClientConnection,
    CommandReplied,
    ConnectionClosed,
    ConnectionState,
    DuplicateEventError,
    Event,
    LocalProtocolError,
    RemoteProtocolError,
)

BACKENDS = ["python", "hiredis"]


def replies(conn: ClientConnection) -> list[CommandReplied]:
    out: list[CommandReplied] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA or event is CLOSED:
            return out
        out.append(event)


PIPELINE = [
    (okq.QLPush(b"q", b"e1", b"c1"), b"+OK\r\n", None),
    (okq.QLPush(b"q", b"e1", b"c1"), b"-ERR duplicate event e1\r\n", DuplicateEventError),
    (okq.QRPeek(b"q"), b"*2\r\n$2\r\ne1\r\n$2\r\nc1\r\n", Event("q", "e1", b"c1")),
    (okq.QRPop(b"q", 30), b"*2\r\n$2\r\ne1\r\n$2\r\nc1\r\n", Event("q", "e1", b"c1")),
    (okq.QRPop(b"q", 30), b"$-1\r\n", None),
    (okq.QAck(b"q", b"e1"), b":1\r\n", 1),
    (okq.QStatus(), b"*1\r\n*4\r\n$1\r\nq\r\n:0\r\n:0\r\n:0\r\n", [okq.QueueStatus("q", 0, 0, 0)]),
    (okq.QInfo(), b"*0\r\n", []),
    (okq.QNotify(0), b"$1\r\nq\r\n", "q"),
    (okq.Ping(), b"+PONG\r\n", None),
]
WIRE = b"".join(reply for _, reply, _ in PIPELINE)


def check_pipeline(events: list[CommandReplied]) -> None:
    assert [e.command for e in events] == [c for c, _, _ in PIPELINE]
    for event, (_, _, expected) in zip(events, PIPELINE, strict=True):
        if isinstance(expected, type):
            assert isinstance(event.error, expected)
            assert event.result is None
            with pytest.raises(expected):
                event.unwrap()
        else:
            assert event.error is None
            assert event.result == expected
            assert event.unwrap() == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_pipeline_leaves_in_one_write_and_pairs_fifo(backend: str) -> None:
    conn = ClientConnection(backend=backend)  # type: ignore[arg-type]
    conn.send_many(c for c, _, _ in PIPELINE)
    assert len(conn.in_flight) == len(PIPELINE)
    out = conn.data_to_send()
    assert out == okq.encode_commands(c.argv() for c, _, _ in PIPELINE)
    assert conn.data_to_send() == b""
    assert conn.next_event() is NEED_DATA
    conn.receive_data(WIRE)
    check_pipeline(replies(conn))
    assert conn.in_flight == ()
    assert conn.state is ConnectionState.OPEN


@pytest.mark.parametrize("backend", BACKENDS)
@given(seed=st.integers(0, 2**32))
def test_any_chunking_gives_the_same_events(backend: str, seed: int) -> None:
    rng = random.Random(seed)
    conn = ClientConnection(backend=backend)  # type: ignore[arg-type]
    conn.send_many(c for c, _, _ in PIPELINE)
    conn.data_to_send()
    events: list[CommandReplied] = []
    pos = 0
    while pos < len(WIRE):
        step = rng.choice([1, 1, 2, 3, 7, 50])
        conn.receive_data(memoryview(WIRE)[pos : pos + step])
        pos += step
        events += replies(conn)
    check_pipeline(events)


def test_byte_by_byte_and_bytearray_input() -> None:
    conn = ClientConnection(backend="python")
    conn.send_many(c for c, _, _ in PIPELINE)
    events: list[CommandReplied] = []
    for i in range(len(WIRE)):
        conn.receive_data(bytearray(WIRE[i : i + 1]))
        events += replies(conn)
    check_pipeline(events)


def test_reply_with_nothing_in_flight_is_a_remote_error_and_sticky() -> None:
    conn = ClientConnection()
    conn.receive_data(b"+OK\r\n")
    with pytest.raises(RemoteProtocolError, match="no command in flight"):
        conn.next_event()
    assert conn.state is ConnectionState.BROKEN
    with pytest.raises(LocalProtocolError, match="broken"):
        conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.send(okq.Ping())
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"+OK\r\n")


def test_malformed_reply_breaks_the_connection() -> None:
    conn = ClientConnection()
    conn.send(okq.Ping())
    conn.send(okq.Ping())
    conn.receive_data(b"!garbage\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()
    assert conn.state is ConnectionState.BROKEN
    assert conn.data_to_send() == b""


def test_reply_of_the_wrong_shape_breaks_the_connection() -> None:
    conn = ClientConnection()
    conn.send(okq.QAck(b"q", b"i"))
    conn.receive_data(b"+OK\r\n")
    with pytest.raises(RemoteProtocolError, match="QACK"):
        conn.next_event()
    assert conn.state is ConnectionState.BROKEN


def test_error_reply_keeps_its_slot_and_the_connection() -> None:
    conn = ClientConnection()
    conn.send(okq.QRPop(b"q"))
    conn.send(okq.Ping())
    conn.receive_data(b"-ERR unexpected server-side error\r\n+PONG\r\n")
    first, second = replies(conn)
    assert isinstance(first.error, okq.ReplyError)
    assert second.result is None
    assert second.error is None
    assert conn.state is ConnectionState.OPEN


def test_clean_eof() -> None:
    conn = ClientConnection()
    conn.receive_eof()
    conn.receive_eof()  # idempotent
    assert conn.next_event() is CLOSED
    assert conn.state is ConnectionState.CLOSED
    assert conn.next_event() is CLOSED
    with pytest.raises(ConnectionClosed):
        conn.send(okq.Ping())


def test_eof_after_all_replies_is_clean() -> None:
    conn = ClientConnection()
    conn.send(okq.Ping())
    conn.receive_data(b"+PONG\r\n")
    conn.receive_eof()
    assert isinstance(conn.next_event(), CommandReplied)
    assert conn.next_event() is CLOSED


def test_eof_with_replies_owed_reports_them() -> None:
    conn = ClientConnection()
    conn.send(okq.Ping())
    conn.send(okq.QRPop(b"q"))
    conn.receive_data(b"+PONG\r\n*2\r\n$1\r\n")
    conn.receive_eof()
    assert isinstance(conn.next_event(), CommandReplied)
    with pytest.raises(ConnectionClosed) as info:
        conn.next_event()
    assert info.value.unanswered == (okq.QRPop(b"q"),)
    assert conn.state is ConnectionState.BROKEN


def test_eof_mid_reply_with_nothing_owed_is_still_an_error() -> None:
    conn = ClientConnection()
    conn.send(okq.Ping())
    conn.receive_data(b"+PONG\r\n+PO")
    conn.receive_eof()
    conn.next_event()
    with pytest.raises((ConnectionClosed, RemoteProtocolError)):
        conn.next_event()


def test_send_after_eof_and_data_after_eof() -> None:
    conn = ClientConnection()
    conn.receive_eof()
    with pytest.raises(ConnectionClosed):
        conn.send(okq.Ping())
    conn = ClientConnection()
    conn.receive_eof()
    with pytest.raises(LocalProtocolError, match="after end of file"):
        conn.receive_data(b"+OK\r\n")


def test_only_commands_can_be_sent() -> None:
    conn = ClientConnection()
    with pytest.raises(LocalProtocolError, match="not an okq command"):
        conn.send(b"PING")  # type: ignore[arg-type]
    assert conn.data_to_send() == b""


def test_allowed_silence_follows_blocking_commands() -> None:
    conn = ClientConnection()
    assert conn.allowed_silence_s() == 0.0
    conn.send(okq.QNotify(30))
    conn.send(okq.Ping())
    assert conn.allowed_silence_s() == 30.0
    conn.send(okq.QNotify(5))
    assert conn.allowed_silence_s() == 35.0
    conn.receive_data(b"$-1\r\n")
    conn.next_event()
    assert conn.allowed_silence_s() == 5.0


def test_large_payloads_are_joined_once() -> None:
    payload = b"x" * 100_000
    conn = ClientConnection()
    conn.send(okq.QLPush(b"q", b"i", payload))
    conn.send(okq.QLPush(b"q", b"j", b"small"))
    parts = okq.encode_command_parts(okq.QLPush(b"q", b"i", payload).argv())
    assert any(part is payload for part in parts)  # not copied while encoding
    assert conn.data_to_send() == okq.encode_commands(
        [okq.QLPush(b"q", b"i", payload).argv(), okq.QLPush(b"q", b"j", b"small").argv()]
    )


def test_unknown_backend_refused() -> None:
    with pytest.raises(LocalProtocolError, match="backend"):
        okq.make_decoder("fast")  # type: ignore[arg-type]
    assert isinstance(okq.make_decoder("python"), okq.Decoder)
