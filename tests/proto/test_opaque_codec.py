"""Event contents and queue names are opaque to both reply decoders.

A bulk string's bytes are data, whatever they look like: RESP lines of every type byte, huge
counts, CR and LF in any arrangement, a few bytes or several MiB.  The replies that carry them
(``QRPOP`` / ``QLPEEK`` / ``QRPEEK``: ``*2 id contents``; ``QSTATUS``: ``*n`` of ``*4 name
:total :processing :consumers``; ``QINFO``: ``*n`` of text lines) are built with the embedded
server's own encoders, put between other replies of the same stream, cut anywhere and decoded
by the pure `Decoder` and by `HiredisDecoder`: each must give exactly the values sent, and the
two must agree.  Decoding also must not cost stack, or more work than plain bytes of the same
length, or work that grows faster than the input.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from okq_proto import NEED_DATA, Decoder, ErrorReply, Limits, Reply, encode_commands
from okq_proto._dispatch import NIL, OK, encode_bulk, encode_event, render_status
from okq_proto._engine import QueueStatus as ServerQueueStatus
from okq_proto._resp import DEFAULT_LIMITS

from .test_resp import BACKENDS, _CountingBuffer, decode_chunks, encode_reply

DecoderFactory = Callable[[Limits], Any]

# -- what a server sends ----------------------------------------------------------------------

EVENT_ID = b"0f8b2c1e-4a5d-4e6f-9a7b-1c2d3e4f5a6b"


class Stream:
    """Wire bytes of some replies and the values they carry; shown short (they can be MiB).

    Not a dataclass: hypothesis would print a failing example field by field, in full."""

    __slots__ = ("expected", "label", "wire")

    def __init__(self, wire: bytes, expected: list[Reply], label: str = "") -> None:
        self.wire, self.expected, self.label = wire, expected, label

    def __repr__(self) -> str:
        return f"Stream({self.label or 'drawn'}, {len(self.wire)} bytes: {shorten(self.wire)})"


class Blob:
    """Contents to push, shown short (hypothesis prints a failing example's arguments)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"Blob({len(self.data)} bytes: {shorten(self.data)})"


def shorten(data: bytes, keep: int = 60) -> str:
    return repr(data) if len(data) <= 2 * keep else f"{data[:keep]!r}...{data[-keep:]!r}"


def event_reply(event_id: bytes, contents: bytes) -> tuple[bytes, Reply]:
    """The reply to QRPOP, QLPEEK and QRPEEK (okq sends the same shape for all three)."""
    wire = encode_event((event_id, contents))
    assert wire == b"*2\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
        len(event_id),
        event_id,
        len(contents),
        contents,
    )
    return wire, [event_id, contents]


def status_reply(entries: Sequence[tuple[bytes, int, int, int]]) -> tuple[bytes, Reply]:
    """The reply to QSTATUS for these (name, total, processing, consumers) entries."""
    wire = render_status(
        [
            ServerQueueStatus(name=name, total=total, processing=processing, consumers=consumers)
            for name, total, processing, consumers in entries
        ]
    )
    return wire, [list(entry) for entry in entries]


def info_reply(names: Sequence[bytes]) -> tuple[bytes, Reply]:
    """A QINFO-shaped reply: one text line per queue, as bulk strings."""
    texts = [name + b"  total: 1  processing: 0  consumers: 0" for name in names]
    wire = b"*%d\r\n" % len(texts) + b"".join(encode_bulk(text) for text in texts)
    lines: list[Reply] = list(texts)
    assert wire == encode_reply(lines)
    return wire, lines


#: Replies that come before or after the one carrying contents on the same connection.
NEIGHBOURS: list[tuple[bytes, Reply]] = [
    (OK, b"OK"),
    (b":1\r\n", 1),
    (NIL, None),
    (b"*-1\r\n", None),
    (b"*0\r\n", []),
    (b"-ERR no such queue\r\n", ErrorReply(b"ERR no such queue")),
    event_reply(EVENT_ID, b"next"),
    status_reply([(b"q", 3, 1, 0)]),
]


