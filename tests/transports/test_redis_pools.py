"""The redis-py adapters move every byte through the user's pool: its TLS, its unix socket
and its limits hold.

The embedded server listens on plaintext TCP; the pools are only ever given a door in front
of it (`tests.transports.tlsproxy`): a TLS-terminating proxy (the pool connects with
``redis.SSLConnection`` / ``redis.asyncio.SSLConnection``, verifying a CA made at test time)
or a unix-socket forwarder (``UnixDomainSocketConnection``).  Each door counts what it
accepted and forwarded, and the server's open connections are compared with the door's: the
clients (requests, ``connection()`` and consumers, sync and asyncio) reached the server through
the pool's door only, and no connection of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from okq_proto import (
    ConnectError,
    Event,
    Ping,
    QRPeek,
    QStatus,
    QueueStatus,
    TransportError,
    to_wire,
)
from okq_transports.redis import AsyncRedisPoolClient, RedisPoolClient

from .scenarios import DEADLINE_S, NO_SETINFO, NOTIFY_S, qname
from .tlsproxy import Backstage, Certificates, Forwarder, make_certificates, server_context

pytestmark = pytest.mark.timeout(60)

#: The doors a pool can be given: TLS through the proxy, or the unix-socket forwarder.
DOORS = ("tls", "unix")

#: Longest path a unix socket may have on Linux (``sun_path``) and macOS, less a margin.
_MAX_SOCKET_PATH = 100


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A throwaway CA and server certificate (127.0.0.1 / localhost), made once per module."""
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def backstage() -> Iterator[Backstage]:
    """The embedded server (its port given to the doors only) and its doors."""
    with Backstage() as stage:
        yield stage


@contextlib.contextmanager
def _socket_dir(tmp_path: Path) -> Iterator[Path]:
    """`tmp_path`, or a shorter temporary directory when a socket path there is too long."""
    if len(str(tmp_path / "okq.sock")) <= _MAX_SOCKET_PATH:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="okq") as short:
        yield Path(short)


@dataclass
class Door:
    """A pool's only way to the server, and what it saw."""

    kind: str
    backstage: Backstage
    forwarder: Forwarder
    certificates: Certificates

    def _options(self, ssl_class: type[Any], unix_class: type[Any]) -> dict[str, Any]:
        # redis-py's defaults otherwise, CLIENT SETINFO on connect included (okq answers it
        # with an error redis-py ignores).  Without it (NO_SETINFO), redis-py's own check of a
        # new TLS 1.3 connection (get_connection: "can_read" must be False) sees the server's
        # session tickets as unread data and refuses it ("Connection not ready").
        common: dict[str, Any] = {"protocol": 2, "socket_timeout": DEADLINE_S}
        if self.kind == "tls":
            return {
                "connection_class": ssl_class,
                "host": "127.0.0.1",
                "port": self.forwarder.port,
                "ssl_ca_certs": str(self.certificates.ca),
                "ssl_cert_reqs": "required",
                "socket_connect_timeout": DEADLINE_S,
                **common,
            }
        return {"connection_class": unix_class, "path": self.forwarder.address, **common}

    def sync_pool(
        self, pool_class: type[redis.ConnectionPool] = redis.ConnectionPool, **options: Any
    ) -> redis.ConnectionPool:
        options = {
            **self._options(redis.SSLConnection, redis.UnixDomainSocketConnection),
            **options,
        }
        pool = pool_class(**options)
        self._check_only_door(pool.connection_kwargs)
        return pool

    def async_pool(
        self,
        pool_class: type[redis.asyncio.ConnectionPool] = redis.asyncio.ConnectionPool,
        **options: Any,
    ) -> redis.asyncio.ConnectionPool:
        door = self._options(redis.asyncio.SSLConnection, redis.asyncio.UnixDomainSocketConnection)
        pool = pool_class(**{**door, **options})
        self._check_only_door(pool.connection_kwargs)
        return pool

    def _check_only_door(self, kwargs: dict[str, Any]) -> None:
        """The pool knows the door only, never the server's own (plaintext) port."""
        server_port = self.backstage.server.port
        assert kwargs.get("port") != server_port
        if self.kind == "tls":
            assert kwargs["port"] == self.forwarder.port
        else:
            assert "port" not in kwargs or kwargs["port"] != server_port
            assert kwargs["path"] == self.forwarder.address

    def server_connections(self) -> int:
        return self.backstage.server_connections()

    def settled(self) -> bool:
        """The server holds exactly the connections this door forwards (nothing else
        reached it), and the door forwards each connection it accepted to one of its own."""
        door = self.forwarder
        return self.server_connections() == door.upstream_open == door.open

    def check_through_door(self) -> None:
        """Every byte went through the door: it accepted connections (TLS ones, for the
        proxy), forwarded bytes both ways, and the server holds only the door's
        connections."""
        door = self.forwarder
        assert door.accepted > 0
        assert door.upstream_opened == door.accepted
        if self.kind == "tls":
            assert door.tls_accepted == door.accepted
        else:
            assert door.tls_accepted == 0
        assert door.bytes_in > 0
        assert door.bytes_out > 0
        self.backstage.wait_until(self.settled, "the server holds only the door's connections")

    def check_closed(self) -> None:
        """After the client closed and the pool disconnected: nothing open anywhere."""

        def closed() -> bool:
            return self.forwarder.open == 0 and self.server_connections() == 0

        self.backstage.wait_until(closed, "every connection closed")

    async def async_wait(self, predicate: Callable[[], bool], what: str) -> None:
        """`Backstage.wait_until` for an asyncio test (its loop keeps running)."""
        deadline = time.monotonic() + DEADLINE_S
        while not predicate():
            assert time.monotonic() < deadline, f"not reached within {DEADLINE_S} s: {what}"
            await asyncio.sleep(0.01)


