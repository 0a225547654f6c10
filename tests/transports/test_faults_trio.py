"""The trio consumer under injected faults (`faultproxy`): connection resets, half-open
connections, a server that accepts and closes, and a handler that cancels its own nursery.

The events are pushed straight to the embedded server; the consumers go through the proxy.
Every run is bounded (a deadline for the run, another for the stop), on loopback only, with
seeded fault draws.
"""

from __future__ import annotations

import functools
import random
import socket
import time
from collections.abc import Iterator

import pytest
import trio

from okq_proto import Backoff, Delivery, Hooks, QueueStatus
from okq_transports.server import ThreadedServer
from okq_transports.sync import Client as SyncClient
from okq_transports.trio import open_client

from .faultproxy import FaultProxy, Ledger

pytestmark = pytest.mark.timeout(120)

N = 300
RUN_DEADLINE_S = 60.0
#: The consume call must return this soon after its stop event is set.
STOP_BOUND_S = 5.0
QUEUE = "faults"


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    srv = ThreadedServer("127.0.0.1", 0, sweep_interval_s=0.2, seed=0).start()
    try:
        yield srv
    finally:
        srv.stop()


def push_direct(server: ThreadedServer, n: int) -> None:
    with SyncClient(server.address) as client:
        client.push_many(QUEUE, [b"%d" % i for i in range(n)])


def final_status(server: ThreadedServer) -> QueueStatus:
    """The queue's counters once the server has seen every consumer connection go (bounded)."""
    with SyncClient(server.address) as client:
        status = client.status(QUEUE)[0]
        for _ in range(50):
            if status.consumers == 0:
                break
            time.sleep(0.05)
            status = client.status(QUEUE)[0]
    return status


async def consume_through(
    server: ThreadedServer, proxy: FaultProxy, ledger: Ledger
) -> tuple[float, float]:
    """Two consumers through `proxy` until the server holds no event (or the run deadline);
    returns (run time, time from stop to the consume call's return)."""
    stop = trio.Event()
    times: dict[str, float] = {}

    async def handle(delivery: Delivery) -> bool:
        ledger.record(delivery.contents)
        return True

    async with (
        open_client(server.address) as direct,
        open_client(proxy.address_text, notify_timeout_s=1) as client,
    ):

        async def watch() -> None:
            with trio.move_on_after(RUN_DEADLINE_S):
                while (await direct.status(QUEUE))[0].total:
                    await trio.sleep(0.1)
            times["stop"] = trio.current_time()
            stop.set()

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            with trio.move_on_after(RUN_DEADLINE_S + STOP_BOUND_S + 5):
                await client.consume(handle, [QUEUE], expire_seconds=2, concurrency=2, stop=stop)
                times["returned"] = trio.current_time()
            nursery.cancel_scope.cancel()
    assert "returned" in times, "the consume call did not return after its stop was set"
    return times["stop"] - start, times["returned"] - times["stop"]


def check_ledger(server: ThreadedServer, ledger: Ledger, run_s: float, stop_s: float) -> None:
    status = final_status(server)
    print(
        f"events={N} lost={ledger.lost} duplicates={ledger.duplicates} run={run_s:.1f}s "
        f"stop={stop_s:.2f}s status={status}"
    )
    assert ledger.lost == 0
    assert (status.total, status.processing, status.consumers) == (0, 0, 0)
    assert stop_s < STOP_BOUND_S


@pytest.mark.parametrize("side", ["both", "upstream"])
def test_resets_lose_nothing(server: ThreadedServer, side: str) -> None:
    """~1 % of forwarded chunks reset the connection; "upstream" resets only the server's
    side and leaves ours open and silent (half-open): the consumer must notice by itself."""
    push_direct(server, N)
    ledger = Ledger(N)
    with FaultProxy(
        (server.host, server.port), reset_probability=0.01, seed=7, reset_side=side
    ) as proxy:
        run_s, stop_s = trio.run(consume_through, server, proxy, ledger)
    assert proxy.threads_alive == 0
    check_ledger(server, ledger, run_s, stop_s)


class Reconnects(Hooks):
    def __init__(self) -> None:
        self.attempts: list[int] = []
        self.delays: list[float] = []

    def reconnect(self, address: tuple[str, int], attempt: int, delay_s: float) -> None:
        self.attempts.append(attempt)
        self.delays.append(delay_s)