def stream(
    main: tuple[bytes, Reply],
    before: tuple[bytes, Reply] | None = None,
    after: tuple[bytes, Reply] = NEIGHBOURS[0],
    label: str = "",
) -> Stream:
    parts = [*([before] if before is not None else []), main, after]
    return Stream(b"".join(wire for wire, _ in parts), [value for _, value in parts], label)


# -- awkward contents ---------------------------------------------------------------------------

TYPE_BYTES = [bytes([b]) for b in b"+-:$*_,#(!=%~>|"]
COUNTS = [
    *(b"0", b"1", b"2", b"3", b"7", b"12", b"-1", b"-2", b"+1", b"-0", b"007"),
    *(b"1024", b"4096", b"65536", b"99999999", b"999999999", b"2147483647", b"2147483648"),
    *(b"4294967296", b"9223372036854775807", b"9223372036854775808", b"9" * 30),
]
WORDS = [
    *(b"OK", b"ERR", b"ERR caf\xc3\xa9", b"caf\xe9", b"\xff\xfe", b" ", b"\x00", b"t", b"f"),
    *(b"1.5", b"inf", b"txt:", b"row|1|2", b"x>1", b"~1 ", b"a", b"job>"),
]
ENDS = [
    *(b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r", b"\r\n\r\n", b"\r\r"),
    *(b"\n\n", b"\r\n\n", b"\r\r\r\n"),
]


def nonempty_binary(max_size: int) -> st.SearchStrategy[bytes]:
    # b"" is never drawn itself (it hashes like 0 and "", which -bb turns into BytesWarning in
    # hypothesis's cache); it still comes out of the slice.
    return st.binary(min_size=1, max_size=max_size + 1).map(lambda raw: raw[1:])


lines = st.tuples(
    st.one_of(st.sampled_from(WORDS), nonempty_binary(4)),  # before the type byte
    st.sampled_from(TYPE_BYTES),
    st.one_of(st.sampled_from(COUNTS), st.sampled_from(WORDS), nonempty_binary(3)),
    st.sampled_from(ENDS),
    st.booleans(),  # the line starts with its type byte
).map(lambda parts: (b"" if parts[4] else parts[0]) + b"".join(parts[1:4]))

#: One CR LF run: lone CRs, lone LFs, CR CR LF and the like.
crlf_runs = st.lists(st.sampled_from([b"\r", b"\n", b"\r\n"]), min_size=1, max_size=12).map(
    b"".join
)

#: A line pattern (a few lines, or a CR/LF run, or raw bytes) repeated a drawn number of times:
#: from no bytes to several MiB, cheap for hypothesis to draw.
patterns = st.one_of(
    st.lists(lines, min_size=1, max_size=6).map(b"".join),
    crlf_runs,
    nonempty_binary(40).filter(bool),
)
#: Contents sizes: around the decoders' thresholds (4 KiB, 64 KiB), and up to several MiB.
sizes = st.one_of(
    st.integers(0, 300),
    st.sampled_from([4095, 4096, 4097, 16000, 65535, 65536, 65537, 1 << 20, 3 << 20, 6 << 20]),
    st.integers(0, 6 << 20),
)


def _fill(pattern: bytes, size: int, whole: bool) -> bytes:
    """`pattern` repeated to about `size` bytes: whole repeats, or cut to exactly `size`."""
    count = size // len(pattern)
    return pattern * count if whole else (pattern * (count + 1))[:size]


def contents_of(size: st.SearchStrategy[int]) -> st.SearchStrategy[bytes]:
    """A drawn pattern filled to a drawn size, between a few drawn bytes."""
    return st.builds(
        lambda head, pattern, size, whole, tail: head + _fill(pattern, size, whole) + tail,
        nonempty_binary(8),
        patterns,
        size,
        st.booleans(),
        nonempty_binary(8),
    )


#: Thousands of CRLF-terminated lines that start with (or hold) a type byte: the shape that
#: once cost a decoder a stack frame per line.
crlf_lines = st.tuples(
    st.one_of(st.sampled_from(WORDS), nonempty_binary(4)),
    st.sampled_from(TYPE_BYTES),
    st.one_of(st.sampled_from(COUNTS), st.sampled_from(WORDS)),
    st.booleans(),
).map(lambda parts: (b"" if parts[3] else parts[0]) + parts[1] + parts[2] + b"\r\n")
runs = st.builds(
    lambda line, count: line * count,
    st.one_of(crlf_lines, st.lists(crlf_lines, min_size=2, max_size=4).map(b"".join)),
    st.one_of(st.integers(900, 5000), st.integers(900, 20_000)),
)
contents = st.one_of(nonempty_binary(300), contents_of(sizes), runs)
event_ids = st.one_of(st.just(EVENT_ID), lines, nonempty_binary(40))
#: Queue names: awkward lines, and families of them with a number after (``job>17``).
names = st.one_of(
    lines.map(lambda line: [line]),
    st.tuples(st.one_of(lines, st.sampled_from(WORDS)), st.integers(1, 1200)).map(
        lambda family: [family[0] + b"%d" % i for i in range(family[1])]
    ),
)
counters = st.integers(0, 2**31)
neighbours = st.sampled_from(NEIGHBOURS)


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    kind = draw(st.sampled_from(["event", "event", "event", "status", "info"]))
    main: tuple[bytes, Reply]
    if kind == "event":
        main = event_reply(draw(event_ids), draw(contents))
    else:
        queues = list(dict.fromkeys(itertools.chain(*draw(st.lists(names, max_size=3)))))
        if kind == "status":
            total, processing = draw(counters), draw(counters)
            main = status_reply([(name, total, processing, 1) for name in queues])
        else:
            main = info_reply(queues)
    before = draw(st.one_of(st.none(), neighbours))
    return stream(main, before, draw(neighbours), kind)


big_streams = st.builds(
    lambda event_id, data, after: stream(event_reply(event_id, data), after=after, label="big"),
    event_ids,
    contents_of(st.integers(64 * 1024, 6 << 20)),
    neighbours,
)


# -- the regressions: contents that once broke a decoder ------------------------------------------

#: (name, contents): each a few thousand CRLF-terminated lines that start with or contain a
#: RESP type byte; then the same at 16 000 lines, and everyday text that looks like RESP.
REGRESSIONS: list[tuple[str, bytes]] = [
    ("star-1 x1000", b"*1\r\n" * 1000),
    ("row pipes x992", b"row|1|2\r\n" * 992),
    ("push-like x992", b"x>1\r\n" * 992),
    ("set-like x992", b"~1 \r\n" * 992),
    ("latin-1 error x992", b"-caf\xe9\r\n" * 992),
    ("bulk header x992", b"$123456789\r\n" * 992),
    ("star-1 x16000", b"*1\r\n" * 16000),
    ("row pipes x16000", b"row|1|2\r\n" * 16000),
    ("latin-1 error x16000", b"-caf\xe9\r\n" * 16000),
    ("huge counts", b"*2147483648\r\n$2147483648\r\n~99999999\r\n>1\r\n|1\r\n%1\r\n" * 800),
    (
        "csv",
        b"id,name,amount,note\r\n"
        + b"".join(b"%d,-caf\xc3\xa9,+%d.50,*|>~$\r\n" % (i, i) for i in range(3000)),
    ),
    ("csv money", b"$12.00,-3,+4,:5\r\n" * 2000),
    (
        "markdown lists",
        b"# Title\r\n\r\n* item\r\n- item\r\n+ item\r\n1. one\r\n> quote\r\n| a | b |\r\n"
        b"|---|---|\r\n~~~\r\n_em_\r\n#tag\r\n(aside)\r\n!bang\r\n=rule\r\n%p\r\n" * 500,
    ),
    (
        "logs",
        b"".join(
            b"2024-05-01T12:00:%02dZ ERR -1 *%d $%d :0 +ok\n" % (i % 60, i, i) for i in range(4000)
        ),
    ),
    ("crlf logs", b"-ERR failed\r\n+OK\r\n:42\r\n$-1\r\n*-1\r\n" * 2000),
    (
        "a RESP stream",
        encode_commands([[b"QLPUSH", b"q", b"%d" % i, b"*1\r\n$5\r\n"] for i in range(2000)]),
    ),
    ("CR LF only", b"\r\n" * 20000),
    ("lone CR", b"\r" * 20000),
    ("lone LF", b"\n" * 20000),
    ("CR CR LF", b"\r\r\n" * 10000),
    ("LF CR", b"\n\r" * 10000),
    ("empty", b""),
    ("4 MiB of star-1", b"*1\r\n" * (1024 * 1024)),
]
REGRESSION_IDS = [name for name, _ in REGRESSIONS]
#: 1 100 queues named ``job>N`` (``okq status`` once died on them), and other RESP-looking names.
JOB_QUEUES = [b"job>%d" % i for i in range(1100)]
RESP_NAMES = [
    *(b"*1", b"*1\r\n*1\r\n", b"$123456789", b"~1 ", b"row|1|2", b"x>1", b"-caf\xe9", b"+OK"),
    *(b":0", b"_", b",1.5", b"#t", b"(1", b"!3", b"=5", b"%1", b"|1", b">2", b"\r\n", b"\r"),
    *(b"\n", b"*2147483648", b"$-1"),
]


def regression_streams(contents: bytes, label: str) -> list[Stream]:
    return [
        stream(event_reply(EVENT_ID, contents), label=f"{label} event"),
        stream(event_reply(contents, b"x"), before=(OK, b"OK"), label=f"{label} as id"),
        stream(
            status_reply([(contents, 1, 0, 0), (b"after", 2, 1, 0)]),
            after=NEIGHBOURS[6],
            label=f"{label} as queue name",
        ),
    ]


STATUS_STREAMS = [
    stream(status_reply([(name, 1, 0, 0) for name in JOB_QUEUES]), label="job>N status"),
    stream(info_reply(JOB_QUEUES), label="job>N info"),
    stream(status_reply([(name, 1, 0, 0) for name in RESP_NAMES]), label="RESP names status"),
    stream(info_reply(RESP_NAMES * 50), label="RESP names info"),
    stream(
        status_reply([(name + b"%d" % i, i, 0, 0) for i in range(50) for name in RESP_NAMES]),
        label="numbered RESP names status",
    ),
]


# -- decoding -------------------------------------------------------------------------------------

BYTEWISE_MAX = 16 * 1024  # fed byte by byte up to this size (a socket's worst case)
SOCKET_CHUNK = 65536


def chunkings(wire: bytes, cuts: Sequence[int] = ()) -> Iterator[tuple[str, list[bytes]]]:
    """Whole; in socket-sized chunks; at the drawn cut points; byte by byte when small."""
    yield "whole", [wire]
    yield "socket", [wire[i : i + SOCKET_CHUNK] for i in range(0, len(wire), SOCKET_CHUNK)]
    if cuts:
        bounds = [0, *sorted({cut % (len(wire) + 1) for cut in cuts}), len(wire)]
        yield "cuts", [wire[a:b] for a, b in itertools.pairwise(bounds)]
    if len(wire) <= BYTEWISE_MAX:
        yield "bytewise", [wire[i : i + 1] for i in range(len(wire))]
    else:  # around the start of the contents and the end of the stream
        yield (
            "bytewise ends",
            [
                *(wire[i : i + 1] for i in range(256)),
                wire[256:-256],
                *(wire[i : i + 1] for i in range(len(wire) - 256, len(wire))),
            ],
        )


def assert_same(got: list[Reply], expected: list[Reply], how: str) -> None:
    """`got == expected`, with a short message (the values can be MiB)."""
    if got == expected:
        return
    if len(got) != len(expected):
        pytest.fail(f"{how}: {len(got)} replies, expected {len(expected)}")
    for i, (mine, want) in enumerate(zip(got, expected, strict=True)):
        if mine != want:
            pytest.fail(f"{how}: reply {i} differs: {_brief(mine)} != {_brief(want)}")


def _brief(value: Reply) -> str:
    if isinstance(value, bytes):
        return f"{len(value)} bytes {shorten(value, 30)}"
    if isinstance(value, list):
        return (
            f"[{', '.join(_brief(item) for item in value[:4])}{', ...' if len(value) > 4 else ''}]"
        )
    return repr(value)


@contextlib.contextmanager
def stack_headroom(frames: int) -> Iterator[None]:
    """Allow only `frames` more Python frames than the caller has: a transport calls the
    decoder deep in its own stack, so decoding must not need stack for what contents hold."""
    depth = 0
    frame = sys._getframe()
    while frame is not None:
        depth += 1
        frame = frame.f_back  # type: ignore[assignment]
    saved = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + frames)
    try:
        yield
    finally:
        sys.setrecursionlimit(saved)


