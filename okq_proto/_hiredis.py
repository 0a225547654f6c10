"""A RESP2 reply decoder on ``hiredis.Reader``, with the pure decoder's rules and limits.

Owns: the adapter between hiredis-py 3.x and the `Decoder` API (`feed`, `next_reply`,
`has_partial`, `limits`).  Must not know: okq commands, sockets, clocks.

**The framer** walks bytes element by element, the way the pure `Decoder` does, but builds
nothing: it reads each header and line, checks it by the pure decoder's rules (type byte, strict
integers and lengths, `Limits`, the CR LF after a bulk payload, CR or LF inside a simple string)
and keeps only a stack of element counts still owed, the bytes of bulk payload still to pass,
and the bytes of a line whose CR LF has not arrived.  What it has walked goes to hiredis, which
builds the reply objects (error replies through a ``replyError`` hook, from the exact bytes the
framer recorded).  A payload is passed over by its length and never searched, so contents full
of RESP-looking lines cost what any contents cost: no recursion, no per-line work, no copy of
what is only passed over (a chunk inside a payload costs one comparison).

**Trusted runs.**  The framer only has to walk to the next reply boundary.  From a boundary,
hiredis gets a run of bytes at once when a C-speed screen of the run finds none of: an array
header of three or more digits, a bulk header of five or more (only where `Limits` allow bulk
strings shorter than a run can be), a RESP3 type byte where an element may start or a RESP3
aggregate header anywhere (searched for only where a memchr finds such a byte at all), or an
error line with non-ASCII bytes.  The run is the whole chunk when it is short and ends a line (a
client's one reply per read), else up to the last place that starts like the first reply (a run
of pipelined replies, then one cut short).  After the run hiredis gets one reply of our own
(``+\x00\r\n``): it comes back last, and as a reply of its own, exactly when the run ended
where a reply ends (otherwise it became an element, payload bytes or an error).  No reply may
nest deeper than ``max_depth`` (a run of arrays of strings is flat; else fewer ``*`` than
that beyond one per array reply proves it; else the replies are walked level by level, all at
C speed); if anything fails, hiredis
is replaced by a fresh reader and the framer decides the whole run.  The run's replies are then
handed out at C speed (``next_reply`` is ``next`` over them, then over ``gets``).  Exact
shortcuts skip even the screen for ``+OK``, one line element, and one bulk string or array of
up to nine small bulk strings (recognised by one split at its first CR LFs).

**Memory is bounded by the bytes received.**  hiredis allocates an array's list when it reads
the header (``*16777216`` asks for 128 MiB at once).  In a trusted run no header counts past 99
elements (and hiredis nests at most 1024 levels: under 1 MiB of lists); in the framer, headers
under `HOLD_COUNT` elements go straight on (at most ``max_depth`` such lists are open) and from
`HOLD_COUNT` elements on the array's bytes are held back and handed to hiredis only once all of
it has arrived, so its list is never larger than what the peer actually sent.

Where the backends differ (``docs/codec.md``; each pinned in ``tests/proto/test_hiredis.py``):

* In a trusted run hiredis does not check the two bytes after a bulk payload:
  ``$3\\r\\nabcXY+ok\\r\\n`` in one chunk reads as ``b"abc"``, ``b"ok"`` (where the framer sees
  it, both backends refuse it).  No okq server sends such bytes; the screen is blind to where
  elements start, so what follows such bytes cannot allocate past the bounds above.
* The text of a protocol error (the framer uses the pure decoder's texts; a few checks only
  hiredis makes, such as its cap of 1024 nesting levels, keep hiredis's).
* `has_partial` is exact here (bytes of an incomplete reply are buffered); the pure decoder
  also counts complete replies it has not parsed yet.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial
from itertools import chain, compress, repeat
from typing import Any, Final, cast

import hiredis

from ._errors import ErrorReply, RemoteProtocolError
from ._resp import _SMALL_INTS, DEFAULT_LIMITS, NEED_DATA, Limits, NeedData, Reply, _parse_int

__all__ = ["FAST_MAX", "HOLD_COUNT", "HiredisDecoder"]

#: Arrays of at least this many elements are handed to hiredis only once all of them arrived.
HOLD_COUNT: Final = 1024
#: The longest chunk the exact shortcuts take, and trusted whole when it ends a line.
FAST_MAX: Final = 4096

_CRLF: Final = b"\r\n"
_CR: Final = 13
_LF: Final = 10
_DOLLAR: Final = 36  # ord("$")
_STAR: Final = 42  # ord("*")
_PLUS: Final = 43  # ord("+")
_MINUS: Final = 45  # ord("-")
_COLON: Final = 58  # ord(":")
_OK_LINE: Final = b"+OK\r\n"
# The trusted runs' screen: RESP3 type bytes where an element starts (hiredis parses them, the
# pure decoder refuses them).
_RESP3_START: Final = re.compile(rb"\r\n[_,#(=!~>|%]").search
_RESP3_BYTES: Final = frozenset(b"_,#(=!~>|%")
# Every RESP3 type byte: a chunk without any (most) needs neither search below.
_RESP3_TYPE_BYTES: Final = b"_,#(=!~>|%"
_RESP3_TYPES: Final = tuple(bytes([byte]) for byte in _RESP3_TYPE_BYTES)
# A RESP3 aggregate header anywhere (hiredis builds maps and sets, and some releases crash on
# an unhashable key): searched only where a RESP3 type byte shows at all.
_AGGREGATE: Final = re.compile(rb"[~>|%][-0-9]").search
# A reply hiredis parses after a trusted run: it shows where the run ended (see `_trusted`).
_MARK: Final = b"+\x00\r\n"
_MARK_VALUE: Final = b"\x00"
_flatten: Final = chain.from_iterable
# What `_bulks` takes: array headers of one to nine elements, bulk headers under 2048 bytes.
_COUNTS: Final = {b"*%d\r\n" % n: n for n in range(1, 10)}
_BULK_HEADS: Final = {b"$%d" % n: n for n in range(2048)}
# Whole replies of one line that start like a bulk string or an array.
_NIL_LINES: Final = frozenset((b"$-1\r\n", b"*-1\r\n", b"*0\r\n"))
_IS_LIST: Final = frozenset({list}).__contains__


def _any_resp3_type(data: bytes, start: int, end: int) -> bool:
    """Whether ``data[start:end]`` holds a RESP3 type byte anywhere."""
    if end - start <= 2048:
        part = data[start:end]
        return len(part.translate(None, _RESP3_TYPE_BYTES)) != len(part)
    count = len(_RESP3_TYPES)  # a memchr each, at C speed
    return max(map(data.find, _RESP3_TYPES, repeat(start, count), repeat(end, count))) >= 0


def _bulks(data: bytes) -> bool:
    """Whether `data` is exactly one bulk string, or one array of up to nine bulk strings
    (no nil), each under 2048 bytes: what QRPOP, QLPEEK and QRPEEK send.

    Cut at its first CR LFs, such a reply falls into headers and payloads whose lengths match
    exactly (a payload holding CR LF does not, and is left to the other paths)."""
    count = _COUNTS.get(data[:4])
    if count == 2:  # the commonest: an event's id and contents
        parts = data.split(_CRLF, 4)
        if len(parts) != 5:
            return False
        _, head, first, last_head, rest = parts
        return (
            len(first) == _BULK_HEADS.get(head)
            and len(rest) - 2 == _BULK_HEADS.get(last_head)
            and rest.endswith(_CRLF)
        )
    heads = _BULK_HEADS
    if count is None:
        if data[0] != _DOLLAR:
            return False
        head, _, rest = data.partition(_CRLF)
        return len(rest) - 2 == heads.get(head) and rest.endswith(_CRLF)
    if data[4:5] != b"$":  # an array of something else (QSTATUS, QINFO)
        return False
    parts = data.split(_CRLF, 2 * count)
    if len(parts) != 2 * count + 1:
        return False
    for i in range(1, 2 * count - 1, 2):
        if len(parts[i + 1]) != heads.get(parts[i]):
            return False
    rest = parts[-1]
    return len(rest) - 2 == heads.get(parts[-2]) and rest.endswith(_CRLF)


def _digits_within(limit: int) -> int:
    """The most digits a count can have and always stay within `limit`."""
    return len(str(limit + 1)) - 1


def _arrays_of_strings(replies: list[Reply]) -> bool:
    """Whether every reply is an array of strings (a run of QRPOP or peek replies): then none
    nests.  Joining their elements proves it at C speed (anything else is a TypeError)."""
    try:
        b"".join(_flatten(cast("list[list[bytes]]", replies)))
    except TypeError:
        return False
    return True


def _too_deep(replies: list[Reply], max_depth: int) -> bool:
    """Whether any reply nests arrays deeper than `max_depth` (no recursion; each level is
    looked at, filtered and flattened at C speed)."""
    level: list[Reply] = replies
    for _ in range(max_depth + 1):
        kinds = set(map(type, level))
        if list not in kinds:
            return False
        if len(kinds) > 1:
            level = list(compress(level, map(_IS_LIST, map(type, level))))
        level = list(_flatten(cast("list[list[Reply]]", level)))
    return True


_ENTRY: Final = b"*4\r\n$%d\r\n%s\r\n:%d\r\n:%d\r\n:%d\r\n"


def _wire(reply: Reply, first: int, max_depth: int) -> bytes | None:
    """The canonical RESP2 encoding of `reply` (strings as bulk strings, except a top-level
    simple string when `first` says so), or None where there is none within `max_depth`."""
    kind = type(reply)
    if kind is list:
        items = cast("list[Reply]", reply)
        if len(items) == 2 and type(items[0]) is bytes and type(items[1]) is bytes:
            a, b = cast("tuple[bytes, bytes]", items)  # QRPOP, QLPEEK, QRPEEK
            return b"*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(a), a, len(b), b)
        if max_depth >= 2 and all(type(x) is list and len(x) == 4 for x in items):
            try:  # QSTATUS, QINFO: entries of a name and three counters
                return b"*%d\r\n" % len(items) + b"".join(
                    [_ENTRY % (len(n), n, a, b, c) for n, a, b, c in cast("list[list[Any]]", items)]
                )
            except TypeError:
                pass
        parts: list[bytes] = []
        return b"".join(parts) if _wire_array(items, parts, max_depth) else None
    if kind is bytes:
        text = cast(bytes, reply)
        if first == _PLUS:
            return None if b"\r" in text or b"\n" in text else b"+%s\r\n" % text
        return b"$%d\r\n%s\r\n" % (len(text), text)
    if kind is int:
        return b":%d\r\n" % cast(int, reply)
    if reply is None:
        return b"*-1\r\n" if first == _STAR else b"$-1\r\n"
    if kind is ErrorReply:
        message = cast(ErrorReply, reply).message
        return None if b"\r" in message or b"\n" in message else b"-%s\r\n" % message
    return None


def _wire_array(items: list[Reply], parts: list[bytes], depth: int) -> bool:
    if depth < 1:
        return False
    parts.append(b"*%d\r\n" % len(items))
    for item in items:
        kind = type(item)
        if kind is bytes:
            parts.append(b"$%d\r\n%s\r\n" % (len(cast(bytes, item)), item))
        elif kind is int:
            parts.append(b":%d\r\n" % cast(int, item))
        elif kind is list:
            if not _wire_array(cast("list[Reply]", item), parts, depth - 1):
                return False
        else:  # nil and error replies inside arrays: left to the framer
            return False
    return True


class HiredisDecoder:
    """An incremental RESP2 reply decoder on ``hiredis.Reader``, same API, rules and limits as
    `Decoder`.

    Feed bytes in any chunking with `feed`; take complete replies out, one per call, with
    `next_reply` (returns `NEED_DATA` when the bytes so far end inside a reply).  Error replies
    are `ErrorReply` values.  A protocol error is raised by `next_reply` once the replies
    before it have been taken; after that every call raises `RemoteProtocolError`.

    Args:
        limits: bounds on lengths and nesting (`Limits`), enforced before hiredis sees a byte
            of the offending element.

    Attributes:
        next_reply: parse and return the next complete reply, or `NEED_DATA` (see
            `Decoder.next_reply`).  An attribute, so that it can be ``hiredis.Reader.gets``
            itself.
    """

    next_reply: Callable[[], Reply | NeedData]

    __slots__ = (
        "_big_array",
        "_big_bulk",
        "_chained",
        "_cr_ok",
        "_error",
        "_fast_max",
        "_feed",
        "_gets",
        "_has_data",
        "_held",
        "_hold_level",
        "_limits",
        "_line",
        "_pending",
        "_plain_limits",
        "_quiet",
        "_raw_errors",
        "_reader",
        "_ready",
        "_skip",
        "_stack",
        "next_reply",
    )

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        # The error raised by `next_reply`, once raised: every later call raises it again.
        self._error: RemoteProtocolError | None = None
        # An error the framer met in `feed`, raised once the replies before it are taken.
        self._pending: RemoteProtocolError | None = None
        # Between replies, nothing failed: `feed` may take the exact shortcuts.
        self._quiet = True
        # Exact bytes of every error line walked, in stream order (see `_reply_error`).
        self._raw_errors: deque[bytes] = deque()
        # Replies a trusted run took out of hiredis, oldest first.
        self._ready: deque[Reply] = deque()
        # While `next_reply` hands out a trusted run's replies at C speed: those not taken.
        self._chained: Iterator[Reply] | None = None
        self._new_reader()
        # Elements still owed by each open array, outermost first.
        self._stack: list[int] = []
        # Bytes still to pass of a bulk payload and its CR LF (0: none).
        self._skip = 0
        # Whether the byte where a payload's CR belongs was one (checked with its LF).
        self._cr_ok = True
        # A line whose CR LF has not arrived yet, from its type byte on (empty: none).
        self._line = bytearray()
        # While an array of HOLD_COUNT elements or more is open: the bytes walked since its
        # header, and the stack depth at which it opened (-1: nothing held).
        self._held: list[bytes] = []
        self._hold_level = -1
        # The shortcuts' size bound and the trusted runs' screen (see the module docstring).
        self._fast_max = min(FAST_MAX, limits.max_line_length)
        # `_bulks` needs no limit checks (2047-byte bulks, nine elements, one level).
        self._plain_limits = (
            limits.max_bulk_length >= 2047
            and limits.max_array_length >= 9
            and limits.max_depth >= 1
        )
        arrays = min(3, _digits_within(limits.max_array_length) + 1)
        bulks = min(5, _digits_within(limits.max_bulk_length) + 1)
        self._big_array = re.compile(rb"\*[0-9]{%d}" % arrays).search
        # A trusted run is at most max_line_length long, and so are its bulk strings: only a
        # lower max_bulk_length needs their headers screened.
        self._big_bulk: Callable[[bytes, int, int], object] | None = (
            re.compile(rb"\$[0-9]{%d}" % bulks).search
            if limits.max_bulk_length < limits.max_line_length
            else None
        )
        self.next_reply = self._gets

    def _new_reader(self) -> None:
        self._reader = hiredis.Reader(
            protocolError=self._protocol_error,
            replyError=cast(Any, self._reply_error),  # returns a value, not an exception
            notEnoughData=NEED_DATA,
        )
        # hiredis-py's stub types feed() as taking bytes only; it takes any buffer.
        self._feed = cast("Callable[..., None]", self._reader.feed)
        self._gets: Callable[[], Reply | NeedData] = self._reader.gets
        self._has_data: Callable[[], bool] = self._reader.has_data

    @property
    def limits(self) -> Limits:
        """The limits this decoder enforces."""
        return self._limits

    # -- hiredis hooks ----------------------------------------------------------------------

    def _protocol_error(self, message: str) -> RemoteProtocolError:
        # hiredis calls this, then raises type(result)(message): record it to make it sticky.
        # Reached only through checks hiredis makes and the framer does not (its nesting cap),
        # or in a trusted run, which then goes to the framer.
        error = RemoteProtocolError(message)
        if self._error is None:
            self._error = error
            self._quiet = False
            self._line = bytearray()
            self.next_reply = self._failed
        return error

    def _reply_error(self, message: str) -> ErrorReply:
        raw = self._raw_errors
        return ErrorReply(raw.popleft() if raw else message.encode("utf-8"))

    # -- public API -------------------------------------------------------------------------

    def has_partial(self) -> bool:
        """True when bytes of a reply that is not complete yet have been received."""
        return bool(self._stack or self._skip or self._line or self._held)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes (copied or kept read-only; parsing happens in `next_reply`).

        Raises:
            RemoteProtocolError: if the decoder already failed.
        """
        if type(data) is not bytes:
            data = bytes(data)  # the framer slices it and may hold on to it
        size = len(data)
        if self._quiet and 2 < size <= self._fast_max:
            # Between replies (and no trusted run's replies handed out at C speed): a chunk that
            # is exactly one reply the pure decoder accepts goes to hiredis as it is.
            if (
                data == _OK_LINE
                or (self._plain_limits and _bulks(data))
                or data in _NIL_LINES
                or self._one_line(data)
            ):
                self._feed(data)
                return
            if self._plain_limits and self._verified(data):
                return
        else:
            if self._chained is not None:
                self._unchain()
            skip = self._skip
            if size == 1 and not skip:  # fed byte by byte: most bytes only extend a line
                line = self._line
                if self._pending is None and self._error is None:
                    if data != b"\n":
                        if len(line) <= self._fast_max:
                            line += data  # cannot end the line (read once it ends)
                            self._quiet = False
                            return
                    elif self._plain_limits and line[:1] == b"$" and line[-1:] == b"\r":
                        # A short bulk header ends: its payload and CR LF come next.
                        length = _BULK_HEADS.get(bytes(line[:-1]))
                        if length is not None:
                            line += data
                            self._out(bytes(line), 0, len(line))
                            self._line = bytearray()
                            self._skip = length + 2
                            self._cr_ok = True
                            return
            elif size == 1 and skip <= 2 and self._pending is None:  # a payload's CR LF
                if skip == 2:
                    self._cr_ok = data == b"\r"
                    self._skip = 1
                    self._out(data, 0, 1)
                    return
                if self._cr_ok and data == b"\n":
                    self._skip = 0
                    self._close_element(data, 0, 1)
                    self._quiet = not self._stack
                    return
            elif skip >= size + 2:  # inside a payload, short of its CR LF
                self._skip = skip - size
                if self._hold_level < 0:
                    self._feed(data)
                else:
                    self._held.append(data)
                return
        if self._error is not None:
            raise self._error
        if self._pending is not None or not size:
            return
        try:
            pos = 0 if self._quiet else self._walk(data)
            if pos < size and not (self._stack or self._skip or self._line):
                self._from_boundary(data, pos)
        except RemoteProtocolError as exc:
            self._stop(exc)
        self._quiet = self._chained is None and not (
            self._stack or self._skip or self._line or self._pending or self._error
        )

    # -- shortcuts and trusted runs -------------------------------------------------------

    def _one_line(self, data: bytes) -> bool:
        """Whether `data` is exactly one line element the pure decoder accepts (a reply)."""
        nl = data.find(_CRLF)
        if nl != len(data) - 2 or nl < 1:
            return False
        kind = data[0]
        if kind == _COLON:
            return data[1:nl] in _SMALL_INTS or _parse_int(data[1:nl]) is not None
        if kind in (_PLUS, _MINUS):
            if data.find(b"\r") != nl or data.find(b"\n") != nl + 1:
                return False
            if kind == _MINUS:
                self._raw_errors.append(data[1:nl])
            return True
        return False

    def _verified(self, data: bytes) -> bool:
        """Give hiredis a short chunk between replies and keep its reply if the chunk is
        exactly that reply's canonical encoding (then the pure decoder reads it the same);
        otherwise hiredis is replaced by a fresh reader and False returned."""
        if (
            self._has_data()
            or data[0] in _RESP3_BYTES
            or self._big_array(data) is not None
            or (_any_resp3_type(data, 0, len(data)) and _AGGREGATE(data) is not None)
        ):
            return False  # (the screen: no header hiredis could allocate much for)
        self._feed(data)
        try:
            reply = self._gets()
        except Exception:  # hiredis's own errors too (a RESP3 map with a list for a key)
            self._error = None  # the hook's: the framer will find it, at the right reply
            reply = NEED_DATA
        if (
            reply is not NEED_DATA
            and not self._has_data()
            and _wire(reply, data[0], self._limits.max_depth) == data
        ):
            self._ready.append(reply)
            self.next_reply = self._next_ready
            return True
        self._new_reader()
        self.next_reply = self._next_ready if self._ready else self._gets
        return False

    def _from_boundary(self, data: bytes, pos: int) -> None:
        """Decode ``data[pos:]``, which starts a reply: hiredis at once where it can be
        trusted (`_trusted`), the framer for the rest."""
        if self._has_data():
            # Replies the framer completed and nobody has taken yet: out of hiredis first,
            # so that hiredis holds nothing before what it is given now.
            gets = self._gets
            ready = self._ready
            while (reply := gets()) is not NEED_DATA:
                ready.append(reply)
            self.next_reply = self._next_ready
        end = len(data)
        # Trust hiredis with a short chunk that ends a line up to its end (one reply or more:
        # what a client meets most); else up to the last place that starts like this reply
        # does (its first line and the next byte: a run of replies, then one cut short), else
        # up to the end if it ends a line.  A guess that hiredis checks; what is left after
        # it (one reply or less) takes the framer.
        ends_line = data.endswith(_CRLF)
        if ends_line and end - pos <= FAST_MAX:
            cut = end
        else:
            nl = data.find(_CRLF, pos, pos + 24)
            cut = data.rfind(_CRLF + data[pos : nl + 3 if nl > 0 else pos + 1], pos + 1) + 2
            if cut < 2 and ends_line:
                cut = end
        if (
            cut > pos + 2
            and cut - pos <= self._limits.max_line_length
            and self._trusted(data, pos, cut)
        ):
            if cut == end:
                return
            pos = cut
        self._frame(data, pos, pos)

    def _trusted(self, data: bytes, pos: int, cut: int) -> bool:
        """Give hiredis ``data[pos:cut]`` (from a reply start) if the screen finds nothing the
        framer would decide otherwise; True if it then held whole replies only (handed out by
        `next_reply` first), False if not (hiredis replaced by a fresh reader: the framer
        decides)."""
        big_bulk = self._big_bulk
        if (
            data[pos] in _RESP3_BYTES
            or self._big_array(data, pos, cut) is not None
            or (big_bulk is not None and big_bulk(data, pos, cut) is not None)
            or (
                _any_resp3_type(data, pos, cut)
                and (
                    _RESP3_START(data, pos, cut) is not None
                    or _AGGREGATE(data, pos, cut) is not None
                )
            )
            or not (data.isascii() or (data[pos] != _MINUS and data.find(b"\r\n-", pos, cut) < 0))
        ):
            return False
        # After the run, a reply of our own: hiredis gives it back last, and alone, exactly
        # when the run ended where a reply does (otherwise it became part of an unfinished
        # reply: an element, payload bytes, or an error).
        feed = self._feed
        feed(data, pos, cut - pos)
        feed(_MARK)
        try:
            replies = cast("list[Reply]", list(iter(self._gets, NEED_DATA)))
            whole = (
                len(replies) > 1
                and replies[-1] == _MARK_VALUE
                and type(replies[-1]) is bytes
                and not self._has_data()
            )
        except Exception:  # hiredis's own errors too (a RESP3 map with a list for a key)
            whole = False
            self._error = None  # the hook's: the framer will find it, at the right reply
        if whole:
            del replies[-1]
        # Nesting past max_depth takes that many array headers besides a reply's own: with
        # fewer "*" in the run than that beyond one per array reply, no reply can.
        max_depth = self._limits.max_depth
        if whole and (
            _arrays_of_strings(replies)
            or data.count(b"*", pos, cut) - list(map(type, replies)).count(list) < max_depth
            or not _too_deep(replies, max_depth)
        ):
            ready = self._ready
            if ready:  # replies completed before the run come first
                replies[:0] = ready
                ready.clear()
            # At C speed: these replies, then what hiredis parses of the bytes after them.
            rest = iter(replies)
            self._chained = rest
            self.next_reply = partial(next, chain(rest, iter(self._gets, NEED_DATA)), NEED_DATA)
            return True
        self._new_reader()
        self.next_reply = self._next_ready if self._ready else self._gets
        return False

    def _unchain(self) -> None:
        """Replies of a trusted run not taken yet go back into `_ready`, so that what `feed`
        adds next (or an error the framer met) comes after them."""
        rest = self._chained
        self._chained = None
        ready = self._ready
        ready.extend(rest)  # type: ignore[arg-type]  # not None: the caller checked
        self.next_reply = self._next_ready if ready else self._after_ready()

    def _next_ready(self) -> Reply | NeedData:
        """`next_reply` while a trusted run holds replies hiredis already gave out."""
        ready = self._ready
        if ready:
            reply = ready.popleft()
            if not ready:
                self.next_reply = self._after_ready()
            return reply
        return self._after_ready()()  # called again through a reference kept by the caller

    def _after_ready(self) -> Callable[[], Reply | NeedData]:
        if self._error is not None:
            return self._failed
        return self._gets if self._pending is None else self._drain

    # -- the framer -------------------------------------------------------------------------

    def _stop(self, error: RemoteProtocolError) -> None:
        """The framer met `error`: what was walked before it stays with hiredis, the rest goes."""
        if self._chained is not None:
            self._unchain()
        self._pending = error
        self._stack.clear()
        self._skip = 0
        self._line = bytearray()
        self._held = []
        self._hold_level = -1
        if not self._ready:
            self.next_reply = self._drain

    def _drain(self) -> Reply | NeedData:
        """`next_reply` after the framer failed: the replies before the error, then the error."""
        reply = self._gets()
        if reply is NEED_DATA:
            assert self._pending is not None
            self._error = self._pending
            self.next_reply = self._failed
            raise self._error
        return reply

    def _failed(self) -> Reply | NeedData:
        assert self._error is not None
        raise self._error

    def _out(self, data: bytes, start: int, end: int) -> None:
        """Hand ``data[start:end]`` on: to hiredis, or to the held array's bytes."""
        if end > start:
            if self._hold_level >= 0:
                self._held.append(data if start == 0 and end == len(data) else data[start:end])
            else:
                self._feed(data, start, end - start)

    def _release(self) -> None:
        """The held array is complete: hiredis gets all of it now."""
        self._hold_level = -1
        held = self._held
        self._held = []
        feed = self._feed
        for part in held:
            feed(part)

    def _walk(self, data: bytes) -> int:
        """Frame `data` (bytes that go on a reply begun before) up to the first reply
        boundary, handing it on as it goes.

        Returns:
            Where that boundary is in `data`, or its length if the reply goes on past it.

        Raises:
            RemoteProtocolError: where the pure decoder would refuse the stream.
        """
        pos = 0
        end = len(data)
        if self._skip:  # inside a bulk payload (or its CR LF)
            pos = self._pass(data, 0)
        elif self._line:  # a line whose CR LF is in `data`, or not yet
            line = self._line
            if line[-1] == _CR and data[0] == _LF:
                after = 1
            else:
                nl = data.find(_CRLF)
                if nl < 0:
                    line += data
                    self._check_partial(len(line))
                    return end
                if len(line) + nl > self._limits.max_line_length + 1:
                    raise RemoteProtocolError(
                        f"line longer than {self._limits.max_line_length} bytes"
                    )
                after = nl + 2
            self._line = bytearray()
            # The completed line is framed on its own, then the walk goes on in `data`.
            line += data[:after]
            self._frame(bytes(line), 0, 0, one=True)
            pos = self._pass(data, after) if self._skip else after
        if pos >= end or not (self._stack or self._skip):
            return pos
        return self._frame(data, pos, pos, to_boundary=True)

    def _pass(self, data: bytes, pos: int) -> int:
        """Pass over the bulk payload owed, from ``data[pos]`` on.

        Returns:
            Where the walk goes on in `data` (its length when used up).
        """
        skip = self._skip
        end = len(data)
        take = min(skip, end - pos)
        self._check_crlf(data, pos, skip, take)
        self._skip = skip - take
        if self._skip:
            self._out(data, pos, end)
            return end
        self._close_element(data, pos, pos + take)
        return pos + take

    def _close_element(self, data: bytes, start: int, pos: int) -> None:
        """An element ended at ``data[pos]``: pop finished arrays; hand on ``data[start:pos]``."""
        stack = self._stack
        while stack:
            stack[-1] -= 1
            if stack[-1]:
                break
            stack.pop()
            if len(stack) == self._hold_level:
                self._out(data, start, pos)
                start = pos
                self._release()
        self._out(data, start, pos)

    def _check_crlf(self, data: bytes, pos: int, skip: int, take: int) -> None:
        """Check the CR LF that ends a payload, among the `take` bytes of the `skip` owed that
        start at ``data[pos]`` (at most two comparisons).  As in the pure decoder, a bad pair
        is refused once both of its bytes have arrived."""
        for i in range(max(skip - 2, 0), take):
            if skip - i == 2:
                self._cr_ok = data[pos + i] == _CR
            elif not self._cr_ok or data[pos + i] != _LF:
                raise RemoteProtocolError("bulk string payload not followed by CR LF")

    def _length(self, line: bytes, kind: int) -> int:
        """A bulk (``$``) or array (``*``) length by the pure decoder's rules, else raise."""
        limits = self._limits
        value = _parse_int(line)
        what = "bulk" if kind == _DOLLAR else "array"
        if value is None or value < -1:
            raise RemoteProtocolError(f"bad {what} length {line!r}")
        limit, name = (
            (limits.max_bulk_length, "max_bulk_length")
            if kind == _DOLLAR
            else (limits.max_array_length, "max_array_length")
        )
        if value > limit:
            raise RemoteProtocolError(f"{what} length {value} exceeds {name} {limit}")
        return value

    def _check_partial(self, size: int) -> None:
        # Type byte + line + the CR of a CR LF still on its way: anything longer cannot become
        # a line within the limit.
        limit = self._limits.max_line_length
        if size > limit + 2:
            raise RemoteProtocolError(f"no line end within {limit} bytes (max_line_length)")

    def _frame(
        self, data: bytes, pos: int, start: int, *, one: bool = False, to_boundary: bool = False
    ) -> int:
        """Walk whole elements of `data` from `pos`; hand on ``data[start:]`` as walked.

        Args:
            one: walk only the line starting at `pos` (a completed partial line).
            to_boundary: stop where a reply ends.

        Returns:
            The offset walked to.

        Raises:
            RemoteProtocolError: at the first element the pure decoder refuses; what came
                before it has been handed on.
        """
        end = len(data)
        find = data.find
        stack = self._stack
        ints = _SMALL_INTS
        limits = self._limits
        max_line = limits.max_line_length + 1
        max_bulk = limits.max_bulk_length
        max_array = limits.max_array_length
        try:
            while pos < end:
                kind = data[pos]
                nl = find(_CRLF, pos)
                if nl < 0:
                    self._check_partial(end - pos)
                    self._line = bytearray(data[pos:])
                    break
                if nl - pos > max_line:
                    raise RemoteProtocolError(f"line longer than {max_line - 1} bytes")
                if kind == _DOLLAR:
                    length = ints.get(data[pos + 1 : nl])
                    if length is None or length > max_bulk:
                        length = self._length(data[pos + 1 : nl], _DOLLAR)
                    if length < 0:
                        pos = nl + 2
                    else:
                        after = nl + 4 + length
                        if after > end:  # the payload goes on in later chunks
                            self._check_crlf(data, nl + 2, length + 2, end - nl - 2)
                            self._skip = after - end
                            pos = end
                            break
                        if data[after - 2 : after] != _CRLF:
                            raise RemoteProtocolError("bulk string payload not followed by CR LF")
                        pos = after
                elif kind == _STAR:
                    count = ints.get(data[pos + 1 : nl])
                    if count is None or count > max_array:
                        count = self._length(data[pos + 1 : nl], _STAR)
                    if count > 0:
                        if len(stack) >= limits.max_depth:
                            raise RemoteProtocolError(
                                f"arrays nested deeper than max_depth {limits.max_depth}"
                            )
                        if count >= HOLD_COUNT and self._hold_level < 0:
                            # Hand on what came before; hold this array until it is complete.
                            if pos > start:
                                self._feed(data, start, pos - start)
                            start = pos
                            self._hold_level = len(stack)
                        stack.append(count)
                        pos = nl + 2
                        if one:
                            break
                        continue
                    pos = nl + 2
                elif kind == _COLON:
                    if data[pos + 1 : nl] not in ints and _parse_int(data[pos + 1 : nl]) is None:
                        raise RemoteProtocolError(f"bad integer {data[pos + 1 : nl]!r}")
                    pos = nl + 2
                elif kind in (_PLUS, _MINUS):
                    if find(b"\r", pos, nl) >= 0 or find(b"\n", pos, nl) >= 0:
                        what = "simple string" if kind == _PLUS else "error reply"
                        raise RemoteProtocolError(f"CR or LF inside {what} {data[pos + 1 : nl]!r}")
                    if kind == _MINUS:
                        self._raw_errors.append(data[pos + 1 : nl])
                    pos = nl + 2
                else:
                    raise RemoteProtocolError(f"unknown RESP2 type byte {data[pos : pos + 1]!r}")
                # An element is complete: count it off its arrays.
                while stack:
                    stack[-1] -= 1
                    if stack[-1]:
                        break
                    stack.pop()
                    if len(stack) == self._hold_level:
                        self._out(data, start, pos)
                        start = pos
                        self._release()
                if one or (to_boundary and not stack):
                    break
        except RemoteProtocolError:
            self._out(data, start, pos)
            raise
        if start < pos:
            if self._hold_level < 0:
                self._feed(data, start, pos - start)
            else:
                self._out(data, start, pos)
        return pos
