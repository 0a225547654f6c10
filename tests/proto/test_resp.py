"""RESP2 encoder and pure-Python decoder (okq_proto._resp), plus the hostile-header checks that
every decoder backend must pass (pure and, when installed, hiredis-backed).

Every wire vector is fed four ways (whole, byte by byte, at random split points, with trailing
bytes) and must give the same replies.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import tracemalloc
from collections.abc import Callable, Iterable, Iterator

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
    encode_command,
    encode_command_parts,
    encode_commands,
)
from okq_proto._resp import DEFAULT_LIMITS

try:
    from okq_proto._hiredis import HiredisDecoder
except ImportError:  # pragma: no cover - CI installs hiredis
    if os.environ.get("CI"):
        raise
    HiredisDecoder = None  # type: ignore[assignment,misc]

DecoderFactory = Callable[[Limits], "Decoder | HiredisDecoder"]


def _backends() -> list[object]:
    backends: list[object] = [pytest.param(Decoder, id="python")]
    if HiredisDecoder is not None:
        backends.append(pytest.param(HiredisDecoder, id="hiredis"))
    else:  # pragma: no cover
        backends.append(pytest.param(None, id="hiredis", marks=pytest.mark.skip("no hiredis")))
    return backends


BACKENDS = _backends()


# -- helpers ------------------------------------------------------------------------------------


def drain(decoder: Decoder | HiredisDecoder) -> list[Reply]:
    """Every complete reply the decoder has."""
    replies = []
    while (reply := decoder.next_reply()) is not NEED_DATA:
        replies.append(reply)
    return replies


def decode_chunks(
    chunks: Iterable[bytes], factory: DecoderFactory = Decoder, limits: Limits = DEFAULT_LIMITS
) -> list[Reply]:
    decoder = factory(limits)
    replies: list[Reply] = []
    for chunk in chunks:
        decoder.feed(chunk)
        replies += drain(decoder)
    return replies


def four_ways(data: bytes, seed: int = 0) -> Iterator[tuple[str, list[bytes]]]:
    """Whole, byte by byte, at random split points (the trailing-bytes way is separate)."""
    yield "whole", [data]
    yield "bytewise", [data[i : i + 1] for i in range(len(data))]
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, 5))) if len(data) > 1 else []
    bounds = [0, *cuts, len(data)]
    yield "random", [data[a:b] for a, b in itertools.pairwise(bounds)]


def encode_reply(reply: Reply, simple: bool = False) -> bytes:
    """Canonical RESP2 for a reply (bytes as bulk strings, or simple strings when asked)."""
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, ErrorReply):
        return b"-" + reply.message + b"\r\n"
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, bytes):
        if simple and b"\r" not in reply and b"\n" not in reply:
            return b"+" + reply + b"\r\n"
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    return b"*%d\r\n" % len(reply) + b"".join(encode_reply(item, simple) for item in reply)


# -- vectors ------------------------------------------------------------------------------------

VECTORS: list[tuple[bytes, list[Reply]]] = [
    (b"+OK\r\n", [b"OK"]),
    (b"+\r\n", [b""]),
    (b"-ERR unknown command\r\n", [ErrorReply(b"ERR unknown command")]),
    (b"-ERR \xff\xfe not utf-8\r\n", [ErrorReply(b"ERR \xff\xfe not utf-8")]),
    (b":0\r\n:42\r\n:-7\r\n", [0, 42, -7]),
    (b":9223372036854775807\r\n:-9223372036854775808\r\n", [2**63 - 1, -(2**63)]),
    (b"$5\r\nhello\r\n", [b"hello"]),
    (b"$0\r\n\r\n", [b""]),
    (b"$-1\r\n", [None]),
    (b"*-1\r\n", [None]),
    (b"*0\r\n", [[]]),
    (b"$6\r\na\x00\r\n\xff\n\r\n", [b"a\x00\r\n\xff\n"]),
    (b"$4\r\n\r\n\r\n\r\n", [b"\r\n\r\n"]),
    (b"*2\r\n$36\r\n" + b"e" * 36 + b"\r\n$3\r\nabc\r\n", [[b"e" * 36, b"abc"]]),
    (
        b"*2\r\n*4\r\n$1\r\nq\r\n:3\r\n:1\r\n:0\r\n*4\r\n$2\r\nq2\r\n:0\r\n:0\r\n:1\r\n",
        [[[b"q", 3, 1, 0], [b"q2", 0, 0, 1]]],
    ),
    (b"*3\r\n$-1\r\n*-1\r\n-ERR x\r\n", [[None, None, ErrorReply(b"ERR x")]]),
    (b"*1\r\n*1\r\n*1\r\n*0\r\n", [[[[[]]]]]),
    (b"+OK\r\n-ERR e\r\n:1\r\n", [b"OK", ErrorReply(b"ERR e"), 1]),
]


@pytest.mark.parametrize("factory", BACKENDS)
@pytest.mark.parametrize(("wire", "expected"), VECTORS)
def test_vectors_four_ways(factory: DecoderFactory, wire: bytes, expected: list[Reply]) -> None:
    for how, chunks in four_ways(wire):
        assert decode_chunks(chunks, factory) == expected, how
    # With trailing bytes: the replies come out, the tail is kept as a partial reply.
    decoder = factory(Limits())
    decoder.feed(wire + b"*2\r\n$3\r\nab")
    assert drain(decoder) == expected
    assert decoder.has_partial()
    decoder.feed(b"c\r\n:1\r\n")
    assert drain(decoder) == [[b"abc", 1]]


def test_values_are_bytes_not_views() -> None:
    replies = decode_chunks([b"*2\r\n+a\r\n$70000\r\n" + b"x" * 70000 + b"\r\n"])
    assert replies == [[b"a", b"x" * 70000]]
    assert all(type(item) is bytes for item in replies[0])  # type: ignore[union-attr]


def test_need_data_and_partial() -> None:
    decoder = Decoder()
    assert decoder.next_reply() is NEED_DATA
    assert not decoder.has_partial()
    decoder.feed(b"$3\r\nab")
    assert decoder.next_reply() is NEED_DATA
    assert decoder.has_partial()
    decoder.feed(memoryview(b"c\r\n"))
    assert decoder.next_reply() == b"abc"
    assert not decoder.has_partial()
    assert decoder.limits == Limits()


# -- protocol errors ----------------------------------------------------------------------------

BAD = [
    b"?\r\n",
    b"\r\n",
    b"_\r\n",  # RESP3 nil
    b",1.5\r\n",
    b"#t\r\n",
    b"%1\r\n+a\r\n+b\r\n",
    b":\r\n",
    b":1x\r\n",
    b":+1\r\n",
    b":007\r\n",  # leading zeros: hiredis refuses them, so do we
    b":-0\r\n",
    b":9223372036854775808\r\n",
    b"$x\r\n",
    b"$-2\r\n",
    b"$01\r\nx\r\n",
    b"*-2\r\n",
    b"* 1\r\n",
    b"$3\r\nabcXY",  # payload not followed by CR LF
    b"+a\rb\r\n",  # CR inside a simple string
    b"-a\nb\r\n",
]


@pytest.mark.parametrize("wire", BAD)
def test_protocol_errors_are_sticky(wire: bytes) -> None:
    decoder = Decoder()
    decoder.feed(b"+before\r\n" + wire)
    assert decoder.next_reply() == b"before"
    with pytest.raises(RemoteProtocolError) as first:
        decoder.next_reply()
    with pytest.raises(RemoteProtocolError) as again:
        decoder.next_reply()
    assert again.value is first.value
    with pytest.raises(RemoteProtocolError):
        decoder.feed(b"+OK\r\n")


# -- limits and hostile headers (both backends) -------------------------------------------------


@pytest.mark.parametrize("factory", BACKENDS)
@pytest.mark.parametrize(
    ("limits", "ok", "bad"),
    [
        (Limits(max_bulk_length=5), b"$5\r\nabcde\r\n", b"$6\r\nabcdef\r\n"),
        (Limits(max_array_length=2), b"*2\r\n:1\r\n:2\r\n", b"*3\r\n:1\r\n:2\r\n:3\r\n"),
        (Limits(max_depth=2), b"*1\r\n*1\r\n:1\r\n", b"*1\r\n*1\r\n*1\r\n:1\r\n"),
        (Limits(max_line_length=4), b"+abcd\r\n", b"+abcde\r\n"),
        (Limits(max_line_length=4), b"-abcd\r\n", b"-abcde\r\n"),
        (Limits(max_line_length=4), b"$8\r\n12345678\r\n", b":12345\r\n"),
    ],
)
def test_limits(factory: DecoderFactory, limits: Limits, ok: bytes, bad: bytes) -> None:
    for _how, chunks in four_ways(ok):
        assert len(decode_chunks(chunks, factory, limits)) == 1
    for how, chunks in four_ways(bad):
        with pytest.raises(RemoteProtocolError):  # noqa: PT012 - fails on some chunk
            decode_chunks(chunks, factory, limits)
            pytest.fail(how)


def test_limits_must_be_positive() -> None:
    with pytest.raises(LocalProtocolError):
        Limits(max_depth=0)


def _endless_line() -> Iterator[bytes]:
    yield b"+"
    while True:
        yield b"a" * 65536


HOSTILE: list[tuple[str, Callable[[], Iterable[bytes]]]] = [
    ("bulk $2147483647", lambda: [b"$2147483647\r\n", b"x" * 65536]),
    ("array *2147483648", lambda: [b"*2147483648\r\n"]),
    ("array *2147483647 after a payload", lambda: [b"$1\r\n*\r\n*2147483647\r\n"]),
    ("array after a bad payload end", lambda: [b"$1\r\naXY*2147483648\r\n"]),
    ("RESP3 set ~2147483648", lambda: [b"~2147483648\r\n"]),
    ("RESP3 push >2147483648 bytewise", lambda: _chunked(b"+a\r\n>2147483648\r\n", 1)),
    (
        "bulk $2147483647 after a big bulk",
        lambda: [b"$5000\r\n", b"x" * 5000, b"\r\n$2147483647\r\n"],
    ),
    ("nesting 100 000", lambda: [b"*1\r\n" * 100_000]),
    ("nesting 100 000 in 64 KiB chunks", lambda: _chunked(b"*1\r\n" * 100_000, 65536)),
    ("nesting 100 000 bytewise", lambda: _chunked(b"*1\r\n" * 2_000, 1)),
    ("endless line", _endless_line),
]


def _chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("factory", BACKENDS)
@pytest.mark.parametrize(("name", "make"), HOSTILE, ids=[name for name, _ in HOSTILE])
def test_hostile_headers_refused_cheaply(
    factory: DecoderFactory, name: str, make: Callable[[], Iterable[bytes]]
) -> None:
    chunks = iter(make())
    decoder = factory(Limits())
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError):  # noqa: PT012 - feeding until refused
            for _, chunk in zip(range(100), chunks, strict=False):
                decoder.feed(chunk)
                drain(decoder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, f"{name}: peak {peak} bytes"


class _CountingBuffer(bytearray):
    """The decoder's buffer, counting every byte it is asked to copy out (bytes(buf))."""

    copied = 0

    def __bytes__(self) -> bytes:
        _CountingBuffer.copied += len(self)
        return bytes(memoryview(self))


