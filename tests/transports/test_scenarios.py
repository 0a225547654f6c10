"""The scenario list of `scenarios.py`, run against every transport over real TCP.

Transports: the sync client, the asyncio client, the trio client, and the redis-py adapter
(sync pool and ``redis.asyncio`` pool).  asyncio runs via `asyncio.run`, trio via
`trio.run`; each run has an absolute deadline besides pytest-timeout's.  A transport named
``X-uvloop`` is the asyncio transport ``X`` on a uvloop loop (`scenarios.run_on_uvloop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
import trio

import okq_proto
from okq_transports import asyncio as okq_asyncio
from okq_transports import sync as okq_sync
from okq_transports import trio as okq_trio
from okq_transports.redis import AsyncRedisPoolClient, RedisPoolClient
from okq_transports.server import ThreadedServer

from .scenarios import (
    ASYNC_ONLY,
    DEADLINE_S,
    NO_SETINFO,
    NOTIFY_S,
    SCENARIOS,
    Harness,
    ThreadedHarness,
    TrioHarness,
    qname,
    redis_async_client,
    run_on_uvloop,
)
from .scenarios_faults import FAULT_SCENARIOS
from .scenarios_links import LINK_SCENARIOS, RESTARTING, failover
from .scenarios_servers import GOOD_PEEK, MalformedServer

#: ``X-uvloop``: the asyncio transport ``X`` on a uvloop loop.
UVLOOP = "-uvloop"
TRANSPORTS = [
    "sync",
    "asyncio",
    "asyncio" + UVLOOP,
    "trio",
    "redis-sync",
    "redis-asyncio",
    "redis-asyncio" + UVLOOP,
]
#: The transports driven by an asyncio event loop of their own (the async front doors).
ASYNCIO_KINDS = [kind for kind in TRANSPORTS if "asyncio" in kind]


def client_kind(kind: str) -> str:
    """The client a transport uses: ``X-uvloop`` uses ``X``'s."""
    return kind.removesuffix(UVLOOP)


