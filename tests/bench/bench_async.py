"""Async client benchmark: asyncio and trio clients against redis.asyncio and bare floors.

Run: ``python tests/bench/bench_async.py [--n 5000] [--runs 5] [--server HOST:PORT]``

Measures, in one run and against one server (an embedded okq server in a subprocess by
default, so its CPU is not counted): sequential push, pipelined batch push, consume+ack on a
busy queue at concurrency 1 and 8, and 50 concurrent producers; for the okq asyncio and trio
clients, for ``redis.asyncio`` sending the same commands (``protocol=2``, no HELLO / CLIENT
SETINFO) as the baseline, and for bare floors:

* ``bare-asyncio``: an asyncio Protocol with a ``hiredis.Reader``, sending commands encoded
  before the timed loop (push, 50 producers) or, when consuming, each ``QACK`` in the same
  write as the next ``QRPOP`` (one round trip per event, C connections at concurrency C);
* ``bare-enc-asyncio``: the same Protocol shape with okq_proto's encoder (id and command made
  inside the loop) and its pure decoder;
* ``bare-trio``: trio streams with okq_proto's codec.

A consume run is timed from the call to the n-th event (okq: its handler; bare: the last
connection's empty pop), so connection set-up is inside, okq's shutdown is not.  Prints
medians of ``--runs`` runs: operations per second and client CPU (process time) per
operation; each ratio is the median of the per-round ratios of two benchmarks, the rounds
interleaving every benchmark.

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
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import redis.asyncio
import trio

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from okq_proto import Event  # noqa: E402
from okq_transports.asyncio import Client as AsyncioClient  # noqa: E402
from okq_transports.trio import open_client  # noqa: E402
from tests.bench.async_floors import (  # noqa: E402
    BATCH,
    CONSUMERS,
    PAYLOAD,
    PRODUCERS,
    Overrun,
    Sample,
    Timer,
    bare_asyncio_consume,
    bare_asyncio_producers,
    bare_asyncio_push,
    bare_enc_asyncio_producers,
    bare_enc_asyncio_push,
    bare_trio_push,
    new_id,
    queue,
)

#: The longest one read of the redis.asyncio baseline may wait.
IO_TIMEOUT_S = 10.0
#: The default time budget of one run of one benchmark.
RUN_TIMEOUT_S = 120.0


# -------------------------------------------------------------------------- okq clients


class OkqClient(Protocol):
    """What the benches use of an okq async client (asyncio's and trio's have these)."""

    async def ping(self) -> object: ...

    async def push(self, queue: str, contents: bytes) -> str: ...

    async def push_many(self, queue: str, contents: list[bytes]) -> Sequence[object]: ...

    async def consume(
        self, handler: Callable[[Any], bool], queues: Sequence[str], *, concurrency: int, stop: Any
    ) -> None: ...


#: Opens an okq client (asyncio's or trio's: same methods) for an ``async with`` block.
OpenOkq = Callable[[str], AbstractAsyncContextManager[OkqClient]]
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
    open_okq: OpenOkq, new_event: NewEvent, host: str, port: int, n: int, concurrency: int = 1
) -> Sample:
    """Consume n prefilled events, timed from the call to the n-th event's handler; the run's
    time budget (`run_one`) cancels it if some never come."""
    async with open_okq(f"{host}:{port}") as client:
        q = queue()
        await client.push_many(q, [PAYLOAD] * n)
        stop, count = new_event(), [0]
        end: list[tuple[float, float]] = []

        def handler(delivery: Event) -> bool:
            count[0] += 1
            if count[0] == n:
                end.append((time.perf_counter(), time.process_time()))
                stop.set()
            return True

        wall0, cpu0 = time.perf_counter(), time.process_time()
        await client.consume(handler, [q], concurrency=concurrency, stop=stop)
    if not end:
        raise Overrun(f"consume: {count[0]} of {n} events, and the consumer stopped")
    return Sample(n, end[0][0] - wall0, end[0][1] - cpu0)


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
    "push/bare-enc-asyncio": ("asyncio", bare_enc_asyncio_push),
    "push/okq-asyncio": ("asyncio", partial(okq_push, AsyncioClient)),
    "push/bare-trio": ("trio", bare_trio_push),
    "push/okq-trio": ("trio", partial(okq_push, open_client)),
    "push/redis.asyncio": ("asyncio", redis_push),
    "batch/okq-asyncio": ("asyncio", partial(okq_batch, AsyncioClient)),
    "batch/okq-trio": ("trio", partial(okq_batch, open_client)),
    "batch/redis.asyncio": ("asyncio", redis_batch),
    "consume/bare-asyncio": ("asyncio", bare_asyncio_consume),
    "consume/okq-asyncio": ("asyncio", partial(okq_consume, AsyncioClient, asyncio.Event)),
    "consume/okq-trio": ("trio", partial(okq_consume, open_client, trio.Event)),
    "consume/redis.asyncio": ("asyncio", redis_consume),
    "consume8/bare-asyncio": ("asyncio", partial(bare_asyncio_consume, concurrency=CONSUMERS)),
    "consume8/okq-asyncio": (
        "asyncio",
        partial(okq_consume, AsyncioClient, asyncio.Event, concurrency=CONSUMERS),
    ),
    "50-producers/bare-asyncio": ("asyncio", bare_asyncio_producers),
    "50-producers/bare-enc-asyncio": ("asyncio", bare_enc_asyncio_producers),
    "50-producers/okq-asyncio": ("asyncio", okq_asyncio_producers),
    "50-producers/redis.asyncio": ("asyncio", redis_producers),
}

#: (label, benchmark, baseline, cpu?, goal): the ratios the issue sets goals for, printed first.
GOALS = (
    (
        "50 producers throughput, okq-asyncio / bare-asyncio",
        "50-producers",
        "bare",
        False,
        ">= 0.9",
    ),
    ("50 producers CPU/push,   okq-asyncio / bare-asyncio", "50-producers", "bare", True, "<= 1.3"),
    ("consume c=1 events/s,    okq-asyncio / bare-asyncio", "consume", "bare", False, ">= 0.9"),
    ("consume c=1 CPU/event,   okq-asyncio / bare-asyncio", "consume", "bare", True, "<= 1.3"),
    ("consume c=8 events/s,    okq-asyncio / bare-asyncio", "consume8", "bare", False, ">= 0.9"),
    ("consume c=8 CPU/event,   okq-asyncio / bare-asyncio", "consume8", "bare", True, "<= 1.3"),
    ("push CPU/push,           okq-asyncio / bare-asyncio", "push", "bare", True, ""),
    (
        "50 producers CPU/push,   okq-asyncio / bare-enc-asyncio",
        "50-producers",
        "bare-enc",
        True,
        "",
    ),
)


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
    for label, kind, base, cpu, goal in GOALS:
        value = ratio(f"{kind}/okq-asyncio", f"{kind}/{base}-asyncio", cpu)
        print(f"{label}: {value:.2f}x{f' (goal {goal})' if goal else ''}")
    cpu_trio = ratio("push/okq-trio", "push/bare-trio", True)
    vs_redis = ratio("50-producers/okq-asyncio", "50-producers/redis.asyncio", False)
    print(f"client CPU per push, okq-trio / bare-trio:       {cpu_trio:.2f}x")
    print(f"50 producers, okq-asyncio / redis.asyncio: {vs_redis:.2f}x throughput (goal >= 1.8x)")
    for kind in ("push", "batch", "consume"):
        for client in ("okq-asyncio", "okq-trio"):
            a, b = f"{kind}/{client}", f"{kind}/redis.asyncio"
            print(
                f"{kind:8s} {client} / redis.asyncio: {ratio(a, b, False):.2f}x throughput, "
                f"{ratio(a, b, True):.2f}x CPU/op"
            )


if __name__ == "__main__":
    main()
