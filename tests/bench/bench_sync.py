"""Client-side cost of the sync client, beside redis-py and bare sockets, in one run.

Run as a script::

    python tests/bench/bench_sync.py [--server HOST:PORT] [--events 5000] [--runs 5]

Without ``--server`` the embedded server runs in a subprocess
(``python -m okq_transports serve --port 0``), so ``time.process_time`` of this process is the
client's CPU only.  Workloads:

* push: sequential ``QLPUSH q <uuid4> <100 B>`` round trips.  okq: ``Client.push``; redis-py
  (``protocol=2``, no HELLO / CLIENT SETINFO): ``execute_command``; bare: one socket and a
  ``hiredis.Reader``, sending commands encoded before the timed loop (the floor: no id, no
  encoding, no checks); bare-enc: one socket, the id made and the command encoded by
  okq_proto inside the loop, okq_proto's decoder.
* push_many: batches of ``--batch`` pushes in one write.  okq: ``Client.push_many``; redis-py:
  a non-transactional pipeline; bare: one pre-encoded write per batch, then the replies
  (hiredis).
* consume (concurrency 1) and consume8 (concurrency 8): pop and ack a prefilled queue.  okq:
  ``Client.consume(concurrency=C)`` (drain + ack pipelined with the next pop: one round trip
  per event); bare: C threads, each with one socket and a ``hiredis.Reader``, sending each
  ``QACK`` in the same write as the next ``QRPOP``; redis-py (concurrency 1 only): the okq-go
  loop (``QNOTIFY`` -> ``QRPOP q EX 30`` -> ``QACK``: three round trips).  A consume run is
  timed from the call to the n-th event's handler (okq) or to the last thread's empty pop
  (bare): connection set-up is inside both, okq's shutdown is not.

The clients of a workload take turns inside each run (push, push_many: in rounds; consume:
one after the other), so a noisy neighbour hits them alike.  Rows give events/s (wall) and
client CPU per event in microseconds, medians of ``--runs``; each ratio is the median of the
per-run ratios of two clients measured in the same run.

Every run is bounded: each load loop stops after its count of events, each run has a time
budget (``--run-timeout``, checked once per event) and every socket a read timeout, so a lost
connection or a lost event ends the bench with `Overrun` or `ConnectionError` instead of a hang.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from okq_proto import Delivery  # noqa: E402
from okq_transports.sync import Client  # noqa: E402
from tests.bench import sync_floors as floors  # noqa: E402
from tests.bench.bench_server import okq_server  # noqa: E402
from tests.bench.sync_floors import (  # noqa: E402
    IO_TIMEOUT_S,
    PAYLOAD,
    Bare,
    Budget,
    HiredisBare,
    Overrun,
    Sample,
    consume_bare,
    measure,
    push_bare,
    push_bare_enc,
    push_many_bare,
)

# -- clients ---------------------------------------------------------------------------------------


def redis_client(host: str, port: int) -> redis.Redis:
    """redis-py speaking plain RESP2 with no handshake: okq knows no HELLO or CLIENT.

    ``protocol=2`` sends no HELLO; a `DriverInfo` without name and version (redis-py 8.1;
    ``lib_name=None, lib_version=None`` before it) sends no CLIENT SETINFO.
    """
    timeouts: dict[str, Any] = {
        "socket_timeout": IO_TIMEOUT_S,
        "socket_connect_timeout": IO_TIMEOUT_S,
    }
    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # redis-py < 8.1
        return redis.Redis(
            host=host, port=port, protocol=2, lib_name=None, lib_version=None, **timeouts
        )
    no_info = DriverInfo(name=None, lib_version=None)
    return redis.Redis(host=host, port=port, protocol=2, driver_info=no_info, **timeouts)


# -- workloads -------------------------------------------------------------------------------------


PUSHERS = ("okq", "redis-py", "bare", "bare-enc")
BATCHERS = ("okq", "redis-py", "bare")
Live = dict[str, "Client | redis.Redis | Bare | HiredisBare"]


@contextmanager
def opened(host: str, port: int) -> Iterator[Live]:
    """One connected client of each kind (connection set-up is not measured)."""
    okq = Client(f"{host}:{port}")
    okq.ping()
    r = redis_client(host, port)
    r.execute_command("PING")  # type: ignore[no-untyped-call]
    bare = HiredisBare(host, port)
    bare_enc = Bare(host, port)
    try:
        yield {"okq": okq, "redis-py": r, "bare": bare, "bare-enc": bare_enc}
    finally:
        okq.close()
        r.close()
        bare.close()
        bare_enc.close()


def push_okq(client: object, queue: str, n: int, batch: int, budget: Budget) -> Sample:
    assert isinstance(client, Client)
    push = client.push

    def run() -> int:
        for _ in range(n):
            budget.check()
            push(queue, PAYLOAD)
        return n

    return measure(run)


def push_redis(client: object, queue: str, n: int, batch: int, budget: Budget) -> Sample:
    assert isinstance(client, redis.Redis)
    ex = client.execute_command
    q = queue.encode()

    def run() -> int:
        for _ in range(n):
            budget.check()
            ex("QLPUSH", q, str(uuid.uuid4()), PAYLOAD)  # type: ignore[no-untyped-call]
        return n

    return measure(run)


def push_many_okq(client: object, queue: str, n: int, batch: int, budget: Budget) -> Sample:
    assert isinstance(client, Client)

    def run() -> int:
        for start in range(0, n, batch):
            budget.check()
            client.push_many(queue, [PAYLOAD] * min(batch, n - start))
        return n

    return measure(run)


def push_many_redis(client: object, queue: str, n: int, batch: int, budget: Budget) -> Sample:
    assert isinstance(client, redis.Redis)
    q = queue.encode()

    def run() -> int:
        for start in range(0, n, batch):
            budget.check()
            pipe = client.pipeline(transaction=False)
            for _ in range(min(batch, n - start)):
                pipe.execute_command(  # type: ignore[no-untyped-call]
                    "QLPUSH", q, str(uuid.uuid4()), PAYLOAD
                )
            pipe.execute()
        return n

    return measure(run)


def consume_okq(address: str, queue: str, n: int, budget: Budget, concurrency: int = 1) -> Sample:
    """``Client.consume`` of n prefilled events, timed up to the n-th event's handler."""
    floors.prefill(address, queue, n)
    stop = threading.Event()
    counter = itertools.count(1)  # next() on it is atomic: handlers run in several threads
    end: list[tuple[float, float]] = []

    def handler(delivery: Delivery) -> bool:
        if next(counter) == n:
            end.append((time.perf_counter(), time.process_time()))
            stop.set()
        return True

    # consume checks `stop` after every event and every 0.1 s while it waits: the timer ends
    # the run at the deadline even when events went missing
    timer = threading.Timer(max(0.0, budget.deadline - time.monotonic()), stop.set)
    timer.daemon = True
    with Client(
        address, notify_timeout_s=1, read_timeout_s=IO_TIMEOUT_S, pool_size=concurrency + 1
    ) as client:
        timer.start()
        try:
            cpu, wall = time.process_time(), time.perf_counter()
            client.consume(handler, [queue], concurrency=concurrency, stop=stop)
        finally:
            timer.cancel()
    if not end:
        got = next(counter) - 1
        raise Overrun(f"{budget.what}: {got} of {n} events within {budget.seconds:g} s")
    return n, end[0][0] - wall, end[0][1] - cpu


