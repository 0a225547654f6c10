"""Differential tests: the hiredis-backed decoder against the pure one, plus backend selection.

Both backends must give identical values and identical error classes on every vector, on
generated reply streams cut anywhere, and on garbage.  Where hiredis itself is looser, the
adapter (okq_proto._hiredis) makes up for it:

* limits (bulk, array, depth, line): hiredis has none and allocates an array header's list up
  front; `feed` finds header-like tokens that could break a limit and decides them before
  hiredis sees them (a token inside a bulk payload is told apart by hiredis's unread bytes);
* RESP3 type bytes (``_ , # % ~ > | ( =``): hiredis parses them; the adapter refuses them;
* error replies: hiredis decodes them lossily (UTF-8 ``replace``); the adapter supplies the
  exact bytes of every error line holding bytes >= 0x80;
* where hiredis is stricter (CR/LF inside simple strings, integers with leading zeros, ``-0``
  or beyond 64 bits) the pure decoder refuses too.

Two looser places remain and are documented in docs/codec.md: hiredis does not check the CR LF
after a bulk payload (``$3\\r\\nabcXY`` gives ``b"abc"``), and nesting beyond ``max_depth`` that
does not start as a run of array headers is accepted.  On such streams the pure decoder fails
and the hiredis one may go on; the garbage test below checks that everything up to that point
agrees, and that nothing but `RemoteProtocolError` is ever raised.
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


@pytest.mark.parametrize("wire", BAD)
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
    b"*2\r\n:1\r\n_\r\n",
    b"*1\r\n-ERR \xff\xfe dup\r\n-ERR caf\xc3\xa9\r\n-ERR \xef\xbf\xbd\r\n",
    b"*1\r\n$999999999\r\n",
    b"$536870912\r\n",
    b"$536870913\r\n",
    b"*16777216\r\n",
    b"*16777217\r\n",
    b"*2\r\n+" + b"a" * 70000 + b"\r\n",
    b"+" + b"a" * 65536 + b"\r\n+" + b"a" * 65537 + b"\r\n",
]


@pytest.mark.parametrize("wire", TRICKY)
def test_tricky_streams_agree(wire: bytes) -> None:
    for _how, chunks in four_ways(wire):
        compare(chunks)
    compare([wire[i : i + 65536] for i in range(0, len(wire), 65536)])


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
    cuts = sorted(data.draw(st.lists(st.integers(0, len(garbage)), max_size=6)))
    bounds = [0, *cuts, len(garbage)]
    compare(
        [garbage[a:b] for a, b in itertools.pairwise(bounds)],
        Limits(max_line_length=16, max_depth=3),
    )


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