#: Frames decoding may use beyond its caller's: a few, whatever the contents hold.
HEADROOM = 60


def decode(chunks: list[bytes], factory: DecoderFactory) -> list[Reply]:
    """`decode_chunks` with only `HEADROOM` frames of stack to spare."""
    with stack_headroom(HEADROOM):
        return decode_chunks(chunks, factory)


def check(factory: DecoderFactory, case: Stream, cuts: Sequence[int] = ()) -> None:
    for how, chunks in chunkings(case.wire, cuts):
        assert_same(decode(chunks, factory), case.expected, f"{case!r} {how}")


def outcome(factory: DecoderFactory, chunks: list[bytes]) -> tuple[list[Reply], str]:
    """Replies until the first exception, and that exception's class name ("" if none)."""
    decoder = factory(DEFAULT_LIMITS)
    out: list[Reply] = []
    try:
        with stack_headroom(HEADROOM):
            for chunk in chunks:
                decoder.feed(chunk)
                while (reply := decoder.next_reply()) is not NEED_DATA:
                    out.append(reply)
    except Exception as exc:  # any exception: RecursionError is what this file is about
        return out, type(exc).__name__
    return out, ""


# -- properties -----------------------------------------------------------------------------------

PROPERTY = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
cut_lists = st.lists(st.integers(0, 2**40), max_size=8)
#: For examples of MiB (or sent over a network): a failure is reported as found, since shrinking
#: one takes minutes; the small examples of the other tests shrink.
NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)