def _bytes_scanned_bytewise(count: int) -> int:
    data = b"*%d\r\n" % count + b"$5\r\nhello\r\n" * count
    decoder = Decoder()
    decoder._buf = _CountingBuffer()  # the one place parsed input is copied from
    _CountingBuffer.copied = 0
    for i in range(len(data)):
        decoder.feed(data[i : i + 1])
        decoder.next_reply()
    assert decoder.next_reply() is NEED_DATA
    return _CountingBuffer.copied


def test_large_array_in_one_byte_chunks_is_linear() -> None:
    # Resumed, not re-parsed: the work done (bytes copied out of the buffer to be parsed) for
    # 4x the elements is 4x; re-parsing from the start would make it 16x.  Counted, not timed.
    small, large = _bytes_scanned_bytewise(2_500), _bytes_scanned_bytewise(10_000)
    assert small > 0
    assert large <= 4.1 * small


# -- encoder ------------------------------------------------------------------------------------


def test_encode_command_args() -> None:
    assert encode_command([b"QLPUSH", "q", 7]) == b"*3\r\n$6\r\nQLPUSH\r\n$1\r\nq\r\n$1\r\n7\r\n"
    assert encode_command(["é"]) == b"*1\r\n$2\r\n\xc3\xa9\r\n"
    assert encode_command(["\udcff"]) == b"*1\r\n$1\r\n\xff\r\n"  # surrogateescape
    assert encode_command([b"", bytearray(b"\x00\r\n"), memoryview(b"ab")]) == (
        b"*3\r\n$0\r\n\r\n$3\r\n\x00\r\n\r\n$2\r\nab\r\n"
    )
    assert encode_command([-1]) == b"*1\r\n$2\r\n-1\r\n"


