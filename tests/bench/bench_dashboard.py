"""What the dashboard's sampler costs with many queues, against a bare ``QSTATUS`` of the
same server measured in the same run.

    python tests/bench/bench_dashboard.py [--server HOST:PORT] [--queues 10000] [--runs 7]

Without ``--server`` an embedded server is started and filled with one event per queue (a
server named with ``--server`` is read as it is).  Prints, as medians of ``--runs``: a bare
``client.status()``; ``Sampler.sample_once`` (that QSTATUS, a PING and the history update);
``Sampler.view`` of one page of 50 rows serialised as the page stream sends it, and that
message's size; the ratio sample / bare.  Every loop is bounded by ``--runs``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence

from okq_transports.dashboard._sampler import Sampler
from okq_transports.server import ThreadedServer
from okq_transports.sync import Client


def _median_s(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(address: str, runs: int) -> dict[str, float]:
    """The medians for the server at `address` (see the module)."""
    with Client(address) as client:
        bare_s = _median_s(client.status, runs)
    sampler = Sampler([address], interval_s=60)
    try:
        sample_s = _median_s(sampler.sample_once, runs)
        message = [""]

        def view() -> None:
            message[0] = json.dumps(sampler.view(page=3), separators=(",", ":"))

        view_s = _median_s(view, runs)
        queues = len(sampler.servers[0].history.latest)
    finally:
        sampler.stop()
    return {
        "queues": queues,
        "bare_status_ms": bare_s * 1000,
        "sample_ms": sample_s * 1000,
        "view_ms": view_s * 1000,
        "message_bytes": len(message[0]),
        "sample_over_bare": sample_s / bare_s,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=None, help="an okq server (default: embedded)")
    parser.add_argument("--queues", type=int, default=10_000, help="queues to make (embedded)")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    if args.server is not None:
        result = measure(args.server, args.runs)
    else:
        with ThreadedServer("127.0.0.1", 0) as server, Client(server.address) as client:
            for n in range(args.queues):
                client.push(f"q{n:05d}", b"x")
            result = measure(server.address, args.runs)
    for name, value in result.items():
        print(f"{name:18} {value:,.2f}" if isinstance(value, float) else f"{name:18} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
