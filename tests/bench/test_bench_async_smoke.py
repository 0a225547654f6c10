"""The async benchmark still runs: every benchmark function once, at a tiny size."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from okq_transports.server import ThreadedServer
from tests.bench import bench_async


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    srv = ThreadedServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(bench_async.BENCHES))
def test_bench_function_runs(name: str, server: ThreadedServer) -> None:
    sample = bench_async.run_one(name, server.host, server.port, 100)
    assert sample.ops == 100
    assert sample.rate > 0
    assert sample.cpu_us > 0


@pytest.mark.timeout(60)
def test_bench_main_prints_ratios(
    server: ThreadedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    bench_async.main(["--n", "100", "--runs", "1", "--server", server.address])
    out = capsys.readouterr().out
    assert "okq-asyncio / bare-asyncio" in out
    assert "50 producers, okq-asyncio / redis.asyncio" in out
