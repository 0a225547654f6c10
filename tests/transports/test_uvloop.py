"""The asyncio client and the embedded server on uvloop, and under anyio's asyncio backend
with ``use_uvloop=True`` (anyio's cancel scopes cancel a task again at every loop iteration
until it leaves the scope, where plain asyncio cancels once).

The whole scenario list also runs on uvloop in test_scenarios.py (``asyncio-uvloop``); here
the server is an `EmbeddedServer` on the same uvloop loop as the client, and the harness is
anyio's: its events, sleeps, threads, task groups and cancel scopes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import pytest
import redis.asyncio

from okq_proto import ConnectionClosed, Event, QNotify
from okq_transports import asyncio as okq_asyncio
from okq_transports.redis import AsyncRedisPoolClient
from okq_transports.server import EmbeddedServer

from .scenarios import (
    DEADLINE_S,
    NO_SETINFO,
    OTHER_REPLY,
    VICTIM_REPLY,
    DribbleServer,
    Harness,
    cancelled_at_every_byte,
    consume_and_stop,
    every_method,
    graceful_stop_in_flight,
    handler_cancelled_at_expiry,
    pull_deliveries,
    qname,
    redelivery,
    redis_async_client,
    require,
    run_on_uvloop,
    stop_abandons_wait,
)

pytestmark = pytest.mark.timeout(60)


class AnyioHarness(Harness):
    """The asyncio client driven the anyio way: anyio events, sleeps, worker threads, task
    groups and cancel scopes."""

    name = "anyio-uvloop"

    def __init__(self, client: Any, anyio: Any) -> None:
        super().__init__(client, None)
        self.anyio = anyio

    def new_stop(self) -> Any:
        return self.anyio.Event()

    async def sleep(self, seconds: float) -> None:
        await self.anyio.sleep(seconds)

    async def run_sync(self, fn: Callable[[], Any]) -> Any:
        return await self.anyio.to_thread.run_sync(fn)

    @contextlib.asynccontextmanager
    async def background(
        self, fn: Callable[[], Awaitable[Any]]
    ) -> AsyncIterator[Callable[[], None]]:
        with self.anyio.fail_after(DEADLINE_S):
            async with self.anyio.create_task_group() as group:
                group.start_soon(fn)
                yield group.cancel_scope.cancel
                # leaving the task group waits for `fn`

    async def cancel_when(
        self, fn: Callable[[], Awaitable[Any]], ready: Callable[[], Awaitable[None]]
    ) -> bool:
        finished = []
        async with self.anyio.create_task_group() as group:
            scope = self.anyio.CancelScope()

            async def run() -> None:
                with scope:
                    await fn()
                    finished.append(True)

            group.start_soon(run)
            await ready()
            scope.cancel()
        return not finished


def run_on_anyio_uvloop(main: Callable[[Any], Coroutine[Any, Any, None]]) -> None:
    """``main(anyio)`` under ``anyio.run`` on its asyncio backend with uvloop, within
    `DEADLINE_S`."""
    anyio = require("anyio")
    uvloop = require("uvloop")

    async def checked() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, uvloop.Loop), f"anyio did not run on uvloop: {type(loop)}"
        with anyio.fail_after(DEADLINE_S * 2):
            await main(anyio)

    anyio.run(checked, backend="asyncio", backend_options={"use_uvloop": True})


@contextlib.asynccontextmanager
async def served_client(**options: Any) -> AsyncIterator[okq_asyncio.Client]:
    """An `EmbeddedServer` on the running loop and an asyncio client of it."""
    async with (
        EmbeddedServer(sweep_interval_s=0.2) as server,
        okq_asyncio.Client(server.address, notify_timeout_s=1, **options) as client,
    ):
        yield client


ON_ONE_LOOP = [
    every_method,
    consume_and_stop,
    redelivery,
    graceful_stop_in_flight,
    stop_abandons_wait,
    handler_cancelled_at_expiry,
    pull_deliveries,
]


@pytest.mark.parametrize("scenario", ON_ONE_LOOP, ids=lambda s: s.__name__)
def test_scenario_with_embedded_server_on_uvloop(
    scenario: Callable[[Harness], Awaitable[None]],
) -> None:
    """Client and embedded server share one uvloop loop (plain asyncio harness)."""

    async def main() -> None:
        async with served_client() as client:
            await asyncio.wait_for(scenario(Harness(client, None)), DEADLINE_S)

    run_on_uvloop(main)


@pytest.mark.parametrize("scenario", ON_ONE_LOOP, ids=lambda s: s.__name__)
def test_scenario_under_anyio_uvloop(scenario: Callable[[Harness], Awaitable[None]]) -> None:
    """The same scenarios under ``anyio.run(backend="asyncio", use_uvloop=True)``, with
    anyio's events as stop signals and anyio's task groups and cancel scopes."""

    async def main(anyio: Any) -> None:
        async with served_client() as client:
            await scenario(AnyioHarness(client, anyio))

    run_on_anyio_uvloop(main)


CLIENTS: dict[str, Callable[[str], Any]] = {
    "asyncio": lambda address: okq_asyncio.Client(address, pool_size=1),
    "redis-asyncio": lambda address: redis_async_client(address, max_connections=1),
}


@pytest.mark.parametrize("kind", list(CLIENTS))
def test_anyio_cancel_scope_at_every_byte(kind: str) -> None:
    """An anyio cancel scope cancelling a request half way through its reply poisons the
    connection: the next request never reads the victim's reply.  With a pool of one, the
    next request also shows that the poisoned connection was given back (redis-py's pool
    would be exhausted otherwise), though anyio cancels the cleanup again and again."""

    async def main(anyio: Any) -> None:
        await cancelled_at_every_byte(AnyioHarness(None, anyio), CLIENTS[kind])

    run_on_anyio_uvloop(main)


def test_anyio_move_on_after_during_a_request() -> None:
    """A deadline (``anyio.move_on_after``) expiring during a request closes that connection
    for good; the pool carries on with a fresh one."""

    async def main(anyio: Any) -> None:
        async with served_client() as client:
            async with client.connection() as conn:
                with anyio.move_on_after(0.2) as scope:
                    await conn.request(QNotify(5))  # the server stays silent for 5 s
                assert scope.cancelled_caught
                assert not conn.usable
                with pytest.raises(ConnectionClosed):
                    await conn.request(QNotify(0))
            assert client.open_connections == 0  # dropped, not pooled
            q = qname("anyio-after")
            event_id = await client.push(q, b"x")
            assert await client.peek_next(q) == Event(q, event_id, b"x")

    run_on_anyio_uvloop(main)


def test_anyio_cancelling_consume_cancels_its_handlers() -> None:
    """Cancelling the task group that runs `consume` cancels its running handlers (their
    events stay claimed, unacked), and the group exits only once they have ended: anyio
    cancels the consuming task again and again, which must not cut that wait short."""

    async def main(anyio: Any) -> None:
        async with served_client() as client:
            q = qname("anyio-cancel")
            await client.push_many(q, [b"a", b"b"])
            started, cancelled = [], []

            async def handler(delivery: Any) -> bool:
                started.append(delivery.id)
                try:
                    await anyio.sleep(30)
                except anyio.get_cancelled_exc_class():
                    with anyio.CancelScope(shield=True):
                        await anyio.sleep(0.2)  # cleanup that takes a while
                    cancelled.append(delivery.id)
                    raise
                return True

            async with anyio.create_task_group() as group:
                group.start_soon(lambda: client.consume(handler, [q], concurrency=2))
                for _ in range(200):  # bounded: 10 s
                    if len(started) == 2:
                        break
                    await anyio.sleep(0.05)
                group.cancel_scope.cancel()
            assert sorted(cancelled) == sorted(started)
            assert len(started) == 2
            (status,) = await client.status(q)
            assert (status.total, status.processing) == (2, 2)  # claimed, never acked
            for _ in range(100):  # the server sees the consumers' connections close
                (status,) = await client.status(q)
                if status.consumers == 0:
                    break
                await anyio.sleep(0.05)
            assert status.consumers == 0

    run_on_anyio_uvloop(main)


class SuspendingReleasePool(redis.asyncio.ConnectionPool):
    """A ``redis.asyncio`` pool whose ``release`` suspends before giving the connection back,
    as redis-py's does when its pool lock is contended."""

    async def release(self, connection: Any) -> None:
        await asyncio.sleep(0)
        await super().release(connection)


def test_anyio_cancelled_redis_request_gives_its_connection_back() -> None:
    """A ``redis.asyncio`` request cancelled by an anyio deadline half way through its reply
    still gives its (disconnected) connection back, though anyio cancels the cleanup again
    at every loop iteration: with a pool of one, the next request gets it."""

    async def main(anyio: Any) -> None:
        server = DribbleServer(VICTIM_REPLY, OTHER_REPLY, 5)
        host, port = server.address.rsplit(":", 1)
        pool = SuspendingReleasePool(
            host=host, port=int(port), protocol=2, max_connections=1, **NO_SETINFO
        )
        try:
            client = AsyncRedisPoolClient(pool)
            with anyio.move_on_after(0.3) as scope:
                await client.peek_next("q")
            assert scope.cancelled_caught
            with anyio.fail_after(5):
                assert await client.peek_next("q") == Event("q", "other", b"second")
            assert server.connections == 2
        finally:
            server.close()
            await pool.disconnect()

    run_on_anyio_uvloop(main)