@pytest.fixture(params=DOORS)
def door(
    request: pytest.FixtureRequest,
    backstage: Backstage,
    certificates: Certificates,
    tmp_path: Path,
) -> Iterator[Door]:
    """The TLS proxy or the unix-socket forwarder in front of the server."""
    kind: str = request.param
    if kind == "tls":
        yield Door(kind, backstage, backstage.tls_proxy(server_context(certificates)), certificates)
        return
    with _socket_dir(tmp_path) as directory:
        forwarder = backstage.unix_forwarder(directory / "okq.sock")
        try:
            yield Door(kind, backstage, forwarder, certificates)
        finally:
            backstage.call(forwarder.aclose)  # before its directory goes


@pytest.fixture
def tls_door(backstage: Backstage, certificates: Certificates) -> Door:
    """The TLS proxy only."""
    return Door("tls", backstage, backstage.tls_proxy(server_context(certificates)), certificates)


# -- clients over a door ------------------------------------------------------------------------


@contextlib.contextmanager
def _sync_client(
    door: Door, pool_class: type[redis.ConnectionPool] = redis.ConnectionPool, **options: Any
) -> Iterator[RedisPoolClient]:
    """A `RedisPoolClient` over a new pool through `door`; afterwards the client is closed,
    the pool disconnected and every connection checked closed."""
    pool = door.sync_pool(pool_class, **options)
    try:
        with RedisPoolClient(pool, notify_timeout_s=NOTIFY_S) as client:
            yield client
    finally:
        pool.disconnect()
    door.check_closed()


@contextlib.asynccontextmanager
async def _async_client(
    door: Door,
    pool_class: type[redis.asyncio.ConnectionPool] = redis.asyncio.ConnectionPool,
    **options: Any,
) -> AsyncIterator[AsyncRedisPoolClient]:
    """`_sync_client` for ``redis.asyncio``."""
    pool = door.async_pool(pool_class, **options)
    try:
        async with AsyncRedisPoolClient(pool, notify_timeout_s=NOTIFY_S) as client:
            yield client
    finally:
        await pool.disconnect()  # redis-py 5.0.0 has no aclose
    await door.async_wait(
        lambda: door.forwarder.open == 0 and door.server_connections() == 0,
        "every connection closed",
    )


def _status(statuses: object) -> tuple[int, int]:
    """(total, processing) of the one queue a ``QSTATUS`` reply reports."""
    assert isinstance(statuses, list)
    (status,) = statuses
    assert isinstance(status, QueueStatus)
    return status.total, status.processing


