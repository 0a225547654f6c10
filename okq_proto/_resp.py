"""RESP2 encoding and incremental decoding.

Owns: the byte format of commands (arrays of bulk strings) and of replies (the five RESP2 types,
nil bulk, nil array, nesting), with limits that keep a hostile peer from making us allocate.
Must not know: okq commands, sockets, clocks.  A decoded reply has the shape hiredis returns:
``bytes | int | None | list[Reply] | ErrorReply``; simple strings and bulk strings both become
`bytes`, nil bulk and nil array both become ``None``.

Decoding is incremental: `Decoder.feed` only appends, `Decoder.next_reply` parses one reply and
keeps every partly built array on a stack, so a large reply arriving in small pieces is parsed
once, never from the start again (linear time).  After a protocol error the decoder is
poisoned: every later call raises the same error.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Union, final

from ._errors import ErrorReply, LocalProtocolError, RemoteProtocolError

__all__ = [
    "NEED_DATA",
    "Arg",
    "Decoder",
    "Limits",
    "NeedData",
    "Reply",
    "encode_command",
    "encode_command_parts",
    "encode_commands",
]


class NeedData(enum.Enum):
    """Returned by ``next_*`` calls when more bytes must arrive first.

    A one-member enum, so that ``if reply is NEED_DATA`` narrows the type for mypy.
    """

    NEED_DATA = enum.auto()


NEED_DATA: Final = NeedData.NEED_DATA

#: A decoded RESP2 reply (the shape hiredis returns).
Reply = Union[bytes, int, None, list["Reply"], ErrorReply]  # noqa: UP007 - recursive alias

#: A command argument: bytes are sent as they are, `str` as UTF-8, `int` in decimal.
Arg = Union[bytes, bytearray, memoryview, str, int]  # noqa: UP007 - runtime alias


@final
@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a peer may make the decoder hold.  A header beyond one is refused before
    anything of that size is allocated.

    Attributes:
        max_bulk_length: largest bulk string accepted (RESP's own limit is 512 MiB).
        max_array_length: most elements in one array.
        max_depth: deepest array nesting (okq replies nest 2 deep; hiredis stops at 7).
        max_line_length: longest ``+``/``-``/``:`` line and longest header line, CR LF excluded.
            This also bounds the bytes buffered while no line end has arrived, so an endless
            line is cut off after this many bytes.
    """

    max_bulk_length: int = 512 * 1024 * 1024
    max_array_length: int = 16 * 1024 * 1024
    max_depth: int = 7
    max_line_length: int = 64 * 1024

    def __post_init__(self) -> None:
        for name in ("max_bulk_length", "max_array_length", "max_depth", "max_line_length"):
            if getattr(self, name) < 1:
                raise LocalProtocolError(f"Limits.{name} must be at least 1")


DEFAULT_LIMITS: Final = Limits()

# Payloads at least this long are not copied into a formatted command: they travel as their
# own part, so that joining the output buffer is their only copy.
_COPY_THRESHOLD: Final = 1024

_FORMATS: dict[int, bytes] = {}


def _format(n: int) -> bytes:
    fmt = _FORMATS.get(n)
    if fmt is None:
        fmt = b"*%d\r\n" % n + b"$%d\r\n%s\r\n" * n
        if len(_FORMATS) < 64:
            _FORMATS[n] = fmt
    return fmt


for _n in range(1, 9):
    _format(_n)


def _arg_bytes(arg: Arg) -> bytes | bytearray | memoryview:
    if isinstance(arg, (bytes, bytearray)):
        return arg
    if isinstance(arg, str):
        return arg.encode("utf-8", "surrogateescape")
    if isinstance(arg, bool):
        raise LocalProtocolError(f"a command argument cannot be a bool: {arg!r}")
    if isinstance(arg, int):
        return b"%d" % arg
    if isinstance(arg, memoryview):
        return arg.cast("B") if arg.format != "B" or arg.ndim != 1 else arg
    raise LocalProtocolError(f"a command argument must be bytes, str or int, not {type(arg)!r}")


def encode_command(args: Sequence[Arg]) -> bytes:
    """Encode one command as a RESP2 array of bulk strings.

    Args:
        args: the command name and its arguments; `bytes`, `str` (UTF-8, surrogateescape) or
            `int` (decimal).  Binary safe: NUL, CR, LF and invalid UTF-8 are sent as they are.

    Returns:
        The command's bytes (a new object; the caller owns it).

    Raises:
        LocalProtocolError: for an empty command or an argument of another type.
    """
    return b"".join(encode_command_parts(args))


