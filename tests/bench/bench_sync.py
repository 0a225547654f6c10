"""Client-side cost of the sync client, beside redis-py and a bare socket, in one run.

Run as a script::

    python tests/bench/bench_sync.py [--server HOST:PORT] [--events 5000] [--runs 5]

Without ``--server`` the embedded server runs in a subprocess
(``python -m okq_transports serve --port 0``), so ``time.process_time`` of this process is the
client's CPU only.  Workloads, each measured for three clients:

* push: sequential ``QLPUSH q <uuid4> <100 B>`` round trips.  okq: ``Client.push``; redis-py
  (``protocol=2``, no HELLO / CLIENT SETINFO): ``execute_command``; bare: one socket, our
  encoder, the hiredis-backed decoder.
* push_many: batches of ``--batch`` pushes in one write.  okq: ``Client.push_many``; redis-py:
  a non-transactional pipeline; bare: one write, then the replies.
* consume: pop and ack a prefilled queue.  okq: ``Client.consume`` (drain + ack pipelined with
  the next pop: one round trip per event); redis-py: the okq-go loop (``QNOTIFY`` ->
  ``QRPOP q EX 30`` -> ``QACK``: three round trips); bare: the pipelined QACK+QRPOP loop on one
  socket (the floor of what okq's strategy costs).

Rows give events/s (wall) and client CPU per event in microseconds, medians of ``--runs``;
the ratios are the ones the issue sets goals for.

Every run is bounded: each load loop stops after its count of events, each run has a time
budget (``--run-timeout``, checked once per event) and every socket a read timeout, so a lost
connection or a lost event ends the bench with `Overrun` or `ConnectionError` instead of a hang.
"""

from __future__ import annotations

import argparse
import socket
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

from okq_proto import (  # noqa: E402
    NEED_DATA,
    Delivery,
    encode_command,
    encode_commands,
    make_decoder,
)
from okq_transports.sync import Client  # noqa: E402
from tests.bench.bench_server import okq_server  # noqa: E402

PAYLOAD = b"x" * 100
#: The longest any one socket read may wait.
IO_TIMEOUT_S = 10.0

# (events, wall seconds, cpu seconds)
Sample = tuple[int, float, float]


class Overrun(RuntimeError):
    """A run went past its time budget or its count of tries, or ended without all its events."""


class Budget:
    """How long one run may take; `check` raises `Overrun` once that is up."""

    def __init__(self, what: str, seconds: float) -> None:
        self.what, self.seconds = what, seconds
        self.deadline = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise Overrun(f"{self.what}: not done within its {self.seconds:g} s budget")


def measure(fn: Callable[[], int]) -> Sample:
    cpu, wall = time.process_time(), time.perf_counter()
    events = fn()
    return events, time.perf_counter() - wall, time.process_time() - cpu


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


