"""A repeatable differential run of the two RESP2 reply decoders.

    python -m conformance.fuzz.differential [--streams N] [--seed S] [--jobs J]
        [--json FILE] [--save DIR] [--budget SECONDS] [--time-limit SECONDS]
    python -m conformance.fuzz.differential --replay FILE

Generates N reply streams (default 1,000,000), each from its own seed ``(S, index)`` so that a
run is the same whatever ``--jobs`` is:

* **valid**: well-formed replies back to back (simple strings, errors with non-UTF-8 bytes,
  integers at their edges, bulk strings null, empty, full of RESP-looking lines or CR/LF runs,
  of sizes around 4096 and 65536 bytes, arrays null, empty and nested up to the depth limit and
  one level beyond);
* **truncated**: a valid stream cut short;
* **mutated**: a valid stream with byte flips, inserts, deletes and duplicated spans;
* **hostile**: headers that ask for memory (``*2147483648``, ``*16777216\\r\\n:1\\r\\n`` repeated,
  ``$99999999``, a header right after a bulk payload whose CR LF is two other bytes), deep
  ``*1`` runs, nesting through later elements, endless lines, RESP3 types, strict-integer
  violations, hazards inside payloads.

Each stream is decoded by every backend (the pure `okq_proto.Decoder` first: it is the
reference) three ways: whole, cut at random points, and one byte per feed (streams of at most
`BYTEWISE_MAX` bytes).  An outcome is the sequence of replies, then how the stream ended: NEED_DATA
(with ``has_partial()``), a protocol error (checked to be sticky), a crash (any other
exception) or a hang (over the per-run wall budget).  Reported:

* **crash**: an exception other than `RemoteProtocolError`, or a worker process that died;
* **hang**: a run over ``--budget`` seconds of wall time twice in a row (SIGALRM), or a worker
  stuck in C code (killed by the watchdog);
* **memory**: the tracemalloc peak of every run of a hostile stream (hiredis builds its lists
  with the Python allocator, so tracemalloc sees them) must stay under `MEMORY_TARGET`; the
  maximum per backend is reported, with each process's maxrss growth;
* **backends**: a backend's outcome differs from the reference's on the same chunking;
* **chunkings**: a backend's outcome differs between two chunkings of the same stream.

Disagreements are classified by `DOCUMENTED`, the table of documented differences (below):
the first entry whose predicate holds names the class, anything else is *undocumented*.  A
disagreement between two chunkings of a backend is documented when each of the two outcomes is
the reference's or a documented deviation from it; the reference's own chunkings must agree.
Counts are per stream.  Crashes, hangs, memory overruns and undocumented disagreements are saved as
reproducers (``--save DIR``, JSON with the stream as base64 and repr, the chunking, the seed);
``--replay FILE`` runs one again.

When a documented difference changes (``docs/codec.md``, "What differs between the
backends"), edit `DOCUMENTED` only.  Each `Difference` has a name (the class printed), where it
is documented, a predicate over a `Deviation` (the stream, its limits and chunk bounds, the
reference's outcome and the backend's; helpers `Deviation.refused`,
`Deviation.agrees_before_refusal`, `Deviation.chunk_holding`, `Deviation.framing`), and an
example: a stream and the backend's outcome on it in one chunk, which
``tests/proto/test_differential.py`` checks the entry recognises.  Delete an entry when the
difference is gone.

Exit status: 0 when the run completed with no crash, no hang, no undocumented disagreement and
every hostile stream under the memory target; 1 otherwise; 2 on usage errors.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import contextlib
import dataclasses
import functools
import gc
import importlib
import itertools
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import re
import signal
import sys
import time
import traceback
import tracemalloc
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO, cast

from okq_proto import NEED_DATA, ErrorReply, Limits, RemoteProtocolError, ReplyDecoder

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_BACKENDS",
    "DOCUMENTED",
    "Checker",
    "Deviation",
    "Difference",
    "Outcome",
    "Stream",
    "Tally",
    "classify",
    "generate",
    "main",
    "run_decoder",
]

#: Streams of at most this many bytes are also fed one byte at a time.
BYTEWISE_MAX: Final = 300
#: A hostile stream must not make a backend's tracemalloc peak reach this.
MEMORY_TARGET: Final = 1024 * 1024
#: No generated stream is longer than this.
MAX_STREAM: Final = 200_000
#: The longest runs kept per backend, for the report.
SLOWEST: Final = 5

NEED: Final = "need_data"
ERROR: Final = "error"
NOT_STICKY: Final = "not_sticky"
CRASH: Final = "crash"
HANG: Final = "hang"

CHUNKINGS: Final = ("whole", "cuts", "bytes")
KINDS: Final = ("valid", "truncated", "mutated", "hostile")
UNDOCUMENTED: Final = "undocumented"

#: ``name=module:class`` of each backend; the first is the reference.
DEFAULT_BACKENDS: Final = (
    "python=okq_proto:Decoder",
    "hiredis=okq_proto.hiredis:HiredisDecoder",
)

#: Limits a stream is decoded under (chosen per stream).  ``tight`` reaches every limit with
#: short streams; bulk strings still cross 4096 bytes under it.
PROFILES: Final[Mapping[str, Limits]] = {
    "default": Limits(),
    "tight": Limits(max_bulk_length=10_000, max_array_length=64, max_depth=4, max_line_length=64),
}

DecoderFactory = Callable[[Limits], ReplyDecoder]


# =============================================================================================
# Outcomes


@dataclass(frozen=True)
class Outcome:
    """What one backend made of one chunking of a stream.

    Attributes:
        end: `NEED`, `ERROR`, `NOT_STICKY` (a protocol error that a later call did not raise
            again), `CRASH` or `HANG`.
        prints: a canonical, type-exact encoding of each reply (see `fingerprint`): two outcomes
            agree when their ends, prints and partial flags are equal.
        partial: ``has_partial()`` after the last NEED_DATA (False for the other ends).
        detail: the protocol error's message, or the crash's type, message and place.
        replies: the replies themselves (for display only).
        seconds: the run's wall time (not compared).
    """

    end: str
    prints: tuple[bytes, ...] = ()
    partial: bool = False
    detail: str = ""
    replies: tuple[object, ...] = field(default=(), compare=False, repr=False)
    seconds: float = field(default=0.0, compare=False)

    @classmethod
    def of(
        cls, end: str, replies: Sequence[object] = (), partial: bool = False, detail: str = ""
    ) -> Outcome:
        return cls(end, tuple(map(fingerprint, replies)), partial, detail, tuple(replies))

    def same(self, other: Outcome) -> bool:
        return (self.end, self.partial, self.prints) == (other.end, other.partial, other.prints)

    def describe(self, width: int = 240) -> str:
        """One line for people: the replies, then how the stream ended."""
        shown = short_repr(list(self.replies), width)
        count = len(self.replies) if self.end in (CRASH, HANG) else len(self.prints)
        if self.end == NEED:
            tail = f"NEED_DATA, has_partial() {self.partial}"
        elif self.end == ERROR:
            tail = f"protocol error {clip(self.detail, 90)!r}"
        elif self.end == NOT_STICKY:
            tail = f"protocol error, not sticky: {clip(self.detail, 90)}"
        elif self.end == CRASH:
            tail = f"CRASH {clip(self.detail, 160)}"
        else:
            tail = f"HANG {self.detail}"
        return f"{count} replies {shown} then {tail}"


def fingerprint(value: object) -> bytes:
    """A canonical, type-exact byte encoding of a reply (``True``, ``1.0`` and ``1`` differ;
    ``nan`` equals itself).  Iterative: hiredis may return replies nested 1000 levels deep."""
    out: list[bytes] = []
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is bytes:
            out += (b"$%d:" % len(cast(bytes, item)), cast(bytes, item))
        elif kind is int:
            out.append(b":%d;" % cast(int, item))
        elif item is None:
            out.append(b"_;")
        elif kind is list:
            items = cast("list[object]", item)
            out.append(b"*%d;" % len(items))
            stack.extend(reversed(items))
        elif kind is ErrorReply and type(cast(ErrorReply, item).message) is bytes:
            message = cast(ErrorReply, item).message
            out += (b"-%d:" % len(message), message)
        elif kind is dict:
            pairs = list(cast("dict[object, object]", item).items())
            out.append(b"%%%d;" % len(pairs))
            for key, val in reversed(pairs):
                stack += (val, key)
        else:
            try:
                text = repr(item)
            except Exception as exc:  # a recursive or broken repr
                text = f"<{type(exc).__name__} in repr>"
            shown = f"{kind.__module__}.{kind.__qualname__}:{text}".encode("utf-8", "replace")
            out += (b"?%d:" % len(shown), shown)
    return b"".join(out)


def short_repr(value: object, width: int = 240) -> str:
    """A repr cut to about `width` characters (nesting shown to 8 levels)."""

    def walk(item: object, depth: int) -> str:
        if isinstance(item, (list, tuple)):
            if depth > 8:
                return "[...]"
            inner = ", ".join(walk(x, depth + 1) for x in item[:8])
            return f"[{inner}{', ...' if len(item) > 8 else ''}]"
        if isinstance(item, dict):
            pairs = list(item.items())[:4]
            return (
                "{" + ", ".join(f"{walk(k, depth)}: {walk(v, depth + 1)}" for k, v in pairs) + "}"
            )
        if isinstance(item, bytes) and len(item) > 60:
            return f"{item[:40]!r}...({len(item)} bytes)"
        try:
            return clip(repr(item), 80)
        except Exception:
            return "<unrepresentable>"

    return clip(walk(value, 0), width)


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


# =============================================================================================
# Documented differences: the one table to update when a backend's documented behaviour changes.
#
# Each entry mirrors a row of "What differs between the backends" in docs/codec.md (and the
# module docstring of okq_proto/_hiredis.py).  Protocol error texts are never compared, so that
# row needs no entry; nor does has_partial()'s, which only differs while complete replies wait
# unparsed (outcomes are taken after a drain to NEED_DATA).


@dataclass(frozen=True)
class Deviation:
    """One backend's outcome on a stream and chunking, where it differs from the reference's
    (the pure decoder's) on the same chunking.  What the predicates of `DOCUMENTED` look at.

    Attributes:
        bounds: the offset where each chunk starts (``(0,)``: the stream in one chunk).
    """

    stream: bytes
    limits: Limits
    reference: Outcome
    outcome: Outcome
    bounds: tuple[int, ...] = (0,)

    def refused(self, pattern: str) -> bool:
        """The reference refused the stream with a message matching `pattern` (a regex)."""
        return self.reference.end == ERROR and re.search(pattern, self.reference.detail) is not None

    def agrees_before_refusal(self) -> bool:
        """The backend gave every reply the reference gave before refusing the stream (what it
        does after that is its own business)."""
        before = self.reference.prints
        return self.outcome.end in (NEED, ERROR) and self.outcome.prints[: len(before)] == before

    def chunk_holding(self, start: int, end: int) -> tuple[int, int] | None:
        """``(first, past)`` offsets of the chunk holding all of ``stream[start:end]``, or None
        when those bytes span chunks."""
        i = bisect.bisect_right(self.bounds, start) - 1
        past = self.bounds[i + 1] if i + 1 < len(self.bounds) else len(self.stream)
        return (self.bounds[i], past) if end <= past else None

    @functools.cached_property
    def framing(self) -> Framing:
        return frame(self.stream)


@dataclass(frozen=True)
class Difference:
    """A documented difference of a backend from the pure decoder.

    Attributes:
        name: the class name printed in the report.
        where: where it is documented.
        applies: the predicate: does this deviation show this difference (and nothing more)?
        example: a stream and an outcome of the other backend on it, fed in one chunk, that
            shows the difference (checked by ``tests/proto/test_differential.py``).
    """

    name: str
    where: str
    applies: Callable[[Deviation], bool]
    example: tuple[bytes, Outcome]


def _reply_start(framing: Framing, offset: int) -> int:
    """Where the reply holding the element at `offset` starts."""
    start = 0
    for at, _, depth, _, _ in framing.elements:
        if at > offset:
            break
        if depth == 0:
            start = at
    return start


def _bad_payload_end_in_trusted_region(d: Deviation) -> bool:
    # hiredis skips the two bytes after a payload unchecked; it is trusted with a run of bytes
    # from a reply start to a line end within one chunk, at most max_line_length long.
    if not (d.refused(r"bulk string payload not followed by CR LF") and d.agrees_before_refusal()):
        return False
    bulk = d.framing.first_bad_payload_end(d.stream)
    if bulk is None:
        return False
    start = _reply_start(d.framing, bulk[0])
    chunk = d.chunk_holding(start, bulk[1])
    return chunk is not None and bulk[1] - start <= d.limits.max_line_length


DOCUMENTED: Final[tuple[Difference, ...]] = (
    Difference(
        "bad-payload-end-in-trusted-run",
        "docs/codec.md, What differs between the backends: two bytes other than CR LF after a"
        " bulk payload, in a run of replies hiredis is trusted with, read as hiredis reads them",
        _bad_payload_end_in_trusted_region,
        (b"$3\r\nabcXY+ok\r\n", Outcome.of(NEED, [b"abc", b"ok"])),
    ),
)


def classify(deviation: Deviation, table: Sequence[Difference] = DOCUMENTED) -> str:
    """The name of the first documented difference the deviation shows, else `UNDOCUMENTED`."""
    for difference in table:
        if difference.applies(deviation):
            return difference.name
    return UNDOCUMENTED


@dataclass(frozen=True)
class Framing:
    """The elements of a stream as far as they can be framed, leniently (no limits, integers
    read by `int`, the two bytes after a payload not checked: as hiredis frames it); predicates
    use it on what the reference accepted, and just past that.

    Attributes:
        elements: ``(offset, type byte, depth, count, end)`` per element (count: the length of
            a ``$`` or ``*`` header, else 0; end: the offset just past it, past its payload and
            the two bytes after that for a bulk string), in stream order.
        stop: the offset where framing stopped (the end, or the first element it cannot frame).
        open_arrays: arrays still open at `stop`.
    """

    elements: tuple[tuple[int, int, int, int, int], ...]
    stop: int
    open_arrays: int

    def between_replies(self, offset: int) -> bool:
        """Whether a reply starts at `offset`, or the last one ends there."""
        return (
            offset == 0
            or any(at == offset and depth == 0 for at, _, depth, _, _ in self.elements)
            or (offset == self.stop and not self.open_arrays)
        )

    def first_bad_payload_end(self, data: bytes) -> tuple[int, int] | None:
        """``(offset, end)`` of the first bulk string not followed by CR LF, if any."""
        for at, kind, _, count, end in self.elements:
            if kind == _DOLLAR and count >= 0 and data[end - 2 : end] != b"\r\n":
                return at, end
        return None


_DOLLAR: Final = 36  # ord("$")
_STAR: Final = 42  # ord("*")
_LINE_TYPES: Final = frozenset(b"+-:")


def frame(data: bytes) -> Framing:
    """Frame `data` element by element (see `Framing`)."""
    elements: list[tuple[int, int, int, int, int]] = []
    stack: list[int] = []
    pos = 0
    size = len(data)
    while pos < size:
        nl = data.find(b"\r\n", pos)
        if nl < 0:
            break
        kind = data[pos]
        count = 0
        if kind in (_STAR, _DOLLAR):
            try:
                count = int(data[pos + 1 : nl])
            except ValueError:
                break
            end = nl + 2 + (count + 2 if kind == _DOLLAR and count >= 0 else 0)
            if end > size:
                break
        elif kind in _LINE_TYPES:
            end = nl + 2
        else:
            break
        elements.append((pos, kind, len(stack), count, end))
        pos = end
        if kind == _STAR and count > 0:
            stack.append(count)
            continue
        while stack:
            stack[-1] -= 1
            if stack[-1]:
                break
            stack.pop()
    return Framing(tuple(elements), pos, len(stack))


# =============================================================================================
# Stream generation (deterministic per seed and index)


@dataclass(frozen=True)
class Stream:
    """One generated reply stream and the three ways it is cut into chunks."""

    seed: int
    index: int
    kind: str
    variant: str
    profile: str
    data: bytes
    cuts: tuple[int, ...]
    views: bool  # the cut chunks are fed as bytearray / memoryview, alternately

    @property
    def limits(self) -> Limits:
        return PROFILES[self.profile]

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.variant}" if self.variant else self.kind

    def chunkings(self) -> Iterator[tuple[str, Sequence[bytes | bytearray | memoryview]]]:
        for name in CHUNKINGS:
            chunks = self.chunks(name)
            if chunks is not None:
                yield name, chunks

    def bounds(self, name: str) -> tuple[int, ...]:
        """Where each chunk of chunking `name` starts."""
        if name == "whole":
            return (0,)
        if name == "bytes":
            return tuple(range(len(self.data))) or (0,)
        return (0, *self.cuts)

    def chunks(self, name: str) -> Sequence[bytes | bytearray | memoryview] | None:
        """The chunks of chunking `name` (None: not used for this stream)."""
        data = self.data
        if name == "whole":
            return [data]
        if name == "bytes":
            if len(data) > BYTEWISE_MAX:
                return None
            return [data[i : i + 1] for i in range(len(data))]
        bounds = [0, *self.cuts, len(data)]
        parts: list[bytes | bytearray | memoryview] = [
            data[a:b] for a, b in itertools.pairwise(bounds)
        ]
        if self.views:
            parts = [bytearray(p) if i % 2 else memoryview(p) for i, p in enumerate(parts)]
        return parts


_NO_CRLF: Final = bytes.maketrans(b"\r\n", b"rn")
_NON_UTF8: Final = (
    *(b"\xff\xfe", b"\x80", b"\xc3", b"caf\xc3\xa9", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"),
    *(b"\xef\xbf\xbd", b"\xe2\x82", b"\xc0\xaf"),
)
_WORDS: Final = (
    *(b"OK", b"QUEUED", b"PONG", b"ERR unknown command 'x'", b"ERR duplicate event e1"),
    *(b"ERR too busy to process NOBLOCK event", b"", b" ", b"ok ok"),
)
_LOOKALIKE_LINES: Final = (
    *(b"*2147483648", b"*16777216", b"$99999999", b"*1", b"$5", b":1", b"+OK", b"-ERR", b"~2"),
    *(b"_", b"*-1", b"$-1"),
)
_TOKENS: Final = (
    *(b"*1\r\n", b"*2\r\n", b"*0\r\n", b"*-1\r\n", b"$5\r\n", b"$-1\r\n", b"$0\r\n\r\n"),
    *(b"+OK\r\n", b"-ERR x\r\n", b"-\xff\xfe\r\n", b":123\r\n", b":-1\r\n", b"*2147483648\r\n"),
    *(b"*16777216\r\n", b"*16777216\r\n:1\r\n", b"$99999999\r\n", b"$536870913\r\n"),
    *(b"$4096\r\n", b"~2\r\n", b">3\r\n", b"|1\r\n", b"%1\r\n", b"_\r\n", b",1.5\r\n"),
    *(b"#t\r\n", b"(1\r\n", b"=3\r\n", b"\r\n", b"\r", b"\n", b"*7\r\n"),
)
_CRLF_PIECES: Final = (b"\r\n", b"\r", b"\n", b"\r\r\n", b"\n\r", b"\r\n\r\n", b"a", b" ")
_INT_EDGES: Final = (
    *(0, 1, -1, 2, -2, 9, 10, 2047, 2048, -1024, 2**31 - 1, 2**31, -(2**31), 2**32, 2**53 + 1),
    *(10**18, 2**63 - 1, -(2**63), -(2**63) + 1),
)
_INSERTS: Final = (b"\r\n", b"\r", b"\n", b"*", b"$", b"+", b"-", b":", b"-1", b"0", b"9" * 10)
_INT64: Final = 2**63


def _text(rng: random.Random, limits: Limits, *, error: bool = False) -> bytes:
    """The line of a simple string or error reply (no CR or LF)."""
    r = rng.random()
    if r < 0.25 and not error:
        return b"OK"
    if r < 0.45:
        return rng.choice(_WORDS)
    if r < 0.65:
        return bytes(rng.choices(range(32, 127), k=rng.randint(0, 24)))
    if r < 0.85:
        head = b"ERR " if error and rng.random() < 0.7 else b""
        return head + rng.choice(_NON_UTF8) + rng.randbytes(rng.randint(0, 12)).translate(_NO_CRLF)
    if r < 0.98:
        return rng.choice(_LOOKALIKE_LINES)
    # Around the line limit (the type byte not counted).
    return b"x" * (limits.max_line_length + rng.randint(-2, 1))


def _integer(rng: random.Random) -> int:
    if rng.random() < 0.5:
        return rng.choice(_INT_EDGES)
    value = rng.getrandbits(rng.randint(1, 63))
    return -value if rng.random() < 0.3 else value


def _bulk_size(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.55:
        return rng.randint(0, 24)
    if r < 0.75:
        return rng.randint(25, 300)
    if r < 0.88:
        return 4096 + rng.randint(-3, 3)  # the hiredis adapter's big-bulk threshold
    if r < 0.96:
        return rng.randint(301, 12_000)
    if r < 0.99:
        return 1024 + rng.randint(-2, 2)
    if r < 0.997:
        return 65536 + rng.randint(-3, 3)  # the pure decoder's copy-through-a-view threshold
    return rng.randint(66_000, 90_000)


def _payload(rng: random.Random, size: int) -> bytes:
    r = rng.random()
    if r < 0.3:
        return rng.randbytes(size)
    if r < 0.65:  # RESP-looking lines
        unit = b"".join(rng.choices(_TOKENS, k=rng.randint(1, 6)))
    elif r < 0.85:  # CR / LF runs
        unit = b"".join(rng.choices(_CRLF_PIECES, k=rng.randint(1, 8)))
    else:
        unit = bytes(rng.choices(range(32, 127), k=rng.randint(1, 16)))
    return (unit * (size // len(unit) + 1))[:size]


def _bulk(rng: random.Random, size: int | None = None) -> bytes:
    r = rng.random()
    if size is None and r < 0.06:
        return b"$-1\r\n"
    if size is None and r < 0.12:
        return b"$0\r\n\r\n"
    size = _bulk_size(rng) if size is None else size
    return b"$%d\r\n%s\r\n" % (size, _payload(rng, size))


def _leaf(rng: random.Random, limits: Limits) -> bytes:
    r = rng.random()
    if r < 0.2:
        return b"+%s\r\n" % _text(rng, limits)
    if r < 0.32:
        return b"-%s\r\n" % _text(rng, limits, error=True)
    if r < 0.5:
        return b":%d\r\n" % _integer(rng)
    return _bulk(rng)


def _deep(rng: random.Random, limits: Limits) -> bytes:
    """Arrays nested to about the depth limit: a run of headers, through later elements, or
    a mix."""
    levels = max(limits.max_depth + rng.choice((-1, 0, 0, 1, 1, 2, 5)), 1)
    style = rng.random()
    parts = []
    for _ in range(levels):
        if style < 0.35 or (style > 0.7 and rng.random() < 0.5):
            parts.append(b"*1\r\n")
        else:
            parts.append(b"*2\r\n" + _leaf(rng, limits))
    parts.append(_leaf(rng, limits))
    return b"".join(parts)


def _value(rng: random.Random, limits: Limits, depth: int) -> bytes:
    r = rng.random()
    if depth == 0 and r < 0.05:
        return _deep(rng, limits)
    if r < 0.25 / (depth + 1) and depth <= limits.max_depth:
        c = rng.random()
        if c < 0.08:
            return b"*-1\r\n"
        if c < 0.18:
            return b"*0\r\n"
        count = rng.randint(1, 4) if c < 0.95 else rng.randint(5, 20)
        return b"*%d\r\n" % count + b"".join(_value(rng, limits, depth + 1) for _ in range(count))
    return _leaf(rng, limits)


def _valid(rng: random.Random, limits: Limits, most: int = 8) -> bytes:
    r = rng.random()
    count = 1 if r < 0.4 else rng.randint(2, 3) if r < 0.8 else rng.randint(4, most)
    parts: list[bytes] = []
    size = 0
    for _ in range(count):
        part = _value(rng, limits, 0)
        if parts and size + len(part) > MAX_STREAM * 3 // 4:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)[:MAX_STREAM]


def _mutate(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    buf = bytearray(data)
    ops = []
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            i = min(pos, len(buf) - 1)
            b = rng.random()
            if b < 0.4:
                buf[i] ^= 1 << rng.randrange(8)
            elif b < 0.7:
                buf[i] = rng.choice(b"\r\n*$+-:0123456789")
            else:
                buf[i] = rng.randrange(256)
            ops.append("flip")
        elif op == 1:
            piece = rng.choice(_INSERTS) if rng.random() < 0.6 else rng.randbytes(rng.randint(1, 4))
            buf[pos:pos] = piece
            ops.append("insert")
        elif op == 2:
            del buf[pos : pos + rng.randint(1, 8)]
            ops.append("delete")
        else:
            start = rng.randrange(len(buf) + 1)
            span = buf[start : start + rng.randint(1, 32)]
            buf[pos:pos] = span * rng.randint(1, 3)
            ops.append("duplicate")
    return bytes(buf[:MAX_STREAM]), "+".join(ops)


# -- hostile headers ------------------------------------------------------------------------


def _h_array_header(rng: random.Random, limits: Limits) -> bytes:
    count = rng.choice(
        (
            2147483648,
            2147483647,
            4294967296,
            2**63 - 1,
            2**63,
            2**64,
            99999999,
            16777216,
            16777217,
            limits.max_array_length,
            limits.max_array_length + 1,
        )
    )
    return b"*%d\r\n" % count + rng.choice((b"", b":1\r\n", b"+a\r\n" * 3, b"$1\r\na\r\n"))


def _h_repeated_full_array(rng: random.Random, limits: Limits) -> bytes:
    count = rng.choice((limits.max_array_length, limits.max_array_length - 1, 1024, 65536))
    count = min(count, limits.max_array_length)
    return (b"*%d\r\n:1\r\n" % count) * rng.randint(1, 12)


def _h_bulk_header(rng: random.Random, limits: Limits) -> bytes:
    length = rng.choice(
        (
            99999999,
            536870912,
            536870913,
            2147483648,
            2**63 - 1,
            2**63,
            limits.max_bulk_length,
            limits.max_bulk_length + 1,
        )
    )
    return b"$%d\r\n" % length + _payload(rng, rng.randint(0, 64))


_AFTER_BAD_END: Final = (
    *(b"*99999999\r\n", b"*2147483648\r\n", b"$99999999\r\n"),
    *(b"*16777216\r\n:1\r\n*16777216\r\n:1\r\n", b"~2147483648\r\n", b"*1\r\n" * 9 + b":1\r\n"),
    *(b":1\r\n", b"+OK\r\n"),
)


def _h_bad_payload_end(rng: random.Random, limits: Limits) -> bytes:
    size = rng.choice((0, 1, 3, 4095, 4096, 4097, rng.randint(0, 40)))
    end = rng.choice((b"XY", b"\r\r", b"\n\n", b"\rX", b"X\n", b"\n\r", b"**", b"$9"))
    body = b"$%d\r\n%s%s%s" % (size, _payload(rng, size), end, rng.choice(_AFTER_BAD_END))
    return b"*2\r\n" + body if rng.random() < 0.3 else body


def _h_deep_run(rng: random.Random, limits: Limits) -> bytes:
    levels = rng.choice((limits.max_depth, limits.max_depth + 1, limits.max_depth + 2, 100, 1000))
    levels = rng.choice((levels, 1023, 1024, 1025, 5000)) if rng.random() < 0.2 else levels
    header = rng.choice((b"*1\r\n", b"*1\r\n", b"*3\r\n", b"*16777216\r\n"))
    return header * levels + b":1\r\n"


def _h_later_nesting(rng: random.Random, limits: Limits) -> bytes:
    levels = rng.choice((limits.max_depth, limits.max_depth + 1, 100, 1023, 1024, 1025, 3000))
    step = rng.choice(
        (b"*2\r\n:1\r\n", b"*2\r\n$1\r\na\r\n", b"*2\r\n*0\r\n", b"*3\r\n:1\r\n:2\r\n")
    )
    return step * levels + b":1\r\n"


def _h_endless_line(rng: random.Random, limits: Limits) -> bytes:
    kind = rng.choice((b"+", b"-", b":", b"$", b"*"))
    filler = rng.choice((b"a", b"9", b"\r", b"\xff", b"*1", b"0"))
    size = limits.max_line_length + rng.choice((-2, -1, 0, 1, 2, 3, 50, 2000))
    line = kind + (filler * size)[:size] + rng.choice((b"", b"\r", b"\r\n", b"\r\n+OK\r\n"))
    return b"*2\r\n:1\r\n" + line if rng.random() < 0.3 else line


_RESP3: Final = (
    *(b"~2147483648\r\n", b"~16777216\r\n:1\r\n", b">16777216\r\n", b"|16777216\r\n"),
    *(b"%16777216\r\n", b"~1\r\n:1\r\n", b">2\r\n+a\r\n+b\r\n", b"|1\r\n+a\r\n+b\r\n:1\r\n"),
    *(b"%1\r\n+a\r\n+b\r\n", b"%1\r\n*0\r\n:1\r\n", b"%1\r\n%0\r\n:1\r\n"),
    *(b"%2\r\n:1\r\n:1\r\n:1\r\n:2\r\n", b"_\r\n", b",1.5\r\n", b",nan\r\n", b",inf\r\n"),
    *(b",x\r\n", b"#t\r\n", b"#f\r\n", b"#x\r\n", b"(123\r\n", b"(99999999999999999999999\r\n"),
    *(b"=5\r\ntxt:a\r\n", b"=99999999\r\n", b"!3\r\nerr\r\n"),
)


def _h_resp3(rng: random.Random, limits: Limits) -> bytes:
    return b"".join(rng.choices(_RESP3, k=rng.randint(1, 3)))


_STRICT: Final = (
    *(b":01\r\n", b":-0\r\n", b":+1\r\n", b":9223372036854775808\r\n"),
    *(b":-9223372036854775809\r\n", b": 1\r\n", b":1 \r\n", b":\r\n", b":-\r\n"),
    *(b"$01\r\na\r\n", b"$-2\r\n", b"$+1\r\na\r\n", b"$ 1\r\na\r\n", b"$\r\n", b"*-2\r\n"),
    *(b"*01\r\n:1\r\n", b"*\r\n", b"+a\rb\r\n", b"-a\nb\r\n", b"?\r\n", b"\r\n"),
)


def _h_strict_integers(rng: random.Random, limits: Limits) -> bytes:
    return rng.choice(_STRICT)


_HAZARDS: Final = (
    *(b"\r\n*2147483648\r\n", b"\r\n*16777216\r\n:1\r\n", b"\r\n$99999999\r\n"),
    *(b"\r\n~2147483648\r\n", b"\r\n-\xff\xfe\r\n", b"\r\n" + b"*1\r\n" * 12, b"\r\n_\r\n"),
    *(b"\r\n$4096\r\n",),
)


def _h_in_payload(rng: random.Random, limits: Limits) -> bytes:
    """Hazards inside bulk payloads: plain data."""
    size = rng.choice((rng.randint(0, 40), 4090, 4096, 4100, 5000))
    hazard = rng.choice(_HAZARDS)
    payload = _payload(rng, size)
    at = rng.randint(0, len(payload))
    payload = payload[:at] + hazard + payload[at:]
    body = b"$%d\r\n%s\r\n" % (len(payload), payload)
    return b"*2\r\n" + body + _leaf(rng, limits) if rng.random() < 0.4 else body


HOSTILE: Final[tuple[tuple[str, Callable[[random.Random, Limits], bytes]], ...]] = (
    ("array-header", _h_array_header),
    ("repeated-full-array", _h_repeated_full_array),
    ("bulk-header", _h_bulk_header),
    ("bad-payload-end", _h_bad_payload_end),
    ("deep-run", _h_deep_run),
    ("later-nesting", _h_later_nesting),
    ("endless-line", _h_endless_line),
    ("resp3", _h_resp3),
    ("strict-integers", _h_strict_integers),
    ("in-payload", _h_in_payload),
)


def _small(rng: random.Random, limits: Limits) -> bytes:
    return rng.choice((b"+OK\r\n", b":1\r\n", b"$3\r\nabc\r\n", b"*0\r\n", b"-ERR x\r\n"))


def _hostile(rng: random.Random, limits: Limits) -> tuple[bytes, str]:
    name, make = rng.choice(HOSTILE)
    body = make(rng, limits)
    r = rng.random()
    if r < 0.3:
        body = _small(rng, limits) * rng.randint(1, 2) + body
    elif r < 0.45:
        body = b"*2\r\n" + _small(rng, limits) + body
    if rng.random() < 0.25:
        body += _small(rng, limits)
    return body[:MAX_STREAM], name


def generate(seed: int, index: int) -> Stream:
    """Stream number `index` of the run with `seed` (the same in every process)."""
    rng = random.Random(f"okq-differential:{seed}:{index}")
    r = rng.random()
    kind = "valid" if r < 0.4 else "truncated" if r < 0.55 else "mutated" if r < 0.85 else "hostile"
    profile = "tight" if rng.random() < (0.1 if kind == "hostile" else 0.15) else "default"
    limits = PROFILES[profile]
    variant = ""
    if kind == "valid":
        data = _valid(rng, limits)
    elif kind == "truncated":
        whole = _valid(rng, limits, most=4)
        cut = rng.randrange(len(whole))
        if rng.random() < 0.5:
            cut = max(len(whole) - rng.randint(1, 16), 0)
        data = whole[:cut]
    elif kind == "mutated":
        data, variant = _mutate(rng, _valid(rng, limits, most=4))
    else:
        data, variant = _hostile(rng, limits)
    cuts: tuple[int, ...] = ()
    if len(data) > 1:
        cuts = tuple(sorted(rng.sample(range(1, len(data)), rng.randint(1, min(8, len(data) - 1)))))
    return Stream(seed, index, kind, variant, profile, data, cuts, rng.random() < 0.2)


# =============================================================================================
# Running one decoder


class _OverBudget(BaseException):
    """Raised by SIGALRM when a run is over its wall budget (not an `Exception`: nothing in a
    decoder may catch it)."""


def _on_alarm(signum: int, frame: object) -> None:
    raise _OverBudget


def _where(exc: BaseException) -> str:
    """Where in Python code `exc` was raised ("" when C code raised it, straight from a call in
    this module)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames or Path(frames[-1].filename).name == Path(__file__).name:
        return ""
    last = frames[-1]
    path = "/".join(Path(last.filename).parts[-2:])
    return f" (at {path}:{last.lineno} in {last.name})"


def run_decoder(
    factory: DecoderFactory,
    limits: Limits,
    chunks: Sequence[bytes | bytearray | memoryview],
    *,
    budget_s: float = 2.0,
    alarm: bool = False,
    trace: bool = False,
) -> tuple[Outcome, int]:
    """Decode `chunks` with a new decoder from `factory`; its outcome and tracemalloc peak.

    The run owns its garbage: automatic garbage collection is off while it runs, and the
    decoder (which may sit in a reference cycle with what it allocated) is collected before the
    run ends, so the time that takes counts against this run's budget and no other's.

    Args:
        budget_s: the run's wall budget; over it, the outcome is a `HANG`.
        alarm: enforce the budget with SIGALRM (main thread only); otherwise a run over it is
            only found afterwards.
        trace: measure the tracemalloc peak of the run (tracemalloc must be tracing).

    Returns:
        The outcome and the peak in bytes (0 when not traced).
    """
    replies: list[object] = []
    state: list[Any] = [NEED, False, ""]  # end, partial, detail
    peak = base = 0
    collecting = gc.isenabled()
    gc.disable()
    started = time.perf_counter()
    if trace:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
    outer = (0.0, 0.0)
    try:
        if alarm:
            outer = signal.setitimer(signal.ITIMER_REAL, budget_s)
        try:
            _decode(factory, limits, chunks, replies, state)
            if trace:
                peak = tracemalloc.get_traced_memory()[1] - base
            gc.collect(0)  # the decoder, if it is in a cycle
        finally:
            if alarm:  # disarm, or give an outer timer (pytest-timeout's) what it had left
                left = outer[0] - (time.perf_counter() - started) if outer[0] else 0.0
                signal.setitimer(
                    signal.ITIMER_REAL, max(left, 0.001) if outer[0] else 0.0, outer[1]
                )
    except _OverBudget:
        state[0], state[2] = HANG, f"over the {budget_s:g} s budget"
        gc.collect(0)
    finally:
        if collecting:
            gc.enable()
    end, partial, detail = state
    elapsed = time.perf_counter() - started
    if end != HANG and elapsed > budget_s:
        end, detail = HANG, f"over the {budget_s:g} s budget ({elapsed:.1f} s)"
    if end in (CRASH, HANG):
        return Outcome(end, (), False, detail, tuple(replies), elapsed), peak
    outcome = Outcome.of(end, replies, partial, detail)
    return dataclasses.replace(outcome, seconds=elapsed), peak


def _decode(
    factory: DecoderFactory,
    limits: Limits,
    chunks: Sequence[bytes | bytearray | memoryview],
    replies: list[object],
    state: list[Any],
) -> None:
    """Feed `chunks`, collecting `replies`; set ``state`` to ``[end, partial, detail]``.  The
    decoder lives only in this frame."""
    most = sum(map(len, chunks)) + 1  # every reply takes at least three bytes
    call = "the constructor"
    try:
        decoder = factory(limits)
        try:
            for chunk in chunks:
                call = "feed()"
                decoder.feed(chunk)
                call = "next_reply()"
                while True:
                    reply = decoder.next_reply()
                    if reply is NEED_DATA:
                        break
                    replies.append(reply)
                    if len(replies) > most:
                        raise RuntimeError("more replies than bytes (a reply given twice?)")
            call = "has_partial()"
            state[1] = decoder.has_partial()
        except RemoteProtocolError as exc:
            message = str(exc)
            call = "a call after the protocol error"
            sticky = []
            for probe in (decoder.next_reply, lambda: decoder.feed(b"+x\r\n")):
                try:
                    probe()
                except RemoteProtocolError:
                    sticky.append(True)
                else:
                    sticky.append(False)
            if all(sticky):
                state[0], state[2] = ERROR, message
            else:
                what = "next_reply()" if not sticky[0] else "feed()"
                state[0] = NOT_STICKY
                state[2] = f"{what} did not raise again after {message!r}"
    except Exception as exc:  # the bug this tool is for: anything but RemoteProtocolError
        text = clip(str(exc), 200)
        state[0], state[2] = CRASH, f"{type(exc).__name__}: {text} in {call}{_where(exc)}"


# =============================================================================================
# Checking streams


@dataclass(frozen=True)
class Finding:
    """Something to report about one stream.

    Attributes:
        kind: ``crash``, ``hang``, ``memory``, ``backends`` or ``chunkings``.
        backend: the backend at fault (for ``backends``, the one that differs from the
            reference).
        label: the exception type, the documented difference's name, `UNDOCUMENTED`, ...
        chunking: the chunking it showed on (the first, if several).
        detail: one or two lines for people.
    """

    kind: str
    backend: str
    label: str
    chunking: str
    detail: str

    @property
    def bad(self) -> bool:
        """Whether it fails the run."""
        return self.kind in ("crash", "hang", "memory") or self.label == UNDOCUMENTED


def _tally_key(finding: Finding) -> str:
    return f"{finding.kind}|{finding.backend}|{finding.label}"


@dataclass
class Tally:
    """Counts over a range of streams; ranges merge (`merge`) in any order to the same result.

    Attributes:
        streams: streams checked.
        runs: decoder runs made.
        by_kind: streams per stream kind.
        counts: streams per ``kind|backend|label`` of finding.
        examples: per ``kind|backend|label``, the `max_examples` findings of lowest index
            (whatever order streams are added in).
        peaks: per backend, ``[max tracemalloc peak over hostile streams, its stream index]``.
        rss: per worker process id, per backend, the maxrss growth in bytes seen during its
            runs (and ``"process"``: the process's growth since it was ready).
        slowest: per backend, the `SLOWEST` longest runs as ``[seconds, index, chunking]``.
    """

    max_examples: int = 20
    streams: int = 0
    runs: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    peaks: dict[str, list[int]] = field(default_factory=dict)
    rss: dict[str, dict[str, int]] = field(default_factory=dict)
    slowest: dict[str, list[list[Any]]] = field(default_factory=dict)

    def add(self, stream: Stream, findings: Sequence[Finding]) -> None:
        self.streams += 1
        self.by_kind[stream.kind] = self.by_kind.get(stream.kind, 0) + 1
        seen: set[str] = set()
        for finding in findings:
            key = _tally_key(finding)
            if key in seen:
                continue
            seen.add(key)
            self.counts[key] = self.counts.get(key, 0) + 1
            kept = self.examples.setdefault(key, [])
            if len(kept) >= self.max_examples and stream.index > kept[-1]["index"]:
                continue
            kept.append(
                {
                    "index": stream.index,
                    "stream": stream.label,
                    "profile": stream.profile,
                    "size": len(stream.data),
                    "chunking": finding.chunking,
                    "detail": finding.detail,
                }
            )
            if len(kept) > 1 and kept[-2]["index"] > stream.index:
                kept.sort(key=lambda e: (e["index"], e["chunking"]))
            del kept[self.max_examples :]

    def peak(self, backend: str, value: int, index: int) -> None:
        best = self.peaks.setdefault(backend, [0, -1])
        if value > best[0] or (value == best[0] and 0 <= index < best[1]):
            best[:] = [value, index]

    def timed(self, backend: str, runs: Sequence[list[Any]]) -> None:
        kept = self.slowest.setdefault(backend, [])
        kept += runs
        kept.sort(key=lambda r: (-r[0], r[1], r[2]))
        del kept[SLOWEST:]

    def merge(self, other: Tally) -> None:
        self.streams += other.streams
        self.runs += other.runs
        for name, value in other.by_kind.items():
            self.by_kind[name] = self.by_kind.get(name, 0) + value
        for key, value in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + value
        for key, found in other.examples.items():
            kept = self.examples.setdefault(key, [])
            kept += found
            kept.sort(key=lambda e: (e["index"], e["chunking"]))
            del kept[self.max_examples :]
        for backend, (value, index) in other.peaks.items():
            self.peak(backend, value, index)
        self.rss.update(other.rss)
        for backend, runs in other.slowest.items():
            self.timed(backend, runs)

    def bad(self) -> dict[str, int]:
        """Counts of the findings that fail the run."""
        out: dict[str, int] = {}
        for key, value in self.counts.items():
            kind, _, label = key.split("|", 2)
            if kind in ("crash", "hang", "memory") or label == UNDOCUMENTED:
                out[key] = value
        return out


def _maxrss() -> int:
    if resource is None:
        return 0
    value = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return value if sys.platform == "darwin" else value * 1024


class Checker:
    """Decodes streams with every backend and finds what to report.

    Args:
        backends: ``(name, factory)`` pairs; the first is the reference.
        budget_s: wall budget of one decoder run.
        alarm: enforce the budget with SIGALRM (in a worker process); otherwise runs over it
            are found afterwards.
        memory_target: a hostile stream's tracemalloc peak must stay under this, per backend.
        max_examples: examples kept per class.
        progress: shared slots ``[stream index, backend, chunking, run start (monotonic)]``
            for the watchdog of a worker process.
    """

    def __init__(
        self,
        backends: Sequence[tuple[str, DecoderFactory]],
        *,
        budget_s: float = 2.0,
        alarm: bool = False,
        memory_target: int = MEMORY_TARGET,
        max_examples: int = 20,
        table: Sequence[Difference] = DOCUMENTED,
        progress: Any = None,
    ) -> None:
        self.backends = list(backends)
        self.names = [name for name, _ in backends]
        self.budget_s = budget_s
        self.alarm = alarm
        self.memory_target = memory_target
        self.max_examples = max_examples
        self.table = table
        self.progress = progress
        self.rss: dict[str, int] = {name: 0 for name in self.names}
        self.rss_start = _maxrss()
        if alarm:
            signal.signal(signal.SIGALRM, _on_alarm)

    def ready(self) -> None:
        """Warm up (imports, caches) and start counting maxrss growth from here."""
        progress, self.progress = self.progress, None
        for index in range(40):
            self.check(generate(-1, index))
        self.progress = progress
        self.rss = {name: 0 for name in self.names}
        self.rss_start = _maxrss()

    def check_range(self, seed: int, start: int, stop: int) -> Tally:
        """Check streams ``start <= index < stop`` of the run with `seed`.

        The hostile streams are checked last, all traced at once (starting and
        stopping it per stream fragments the C heap: the process would grow).
        """
        tally = Tally(self.max_examples)
        hostile = []
        for index in range(start, stop):
            stream = generate(seed, index)
            if stream.kind == "hostile":
                hostile.append(index)
            else:
                self._tally(tally, stream)
        if hostile:
            tracemalloc.start()
            try:
                for index in hostile:
                    self._tally(tally, generate(seed, index))
            finally:
                tracemalloc.stop()
        tally.rss[str(os.getpid())] = {**self.rss, "process": max(_maxrss() - self.rss_start, 0)}
        return tally

    def _tally(self, tally: Tally, stream: Stream) -> None:
        findings, outcomes, peaks = self.check(stream)
        tally.add(stream, findings)
        for name, value in peaks.items():
            tally.peak(name, value, stream.index)
        for name, mine in outcomes.items():
            tally.runs += len(mine)
            tally.timed(name, [[o.seconds, stream.index, how] for how, o in mine.items()])

    def check(
        self, stream: Stream
    ) -> tuple[list[Finding], dict[str, dict[str, Outcome]], dict[str, int]]:
        """Decode `stream` every way; its findings, each backend's outcome per chunking, and
        (hostile streams) each backend's tracemalloc peak."""
        progress = self.progress
        if progress is not None:
            progress[0] = stream.index
        trace = stream.kind == "hostile"
        start_tracing = trace and not tracemalloc.is_tracing()
        limits = stream.limits
        chunkings = list(stream.chunkings())
        outcomes: dict[str, dict[str, Outcome]] = {}
        peaks: dict[str, int] = {}
        findings: list[Finding] = []
        if start_tracing:
            tracemalloc.start()
        try:
            for b, (name, factory) in enumerate(self.backends):
                mine = outcomes[name] = {}
                before = _maxrss()
                for c, (how, chunks) in enumerate(chunkings):
                    if progress is not None:
                        progress[1], progress[2], progress[3] = b, c, time.monotonic()
                    for _ in range(2):  # a run over budget is run again: the machine may be busy
                        outcome, peak = run_decoder(
                            factory,
                            limits,
                            chunks,
                            budget_s=self.budget_s,
                            alarm=self.alarm,
                            trace=trace,
                        )
                        if outcome.end != HANG:
                            break
                    mine[how] = outcome
                    if trace:
                        peaks[name] = max(peaks.get(name, 0), peak)
                    if outcome.end in (CRASH, HANG):
                        findings.append(
                            Finding(
                                outcome.end,
                                name,
                                outcome.detail.split(":", 1)[0]
                                if outcome.end == CRASH
                                else "over budget",
                                how,
                                outcome.detail,
                            )
                        )
                self.rss[name] += max(_maxrss() - before, 0)
        finally:
            if start_tracing:
                tracemalloc.stop()
            if progress is not None:
                progress[3] = 0.0
        for name, peak in peaks.items():
            if peak >= self.memory_target:
                findings.append(
                    Finding(
                        "memory",
                        name,
                        "tracemalloc peak over target",
                        "",
                        f"tracemalloc peak {peak / 2**20:.1f} MiB (target"
                        f" {self.memory_target / 2**20:g} MiB)",
                    )
                )
        findings += self._compare(stream, outcomes)
        return findings, outcomes, peaks

    def _compare(self, stream: Stream, outcomes: dict[str, dict[str, Outcome]]) -> list[Finding]:
        findings: list[Finding] = []
        reference_name = self.names[0]
        settled = {
            name: {how: o for how, o in mine.items() if o.end not in (CRASH, HANG)}
            for name, mine in outcomes.items()
        }

        def deviation(name: str, how: str) -> str | None:
            """The class of backend `name`'s deviation from the reference on `how` (None: same
            outcome)."""
            mine, ref = settled[name][how], settled[reference_name][how]
            if mine.same(ref):
                return None
            found = Deviation(stream.data, stream.limits, ref, mine, stream.bounds(how))
            return classify(found, self.table)

        for name in self.names:
            mine = settled[name]
            # Between chunkings of the same backend.
            whole = mine.get("whole")
            for how in CHUNKINGS[1:]:
                other = mine.get(how)
                if whole is None or other is None or other.same(whole):
                    continue
                if name == reference_name:
                    label = UNDOCUMENTED  # the reference has no documented differences
                elif "whole" not in settled[reference_name] or how not in settled[reference_name]:
                    continue
                else:
                    labels = [x for x in (deviation(name, "whole"), deviation(name, how)) if x]
                    if not labels:
                        continue  # it follows the reference, whose own finding counts
                    label = UNDOCUMENTED if UNDOCUMENTED in labels else labels[0]
                findings.append(
                    Finding(
                        "chunkings",
                        name,
                        label,
                        how,
                        f"whole: {whole.describe()}\n{how}: {other.describe()}",
                    )
                )
            if name == reference_name:
                continue
            # Against the reference on the same chunking.
            for how, outcome in mine.items():
                ref = settled[reference_name].get(how)
                if ref is None:
                    continue
                label_or_none = deviation(name, how)
                if label_or_none is None:
                    continue
                findings.append(
                    Finding(
                        "backends",
                        name,
                        label_or_none,
                        how,
                        f"{reference_name}: {ref.describe()}\n{name}: {outcome.describe()}",
                    )
                )
        return findings


# =============================================================================================
# Backends


def load_backends(specs: Sequence[str]) -> list[tuple[str, DecoderFactory]]:
    """``name=module:class`` specs to ``(name, class)`` pairs.

    Raises:
        ValueError: for a malformed spec or a class that cannot be imported.
    """
    out: list[tuple[str, DecoderFactory]] = []
    for spec in specs:
        name, eq, target = spec.partition("=")
        module_name, colon, attr = target.partition(":")
        if not (eq and colon and name and module_name and attr):
            raise ValueError(f"backend {spec!r} is not NAME=MODULE:CLASS")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"backend {spec!r}: {exc}") from exc
        out.append((name, factory))
    if len({name for name, _ in out}) != len(out) or len(out) < 2:
        raise ValueError("give at least two backends, with different names")
    return out


