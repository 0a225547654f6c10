"""The asyncio consumer under injected faults (`faultproxy`), for comparison with the trio
door (test_faults_trio.py): same runs, same ledger, same bounds.  A run with
``read_timeout_s=None`` shows the shared driver bounding its reads by itself, as trio needs.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Iterator

import anyio
import pytest

from okq_proto import Backoff, Delivery, Hooks, QueueStatus
from okq_transports.asyncio import Client
from okq_transports.server import ThreadedServer
from okq_transports.sync import Client as SyncClient

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
    server: ThreadedServer, proxy: FaultProxy, ledger: Ledger, read_timeout_s: float | None
) -> tuple[float, float]:
    """Two consumers through `proxy` until the server holds no event (or the run deadline);
    returns (run time, time from stop to the consume call's return)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    times: dict[str, float] = {}

    async def handle(delivery: Delivery) -> bool:
        ledger.record(delivery.contents)
        return True

    async with (
        Client(server.address) as direct,
        Client(proxy.address_text, notify_timeout_s=1, read_timeout_s=read_timeout_s) as client,
    ):

        async def watch() -> None:
            deadline = loop.time() + RUN_DEADLINE_S
            while (await direct.status(QUEUE))[0].total and loop.time() < deadline:
                await asyncio.sleep(0.1)
            times["stop"] = loop.time()
            stop.set()

        start = loop.time()
        watcher = asyncio.ensure_future(watch())
        consumer = asyncio.ensure_future(
            client.consume(handle, [QUEUE], expire_seconds=2, concurrency=2, stop=stop)
        )
        await watcher
        done, _ = await asyncio.wait((consumer,), timeout=STOP_BOUND_S + 5)
        if done:
            consumer.result()
            times["returned"] = loop.time()
        else:
            consumer.cancel()
            await asyncio.wait((consumer,))
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


@pytest.mark.parametrize(
    ("side", "read_timeout_s"), [("both", 10.0), ("upstream", None)], ids=["reset", "half-open"]
)
def test_resets_lose_nothing(
    server: ThreadedServer, side: str, read_timeout_s: float | None
) -> None:
    """~1 % of forwarded chunks reset the connection; "upstream" resets only the server's
    side and leaves ours open and silent (half-open), here with no read timeout at all."""
    push_direct(server, N)
    ledger = Ledger(N)
    with FaultProxy(
        (server.host, server.port), reset_probability=0.01, seed=7, reset_side=side
    ) as proxy:
        run_s, stop_s = asyncio.run(consume_through(server, proxy, ledger, read_timeout_s))
    assert proxy.threads_alive == 0
    check_ledger(server, ledger, run_s, stop_s)


class Reconnects(Hooks):
    def __init__(self) -> None:
        self.attempts: list[int] = []

    def reconnect(self, address: tuple[str, int], attempt: int, delay_s: float) -> None:
        self.attempts.append(attempt)


def test_backoff_grows_behind_accept_and_close(
    server: ThreadedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listener that accepts and closes at once: the attempts count up, bounded."""
    hooks = Reconnects()

    async def main(proxy: FaultProxy) -> None:
        async with Client(proxy.address_text, hooks=hooks) as client:
            rng = random.Random(3)
            monkeypatch.setattr(client, "new_backoff", lambda: Backoff(rng=rng))
            stop = asyncio.Event()
            consumer = asyncio.ensure_future(
                functools.partial(client.consume, lambda d: True, [QUEUE], stop=stop)()
            )
            await asyncio.sleep(3.0)
            stop.set()
            await asyncio.wait_for(consumer, STOP_BOUND_S)

    with FaultProxy((server.host, server.port), accept_and_close=True) as proxy:
        asyncio.run(main(proxy))
    print("attempts", hooks.attempts)
    assert 3 <= len(hooks.attempts) <= 20
    assert hooks.attempts == list(range(1, len(hooks.attempts) + 1))


def test_task_cancel_keeps_the_ack(server: ThreadedServer) -> None:
    """The handler cancels the task running consume and returns true: the ack is still
    sent, and nothing more is popped."""
    queue = "task-cancel"

    async def main() -> list[QueueStatus]:
        async with Client(server.address) as client:
            await client.push(queue, b"first")
            await client.push(queue, b"second")
            task: list[asyncio.Future[None]] = []

            async def handle(event: Delivery) -> bool:
                task[0].cancel()
                return True

            task.append(asyncio.ensure_future(client.consume(handle, [queue])))
            with pytest.raises(asyncio.CancelledError):
                await task[0]
            return await client.status(queue)

    status = asyncio.run(main())[0]
    assert (status.total, status.processing) == (1, 0)


def test_anyio_task_group_cancel_keeps_the_ack(server: ThreadedServer) -> None:
    """The same with an anyio task group, whose scope cancels again at every iteration."""
    queue = "anyio-cancel"

    async def main() -> list[QueueStatus]:
        async with Client(server.address) as client:
            await client.push(queue, b"first")
            await client.push(queue, b"second")
            async with anyio.create_task_group() as group:

                async def handle(event: Delivery) -> bool:
                    group.cancel_scope.cancel()
                    return True

                group.start_soon(client.consume, handle, [queue])
            return await client.status(queue)

    status = asyncio.run(main())[0]
    assert (status.total, status.processing) == (1, 0)