def _examples(test: Callable[..., None]) -> Callable[..., None]:
    """The regressions at their original size, as explicit examples."""
    for name, data in REGRESSIONS[:6]:
        test = example(case=regression_streams(data, name)[0], cuts=[4, 40, 4000])(test)
    test = example(case=regression_streams(b"*1\r\n" * 16000, "star-1 x16000")[0], cuts=[])(test)
    test = example(case=STATUS_STREAMS[0], cuts=[7])(test)
    return test


@pytest.mark.parametrize("factory", BACKENDS)
@PROPERTY
@_examples
@given(case=streams(), cuts=cut_lists)
def test_contents_decode_exactly(factory: DecoderFactory, case: Stream, cuts: list[int]) -> None:
    check(factory, case, cuts)


@pytest.mark.parametrize("factory", BACKENDS)
@settings(PROPERTY, max_examples=15, phases=NO_SHRINK)
@given(case=big_streams, cuts=cut_lists)
def test_big_contents_decode_exactly(
    factory: DecoderFactory, case: Stream, cuts: list[int]
) -> None:
    check(factory, case, cuts)


#: The hiredis backend alone (skipped where hiredis is missing, as in test_resp).
HIREDIS = [backend for backend in BACKENDS if getattr(backend, "id", None) == "hiredis"]


