"""A tiny, self-contained RESP2 reply framer and parser for the conformance runner.

This module owns exactly one job: deciding where one complete RESP2 reply ends in
a byte buffer (``frame_reply``), turning a complete reply into Python values for
the defect probes (``parse_reply``) and encoding a command (``encode_command``).
It deliberately does not import the project's client library (``okq_proto``): the
conformance suite must be able to judge any okq server, including one built with
our own protocol code, without trusting that code.

It knows nothing of sockets, clocks or okq semantics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, TypeAlias

__all__ = [
    "MAX_BULK_LENGTH",
    "MAX_DEPTH",
    "FramingError",
    "RespError",
    "RespSimple",
    "RespValue",
    "encode_command",
    "frame_reply",
    "parse_reply",
]

#: Largest bulk string or array the framer accepts from a server (512 MiB, Redis's limit).
MAX_BULK_LENGTH: Final = 512 * 1024 * 1024
#: Deepest array nesting the framer accepts.
MAX_DEPTH: Final = 32
#: Longest header line (type byte up to CR LF) accepted before the CR LF shows up.
MAX_LINE: Final = 64 * 1024

# RESP2 integers, lengths and counts: an optional minus sign, then decimal digits.
_INTEGER: Final = re.compile(rb"-?[0-9]+")


class FramingError(ValueError):
    """The bytes are not a valid RESP2 reply (bad type byte, length, terminator or size)."""


@dataclass(frozen=True, slots=True)
class RespError:
    """A RESP2 error reply (``-ERR text\\r\\n``); ``message`` is the text after the ``-``."""

    message: bytes


@dataclass(frozen=True, slots=True)
class RespSimple:
    """A RESP2 simple string (``+OK\\r\\n``); ``value`` is the text after the ``+``."""

    value: bytes


#: A parsed reply: simple string, error, integer, bulk string, nil (``None``) or array.
RespValue: TypeAlias = RespSimple | RespError | int | bytes | list["RespValue"] | None


def _parse_int(header: bytes, what: str) -> int:
    if not _INTEGER.fullmatch(header):
        raise FramingError(f"bad {what} {header!r}")
    return int(header)


def frame_reply(buf: bytes | bytearray, start: int = 0) -> int | None:
    """Find where the RESP2 reply that begins at ``buf[start]`` ends.

    Args:
        buf: received bytes; they are not modified or copied.
        start: offset of the reply's type byte.

    Returns:
        The offset just past the reply's last byte, or ``None`` if the buffer does
        not hold a complete reply yet (read more and call again).

    Raises:
        FramingError: the bytes can never become a valid reply (unknown type byte,
            unparsable length, missing CR LF after a bulk payload, a length above
            ``MAX_BULK_LENGTH``, nesting deeper than ``MAX_DEPTH``, or a header line
            longer than ``MAX_LINE``).
    """
    pos = start
    # remaining[i]: values still to read at nesting level i; level 0 is the reply itself.
    remaining = [1]
    while remaining:
        if remaining[-1] == 0:
            remaining.pop()
            continue
        remaining[-1] -= 1
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            if len(buf) - pos > MAX_LINE:
                raise FramingError(f"header line longer than {MAX_LINE} bytes")
            return None
        kind = buf[pos : pos + 1]
        header = bytes(buf[pos + 1 : eol])
        if kind in (b"+", b"-"):
            pos = eol + 2
        elif kind == b":":
            _parse_int(header, "integer")
            pos = eol + 2
        elif kind == b"$":
            length = _parse_int(header, "bulk length")
            if length < -1 or length > MAX_BULK_LENGTH:
                raise FramingError(f"bulk length {length} out of range")
            if length == -1:
                pos = eol + 2
                continue
            end = eol + 2 + length
            if len(buf) < end + 2:
                return None
            if buf[end : end + 2] != b"\r\n":
                raise FramingError(f"bulk string of length {length} not followed by CR LF")
            pos = end + 2
        elif kind == b"*":
            count = _parse_int(header, "array count")
            if count < -1 or count > MAX_BULK_LENGTH:
                raise FramingError(f"array count {count} out of range")
            pos = eol + 2
            if count > 0:
                if len(remaining) > MAX_DEPTH:
                    raise FramingError(f"arrays nested deeper than {MAX_DEPTH}")
                remaining.append(count)
        else:
            raise FramingError(f"unknown RESP type byte {kind!r}")
    return pos


def parse_reply(data: bytes) -> RespValue:
    """Parse exactly one complete RESP2 reply.

    Args:
        data: the reply's bytes, nothing more and nothing less (as delimited by
            ``frame_reply``).

    Returns:
        The reply as Python values: ``RespSimple``, ``RespError``, ``int``,
        ``bytes``, ``None`` (nil bulk string or nil array) or a ``list`` of these.

    Raises:
        FramingError: ``data`` is not exactly one complete reply.
    """
    end = frame_reply(data)
    if end != len(data):
        raise FramingError(f"not exactly one complete reply: {data[:80]!r}")
    value, pos = _parse_at(data, 0)
    assert pos == len(data)
    return value


def _parse_at(data: bytes, pos: int) -> tuple[RespValue, int]:
    # Only called on data already validated by frame_reply, so it can be naive;
    # recursion depth is bounded by MAX_DEPTH through that validation.
    eol = data.index(b"\r\n", pos)
    kind = data[pos : pos + 1]
    header = data[pos + 1 : eol]
    if kind == b"+":
        return RespSimple(header), eol + 2
    if kind == b"-":
        return RespError(header), eol + 2
    if kind == b":":
        return int(header), eol + 2
    if kind == b"$":
        length = int(header)
        if length == -1:
            return None, eol + 2
        start = eol + 2
        return data[start : start + length], start + length + 2
    count = int(header)
    if count == -1:
        return None, eol + 2
    items: list[RespValue] = []
    pos = eol + 2
    for _ in range(count):
        item, pos = _parse_at(data, pos)
        items.append(item)
    return items, pos


def encode_command(*args: bytes) -> bytes:
    """Encode a command as a RESP2 array of bulk strings.

    Args:
        *args: the command name and its arguments, as raw bytes.

    Returns:
        The request bytes, e.g. ``b"*1\\r\\n$4\\r\\nPING\\r\\n"`` for ``encode_command(b"PING")``.
    """
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)
