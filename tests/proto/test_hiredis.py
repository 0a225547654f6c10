"""Differential tests: the hiredis-backed decoder against the pure one, plus backend selection.

Both backends must give identical values and identical error classes on every vector, on
generated reply streams cut anywhere, and on garbage over the RESP2 alphabet.  Where hiredis
itself is looser, the adapter (okq_proto._hiredis) makes up for it: limits are enforced before
hiredis allocates (a header that could break one is decided exactly; a token inside a bulk
payload is told apart by hiredis's unread bytes), RESP3 aggregates (``~ > |``) are refused,
error replies keep their exact bytes, and where hiredis is stricter the pure decoder is too.

The documented differences (module docstring of okq_proto._hiredis, docs/codec.md) are each
pinned by a test below: RESP3 scalar types parse under hiredis; the CR LF after a bulk payload is
not checked; nesting deeper than ``max_depth`` through later elements is accepted up to
hiredis's own cap.  Garbage tests map RESP3 scalar type bytes to ``?`` (invalid for both) and,
where the pure decoder fails on one of the other two, check only that everything before agrees
and that nothing but `RemoteProtocolError` is raised.
"""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from okq_proto import (
    NEED_DATA,
    Decoder,
    ErrorReply,
    Limits,
    LocalProtocolError,
    RemoteProtocolError,
    Reply,
    make_decoder,
)

if not os.environ.get("CI"):
    pytest.importorskip("hiredis")

import itertools

from okq_proto._hiredis import HiredisDecoder
from okq_proto._resp import DEFAULT_LIMITS

from .test_resp import BAD, RESPISH, VECTORS, encode_reply, four_ways, replies

Outcome = tuple[list[Reply], type[Exception] | None, str]


def run(decoder: Decoder | HiredisDecoder, chunks: list[bytes]) -> Outcome:
    """Replies until the first error, the error's class and (for pure) its message."""
    out: list[Reply] = []
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            while (reply := decoder.next_reply()) is not NEED_DATA:
                out.append(reply)
    except RemoteProtocolError as exc:
        return out, type(exc), str(exc)
    return out, None, ""


# RESP3 scalar type bytes: hiredis parses them, the pure decoder refuses them (documented).
RESP3_SCALARS = b"_,#(=%"
_RESP2_ONLY = bytes.maketrans(RESP3_SCALARS, b"?" * len(RESP3_SCALARS))


def resp2(data: bytes) -> bytes:
    """`data` with RESP3 scalar type bytes replaced by ``?`` (no type byte in either backend)."""
    return data.translate(_RESP2_ONLY)


def compare(chunks: list[bytes], limits: Limits = DEFAULT_LIMITS) -> None:
    pure = run(Decoder(limits), chunks)
    fast = run(HiredisDecoder(limits), chunks)
    if pure[1] is not None and ("not followed by CR LF" in pure[2] or "nested deeper" in pure[2]):
        # The two documented looser places: everything before must agree.
        assert fast[0][: len(pure[0])] == pure[0]
        return
    assert fast[:2] == pure[:2]


@pytest.mark.parametrize(("wire", "expected"), VECTORS)
def test_vectors_agree(wire: bytes, expected: list[Reply]) -> None:
    for _how, chunks in four_ways(wire):
        compare(chunks)
        assert run(HiredisDecoder(), chunks)[0] == expected


@pytest.mark.parametrize("wire", [wire for wire in BAD if wire[:1] not in RESP3_SCALARS])
def test_errors_agree(wire: bytes) -> None:
    for _how, chunks in four_ways(b"+x\r\n" + wire + b"+y\r\n"):
        compare(chunks)