@pytest.mark.parametrize("bad", [[], [True], [1.5], [None]])
def test_encode_command_refuses(bad: list[object]) -> None:
    with pytest.raises(LocalProtocolError):
        encode_command(bad)  # type: ignore[arg-type]


def test_big_args_are_not_copied_into_the_head() -> None:
    payload = b"x" * 1024
    parts = encode_command_parts([b"QLPUSH", b"q", b"id", payload])
    assert any(part is payload for part in parts)
    assert sum(len(part) for part in parts) < 2 * len(payload)
    assert b"".join(parts) == encode_command([b"QLPUSH", b"q", b"id", bytes(payload)])
    small = encode_command_parts([b"QLPUSH", b"q", b"id", b"x" * 1023])
    assert len(small) == 1


def test_encode_commands_pipelines() -> None:
    assert encode_commands([[b"PING"], [b"QSTATUS"]]) == (
        b"*1\r\n$4\r\nPING\r\n*1\r\n$7\r\nQSTATUS\r\n"
    )


# -- properties ---------------------------------------------------------------------------------

messages = st.binary(max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b)
leaves = st.one_of(
    st.binary(max_size=40),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.none(),
    messages.map(ErrorReply),
)
replies = st.recursive(leaves, lambda children: st.lists(children, max_size=4), max_leaves=20)
# str arguments are made from drawn bytes (any str, lone surrogates included), so hypothesis
# never holds str and bytes choices side by side: comparing them while it shrinks or replays
# examples raises BytesWarning under ``python -bb``.
args = st.one_of(
    st.tuples(st.just("bytes"), st.binary(max_size=30)),
    st.tuples(
        st.just("str"),
        st.binary(max_size=10).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
    ),
    st.tuples(st.just("int"), st.integers(min_value=-(10**12), max_value=10**12)),
)


