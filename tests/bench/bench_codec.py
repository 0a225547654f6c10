"""RESP2 codec benchmark: okq_proto against redis-py's pure-Python codec and raw hiredis.

Run as a script (stdlib timing only; medians of --repeats runs, all in one process)::

    .venv/bin/python tests/bench/bench_codec.py [--repeats 7] [--scale 1.0]

Every row times the same input through each implementation and prints the ratios the issue's
goals are stated in: our pure decoder / encoder against redis-py's pure-Python ones (higher is
better) and our hiredis-backed decoder against raw ``hiredis.Reader`` (1.0 = no overhead).
Decode rows feed 64 KiB chunks, single bytes, or (``1 per feed``) one reply per chunk, as a client
that sends a request and reads its reply does; ``3 per reply`` feeds each element of a QRPOP reply
on its own, as the okq server writes them.
Importing this module runs nothing; ``tests/bench/test_bench_smoke.py`` runs each bench once at a
tiny size so the script cannot rot.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make okq_proto importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import hiredis
from redis._parsers.encoders import Encoder
from redis._parsers.resp2 import _RESP2Parser
from redis._parsers.socket import SocketBuffer
from redis.connection import PythonRespSerializer

from okq_proto import NEED_DATA, Decoder, QLPush, encode_command_parts
from okq_proto.hiredis import HiredisDecoder

# redis-py ships no types for these; keep them as Any here.
_Parser: Any = _RESP2Parser
_Encoder: Any = Encoder
_Serializer: Any = PythonRespSerializer
_pack_command: Any = hiredis.pack_command

CHUNK = 64 * 1024
EVENT_ID = b"0f8b2c1e-4a5d-4e6f-9a7b-1c2d3e4f5a6b"  # 36 characters, like a UUID


@dataclass
class Row:
    """One benchmark: seconds (median) per implementation."""

    name: str
    times: dict[str, float]


# -- input builders -----------------------------------------------------------------------------


def chunked(data: bytes, size: int) -> list[bytes]:
    """`data` cut every `size` bytes, as a socket might hand it over."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def ok_stream(count: int) -> bytes:
    return b"+OK\r\n" * count


def qrpop_stream(count: int) -> bytes:
    contents = b"c" * 100
    return (b"*2\r\n$36\r\n%s\r\n$100\r\n%s\r\n" % (EVENT_ID, contents)) * count


def qrpop_element_chunks(count: int) -> list[bytes]:
    """`count` QRPOP replies as the okq server writes them: each element on its own."""
    contents = b"c" * 100
    one = [b"*2\r\n", b"$36\r\n%s\r\n" % EVENT_ID, b"$100\r\n%s\r\n" % contents]
    return one * count


def qstatus_stream(count: int, queues: int = 5) -> bytes:
    entries = b"".join(
        b"*4\r\n$%d\r\n%s\r\n:%d\r\n:%d\r\n:%d\r\n"
        % (len(b"queue-%d" % i), b"queue-%d" % i, 1000 + i, i, 2)
        for i in range(queues)
    )
    return (b"*%d\r\n" % queues + entries) * count


