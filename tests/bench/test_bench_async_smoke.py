"""The async benchmark still runs: every benchmark function once, at a tiny size."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest
import trio

from okq_transports.server import ThreadedServer
from tests.bench import async_floors, bench_async
from tests.bench.test_bench_sync_smoke import hang_up_after_one_request


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
    for name in bench_async.BENCHES:
        assert name in out
    printed = {line.split(":")[0] for line in out.splitlines()}
    for label, *_ in bench_async.GOALS:
        assert label in printed
    assert "50 producers, okq-asyncio / redis.asyncio" in out


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "name",
    ["consume/okq-asyncio", "consume/okq-trio", "consume8/okq-asyncio", "consume/bare-asyncio"],
)
def test_a_run_over_its_budget_stops_with_a_clear_error(
    name: str, server: ThreadedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, _ = bench_async.BENCHES[name]

    async def never_done(host: str, port: int, n: int) -> async_floors.Sample:
        await (trio.sleep_forever() if runner == "trio" else asyncio.Event().wait())
        raise AssertionError("unreachable")

    monkeypatch.setitem(bench_async.BENCHES, name, (runner, never_done))
    with pytest.raises(async_floors.Overrun, match=f"{name}: 100 operations not done within"):
        bench_async.run_one(name, server.host, server.port, 100, timeout_s=0.2)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "name",
    [
        "push/bare-asyncio",
        "push/bare-enc-asyncio",
        "push/bare-trio",
        "consume/bare-asyncio",
        "consume8/bare-asyncio",
    ],
)
def test_bare_floors_raise_when_the_server_hangs_up(name: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        host, port = listener.getsockname()[:2]
        server = threading.Thread(target=hang_up_after_one_request, args=(listener,))
        server.start()
        with pytest.raises(ConnectionError, match="closed the connection"):
            bench_async.run_one(name, host, port, 100, timeout_s=10)
        server.join(10)