@pytest.mark.parametrize("fast", HIREDIS)
@PROPERTY
@_examples
@given(case=streams(), cuts=cut_lists)
def test_decoders_agree(fast: DecoderFactory, case: Stream, cuts: list[int]) -> None:
    for how, chunks in chunkings(case.wire, cuts):
        pure, hiredis = outcome(Decoder, chunks), outcome(fast, chunks)
        assert hiredis[1] == pure[1] == "", f"{case!r} {how}: raised {pure[1]!r} / {hiredis[1]!r}"
        assert_same(hiredis[0], pure[0], f"{case!r} {how}: hiredis vs pure")
        assert_same(pure[0], case.expected, f"{case!r} {how}")


# -- regressions at full size ---------------------------------------------------------------------


@pytest.mark.parametrize("factory", BACKENDS)
@pytest.mark.parametrize(("name", "data"), REGRESSIONS, ids=REGRESSION_IDS)
def test_regression_contents(factory: DecoderFactory, name: str, data: bytes) -> None:
    for case in regression_streams(data, name):
        check(factory, case)


@pytest.mark.parametrize("factory", BACKENDS)
@pytest.mark.parametrize("case", STATUS_STREAMS, ids=[case.label for case in STATUS_STREAMS])
def test_resp_looking_queue_names(factory: DecoderFactory, case: Stream) -> None:
    check(factory, case)