def _sync_round_trip(client: RedisPoolClient, tag: str) -> None:
    """Every kind of request, ``connection()`` raw requests and a consumer (3 events
    consumed and acknowledged, then stopped)."""
    q = qname(tag)
    client.ping()
    first = client.push(q, b"one")
    outcomes = client.push_many(q, [b"two", b"three"])
    assert [o.ok for o in outcomes] == [True, True]
    assert client.peek_next(q) == Event(q, first, b"one")
    assert _status(client.status(q)) == (3, 0)
    assert client.execute(QRPeek(to_wire(q))) == Event(q, first, b"one")
    assert _status(client.execute(QStatus((to_wire(q),)))) == (3, 0)
    with client.connection() as conn:
        assert conn.request(Ping()).unwrap() is None
        pong, status = conn.request_many([Ping(), QStatus((to_wire(q),))])
        assert pong.unwrap() is None
        assert _status(status.unwrap()) == (3, 0)

    stop, seen = threading.Event(), []

    def handler(delivery: Any) -> bool:
        seen.append(delivery.contents)
        if len(seen) == 3:
            stop.set()
        return True  # acknowledged

    bound = threading.Timer(DEADLINE_S, stop.set)  # never wait past the deadline
    bound.start()
    try:
        client.consume(handler, [q], stop=stop)
    finally:
        bound.cancel()
        bound.join(DEADLINE_S)
    assert seen == [b"one", b"two", b"three"]
    assert _status(client.status(q)) == (0, 0)  # every ack arrived


async def _async_round_trip(client: AsyncRedisPoolClient, tag: str) -> None:
    """`_sync_round_trip` for asyncio, plus ``deliveries()`` (pull, acknowledged)."""
    q = qname(tag)
    await client.ping()
    first = await client.push(q, b"one")
    outcomes = await client.push_many(q, [b"two", b"three", b"four"])
    assert [o.ok for o in outcomes] == [True, True, True]
    assert await client.peek_next(q) == Event(q, first, b"one")
    assert _status(await client.status(q)) == (4, 0)
    assert await client.execute(QRPeek(to_wire(q))) == Event(q, first, b"one")
    assert _status(await client.execute(QStatus((to_wire(q),)))) == (4, 0)
    async with client.connection() as conn:
        assert (await conn.request(Ping())).unwrap() is None
        pong, status = await conn.request_many([Ping(), QStatus((to_wire(q),))])
        assert pong.unwrap() is None
        assert _status(status.unwrap()) == (4, 0)

    stop, seen = asyncio.Event(), []

    def handler(delivery: Any) -> bool:
        seen.append(delivery.contents)
        if len(seen) == 3:
            stop.set()
        return True  # acknowledged

    await asyncio.wait_for(client.consume(handler, [q], stop=stop), DEADLINE_S)
    assert seen == [b"one", b"two", b"three"]

    async def pull_one() -> None:
        async with client.deliveries(q, expire_seconds=30) as stream:
            async for delivery in stream:
                stream.ack(delivery)
                seen.append(delivery.contents)
                break

    await asyncio.wait_for(pull_one(), DEADLINE_S)
    assert seen == [b"one", b"two", b"three", b"four"]
    assert _status(await client.status(q)) == (0, 0)  # every ack arrived


# -- round trips through each door ----------------------------------------------------------------


def test_sync_round_trip_through_door(door: Door) -> None:
    """``RedisPoolClient``: requests, ``connection()`` and a consumer, all through the door
    (TLS: the proxy only accepted TLS connections; unix: the forwarder's socket file)."""
    with _sync_client(door) as client:
        _sync_round_trip(client, f"pools-sync-{door.kind}")
        door.check_through_door()
        # the pool keeps its connections: the server holds them, through the door
        assert door.server_connections() > 0


def test_async_round_trip_through_door(door: Door) -> None:
    """``AsyncRedisPoolClient``: requests, ``connection()``, a consumer and ``deliveries()``,
    all through the door."""

    async def main() -> None:
        async with _async_client(door) as client:
            await asyncio.wait_for(_async_round_trip(client, f"pools-async-{door.kind}"), 30)
            await door.async_wait(door.settled, "the server holds only the door's connections")
            door.check_through_door()
            assert door.server_connections() > 0

    asyncio.run(main())