# =============================================================================================
# The parallel run


@dataclass(frozen=True)
class Options:
    streams: int = 1_000_000
    seed: int = 0
    jobs: int = 1
    budget_s: float = 2.0
    time_limit_s: float = 4 * 3600.0
    batch: int = 200
    max_examples: int = 20
    memory_target: int = MEMORY_TARGET
    worker_memory_mb: int = 4096
    backends: tuple[str, ...] = DEFAULT_BACKENDS
    progress_s: float = 10.0
    recycle: int = 50_000  # streams a worker checks before a fresh one takes over

    @property
    def watchdog_s(self) -> float:
        """A run this long is stuck where SIGALRM cannot reach it: its worker is killed."""
        return 5 * self.budget_s + 10.0


@dataclass
class Report:
    options: Options
    tally: Tally
    elapsed_s: float
    complete: bool
    names: list[str]

    @property
    def ok(self) -> bool:
        return self.complete and not self.tally.bad()


def _worker(conn: Any, progress: Any, options: Options) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    if resource is not None and options.worker_memory_mb > 0:
        # A header that makes a backend ask for gigabytes gets a MemoryError (a crash) instead
        # of taking the machine's memory.
        with contextlib.suppress(ValueError, OSError):
            _, hard = resource.getrlimit(resource.RLIMIT_AS)
            vm = _vm_size()
            if vm:
                limit = vm + options.worker_memory_mb * 2**20
                resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    checker = Checker(
        load_backends(options.backends),
        budget_s=options.budget_s,
        alarm=hasattr(signal, "setitimer"),
        memory_target=options.memory_target,
        max_examples=options.max_examples,
        progress=progress,
    )
    checker.ready()
    progress[0] = -1
    while True:
        task = conn.recv()
        if task is None:
            break
        start, stop = task
        tally = checker.check_range(options.seed, start, stop)
        progress[0] = -1
        conn.send(tally)
    conn.close()


