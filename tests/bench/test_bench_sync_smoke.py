"""The sync client benchmark still runs: every workload and client once, at a tiny size."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import pytest

from okq_transports.server import ThreadedServer
from tests.bench import bench_sync


@pytest.mark.timeout(60)
def test_bench_sync_runs_every_row(okq_server: ThreadedServer) -> None:
    lines: list[str] = []
    results = bench_sync.bench(
        okq_server.host, okq_server.port, events=40, runs=1, batch=10, out=lines.append
    )
    assert set(results) == {"push", "push_many", "consume"}
    for rows in results.values():
        assert set(rows) == {"okq", "redis-py", "bare"}
        for rate, cpu_us in rows.values():
            assert rate > 0
            assert cpu_us > 0
    assert any(line.strip().startswith("consume cpu okq/bare") for line in lines)


def test_a_run_over_its_budget_stops_with_a_clear_error(okq_server: ThreadedServer) -> None:
    with pytest.raises(bench_sync.Overrun, match="push run 1: not done within its 0 s budget"):
        bench_sync.bench(
            okq_server.host, okq_server.port, events=40, runs=1, batch=10, run_timeout_s=0
        )


@pytest.mark.timeout(30)
@pytest.mark.parametrize("who", ["okq", "redis-py", "bare"])
def test_consume_with_missing_events_stops_by_itself(
    who: str, okq_server: ThreadedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_prefill = bench_sync.prefill
    monkeypatch.setattr(bench_sync, "prefill", lambda a, q, n: real_prefill(a, q, n - 1))
    host, port, address = okq_server.host, okq_server.port, okq_server.address
    budget = bench_sync.Budget(f"consume {who}", 0.5)
    runs: dict[str, Callable[[], bench_sync.Sample]] = {
        "okq": lambda: bench_sync.consume_okq(address, "lost", 5, budget),
        "redis-py": lambda: bench_sync.consume_redis_okq_go(host, port, "lost", 5, address, budget),
        "bare": lambda: bench_sync.consume_bare(host, port, "lost", 5, address, budget),
    }
    with pytest.raises(bench_sync.Overrun, match=f"consume {who}"):
        runs[who]()


def hang_up_after_one_request(listener: socket.socket) -> None:
    """Accept one connection, read what comes, then close it (EOF, not a reset)."""
    conn, _ = listener.accept()
    with conn:
        conn.recv(65536)


@pytest.mark.timeout(30)
def test_bare_raises_when_the_server_hangs_up() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        host, port = listener.getsockname()[:2]
        server = threading.Thread(target=hang_up_after_one_request, args=(listener,))
        server.start()
        bare = bench_sync.Bare(host, port)
        try:
            with pytest.raises(ConnectionError, match="closed the connection"):
                bare.call(b"PING")
        finally:
            bare.close()
            server.join(10)
