"""The server role of an okq connection: read requests the way okq reads them, queue replies.

Owns: request framing (protocol doc section 2.1) with its quirks, input limits, the
one-reply-per-request rule and the outbound buffer.
Must not know: what commands mean (`okq_proto._dispatch`), queues (`okq_proto._engine`),
sockets or clocks.

How okq reads (and so how this reads):

* The first byte of a value picks its type: ``*`` array, ``$`` bulk, ``+`` simple string,
  ``-`` error, ``:`` integer; anything else closes the connection without a reply (inline
  commands included).
* A header line runs to the next LF; its value is the bytes between the type byte and the
  line's last two bytes (assumed CR LF, only the LF is checked), so ``*1X\\n`` is ``*1``.
* Counts and lengths are signed 64-bit decimals (``+``/``-`` allowed); a value that does not
  parse closes the connection.  Negative bulk length = nil, negative count = nil array.
* A bulk payload is followed by two bytes that are not checked.
* Top-level arrays of bulk/simple strings are commands; arrays with any other element are
  ``invalid``; nil arrays and non-array values are ignored (no event at all).

Defect D1 of the real server (a header shorter than 3 bytes or an absurd length crashes the
whole process) becomes: close this connection only.  Limits are constructor arguments, so a
peer can neither stream an endless header nor make us buffer a huge declared value.

The query-buffer cap (``max_query_bytes``) is Redis's ``client-query-buffer-limit`` (1 GiB by
default there too): the bytes one request holds while it is being read (its arguments so far
plus its unparsed input) may not pass it.  Redis then closes the client without a reply
("Closing client that reached max query buffer length"); so does this, and a top-level
argument whose announced length would take its request past the cap closes at its header.
The real okq has no such cap; below it, nothing changes.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Final, final

from okq_proto._errors import LocalProtocolError
from okq_proto._machine import SendData, step
from okq_proto._resp import NEED_DATA, NeedData

__all__ = [
    "DEFAULT_MAX_ARRAY_COUNT",
    "DEFAULT_MAX_BULK_BYTES",
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_MAX_NESTING",
    "DEFAULT_MAX_QUERY_BYTES",
    "CloseWithoutReply",
    "CommandReceived",
    "InvalidCommandReceived",
    "PeerClosed",
    "Request",
    "ServerConnection",
    "ServerState",
]

DEFAULT_MAX_BULK_BYTES: Final = 512 * 1024 * 1024
"""Largest bulk string accepted (Redis's own proto-max-bulk-len)."""
DEFAULT_MAX_ARRAY_COUNT: Final = 1024 * 1024
"""Largest array count accepted, at any nesting level."""
DEFAULT_MAX_LINE_BYTES: Final = 1024 * 1024
"""Longest header line (type byte to LF); simple strings carry their value in it."""
DEFAULT_MAX_NESTING: Final = 64
"""Deepest nesting of arrays inside a request."""
DEFAULT_MAX_QUERY_BYTES: Final = 1024 * 1024 * 1024
"""Most bytes one request may hold while it is read (Redis's client-query-buffer-limit)."""

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_TYPE_BYTES: Final = frozenset(b"*$+-:")


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class CommandReceived:
    """A complete request: an array whose elements were all bulk or simple strings.

    ``argv[0]`` is the command name as sent; an empty array gives ``argv == ()``.
    """

    argv: tuple[bytes, ...]


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidCommandReceived:
    """A complete request array holding a non-string element (okq: ``-ERR invalid command``)."""


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class CloseWithoutReply:
    """The input cannot be read on: close the connection without sending anything more.

    Replies already queued for earlier requests are still to be sent first.
    ``reason`` is for logs only.
    """

    reason: str


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class PeerClosed:
    """The client closed its side (after any complete requests it sent were returned)."""


Request = CommandReceived | InvalidCommandReceived
"""Events that must be answered with exactly one `ServerConnection.send_reply` call."""


class ServerState(enum.Enum):
    """Where a `ServerConnection` is."""

    IDLE = enum.auto()  # reading the next request
    AWAITING_REPLY = enum.auto()  # a request was returned; its reply has not been sent yet
    CLOSED = enum.auto()  # EOF seen or input unreadable; next_event repeats the final event


class _Value(enum.Enum):
    # What a finished value means to its parent array.
    STRING = enum.auto()
    OTHER = enum.auto()


class _Malformed(Exception):
    pass


@final
class ServerConnection:
    """Sans-I/O server side of one okq connection.

    Feed bytes with `receive_data` / `receive_eof`, take requests from `next_event`, answer
    each with `send_reply`, and write out `data_to_send`.

    Args:
        max_bulk_bytes: longer bulk strings close the connection (D1).
        max_array_count: larger array counts close the connection (D1).
        max_line_bytes: a header line longer than this (LF not found within it) closes.
        max_nesting: arrays nested deeper than this close the connection.
        max_query_bytes: a request holding more than this while it is read (its arguments
            so far plus its unparsed bytes) closes the connection, as Redis closes a client
            over its ``client-query-buffer-limit``.
    """

    def __init__(
        self,
        *,
        max_bulk_bytes: int = DEFAULT_MAX_BULK_BYTES,
        max_array_count: int = DEFAULT_MAX_ARRAY_COUNT,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_nesting: int = DEFAULT_MAX_NESTING,
        max_query_bytes: int = DEFAULT_MAX_QUERY_BYTES,
    ) -> None:
        self._max_bulk = max_bulk_bytes
        self._max_count = max_array_count
        self._max_line = max_line_bytes
        self._max_nesting = max_nesting
        self._max_query = max_query_bytes
        self._buf = bytearray()
        self._eof = False
        self._state = ServerState.IDLE
        self._final: CloseWithoutReply | PeerClosed | None = None
        self._out: list[bytes] = []
        # Parse state of the request being read; kept across NEED_DATA (resume, not restart).
        self._remaining: list[int] = []  # elements still due per open array, outermost first
        self._args: list[bytes] | None = []  # top-level string elements; None once invalid
        self._held = 0  # bytes in self._args (the query-buffer cap counts them)
        self._skip = 0  # payload + trailer bytes of a bulk being thrown away
        self._scan = 0  # where the LF search resumes

    @property
    def state(self) -> ServerState:
        """The current `ServerState`."""
        return self._state

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes (copied; nothing is parsed here).

        Raises:
            LocalProtocolError: after `receive_eof`.
        """
        if self._eof:
            raise LocalProtocolError("receive_data after receive_eof")
        self._buf += data

    def receive_eof(self) -> None:
        """Note that the peer closed its side.  Idempotent."""
        self._eof = True

    def data_to_send(self) -> bytes:
        """Take every queued reply byte (``b""`` if none)."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def send_reply(self, data: bytes) -> None:
        """Queue the complete reply to the request last returned by `next_event`.

        Args:
            data: the reply's wire bytes (see `okq_proto._dispatch` for okq's replies).

        Raises:
            LocalProtocolError: no request is waiting for a reply.
        """
        if self._state is not ServerState.AWAITING_REPLY:
            raise LocalProtocolError(f"send_reply while {self._state.name}: no request to answer")
        self._out.append(bytes(data))
        self._state = ServerState.IDLE

    def step(
        self, now: float | None = None
    ) -> SendData | Request | CloseWithoutReply | PeerClosed | NeedData:
        """What to do next (the contract of every machine, `okq_proto.Machine`): `SendData`
        with the replies queued, else `next_event`'s answer.  `now` is accepted for the
        contract's sake (this machine keeps no time)."""
        return step(self, now)  # type: ignore[return-value]  # one of those, by construction

    def _next_for_step(self, now: float | None) -> object:
        return self.next_event()

    def next_deadline(self) -> float | None:
        """None: a server connection keeps no timers."""
        return None

    def allowed_silence_s(self) -> float:
        """``inf``: a client may stay silent between requests as long as it likes (okq sets
        no idle timeout); bound idle connections in the driver if you want to."""
        return math.inf

    def next_event(self) -> Request | CloseWithoutReply | PeerClosed | NeedData:
        """Parse up to the next request.

        Returns:
            a `Request` (legal only in IDLE; the state becomes AWAITING_REPLY); `NEED_DATA`
            when more bytes must arrive; `CloseWithoutReply` or `PeerClosed` once the
            connection is finished (returned again on every later call).

        Raises:
            LocalProtocolError: called while a returned request still awaits its reply.
        """
        if self._final is not None:
            return self._final
        if self._state is ServerState.AWAITING_REPLY:
            raise LocalProtocolError("next_event while AWAITING_REPLY: send_reply first")
        try:
            event = self._parse()
        except _Malformed as exc:
            return self._finish(CloseWithoutReply(reason=str(exc)))
        if event is NEED_DATA:
            if self._eof:  # a request cut off by EOF is dropped, as okq does
                return self._finish(PeerClosed())
            # Every complete request was returned: what is buffered is the unfinished one.
            if self._held + len(self._buf) > self._max_query:
                return self._finish(CloseWithoutReply(reason="query buffer over the limit"))
            return NEED_DATA
        self._state = ServerState.AWAITING_REPLY
        return event

    # -- parser -------------------------------------------------------------------------------

    def _finish(self, event: CloseWithoutReply | PeerClosed) -> CloseWithoutReply | PeerClosed:
        self._final = event
        self._state = ServerState.CLOSED
        self._buf.clear()
        return event

    def _parse(self) -> Request | NeedData:
        # Loops once per value; every iteration consumes input or returns, so it is bounded by
        # the buffer's size.
        buf = self._buf
        while True:
            if self._skip:
                n = min(self._skip, len(buf))
                del buf[:n]
                self._skip -= n
                if self._skip:
                    return NEED_DATA
                done = self._value_done(_Value.OTHER)
                if done is not None:
                    return done
                continue
            if not buf:
                return NEED_DATA
            if buf[0] not in _TYPE_BYTES:
                raise _Malformed(f"bad type byte {bytes(buf[:1])!r}")
            lf = buf.find(b"\n", self._scan)
            if lf < 0:
                if len(buf) > self._max_line:
                    raise _Malformed("header line too long")
                self._scan = len(buf)
                return NEED_DATA
            if lf + 1 > self._max_line:
                raise _Malformed("header line too long")
            if lf + 1 < 3:  # D1: okq panics on a slice out of range here
                raise _Malformed("header line shorter than 3 bytes")
            kind = buf[0]
            value = bytes(buf[1 : lf - 1])
            if kind == 0x24:  # $ bulk string
                length = self._parse_int(value)
                if length > self._max_bulk:
                    raise _Malformed(f"bulk length {length} over the limit")
                if length < 0:  # nil
                    del buf[: lf + 1]
                    self._scan = 0
                    result = self._value_done(_Value.OTHER)
                elif self._keeping_top_level_string():
                    end = lf + 1 + length
                    if self._held + end + 2 > self._max_query:
                        raise _Malformed(f"bulk length {length} takes the request over the limit")
                    if len(buf) < end + 2:
                        self._scan = lf  # the header is re-read (cheap) once data is in
                        return NEED_DATA
                    payload = bytes(buf[lf + 1 : end])
                    del buf[: end + 2]  # two bytes okq never checks
                    self._scan = 0
                    result = self._value_done(_Value.STRING, payload)
                else:
                    del buf[: lf + 1]
                    self._scan = 0
                    self._skip = length + 2
                    continue
            elif kind == 0x2A:  # * array
                count = self._parse_int(value)
                if count > self._max_count:
                    raise _Malformed(f"array count {count} over the limit")
                del buf[: lf + 1]
                self._scan = 0
                result = self._open_array(count)
            else:
                if kind == 0x3A:  # : integer, must parse
                    self._parse_int(value)
                del buf[: lf + 1]
                self._scan = 0
                string = kind == 0x2B  # + simple string
                result = self._value_done(_Value.STRING if string else _Value.OTHER, value)
            if result is not None:
                return result

    def _keeping_top_level_string(self) -> bool:
        return len(self._remaining) == 1 and self._args is not None

    @staticmethod
    def _parse_int(value: bytes) -> int:
        # Go strconv.ParseInt(s, 10, 64): optional sign, ASCII digits, in int64 range.
        digits = value[1:] if value[:1] in (b"+", b"-") else value
        if not digits or not digits.isdigit() or not digits.isascii():
            raise _Malformed(f"bad integer {value!r}")
        n = int(value)
        if not _INT64_MIN <= n <= _INT64_MAX:
            raise _Malformed(f"integer {value!r} out of range")
        return n

    def _open_array(self, count: int) -> Request | None:
        if not self._remaining:  # a top-level array
            if count < 0:
                return None  # nil array: ignored
            self._args = []
            if count == 0:
                return CommandReceived(argv=())
            self._remaining.append(count)
            return None
        # A nested array makes the request invalid, but it is read to its end.
        if count <= 0:
            return self._value_done(_Value.OTHER)
        if len(self._remaining) >= self._max_nesting:
            raise _Malformed("arrays nested too deep")
        self._args = None
        self._remaining.append(count)
        return None

    def _value_done(self, kind: _Value, payload: bytes = b"") -> Request | None:
        """Account for one finished value; return the request if it completed one."""
        stack = self._remaining
        if not stack:
            return None  # a top-level non-array: ignored
        if len(stack) == 1 and self._args is not None:
            if kind is _Value.STRING:
                self._args.append(payload)
                self._held += len(payload)
            else:
                self._args = None
                self._held = 0
        else:
            self._args = None
            self._held = 0
        while stack:
            stack[-1] -= 1
            if stack[-1]:
                return None
            stack.pop()
            if not stack:
                args = self._args
                self._args = []
                self._held = 0
                if args is None:
                    return InvalidCommandReceived()
                return CommandReceived(argv=tuple(args))
            # a nested array ended: it counts as one element of its parent (already invalid)
        return None  # pragma: no cover - the loop always returns