def _vm_size() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class _Slot:
    process: Any
    conn: Any
    progress: Any
    task: tuple[int, int] | None = None
    done: int = 0


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "worker died"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"worker died (signal {signal.Signals(-code).name})"
        return f"worker died (signal {-code})"
    return f"worker died (exit code {code})"


def run(options: Options, log: TextIO | None = sys.stderr) -> Report:
    """Check ``options.streams`` streams in ``options.jobs`` worker processes.

    Raises:
        ValueError: bad backends, or a worker that could not start.
    """
    names = [name for name, _ in load_backends(options.backends)]
    ctx = multiprocessing.get_context("spawn")
    tally = Tally(options.max_examples)
    tasks: deque[tuple[int, int]] = deque(
        (s, min(s + options.batch, options.streams))
        for s in range(0, options.streams, options.batch)
    )
    slots: list[_Slot] = []

    def spawn() -> _Slot:
        parent, child = ctx.Pipe()
        progress = ctx.RawArray("d", 4)
        progress[0] = -2  # starting
        process = ctx.Process(
            target=_worker, args=(child, progress, options), name="differential", daemon=True
        )
        process.start()
        child.close()
        return _Slot(process, parent, progress)

    def stop(slot: _Slot) -> None:
        with contextlib.suppress(OSError):
            slot.conn.close()
        if slot.process.is_alive():
            slot.process.kill()
        slot.process.join(5)

    def lost(slot: _Slot, kind: str, label: str) -> None:
        """The worker in `slot` is gone mid-task: report the stream, requeue the rest."""
        assert slot.task is not None
        start, end = slot.task
        index = int(slot.progress[0])
        if index == -2:
            raise ValueError(f"a worker could not start: {label}")
        if start <= index < end:
            backend = names[int(slot.progress[1])] if slot.progress[3] else "-"
            chunking = CHUNKINGS[int(slot.progress[2])] if slot.progress[3] else ""
            stream = generate(options.seed, index)
            lone = Tally(options.max_examples)
            lone.add(stream, [Finding(kind, backend, label, chunking, label)])
            tally.merge(lone)
            if stream.index + 1 < end:
                tasks.appendleft((stream.index + 1, end))
            if start < index:
                tasks.appendleft((start, index))
        else:
            tasks.appendleft((start, end))
        slot.task = None

    started = time.monotonic()
    last_progress = started
    complete = True
    watched: set[int] = set()  # streams whose worker the watchdog killed once
    try:
        slots = [spawn() for _ in range(max(1, min(options.jobs, len(tasks))))]
        while True:
            now = time.monotonic()
            if now - started > options.time_limit_s and tasks:
                complete = False
                tasks.clear()
            for slot in slots:
                if slot.task is None and tasks:
                    slot.task = tasks.popleft()
                    slot.conn.send(slot.task)
            busy = [slot for slot in slots if slot.task is not None]
            if not busy:
                break
            ready = multiprocessing.connection.wait([s.conn for s in busy], timeout=0.5)
            for i, slot in enumerate(slots):
                if slot.task is None:
                    continue
                if slot.conn in ready:
                    try:
                        tally.merge(slot.conn.recv())
                    except (EOFError, OSError):
                        pass
                    else:
                        slot.done += slot.task[1] - slot.task[0]
                        slot.task = None
                        if slot.done < options.recycle or not tasks:
                            continue
                        with contextlib.suppress(OSError):
                            slot.conn.send(None)  # bounds whatever a long-lived process grows
                        slot.process.join(10)
                        stop(slot)
                        slots[i] = spawn()
                        continue
                    slot.process.join(5)
                    lost(slot, "crash", _describe_exit(slot.process.exitcode))
                elif not slot.process.is_alive():
                    lost(slot, "crash", _describe_exit(slot.process.exitcode))
                elif slot.progress[3] and time.monotonic() - slot.progress[3] > options.watchdog_s:
                    stop(slot)
                    index = int(slot.progress[0])
                    if index not in watched:
                        # A worker stalled by a loaded machine looks the same: run the stream
                        # again in a fresh worker before it counts as a hang.
                        watched.add(index)
                        assert slot.task is not None
                        tasks.appendleft(slot.task)
                        slot.task = None
                    else:
                        lost(slot, "hang", f"killed by the watchdog after {options.watchdog_s:g} s")
                else:
                    continue
                stop(slot)
                slots[i] = spawn()
            if log is not None and time.monotonic() - last_progress >= options.progress_s:
                last_progress = time.monotonic()
                in_flight = sum(
                    max(int(s.progress[0]) - s.task[0], 0) for s in slots if s.task is not None
                )
                print(_progress_line(tally, in_flight, options, last_progress - started), file=log)
                log.flush()
    except KeyboardInterrupt:
        complete = False
    finally:
        for slot in slots:
            with contextlib.suppress(OSError):
                slot.conn.send(None)
        for slot in slots:
            slot.process.join(2)
            stop(slot)
    if tally.streams < options.streams:
        complete = False
    return Report(options, tally, time.monotonic() - started, complete, names)