class Bare:
    """The floor: one blocking socket, our encoder, the decoder okq_proto picks."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=IO_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = make_decoder()
        self.buf = bytearray(65536)

    def replies(self, count: int) -> list[object]:
        out: list[object] = []
        while len(out) < count:
            reply = self.decoder.next_reply()
            if reply is NEED_DATA:
                n = self.sock.recv_into(self.buf)  # at most IO_TIMEOUT_S, then TimeoutError
                if n == 0:
                    raise ConnectionError(
                        f"the server closed the connection with {count - len(out)} "
                        "replies still due"
                    )
                self.decoder.feed(memoryview(self.buf)[:n])
                continue
            out.append(reply)
        return out

    def call(self, *argv: bytes) -> object:
        self.sock.sendall(encode_command(argv))
        return self.replies(1)[0]

    def close(self) -> None:
        self.sock.close()


# -- workloads -------------------------------------------------------------------------------------


CLIENTS = ("okq", "redis-py", "bare")
Live = dict[str, "Client | redis.Redis | Bare"]


@contextmanager
def opened(host: str, port: int) -> Iterator[Live]:
    """One connected client of each kind (connection set-up is not measured)."""
    okq = Client(f"{host}:{port}")
    okq.ping()
    r = redis_client(host, port)
    r.execute_command("PING")  # type: ignore[no-untyped-call]
    bare = Bare(host, port)
    try:
        yield {"okq": okq, "redis-py": r, "bare": bare}
    finally:
        okq.close()
        r.close()
        bare.close()


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


def push_bare(client: object, queue: str, n: int, batch: int, budget: Budget) -> Sample:
    assert isinstance(client, Bare)
    q = queue.encode()

    def run() -> int:
        for _ in range(n):
            budget.check()
            client.call(b"QLPUSH", q, str(uuid.uuid4()).encode(), PAYLOAD)
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


def push_many_bare(client: object, queue: str, n: int, batch: int, budget: Budget) -> Sample:
    assert isinstance(client, Bare)
    q = queue.encode()

    def run() -> int:
        for start in range(0, n, batch):
            budget.check()
            count = min(batch, n - start)
            argvs = [(b"QLPUSH", q, str(uuid.uuid4()).encode(), PAYLOAD) for _ in range(count)]
            client.sock.sendall(encode_commands(argvs))
            client.replies(count)
        return n

    return measure(run)


def prefill(address: str, queue: str, n: int) -> None:
    with Client(address) as client:
        client.flush(queue)
        for start in range(0, n, 1000):
            client.push_many(queue, [PAYLOAD] * min(1000, n - start))


def consume_okq(address: str, queue: str, n: int, budget: Budget) -> Sample:
    prefill(address, queue, n)
    stop = threading.Event()
    count = 0

    def handler(delivery: Delivery) -> bool:
        nonlocal count
        count += 1
        if count == n:
            stop.set()
        return True

    # consume checks `stop` after every event and every 0.1 s while it waits: the timer ends
    # the run at the deadline even when events went missing
    timer = threading.Timer(max(0.0, budget.deadline - time.monotonic()), stop.set)
    timer.daemon = True
    with Client(address, notify_timeout_s=1, read_timeout_s=IO_TIMEOUT_S) as client:

        def run() -> int:
            client.consume(handler, [queue], stop=stop)
            if count < n:
                raise Overrun(f"{budget.what}: {count} of {n} events within {budget.seconds:g} s")
            return count

        timer.start()
        try:
            return measure(run)
        finally:
            timer.cancel()


def consume_redis_okq_go(
    host: str, port: int, queue: str, n: int, address: str, budget: Budget
) -> Sample:
    prefill(address, queue, n)
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


def consume_bare(host: str, port: int, queue: str, n: int, address: str, budget: Budget) -> Sample:
    prefill(address, queue, n)
    bare = Bare(host, port)
    q = queue.encode()

    def run() -> int:
        done = 0
        event = bare.call(b"QRPOP", q, b"EX", b"30")
        while event is not None:
            assert isinstance(event, list)
            if done == n:
                raise Overrun(f"{budget.what}: more than the {n} events it pushed")
            budget.check()
            done += 1
            bare.sock.sendall(
                encode_commands([(b"QACK", q, event[0]), (b"QRPOP", q, b"EX", b"30")])
            )
            _ack, event = bare.replies(2)
        if done < n:
            raise Overrun(f"{budget.what}: the queue ran dry after {done} of {n} events")
        return done

    try:
        return measure(run)
    finally:
        bare.close()


# -- report ----------------------------------------------------------------------------------------


def median_rates(samples: list[Sample]) -> tuple[float, float]:
    """(events/s, client CPU us per event), medians over runs."""
    rate = statistics.median(e / w for e, w, _ in samples)
    cpu_us = statistics.median(c / e * 1e6 for e, _, c in samples)
    return rate, cpu_us


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
    results: dict[str, dict[str, tuple[float, float]]] = {}
    out(f"{events} events per run, median of {runs} runs, server {address}")
    out(f"{'workload':<10} {'client':<9} {'events/s':>10} {'cpu us/ev':>10}")
    # Sequential pushes and batches: the three clients take turns in small rounds inside each
    # run, so a noisy neighbour on the machine hits all three alike.
    rounds = max(1, min(10, events // max(batch, 100)))
    chunk = max(1, events // rounds)
    for name, fns in (
        ("push", (push_okq, push_redis, push_bare)),
        ("push_many", (push_many_okq, push_many_redis, push_many_bare)),
    ):
        samples: dict[str, list[Sample]] = {c: [] for c in CLIENTS}
        for run in range(runs):
            budget = Budget(f"{name} run {run + 1}", run_timeout_s)
            with opened(host, port) as live:
                totals = {who: [0.0, 0.0, 0.0] for who in CLIENTS}
                for _ in range(rounds):
                    for who, work in zip(CLIENTS, fns, strict=True):
                        for i, value in enumerate(work(live[who], q, chunk, batch, budget)):
                            totals[who][i] += value
                okq_client = live["okq"]
                assert isinstance(okq_client, Client)
                okq_client.flush(q)
            for who in CLIENTS:
                count, wall, cpu = totals[who]
                samples[who].append((int(count), wall, cpu))
        results[name] = {who: median_rates(s) for who, s in samples.items()}
        for who, (rate, cpu_us) in results[name].items():
            out(f"{name:<10} {who:<9} {rate:>10.0f} {cpu_us:>10.1f}")
    consumers: dict[str, Callable[[Budget], Sample]] = {
        "okq": lambda b: consume_okq(address, q + "c", events, b),
        "redis-py": lambda b: consume_redis_okq_go(host, port, q + "c", events, address, b),
        "bare": lambda b: consume_bare(host, port, q + "c", events, address, b),
    }
    consumed: dict[str, list[Sample]] = {who: [] for who in CLIENTS}
    for run in range(runs):
        for who, consume in consumers.items():
            consumed[who].append(consume(Budget(f"consume {who} run {run + 1}", run_timeout_s)))
    results["consume"] = {who: median_rates(s) for who, s in consumed.items()}
    for who, (rate, cpu_us) in results["consume"].items():
        out(f"{'consume':<10} {who:<9} {rate:>10.0f} {cpu_us:>10.1f}")
    p, pm, c = results["push"], results["push_many"], results["consume"]
    out("goals:")
    out(f"  push cpu okq/bare      {p['okq'][1] / p['bare'][1]:.2f}  (<= 1.3)")
    out(f"  push cpu okq/redis-py  {p['okq'][1] / p['redis-py'][1]:.2f}  (about 0.55)")
    out(f"  push rate okq/redis-py {p['okq'][0] / p['redis-py'][0]:.2f}  (>= 1.1)")
    out(f"  push_many cpu us/event {pm['okq'][1]:.1f}  (<= 40)")
    out(f"  consume rate okq/okq-go-loop {c['okq'][0] / c['redis-py'][0]:.2f}  (>= 2)")
    out(f"  consume cpu okq/bare   {c['okq'][1] / c['bare'][1]:.2f}  (<= 1.3)")
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