def consume_redis_okq_go(
    host: str, port: int, queue: str, n: int, address: str, budget: Budget
) -> Sample:
    floors.prefill(address, queue, n)
    r = redis_client(host, port)
    q = queue.encode()

    def run() -> int:
        conn = r.connection_pool.get_connection()
        try:
            conn.send_command("QREGISTER", q)  # type: ignore[no-untyped-call]
            conn.read_response()
            done = 0
            # n pops, plus a few empty QNOTIFY waits or lost races; the budget bounds the time
            for _ in range(2 * n + 10):
                if done == n:
                    break
                budget.check()
                conn.send_command("QNOTIFY", 1)  # type: ignore[no-untyped-call]
                name = conn.read_response()
                if name is None:
                    continue
                conn.send_command("QRPOP", name, "EX", 30)  # type: ignore[no-untyped-call]
                event = conn.read_response()
                if event is None:
                    continue
                conn.send_command("QACK", name, event[0])  # type: ignore[no-untyped-call]
                conn.read_response()
                done += 1
            if done < n:
                raise Overrun(f"{budget.what}: {done} of {n} events after {2 * n + 10} tries")
            return done
        finally:
            r.connection_pool.release(conn)

    try:
        return measure(run)
    finally:
        r.close()


# -- report ----------------------------------------------------------------------------------------


def median_rates(samples: list[Sample]) -> tuple[float, float]:
    """(events/s, client CPU us per event), medians over runs."""
    rate = statistics.median(e / w for e, w, _ in samples)
    cpu_us = statistics.median(c / e * 1e6 for e, _, c in samples)
    return rate, cpu_us


def per_run_ratio(a: list[Sample], b: list[Sample], cpu: bool) -> float:
    """Median over runs of a's rate (or CPU per event) over b's, in the same run."""
    if cpu:
        return statistics.median(
            (ca / ea) / (cb / eb) for (ea, _, ca), (eb, _, cb) in zip(a, b, strict=True)
        )
    return statistics.median(
        (ea / wa) / (eb / wb) for (ea, wa, _), (eb, wb, _) in zip(a, b, strict=True)
    )