def _progress_line(tally: Tally, in_flight: int, options: Options, elapsed: float) -> str:
    done = tally.streams + in_flight
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (options.streams - done) / rate if rate > 0 else float("inf")
    bad = tally.bad()
    crashes = sum(v for k, v in bad.items() if k.startswith("crash|"))
    hangs = sum(v for k, v in bad.items() if k.startswith("hang|"))
    memory = sum(v for k, v in bad.items() if k.startswith("memory|"))
    undocumented = sum(v for k, v in bad.items() if k.endswith("|" + UNDOCUMENTED))
    return (
        f"[{100 * done / max(options.streams, 1):5.1f}%] {done:,}/{options.streams:,} streams"
        f"  {rate:,.0f}/s  eta {_duration(eta)}  crashes {crashes:,}  hangs {hangs:,}"
        f"  memory {memory:,}  undocumented {undocumented:,}"
    )


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


# =============================================================================================
# Reports, reproducers, replay

_KIND_ORDER: Final = ("crash", "hang", "memory", "backends", "chunkings")


def _rows(tally: Tally) -> list[tuple[str, str, str, int, int]]:
    rows = []
    for key, count in tally.counts.items():
        kind, backend, label = key.split("|", 2)
        first = tally.examples[key][0]["index"] if tally.examples.get(key) else -1
        rows.append((kind, backend, label, count, first))
    rows.sort(key=lambda r: (_KIND_ORDER.index(r[0]), r[1], r[2] == UNDOCUMENTED, r[2]))
    return rows


