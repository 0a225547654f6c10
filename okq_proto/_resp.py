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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Union, final

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
    if not args:
        raise LocalProtocolError("a command needs at least its name")
    datas = [_arg_bytes(arg) for arg in args]
    if max(map(len, datas)) < _COPY_THRESHOLD:
        flat: list[object] = []
        for data in datas:
            flat.append(len(data))
            flat.append(data)
        return [_format(len(datas)) % tuple(flat)]
    parts: list[bytes | bytearray | memoryview] = []
    head = b"*%d\r\n" % len(datas)
    for data in datas:
        if len(data) >= _COPY_THRESHOLD:
            parts.append(head + b"$%d\r\n" % len(data))
            parts.append(data)
            head = b"\r\n"
        else:
            head += b"$%d\r\n%s\r\n" % (len(data), data)
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
_STAR: Final = 42  # ord("*")

# Bulk strings at least this long are copied out through a memoryview (one copy, not two).
_VIEW_THRESHOLD: Final = 64 * 1024


_INT64_MAX: Final = 2**63 - 1


def _parse_int(line: bytes | bytearray) -> int | None:
    """Strict RESP integer, as hiredis reads it: ``0`` or an optional ``-`` then ASCII digits
    without a leading zero, within a signed 64-bit integer; nothing else."""
    digits = line[1:] if line[:1] == b"-" else line
    if not digits.isdigit() or (digits[:1] == b"0" and len(line) > 1):
        return None
    value = int(line)
    return value if -_INT64_MAX - 1 <= value <= _INT64_MAX else None


class Decoder:
    """An incremental, pure-Python RESP2 reply decoder.

    Feed bytes in any chunking with `feed`; take complete replies out, one per call, with
    `next_reply`.  Error replies are values (`ErrorReply`), never exceptions.

    Args:
        limits: bounds on lengths and nesting (`Limits`); the defaults are safe.
    """

    __slots__ = ("_buf", "_bulk", "_error", "_limits", "_pos", "_stack")

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._buf = bytearray()
        self._pos = 0
        # Partly built arrays, outermost first: [elements, count].
        self._stack: list[tuple[list[Reply], int]] = []
        # Length of a bulk payload whose header was read but whose bytes have not all arrived.
        self._bulk = -1
        self._error: RemoteProtocolError | None = None

    @property
    def limits(self) -> Limits:
        """The limits this decoder enforces."""
        return self._limits

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes (copied; nothing is parsed here).

        Raises:
            RemoteProtocolError: if the decoder already failed.
        """
        if self._error is not None:
            raise self._error
        self._buf += data

    def has_partial(self) -> bool:
        """True when some bytes of a reply that is not complete yet have been received."""
        return bool(self._stack) or self._bulk >= 0 or len(self._buf) > self._pos

    def next_reply(self) -> Reply | NeedData:
        """Parse and return the next complete reply, or `NEED_DATA`.

        Returns:
            the reply, or `NEED_DATA` when the bytes fed so far end inside a reply (or there
            are none); the partial parse is kept and resumed by the next call.

        Raises:
            RemoteProtocolError: the bytes are not RESP2 or break a limit.  The decoder then
                refuses further use.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except RemoteProtocolError as exc:
            self._error = exc
            self._buf = bytearray()
            self._stack.clear()
            raise

    def _fail(self, message: str) -> RemoteProtocolError:
        return RemoteProtocolError(message)

    def _next(self) -> Reply | NeedData:
        buf = self._buf
        pos = self._pos
        stack = self._stack
        limits = self._limits
        while True:
            value: Reply
            if self._bulk >= 0:
                # Waiting for the payload of a bulk string whose header was read.
                end = pos + self._bulk
                if len(buf) < end + 2:
                    return self._need(pos)
                if buf[end : end + 2] != b"\r\n":
                    raise self._fail("bulk string payload not followed by CR LF")
                if self._bulk >= _VIEW_THRESHOLD:
                    with memoryview(buf) as view:
                        value = view[pos:end].tobytes()
                else:
                    value = bytes(buf[pos:end])
                pos = end + 2
                self._bulk = -1
            else:
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    # Type byte + line + the CR of a CR LF still on its way: anything longer
                    # cannot become a line within the limit.
                    if len(buf) - pos > limits.max_line_length + 2:
                        raise self._fail(
                            f"no line end within {limits.max_line_length} bytes (max_line_length)"
                        )
                    return self._need(pos)
                if nl - pos > limits.max_line_length + 1:
                    raise self._fail(f"line longer than {limits.max_line_length} bytes")
                kind = buf[pos]
                if kind == _PLUS:
                    value = bytes(buf[pos + 1 : nl])
                    if b"\r" in value or b"\n" in value:
                        # RESP2 simple strings cannot hold CR or LF (hiredis refuses them too).
                        raise self._fail(f"CR or LF inside simple string {value!r}")
                    pos = nl + 2
                elif kind == _DOLLAR:
                    length = _parse_int(buf[pos + 1 : nl])
                    if length is None:
                        raise self._fail(f"bad bulk length {bytes(buf[pos:nl])!r}")
                    pos = nl + 2
                    if length < 0:
                        if length != -1:
                            raise self._fail(f"bad bulk length {length}")
                        value = None
                    elif length > limits.max_bulk_length:
                        raise self._fail(
                            f"bulk length {length} exceeds max_bulk_length {limits.max_bulk_length}"
                        )
                    else:
                        self._bulk = length
                        continue
                elif kind == _STAR:
                    count = _parse_int(buf[pos + 1 : nl])
                    if count is None:
                        raise self._fail(f"bad array length {bytes(buf[pos:nl])!r}")
                    pos = nl + 2
                    if count < 0:
                        if count != -1:
                            raise self._fail(f"bad array length {count}")
                        value = None
                    elif count > limits.max_array_length:
                        raise self._fail(
                            f"array length {count} exceeds max_array_length "
                            f"{limits.max_array_length}"
                        )
                    elif count == 0:
                        value = []
                    else:
                        if len(stack) >= limits.max_depth:
                            raise self._fail(
                                f"arrays nested deeper than max_depth {limits.max_depth}"
                            )
                        stack.append(([], count))
                        continue
                elif kind == _COLON:
                    number = _parse_int(buf[pos + 1 : nl])
                    if number is None:
                        raise self._fail(f"bad integer {bytes(buf[pos:nl])!r}")
                    value = number
                    pos = nl + 2
                elif kind == _MINUS:
                    message = bytes(buf[pos + 1 : nl])
                    if b"\r" in message or b"\n" in message:
                        raise self._fail(f"CR or LF inside error reply {message!r}")
                    value = ErrorReply(message)
                    pos = nl + 2
                else:
                    raise self._fail(f"unknown RESP2 type byte {bytes(buf[pos : pos + 1])!r}")
            # A value is complete: hand it to the innermost open array, or return it.
            while stack:
                items, count = stack[-1]
                items.append(value)
                if len(items) < count:
                    break
                stack.pop()
                value = items
            else:
                if pos >= len(buf):
                    buf.clear()
                    self._pos = 0
                else:
                    self._pos = pos
                return value

    def _need(self, pos: int) -> NeedData:
        # Drop what has been parsed, so a reply arriving in pieces keeps only its tail.
        if pos:
            del self._buf[:pos]
        self._pos = 0
        return NEED_DATA