def _arg_bytes(arg: bytes | str | int) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode("utf-8", "surrogateescape")
    return b"%d" % arg


@given(tagged=st.lists(args, min_size=1, max_size=6))
def test_encoded_commands_decode_back(tagged: list[tuple[str, bytes | str | int]]) -> None:
    argv = [arg for _, arg in tagged]
    assert decode_chunks([encode_command(argv)]) == [[_arg_bytes(arg) for arg in argv]]


@given(items=st.lists(replies, min_size=1, max_size=5), simple=st.booleans(), data=st.data())
def test_round_trip_and_chunking_invariance(
    items: list[Reply], simple: bool, data: st.DataObject
) -> None:
    wire = b"".join(encode_reply(item, simple) for item in items)
    assert decode_chunks([wire]) == items
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    bounds = [0, *cuts, len(wire)]
    assert decode_chunks([wire[a:b] for a, b in itertools.pairwise(bounds)]) == items


RESPISH = st.lists(
    st.sampled_from(
        [
            b"*",
            b"$",
            b"+",
            b"-",
            b":",
            b"\r\n",
            b"\r",
            b"\n",
            b"0",
            b"1",
            b"2",
            b"-1",
            b"9" * 12,
            b"a",
            b"\xff",
            b"_",
        ]
    ),
    max_size=40,
).map(b"".join)


@pytest.mark.parametrize("factory", BACKENDS)
@settings(max_examples=300)
@given(garbage=st.one_of(st.binary(max_size=200), RESPISH))
def test_garbage_gives_values_or_protocol_error(factory: DecoderFactory, garbage: bytes) -> None:
    for _how, chunks in four_ways(garbage):
        with contextlib.suppress(RemoteProtocolError):
            decode_chunks(chunks, factory, Limits(max_line_length=16, max_bulk_length=64))


