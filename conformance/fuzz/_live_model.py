"""What an okq server must do with a byte string: the request reader of okq-protocol.md §2.1.

This module owns the live fuzzer's expectation model. Given the bytes written on a fresh
connection it says how many replies must come back (one per complete top-level array), how
the input ends and how long the server may legitimately take:

* ``COMPLETE``: the input stops at a value boundary; the connection stays open and a request
  written next is answered next (the fuzzer appends a marker command there);
* ``INCOMPLETE``: the input stops inside a value the server must wait for (a cut header, a
  bulk payload or its two trailer bytes still due, array elements still due);
* ``CLOSE``: a byte that starts no RESP value, a count or length that does not parse, or a
  header line shorter than 3 bytes (D1): the replies to the earlier requests, then a silent
  close;
* ``OPEN_END``: a size past what a server may sanely wait for (an absurd length or count, very
  deep nesting, a very long header line): a fixed server closes (D1), okq waits or crashes;
  after the earlier replies nothing more is checked on that connection.

``block_s`` is the sum of the ``QNOTIFY`` timeouts (§3.1 parsing), the only way a request may
take long. The rules follow §2.1 to the byte (the value of a header is the bytes between its
type byte and the last two bytes of its line; two unchecked bytes follow a bulk payload; signed
64-bit counts; simple strings count as string elements). Standard library only; no sockets.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "MAX_WAIT_COUNT",
    "MAX_WAIT_DEPTH",
    "MAX_WAIT_LENGTH",
    "MAX_WAIT_LINE",
    "Ending",
    "Expectation",
    "Unreadable",
    "expect",
    "go_atoi",
    "next_request",
    "read_request",
    "read_value",
]

#: Bulk lengths up to this must be waited for; beyond, closing (D1's fix) is allowed too.
MAX_WAIT_LENGTH: Final = 1024 * 1024
#: Array counts up to this must be waited for.
MAX_WAIT_COUNT: Final = 64 * 1024
#: Arrays nested up to this deep must be read; deeper, a server may close.
MAX_WAIT_DEPTH: Final = 32
#: Header lines up to this long must be read.
MAX_WAIT_LINE: Final = 64 * 1024

_TYPE_BYTES: Final = frozenset(b"*$+-:")
#: A header shorter than 3 bytes or a size of 7 digits or more, anywhere.
_D1_LIKE: Final = re.compile(rb"(?:^|\n)[*$+:-]\n|[*$]\+?[0-9]{7,}")
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
#: Commands whose first argument is a queue name.
_QUEUE_COMMANDS: Final = frozenset(
    {b"QLPUSH", b"QRPUSH", b"QLPEEK", b"QRPEEK", b"QRPOP", b"QACK", b"QFLUSH"}
)


class Ending(enum.Enum):
    """How the input ends (see the module docstring)."""

    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    CLOSE = "close"
    OPEN_END = "open_end"


@dataclass(slots=True)
class Expectation:
    """What a server must do with one input written on a fresh connection."""

    replies: int = 0
    ending: Ending = Ending.COMPLETE
    block_s: float = 0.0
    #: Why the input closes or ends open (``None`` when COMPLETE or INCOMPLETE).
    reason: str | None = None
    #: The close or open end is of okq's crash class (D1): a header shorter than 3 bytes, or
    #: a length or count okq allocates before the data comes (10^15 crashes it; on a small
    #: machine far less does, ``$879022206`` was seen to).
    d1: bool = False
    #: Every command read, as its argument vector.
    commands: list[tuple[bytes, ...]] = field(default_factory=list)

    @property
    def queues(self) -> set[bytes]:
        """Queue names the commands name (first argument of the queue commands, QREGISTER's)."""
        names: set[bytes] = set()
        for argv in self.commands:
            name = _upper(argv[0]) if argv else b""
            if name in _QUEUE_COMMANDS and len(argv) > 1:
                names.add(argv[1])
            elif name in (b"QREGISTER", b"QSTATUS", b"QINFO"):
                names.update(argv[1:])
        return names


class Unreadable(Exception):
    """Raised by `read_value` / `read_request`: the value cannot be read to its end."""


class _Incomplete(Unreadable):
    pass


class _Stop(Unreadable):
    def __init__(self, ending: Ending, reason: str, d1: bool = False) -> None:
        super().__init__(reason)
        self.ending = ending
        self.reason = reason
        self.d1 = d1


def go_atoi(value: bytes) -> int | None:
    """Go's ``strconv.Atoi`` on 64-bit: optional sign, ASCII digits, int64 range; else None."""
    digits = value[1:] if value[:1] in (b"+", b"-") else value
    if not digits or not digits.isdigit():
        return None
    number = int(value)
    return number if _INT64_MIN <= number <= _INT64_MAX else None


def _upper(name: bytes) -> bytes:
    """The command name upper-cased: Unicode upper case where the name is UTF-8, else ASCII."""
    try:
        return name.decode("utf-8").upper().encode("utf-8")
    except UnicodeDecodeError:
        return name.upper()


def _block_s(argv: tuple[bytes, ...]) -> float:
    """How long this command may take: a QNOTIFY's timeout, else 0."""
    if len(argv) < 2 or b"QNOTIFY" not in (_upper(argv[0]), argv[0].upper()):
        return 0.0
    timeout = go_atoi(argv[1])
    return float(timeout) if timeout is not None and timeout > 0 else 0.0


def _header(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """The type byte, header value and end of the header line that starts at ``pos``."""
    if pos >= len(data):
        raise _Incomplete
    if data[pos] not in _TYPE_BYTES:
        raise _Stop(Ending.CLOSE, f"byte {data[pos : pos + 1]!r} starts no RESP value")
    lf = data.find(b"\n", pos)
    if lf < 0:
        if len(data) - pos > MAX_WAIT_LINE:
            raise _Stop(Ending.OPEN_END, "header line longer than a server must read")
        raise _Incomplete
    if lf + 1 - pos < 3:
        raise _Stop(Ending.CLOSE, "header line shorter than 3 bytes", d1=True)
    if lf + 1 - pos > MAX_WAIT_LINE:
        raise _Stop(Ending.OPEN_END, "header line longer than a server must read")
    return data[pos], data[pos + 1 : lf - 1], lf + 1


def _number(value: bytes, what: str) -> int:
    number = go_atoi(value)
    if number is None:
        raise _Stop(Ending.CLOSE, f"{what} {value!r} does not parse")
    return number


def _too_big(number: int, limit: int, what: str) -> None:
    if number > limit:
        reason = f"{what} {number} past what a server must wait for"
        raise _Stop(Ending.OPEN_END, reason, d1=True)


def read_value(data: bytes, pos: int, depth: int = 0) -> tuple[bool, bytes | None, int]:
    """Read one RESP value the way okq reads a request.

    Args:
        data: the input.
        pos: where the value's type byte is.
        depth: arrays open around it (0 for a top-level value).

    Returns:
        ``(is_array, string, end)``: whether it is a non-nil array, its bytes if it is a bulk
        or simple string (else None) and the offset past it.

    Raises:
        Unreadable: the value is not all there yet, or the server closes (or may close) here.
    """
    kind, value, pos = _header(data, pos)
    if kind == 0x2B:  # + simple string: an argument like a bulk string
        return False, value, pos
    if kind == 0x2D:  # - error
        return False, None, pos
    if kind == 0x3A:  # : integer
        _number(value, "integer")
        return False, None, pos
    if kind == 0x24:  # $ bulk string
        length = _number(value, "bulk length")
        if length < 0:
            return False, None, pos
        end = pos + length + 2
        if len(data) < end:
            _too_big(length, MAX_WAIT_LENGTH, "bulk length")
            raise _Incomplete
        return False, data[pos : pos + length], end
    count = _number(value, "array count")
    if count < 0:
        return False, None, pos
    _too_big(count, MAX_WAIT_COUNT, "array count")
    if depth >= MAX_WAIT_DEPTH:
        raise _Stop(Ending.OPEN_END, f"arrays nested {depth + 1} deep")
    for _ in range(count):
        if pos >= len(data):
            raise _Incomplete
        pos = read_value(data, pos, depth + 1)[2]
    return True, None, pos


def read_request(data: bytes, pos: int) -> tuple[tuple[bytes, ...] | None, bool, int]:
    """Read one top-level value: ``(argv, answered, end)``.

    ``answered`` is whether the server replies to it (any non-nil array); ``argv`` is the
    argument vector of a valid command (``None`` for an invalid one or an ignored value).

    Raises:
        Unreadable: as `read_value`.
    """
    kind, value, _end = _header(data, pos)
    if kind != 0x2A:
        return None, False, read_value(data, pos)[2]
    count = _number(value, "array count")
    if count < 0:
        return None, False, _end
    _too_big(count, MAX_WAIT_COUNT, "array count")
    argv: list[bytes] = []
    valid = True
    end = _end
    for _ in range(count):
        if end >= len(data):
            raise _Incomplete
        is_array, string, end = read_value(data, end, 1)
        if is_array or string is None:
            valid = False
        elif valid:
            argv.append(string)
    return (tuple(argv) if valid else None), True, end


def next_request(data: bytes, pos: int = 0) -> tuple[tuple[bytes, ...] | None, bool, int] | Ending:
    """`read_request` without exceptions: the request, or how the input ends at ``pos``.

    For a server written against the model (the fuzzer's tests use one): an ``Ending``
    means wait for more bytes (``INCOMPLETE``) or close (``CLOSE``, ``OPEN_END``).
    """
    try:
        return read_request(data, pos)
    except _Incomplete:
        return Ending.INCOMPLETE
    except _Stop as stop:
        return stop.ending


def expect(data: bytes) -> Expectation:
    """The expectation for ``data`` written on a fresh connection (see the module docstring)."""
    result = Expectation()
    pos = 0
    try:
        while pos < len(data):
            argv, answered, pos = read_request(data, pos)
            if answered:
                result.replies += 1
            if argv is not None:
                result.commands.append(argv)
                result.block_s += _block_s(argv)
    except _Incomplete:
        result.ending = Ending.INCOMPLETE
    except _Stop as stop:
        result.ending = stop.ending
        result.reason = stop.reason
        # Past an open end a server may read on (okq does): a D1 input further on counts.
        result.d1 = stop.d1 or (stop.ending is Ending.OPEN_END and bool(_D1_LIKE.search(data)))
    return result