TRICKY = [
    # Tokens that look suspicious but sit inside bulk payloads: plain data.
    b"$5\r\n\r\n_\r\n\r\n",
    b"$14\r\n\r\n*2147483648\r\n",
    b"$13\r\n\r\n$999999999\r\n\r\n",
    b"$9\r\n\r\n-\xff\xfe\r\n\r\n\r\n",
    b"$36\r\n" + b"\r\n*1" * 12 + b"\r\n",
    b"*2\r\n$70000\r\n" + b"a" * 70000 + b"\r\n$3\r\n\r\n_\r\n",
    # Real tokens.
    b"*2\r\n:1\r\n~1\r\n",
    b"*2\r\n:1\r\n>2\r\n",
    b"+a\r\n|1\r\n:1\r\n",
    b"*1\r\n-ERR \xff\xfe dup\r\n-ERR caf\xc3\xa9\r\n-ERR \xef\xbf\xbd\r\n",
    b"*1\r\n$999999999\r\n",
    b"$536870912\r\n",
    b"$536870913\r\n",
    b"*16777216\r\n",
    b"*16777217\r\n",
    b"*2\r\n+" + b"a" * 70000 + b"\r\n",
    b"+" + b"a" * 65536 + b"\r\n+" + b"a" * 65537 + b"\r\n",
    # Big bulks (skipped unseen where an element is known to start) around hazards.
    b"$5000\r\n" + b"\r\n*2147483648\r\n$999999999\r\n-\xff\r\n".ljust(5000, b"x") + b"\r\n",
    b"$5000\r\n" + b"y" * 5000 + b"\r\n*2147483648\r\n",
    b"$5000\r\n" + b"y" * 5000 + b"\r\n$999999999\r\n",
    b"*2\r\n$5000\r\n" + b"y" * 5000 + b"\r\n$5000\r\n" + b"z" * 5000 + b"\r\n*16777217\r\n",
    b"$4096\r\n" + b"a" * 4096 + b"\r\n$4095\r\n" + b"b" * 4095 + b"\r\n+ok\r\n",
    b"$536870913\r\n" + b"a" * 5000,
    # Hazards right after a bad payload end (hiredis skips those two bytes unchecked).
    b"$1\r\naXY*2147483648\r\n",
    b"$1\r\naXY~2147483648\r\n",
    b"$1\r\naXY$999999999\r\n",
    b"$5000\r\n" + b"y" * 5000 + b"XY*2147483648\r\n",
    b"+abc*2147483648\r\n+d\r\n",
]


@pytest.mark.parametrize("wire", TRICKY)
def test_tricky_streams_agree(wire: bytes) -> None:
    for _how, chunks in four_ways(wire):
        compare(chunks)
    compare([wire[i : i + 65536] for i in range(0, len(wire), 65536)])
    compare([wire[i : i + 1000] for i in range(0, len(wire), 1000)])


@pytest.mark.parametrize(
    "limits",
    [
        Limits(max_depth=2),
        Limits(max_bulk_length=10),
        Limits(max_array_length=3),
        Limits(max_line_length=5),
    ],
)
@settings(max_examples=200)
@given(items=st.lists(replies, min_size=1, max_size=5), simple=st.booleans(), data=st.data())
def test_generated_streams_agree(
    items: list[Reply], simple: bool, limits: Limits, data: st.DataObject
) -> None:
    wire = b"".join(encode_reply(item, simple) for item in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    bounds = [0, *cuts, len(wire)]
    compare([wire[a:b] for a, b in itertools.pairwise(bounds)], limits)


@settings(max_examples=500)
@given(garbage=st.one_of(st.binary(max_size=200), RESPISH), data=st.data())
def test_garbage_agrees(garbage: bytes, data: st.DataObject) -> None:
    garbage = resp2(garbage)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(garbage)), max_size=6)))
    bounds = [0, *cuts, len(garbage)]
    compare(
        [garbage[a:b] for a, b in itertools.pairwise(bounds)],
        Limits(max_line_length=16, max_depth=3),
    )


# -- each documented difference, pinned ----------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "value"),
    [
        (b"_\r\n", None),
        (b",1.5\r\n", 1.5),
        (b"#t\r\n", True),
        (b"(12\r\n", b"12"),
        (b"=5\r\ntxt:a\r\n", b"a"),
        (b"%1\r\n+a\r\n+b\r\n", {b"a": b"b"}),
    ],
)
def test_resp3_scalars_parse_under_hiredis_only(wire: bytes, value: object) -> None:
    for _how, chunks in four_ways(b"+x\r\n" + wire + b"+y\r\n"):
        assert run(HiredisDecoder(), chunks) == ([b"x", value, b"y"], None, "")
        assert run(Decoder(), chunks)[:2] == ([b"x"], RemoteProtocolError)


@pytest.mark.parametrize("kind", [b"~", b">", b"|"])
def test_resp3_aggregates_are_refused_by_both(kind: bytes) -> None:
    for count in (b"1", b"2147483648"):
        compare([b"+x\r\n" + kind + count + b"\r\n:1\r\n"])
        assert run(HiredisDecoder(), [kind + count + b"\r\n"])[1] is RemoteProtocolError