# -- cost: linear, and the same as plain bytes -------------------------------------------------

#: One line of each regression, repeated n and 4n times.
LINES = [b"*1\r\n", b"row|1|2\r\n", b"x>1\r\n", b"~1 \r\n", b"-caf\xe9\r\n", b"$123456789\r\n"]


def decode_work(factory: DecoderFactory, contents: bytes) -> int:
    """Calls made (Python functions and C functions, counted by `sys.setprofile`) to decode
    `contents` in an event reply fed in socket-sized chunks: a count of work, not a time."""
    case = stream(event_reply(EVENT_ID, contents))
    chunks = [case.wire[i : i + SOCKET_CHUNK] for i in range(0, len(case.wire), SOCKET_CHUNK)]
    decoder = factory(DEFAULT_LIMITS)
    calls = [0]

    def count(frame: object, event: str, arg: object) -> None:
        if event in ("call", "c_call"):
            calls[0] += 1

    out: list[Reply] = []
    with stack_headroom(HEADROOM):
        sys.setprofile(count)
        try:
            for chunk in chunks:
                decoder.feed(chunk)
                while (reply := decoder.next_reply()) is not NEED_DATA:
                    out.append(reply)
        finally:
            sys.setprofile(None)
    assert_same(out, case.expected, f"{len(contents)} bytes")
    return calls[0]


@pytest.mark.parametrize("factory", BACKENDS)
@pytest.mark.parametrize("line", LINES)
def test_work_is_linear_and_does_not_depend_on_what_contents_hold(
    factory: DecoderFactory, line: bytes
) -> None:
    n = 4000
    small, large = decode_work(factory, line * n), decode_work(factory, line * 4 * n)
    assert large <= 4.4 * small + 200, f"{n} lines: {small} calls, {4 * n} lines: {large}"
    # RESP-looking lines cost what plain bytes of the same length cost (16k lines: ~200 KiB).
    plain = decode_work(factory, b"x" * len(line * 4 * n))
    assert large <= 2 * plain + 200, f"{4 * n} lines: {large} calls, plain bytes: {plain}"


def _bytes_copied(count: int) -> int:
    """Bytes the pure decoder copies out of its buffer to parse `count` RESP-looking lines of
    contents fed in 1 KiB chunks (the counter of test_resp's linearity test)."""
    case = stream(event_reply(EVENT_ID, b"*1\r\n$5\r\nhello\r\n" * count))
    decoder = Decoder()
    decoder._buf = _CountingBuffer()
    _CountingBuffer.copied = 0
    out: list[Reply] = []
    for i in range(0, len(case.wire), 1024):
        decoder.feed(case.wire[i : i + 1024])
        while (reply := decoder.next_reply()) is not NEED_DATA:
            out.append(reply)
    assert_same(out, case.expected, f"{count} lines")
    return _CountingBuffer.copied


def test_pure_decoder_copies_contents_linearly() -> None:
    small, large = _bytes_copied(1000), _bytes_copied(4000)
    assert small > 0
    assert large <= 4.1 * small


@pytest.mark.parametrize("factory", BACKENDS)
@pytest.mark.parametrize("line", [LINES[0], LINES[1], LINES[5]])
def test_memory_is_bounded_by_the_input(factory: DecoderFactory, line: bytes) -> None:
    contents = line * (256 * 1024 // len(line))
    wire = stream(event_reply(EVENT_ID, contents)).wire
    chunks = [wire[i : i + SOCKET_CHUNK] for i in range(0, len(wire), SOCKET_CHUNK)]
    tracemalloc.start()
    try:
        replies = decode(chunks, factory)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert replies[0] == [EVENT_ID, contents]
    assert peak < 4 * len(wire) + 256 * 1024, f"peak {peak} bytes for {len(wire)} bytes"
