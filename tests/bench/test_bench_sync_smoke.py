"""The sync client benchmark still runs: every workload and client once, at a tiny size."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import pytest

from okq_transports.server import ThreadedServer
from tests.bench import bench_sync, sync_floors


@pytest.mark.timeout(60)
def test_bench_sync_runs_every_row(okq_server: ThreadedServer) -> None:
    lines: list[str] = []
    results = bench_sync.bench(
        okq_server.host, okq_server.port, events=40, runs=1, batch=10, out=lines.append
    )
    assert {name: set(rows) for name, rows in results.items()} == {
        "push": {"okq", "redis-py", "bare", "bare-enc"},
        "push_many": {"okq", "redis-py", "bare"},
        "consume": {"okq", "redis-py", "bare"},
        "consume8": {"okq", "bare"},
    }
    for rows in results.values():
        for rate, cpu_us in rows.values():
            assert rate > 0
            assert cpu_us > 0
    ratios = [
        line.split() for line in lines[lines.index("ratios (median of per-run ratios), goal:") :]
    ]
    labels = {" ".join(words[:3]) for words in ratios[1:]}
    for label in (
        "push cpu okq/bare",
        "push cpu okq/redis-py",
        "consume rate okq/bare",
        "consume cpu okq/bare",
        "consume8 rate okq/bare",
        "consume8 cpu okq/bare",
    ):
        assert label in labels
    for words in ratios[1:]:
        assert float(words[3]) > 0  # a number, whatever its size: the smoke test times nothing


def test_a_run_over_its_budget_stops_with_a_clear_error(okq_server: ThreadedServer) -> None:
    with pytest.raises(sync_floors.Overrun, match="push run 1: not done within its 0 s budget"):
        bench_sync.bench(
            okq_server.host, okq_server.port, events=40, runs=1, batch=10, run_timeout_s=0
        )


@pytest.mark.timeout(30)
@pytest.mark.parametrize("who", ["okq", "okq-8", "redis-py", "bare", "bare-8"])
def test_consume_with_missing_events_stops_by_itself(
    who: str, okq_server: ThreadedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_prefill = sync_floors.prefill
    monkeypatch.setattr(sync_floors, "prefill", lambda a, q, n: real_prefill(a, q, n - 1))
    host, port, address = okq_server.host, okq_server.port, okq_server.address
    budget = sync_floors.Budget(f"consume {who}", 0.5)
    runs: dict[str, Callable[[], sync_floors.Sample]] = {
        "okq": lambda: bench_sync.consume_okq(address, "lost", 5, budget),
        "okq-8": lambda: bench_sync.consume_okq(address, "lost", 5, budget, 8),
        "redis-py": lambda: bench_sync.consume_redis_okq_go(host, port, "lost", 5, address, budget),
        "bare": lambda: sync_floors.consume_bare(host, port, "lost", 5, address, budget),
        "bare-8": lambda: sync_floors.consume_bare(host, port, "lost", 5, address, budget, 8),
    }
    with pytest.raises(sync_floors.Overrun, match=f"consume {who}"):
        runs[who]()


def hang_up_after_one_request(listener: socket.socket) -> None:
    """Accept one connection, read what comes, then close it (EOF, not a reset)."""
    conn, _ = listener.accept()
    with conn:
        conn.recv(65536)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["bare", "bare-enc"])
def test_bare_raises_when_the_server_hangs_up(kind: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        host, port = listener.getsockname()[:2]
        server = threading.Thread(target=hang_up_after_one_request, args=(listener,))
        server.start()
        floor = (
            sync_floors.HiredisBare(host, port) if kind == "bare" else sync_floors.Bare(host, port)
        )
        try:
            ping = b"*1\r\n$4\r\nPING\r\n" if kind == "bare" else b"PING"  # bare-enc encodes
            with pytest.raises(ConnectionError, match="closed the connection"):
                floor.call(ping)
        finally:
            floor.close()
            server.join(10)
