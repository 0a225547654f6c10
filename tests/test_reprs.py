"""Reprs that say where things are: every client shows its server addresses (all of them, in
failover order), its pool's open connections and size, and ``closed`` once closed; the
servers show their URL and whether they are running."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio
import trio

from okq_transports import trio as okq_trio
from okq_transports.asyncio import Client as AsyncioClient
from okq_transports.redis import AsyncRedisPoolClient, RedisPoolClient
from okq_transports.server import EmbeddedServer, ThreadedServer
from okq_transports.sync import Client


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer("127.0.0.1", 0) as srv:
        yield srv


def test_threaded_server_says_its_url_and_whether_it_runs() -> None:
    srv = ThreadedServer("127.0.0.1", 0)
    assert repr(srv) == "<ThreadedServer okq://127.0.0.1:0 stopped>"
    with srv:
        assert repr(srv) == f"<ThreadedServer okq://127.0.0.1:{srv.port} running>"
    assert repr(srv) == f"<ThreadedServer okq://127.0.0.1:{srv.port} stopped>"


def test_embedded_server_says_its_url_and_whether_it_runs() -> None:
    async def main() -> None:
        srv = EmbeddedServer("127.0.0.1", 0)
        assert repr(srv) == "<EmbeddedServer okq://127.0.0.1:0 stopped>"
        async with srv:
            assert repr(srv) == f"<EmbeddedServer okq://127.0.0.1:{srv.port} running>"
        assert repr(srv) == f"<EmbeddedServer okq://127.0.0.1:{srv.port} stopped>"

    asyncio.run(main())


def test_a_tls_server_says_so() -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    assert repr(ThreadedServer("::1", 4777, ssl=context)) == (
        "<ThreadedServer okq://[::1]:4777 tls stopped>"
    )


def test_sync_client_shows_its_address_pool_and_closing(server: ThreadedServer) -> None:
    with Client(server.url, pool_size=3) as client:
        assert repr(client) == f"<okq_transports.sync.Client {server.url} pool 0/3 open>"
        client.ping()
        assert repr(client) == f"<okq_transports.sync.Client {server.url} pool 1/3 open>"
    assert repr(client) == f"<okq_transports.sync.Client {server.url} closed>"


def test_every_failover_address_is_shown() -> None:
    client = Client("okq://a.example:4777,b.example:4778,[::1]:4779")
    assert repr(client) == (
        "<okq_transports.sync.Client okq://a.example:4777,b.example:4778,[::1]:4779 pool 0/10 open>"
    )
    client.close()


def test_a_tls_client_says_so() -> None:
    with Client("okq.example:4777", ssl=ssl.create_default_context()) as client:
        assert (
            repr(client) == "<okq_transports.sync.Client okq://okq.example:4777 tls pool 0/10 open>"
        )


def test_asyncio_client_repr(server: ThreadedServer) -> None:
    async def main() -> None:
        async with AsyncioClient(server.address) as client:
            await client.ping()
            assert repr(client) == f"<okq_transports.asyncio.Client {server.url} pool 1/10 open>"
        assert repr(client) == f"<okq_transports.asyncio.Client {server.url} closed>"

    asyncio.run(main())


def test_trio_client_repr(server: ThreadedServer) -> None:
    async def main() -> None:
        async with okq_trio.Client(server.address, pool_size=2) as client:
            await client.ping()
            assert repr(client) == f"<okq_transports.trio.Client {server.url} pool 1/2 open>"
        assert repr(client) == f"<okq_transports.trio.Client {server.url} closed>"

    trio.run(main)


def test_redis_pool_client_shows_the_redis_pools_address(server: ThreadedServer) -> None:
    pool = redis.ConnectionPool(host=server.host, port=server.port, protocol=2)
    try:
        client = RedisPoolClient(pool)
        client.ping()
        where = f"{server.host}:{server.port}"
        assert repr(client) == f"<okq_transports.redis.RedisPoolClient redis-py pool {where} open>"
        client.close()
        assert repr(client) == (
            f"<okq_transports.redis.RedisPoolClient redis-py pool {where} closed>"
        )
    finally:
        pool.disconnect()


def test_async_redis_pool_client_repr_names_a_unix_socket() -> None:
    async def main() -> None:
        pool = redis.asyncio.ConnectionPool(path="/run/okq.sock", protocol=2)
        client = AsyncRedisPoolClient(pool)
        assert repr(client) == (
            "<okq_transports.redis.AsyncRedisPoolClient redis-py pool unix:/run/okq.sock open>"
        )
        await client.aclose()
        await pool.disconnect()

    asyncio.run(main())