def _mib(value: int) -> str:
    return f"{value / 2**20:.2f} MiB"


def format_report(report: Report, examples: int = 3) -> str:
    """The summary table (text)."""
    o, t = report.options, report.tally
    rate = t.streams / report.elapsed_s if report.elapsed_s else 0.0
    lines = [
        f"differential run: {t.streams:,} of {o.streams:,} streams (seed {o.seed},"
        f" {o.jobs} jobs), {' vs '.join(report.names)}: {report.elapsed_s:.1f} s,"
        f" {rate:,.0f} streams/s, {t.runs:,} decoder runs",
        "streams: " + "  ".join(f"{k} {t.by_kind.get(k, 0):,}" for k in KINDS),
        "",
        f"{'finding':<10} {'backend':<10} {'class':<50} {'streams':>9}  first",
    ]
    rows = _rows(t)
    for kind, backend, label, count, first in rows:
        shown = (
            label
            if label == UNDOCUMENTED or kind not in ("backends", "chunkings")
            else (f"{label} (documented)")
        )
        lines.append(f"{kind:<10} {backend:<10} {clip(shown, 50):<50} {count:>9,}  #{first}")
    if not rows:
        lines.append("(no crashes, hangs or disagreements)")
    lines += ["", f"{'peak memory':<34}" + "".join(f"{name:>22}" for name in report.names)]
    peaks = [t.peaks.get(name, [0, -1]) for name in report.names]
    lines.append(
        f"{'hostile streams, tracemalloc max':<34}"
        + "".join(f"{_mib(p[0]) + (f' (#{p[1]})' if p[1] >= 0 else ''):>22}" for p in peaks)
    )
    rss = [max((r.get(name, 0) for r in t.rss.values()), default=0) for name in report.names]
    lines.append(
        f"{'maxrss growth in its runs (max)':<34}" + "".join(f"{_mib(v):>22}" for v in rss)
    )
    process = max((r.get("process", 0) for r in t.rss.values()), default=0)
    lines.append(f"{'maxrss growth per process (max)':<34}{_mib(process):>22}")
    for name in report.names:
        runs = ", ".join(f"{sec:.2f} s #{i} {how}" for sec, i, how in t.slowest.get(name, []))
        lines.append(f"slowest {name} runs: {runs or '-'}")
    over = {k: v for k, v in t.counts.items() if k.startswith("memory|")}
    lines.append(
        f"memory target: < {_mib(o.memory_target)} per hostile stream and backend: "
        + (
            "met"
            if not over
            else "MISSED ("
            + ", ".join(f"{k.split('|')[1]} {v:,} streams" for k, v in over.items())
            + ")"
        )
    )
    bad = t.bad()
    if bad and examples:
        lines += ["", "examples (reproduce with --save DIR, then --replay FILE):"]
        for key in sorted(bad, key=lambda k: (_KIND_ORDER.index(k.split("|")[0]), k)):
            for example in t.examples.get(key, [])[:examples]:
                lines.append(
                    f"  {key.replace('|', ' ')}: #{example['index']} {example['stream']}"
                    f" ({example['profile']}, {example['size']} bytes,"
                    f" {example['chunking'] or '-'})"
                )
                lines += [f"      {clip(line, 200)}" for line in example["detail"].splitlines()]
    verdict = "PASS" if report.ok else "FAIL"
    lines += ["", f"result: {verdict}" + ("" if report.complete else " (the run did not complete)")]
    return "\n".join(lines)