def bulk_stream(count: int, size: int = 1024 * 1024) -> bytes:
    payload = bytes(range(256)) * (size // 256)
    return (b"$%d\r\n%s\r\n" % (len(payload), payload)) * count


def array_stream(elements: int) -> bytes:
    return b"*%d\r\n" % elements + b"$5\r\nhello\r\n" * elements


# -- decoders -----------------------------------------------------------------------------------


def decode_ours(chunks: Sequence[bytes], decoder: Decoder | HiredisDecoder) -> int:
    """Feed every chunk and take every reply out; returns the reply count."""
    count = 0
    for chunk in chunks:
        decoder.feed(chunk)
        next_reply = decoder.next_reply
        while next_reply() is not NEED_DATA:
            count += 1
    return count


def decode_hiredis_raw(chunks: Sequence[bytes]) -> int:
    reader = hiredis.Reader()
    count = 0
    for chunk in chunks:
        reader.feed(chunk)
        gets = reader.gets
        while gets() is not False:
            count += 1
    return count


class _FakeSocket:
    """What redis-py's SocketBuffer needs of a socket: ``recv`` hands out the next chunk."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self._chunks = iter(chunks)

    def recv(self, _size: int) -> bytes:
        return next(self._chunks, b"")

    def settimeout(self, _timeout: float | None) -> None:
        pass


def decode_redis_py(chunks: Sequence[bytes], replies: int) -> int:
    """redis-py's pure-Python RESP2 parser over a socket that delivers `chunks`."""
    parser = _Parser(socket_read_size=CHUNK)
    parser._buffer = SocketBuffer(_FakeSocket(chunks), CHUNK, None)  # type: ignore[arg-type]  # a fake socket
    parser.encoder = _Encoder("utf-8", "strict", False)
    for _ in range(replies):
        parser.read_response(disable_decoding=True)
    return replies


# -- timing -------------------------------------------------------------------------------------


def median_time(func: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_decode(name: str, data: bytes, chunk: int, repeats: int, redis_py: bool = True) -> Row:
    """Decode `data` cut into `chunk`-byte pieces with every implementation.

    With `chunk` the length of one reply, each feed gets exactly one reply (then `next_reply`
    runs twice: the reply, then `NEED_DATA`); redis-py's socket hands over one reply per read.
    """
    return bench_chunks(name, chunked(data, chunk), repeats, redis_py)


def bench_chunks(name: str, chunks: list[bytes], repeats: int, redis_py: bool = True) -> Row:
    """Decode `chunks`, fed one at a time, with every implementation."""
    replies = decode_ours(chunks, Decoder())
    assert decode_ours(chunks, HiredisDecoder()) == replies == decode_hiredis_raw(chunks)
    times = {
        "okq pure": median_time(lambda: decode_ours(chunks, Decoder()), repeats),
        "okq hiredis": median_time(lambda: decode_ours(chunks, HiredisDecoder()), repeats),
        "raw hiredis": median_time(lambda: decode_hiredis_raw(chunks), repeats),
    }
    if redis_py:
        times["redis-py"] = median_time(lambda: decode_redis_py(chunks, replies), repeats)
    return Row(name, times)


def bench_encode(
    name: str,
    argv: list[bytes],
    count: int,
    repeats: int,
    typed: Callable[[], list[bytes | bytearray | memoryview]] | None = None,
) -> Row:
    """Encode one command `count` times with every implementation.

    With `typed`, "okq pure" is the typed command the client sends (built and encoded,
    e.g. ``QLPush(q, id, c).encode()``) rather than the generic `encode_command_parts`.
    """
    serializer = _Serializer(6000, _Encoder("utf-8", "strict", False).encode)
    assert b"".join(encode_command_parts(argv)) == b"".join(serializer.pack(*argv))
    if typed is not None:
        assert b"".join(typed()) == b"".join(serializer.pack(*argv))
    args = tuple(argv)

    def ours() -> None:
        if typed is not None:
            for _ in range(count):
                typed()
            return
        for _ in range(count):
            encode_command_parts(argv)

    def redis_py() -> None:
        for _ in range(count):
            serializer.pack(*args)

    def raw_hiredis() -> None:
        pack = _pack_command
        for _ in range(count):
            pack(args)

    return Row(
        name,
        {
            "okq pure": median_time(ours, repeats),
            "redis-py": median_time(redis_py, repeats),
            "raw hiredis": median_time(raw_hiredis, repeats),
        },
    )


def linearity(repeats: int, small: int = 2_500, factor: int = 4) -> float:
    """Time of the pure decoder on a `factor`x larger array fed bytewise, over the small one."""
    times = []
    for elements in (small, small * factor):
        chunks = chunked(array_stream(elements), 1)

        def pure(chunks: list[bytes] = chunks) -> int:
            return decode_ours(chunks, Decoder())

        times.append(median_time(pure, repeats))
    return times[1] / times[0]


def run(scale: float = 1.0, repeats: int = 7) -> list[Row]:
    """Every benchmark, sizes multiplied by `scale`."""

    def n(count: int) -> int:
        return max(1, int(count * scale))

    qlpush = [b"QLPUSH", b"queue", EVENT_ID]
    return [
        bench_encode("encode QLPUSH 100 B", [*qlpush, b"x" * 100], n(100_000), repeats),
        bench_encode("encode QLPUSH 10 KB", [*qlpush, b"x" * 10_000], n(100_000), repeats),
        bench_encode(
            "encode QRPOP q EX 30", [b"QRPOP", b"queue", b"EX", b"30"], n(100_000), repeats
        ),
        bench_encode(
            "QLPush.encode() 100 B",
            [*qlpush, b"x" * 100],
            n(100_000),
            repeats,
            typed=QLPush(b"queue", EVENT_ID, b"x" * 100).encode,
        ),
        bench_encode(
            "QLPush.encode() 10 KB",
            [*qlpush, b"x" * 10_000],
            n(100_000),
            repeats,
            typed=QLPush(b"queue", EVENT_ID, b"x" * 10_000).encode,
        ),
        bench_encode(
            "QLPush(...) new+encode 100 B",
            [*qlpush, b"x" * 100],
            n(100_000),
            repeats,
            typed=lambda: QLPush(b"queue", EVENT_ID, b"x" * 100).encode(),
        ),
        bench_decode("decode +OK x100k, 1 per feed", ok_stream(n(100_000)), 5, repeats),
        bench_decode(
            "decode QRPOP x100k, 1 per feed",
            qrpop_stream(n(100_000)),
            len(qrpop_stream(1)),
            repeats,
        ),
        bench_chunks("decode QRPOP x100k, 3 per reply", qrpop_element_chunks(n(100_000)), repeats),
        bench_decode(
            "decode QSTATUS x10k, 1 per feed",
            qstatus_stream(n(10_000)),
            len(qstatus_stream(1)),
            repeats,
        ),
        bench_decode("decode +OK x100k", ok_stream(n(100_000)), CHUNK, repeats),
        bench_decode("decode QRPOP x100k", qrpop_stream(n(100_000)), CHUNK, repeats),
        bench_decode("decode QSTATUS x10k", qstatus_stream(n(10_000)), CHUNK, repeats),
        bench_decode(
            "decode 1 MB bulks x20",
            bulk_stream(n(20), max(256, int(1024 * 1024 * min(scale, 1)))),
            CHUNK,
            repeats,
        ),
        bench_decode("decode 10k array, 64 KiB", array_stream(n(10_000)), CHUNK, repeats),
        bench_decode("decode 10k array, 1 B", array_stream(n(10_000)), 1, repeats),
    ]


def report(rows: list[Row], linear: float) -> str:
    """The results as a table of seconds and ratios."""
    lines = [
        f"{'benchmark':32} {'okq pure':>9} {'okq hired':>9} {'raw hired':>9} {'redis-py':>9}"
        f" {'pure/redis-py':>14} {'hiredis/raw':>12}"
    ]
    for row in rows:
        t = row.times
        cells = [
            f"{t[k] * 1000:8.1f}m" if k in t else f"{'-':>9}"
            for k in ("okq pure", "okq hiredis", "raw hiredis", "redis-py")
        ]
        speedup = f"{t['redis-py'] / t['okq pure']:13.2f}x" if "redis-py" in t else f"{'-':>14}"
        overhead = (
            f"{t['raw hiredis'] / t['okq hiredis']:11.2f}x" if "okq hiredis" in t else f"{'-':>12}"
        )
        if "okq hiredis" not in t:  # encoders: show ours against raw hiredis.pack_command
            overhead = f"{t['raw hiredis'] / t['okq pure']:11.2f}x"
        lines.append(f"{row.name:32} {' '.join(cells)} {speedup} {overhead}")
    lines.append(
        f"pure decoder, 10k vs 2.5k-element array fed bytewise: {linear:.2f}x time (4x = linear)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs per median (default 7)")
    parser.add_argument("--scale", type=float, default=1.0, help="size multiplier (default 1)")
    args = parser.parse_args(argv)
    rows = run(args.scale, args.repeats)
    print(report(rows, linearity(args.repeats)))
    print("times in milliseconds (m); ratios above 1 mean okq is faster", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