def test_consumer_borrows_its_own_connection(door: Door) -> None:
    """A consumer waiting in ``QNOTIFY`` holds a pool connection of its own, through the
    door: a push beside it needs a second one; when the consumer stops, its connection is
    disconnected (a reply may be owed on it) and the request's stays in the pool."""
    q = qname(f"pools-consumer-{door.kind}")
    forwarder = door.forwarder
    with _sync_client(door) as client:
        stop, seen = threading.Event(), []

        def handler(delivery: Any) -> bool:
            seen.append(delivery.contents)
            stop.set()
            return True

        worker = threading.Thread(target=client.consume, args=(handler, [q]), kwargs={"stop": stop})
        worker.start()
        try:
            door.backstage.wait_until(
                lambda: forwarder.accepted == 1 and door.server_connections() == 1,
                "the consumer's connection",
            )
            client.push(q, b"wake")  # the consumer holds the pool's only connection
            assert forwarder.accepted == 2
            assert stop.wait(DEADLINE_S)
        finally:
            stop.set()
            worker.join(DEADLINE_S)
        assert not worker.is_alive()
        assert seen == [b"wake"]
        door.backstage.wait_until(
            lambda: forwarder.open == 1, "the consumer's connection closed, the request's idle"
        )
        assert forwarder.accepted == 2  # nothing opened beside the pool's
        assert _status(client.status(q)) == (0, 0)  # the ack arrived
        door.check_through_door()


# -- connection() opens nothing of its own ------------------------------------------------------


def test_async_connection_opens_no_connection_of_its_own(door: Door) -> None:
    """``AsyncRedisPoolClient.connection()`` borrows from the pool: the one connection the
    server sees is the one the door forwarded, and it goes back to the pool afterwards
    (the next ``connection()`` reuses it)."""

    async def main() -> None:
        async with _async_client(door) as client:
            assert (door.forwarder.accepted, door.server_connections()) == (0, 0)
            async with client.connection() as conn:
                assert (await conn.request(Ping())).unwrap() is None
                assert door.forwarder.accepted == 1
                assert door.forwarder.upstream_open == 1
                await door.async_wait(
                    lambda: door.server_connections() == 1, "the server sees the door's one"
                )
            async with client.connection() as conn:  # the same pooled connection again
                assert (await conn.request(Ping())).unwrap() is None
            assert door.forwarder.accepted == 1
            assert door.server_connections() == 1
            door.check_through_door()

    asyncio.run(main())


def test_sync_connection_opens_no_connection_of_its_own(door: Door) -> None:
    """``RedisPoolClient.connection()``: as for the asyncio client."""
    with _sync_client(door) as client:
        assert (door.forwarder.accepted, door.server_connections()) == (0, 0)
        with client.connection() as conn:
            assert conn.request(Ping()).unwrap() is None
            assert door.forwarder.accepted == 1
            door.backstage.wait_until(
                lambda: door.server_connections() == 1, "the server sees the door's one"
            )
        with client.connection() as conn:
            assert conn.request(Ping()).unwrap() is None
        assert door.forwarder.accepted == 1
        assert door.server_connections() == 1
        door.check_through_door()


# -- TLS is the only way in ---------------------------------------------------------------------


def test_plaintext_pool_is_refused_by_the_tls_proxy(tls_door: Door) -> None:
    """A pool without TLS pointed at the proxy gets nowhere: no handshake, nothing forwarded
    to the server.  (So the TLS pools above really spoke TLS.)"""
    pool = redis.ConnectionPool(
        host="127.0.0.1",
        port=tls_door.forwarder.port,
        protocol=2,
        socket_timeout=2,
        socket_connect_timeout=2,
        **NO_SETINFO,
    )
    try:
        with RedisPoolClient(pool, retries=0) as client, pytest.raises(TransportError):
            client.ping()
    finally:
        pool.disconnect()
    assert tls_door.forwarder.accepted == 0  # no TLS handshake completed
    assert tls_door.forwarder.upstream_opened == 0
    tls_door.check_closed()


# -- the pool's limits hold ---------------------------------------------------------------------


def test_sync_pool_max_connections_holds(tls_door: Door) -> None:
    """``max_connections=2``: two borrowed connections, and a third request is refused by
    the pool (redis-py's "Too many connections"), not served on a connection of the
    client's own; once one is given back, requests work again on the same two."""
    with _sync_client(tls_door, max_connections=2) as client, contextlib.ExitStack() as held:
        for _ in range(2):
            conn = held.enter_context(client.connection())
            assert conn.request(Ping()).unwrap() is None
        with pytest.raises(ConnectError, match="Too many connections"):
            client.ping()
        assert tls_door.forwarder.accepted == 2
        held.close()
        client.ping()
        client.push(qname("pools-limit"), b"x")
        assert tls_door.forwarder.accepted == 2
        assert tls_door.forwarder.peak == 2
        tls_door.check_through_door()