def report_json(report: Report) -> dict[str, Any]:
    t = report.tally
    return {
        "options": dataclasses.asdict(report.options),
        "backends": report.names,
        "complete": report.complete,
        "ok": report.ok,
        "elapsed_s": round(report.elapsed_s, 3),
        "streams": t.streams,
        "runs": t.runs,
        "streams_per_s": round(t.streams / report.elapsed_s, 1) if report.elapsed_s else None,
        "by_kind": t.by_kind,
        "findings": [
            {
                "kind": kind,
                "backend": backend,
                "class": label,
                "documented": kind in ("backends", "chunkings") and label != UNDOCUMENTED,
                "streams": count,
                "examples": t.examples.get(f"{kind}|{backend}|{label}", []),
            }
            for kind, backend, label, count, _ in _rows(t)
        ],
        "memory": {
            "target_bytes": report.options.memory_target,
            "hostile_tracemalloc_peak": {
                name: {
                    "bytes": t.peaks.get(name, [0, -1])[0],
                    "index": t.peaks.get(name, [0, -1])[1],
                }
                for name in report.names
            },
            "maxrss_growth_bytes": t.rss,
        },
        "slowest_runs": {
            name: [{"seconds": round(sec, 4), "index": i, "chunking": how} for sec, i, how in runs]
            for name, runs in t.slowest.items()
        },
        "documented_differences": [{"name": d.name, "where": d.where} for d in DOCUMENTED],
    }


