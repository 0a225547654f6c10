"""What `HiredisDecoder` may give hiredis without the framer: the screens and exact shortcuts.

Owns: the byte-level tests that prove a chunk is read by hiredis exactly as the pure `Decoder`
reads it: the exact shortcuts for one bulk string or one array of up to nine small bulk strings
(`_bulks`) and for the start of such an array (`_open_bulks`), the trusted runs' screen (RESP3
type bytes and aggregate headers, `_any_resp3_type`), the end-of-run reply (`_MARK`), the
nesting proofs over parsed replies (`_arrays_of_strings`, `_too_deep`) and the canonical RESP2
encoding a verified reply must match (`_wire`).
Must not know: ``hiredis.Reader`` and the decoder's state (each function here is pure: bytes or
replies in, a verdict out), the framer's walk, okq commands, sockets, clocks.
"""

from __future__ import annotations

import re
from itertools import chain, compress, repeat
from typing import Any, Final, cast

from ._errors import ErrorReply
from ._framer import _CRLF, _DOLLAR, _PLUS, _STAR
from ._resp import Reply

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


def _open_bulks(data: bytes) -> int:
    """How many elements are still owed when `data` is exactly the start of an array of up to
    nine bulk strings under 2048 bytes (its header, then whole elements: a server that writes
    each element on its own); 0 when it is not.  Cut at CR LF as in `_bulks`."""
    count = _COUNTS.get(data[:4])
    if count is None or data[4:5] != b"$" or not data.endswith(_CRLF):
        return 0
    parts = data.split(_CRLF, 2 * count)
    done = len(parts) // 2 - 1  # the header, a head and a payload per element, b"" at the end
    if len(parts) % 2 or parts[-1] or done >= count:
        return 0
    heads = _BULK_HEADS
    for i in range(1, 2 * done, 2):
        if len(parts[i + 1]) != heads.get(parts[i]):
            return 0
    return count - done


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