def test_async_pool_max_connections_holds(tls_door: Door) -> None:
    """`test_sync_pool_max_connections_holds` for ``redis.asyncio``."""

    async def main() -> None:
        async with (
            _async_client(tls_door, max_connections=2) as client,
            contextlib.AsyncExitStack() as held,
        ):
            for _ in range(2):
                conn = await held.enter_async_context(client.connection())
                assert (await conn.request(Ping())).unwrap() is None
            with pytest.raises(ConnectError, match="Too many connections"):
                await client.ping()
            assert tls_door.forwarder.accepted == 2
            await held.aclose()
            await client.ping()
            await client.push(qname("pools-limit"), b"x")
            assert tls_door.forwarder.accepted == 2
            assert tls_door.forwarder.peak == 2
            tls_door.check_through_door()

    asyncio.run(main())


def test_sync_blocking_pool_serialises_requests(tls_door: Door) -> None:
    """``BlockingConnectionPool(max_connections=1)``: a request waits for the pool's one
    connection (held by ``connection()``) and runs once it is given back; requests from
    many threads all go over that one connection, one at a time."""
    pool_class = redis.BlockingConnectionPool
    q = qname("pools-blocking")
    with (
        _sync_client(tls_door, pool_class, max_connections=1, timeout=DEADLINE_S) as client,
        ThreadPoolExecutor(max_workers=4) as threads,
    ):
        with client.connection() as conn:
            assert conn.request(Ping()).unwrap() is None
            waiting = threads.submit(client.push, q, b"waited")
            time.sleep(0.3)
            assert not waiting.done()  # blocked in the pool, not on a connection of its own
        waiting.result(timeout=DEADLINE_S)
        pushes = [threads.submit(client.push, q, f"e{i}".encode()) for i in range(12)]
        for push in pushes:
            push.result(timeout=DEADLINE_S)
        assert _status(client.status(q)) == (13, 0)
        assert tls_door.forwarder.accepted == 1
        assert tls_door.forwarder.peak == 1
        tls_door.check_through_door()


def test_sync_blocking_pool_timeout_holds(tls_door: Door) -> None:
    """``BlockingConnectionPool(max_connections=1, timeout=0.2)``: while its connection is
    held, a request fails after the pool's timeout (redis-py's "No connection available")."""
    pool_class = redis.BlockingConnectionPool
    with _sync_client(tls_door, pool_class, max_connections=1, timeout=0.2) as client:
        with client.connection() as conn:
            assert conn.request(Ping()).unwrap() is None
            started = time.monotonic()
            with pytest.raises(ConnectError, match="No connection available"):
                client.ping()
            assert 0.15 <= time.monotonic() - started < DEADLINE_S
        client.ping()
        assert tls_door.forwarder.accepted == 1
        tls_door.check_through_door()


def test_async_blocking_pool_serialises_requests(tls_door: Door) -> None:
    """`test_sync_blocking_pool_serialises_requests` for ``redis.asyncio``."""
    pool_class = redis.asyncio.BlockingConnectionPool
    q = qname("pools-blocking-async")

    async def main() -> None:
        async with _async_client(tls_door, pool_class, max_connections=1, timeout=DEADLINE_S) as (
            client
        ):
            async with client.connection() as conn:
                assert (await conn.request(Ping())).unwrap() is None
                waiting = asyncio.ensure_future(client.push(q, b"waited"))
                await asyncio.sleep(0.3)
                assert not waiting.done()  # blocked in the pool
            await asyncio.wait_for(waiting, DEADLINE_S)
            pushes = [client.push(q, f"e{i}".encode()) for i in range(12)]
            await asyncio.wait_for(asyncio.gather(*pushes), DEADLINE_S)
            assert _status(await client.status(q)) == (13, 0)
            assert tls_door.forwarder.accepted == 1
            assert tls_door.forwarder.peak == 1
            tls_door.check_through_door()

    asyncio.run(main())