def test_backoff_grows_behind_accept_and_close(
    server: ThreadedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listener that accepts and closes at once: every attempt fails before registering,
    so the backoff must grow (not restart at attempt 1 after every failure)."""
    hooks = Reconnects()

    async def main(proxy: FaultProxy) -> None:
        async with open_client(proxy.address_text, hooks=hooks) as client:
            rng = random.Random(3)
            monkeypatch.setattr(client, "new_backoff", lambda: Backoff(rng=rng))
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    functools.partial(client.consume, lambda d: True, [QUEUE], stop=stop)
                )
                await trio.sleep(3.0)
                stop.set()

    with FaultProxy((server.host, server.port), accept_and_close=True) as proxy:
        trio.run(main, proxy)
    print("attempts", hooks.attempts)
    assert 3 <= len(hooks.attempts) <= 20
    assert hooks.attempts == list(range(1, len(hooks.attempts) + 1))


def test_readme_nursery_cancel_keeps_the_ack(server: ThreadedServer) -> None:
    """The README's example: the handler cancels the nursery and returns true; the ack is
    still sent, and nothing more is popped."""
    queue = "readme"

    async def main() -> list[QueueStatus]:
        async with open_client(server.address) as client:
            await client.push(queue, b"first")
            await client.push(queue, b"second")
            seen: list[bytes] = []
            async with trio.open_nursery() as nursery:

                async def handle(event: Delivery) -> bool:
                    seen.append(event.contents)
                    nursery.cancel_scope.cancel()
                    return True

                await nursery.start(client.consume, handle, [queue])
            assert seen == [b"second"] or seen == [b"first"]
            return await client.status(queue)

    status = trio.run(main)[0]
    assert (status.total, status.processing) == (1, 0)


def test_pull_stream_ack_then_cancel(server: ThreadedServer) -> None:
    """A pull consumer acks, then its scope is cancelled before the next pop: the ack leaves
    when the stream closes."""
    queue = "pull-cancel"

    async def main() -> list[QueueStatus]:
        async with open_client(server.address) as client:
            await client.push(queue, b"one")
            with trio.CancelScope() as scope:
                async with client.deliveries(queue) as stream:
                    async for delivery in stream:
                        stream.ack(delivery)
                        scope.cancel()
            return await client.status(queue)

    status = trio.run(main)[0]
    assert (status.total, status.processing) == (0, 0)


def test_blackhole_stop_is_honoured(server: ThreadedServer) -> None:
    """A server that accepts and never answers: the registration's reply never comes, yet
    the consumer gives up on it by itself and a stop ends the call within the bound."""

    async def main(proxy: FaultProxy) -> float:
        async with open_client(proxy.address_text) as client:
            stop = trio.Event()
            returned: list[float] = []

            async def run() -> None:
                await client.consume(lambda d: True, [QUEUE], stop=stop)
                returned.append(trio.current_time())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                await trio.sleep(1.0)
                stop.set()
                stopped = trio.current_time()
                with trio.move_on_after(STOP_BOUND_S + 5):
                    while not returned:
                        await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
            assert returned, "consume did not return after its stop was set"
            return returned[0] - stopped

    with FaultProxy((server.host, server.port), blackhole=True) as proxy:
        stop_s = trio.run(main, proxy)
    assert proxy.threads_alive == 0
    assert stop_s < STOP_BOUND_S


def test_sliced_and_slow_bytes(server: ThreadedServer) -> None:
    """Every byte forwarded on its own write, each after a small delay: replies split at
    every byte boundary are still parsed, and every event is consumed once."""
    n = 20
    push_direct(server, n)
    ledger = Ledger(n)

    async def main(proxy: FaultProxy) -> None:
        async with open_client(proxy.address_text, notify_timeout_s=1) as client:
            stop = trio.Event()

            async def handle(delivery: Delivery) -> bool:
                ledger.record(delivery.contents)
                if ledger.handled == n:
                    stop.set()
                return True

            with trio.move_on_after(RUN_DEADLINE_S):
                await client.consume(handle, [QUEUE], concurrency=2, stop=stop)

    with FaultProxy((server.host, server.port), slice_bytes=True, latency_s=0.001) as proxy:
        trio.run(main, proxy)
    status = final_status(server)
    assert (ledger.lost, ledger.duplicates) == (0, 0)
    assert (status.total, status.processing, status.consumers) == (0, 0, 0)


def test_stop_abandons_a_hanging_connect() -> None:
    """A listener whose accept queue is full drops further SYNs, so a connect hangs (trio
    has no connect timeout): a stop still ends the consume call at once."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        host, port = listener.getsockname()[:2]
        with socket.create_connection((host, port), timeout=2.0):  # fills the queue

            async def main() -> float:
                async with open_client(f"{host}:{port}") as client:
                    stop = trio.Event()
                    returned: list[float] = []

                    async def run() -> None:
                        await client.consume(lambda d: True, [QUEUE], stop=stop)
                        returned.append(trio.current_time())

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(run)
                        await trio.sleep(0.5)
                        stop.set()
                        stopped = trio.current_time()
                        with trio.move_on_after(STOP_BOUND_S + 2):
                            while not returned:
                                await trio.sleep(0.05)
                        nursery.cancel_scope.cancel()
                    assert returned, "consume did not return after its stop was set"
                    return returned[0] - stopped

            stop_s = trio.run(main)
    assert stop_s < 1.0
