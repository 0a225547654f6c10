"""The redis-py adapters with the ``get_connection`` of every redis-py inside ``redis>=5.0``.

redis-py 5.0 to 5.2 require a command name (``get_connection(command_name, *keys,
**options)``); later versions make it optional and deprecate passing one.  Real redis-py pools
(sync and ``redis.asyncio``) with each signature, whatever redis-py is installed, over real
loopback TCP against the embedded server: requests and consumers both borrow connections.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio

from okq_proto import Event
from okq_transports.redis import AsyncRedisPoolClient, RedisPoolClient
from okq_transports.server import ThreadedServer

from .scenarios import DEADLINE_S, qname

pytestmark = pytest.mark.timeout(60)

#: What the pools below record of each get_connection call: (command_name, keys, options).
Call = tuple[object, tuple[object, ...], dict[str, object]]


def _installed_args(method: Callable[..., Any], command_name: object) -> tuple[object, ...]:
    """The arguments the installed redis-py's own ``get_connection`` wants: the name where it
    requires one (5.0-5.2), none where passing one is deprecated."""
    param = inspect.signature(method).parameters["command_name"]
    return (command_name,) if param.default is inspect.Parameter.empty else ()


class Redis50Pool(redis.ConnectionPool):
    """A sync pool whose ``get_connection`` has redis-py 5.0's signature."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[Call] = []

    def get_connection(self, command_name: str, *keys: Any, **options: Any) -> Any:  # type: ignore[override]
        self.calls.append((command_name, keys, options))
        base = super().get_connection
        return base(*_installed_args(base, command_name))


class AsyncRedis50Pool(redis.asyncio.ConnectionPool):
    """A ``redis.asyncio`` pool whose ``get_connection`` has redis-py 5.0's signature."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[Call] = []

    async def get_connection(self, command_name: str, *keys: Any, **options: Any) -> Any:  # type: ignore[override]
        self.calls.append((command_name, keys, options))
        base: Callable[..., Awaitable[Any]] = super().get_connection
        return await base(*_installed_args(base, command_name))


class ModernPool(redis.ConnectionPool):
    """A sync pool with the later signature: the name is optional (and deprecated)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[Call] = []

    def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        self.calls.append((command_name, keys, options))
        base = super().get_connection
        return base(*_installed_args(base, "PING"))


class AsyncModernPool(redis.asyncio.ConnectionPool):
    """A ``redis.asyncio`` pool with the later signature."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[Call] = []

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        self.calls.append((command_name, keys, options))
        base: Callable[..., Awaitable[Any]] = super().get_connection
        return await base(*_installed_args(base, "PING"))


def _pool_options(server: ThreadedServer) -> dict[str, Any]:
    return {"host": server.host, "port": server.port, "protocol": 2, "socket_timeout": DEADLINE_S}


def _check_calls(calls: list[Call], *, wants_name: bool) -> None:
    assert len(calls) >= 3, calls  # requests and the consumer all borrowed connections
    for command_name, keys, options in calls:
        assert (keys, options) == ((), {})
        if wants_name:
            assert isinstance(command_name, str), command_name
            assert command_name
        else:
            assert command_name is None  # nothing passed: passing one is deprecated


def _sync_round_trip(pool: Any) -> None:
    client = RedisPoolClient(pool, notify_timeout_s=1)
    q = qname("compat-sync")
    first = client.push(q, b"one")
    outcomes = client.push_many(q, [b"two", b"three"])
    assert [o.ok for o in outcomes] == [True, True]
    assert client.peek_next(q) == Event(q, first, b"one")
    stop, seen = threading.Event(), []

    def handler(delivery: Any) -> bool:
        seen.append(delivery.contents)
        if len(seen) == 3:
            stop.set()
        return True

    client.consume(handler, [q], stop=stop)
    assert seen == [b"one", b"two", b"three"]
    (status,) = client.status(q)
    assert (status.total, status.processing) == (0, 0)


async def _async_round_trip(pool: Any) -> None:
    client = AsyncRedisPoolClient(pool, notify_timeout_s=1)
    q = qname("compat-async")
    first = await client.push(q, b"one")
    outcomes = await client.push_many(q, [b"two", b"three"])
    assert [o.ok for o in outcomes] == [True, True]
    assert await client.peek_next(q) == Event(q, first, b"one")
    stop, seen = asyncio.Event(), []

    def handler(delivery: Any) -> bool:
        seen.append(delivery.contents)
        if len(seen) == 2:
            stop.set()
        return True

    await client.consume(handler, [q], stop=stop)
    async with client.deliveries(q, expire_seconds=30) as stream:
        async for delivery in stream:
            stream.ack(delivery)
            seen.append(delivery.contents)
            break
    assert seen == [b"one", b"two", b"three"]
    (status,) = await client.status(q)
    assert (status.total, status.processing) == (0, 0)


@pytest.mark.parametrize(
    ("pool_class", "wants_name"), [(Redis50Pool, True), (ModernPool, False)], ids=["5.0", "5.3"]
)
def test_sync_pool_get_connection_signatures(
    pool_class: type[Any], wants_name: bool, okq_server: ThreadedServer
) -> None:
    pool = pool_class(**_pool_options(okq_server))
    try:
        _sync_round_trip(pool)
    finally:
        pool.disconnect()
    _check_calls(pool.calls, wants_name=wants_name)


@pytest.mark.parametrize(
    ("pool_class", "wants_name"),
    [(AsyncRedis50Pool, True), (AsyncModernPool, False)],
    ids=["5.0", "5.3"],
)
def test_async_pool_get_connection_signatures(
    pool_class: type[Any], wants_name: bool, okq_server: ThreadedServer
) -> None:
    async def main() -> None:
        pool = pool_class(**_pool_options(okq_server))
        try:
            await asyncio.wait_for(_async_round_trip(pool), DEADLINE_S)
        finally:
            await pool.disconnect()
        _check_calls(pool.calls, wants_name=wants_name)

    asyncio.run(main())


def test_async_pool_connections_all_given_back(okq_server: ThreadedServer) -> None:
    """With a pool of one connection, requests and consumers one after another all work:
    each borrowed connection went back to the pool (a lost one would exhaust it)."""

    async def main() -> None:
        pool = AsyncRedis50Pool(max_connections=1, **_pool_options(okq_server))
        try:
            for _ in range(3):
                await asyncio.wait_for(_async_round_trip(pool), DEADLINE_S)
        finally:
            await pool.disconnect()

    asyncio.run(main())
