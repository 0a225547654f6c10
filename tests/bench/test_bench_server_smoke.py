"""The server benchmark still runs (tiny sizes): both servers start and every row is printed."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.bench import bench_server


def test_bench_server_runs_against_both_servers() -> None:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed: .ci/run must install it")
        pytest.skip("redis-server is not installed (the yardstick column needs it)")
    lines: list[str] = []
    bench_server.bench([1, 2], events=40, runs=1, out=lines)
    rows = lines[1:]
    assert [row.split()[:2] for row in rows] == [
        ["push", "1"],
        ["push", "2"],
        ["pop+ack", "1"],
        ["pop+ack", "2"],
    ]
    for row in rows:
        okq_rate, redis_rate, ratio = row.split()[2:]
        assert float(okq_rate) > 0
        assert float(redis_rate) > 0
        assert ratio.endswith("x")
