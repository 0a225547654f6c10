"""The sync client benchmark still runs: every workload and client once, at a tiny size."""

from __future__ import annotations

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