def reproducer(seed: int, index: int, finding: Mapping[str, Any]) -> dict[str, Any]:
    """Everything needed to see a finding again, from the stream's seed and index."""
    stream = generate(seed, index)
    how = finding["chunking"] or "whole"
    text = repr(stream.data)
    return {
        "seed": seed,
        "index": index,
        "stream": stream.label,
        "profile": stream.profile,
        "limits": dataclasses.asdict(stream.limits),
        "finding": dict(finding),
        "chunking": {
            "name": how,
            "cuts": list(stream.cuts),  # of the "cuts" chunking
            "views": stream.views,
        },
        "size": len(stream.data),
        "stream_base64": base64.b64encode(stream.data).decode("ascii"),
        "stream_repr": clip(text, 4000),
        "replay": "python -m conformance.fuzz.differential --replay FILE",
    }


def save_reproducers(report: Report, directory: Path) -> list[Path]:
    """Write a reproducer per kept example of every finding that fails the run."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for key in report.tally.bad():
        kind, backend, label = key.split("|", 2)
        for example in report.tally.examples.get(key, []):
            data = reproducer(
                report.options.seed,
                example["index"],
                {"kind": kind, "backend": backend, "class": label, **example},
            )
            slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{kind}-{backend}-{label}").strip("-")[:60]
            path = directory / f"{slug}-{example['index']}-{example['chunking'] or 'whole'}.json"
            path.write_text(json.dumps(data, indent=1) + "\n")
            written.append(path)
    return written


def replay(path: Path, specs: Sequence[str], budget_s: float, out: TextIO) -> int:
    """Run a saved reproducer again with every backend; 1 if it still fails."""
    data = json.loads(path.read_text())
    kind, _, variant = data["stream"].partition("/")
    raw = base64.b64decode(data["stream_base64"])
    cuts, views = tuple(data["chunking"]["cuts"]), bool(data["chunking"]["views"])
    stream = Stream(data["seed"], data["index"], kind, variant, data["profile"], raw, cuts, views)
    if dataclasses.asdict(stream.limits) != data["limits"]:
        raise ValueError(f"{path}: profile {stream.profile!r} no longer has the saved limits")
    how = data["chunking"]["name"]
    chunks = stream.chunks(how) or [stream.data]
    print(f"stream #{stream.index} ({stream.label}, {stream.profile}, {len(raw)} bytes)", file=out)
    print(f"  {clip(repr(raw), 600)}", file=out)
    print(f"chunking {how}: {len(chunks)} chunks", file=out)
    previous = signal.getsignal(signal.SIGALRM) if hasattr(signal, "SIGALRM") else None
    try:
        return _replay(stream, chunks, how, specs, budget_s, out)
    finally:
        if previous is not None:
            signal.signal(signal.SIGALRM, previous)


def _replay(
    stream: Stream,
    chunks: Sequence[bytes | bytearray | memoryview],
    how: str,
    specs: Sequence[str],
    budget_s: float,
    out: TextIO,
) -> int:
    checker = Checker(load_backends(specs), budget_s=budget_s, alarm=hasattr(signal, "setitimer"))
    for name, factory in checker.backends:
        outcome, _ = run_decoder(
            factory, stream.limits, chunks, budget_s=budget_s, alarm=checker.alarm
        )
        print(f"  {name}: {outcome.describe(600)}", file=out)
    findings, _, _ = checker.check(stream)
    for finding in findings:
        verdict = "FAILS" if finding.bad else "ok"
        print(
            f"{verdict}: {finding.kind} {finding.backend} {finding.label} ({finding.chunking})",
            file=out,
        )
    return 1 if any(f.bad for f in findings) else 0


# =============================================================================================
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conformance.fuzz.differential",
        description="Differential run of the RESP2 reply decoders (pure vs hiredis).",
        epilog="Exit status: 0 when nothing failed, 1 when something failed, 2 on usage errors.",
    )
    parser.add_argument("--streams", type=int, default=1_000_000, help="streams (1,000,000)")
    parser.add_argument("--seed", type=int, default=0, help="run seed (0)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    parser.add_argument("--save", type=Path, metavar="DIR", help="write reproducers here")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per decoder run (2)")
    parser.add_argument(
        "--time-limit", type=float, default=4 * 3600.0, help="seconds for the whole run (4 h)"
    )
    parser.add_argument("--batch", type=int, default=200, help="streams per task (200)")
    parser.add_argument("--max-saved", type=int, default=20, help="reproducers per class (20)")
    parser.add_argument(
        "--recycle", type=int, default=50_000, help="streams per worker process (50,000)"
    )
    parser.add_argument(
        "--worker-memory-mb", type=int, default=4096, help="address space per worker (4096)"
    )
    parser.add_argument(
        "--backend",
        action="append",
        metavar="NAME=MODULE:CLASS",
        help="a decoder to compare (repeat; the first is the reference; default: python, hiredis)",
    )
    parser.add_argument(
        "--progress", type=float, default=10.0, help="seconds between progress lines"
    )
    parser.add_argument("--replay", type=Path, metavar="FILE", help="run one saved reproducer")
    args = parser.parse_args(argv)
    specs = tuple(args.backend or DEFAULT_BACKENDS)
    try:
        if args.replay:
            return replay(args.replay, specs, args.budget, sys.stdout)
        if args.streams < 1 or args.jobs < 1 or args.batch < 1 or args.budget <= 0:
            parser.error("--streams, --jobs, --batch and --budget must be positive")
        options = Options(
            streams=args.streams,
            seed=args.seed,
            jobs=args.jobs,
            budget_s=args.budget,
            time_limit_s=args.time_limit,
            batch=args.batch,
            max_examples=args.max_saved,
            worker_memory_mb=args.worker_memory_mb,
            backends=specs,
            progress_s=args.progress,
            recycle=max(args.recycle, 1),
        )
        report = run(options)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report_json(report), indent=1) + "\n")
    if args.save:
        written = save_reproducers(report, args.save)
        print(f"{len(written)} reproducers in {args.save}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
