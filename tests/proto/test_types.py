"""Public types, the name codec, and the shared client policies of okq_proto._ops."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

import okq_proto as okq
import okq_proto.policy as okq_policy
from okq_proto import Event, LocalProtocolError, PushFlag, QueueStatus


@given(st.binary())
def test_names_round_trip_exactly(raw: bytes) -> None:
    assert okq.to_wire(okq.from_wire(raw)) == raw


def test_name_codec() -> None:
    assert okq.to_wire("é") == b"\xc3\xa9"
    assert okq.to_wire(b"\xff") == b"\xff"
    assert okq.from_wire(b"\xff") == "\udcff"
    with pytest.raises(LocalProtocolError):
        okq.to_wire(5)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        okq.to_wire("\ud800")  # a lone surrogate that is not an escaped byte


def test_contents() -> None:
    assert okq.contents_bytes("é") == b"\xc3\xa9"
    assert okq.contents_bytes(bytearray(b"x")) == b"x"
    assert okq.contents_bytes(memoryview(b"xy")) == b"xy"
    with pytest.raises(LocalProtocolError):
        okq.contents_bytes(1)  # type: ignore[arg-type]


def test_event() -> None:
    event = Event("q", "id", b"hi")
    assert event.text == "hi"
    assert Event("q", "id", "hi") == event  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Event(b"q", "id", b"")  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        event.id = "x"  # type: ignore[misc]


def test_queue_status_extra_fields_do_not_change_equality() -> None:
    assert QueueStatus("q", 1, 0, 0, (b"x",)) == QueueStatus("q", 1, 0, 0)
    assert QueueStatus("q", 5, 2, 1).waiting == 3


def test_push_flags_combine() -> None:
    both = PushFlag.HIGH_PRIORITY | PushFlag.NO_BLOCK
    assert PushFlag.NO_BLOCK in both
    assert PushFlag.HIGH_PRIORITY in both
    assert PushFlag.NO_BLOCK not in PushFlag.NORMAL


def test_delivery_is_an_event_with_a_deadline() -> None:
    delivery = okq.Delivery("q", "i", b"c", deadline=12.5, expire_s=30)
    assert isinstance(delivery, Event)
    assert delivery.needs_ack
    assert delivery.remaining(10.0) == 2.5
    at_most_once = okq.Delivery("q", "i", b"c", expire_s=-1)
    assert not at_most_once.needs_ack
    assert math.isinf(at_most_once.deadline)


def test_push_outcome_and_retry_settlement() -> None:
    dup = okq.reply_error(okq.ErrorReply(b"ERR duplicate event i"))
    settled = okq_policy.settle_retried_push("i", dup, retried=True)
    assert settled.ok
    assert settled.retried
    assert settled.unwrap() == "i"
    fresh = okq_policy.settle_retried_push("i", dup, retried=False)
    assert not fresh.ok
    with pytest.raises(okq.DuplicateEventError):
        fresh.unwrap()


def test_retry_safety() -> None:
    safe = [
        okq.QLPush(b"q", b"i", b""),
        okq.QRPush(b"q", b"i", b""),
        okq.QLPeek(b"q"),
        okq.QRPeek(b"q"),
        okq.QStatus(),
        okq.QInfo(),
        okq.QFlush(b"q"),
        okq.Ping(),
    ]
    unsafe = [okq.QRPop(b"q"), okq.QNotify(1), okq.QRegister(), okq.QAck(b"q", b"i")]
    assert all(okq_policy.retry_safe(c) for c in safe)
    assert not any(okq_policy.retry_safe(c) for c in unsafe)


def test_backoff_is_capped_full_jitter() -> None:
    backoff = okq.Backoff(base_s=0.1, cap_s=1.0, rng=random.Random(7))
    ceilings = []
    for _ in range(10):
        ceilings.append(backoff.ceiling())
        delay = backoff.next_delay()
        assert 0.0 <= delay <= ceilings[-1]
    assert ceilings[:5] == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert max(ceilings) == 1.0
    assert backoff.attempt == 10
    backoff.reset()
    assert backoff.ceiling() == 0.1
    with pytest.raises(LocalProtocolError):
        okq.Backoff(base_s=0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:4777", [("127.0.0.1", 4777)]),
        ("localhost", [("localhost", 4777)]),
        ("[::1]:5000", [("::1", 5000)]),
        ("[::1]", [("::1", 4777)]),
        ("a:1, b:2", [("a", 1), ("b", 2)]),
        (("h", 9), [("h", 9)]),
        (["a:1", ("b", 2)], [("a", 1), ("b", 2)]),
    ],
)
def test_parse_addresses(text: str, expected: list[tuple[str, int]]) -> None:
    assert okq.parse_addresses(text) == expected


@pytest.mark.parametrize("bad", ["", ":1", "h:0", "h:70000", "h:x", "[::1", "[::1]x", [], 5])
def test_bad_addresses(bad: object) -> None:
    with pytest.raises(LocalProtocolError):
        okq.parse_addresses(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("okq://127.0.0.1:4777", [("127.0.0.1", 4777)]),
        ("okq://localhost", [("localhost", 4777)]),
        ("okq://h:5/", [("h", 5)]),
        ("OKQ://[::1]:6", [("::1", 6)]),
        (" okq://a:1 , okq://b:2 ", [("a", 1), ("b", 2)]),
        ("okq://a:1,b:2", [("a", 1), ("b", 2)]),  # one URL, two servers
        (["okq://a:1", "b:2", ("c", 3)], [("a", 1), ("b", 2), ("c", 3)]),
    ],
)
def test_urls(text: str | list[str | tuple[str, int]], expected: list[tuple[str, int]]) -> None:
    assert okq.parse_addresses(text) == expected


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("redis://127.0.0.1:4777", "unsupported scheme 'redis'.*okq://HOST:PORT"),
        ("rediss://h:1", "unsupported scheme 'rediss'"),
        ("http://h", "unsupported scheme 'http'"),
        ("okq://user@h:1", "no user, path, query or fragment"),
        ("okq://h:1/0", "no user, path, query or fragment"),
        ("okq://h:1?timeout=1", "no user, path, query or fragment"),
        ("okq://h:1#x", "no user, path, query or fragment"),
        ("okq://", "bad server address"),
        ("okq://:1", "bad server address"),
        ("okq://h:99999", "bad server address"),
    ],
)
def test_bad_urls(bad: str, message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        okq.parse_address(bad)
    with pytest.raises(LocalProtocolError, match=message):
        okq.parse_addresses(f"okq://a:1,{bad}")


def test_new_event_id_is_uuid4_text() -> None:
    ids = {okq.new_event_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 36 and i[14] == "4" for i in ids)


def test_hooks_default_to_no_ops() -> None:
    hooks = okq.Hooks()
    delivery = okq.Delivery("q", "i", b"")
    hooks.pushed("q", "i")
    hooks.delivered(delivery)
    hooks.acked(delivery)
    hooks.late_ack(delivery)
    hooks.handler_failed(delivery, None)
    hooks.reconnect(("h", 1), 1, 0.1)
    hooks.error(ValueError())
    assert isinstance(hooks, okq.Hooks)


def test_error_tree() -> None:
    assert issubclass(okq.LocalProtocolError, okq.ProtocolError)
    assert issubclass(okq.RemoteProtocolError, okq.ProtocolError)
    assert issubclass(okq.ProtocolError, okq.OkqError)
    assert issubclass(okq.DuplicateEventError, okq.ReplyError)
    assert issubclass(okq.TooBusyError, okq.ReplyError)
    for cls in (okq.ConnectError, okq.TimeoutError, okq.ConnectionClosed):
        assert issubclass(cls, okq.TransportError)
        assert issubclass(cls, okq.OkqError)
    assert issubclass(okq.TimeoutError, TimeoutError)
    assert okq.ErrorReply(b"ERR x y").prefix == b"ERR"
    assert okq.ErrorReply(b"ERR \xff").text == "ERR \ufffd"
