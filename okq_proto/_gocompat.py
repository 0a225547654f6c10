"""Go standard-library behaviour the okq server shows on the wire, re-done in Python.

Owns: ``strconv.Quote`` (``%q``), ``strconv.Atoi`` with its exact error texts,
``strings.ToUpper`` (simple per-rune case mapping) and ``utf8.RuneCount``.
Must not know: okq, RESP, I/O.  Each function works on raw bytes the way Go works on a
``string`` holding arbitrary bytes: a byte that does not start a valid UTF-8 sequence is one
rune (``utf8.RuneError``, width 1).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from typing import Final

__all__ = ["AtoiError", "atoi", "go_quote", "go_upper", "rune_count"]

_INT64_MAX: Final = 2**63 - 1
_UINT64_MAX: Final = 2**64 - 1
_ESCAPES: Final = {
    0x07: "\\a",
    0x08: "\\b",
    0x0C: "\\f",
    0x0A: "\\n",
    0x0D: "\\r",
    0x09: "\\t",
    0x0B: "\\v",
    0x5C: "\\\\",
    0x22: '\\"',
}


def _utf8_len(lead: int) -> int:
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def _runes(data: bytes) -> Iterator[tuple[str | None, bytes]]:
    """Split like Go's ``utf8.DecodeRune`` loop: (character, its bytes); None for a bad byte."""
    i = 0
    n = len(data)
    while i < n:
        size = _utf8_len(data[i])
        if size:
            chunk = data[i : i + size]
            try:
                # Python's strict decoder rejects what Go rejects: overlongs, surrogates, >10FFFF.
                yield chunk.decode("utf-8"), chunk
            except UnicodeDecodeError:
                pass
            else:
                i += size
                continue
        yield None, data[i : i + 1]
        i += 1


def rune_count(data: bytes) -> int:
    """``utf8.RuneCount``: code points, each invalid byte counting as one."""
    return sum(1 for _ in _runes(data))


def _is_print(ch: str) -> bool:
    # Go unicode.IsPrint: letters, marks, numbers, punctuation, symbols, and ASCII space.
    return ch == " " or unicodedata.category(ch)[0] in "LMNPS"


def go_quote(data: bytes) -> bytes:
    """``strconv.Quote`` of a Go string holding ``data`` (what ``%q`` prints), as bytes.

    Printable characters stay as UTF-8; ``"`` and ``\\`` get a backslash; ``\\a \\b \\f \\n \\r
    \\t \\v`` by name; other control bytes, DEL and invalid bytes as ``\\xNN``; other
    non-printable code points as ``\\uNNNN`` / ``\\UNNNNNNNN``.
    """
    out = ['"']
    for ch, raw in _runes(data):
        if ch is None:
            out.append(f"\\x{raw[0]:02x}")
            continue
        cp = ord(ch)
        if cp in _ESCAPES:
            out.append(_ESCAPES[cp])
        elif _is_print(ch):
            out.append(ch)
        elif cp < 0x20 or cp == 0x7F:
            out.append(f"\\x{cp:02x}")
        elif cp < 0x10000:
            out.append(f"\\u{cp:04x}")
        else:
            out.append(f"\\U{cp:08x}")
    out.append('"')
    return "".join(out).encode("utf-8")


def go_upper(data: bytes) -> str:
    """``strings.ToUpper`` with Go's *simple* per-rune mapping, as a str.

    Python's ``str.upper`` uses full mappings (``"ß".upper() == "SS"``, ``"ﬆ"`` gives
    ``"ST"``); Go maps each rune to one rune, leaving those unchanged.  Invalid bytes become
    U+FFFD, as in Go.  Used to compare command names and keywords with ASCII constants, so
    ``"p\\u0131ng"`` (dotless i) is PING.
    """
    out = []
    for ch, _raw in _runes(data):
        if ch is None:
            out.append("\ufffd")
            continue
        up = ch.upper()
        out.append(up if len(up) == 1 else ch)
    return "".join(out)


class AtoiError(ValueError):
    """``strconv.Atoi`` failed; ``str(err)`` is Go's error text."""

    def __init__(self, text: bytes, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(self.message.decode("utf-8", "replace"))

    @property
    def message(self) -> bytes:
        """Go's ``err.Error()``: ``strconv.Atoi: parsing "<quoted>": <reason>``."""
        return b"strconv.Atoi: parsing " + go_quote(self.text) + b": " + self.reason.encode()


def atoi(text: bytes) -> int:
    """``strconv.Atoi`` for a 64-bit Go ``int``.

    Base 10, optional leading ``+`` or ``-``, digits only.  Like Go's ``ParseUint`` the digits
    are scanned left to right and the first problem wins: a non-digit gives ``invalid syntax``,
    an unsigned 64-bit overflow gives ``value out of range`` at once (even if junk follows).

    Raises:
        AtoiError: with Go's reason text.
    """
    digits = text
    negative = False
    if digits[:1] in (b"+", b"-"):
        negative = digits[:1] == b"-"
        digits = digits[1:]
    if not digits:
        raise AtoiError(text, "invalid syntax")
    cutoff = _UINT64_MAX // 10 + 1
    n = 0
    for byte in digits:
        if not 0x30 <= byte <= 0x39:
            raise AtoiError(text, "invalid syntax")
        if n >= cutoff:
            raise AtoiError(text, "value out of range")
        n = n * 10 + (byte - 0x30)
        if n > _UINT64_MAX:
            raise AtoiError(text, "value out of range")
    if (not negative and n > _INT64_MAX) or (negative and n > _INT64_MAX + 1):
        raise AtoiError(text, "value out of range")
    return -n if negative else n
