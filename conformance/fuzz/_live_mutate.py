"""Inputs for the live fuzzer: the built-in corpus and the mutations applied to it.

This module owns what is sent: the corpus (every request the transcripts write, whole and
split into single requests) and ``mutate``, which picks one of the framing-aware mutations
(lengths off by a little or absurdly large, other type bytes, truncation and short headers,
splicing two inputs, nesting, inline commands, pipelining several requests) or the argument
mutations of a valid command (names in other cases, interesting numbers, keywords, CR LF and
invalid UTF-8 in arguments, arguments added or dropped, a push repeated with the same id).
Seeded ``random.Random`` only; standard library only; no sockets.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from typing import Final

from conformance._resp import encode_command
from conformance._transcripts import load_transcripts

from ._live_model import Unreadable, read_request

__all__ = ["MAX_INPUT", "build_corpus", "mutate"]

#: Inputs longer than this are neither kept in the corpus nor sent.
MAX_INPUT: Final = 60 * 1024

_HEADER: Final = re.compile(rb"[*$][-+]?[0-9]+\r?\n")
_TYPE_BYTES: Final = b"*$+-:"
_HUGE: Final = (
    b"65536",
    b"1048577",
    b"2147483647",
    b"2147483648",
    b"4294967296",
    b"1000000000000000",
    b"9007199254740993",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775808",
    b"99999999999999999999",
)
_NUMBERS: Final = (
    b"0",
    b"-0",
    b"+0",
    b"1",
    b"+1",
    b"-1",
    b"2",
    b"00",
    b"30",
    b"9223372036854775",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775808",
    b"1.5",
    b" 1",
    b"0x10",
    b"1_0",
    b"",
)
_WORDS: Final = (
    b"EX",
    b"ex",
    b"Ex",
    b"NOBLOCK",
    b"noblock",
    b"NOACK",
    b"q",
    b"fuzz-q",
    b"a:b",
    b"ab:cd",
    b"x\r\ny",
    b"a\nb\rc",
    b"\x00",
    b"\xff\xfe",
    "é".encode(),
    "\u00a0".encode(),
    b'"\\',
    b"*1\r\n$4\r\nPING\r\n",
    b"$\n",
    b"*\n",
    b"a" * 300,
)
_COMMANDS: Final = (
    b"PING",
    b"QLPUSH",
    b"QRPUSH",
    b"QLPEEK",
    b"QRPEEK",
    b"QRPOP",
    b"QACK",
    b"QREGISTER",
    b"QNOTIFY",
    b"QFLUSH",
    b"QSTATUS",
    b"QINFO",
    b"qlpush",
    b"QrPoP",
    "p\u0131ng".encode(),  # dotless i: okq upper-cases it to PING
    b"QUIT",
    b"HELLO",
    b"",
)


def _split_requests(data: bytes) -> list[bytes]:
    """``data`` cut into its top-level values (what cannot be read stays one piece)."""
    pieces: list[bytes] = []
    pos = 0
    for _ in range(1000):
        if pos >= len(data):
            break
        try:
            _argv, _answered, end = read_request(data, pos)
        except Unreadable:  # keep the rest whole
            pieces.append(data[pos:])
            break
        pieces.append(data[pos:end])
        pos = end
    return pieces


def build_corpus() -> list[bytes]:
    """Every request the shipped transcripts write, whole and one request at a time."""
    seen: dict[bytes, None] = {}
    for scenario in load_transcripts():
        for step in scenario.steps:
            if step.redis or not step.send or len(step.send) > MAX_INPUT:
                continue
            seen[step.send] = None
            for piece in _split_requests(step.send):
                seen[piece] = None
    return list(seen)


def _argv(data: bytes) -> tuple[bytes, ...] | None:
    try:
        argv, _answered, _end = read_request(data, 0)
    except Unreadable:
        return None
    return argv if argv else None


def _headers(data: bytes) -> list[re.Match[bytes]]:
    return list(_HEADER.finditer(data))


def _m_length(rng: random.Random, data: bytes, corpus: Sequence[bytes]) -> bytes:
    headers = _headers(data)
    if not headers:
        return _m_bytes(rng, data, corpus)
    header = rng.choice(headers)
    start, end = header.start() + 1, header.end() - (2 if header.group().endswith(b"\r\n") else 1)
    old = int(data[start:end])
    choice = rng.randrange(4)
    if choice == 0:
        new = b"%d" % (old + rng.choice((-2, -1, 1, 2)))
    elif choice == 1:
        new = rng.choice((b"0", b"-1", b"-2", b"", b"+%d" % old, b"0%d" % old, b" %d" % old))
    elif choice == 2:
        new = rng.choice(_HUGE)
    else:
        new = b"%d" % rng.randrange(64)
    return data[:start] + new + data[end:]


def _m_type(rng: random.Random, data: bytes, corpus: Sequence[bytes]) -> bytes:
    spots = [m.start() for m in re.finditer(rb"(?:^|\n)[*$+:-]", data)]
    if not spots:
        return _m_bytes(rng, data, corpus)
    spot = rng.choice(spots)
    spot += 0 if data[spot : spot + 1] in (b"*", b"$", b"+", b"-", b":") else 1
    new = rng.choice(_TYPE_BYTES + b"\x00 P#%~_>,(=!|")
    return data[:spot] + bytes([new]) + data[spot + 1 :]


def _m_truncate(rng: random.Random, data: bytes, corpus: Sequence[bytes]) -> bytes:
    choice = rng.randrange(3)
    headers = _headers(data)
    if choice == 0 or not headers:
        return data[: rng.randrange(len(data) + 1)]
    header = rng.choice(headers)
    if choice == 1:  # a header shorter than 3 bytes: its type byte, then LF
        return data[: header.start() + 1] + b"\n" + data[header.end() :]
    return data[: header.end() - 2] + data[header.end() - 1 :]  # LF without CR


def _m_splice(rng: random.Random, data: bytes, corpus: Sequence[bytes]) -> bytes:
    other = rng.choice(corpus)
    return data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other) + 1) :]


def _m_nest(rng: random.Random, data: bytes, corpus: Sequence[bytes]) -> bytes:
    choice = rng.randrange(3)
    if choice == 0:
        depth = rng.choice((1, 2, 3, 8, 31, 33, 64, 65, 200))
        return b"*1\r\n" * depth + data
    if choice == 1:
        argv = _argv(data) or (b"PING",)
        inner = encode_command(*argv[1:] or (b"x",))
        return b"*2\r\n" + encode_command(argv[0])[4:] + inner
    values = (b":1\r\n", b"$-1\r\n", b"*-1\r\n", b"*0\r\n", b"-ERR x\r\n", b":x\r\n")
    argv = _argv(data) or (b"PING",)
    head = encode_command(*argv)
    return b"*%d" % (len(argv) + 1) + head[head.index(b"\r\n") :] + rng.choice(values)


def _m_inline(rng: random.Random, data: bytes, corpus: Sequence[bytes]) -> bytes:
    argv = _argv(data) or (b"PING",)
    line = b" ".join(argv) + rng.choice((b"\r\n", b"\n", b""))
    if rng.randrange(2):
        return line
    return data + line


def _m_pipeline(rng: random.Random, data: bytes, corpus: Sequence[bytes]) -> bytes:
    parts = [data] + [rng.choice(corpus) for _ in range(rng.randint(1, 3))]
    rng.shuffle(parts)
    return b"".join(parts)


def _m_args(rng: random.Random, data: bytes, corpus: Sequence[bytes]) -> bytes:
    args = list(_argv(data) or (rng.choice(_COMMANDS),))
    for _ in range(rng.randint(1, 3)):
        choice = rng.randrange(6)
        if choice == 0:
            args[0] = rng.choice(_COMMANDS)
        elif choice == 1:
            args[0] = bytes(
                c ^ 0x20 if rng.randrange(2) and chr(c).isalpha() else c for c in args[0]
            )
        elif choice == 2 and len(args) > 1:
            args[rng.randrange(1, len(args))] = rng.choice(_NUMBERS + _WORDS)
        elif choice == 3:
            args.insert(rng.randint(1, len(args)), rng.choice(_NUMBERS + _WORDS))
        elif choice == 4 and len(args) > 1:
            del args[rng.randrange(1, len(args))]
        else:
            args.append(b"%d" % rng.randrange(100))
    encoded = encode_command(*args)
    flavour = rng.randrange(4)
    if flavour == 0:  # simple strings instead of bulk strings
        return b"*%d\r\n" % len(args) + b"".join(b"+" + a + b"\r\n" for a in args if b"\n" not in a)
    if flavour == 1:  # the two bytes after each payload are never checked
        return encoded.replace(b"\r\n$", b"xy$")
    return encoded


def _m_duplicate(rng: random.Random, data: bytes, corpus: Sequence[bytes]) -> bytes:
    """The same push twice (a duplicate id), the id often holding CR or LF (D2's ground)."""
    args = list(_argv(data) or ())
    if len(args) < 4 or args[0].upper() not in (b"QLPUSH", b"QRPUSH"):
        args = [rng.choice((b"QLPUSH", b"QRPUSH")), b"fuzz-dup-q", b"e1", b"c"]
    if rng.randrange(2):
        args[2] = rng.choice((b"x\r\ny", b"a\nb", b"a\rb", b"\r\n", b"x\r\n+OK", args[2]))
    return encode_command(*args) * 2


def _m_bytes(rng: random.Random, data: bytes, corpus: Sequence[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(len(buf) + 1)
        choice = rng.randrange(4)
        if choice == 0 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif choice == 1:
            buf[pos:pos] = rng.choice((b"\r\n", b"\n", b"\r", b"*", b"$", b"-1", b"0", b"+", b":"))
        elif choice == 2:
            del buf[pos : pos + rng.randint(1, 8)]
        else:
            buf[pos:pos] = buf[pos : pos + rng.randint(1, 16)] * rng.randint(1, 8)
    return bytes(buf)


_MUTATIONS: Final[tuple[Callable[[random.Random, bytes, Sequence[bytes]], bytes], ...]] = (
    _m_length,
    _m_length,
    _m_type,
    _m_truncate,
    _m_truncate,
    _m_splice,
    _m_nest,
    _m_inline,
    _m_pipeline,
    _m_args,
    _m_args,
    _m_args,
    _m_duplicate,
    _m_bytes,
    _m_bytes,
)


def mutate(rng: random.Random, corpus: Sequence[bytes]) -> bytes:
    """One new input: a corpus entry with one to three mutations, or unchanged (rarely)."""
    data = rng.choice(corpus)
    if rng.randrange(20) == 0:
        return data
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        data = rng.choice(_MUTATIONS)(rng, data, corpus)
    return data[:MAX_INPUT]
