"""A RESP2 reply decoder running on ``hiredis.Reader``, with the pure decoder's limits.

Owns: the adapter between hiredis-py 3.x and the `Decoder` API (`feed`, `next_reply`,
`has_partial`, `limits`).  Must not know: okq commands, sockets, clocks.

Speed: while nothing suspicious arrives, `next_reply` *is* the bound ``hiredis.Reader.gets``
(``notEnoughData=NEED_DATA``, error replies built by a ``replyError`` hook, protocol errors raised
as `RemoteProtocolError` by a ``protocolError`` hook), so a reply costs exactly what raw hiredis
costs.  All checking happens in `feed`:

* **Known bulk payloads are not looked at.**  Where the decoder knows an element starts (the
  start of the stream, the end of a skipped payload, or any chunk boundary at which hiredis has
  consumed everything), it reads ``$<n>`` headers of bulk strings of at least `_BIG_BULK` bytes
  itself and hands the next ``n + 2`` bytes to hiredis unseen: a chunk inside such a payload
  costs one comparison in `feed`.  Fed byte by byte, a LF that ends a short plain line hands it
  to hiredis at once, and a short ``$<n>`` header at a known element start sets the skip too.
* **Everything else is searched for hazards** with literal-led regexes (CPython's ``re`` skips
  to the lead byte at C speed): ``*`` followed by as many digits as ``max_array_length`` has,
  or starting ``max_depth + 1`` array headers in a row; ``$`` followed by as many digits as
  ``max_bulk_length`` has; a RESP3 aggregate byte (``~ > |``) followed by a digit; and, only in
  chunks that are not pure ASCII, an error line holding a byte >= 0x80.  The bytes after the
  last CR LF are held back, so a line that runs past ``max_line_length`` never reaches hiredis.
* **One reply per feed takes one check.**  In the steady state (nothing held back or pending), a
  chunk of at most ``min(4096, max_line_length)`` ASCII bytes ending with CR LF goes to hiredis
  after a few C-level calls (``translate`` folding ``$`` into ``*`` and deleting ``~ > |``, one
  ``*``-led regex over the union of the hazards above, plus big bulk headers and an array header
  ending the chunk).  Anything it finds, however harmless, takes the full path above, so the
  outcome is the same; the check is what makes a small reply cheaper than the pure decoder.

A token found this way may be payload (a bulk string can hold ``\\r\\n*123456789``).  It is
resolved exactly: hiredis is fed up to the token and drained; if hiredis then has unread bytes
it is inside an element that covers the token (data), otherwise the token starts an element and
the pure decoder's rule applies.  A token not right after a CR LF is resolved at the start of
its line first: if that line is an element, the token is inside it (data).

Where hiredis and the pure `Decoder` differ (also in ``docs/codec.md``; each is pinned by a test
in ``tests/proto/test_hiredis.py``):

* **Limits** are the same and are refused before hiredis allocates anything of that size.
  hiredis allocates an array header's list at once (``*2147483648`` asks for 16 GiB; so do the
  RESP3 ``~ > |`` headers), which is why those headers are searched for in every byte that is
  not known payload.
* **Nesting deeper than ``max_depth``** is refused when the extra levels start as a run of array
  headers (``*1\\r\\n*1\\r\\n...``).  Nesting through later elements
  (``*2\\r\\n:1\\r\\n*2\\r\\n:1\\r\\n...``) is accepted up to hiredis's own cap of 1024 levels,
  beyond which hiredis raises (memory stays bounded: one small list per level).
* **The CR LF after a bulk payload is not checked** (``$3\\r\\nabcXY`` reads as ``b"abc"``).  An
  element that starts right after such bad bytes is refused if it is a header (it cannot start
  there in a valid stream); anything else after it is only guarded against allocation.
* **RESP3 scalar types** (``_ , # ( = %``, none of which allocates by a count): hiredis
  parses them (``_`` reads as ``None``, ``,1.5`` as ``1.5``, ``#t`` as ``True``, ``(1`` and
  ``=`` as bytes, ``%`` as a dict); the pure decoder refuses them.  okq servers never send
  them.  RESP3 aggregates (``~ > |``) are refused by both.
* Error replies: hiredis decodes the message as UTF-8 with ``replace``; error lines with bytes
  >= 0x80 are found in `feed` and their exact bytes handed to the ``replyError`` hook.
* Where hiredis is *stricter* (a simple string containing CR or LF, integers with leading
  zeros, ``-0``, or outside 64 bits) the pure decoder applies the same rules, so both refuse.

Use the pure backend (``make_decoder("python")``) to be strict about malformed streams.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from typing import Any, Final, cast

import hiredis

from ._errors import ErrorReply, RemoteProtocolError
from ._resp import DEFAULT_LIMITS, NEED_DATA, Limits, NeedData, Reply

__all__ = ["HiredisDecoder"]

_CRLF: Final = b"\r\n"
_DOLLAR: Final = 36  # ord("$")
_STAR: Final = 42  # ord("*")
_MINUS: Final = 45  # ord("-")
_LINE_KINDS: Final = (43, 58)  # ord("+"), ord(":")

# Bulk strings at least this long, met where an element is known to start, are skipped unseen.
_BIG_BULK: Final = 4096

# RESP3 aggregate headers: hiredis allocates a list for their count, as for "*".
_AGGREGATE: Final = re.compile(rb"[~>|][-0-9]")
_AGGREGATE_BYTES: Final = (b"~", b">", b"|")
# An error line that hiredis would decode lossily.
_ERROR_LINE: Final = re.compile(rb"\r\n-[^\r\n]*[\x80-\xff]")
_STREAK: Final = re.compile(rb"\*[1-9][0-9]*\r\n")
# The one-check path of `feed` folds "$" into "*" and deletes "~ > |" (a length change tells).
_FOLD: Final = bytes.maketrans(b"$", b"*")
_AGGREGATE_TYPES: Final = b"~>|"
_HEADER_CR: Final = re.compile(rb"\*[1-9][0-9]*\r")  # an array header line before its LF
_INT64_MAX: Final = 2**63 - 1


def _length(digits: bytes | bytearray) -> int | None:
    """A non-negative RESP length as hiredis reads it (no sign, no leading zero), else None."""
    if not digits.isdigit() or (digits[:1] == b"0" and len(digits) > 1):
        return None
    value = int(digits)
    return value if value <= _INT64_MAX else None


class HiredisDecoder:
    """An incremental RESP2 reply decoder on ``hiredis.Reader``, same API and limits as `Decoder`.

    Feed bytes in any chunking with `feed`; take complete replies out, one per call, with
    `next_reply` (returns `NEED_DATA` when the bytes so far end inside a reply).  Error replies
    are `ErrorReply` values.  After a protocol error every call raises `RemoteProtocolError`.

    Args:
        limits: bounds on lengths and nesting (`Limits`), enforced before hiredis allocates.

    Attributes:
        next_reply: parse and return the next complete reply, or `NEED_DATA` (see
            `Decoder.next_reply`).  An attribute, so that it can be ``hiredis.Reader.gets``
            itself while nothing needs checking.
    """

    next_reply: Callable[[], Reply | NeedData]

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._error: RemoteProtocolError | None = None
        # Exact bytes of error lines with non-ASCII bytes, in stream order (see _reply_error).
        self._raw_errors: deque[bytes] = deque()
        self._reader = hiredis.Reader(
            protocolError=self._protocol_error,
            replyError=cast(Any, self._reply_error),  # returns a value, not an exception
            notEnoughData=NEED_DATA,
        )
        # hiredis-py's stub types feed() as taking bytes only; it takes any buffer.
        self._feed = cast("Callable[..., None]", self._reader.feed)
        self._gets: Callable[[], Reply | NeedData] = self._reader.gets
        self._has_data: Callable[[], bool] = self._reader.has_data
        array_digits = len(str(limits.max_array_length))
        self._star = re.compile(
            rb"\*[0-9](?:[0-9]{%d}|[0-9]*+\r\n(?:\*[1-9][0-9]*+\r\n){%d}\*[1-9])"
            % (array_digits - 1, limits.max_depth - 1)
        )
        self._dollar = re.compile(rb"\$[0-9]{%d}" % len(str(limits.max_bulk_length)))
        # A range shorter than this holds no such header and no run of them.
        self._short = min(array_digits + 1, len(str(limits.max_bulk_length)) + 1)
        self._short = min(self._short, 4 * limits.max_depth + 2)
        self._deep_run = re.compile(rb"(?:\*[1-9][0-9]*\r\n){%d}\*[1-9]" % limits.max_depth)
        # At most max_depth + 1 array header lines, so the match stays small.
        self._lead = re.compile(rb"(?:\*[1-9][0-9]*\r\n){0,%d}" % (limits.max_depth + 1))
        # Bytes of a bulk payload (and its CR LF) known to come next; -1 once failed.
        self._skip = 0
        # The first byte after the tail's CR LF starts an element (so headers can be read).
        self._sync = True
        # Normal mode: a CR LF (virtual at the start of the stream) followed by the bytes after
        # it, which hiredis has not been given yet: holding them back bounds lines before
        # hiredis buffers them.  Payload mode (a long run known to be bulk payload, all given to
        # hiredis): just the last byte, to see a CR LF split across two chunks.
        self._tail = bytearray(_CRLF)
        self._payload = False
        # Array header lines in a row at the end of what hiredis has been given.
        self._streak = 0
        # Bytes (starting with a CR LF) held back while the token after that CR LF is decided.
        self._held = bytearray()
        self._deep = False  # the held token is the (max_depth + 1)th array header in a row
        # Offset in the held line of a token that is not at its start (-1: none), and whether
        # the held token itself follows something other than a CR LF.
        self._inner = -1
        self._bare = False
        # Nothing held, not in payload mode, not failed: a byte other than LF only extends the
        # tail (the fast path for tiny chunks).
        self._plain = True
        # Longest tail (CR LF included) that cannot yet be an over-long line.
        self._max_tail = limits.max_line_length + 4
        # The one-check path of `feed` (see there) is open: nothing held, no payload to skip or
        # run to watch, no bytes after the tail's CR LF, no array headers in a row, not failed.
        # Set only at the end of `feed`'s full path, which checks all of that; cleared by
        # `feed` whenever a chunk takes the full path, and by `_hold`, `_fail` and the hook.
        self._clean = True
        # Longest chunk for that path: each line within max_line_length, no big bulk complete.
        self._fast_max = min(_BIG_BULK, limits.max_line_length)
        # What that path refuses, on a chunk folded by _FOLD: "*" or "$" followed by as many
        # digits as the smallest of the limits and _BIG_BULK has (covering `_star`, `_dollar`
        # and `_walk`), a run of max_depth + 1 array headers (`_star`; unrolled, as sre's
        # group repeat is slow), or a header line other than "*0" ending the chunk (a run may go
        # on in the next chunk: `_streak`).  Each "*" in the chunk costs a few tens of ns.
        digits = min(array_digits, len(str(limits.max_bulk_length)), len(str(_BIG_BULK)))
        header = rb"\*[1-9][0-9]*+\r\n"
        run = (
            header * (limits.max_depth - 1)
            if limits.max_depth <= 16
            else (rb"(?:%s){%d}" % (header, limits.max_depth - 1))
        )
        self._risky = re.compile(
            rb"\*[0-9](?:[0-9]{%d}|[0-9]*+\r\n(?:\Z(?<!\*0\r\n)|%s\*[1-9]))" % (digits - 1, run)
        ).search
        self.next_reply = self._gets

    @property
    def limits(self) -> Limits:
        """The limits this decoder enforces."""
        return self._limits

    # -- hiredis hooks ----------------------------------------------------------------------

    def _protocol_error(self, message: str) -> RemoteProtocolError:
        # hiredis calls this, then raises type(result)(message): record it to make it sticky.
        error = RemoteProtocolError(f"hiredis: {message}")
        if self._error is None:
            self._error = error
            self._skip = -1
            self._plain = False
            self._clean = False
        return error

    def _reply_error(self, message: str) -> ErrorReply:
        raw = self._raw_errors
        if raw and raw[0].decode("utf-8", "replace") == message:
            return ErrorReply(raw.popleft())
        return ErrorReply(message.encode("utf-8"))

    # -- public API -------------------------------------------------------------------------

    def has_partial(self) -> bool:
        """True when bytes of an incomplete reply are buffered.

        hiredis does not tell whether it is inside an array whose received elements are all
        parsed, so that case reads as False (a client knows a reply is owed from its own queue).
        """
        if self._held or self._skip > 0 or (not self._payload and len(self._tail) > 2):
            return True
        return bool(self._has_data())

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes (copied; parsing happens in `next_reply`).

        Raises:
            RemoteProtocolError: if the decoder already failed.
        """
        size = len(data)
        if size <= self._skip:  # all inside a known bulk payload
            self._skip -= size
            self._feed(data)
            return
        if self._clean:
            # One check for what a client gets per request: a short chunk of whole lines.  It
            # goes to hiredis at once if the full path below would find nothing to decide and
            # hand hiredis all of it: no line over the limit (none is longer than the chunk),
            # nothing after the last CR LF, ASCII (no error line to keep exact), no RESP3
            # aggregate header, nothing `_risky` finds.  The state stays clean.
            if (
                type(data) is bytes
                and size <= self._fast_max
                and data[-2:] == b"\r\n"
                and data.isascii()
            ):
                folded = data.translate(_FOLD, _AGGREGATE_TYPES)
                if (len(folded) == size or _AGGREGATE.search(data) is None) and (
                    self._risky(folded) is None
                ):
                    self._feed(data)
                    self._sync = False  # the chunk may end inside an element
                    return
            self._clean = False  # set again where the full path below ends
        if size == 1 and self._plain:
            tail = self._tail
            if data != b"\n":  # cannot end a line: extend the tail
                tail += data
                if len(tail) <= self._max_tail:
                    return
                self._hold(tail, 2, 2)
                return
            if len(tail) <= self._short and tail[-1] == 13 and self._short_line(tail):
                return
        if self._error is not None:
            raise self._error
        if self._held:
            self._held += data
            return
        self._take(data if type(data) is bytes else bytes(data))
        self._clean = not (
            self._held
            or self._skip
            or self._payload
            or self._streak
            or len(self._tail) > 2
            or self._error is not None
        )

    # -- internals --------------------------------------------------------------------------

    def _fail(self, message: str) -> RemoteProtocolError:
        self._error = RemoteProtocolError(message)
        self._held = bytearray()
        self._skip = -1
        self._plain = False
        self._clean = False
        self.next_reply = self._failed
        return self._error

    def _failed(self) -> Reply | NeedData:
        assert self._error is not None
        raise self._error

    def _too_long(self, run: int) -> bool:
        # A run without CR LF longer than this cannot be a line within the limit, even if its
        # last byte is the CR of a CR LF still on its way (type byte + line + CR).
        return run > self._limits.max_line_length + 2

    def _short_line(self, tail: bytearray) -> bool:
        """A LF ends the short line held in `tail`: give it to hiredis if it is plainly safe.

        Too short for a count of enough digits; safe unless it is a RESP3 aggregate, an error
        line with bytes >= 0x80 or one array header too many in a row (those take `_take`).  At
        a known element start a bulk header also sets the payload to skip.
        """
        kind = tail[2]  # the tail holds at least its CR LF and the line's CR
        # hiredis consumed all it was given: the held line starts an element.
        sync = self._sync or not self._has_data()
        length = None
        if kind == _STAR:
            if _HEADER_CR.fullmatch(tail, 2) is None:
                self._streak = 0
            elif self._streak >= self._limits.max_depth:
                return False
            else:
                self._streak += 1
        elif kind == _DOLLAR:
            self._streak = 0
            length = _length(tail[3:-1]) if sync else None
            sync = False
        elif kind in _LINE_KINDS or (kind == _MINUS and tail.isascii()):
            self._streak = 0
        else:
            return False
        tail += b"\n"
        self._feed(tail, 2, len(tail) - 2)
        del tail[2:]
        if length is not None:  # the payload and its CR LF come next, then an element
            self._skip = length + 2
            sync = True
        self._sync = sync
        return True

    def _take(self, data: bytes) -> None:
        """Check new bytes (nothing held) and give hiredis everything that is safe."""
        skip = self._skip
        if skip > 0:  # a skipped payload ends inside `data`: an element starts after it
            self._feed(data, 0, skip)
            data = data[skip:]
            self._skip = 0
            self._sync = True
            self._streak = 0
        elif not self._sync and len(self._tail) == 2 and not self._payload:
            # hiredis consumed all it was given: the next byte starts an element.
            self._sync = not self._has_data()
        if self._sync and not self._payload:
            if len(self._tail) > 2:
                data = bytes(self._tail[2:]) + data
                self._tail = bytearray(_CRLF)
            data = self._walk(data)
            if not data:
                return
        self._scan(data)

    def _walk(self, data: bytes) -> bytes:
        """At an element start: skip big bulk strings; return the bytes from the first other
        element on (empty when all of `data` went to hiredis)."""
        pos = 0
        end = len(data)
        while pos < end and data[pos] == _DOLLAR:
            line_end = data.find(_CRLF, pos, pos + 24)  # a valid bulk header is short
            length = _length(data[pos + 1 : line_end]) if line_end > pos else None
            if length is None or length < _BIG_BULK or length > self._limits.max_bulk_length:
                break  # not a big bulk within the limit: the scan decides
            stop = line_end + 4 + length
            if stop > end:  # the payload goes on past this chunk
                self._feed(data, 0, end)
                self._skip = stop - end
                self._streak = 0
                return b""
            pos = stop
        if pos:
            self._feed(data, 0, pos)
            self._streak = 0
            data = data[pos:]
        return data

    def _token(self, buf: bytearray, start: int, cut: int) -> int:
        """Where the first possible hazard in ``buf[start:cut]`` starts (`cut` if none)."""
        at = cut
        if cut - start >= self._short:
            for pattern in (self._star, self._dollar):
                match = pattern.search(buf, start, cut)
                if match is not None and match.start() < at:
                    at = match.start()
        if any(buf.find(byte, start, at) >= 0 for byte in _AGGREGATE_BYTES):
            match = _AGGREGATE.search(buf, start, at)
            if match is not None:
                at = match.start()
        if not buf.isascii():
            match = _ERROR_LINE.search(buf, max(start - 2, 0), cut)
            if match is not None and match.start() + 2 < at:
                at = match.start() + 2
        return at

    def _scan(self, data: bytes) -> None:
        tail = self._tail
        if not self._payload and _CRLF not in data and not (tail[-1] == 13 and data[:1] == b"\n"):
            tail += data  # the line after the last CR LF goes on
            if self._too_long(len(tail) - 2):
                self._hold(tail, 2, 2)
            return
        buf = tail + data
        cut = buf.rfind(_CRLF) + 2
        if self._payload:
            fed = len(tail)
            if cut < 2:  # still inside the payload run: hiredis may have it all
                self._feed(buf, fed, len(buf) - fed)
                self._tail = buf[-1:]
                return
            self._payload = False
            self._plain = True
            self._streak = 0
            lead = -1
            bare = True  # the bytes before the first CR LF are payload
        else:
            fed = 2
            lead = 0
            bare = False
        at = self._token(buf, fed, cut)
        if cut - fed > self._limits.max_line_length:
            at = min(at, self._long_line(buf, fed, at))
        if at < cut:
            line = buf.rfind(_CRLF, 0, at) if at < 2 or buf[at - 2 : at] != _CRLF else at - 2
            if line < 0 or (bare and buf.find(_CRLF, 0, at) < 0):
                self._hold(buf, at, fed, bare=True)  # inside the leading payload run
            elif line + 2 < at:
                self._hold(buf, line + 2, fed, inner=at - line - 2)
            else:
                self._hold(buf, at, fed)
            return
        # Array headers in a row across chunks (a run inside one chunk matches the pattern).
        if lead == 0:
            streak = self._lead.match(buf, 2)
            lead = streak.end() if streak is not None else 2
        if self._streak and lead > fed:
            lines = buf.count(_CRLF, fed, lead)
            if self._streak + lines > self._limits.max_depth:
                self._deep = True
                self._hold(buf, fed, fed)
                return
        if cut > fed:
            self._feed(buf, fed, cut - fed)
            self._sync = False
        self._streak = self._count_streak(buf, fed, cut, lead)
        self._tail = buf[cut - 2 :]
        if self._too_long(len(self._tail) - 2):
            self._hold(self._tail, 2, 2)

    def _long_line(self, buf: bytearray, fed: int, cut: int) -> int:
        """The start of the first line in ``buf[:cut]`` longer than the limit, else `cut`.

        A line that long holds a whole step-sized slice of a grid free of CR LF, so a handful of
        C-speed searches per chunk find the candidates; only those are measured.
        """
        limit = self._limits.max_line_length
        step = max((limit + 2) // 3, 1)
        pos = fed
        while pos < cut - 2:
            if buf.find(_CRLF, max(pos - 1, 0), pos + step + 1) < 0:
                start = buf.rfind(_CRLF, 0, pos)
                end = buf.find(_CRLF, pos)
                if start >= 0 and end - start - 2 > limit + 1:
                    return start + 2
            pos += step
        return cut

    def _count_streak(self, buf: bytearray, fed: int, cut: int, lead: int) -> int:
        """Array header lines in a row ending at `cut` (continuing the old streak if unbroken)."""
        if lead >= cut:
            return self._streak + buf.count(_CRLF, fed, cut)
        streak = 0
        end = cut - 2
        while end > fed:
            start = buf.rfind(_CRLF, 0, end) + 2
            if _STREAK.fullmatch(buf, start, end + 2) is None:
                break
            streak += 1
            end = start - 2
        return streak

    def _hold(
        self, buf: bytearray, at: int, fed: int, *, inner: int = -1, bare: bool = False
    ) -> None:
        """Give hiredis ``buf[fed:at]``; hold the rest until the token at `at` is decided."""
        if at > fed:
            self._feed(buf, fed, at - fed)
        if at >= 2 and buf[at - 2 : at] == _CRLF:
            self._held = buf[at - 2 :]
        else:  # a token not after a CR LF: give it a virtual one, without a second copy
            self._held = bytearray(_CRLF)
            with memoryview(buf) as view:
                self._held += view[at:]
        self._inner = inner
        self._bare = bare
        self._tail = bytearray(_CRLF)
        self._payload = False
        self._plain = False
        self._clean = False
        self._sync = False
        self._streak = 0
        self.next_reply = self._slow

    def _slow(self) -> Reply | NeedData:
        """`next_reply` while a token is held: drain hiredis, then decide the token."""
        while True:
            if self._error is not None:
                raise self._error
            reply = self._gets()
            if reply is not NEED_DATA or not self._held:
                return reply
            held = self._held
            in_element = bool(self._has_data())
            if in_element and self._inner > 0:
                # The line start is inside a payload: decide the token within it next.
                self._feed(held, 2, self._inner)
                self._held = bytearray(_CRLF) + held[2 + self._inner :]
                self._inner = -1
                self._bare = True
                continue
            if self._bare and not in_element:
                # An element starts where a valid stream cannot have one: the bytes after a
                # bulk payload were not CR LF.
                raise self._fail("bulk string payload not followed by CR LF")
            if not self._resolve(held, in_element):
                return NEED_DATA  # the token's line is not complete yet
            self._held = bytearray()
            self._plain = True
            self.next_reply = self._gets
            self._deep = False
            self._inner = -1
            self._bare = False
            end = held.find(_CRLF, 2)
            if end < 0:  # a payload run with no line end yet
                self._feed(held, 2, len(held) - 2)
                self._tail = held[-1:]
                self._payload = True
                self._plain = False
            else:
                self._feed(held, 2, end)
                self._tail = bytearray(_CRLF)
                # After a line element or an array header, the next byte starts an element.
                self._sync = not in_element and bytes(held[2:3]) in (b"+", b"-", b":", b"*")
                self._take(bytes(held[end + 2 :]))
            if self.next_reply is not self._slow:
                return self.next_reply()

    def _resolve(self, held: bytearray, in_element: bool) -> bool:
        """Decide the token after the CR LF that starts `held`.

        Returns:
            True when it is data or passes the pure decoder's rules, False when its line is not
            complete yet.

        Raises:
            RemoteProtocolError: (sticky) where the pure decoder refuses the token.
        """
        if in_element:
            return True
        limits = self._limits
        line_end = held.find(_CRLF, 2)
        line = bytes(held[2:line_end] if line_end >= 0 else held[2:])
        if line_end < 0 and self._too_long(len(line)):
            raise self._fail(f"no line end within {limits.max_line_length} bytes (max_line_length)")
        if line_end >= 0 and len(line) > limits.max_line_length + 1:
            raise self._fail(f"line longer than {limits.max_line_length} bytes")
        if self._deep or (line[:1] == b"*" and self._deep_run.match(held, 2)):
            raise self._fail(f"arrays nested deeper than max_depth {limits.max_depth}")
        if line_end < 0:
            return False
        kind = line[:1]
        if kind in (b"$", b"*"):
            digits = line[1:]
            limit = limits.max_bulk_length if kind == b"$" else limits.max_array_length
            name = "bulk length" if kind == b"$" else "array length"
            numeric = digits[: len(digits) - len(digits.lstrip(b"0123456789"))]
            if len(numeric) > len(str(limit)) or (numeric and int(numeric) > limit):
                raise self._fail(f"{name} {numeric.decode()} exceeds the limit {limit}")
        elif kind in _AGGREGATE_BYTES:
            raise self._fail(f"unknown RESP2 type byte {kind!r}")
        elif kind == b"-" and not line.isascii():
            self._raw_errors.append(line[1:])
        return True