def test_crlf_after_bulk_payload_is_not_checked() -> None:
    assert run(HiredisDecoder(), [b"$3\r\nabcXY+ok\r\n"]) == ([b"abc", b"ok"], None, "")
    assert run(Decoder(), [b"$3\r\nabcXY+ok\r\n"])[:2] == ([], RemoteProtocolError)
    # A header right after such bytes is refused (no valid stream has an element there).
    for wire in (b"$3\r\nabcXY*2147483648\r\n", b"$3\r\nabcXY$999999999\r\n"):
        _, error, message = run(HiredisDecoder(), [wire])
        assert error is RemoteProtocolError
        assert "not followed by CR LF" in message


def test_nesting_through_later_elements_is_capped_by_hiredis() -> None:
    deep = b"*2\r\n:1\r\n" * 20 + b":1\r\n"
    out, error, _ = run(HiredisDecoder(), [deep])
    assert error is None
    assert len(out) == 1
    assert run(Decoder(), [deep])[1] is RemoteProtocolError
    # hiredis's own cap: about a thousand levels, then a protocol error.
    assert run(HiredisDecoder(), [b"*2\r\n:1\r\n" * 2000])[1] is RemoteProtocolError
    # A run of array headers is refused at max_depth, as by the pure decoder.
    assert run(HiredisDecoder(Limits(max_depth=3)), [b"*1\r\n" * 4 + b":1\r\n"])[1] is (
        RemoteProtocolError
    )


def test_big_bulks_are_skipped_exactly() -> None:
    payload = bytes(range(256)) * 40 + b"\r\n*2147483648\r\n"
    wire = (b"$%d\r\n%s\r\n" % (len(payload), payload)) * 3 + b"*1\r\n$5000\r\n"
    for size in (1, 7, 4096, 65536):
        decoder = HiredisDecoder()
        out = []
        for i in range(0, len(wire), size):
            decoder.feed(wire[i : i + size])
            while (reply := decoder.next_reply()) is not NEED_DATA:
                out.append(reply)
        assert out == [payload] * 3
        assert decoder.has_partial()


@pytest.mark.parametrize("first", [0, 1, 5, 9, 12, 20])
def test_fake_headers_in_payloads_fed_bytewise(first: int) -> None:
    # A bulk header inside a payload must never set a skip: the real header after it counts.
    payload = b"ab\r\n$5\r\nxy\r\n*1\r\n+q"
    wire = b"*2\r\n$%d\r\n%s\r\n*2147483648\r\n" % (len(payload), payload)
    chunks = [wire[:first]] + [wire[i : i + 1] for i in range(first, len(wire))]
    compare(chunks)
    assert run(HiredisDecoder(), chunks)[1] is RemoteProtocolError


def test_error_reply_values_are_exact() -> None:
    decoder = HiredisDecoder()
    decoder.feed(b"-ERR duplicate event \xff\xfe\r\n-ERR ok\r\n")
    assert decoder.next_reply() == ErrorReply(b"ERR duplicate event \xff\xfe")
    assert decoder.next_reply() == ErrorReply(b"ERR ok")


def test_sticky_errors() -> None:
    decoder = HiredisDecoder()
    decoder.feed(b"+a\r\n?\r\n")
    assert decoder.next_reply() == b"a"
    for _ in range(2):
        with pytest.raises(RemoteProtocolError):
            decoder.next_reply()
    with pytest.raises(RemoteProtocolError):
        decoder.feed(b"+b\r\n")


def test_has_partial_and_limits() -> None:
    decoder = HiredisDecoder(Limits(max_depth=3))
    assert decoder.limits == Limits(max_depth=3)
    assert not decoder.has_partial()
    decoder.feed(b"+O")
    assert decoder.next_reply() is NEED_DATA
    assert decoder.has_partial()
    decoder.feed(b"K\r\n")
    assert decoder.next_reply() == b"OK"
    assert not decoder.has_partial()


def test_make_decoder_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(make_decoder("python"), Decoder)
    assert isinstance(make_decoder("hiredis"), HiredisDecoder)
    assert isinstance(make_decoder(), HiredisDecoder)
    limits = Limits(max_depth=2)
    assert make_decoder("hiredis", limits).limits is limits  # type: ignore[attr-defined]
    with pytest.raises(LocalProtocolError):
        make_decoder("resp3")  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "okq_proto._hiredis", None)
    assert isinstance(make_decoder(), Decoder)
    with pytest.raises(LocalProtocolError):
        make_decoder("hiredis")