def run_asyncio(kind: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `main` on the event loop of asyncio transport `kind` (``X-uvloop``: uvloop's)."""
    if kind.endswith(UVLOOP):
        run_on_uvloop(main)
    else:
        asyncio.run(main())


pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    srv = ThreadedServer(sweep_interval_s=0.2)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _options(constructor: Callable[..., Any]) -> frozenset[str]:
    """The keyword-only options of a client's constructor."""
    parameters = inspect.signature(constructor).parameters.values()
    return frozenset(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


#: The constructor options each transport has (the bad-argument scenario tries each).
OPTIONS = {
    "sync": _options(okq_sync.Client),
    "asyncio": _options(okq_asyncio.Client),
    "trio": _options(okq_trio.open_client),
    "redis-sync": _options(RedisPoolClient),
    "redis-asyncio": _options(AsyncRedisPoolClient),
}


@contextlib.asynccontextmanager
async def harness_for(
    kind: str, server: ThreadedServer | None, address: Any = None, **options: Any
) -> AsyncIterator[Harness]:
    """A `Harness` over a new client of `kind` to `address` (default: `server`'s; text or,
    but for the redis-py adapters, a list of addresses).

    ``read_timeout_s`` becomes redis-py's ``socket_timeout`` for the redis-py adapters and
    is dropped for trio (cancel scopes rule there); ``pool_size`` becomes the redis-py
    pool's ``max_connections``."""
    address = address or (server.address if server is not None else "")
    named = functools.partial(_named, kind=kind)
    kind = client_kind(kind)
    timeout = options.get("read_timeout_s")
    if kind in ("trio", "redis-sync", "redis-asyncio"):
        options.pop("read_timeout_s", None)
    pool_options: dict[str, Any] = {}
    if kind.startswith("redis") and "pool_size" in options:
        pool_options["max_connections"] = options.pop("pool_size")
    options = {"notify_timeout_s": NOTIFY_S, **options}
    if kind == "asyncio":
        async with okq_asyncio.Client(address, **options) as client:
            yield named(Harness(client, server))
    elif kind == "trio":
        async with okq_trio.open_client(address, **options) as client:
            yield named(TrioHarness(client, server))
    elif kind == "redis-asyncio":
        async with redis_async_client(
            address, socket_timeout=timeout, **pool_options, **options
        ) as client:
            yield named(Harness(client, server))
    elif kind == "sync":
        with okq_sync.Client(address, **options) as client:
            yield named(ThreadedHarness(client, server))
    else:
        host, port = address.rsplit(":", 1)
        pool = redis.ConnectionPool(
            host=host,
            port=int(port),
            protocol=2,
            socket_timeout=timeout,
            socket_connect_timeout=DEADLINE_S,
            **NO_SETINFO,
            **pool_options,
        )
        try:
            with RedisPoolClient(pool, **options) as client:
                yield named(ThreadedHarness(client, server))
        finally:
            pool.disconnect()


def _named(h: Harness, kind: str) -> Harness:
    h.name = kind
    h.options = OPTIONS[client_kind(kind)]
    h.parses_itself = h.failover = not kind.startswith("redis")
    h.reopen = functools.partial(harness_for, kind, h.server)
    return h


def run_scenario(
    kind: str, server: ThreadedServer, body: Callable[[Harness], Awaitable[None]], **options: Any
) -> None:
    async def main() -> None:
        async with harness_for(kind, server, **options) as h:
            await body(h)

    if kind == "trio":

        async def trio_main() -> None:
            with trio.fail_after(DEADLINE_S * 2):
                await main()

        trio.run(trio_main)
    else:

        async def asyncio_main() -> None:
            await asyncio.wait_for(main(), DEADLINE_S * 2)

        run_asyncio(kind, asyncio_main)


BLOCKING = {"sync", "redis-sync"}
#: The scenarios of the shared server, and the doors each runs on.
SHARED = [*SCENARIOS, *FAULT_SCENARIOS, *LINK_SCENARIOS]


def runs_on(scenario: Callable[[Harness], Awaitable[None]], kind: str) -> bool:
    """Does `scenario` apply to transport `kind`?  Only the async doors cancel handlers and
    pull; only the doors with several addresses fail over."""
    if scenario in ASYNC_ONLY:
        return kind not in BLOCKING
    if scenario is failover:
        return not kind.startswith("redis")
    return True


@pytest.mark.parametrize(
    ("scenario", "kind"),
    [
        pytest.param(scenario, kind, id=f"{scenario.__name__}-{kind}")
        for scenario in SHARED
        for kind in TRANSPORTS
        if runs_on(scenario, kind)
    ],
)
def test_scenario(
    kind: str, scenario: Callable[[Harness], Awaitable[None]], server: ThreadedServer
) -> None:
    run_scenario(kind, server, scenario)


@pytest.mark.parametrize(
    ("scenario", "kind"),
    [
        pytest.param(scenario, kind, id=f"{scenario.__name__}-{kind}")
        for scenario in RESTARTING
        for kind in TRANSPORTS
    ],
)
def test_restarting_scenario(kind: str, scenario: Callable[[Harness], Awaitable[None]]) -> None:
    """The scenarios that restart their server, each on a server of its own."""
    srv = ThreadedServer(sweep_interval_s=0.2)
    srv.start()
    try:
        run_scenario(kind, srv, scenario)
    finally:
        srv.stop()


# -- beyond the shared list: what only some transports have ---------------------------------


def test_trio_memory_stream_cancel_at_every_byte_and_busy() -> None:
    """On trio's in-memory streams, deterministically: cancelling at each byte boundary of a
    reply poisons the connection, and a second task on a busy connection gets a clear error."""
    from trio.testing import memory_stream_pair, wait_all_tasks_blocked

    from okq_proto import ConnectionClosed, Ping
    from okq_transports.trio import AsyncConnection, ConnectionBusyError, connection_over

    reply = b"+PONG\r\n"

    async def main() -> None:
        for k in range(len(reply)):
            client_side, server_side = memory_stream_pair()
            conn = connection_over(client_side)
            async with trio.open_nursery() as nursery:
                scope = trio.CancelScope()

                async def request(
                    conn: AsyncConnection = conn, scope: trio.CancelScope = scope
                ) -> None:
                    with scope:
                        await conn.request(Ping())

                nursery.start_soon(request)
                assert await server_side.receive_some() == b"*1\r\n$4\r\nPING\r\n"
                await server_side.send_all(reply[:k])
                await wait_all_tasks_blocked()
                with pytest.raises(ConnectionBusyError):
                    await conn.request(Ping())  # the first task is still inside
                scope.cancel()
            assert not conn.usable
            with pytest.raises(ConnectionClosed):
                await conn.request(Ping())

    trio.run(main)


@pytest.mark.parametrize("kind", ["asyncio", "asyncio" + UVLOOP])
def test_asyncio_two_tasks_on_one_connection(kind: str, server: ThreadedServer) -> None:
    from okq_proto import QNotify
    from okq_transports.asyncio import ConnectionBusyError

    async def main() -> None:
        async with (
            okq_asyncio.Client(server.address) as client,
            client.connection() as conn,
        ):
            waiting = asyncio.ensure_future(conn.request(QNotify(1)))
            await asyncio.sleep(0.01)
            with pytest.raises(ConnectionBusyError):
                await conn.request(QNotify(0))
            assert (await waiting).result is None
            assert conn.usable

    run_asyncio(kind, lambda: asyncio.wait_for(main(), DEADLINE_S))


def test_trio_consume_reports_started_once_registered(server: ThreadedServer) -> None:
    async def main() -> None:
        async with okq_trio.open_client(server.address, notify_timeout_s=1) as client:
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    functools.partial(client.consume, lambda d: True, ["started-q"], stop=stop)
                )
                (status,) = await client.status("started-q")
                assert status.consumers == 1  # registered before start() returned
                stop.set()

    trio.run(main)


def test_redis_pool_refused_with_reason(server: ThreadedServer) -> None:
    from okq_proto import LocalProtocolError
    from okq_transports.redis import check_pool

    with pytest.raises(LocalProtocolError, match="protocol=2"):
        RedisPoolClient(redis.ConnectionPool(host="127.0.0.1", port=1, protocol=3))
    # redis-py's default protocol: RESP2 before redis-py 6 (accepted: it can talk to okq);
    # RESP3 from 6 on (refused: such a pool cannot), until 8.2, which falls back to RESP2 when
    # HELLO is unknown (accepted again).
    default = redis.ConnectionPool(host=server.host, port=server.port)
    try:
        try:
            redis.Redis(connection_pool=default).ping()
            talks = True
        except redis.RedisError:
            talks = False
        if talks:
            RedisPoolClient(default).ping()
        else:
            with pytest.raises(LocalProtocolError, match="protocol=2"):
                RedisPoolClient(default)
    finally:
        default.disconnect()
    for bad in ({"password": "x"}, {"db": 3}, {"client_name": "me"}, {"protocol": 3}):
        with pytest.raises(LocalProtocolError):
            check_pool({"protocol": 2, **bad})
    check_pool({"protocol": 2, "socket_timeout": 5})


def test_trio_open_client_over_memory_streams() -> None:
    """`open_client(stream_factory=...)` runs the whole client over in-memory streams."""
    from trio.testing import memory_stream_pair

    async def main() -> None:
        async with trio.open_nursery() as nursery:

            async def factory(address: tuple[str, int]) -> trio.abc.Stream:
                client_side, server_side = memory_stream_pair()

                async def fake_server() -> None:
                    while data := await server_side.receive_some():
                        await server_side.send_all(b"+PONG\r\n" * data.count(b"PING"))

                nursery.start_soon(fake_server)
                return client_side

            async with okq_trio.open_client("memory:1", stream_factory=factory) as client:
                with trio.fail_after(5):
                    await client.ping()
                    await client.ping()
            nursery.cancel_scope.cancel()

    trio.run(main)


@pytest.mark.parametrize("kind", ["asyncio", "asyncio" + UVLOOP])
def test_asyncio_cancelling_consume_cancels_its_handler(kind: str, server: ThreadedServer) -> None:
    """Cancelling `consume` cancels its handler and returns only once the handler has ended
    (its cleanup included): no handler outlives the call."""
    q = qname("cancel-consume")

    async def main() -> None:
        async with okq_asyncio.Client(server.address, notify_timeout_s=1) as client:
            await client.push(q, b"slow")
            started, cancelled = asyncio.Event(), []

            async def handler(delivery: Any) -> bool:
                started.set()
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    await asyncio.sleep(0.2)  # cleanup that takes a while
                    cancelled.append(delivery.id)
                    raise
                return True

            task = asyncio.ensure_future(client.consume(handler, [q]))
            await started.wait()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert len(cancelled) == 1
            (status,) = await client.status(q)
            assert status.processing == 1  # not acked: it comes back after its claim

    run_asyncio(kind, lambda: asyncio.wait_for(main(), DEADLINE_S))


# -- what every transport logs and reports, with the same fields -----------------------------


class _Recorder(okq_proto.Hooks):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def error(self, error: BaseException) -> None:
        self.calls.append("error")

    def handler_failed(self, delivery: Any, error: BaseException | None) -> None:
        self.calls.append("handler_failed")

    def late_ack(self, delivery: Any) -> None:
        self.calls.append("late_ack")


def _okq_fields(record: logging.LogRecord) -> set[str]:
    return {key for key in vars(record) if key.startswith("okq_")}


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_log_records_and_hooks_are_the_same_everywhere(
    kind: str, server: ThreadedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A retried request, a failed handler and a late ack give the same log records (level,
    ``extra`` field names and types) and hook calls on every transport."""
    hooks = _Recorder()
    q = f"observe-{kind}"

    async def body(h: Harness) -> None:
        scripted = MalformedServer(b"?what\r\n", GOOD_PEEK, heal_after=1)
        try:
            async with h.reopen(scripted.address, hooks=hooks) as retrying:
                assert await retrying.call("peek_next", "q") == okq_proto.Event("q", "id", b"body")
        finally:
            scripted.close()
        await h.call("push", q, b"x")
        stop, calls = h.new_stop(), []

        def handler(delivery: Any) -> bool:
            calls.append(delivery.id)
            if len(calls) == 1:
                raise RuntimeError("fails once")  # redelivered once its 1 s claim expires
            with okq_sync.Client(server.address) as other:
                other.flush(q)  # the event is gone before its ack: a late ack
            stop.set()
            return True

        await h.consume(handler, [q], expire_seconds=1, stop=stop)

    with caplog.at_level(logging.INFO, logger="okq"):

        async def main(h: Harness) -> None:
            await body(h)

        run_scenario(kind, server, main, hooks=hooks)
    records = [r for r in caplog.records if r.name == "okq"]

    def one(text: str) -> logging.LogRecord:
        found = [r for r in records if text in r.getMessage()]
        assert found, f"no log record with {text!r}: {[r.getMessage() for r in records]}"
        return found[0]

    retry = one("retrying on a new connection")
    assert (retry.levelno, _okq_fields(retry)) == (logging.WARNING, {"okq_address", "okq_retry"})
    scripted_address(retry)  # "host:port" text, as on every transport
    assert getattr(retry, "okq_retry", None) == 1
    failed = one("handler failed")
    assert (failed.levelno, _okq_fields(failed)) == (logging.ERROR, {"okq_queue", "okq_event_id"})
    assert failed.exc_info is not None
    assert getattr(failed, "okq_queue", None) == q
    late = one("late ack")
    assert (late.levelno, _okq_fields(late)) == (logging.WARNING, {"okq_queue", "okq_event_id"})
    assert hooks.calls.count("error") == 1  # the retry
    assert hooks.calls.count("late_ack") == 1
    assert hooks.calls.count("handler_failed") == 1


def scripted_address(record: logging.LogRecord) -> str:
    """The ``okq_address`` a record must carry: ``"host:port"`` text."""
    address = getattr(record, "okq_address", None)
    assert isinstance(address, str)
    host, port = address.rsplit(":", 1)
    assert host == "127.0.0.1"
    assert port.isdigit()
    return address