@pytest.mark.parametrize("factory", BACKENDS)
@pytest.mark.parametrize("kind", [b":", b"$", b"*", b":-", b"$-"])
@pytest.mark.parametrize("digits", [20, 4301, 65530])
def test_overlong_numbers_are_protocol_errors(
    factory: DecoderFactory, kind: bytes, digits: int
) -> None:
    """A number far past 64 bits is refused as RESP, not left to int()'s digit limit."""
    wire = b"+x\r\n" + kind + b"9" * digits + b"\r\n"
    for chunks in ([wire], [wire[:9], wire[9:]]):
        decoder = factory(DEFAULT_LIMITS)
        for chunk in chunks:
            decoder.feed(chunk)
        assert decoder.next_reply() == b"x"
        with pytest.raises(RemoteProtocolError):
            decoder.next_reply()


def _outcome_per_prefix(factory: DecoderFactory, wire: bytes, limits: Limits) -> list[object]:
    """For every prefix length k: what the decoder has given out after the first k bytes fed
    one at a time (a `next_reply` drain after each byte), or the protocol error's type."""
    decoder = factory(limits)
    got: list[object] = []
    outcomes: list[object] = []
    failed = False
    for i in range(len(wire)):
        if not failed:
            try:
                decoder.feed(wire[i : i + 1])
                got += drain(decoder)
            except RemoteProtocolError:
                failed = True
        outcomes.append(RemoteProtocolError if failed else list(got))
    return outcomes


def _outcome_of_prefixes(factory: DecoderFactory, wire: bytes, limits: Limits) -> list[object]:
    """The same, each prefix fed whole to a fresh decoder."""
    outcomes: list[object] = []
    for k in range(1, len(wire) + 1):
        try:
            outcomes.append(decode_chunks([wire[:k]], factory, limits))
        except RemoteProtocolError:
            outcomes.append(RemoteProtocolError)
    return outcomes


@pytest.mark.parametrize("factory", BACKENDS)
@pytest.mark.parametrize(
    "wire",
    [
        b"+" + b"a" * 40 + b"\r\n+OK\r\n",  # a line past max_line_length
        b"*2\r\n$3\r\nabcXY:1\r\n",  # a payload's end that is not CR LF
        b"*3\r\n$5\r\nhello\r\n$0\r\n\r\n$-1\r\n:7\r\n",
        b"$2\r\n\n\n\r\n$1\r\n\r\r\n*1\r\n$1\r\n\n\r\n",  # payloads made of CR and LF
        b"$99\r\n" + b"x" * 99 + b"\r\n",  # a bulk past max_bulk_length
        b"?what\r\n",  # an unknown type byte, refused once its line ends
        b"$007\r\nabcdefg\r\n",  # a length spelled with leading zeros
        b"*1\r\n" * 9 + b":1\r\n",  # nested past max_depth
    ],
)
def test_bytewise_feeding_fails_and_succeeds_where_prefixes_do(
    factory: DecoderFactory, wire: bytes
) -> None:
    """Bytes fed one at a time take shortcuts (a byte that cannot complete anything is only
    appended); each prefix must still give exactly what it gives fed whole, errors included, at
    the same byte."""
    limits = Limits(max_line_length=16, max_bulk_length=64, max_depth=7)
    assert _outcome_per_prefix(factory, wire, limits) == _outcome_of_prefixes(factory, wire, limits)


def _bytes_until_refused(decoder: Decoder | HiredisDecoder, first: bytes, rest: bytes) -> int:
    """Feed `first`, then `rest` again and again, a byte per call with a `next_reply` after
    each (at most 1000 bytes): how many bytes went in when the decoder refused them."""
    for fed in range(1, 1001):
        try:
            decoder.feed(first if fed == 1 else rest)
            decoder.next_reply()
        except RemoteProtocolError:
            return fed
    return -1


@pytest.mark.parametrize("factory", BACKENDS)
def test_an_endless_line_fed_bytewise_is_cut_off_at_the_limit(factory: DecoderFactory) -> None:
    decoder = factory(Limits(max_line_length=100))
    # The type byte, the limit, and the two bytes a CR LF takes: the next line byte is refused.
    assert _bytes_until_refused(decoder, b"+", b"a") == 1 + 100 + 2
    with pytest.raises(RemoteProtocolError):
        decoder.feed(b"a")  # and the failure sticks, fed bytewise too
