"""The Redis server benchmark still runs (tiny sizes) against two of our servers on one Redis:
every row is printed with positive rates and CPU ratios."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bench import bench_redis_server
from tests.redis_fixtures import HOST, RedisProcess


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path).start()
    try:
        yield proc
    finally:
        proc.stop()


def test_bench_redis_server_runs_against_two_of_ours(redis: RedisProcess) -> None:
    where = f"{HOST}:{redis.port}"
    with bench_redis_server.our_server(where, None) as (peer, peer_pid):
        lines: list[str] = []
        bench_redis_server.bench(
            where, peer, peer_pid, [1, 3], ops=60, runs=2, seconds=20, procs=2, out=lines
        )
    rows = [row.split() for row in lines[1:]]
    assert [row[:2] for row in rows] == [["push", "1"], ["push", "3"], ["pop", "1"], ["pop", "3"]]
    for row in rows:
        peer_rate, our_rate, rate_ratio, peer_cpu, our_cpu, cpu_ratio = row[2:]
        assert float(peer_rate) > 0
        assert float(our_rate) > 0
        assert rate_ratio.endswith("x")
        assert float(peer_cpu) >= 0
        assert float(our_cpu) >= 0
        assert cpu_ratio.endswith("x")


def test_bench_redis_server_needs_a_peer() -> None:
    done = subprocess.run(
        [sys.executable, bench_redis_server.__file__, "--redis", f"{HOST}:1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--peer and --peer-pid are required" in done.stderr