def encode_command_parts(args: Sequence[Arg]) -> list[bytes | bytearray | memoryview]:
    """Encode one command as a list of byte strings that concatenate to its RESP2 form.

    Arguments of 1 KiB or more are returned as their own parts, uncopied, so that writing the
    parts with one join (or ``socket.sendmsg``) copies each payload once at most.

    Raises:
        LocalProtocolError: for an empty command or an argument of another type.
    """
    flat: list[Any] = []  # alternating size (int) and data (bytes-like)
    big = False
    for arg in args:
        data = arg if type(arg) is bytes else _arg_bytes(arg)
        size = len(data)
        if size >= _COPY_THRESHOLD:
            big = True
        flat += (size, data)
    if not flat:
        raise LocalProtocolError("a command needs at least its name")
    if not big:
        return [_format(len(flat) >> 1) % tuple(flat)]
    # Large arguments present: small ones are formatted into the head, large ones follow it
    # as their own parts.
    parts: list[bytes | bytearray | memoryview] = []
    head = b"*%d\r\n" % (len(flat) >> 1)
    it = iter(flat)
    for size in it:
        data = next(it)
        if size >= _COPY_THRESHOLD:
            parts += (head + b"$%d\r\n" % size, data)
            head = b"\r\n"
        else:
            head += b"$%d\r\n%s\r\n" % (size, data)
    parts.append(head)
    return parts


def encode_commands(commands: Iterable[Sequence[Arg]]) -> bytes:
    """Encode several commands back to back (a pipeline) as one byte string."""
    return b"".join(part for args in commands for part in encode_command_parts(args))


# ---------------------------------------------------------------------------------------------
# Decoding

_PLUS: Final = 43  # ord("+")
_MINUS: Final = 45  # ord("-")
_COLON: Final = 58  # ord(":")
_DOLLAR: Final = 36  # ord("$")
_CR: Final = 13  # ord("\r")
_LF: Final = 10  # ord("\n")
_STAR: Final = 42  # ord("*")

_INT64_MAX: Final = 2**63 - 1


def _parse_int(line: bytes | bytearray) -> int | None:
    """Strict RESP integer, as hiredis reads it: ``0`` or an optional ``-`` then ASCII digits
    without a leading zero, within a signed 64-bit integer; nothing else."""
    digits = line[1:] if line[:1] == b"-" else line
    if len(digits) > 19 or not digits.isdigit() or (digits[:1] == b"0" and len(line) > 1):
        return None  # 20 digits or more are past 64 bits (and past int()'s digit limit)
    value = int(line)
    return value if -_INT64_MAX - 1 <= value <= _INT64_MAX else None


# Lengths and small integers as they appear on the wire, already parsed: one dict look-up
# instead of a strict parse for the values okq replies are made of.  Only canonical forms are
# keys, so ``007`` or ``-0`` still go through `_parse_int` and are refused there.
_SMALL_INTS: Final[dict[bytes, int]] = {b"%d" % i: i for i in range(-1, 2048)}

_OK_LINE: Final = b"+OK\r\n"
# Bulk payloads at least this long that arrive in pieces are copied out of the buffer
# through a memoryview: one copy instead of two.
_VIEW_THRESHOLD: Final = 64 * 1024
_OK: Final = b"OK"


