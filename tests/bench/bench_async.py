"""Async client benchmark: asyncio and trio clients against redis.asyncio and bare floors.

Run: ``python tests/bench/bench_async.py [--n 5000] [--runs 5] [--server HOST:PORT]``

Measures, in one run and against one server (an embedded okq server in a subprocess by
default, so its CPU is not counted): sequential push, pipelined batch push, consume+ack on a
busy queue, and 50 concurrent producers; for the okq asyncio and trio clients, for
``redis.asyncio`` sending the same commands (``protocol=2``, no HELLO / CLIENT SETINFO) as
the baseline, and for bare floors (an asyncio Protocol with okq_proto's codec; trio streams
with the codec).  Prints medians of ``--runs`` runs: operations per second and client CPU
(process time) per operation, with ratios.

Every run is bounded: its load loops stop after their count of operations, and the run has a
time budget (``--run-timeout``: ``asyncio.wait_for`` / ``trio.fail_after`` around it); a lost
connection raises ``ConnectionError`` at once, an overrun raises `Overrun`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import redis.asyncio
import trio

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from okq_proto import NEED_DATA, Decoder, Event, encode_command  # noqa: E402
from okq_transports._async_consume import AsyncClient  # noqa: E402
from okq_transports.asyncio import Client as AsyncioClient  # noqa: E402
from okq_transports.trio import open_client  # noqa: E402

PAYLOAD = b"x" * 64
BATCH = 100
PRODUCERS = 50
#: The longest one read of the redis.asyncio baseline may wait.
IO_TIMEOUT_S = 10.0
#: The default time budget of one run of one benchmark.
RUN_TIMEOUT_S = 120.0


class Overrun(RuntimeError):
    """A run went past its time budget or its count of tries."""


@dataclass
class Sample:
    """One timed run: operations, wall seconds, client CPU seconds."""

    ops: int
    wall_s: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.ops / self.wall_s

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.ops * 1e6


class Timer:
    """Wall and process-CPU time of the block."""

    def __enter__(self) -> Timer:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def queue() -> str:
    return "bench-" + uuid.uuid4().hex[:8]


def new_id() -> bytes:
    """An event id, made inside the timed loop as every client does (uuid4 text)."""
    return str(uuid.uuid4()).encode()


# ---------------------------------------------------------------------------- bare floors


class _BareProtocol(asyncio.Protocol):
    """The asyncio floor: a Protocol, okq_proto's encoder and decoder, nothing else."""

    def __init__(self) -> None:
        self.decoder = Decoder()
        self.waiter: asyncio.Future[None] | None = None
        self.lost: ConnectionError | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.decoder.feed(data)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = ConnectionError(f"the server closed the connection ({exc or 'EOF'})")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.lost)

    async def request(self, args: list[bytes]) -> object:
        assert self.transport is not None
        self.transport.write(encode_command(args))
        while (reply := self.decoder.next_reply()) is NEED_DATA:
            if self.lost is not None:
                raise self.lost
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return reply


async def bare_asyncio_connect(host: str, port: int) -> _BareProtocol:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(_BareProtocol, host, port)
    return protocol


async def bare_asyncio_push(host: str, port: int, n: int) -> Sample:
    conn = await bare_asyncio_connect(host, port)
    q = queue().encode()
    try:
        with Timer() as t:
            for _ in range(n):
                await conn.request([b"QLPUSH", q, new_id(), PAYLOAD])
    finally:
        assert conn.transport is not None
        conn.transport.close()
    return Sample(n, t.wall, t.cpu)


async def bare_asyncio_producers(host: str, port: int, n: int) -> Sample:
    conns = [await bare_asyncio_connect(host, port) for _ in range(PRODUCERS)]
    q = queue().encode()
    per = n // PRODUCERS

    async def produce(conn: _BareProtocol) -> None:
        for _ in range(per):
            await conn.request([b"QLPUSH", q, new_id(), PAYLOAD])

    try:
        with Timer() as t:
            await asyncio.gather(*(produce(c) for c in conns))
    finally:
        for conn in conns:
            assert conn.transport is not None
            conn.transport.close()
    return Sample(per * PRODUCERS, t.wall, t.cpu)