#: (label, workload, client, baseline, cpu?, goal text): the printed ratios.
RATIOS = (
    ("push cpu okq/bare", "push", "okq", "bare", True, "<= 1.5"),
    ("push cpu okq/redis-py", "push", "okq", "redis-py", True, "<= 0.6"),
    ("push cpu okq/bare-enc", "push", "okq", "bare-enc", True, ""),
    ("push rate okq/redis-py", "push", "okq", "redis-py", False, ""),
    ("push_many cpu okq/bare", "push_many", "okq", "bare", True, ""),
    ("consume rate okq/bare", "consume", "okq", "bare", False, ">= 0.9"),
    ("consume cpu okq/bare", "consume", "okq", "bare", True, "<= 1.3"),
    ("consume8 rate okq/bare", "consume8", "okq", "bare", False, ">= 0.9"),
    ("consume8 cpu okq/bare", "consume8", "okq", "bare", True, "<= 1.3"),
    ("consume rate okq/okq-go-loop", "consume", "okq", "redis-py", False, ""),
)


def bench(
    host: str,
    port: int,
    events: int,
    runs: int,
    batch: int,
    out: Callable[[str], None] = print,
    run_timeout_s: float = 120.0,
) -> dict[str, dict[str, tuple[float, float]]]:
    """Run every workload `runs` times, interleaved, and print the table; return the medians.

    Each run (all rounds of one workload, or one client's consume) must end within
    `run_timeout_s`, else `Overrun`.
    """
    address = f"{host}:{port}"
    q = f"bench-{uuid.uuid4()}"
    samples: dict[str, dict[str, list[Sample]]] = {}
    out(f"{events} events per run, median of {runs} runs, server {address}")
    # Sequential pushes and batches: the clients take turns in small rounds inside each run,
    # so a noisy neighbour on the machine hits them alike.
    rounds = max(1, min(10, events // max(batch, 100)))
    chunk = max(1, events // rounds)
    for name, clients, fns in (
        ("push", PUSHERS, (push_okq, push_redis, push_bare, push_bare_enc)),
        ("push_many", BATCHERS, (push_many_okq, push_many_redis, push_many_bare)),
    ):
        samples[name] = {c: [] for c in clients}
        for run in range(runs):
            budget = Budget(f"{name} run {run + 1}", run_timeout_s)
            with opened(host, port) as live:
                totals = {who: [0.0, 0.0, 0.0] for who in clients}
                for _ in range(rounds):
                    for who, work in zip(clients, fns, strict=True):
                        for i, value in enumerate(work(live[who], q, chunk, batch, budget)):
                            totals[who][i] += value
                okq_client = live["okq"]
                assert isinstance(okq_client, Client)
                okq_client.flush(q)
            for who in clients:
                count, wall, cpu = totals[who]
                samples[name][who].append((int(count), wall, cpu))
    consumers: dict[str, dict[str, Callable[[Budget], Sample]]] = {
        "consume": {
            "okq": lambda b: consume_okq(address, q + "c", events, b),
            "redis-py": lambda b: consume_redis_okq_go(host, port, q + "c", events, address, b),
            "bare": lambda b: consume_bare(host, port, q + "c", events, address, b),
        },
        "consume8": {
            "okq": lambda b: consume_okq(address, q + "c8", events, b, 8),
            "bare": lambda b: consume_bare(host, port, q + "c8", events, address, b, 8),
        },
    }
    for name, table in consumers.items():
        samples[name] = {who: [] for who in table}
    for run in range(runs):
        for name, table in consumers.items():
            for who, consume in table.items():
                budget = Budget(f"{name} {who} run {run + 1}", run_timeout_s)
                samples[name][who].append(consume(budget))
    results = {
        name: {who: median_rates(s) for who, s in rows.items()} for name, rows in samples.items()
    }
    out(f"{'workload':<10} {'client':<9} {'events/s':>10} {'cpu us/ev':>10}")
    for name, rows in results.items():
        for who, (rate, cpu_us) in rows.items():
            out(f"{name:<10} {who:<9} {rate:>10.0f} {cpu_us:>10.1f}")
    out("ratios (median of per-run ratios), goal:")
    for label, name, a, b, cpu, goal in RATIOS:
        value = per_run_ratio(samples[name][a], samples[name][b], cpu)
        out(f"  {label:<29} {value:5.2f}  {f'({goal})' if goal else ''}".rstrip())
    out(f"  {'push_many cpu us/event':<29} {results['push_many']['okq'][1]:5.1f}  (<= 40)")
    return results


@contextmanager
def server_address(server: str | None) -> Iterator[tuple[str, int]]:
    if server is None:
        with okq_server() as address:
            yield address
        return
    host, port = server.rsplit(":", 1)
    yield host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", help="HOST:PORT of any okq server (default: embedded)")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument(
        "--run-timeout", type=float, default=120.0, help="seconds one run may take (120)"
    )
    args = parser.parse_args(argv)
    with server_address(args.server) as (host, port):
        bench(host, port, args.events, args.runs, args.batch, run_timeout_s=args.run_timeout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