class Decoder:
    """An incremental, pure-Python RESP2 reply decoder.

    Feed bytes in any chunking with `feed`; take complete replies out, one per call, with
    `next_reply`.  Error replies are values (`ErrorReply`), never exceptions.

    When it runs out of parsed replies, `next_reply` parses every complete reply the buffer
    holds in one pass and hands them out one by one; a protocol error met in that pass is
    raised once the replies before it have been taken, so the sequence of values and errors
    is the same as parsing one reply per call.

    Args:
        limits: bounds on lengths and nesting (`Limits`); the defaults are safe.
    """

    __slots__ = (
        "_buf",
        "_bulk",
        "_completes",
        "_error",
        "_limits",
        "_pending",
        "_ready",
        "_room",
        "_stack",
        "_stale",
    )

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        # Unparsed bytes; parsing always starts at offset 0 (parsed bytes are dropped).
        self._buf = bytearray()
        # Complete replies parsed ahead, oldest first.
        self._ready: deque[Reply] = deque()
        # Partly built arrays, outermost first: (elements so far, element count).
        self._stack: list[tuple[list[Reply], int]] = []
        # Length of a bulk payload whose header was read and dropped but whose bytes (at the
        # start of the buffer) have not all arrived; -1 when no payload is awaited.
        self._bulk = -1
        # An error met while parsing ahead, raised once `_ready` is empty.
        self._pending: RemoteProtocolError | None = None
        # The error raised, once raised: every later call raises it again.
        self._error: RemoteProtocolError | None = None
        # Whether bytes arrived that the last parse has not seen.  A byte fed one at a time
        # that cannot complete anything (`_room` more may come: bytes of a bulk payload short
        # of its CR LF, or anything but LF while a line awaits its end) leaves it False, so
        # `next_reply` answers `NEED_DATA` at once: byte-by-byte input costs no parse per byte.
        self._stale = True
        self._room = 0
        # The one byte that may complete something within `_room` (b"" for none).
        self._completes = b"\n"

    @property
    def limits(self) -> Limits:
        """The limits this decoder enforces."""
        return self._limits

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes (copied; nothing is parsed here).

        Raises:
            RemoteProtocolError: if the decoder already failed.
        """
        room = self._room
        if room and len(data) == 1 and data != self._completes:
            self._room = room - 1
            self._buf += data
            return
        if self._error is not None:
            raise self._error
        if self._pending is None:
            self._buf += data
            self._stale = True

    def has_partial(self) -> bool:
        """True when some bytes of a reply that is not complete yet have been received."""
        return bool(self._stack) or self._bulk >= 0 or bool(self._buf)

    def next_reply(self) -> Reply | NeedData:
        """Return the next complete reply, or `NEED_DATA`.

        Returns:
            the reply, or `NEED_DATA` when the bytes fed so far end inside a reply (or there
            are none); the partial parse is kept and resumed by the next call.

        Raises:
            RemoteProtocolError: the bytes are not RESP2 or break a limit.  The decoder then
                refuses further use.
        """
        if self._ready:
            return self._ready.popleft()
        if self._stale:
            return self._fill()
        return NEED_DATA

    def _fill(self) -> Reply | NeedData:
        if self._error is not None:
            raise self._error
        if self._pending is None:
            try:
                self._parse()
            except RemoteProtocolError as exc:
                self._pending = exc
                self._buf = bytearray()
                self._stack.clear()
                self._bulk = -1
                self._room = 0
            else:
                # What may arrive a byte at a time before anything can complete: the rest of
                # a payload short of its CR LF's last byte, or (while a line awaits its end,
                # where only an LF completes one) what keeps within max_line_length's check.
                rest = len(self._buf)
                bulk = self._bulk
                if bulk >= 0:
                    self._room = max(bulk + 1 - rest, 0)
                    self._completes = b""  # no single byte
                else:
                    self._room = max(self._limits.max_line_length + 2 - rest, 0)
                    self._completes = b"\n"
                self._stale = False
        if self._ready:
            return self._ready.popleft()
        if self._pending is not None:
            self._error = self._pending
            raise self._error
        return NEED_DATA

    def _deliver(self, value: Reply) -> None:
        """Hand a complete value to the innermost open array, or to the ready queue."""
        stack = self._stack
        while stack:
            items, count = stack[-1]
            items.append(value)
            if len(items) < count:
                return
            stack.pop()
            value = items
        self._ready.append(value)

    def _parse(self) -> None:
        buf = self._buf
        n = len(buf)
        bulk = self._bulk
        if not n or (bulk >= 0 and n < bulk + 2):
            return  # nothing new can complete: no copy, no work (a large bulk arriving)
        if bulk >= 0 and n == bulk + 2 and bulk < _VIEW_THRESHOLD:
            # A payload the bytes so far end with exactly (one fed in small pieces).
            if buf[bulk] != _CR or buf[bulk + 1] != _LF:
                raise RemoteProtocolError("bulk string payload not followed by CR LF")
            self._bulk = -1
            self._deliver(bytes(buf)[:bulk])
            buf.clear()
            return
        if bulk < 0 and n <= 8 and buf[0] == _DOLLAR and buf.find(b"\r\n") == n - 2:
            # Just a short bulk header (a reply fed in small pieces): the payload comes next.
            size = _SMALL_INTS.get(bytes(buf)[1:-2], -2)
            if 0 <= size <= self._limits.max_bulk_length:
                buf.clear()
                self._bulk = size
                return
        if bulk >= _VIEW_THRESHOLD:
            # A large payload that arrived in pieces: copy it out once, straight from the
            # buffer, rather than copying the whole buffer first.
            if buf[bulk : bulk + 2] != b"\r\n":
                raise RemoteProtocolError("bulk string payload not followed by CR LF")
            with memoryview(buf) as view:
                payload: Reply = view[:bulk].tobytes()
            del buf[: bulk + 2]
            self._bulk = -1
            self._deliver(payload)
            self._parse()
            return
        data = bytes(buf)  # one copy; slices of bytes are then bytes, not bytearrays
        find = data.find
        startswith = data.startswith
        append = self._ready.append
        stack = self._stack
        ints = _SMALL_INTS
        limits = self._limits
        max_line = limits.max_line_length
        max_bulk = limits.max_bulk_length
        max_array = limits.max_array_length
        pos = 0
        value: Reply
        try:
            while True:
                if bulk >= 0:
                    end = pos + bulk
                    if n < end + 2:
                        break
                    if not startswith(b"\r\n", end):
                        raise RemoteProtocolError("bulk string payload not followed by CR LF")
                    value = data[pos:end]
                    pos = end + 2
                    bulk = -1
                else:
                    if pos >= n:
                        break
                    kind = data[pos]
                    if kind == _PLUS and startswith(_OK_LINE, pos):
                        # The commonest reply of all, a run of them handled in one place.
                        if not stack:
                            append(_OK)
                            pos += 5
                            while startswith(_OK_LINE, pos):
                                append(_OK)
                                pos += 5
                            continue
                        value = _OK
                        pos += 5
                    else:
                        nl = find(b"\r\n", pos)
                        if nl < 0:
                            # Type byte + line + the CR of a CR LF still on its way: anything
                            # longer cannot become a line within the limit.
                            if n - pos > max_line + 2:
                                raise RemoteProtocolError(
                                    f"no line end within {max_line} bytes (max_line_length)"
                                )
                            break
                        if nl - pos > max_line + 1:
                            raise RemoteProtocolError(f"line longer than {max_line} bytes")
                        if kind == _DOLLAR:
                            line = data[pos + 1 : nl]
                            length = ints.get(line)
                            if length is None:
                                length = _parse_int(line)
                                if length is None or length < -1:
                                    raise RemoteProtocolError(f"bad bulk length {line!r}")
                            if length > max_bulk:
                                raise RemoteProtocolError(
                                    f"bulk length {length} exceeds max_bulk_length {max_bulk}"
                                )
                            pos = nl + 2
                            if length < 0:
                                value = None
                            else:
                                end = pos + length
                                if n < end + 2:
                                    bulk = length
                                    break
                                if not startswith(b"\r\n", end):
                                    raise RemoteProtocolError(
                                        "bulk string payload not followed by CR LF"
                                    )
                                value = data[pos:end]
                                pos = end + 2
                        elif kind == _STAR:
                            line = data[pos + 1 : nl]
                            count = ints.get(line)
                            if count is None:
                                count = _parse_int(line)
                                if count is None or count < -1:
                                    raise RemoteProtocolError(f"bad array length {line!r}")
                            if count > max_array:
                                raise RemoteProtocolError(
                                    f"array length {count} exceeds max_array_length {max_array}"
                                )
                            pos = nl + 2
                            if count > 0:
                                if len(stack) >= limits.max_depth:
                                    raise RemoteProtocolError(
                                        f"arrays nested deeper than max_depth {limits.max_depth}"
                                    )
                                stack.append(([], count))
                                continue
                            value = None if count < 0 else []
                        elif kind == _COLON:
                            line = data[pos + 1 : nl]
                            number = ints.get(line)
                            if number is None:
                                number = _parse_int(line)
                                if number is None:
                                    raise RemoteProtocolError(f"bad integer {line!r}")
                            value = number
                            pos = nl + 2
                        elif kind == _PLUS:
                            value = data[pos + 1 : nl]
                            if b"\r" in value or b"\n" in value:
                                # RESP2 simple strings cannot hold CR or LF (hiredis agrees).
                                raise RemoteProtocolError(
                                    f"CR or LF inside simple string {value!r}"
                                )
                            pos = nl + 2
                        elif kind == _MINUS:
                            message = data[pos + 1 : nl]
                            if b"\r" in message or b"\n" in message:
                                raise RemoteProtocolError(
                                    f"CR or LF inside error reply {message!r}"
                                )
                            value = ErrorReply(message)
                            pos = nl + 2
                        else:
                            raise RemoteProtocolError(
                                f"unknown RESP2 type byte {data[pos : pos + 1]!r}"
                            )
                # A value is complete: hand it to the innermost open array, or deliver it.
                while stack:
                    items, count = stack[-1]
                    items.append(value)
                    if len(items) < count:
                        break
                    stack.pop()
                    value = items
                else:
                    append(value)
        finally:
            # Drop what was parsed (deleting a prefix of a bytearray is cheap in CPython).
            self._bulk = bulk
            if pos >= n:
                buf.clear()
            elif pos:
                del buf[:pos]
