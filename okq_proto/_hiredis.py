"""A RESP2 reply decoder running on ``hiredis.Reader``, with the pure decoder's limits and rules.

Owns: the adapter between hiredis-py 3.x and the `Decoder` API (`feed`, `next_reply`,
`has_partial`, `limits`).  Must not know: okq commands, sockets, clocks.

Speed: while nothing suspicious arrives, `next_reply` *is* the bound ``hiredis.Reader.gets``
(``notEnoughData=NEED_DATA``, error replies built by a ``replyError`` hook, protocol errors raised
as `RemoteProtocolError` by a ``protocolError`` hook), so a reply costs exactly what raw hiredis
costs.  All checking happens in `feed`, with C-speed byte searches.

Where hiredis differs from the pure `Decoder`, and what we do (see also ``docs/codec.md``):

* **Limits.**  hiredis has no bulk, array, depth or line limit, and allocates a list for an
  array header up front (``*2147483648`` allocates 16 GiB).  `feed` looks for header-like tokens
  right after a CR LF whose digit count could break ``max_bulk_length`` / ``max_array_length``,
  and for ``max_depth + 1`` array headers in a row; it holds back the bytes after the last CR LF,
  so a line that runs past ``max_line_length`` is caught before hiredis buffers it.
* **RESP3 type bytes** (``_ , # % ~ > | ( =``): hiredis parses them; we refuse them.
* **Error replies**: hiredis decodes the message as UTF-8 with ``replace``.  Error lines with
  bytes >= 0x80 are found in `feed` and their exact bytes are handed to the ``replyError`` hook.
* Where hiredis is *stricter* (a simple string containing CR or LF, integers with leading zeros,
  ``-0``, or outside 64 bits) the pure decoder applies the same rules, so both refuse.

A candidate token may just be payload bytes (a bulk string can contain ``\\r\\n*123456789``).  It
is resolved exactly: hiredis is fed up to the token and drained; if hiredis then has unread bytes
it is inside a bulk payload (it only ever leaves a bulk item unread, because the token follows a
CR LF, which ends any line), so the token is data; otherwise the token starts a RESP element and
the pure decoder's rule applies to it.

Two places stay looser than the pure decoder, because hiredis-py exposes neither its parse
position nor its nesting: it does not check the CR LF after a bulk payload (``$3\\r\\nabcXY``
reads as ``b"abc"``), and nesting deeper than ``max_depth`` is only refused when the extra
levels start as runs of array headers (``*1\\r\\n*1\\r\\n...``); nesting through last
elements (``*2\\r\\n:1\\r\\n*2\\r\\n:1\\r\\n...``) is accepted.  okq servers send neither; use
the pure backend (``make_decoder("python")``) to be strict about malformed streams.
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
# RESP3 type bytes that hiredis parses and RESP2 does not have.
_RESP3: Final = rb"_,#%~>|(="

# Token kinds, by the regex group that matched.
_KIND_RESP3: Final = 1
_KIND_BULK: Final = 2
_KIND_ARRAY: Final = 3
_KIND_ERROR: Final = 4
_KIND_DEEP: Final = 5

_STREAK: Final = re.compile(rb"\*[1-9][0-9]*\r\n")


def _candidate_pattern(limits: Limits) -> re.Pattern[bytes]:
    """One regex for every token at which hiredis could part ways with the pure decoder."""
    bulk_digits = len(str(limits.max_bulk_length))
    array_digits = len(str(limits.max_array_length))
    deep = rb"\*[1-9][0-9]*\r\n" * limits.max_depth
    return re.compile(
        rb"\r\n(?:"
        rb"([" + re.escape(_RESP3) + rb"])"  # 1: RESP3 type byte
        rb"|(\$[0-9]{%d})"
        % bulk_digits  # 2: bulk length that may break the limit
        + rb"|(\*[0-9]{%d})" % array_digits  # 3: array length that may break the limit
        + rb"|(-[^\r\n]*[\x80-\xff])"  # 4: error line that hiredis would decode lossily
        + rb"|("
        + deep
        + rb"\*[1-9])"  # 5: max_depth + 1 array headers in a row
        + rb")"
    )


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
        self._feed = cast("Callable[[bytes | bytearray, int, int], None]", self._reader.feed)
        self._gets: Callable[[], Reply | NeedData] = self._reader.gets
        self._has_data: Callable[[], bool] = self._reader.has_data
        self._pattern = _candidate_pattern(limits)
        # At most max_depth + 1 array header lines, so the match stays small.
        self._lead = re.compile(rb"(?:\*[1-9][0-9]*\r\n){0,%d}" % (limits.max_depth + 1))
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
        if self._held or (not self._payload and len(self._tail) > 2):
            return True
        return bool(self._has_data())

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes (copied; parsing happens in `next_reply`).

        Raises:
            RemoteProtocolError: if the decoder already failed.
        """
        if self._error is not None:
            raise self._error
        if self._held:
            self._held += data
            return
        self._take(data if type(data) is bytes else bytes(data))

    # -- internals --------------------------------------------------------------------------

    def _fail(self, message: str) -> RemoteProtocolError:
        self._error = RemoteProtocolError(message)
        self._held = bytearray()
        self.next_reply = self._failed
        return self._error

    def _failed(self) -> Reply | NeedData:
        assert self._error is not None
        raise self._error

    def _too_long(self, run: int) -> bool:
        # A run without CR LF longer than this cannot be a line within the limit, even if its
        # last byte is the CR of a CR LF still on its way (type byte + line + CR).
        return run > self._limits.max_line_length + 2

    def _take(self, data: bytes) -> None:
        """Check new bytes (nothing held) and give hiredis everything that is safe."""
        tail = self._tail
        if not self._payload and _CRLF not in data and not (tail[-1] == 13 and data[:1] == b"\n"):
            tail += data  # the line after the last CR LF goes on
            if self._too_long(len(tail) - 2):
                self._hold(tail, 0, 2)
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
            self._streak = 0
            lead = -1
        else:
            fed = 2
            lead = 0
        match = self._pattern.search(buf, 0, cut + 64)
        at = match.start() if match is not None and match.start() <= cut - 2 else cut
        if cut - fed > self._limits.max_line_length:
            at = min(at, self._long_line(buf, fed, at))
        if at < cut:
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
                self._hold(buf, fed - 2, fed)
                return
        if cut > fed:
            self._feed(buf, fed, cut - fed)
        self._streak = self._count_streak(buf, fed, cut, lead)
        self._tail = buf[cut - 2 :]
        if self._too_long(len(self._tail) - 2):
            self._hold(self._tail, 0, 2)

    def _long_line(self, buf: bytearray, fed: int, cut: int) -> int:
        """The CR LF before the first line in ``buf[:cut]`` longer than the limit, else `cut`.

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
                    return start
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

    def _hold(self, buf: bytearray, at: int, fed: int) -> None:
        """Give hiredis ``buf[fed:at+2]``; hold the rest until the token after `at` is decided."""
        if at + 2 > fed:
            self._feed(buf, fed, at + 2 - fed)
        self._held = buf[at:]
        self._tail = bytearray(_CRLF)
        self._payload = False
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
            in_payload = bool(self._has_data())
            if not self._resolve(held, in_payload):
                return NEED_DATA  # the token's line is not complete yet
            self._held = bytearray()
            self.next_reply = self._gets
            self._deep = False
            end = held.find(_CRLF, 2)
            if end < 0:  # a payload run with no line end yet
                self._feed(held, 2, len(held) - 2)
                self._tail = held[-1:]
                self._payload = True
            else:
                self._feed(held, 2, end)
                self._tail = bytearray(_CRLF)
                self._take(bytes(held[end + 2 :]))
            if self.next_reply is not self._slow:
                return self.next_reply()

    def _resolve(self, held: bytearray, in_payload: bool) -> bool:
        """Decide the token after the CR LF that starts `held`.

        Returns:
            True when it is payload or passes the pure decoder's rules, False when its line is
            not complete yet.

        Raises:
            RemoteProtocolError: (sticky) where the pure decoder refuses the token.
        """
        if in_payload:
            return True
        limits = self._limits
        line_end = held.find(_CRLF, 2)
        line = bytes(held[2:line_end] if line_end >= 0 else held[2:])
        if line_end < 0 and self._too_long(len(line)):
            raise self._fail(f"no line end within {limits.max_line_length} bytes (max_line_length)")
        if line_end >= 0 and len(line) > limits.max_line_length + 1:
            raise self._fail(f"line longer than {limits.max_line_length} bytes")
        if self._deep:
            raise self._fail(f"arrays nested deeper than max_depth {limits.max_depth}")
        match = self._pattern.match(held)
        kind = match.lastindex if match is not None else None
        if kind == _KIND_RESP3:
            raise self._fail(f"unknown RESP2 type byte {line[:1]!r}")
        if kind == _KIND_DEEP:
            raise self._fail(f"arrays nested deeper than max_depth {limits.max_depth}")
        if kind in (_KIND_BULK, _KIND_ARRAY):
            digits = line[1:]
            limit = limits.max_bulk_length if kind == _KIND_BULK else limits.max_array_length
            name = "bulk length" if kind == _KIND_BULK else "array length"
            numeric = digits[: len(digits) - len(digits.lstrip(b"0123456789"))]
            if len(numeric) > len(str(limit)) or (numeric and int(numeric) > limit):
                raise self._fail(f"{name} {numeric.decode()} exceeds the limit {limit}")
        elif kind == _KIND_ERROR and line_end >= 0:
            self._raw_errors.append(line[1:])
        return line_end >= 0