async def bare_trio_push(host: str, port: int, n: int) -> Sample:
    decoder = Decoder()
    q = queue().encode()
    async with await trio.open_tcp_stream(host, port) as stream:
        with Timer() as t:
            for _ in range(n):
                await stream.send_all(encode_command([b"QLPUSH", q, new_id(), PAYLOAD]))
                while decoder.next_reply() is NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        raise ConnectionError("the server closed the connection (EOF)")
                    decoder.feed(data)
    return Sample(n, t.wall, t.cpu)


# -------------------------------------------------------------------------- okq clients


#: Opens an okq client (asyncio's or trio's: same methods) for an ``async with`` block.
OpenOkq = Callable[[str], AbstractAsyncContextManager[AsyncClient]]
#: Makes the stop event of a consume: ``asyncio.Event`` or ``trio.Event``.
NewEvent = Callable[[], "asyncio.Event | trio.Event"]


async def okq_push(open_okq: OpenOkq, host: str, port: int, n: int) -> Sample:
    async with open_okq(f"{host}:{port}") as client:
        q = queue()
        await client.ping()
        with Timer() as t:
            for _ in range(n):
                await client.push(q, PAYLOAD)
    return Sample(n, t.wall, t.cpu)


async def okq_batch(open_okq: OpenOkq, host: str, port: int, n: int) -> Sample:
    async with open_okq(f"{host}:{port}") as client:
        q = queue()
        await client.ping()
        with Timer() as t:
            for _ in range(n // BATCH):
                await client.push_many(q, [PAYLOAD] * BATCH)
    return Sample(n // BATCH * BATCH, t.wall, t.cpu)


async def okq_consume(
    open_okq: OpenOkq, new_event: NewEvent, host: str, port: int, n: int
) -> Sample:
    """Consume n prefilled events; the run's time budget (`run_one`) cancels it if some
    never come."""
    async with open_okq(f"{host}:{port}") as client:
        q = queue()
        await client.push_many(q, [PAYLOAD] * n)
        stop, count = new_event(), [0]

        def handler(delivery: Event) -> bool:
            count[0] += 1
            if count[0] == n:
                stop.set()
            return True

        with Timer() as t:
            await client.consume(handler, [q], stop=stop)
    return Sample(n, t.wall, t.cpu)


async def okq_asyncio_producers(host: str, port: int, n: int) -> Sample:
    async with AsyncioClient(f"{host}:{port}", pool_size=PRODUCERS) as client:
        q = queue()
        per = n // PRODUCERS
        await asyncio.gather(*(client.ping() for _ in range(PRODUCERS)))

        async def produce() -> None:
            for _ in range(per):
                await client.push(q, PAYLOAD)

        with Timer() as t:
            await asyncio.gather(*(produce() for _ in range(PRODUCERS)))
    return Sample(per * PRODUCERS, t.wall, t.cpu)


# ------------------------------------------------------------------ redis.asyncio baseline


def _redis(host: str, port: int, connections: int = 1) -> Any:
    # protocol=2 and no CLIENT SETINFO: okq speaks RESP2 and knows neither HELLO nor CLIENT.
    timeouts: dict[str, Any] = {
        "socket_timeout": IO_TIMEOUT_S,
        "socket_connect_timeout": IO_TIMEOUT_S,
    }
    return redis.asyncio.Redis(
        host=host, port=port, protocol=2, driver_info=None, max_connections=connections, **timeouts
    )


async def redis_push(host: str, port: int, n: int) -> Sample:
    r = _redis(host, port)
    q = queue()
    await r.execute_command("PING")
    with Timer() as t:
        for _ in range(n):
            await r.execute_command("QLPUSH", q, new_id(), PAYLOAD)
    await r.aclose()
    return Sample(n, t.wall, t.cpu)


async def redis_batch(host: str, port: int, n: int) -> Sample:
    r = _redis(host, port)
    q = queue()
    await r.execute_command("PING")
    with Timer() as t:
        for _ in range(n // BATCH):
            pipe = r.pipeline(transaction=False)
            for _ in range(BATCH):
                pipe.execute_command("QLPUSH", q, new_id(), PAYLOAD)
            await pipe.execute()
    await r.aclose()
    return Sample(n // BATCH * BATCH, t.wall, t.cpu)


async def redis_consume(host: str, port: int, n: int) -> Sample:
    """What okq-go does on a busy queue: QNOTIFY, QRPOP, QACK, three round trips."""
    r = _redis(host, port)
    q = queue()
    pipe = r.pipeline(transaction=False)
    for _ in range(n):
        pipe.execute_command("QLPUSH", q, new_id(), PAYLOAD)
    await pipe.execute()
    await r.execute_command("QREGISTER", q)
    tries = 2 * n + 10  # n pops, plus a few empty QNOTIFY waits; run_one bounds the time
    with Timer() as t:
        done = 0
        for _ in range(tries):
            if done == n:
                break
            if await r.execute_command("QNOTIFY", 1) is None:
                continue
            event = await r.execute_command("QRPOP", q, "EX", 30)
            if event is None:
                continue
            await r.execute_command("QACK", q, event[0])
            done += 1
    await r.aclose()
    if done < n:
        raise Overrun(f"consume/redis.asyncio: {done} of {n} events after {tries} tries")
    return Sample(n, t.wall, t.cpu)


async def redis_producers(host: str, port: int, n: int) -> Sample:
    r = _redis(host, port, PRODUCERS)
    q = queue()
    per = n // PRODUCERS
    await asyncio.gather(*(r.execute_command("PING") for _ in range(PRODUCERS)))

    async def produce() -> None:
        for _ in range(per):
            await r.execute_command("QLPUSH", q, new_id(), PAYLOAD)

    with Timer() as t:
        await asyncio.gather(*(produce() for _ in range(PRODUCERS)))
    await r.aclose()
    return Sample(per * PRODUCERS, t.wall, t.cpu)


Bench = Callable[[str, int, int], Coroutine[Any, Any, Sample]]

#: name -> (runner, bench): every function of this module's table, in print order.
BENCHES: dict[str, tuple[str, Bench]] = {
    "push/bare-asyncio": ("asyncio", bare_asyncio_push),
    "push/okq-asyncio": ("asyncio", partial(okq_push, AsyncioClient)),
    "push/bare-trio": ("trio", bare_trio_push),
    "push/okq-trio": ("trio", partial(okq_push, open_client)),
    "push/redis.asyncio": ("asyncio", redis_push),
    "batch/okq-asyncio": ("asyncio", partial(okq_batch, AsyncioClient)),
    "batch/okq-trio": ("trio", partial(okq_batch, open_client)),
    "batch/redis.asyncio": ("asyncio", redis_batch),
    "consume/okq-asyncio": ("asyncio", partial(okq_consume, AsyncioClient, asyncio.Event)),
    "consume/okq-trio": ("trio", partial(okq_consume, open_client, trio.Event)),
    "consume/redis.asyncio": ("asyncio", redis_consume),
    "50-producers/bare-asyncio": ("asyncio", bare_asyncio_producers),
    "50-producers/okq-asyncio": ("asyncio", okq_asyncio_producers),
    "50-producers/redis.asyncio": ("asyncio", redis_producers),
}


def run_one(name: str, host: str, port: int, n: int, timeout_s: float = RUN_TIMEOUT_S) -> Sample:
    """Run one benchmark once, on a fresh event loop, within `timeout_s` (else `Overrun`)."""
    runner, bench = BENCHES[name]
    overrun = Overrun(f"{name}: {n} operations not done within its {timeout_s:g} s budget")
    if runner == "trio":

        async def bounded() -> Sample:
            with trio.fail_after(timeout_s):
                return await bench(host, port, n)

        try:
            return trio.run(bounded)
        except trio.TooSlowError as exc:
            raise overrun from exc
    started = time.monotonic()
    try:
        return asyncio.run(asyncio.wait_for(bench(host, port, n), timeout_s))
    except asyncio.TimeoutError as exc:
        if time.monotonic() - started < timeout_s:
            raise  # a read timeout inside the bench, not the budget
        raise overrun from exc


@contextlib.contextmanager
def server_process() -> Iterator[tuple[str, int]]:
    """``python -m okq_transports serve --port 0`` in a subprocess; yields its address."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "okq_transports", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        text=True,
    )
    try:
        assert proc.stdout is not None
        for _ in range(50):
            line = proc.stdout.readline()
            if "listening on" in line:
                host, port = line.rsplit(" ", 1)[1].strip().rsplit(":", 1)
                break
        else:
            raise RuntimeError("the okq server did not start")
        yield host, int(port)
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="operations per run")
    parser.add_argument("--runs", type=int, default=5, help="runs per benchmark (median)")
    parser.add_argument("--server", help="HOST:PORT of an okq server (default: a subprocess)")
    parser.add_argument(
        "--run-timeout",
        type=float,
        default=RUN_TIMEOUT_S,
        help=f"seconds one run of one benchmark may take ({RUN_TIMEOUT_S:g})",
    )
    args = parser.parse_args(argv)

    with contextlib.ExitStack() as stack:
        if args.server:
            host, port_text = args.server.rsplit(":", 1)
            port = int(port_text)
        else:
            host, port = stack.enter_context(server_process())
        # Rounds interleave every benchmark, so slow drifts of the machine's load hit all
        # of them alike; ratios are medians of the per-round ratios.
        rounds: list[dict[str, Sample]] = []
        for _ in range(args.runs):
            rounds.append(
                {name: run_one(name, host, port, args.n, args.run_timeout) for name in BENCHES}
            )
    for name in BENCHES:
        rate = statistics.median(r[name].rate for r in rounds)
        cpu = statistics.median(r[name].cpu_us for r in rounds)
        print(f"{name:28s} {rate:10.0f} ops/s {cpu:8.1f} us CPU/op")

    def ratio(a: str, b: str, cpu: bool) -> float:
        if cpu:
            return statistics.median(r[a].cpu_us / r[b].cpu_us for r in rounds)
        return statistics.median(r[a].rate / r[b].rate for r in rounds)

    print(f"\nmedians of {args.runs} runs of {args.n} operations; ratios: medians per round")
    cpu_asyncio = ratio("push/okq-asyncio", "push/bare-asyncio", True)
    cpu_trio = ratio("push/okq-trio", "push/bare-trio", True)
    vs_redis = ratio("50-producers/okq-asyncio", "50-producers/redis.asyncio", False)
    vs_bare = ratio("50-producers/okq-asyncio", "50-producers/bare-asyncio", False)
    print(f"client CPU per push, okq-asyncio / bare-asyncio: {cpu_asyncio:.2f}x (goal <= 1.3x)")
    print(f"client CPU per push, okq-trio / bare-trio:       {cpu_trio:.2f}x (goal <= 1.3x)")
    print(f"50 producers, okq-asyncio / redis.asyncio: {vs_redis:.2f}x throughput (goal >= 1.8x)")
    print(f"50 producers, okq-asyncio / bare-asyncio:  {vs_bare:.2f}x throughput")
    for kind in ("push", "batch", "consume"):
        for client in ("okq-asyncio", "okq-trio"):
            a, b = f"{kind}/{client}", f"{kind}/redis.asyncio"
            print(
                f"{kind:8s} {client} / redis.asyncio: {ratio(a, b, False):.2f}x throughput, "
                f"{ratio(a, b, True):.2f}x CPU/op"
            )


if __name__ == "__main__":
    main()
