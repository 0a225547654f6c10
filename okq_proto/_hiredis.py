"""A RESP2 reply decoder on ``hiredis.Reader``, with the pure decoder's rules and limits.

Owns: the adapter between hiredis-py 3.x and the `Decoder` API (`feed`, `next_reply`,
`has_partial`, `limits`): the hiredis reader and its hooks, what each chunk takes (an exact
shortcut, a trusted run, or the framer), and handing replies out in stream order, errors last.
Must not know: how an element is walked and checked against `Limits` (``okq_proto._framer``,
which this class extends), how a chunk is screened or a reply's encoding proven
(``okq_proto._hiredis_trust``), okq commands, sockets, clocks.

**The framer** (``okq_proto._framer``) walks bytes element by element, the way the pure
`Decoder` does, but builds nothing; what it has walked goes to hiredis, which builds the reply
objects (error replies through a ``replyError`` hook, from the exact bytes the framer recorded).

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

**Replies in parts.**  A server that writes each element on its own (okq's QRPOP reply comes as
``*2``, then the id, then the contents) hands a client the start of a reply, then the rest in
pieces; no fresh reader is made for them.  The start of an array of up to nine small bulk
strings, and in an open array one such bulk string, its header alone or the rest of its payload,
are recognised as exactly the shortcuts are; any other short start of a reply that hiredis reads
as unfinished stays with hiredis once the framer has walked the same bytes and ended inside that
reply too (`Framer._frame_fed`), refusing them wherever the framer would.

**Memory is bounded by the bytes received.**  hiredis allocates an array's list when it reads
the header (``*16777216`` asks for 128 MiB at once).  In a trusted run no header counts past 99
elements (and hiredis nests at most 1024 levels: under 1 MiB of lists); the framer holds back
arrays of `HOLD_COUNT` elements or more until all of them arrived.

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
from itertools import chain
from typing import Any, Final, cast

try:
    import hiredis
except ImportError as exc:
    raise ModuleNotFoundError(
        "okq_proto.hiredis needs hiredis: pip install 'okq[hiredis]'", name=exc.name
    ) from exc

from ._errors import ErrorReply, RemoteProtocolError
from ._framer import _COLON, _CRLF, _DOLLAR, _MINUS, _PLUS, HOLD_COUNT, Framer
from ._hiredis_trust import (
    _AGGREGATE,
    _BULK_HEADS,
    _COUNTS,
    _MARK,
    _MARK_VALUE,
    _NIL_LINES,
    _OK_LINE,
    _RESP3_BYTES,
    _RESP3_START,
    _any_resp3_type,
    _arrays_of_strings,
    _bulks,
    _digits_within,
    _open_bulks,
    _too_deep,
    _wire,
)
from ._resp import _SMALL_INTS, DEFAULT_LIMITS, NEED_DATA, Limits, NeedData, Reply, _parse_int

__all__ = ["FAST_MAX", "HOLD_COUNT", "HiredisDecoder"]

#: The longest chunk the exact shortcuts take, and trusted whole when it ends a line.
FAST_MAX: Final = 4096


class HiredisDecoder(Framer):
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
        "_error",
        "_fast_max",
        "_gets",
        "_has_data",
        "_pending",
        "_plain_limits",
        "_quiet",
        "_reader",
        "_ready",
        "next_reply",
    )

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(limits)
        # The error raised by `next_reply`, once raised: every later call raises it again.
        self._error: RemoteProtocolError | None = None
        # An error the framer met in `feed`, raised once the replies before it are taken.
        self._pending: RemoteProtocolError | None = None
        # Between replies, nothing failed: `feed` may take the exact shortcuts.
        self._quiet = True
        # Replies a trusted run took out of hiredis, oldest first.
        self._ready: deque[Reply] = deque()
        # While `next_reply` hands out a trusted run's replies at C speed: those not taken.
        self._chained: Iterator[Reply] | None = None
        self._new_reader()
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
            if size == 4 and self._plain_limits:
                count = _COUNTS.get(data)
                if count is not None:  # an array header alone: its elements come next
                    self._stack.append(count)
                    self._feed(data)
                    self._quiet = False
                    return
            if (
                data == _OK_LINE
                or (self._plain_limits and _bulks(data))
                or data in _NIL_LINES
                or self._one_line(data)
            ):
                self._feed(data)
                return
            if self._plain_limits:
                owed = _open_bulks(data)
                if owed:  # the start of an array of bulk strings: the rest comes next
                    self._stack.append(owed)
                    self._feed(data)
                    self._quiet = False
                    return
                if self._verified(data):
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
            elif (
                self._stack
                and 2 < size <= self._fast_max
                and self._plain_limits
                and self._pending is None
                and self._error is None
            ):
                # A server that writes each element of an array on its own: a chunk that is
                # one short bulk string, its header, or the rest of its payload.
                done = False
                if skip:
                    if skip == size and data.endswith(_CRLF):
                        self._skip = 0
                        done = True
                elif data[0] == _DOLLAR and not self._line:
                    head, _, rest = data.partition(_CRLF)
                    length = _BULK_HEADS.get(head)
                    if length is not None:
                        if len(rest) == length + 2 and rest.endswith(_CRLF):
                            done = True
                        elif not rest and data.endswith(_CRLF):  # its payload comes next
                            self._out(data, 0, size)
                            self._skip = length + 2
                            self._cr_ok = True
                            return
                if done:
                    stack = self._stack
                    if stack[-1] > 1 and self._hold_level < 0:
                        stack[-1] -= 1
                        self._feed(data)
                    else:
                        self._close_element(data, 0, size)
                        self._quiet = not stack
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
        exactly that reply's canonical encoding (then the pure decoder reads it the same), or
        keep the chunk with hiredis if it is the start of one reply, as the framer walks it
        (`Framer._frame_fed`: where it refuses the bytes, so does this decoder); otherwise
        hiredis is replaced by a fresh reader and False returned."""
        if (
            self._has_data()
            or data[0] in _RESP3_BYTES
            or self._big_array(data) is not None
            or (_any_resp3_type(data, 0, len(data)) and _AGGREGATE(data) is not None)
        ):
            return False  # (the screen: no header hiredis could allocate much for)
        self._feed(data)
        failed = False
        try:
            reply = self._gets()
        except Exception:  # hiredis's own errors too (a RESP3 map with a list for a key)
            self._error = None  # the hook's: the framer will find it, at the right reply
            reply = NEED_DATA
            failed = True
        if reply is NEED_DATA:
            # The start of a reply (a server that writes it in parts): hiredis keeps it if the
            # framer, walking the same bytes, ends inside that reply too (it checks them all).
            if (
                not failed
                and data[0] != _MINUS
                and data.find(b"\r\n-") < 0
                and not self._raw_errors
            ):
                try:
                    if self._frame_fed(data):
                        self._quiet = False
                        return True
                except RemoteProtocolError as exc:
                    # hiredis has bytes past the error, but no reply ends in them.
                    self._stop(exc)
                    self._quiet = False
                    return True
        elif not self._has_data() and _wire(reply, data[0], self._limits.max_depth) == data:
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

    # -- after the framer failed ------------------------------------------------------------

    def _stop(self, error: RemoteProtocolError) -> None:
        """The framer met `error`: what was walked before it stays with hiredis, the rest goes."""
        if self._chained is not None:
            self._unchain()
        self._pending = error
        self._reset_walk()
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
