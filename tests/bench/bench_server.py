"""Throughput of the embedded okq server, beside a plain redis-server doing the same work.

Run as a script::

    python tests/bench/bench_server.py [--connections 1,16] [--events 2000] [--runs 5]

Workloads, each with N client connections making sequential request/reply round trips:

* push: ``QLPUSH q <uuid> <100 B>`` against okq; ``LPUSH q <100 B>`` against redis;
* pop+ack: ``QRPOP q EX 30`` then ``QACK q <id>`` against okq; ``RPOPLPUSH q q:claimed`` then
  ``LREM q:claimed -1 <id>`` against redis (the yardstick: the list operations okq's own Redis
  storage does, without okq's bookkeeping).

Both servers run in their own processes (the embedded server through
``python -m okq_transports serve --port 0``, redis-server on a free loopback port when it is
installed), so the client's share of the CPU is the same for both.  The figures are medians of
``--runs`` runs; the ratio column is okq's rate over redis's, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from okq_proto import NEED_DATA, Decoder, ErrorReply, Reply, encode_command

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = b"x" * 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def okq_server() -> Iterator[tuple[str, int]]:
    """The embedded server in a subprocess, on a free loopback port."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "okq_transports", "serve", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        address = line.strip().rsplit(" ", 1)[-1]
        host, port = address.rsplit(":", 1)
        yield host, int(port)
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


@contextmanager
def redis_server() -> Iterator[tuple[str, int] | None]:
    """A throwaway redis-server on a free loopback port, or None when it is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        proc.wait(10)


class Conn:
    """A minimal request/reply client: our encoder and decoder over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = Decoder()

    async def call(self, *args: bytes) -> Reply:
        self.writer.write(encode_command(args))
        while (reply := self.decoder.next_reply()) is NEED_DATA:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.decoder.feed(data)
        if isinstance(reply, ErrorReply):
            raise RuntimeError(reply.text)
        return reply


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # "okq" or "redis"

    async def prepare(self, conn: Conn, queue: bytes, events: int) -> None:
        if self.kind == "okq":
            await conn.call(b"QFLUSH", queue)
        else:
            await conn.call(b"DEL", queue, queue + b":claimed")
        if self.name == "pop+ack":
            for _ in range(events):
                await self.push(conn, queue)

    async def push(self, conn: Conn, queue: bytes) -> None:
        if self.kind == "okq":
            await conn.call(b"QLPUSH", queue, uuid.uuid4().bytes.hex().encode(), PAYLOAD)
        else:
            await conn.call(b"LPUSH", queue, PAYLOAD)

    async def pop_ack(self, conn: Conn, queue: bytes) -> None:
        if self.kind == "okq":
            event = await conn.call(b"QRPOP", queue, b"EX", b"30")
            assert isinstance(event, list), event
            await conn.call(b"QACK", queue, event[0])  # type: ignore[arg-type]
        else:
            item = await conn.call(b"RPOPLPUSH", queue, queue + b":claimed")
            assert isinstance(item, bytes), item
            await conn.call(b"LREM", queue + b":claimed", b"-1", item)

    async def step(self, conn: Conn, queue: bytes) -> None:
        if self.name == "push":
            await self.push(conn, queue)
        else:
            await self.pop_ack(conn, queue)


async def run_once(
    address: tuple[str, int], workload: Workload, connections: int, events: int
) -> float:
    """Events per second for one run: each connection handles events/connections events."""
    conns = [Conn(*await asyncio.open_connection(*address)) for _ in range(connections)]
    per_conn = max(1, events // connections)
    queues = [b"bench-%d" % i for i in range(connections)]
    try:
        await asyncio.gather(
            *(workload.prepare(c, q, per_conn) for c, q in zip(conns, queues, strict=True))
        )

        async def worker(conn: Conn, queue: bytes) -> None:
            for _ in range(per_conn):
                await workload.step(conn, queue)

        start = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(worker(c, q) for c, q in zip(conns, queues, strict=True))), timeout=120
        )
        elapsed = time.perf_counter() - start
        for conn, queue in zip(conns, queues, strict=True):
            await workload.prepare(conn, queue, 0)
        return per_conn * connections / elapsed
    finally:
        for conn in conns:
            conn.writer.close()
            await conn.writer.wait_closed()


def measure(
    address: tuple[str, int], workload: Workload, connections: int, events: int, runs: int
) -> float:
    rates = [asyncio.run(run_once(address, workload, connections, events)) for _ in range(runs)]
    return statistics.median(rates)


def bench(connections: list[int], events: int, runs: int, out: list[str] | None = None) -> None:
    """Print (and collect in `out`) one table row per workload and connection count."""
    lines = out if out is not None else []

    def emit(text: str) -> None:
        lines.append(text)
        print(text, flush=True)

    with okq_server() as okq_address, redis_server() as redis_address:
        emit(f"{'workload':<10} {'conns':>5} {'okq ev/s':>10} {'redis ev/s':>11} {'okq/redis':>10}")
        for name in ("push", "pop+ack"):
            for n in connections:
                okq_rate = measure(okq_address, Workload(name, "okq"), n, events, runs)
                if redis_address is None:
                    emit(f"{name:<10} {n:>5} {okq_rate:>10.0f} {'(no redis)':>11} {'-':>10}")
                    continue
                redis_rate = measure(redis_address, Workload(name, "redis"), n, events, runs)
                ratio = okq_rate / redis_rate
                emit(f"{name:<10} {n:>5} {okq_rate:>10.0f} {redis_rate:>11.0f} {ratio:>9.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", default="1,16", help="comma-separated counts")
    parser.add_argument("--events", type=int, default=4000, help="events per run")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.connections.split(",")]
    print(f"medians of {args.runs} runs, {args.events} events per run, 100 B contents")
    bench(counts, args.events, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
