"""``okq bench``: push N events and consume them at the same time, then report rates.

Owns: the bench's options, its producer (``push_many`` batches) and consumer (the sync client's
``consume``), the progress bar and the summary (push and consume rates, push-to-handler latency
percentiles).  Against the embedded server unless ``--server``/``OKQ_SERVER`` names one.
Must not know: the wire protocol.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
import uuid
from typing import Final

from okq_proto import Delivery

from ._common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Progress,
    embedded_or_given,
    one_line,
    percentile,
    positive_int,
)

__all__ = ["add_arguments", "run"]

_STAMP: Final = 20  # bytes of decimal perf_counter_ns at the start of each event's contents
_MIN_WAIT_S: Final = 30.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``bench`` options to its subparser."""
    p.add_argument("-n", "--events", type=positive_int, default=10_000, help="events (10000)")
    p.add_argument("--size", type=positive_int, default=100, help=f"contents bytes (>= {_STAMP})")
    p.add_argument("--batch", type=positive_int, default=100, help="events per push_many (100)")
    p.add_argument("--concurrency", type=positive_int, default=1, help="consumer connections (1)")
    p.add_argument("--queue", default=None, help="queue name (default: a fresh bench-XXXX)")
    p.add_argument("--timeout", type=float, default=None, help="give up after this many s (auto)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")


def run(args: argparse.Namespace) -> int:
    """Run the bench; returns the exit status."""
    if args.size < _STAMP:
        raise CliError(f"okq bench: error: --size must be at least {_STAMP}", EXIT_USAGE)
    from okq_transports.sync import Client

    total: int = args.events
    queue = args.queue or f"bench-{uuid.uuid4().hex[:8]}"
    timeout_s = args.timeout or max(_MIN_WAIT_S, total / 500)
    padding = b"." * (args.size - _STAMP)
    latencies: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()
    failure: list[BaseException] = []
    last_handled = [0.0]

    def handler(delivery: Delivery) -> bool:
        now = time.perf_counter_ns()
        sent = int(delivery.contents[:_STAMP])
        with lock:
            latencies.append((now - sent) / 1e6)
            last_handled[0] = time.perf_counter()
            if len(latencies) >= total:
                stop.set()
        return True

    with (
        embedded_or_given(getattr(args, "server", None)) as (address, embedded),
        Client(address=address) as client,
    ):
        where = f"{address} ({'embedded server' if embedded else 'server'})"
        print(
            f"okq bench: {total} events of {args.size} B on {where}, queue {queue}",
            file=sys.stderr,
        )

        def consume() -> None:
            try:
                client.consume(
                    handler, [queue], expire_seconds=30, concurrency=args.concurrency, stop=stop
                )
            except BaseException as exc:  # reported by the main thread
                failure.append(exc)
                stop.set()

        consumer = threading.Thread(target=consume, name="okq-bench-consumer", daemon=True)
        consumer.start()
        progress = Progress("bench", total)
        start = time.perf_counter()
        pushed = 0
        try:
            while pushed < total and not stop.is_set():
                count = min(args.batch, total - pushed)
                batch = [b"%020d" % time.perf_counter_ns() + padding for _ in range(count)]
                for outcome in client.push_many(queue, batch):
                    outcome.unwrap()
                pushed += count
                progress.update(len(latencies), f"pushed {pushed}")
            push_s = time.perf_counter() - start
            deadline = time.monotonic() + timeout_s
            while not stop.wait(0.05) and time.monotonic() < deadline:
                progress.update(len(latencies), f"pushed {pushed}")
            progress.update(len(latencies), f"pushed {pushed}", force=True)
            progress.close()
        finally:
            stop.set()
            consumer.join(timeout_s)
            with contextlib.suppress(Exception):
                client.flush(queue)
    if failure:
        raise CliError(f"bench: the consumer failed: {one_line(failure[0])}")
    done = len(latencies)
    consume_s = max(last_handled[0] - start, 1e-9)
    ordered = sorted(latencies)
    quantiles = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
    if args.json:
        print(
            json.dumps(
                {
                    "events": total,
                    "size": args.size,
                    "pushed": pushed,
                    "push_s": round(push_s, 6),
                    "consumed": done,
                    "consume_s": round(consume_s, 6),
                    "latency_ms": {name: round(percentile(ordered, q), 3) for name, q in quantiles},
                }
            )
        )
    else:
        _print_summary(pushed, push_s, done, consume_s, ordered, quantiles)
    if done < total:
        print(f"okq: error: only {done} of {total} events came back in time", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _print_summary(
    pushed: int,
    push_s: float,
    done: int,
    consume_s: float,
    ordered: list[float],
    quantiles: tuple[tuple[str, float], ...],
) -> None:
    print(f"pushed    {pushed} events in {push_s:.2f} s: {pushed / push_s:,.0f} events/s")
    print(f"consumed  {done} events in {consume_s:.2f} s: {done / consume_s:,.0f} events/s")
    print(
        "latency   push -> handler (ms): "
        + "  ".join(f"{name} {percentile(ordered, q):.2f}" for name, q in quantiles)
    )
