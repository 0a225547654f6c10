"""One list of transport scenarios, written once, run against every client.

Each scenario is ``async def scenario(h: Harness) -> None``.  A `Harness` gives the same
async face to every client: the asyncio and trio clients directly, the sync client and the
sync redis-py adapter through worker threads (run on an asyncio loop), and the
``redis.asyncio`` adapter directly.  Everything talks to the embedded okq server over real
loopback TCP; `DribbleServer` is a tiny scripted server for cancellation at every byte.
The asyncio clients also run on uvloop's loop (`run_on_uvloop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import inspect
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from types import ModuleType
from typing import Any, TypeVar

import pytest
import redis.asyncio
import redis.asyncio.connection
import trio

import okq_proto
from okq_proto import (
    DuplicateEventError,
    Event,
    LocalProtocolError,
    OkqError,
    PushFlag,
    QAck,
    QRegister,
    QRPop,
    is_dup,
    to_wire,
)
from okq_transports.redis import AsyncRedisPoolClient
from okq_transports.server import ThreadedServer

DEADLINE_S = 20.0

T = TypeVar("T")

#: redis-py pool options that skip ``CLIENT SETINFO`` on connect (the scripted servers
#: answer requests only): ``driver_info=None`` in current redis-py, which deprecates the
#: ``lib_name`` / ``lib_version`` of redis-py 5.
NO_SETINFO: dict[str, Any] = (
    {"driver_info": None}
    if "driver_info" in inspect.signature(redis.asyncio.connection.AbstractConnection).parameters
    else {"lib_name": None, "lib_version": None}
)

#: Redelivered events do not wake a waiting QNOTIFY (okq protocol §4): a short wait lets
#: consumers see them soon.
NOTIFY_S = 1


def require(module: str) -> ModuleType:
    """Import an optional test dependency (uvloop, anyio).  Missing, it skips the test, but
    under CI (``CI=true``), which installs every test dependency, the test fails instead."""
    if os.environ.get("CI", "").lower() == "true":
        return importlib.import_module(module)
    found: ModuleType = pytest.importorskip(module)
    return found


def run_on_uvloop(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run(main())`` on a new uvloop loop (never the default policy's), checking
    that the loop running `main` really is uvloop's."""
    uvloop = require("uvloop")

    async def checked() -> T:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, uvloop.Loop), f"not on uvloop: {type(loop)}"
        return await main()

    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(checked())
    result: T = uvloop.run(checked())  # 3.10: uvloop's own asyncio.run, on a new uvloop loop
    return result


def qname(tag: str) -> str:
    """A queue name no other test uses (the server is shared)."""
    return f"{tag}-{uuid.uuid4().hex[:8]}"


class Harness:
    """The async face of one client under test."""

    name = "?"
    cancellable_handlers = True  # the client can cancel a handler at claim expiry
    pull = True  # the client has deliveries()
    cancellable_requests = True  # a request can be cancelled mid-flight
    options: frozenset[str] = frozenset()  # the client's constructor options
    parses_itself = True  # okq's own decoder reads the replies (not redis-py's)
    #: ``reopen(address=None, **options)``: a `Harness` over a new client of the same kind
    #: (an async context manager); set by the runner.
    reopen: Callable[..., AbstractAsyncContextManager[Any]]

    def __init__(self, client: Any, server: ThreadedServer | None) -> None:
        self.client = client
        self.server = server

    def idle_connections(self) -> int | None:
        """Pooled connections open and idle, where the client says (None: it does not)."""
        count = getattr(self.client, "idle_connections", None)
        return count if isinstance(count, int) else None

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await getattr(self.client, method)(*args, **kwargs)

    def new_stop(self) -> Any:
        return asyncio.Event()

    async def consume(self, handler: Callable[..., Any], queues: list[str], **kw: Any) -> None:
        await self.client.consume(handler, queues, **kw)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def run_sync(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.to_thread(fn)

    @contextlib.asynccontextmanager
    async def background(
        self, fn: Callable[[], Awaitable[Any]]
    ) -> AsyncIterator[Callable[[], None]]:
        """Run `fn` beside the block; the block's end waits for it (bounded).  Yields a
        function that cancels it."""
        task = asyncio.ensure_future(fn())
        try:
            yield functools.partial(_cancel, task)
            await asyncio.wait_for(asyncio.shield(task), DEADLINE_S)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if not task.cancelled():
            task.result()

    async def cancel_when(
        self, fn: Callable[[], Awaitable[Any]], ready: Callable[[], Awaitable[None]]
    ) -> bool:
        """Start `fn`, await `ready`, cancel `fn`; True if it was cancelled unfinished."""
        task = asyncio.ensure_future(fn())
        await ready()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
            return False
        return True

    async def wait_until(
        self, predicate: Callable[[], Awaitable[bool]], timeout: float = 10
    ) -> None:
        deadline = time.monotonic() + timeout
        while not await predicate():
            assert time.monotonic() < deadline, "condition not reached in time"
            await self.sleep(0.02)


@contextlib.asynccontextmanager
async def redis_async_client(
    address: str, max_connections: int = 10, socket_timeout: float | None = None, **options: Any
) -> AsyncIterator[Any]:
    host, port = address.rsplit(":", 1)
    pool = redis.asyncio.ConnectionPool(
        host=host,
        port=int(port),
        protocol=2,
        max_connections=max_connections,
        socket_timeout=socket_timeout,
        socket_connect_timeout=DEADLINE_S,  # not socket_timeout: connecting may take longer
        **NO_SETINFO,
    )
    try:
        async with AsyncRedisPoolClient(
            pool, **{"notify_timeout_s": NOTIFY_S, **options}
        ) as client:
            yield client
    finally:
        await pool.disconnect()  # redis-py 5.0.0 has no aclose


def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()


class ThreadedHarness(Harness):
    """A blocking client (sync, redis-py sync) driven from worker threads."""

    cancellable_handlers = False
    pull = False
    cancellable_requests = False

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(
            functools.partial(getattr(self.client, method), *args, **kwargs)
        )

    def new_stop(self) -> Any:
        return threading.Event()

    async def consume(self, handler: Callable[..., Any], queues: list[str], **kw: Any) -> None:
        await asyncio.to_thread(functools.partial(self.client.consume, handler, queues, **kw))


class TrioHarness(Harness):
    """The trio client, in trio's own terms."""

    name = "trio"

    def new_stop(self) -> Any:
        return trio.Event()

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)

    async def run_sync(self, fn: Callable[[], Any]) -> Any:
        return await trio.to_thread.run_sync(fn)

    @contextlib.asynccontextmanager
    async def background(
        self, fn: Callable[[], Awaitable[Any]]
    ) -> AsyncIterator[Callable[[], None]]:
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def run() -> None:
                with scope:
                    await fn()

            nursery.start_soon(run)
            yield scope.cancel
            # leaving the nursery waits for `run`; the runner's fail_after bounds it

    async def cancel_when(
        self, fn: Callable[[], Awaitable[Any]], ready: Callable[[], Awaitable[None]]
    ) -> bool:
        finished = []
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def run() -> None:
                with scope:
                    await fn()
                    finished.append(True)

            nursery.start_soon(run)
            await ready()
            scope.cancel()
        return not finished


# ------------------------------------------------------------------------------ scenarios


async def every_method(h: Harness) -> None:
    q = qname("every")
    await h.call("ping")
    assert await h.call("peek_next", q) is None
    first = await h.call("push", q, b"one")
    second = await h.call("push", q, "two")
    assert isinstance(first, str)
    assert len(first) == 36
    nxt, last = await h.call("peek_next", q), await h.call("peek_last", q)
    assert nxt == Event(q, first, b"one")
    assert last == Event(q, second, b"two")
    await h.call("push_event", Event(q, "mine", b"three"))
    (st,) = await h.call("status", q)
    assert (st.name, st.total, st.processing, st.consumers) == (q, 3, 0, 0)
    assert any(q in line for line in await h.call("info"))
    assert (await h.call("info", q))[0].startswith(q)
    outcomes = await h.call("push_many", q, [b"a", b"b", b"c"])
    assert [o.ok for o in outcomes] == [True] * 3
    assert len({o.id for o in outcomes}) == 3
    assert await h.call("push_many", q, []) == []
    claimed = await h.call("execute", QRPop(to_wire(q), 60))  # the escape hatch
    assert claimed.id == first
    assert await h.call("execute", QAck(to_wire(q), to_wire(first))) == 1
    with pytest.raises(LocalProtocolError):
        await h.call("execute", QRegister((to_wire(q),)))  # consumer state: use consume()
    await h.call("flush", q)
    assert (await h.call("status", q))[0].total == 0


async def flags_and_binary(h: Harness) -> None:
    q = qname("flags")
    blob = bytes(range(256)) * 3 + b"\r\n\x00"
    await h.call("push", q, blob)
    await h.call("push", q, b"normal")
    urgent = await h.call("push", q, b"urgent", PushFlag.HIGH_PRIORITY)
    assert (await h.call("peek_next", q)).id == urgent
    assert (await h.call("peek_last", q)).contents == b"normal"
    await h.call("push", q, b"fast", PushFlag.NO_BLOCK)

    async def four() -> bool:
        total: int = (await h.call("status", q))[0].total
        return total == 4

    await h.wait_until(four)
    await h.call("flush", q)
    await h.call("push", q, blob)
    assert (await h.call("peek_next", q)).contents == blob


async def duplicates(h: Harness) -> None:
    q = qname("dup")
    await h.call("push_event", Event(q, "same", b"x"))
    with pytest.raises(DuplicateEventError) as info:
        await h.call("push_event", Event(q, "same", b"y"))
    assert is_dup(info.value)
    assert info.value.event_id == "same"
    assert (await h.call("peek_next", q)).contents == b"x"


async def consume_and_stop(h: Harness) -> None:
    q = qname("consume")
    ids = [o.id for o in await h.call("push_many", q, [b"%d" % i for i in range(20)])]
    stop, seen = h.new_stop(), []

    def handler(delivery: Any) -> bool:
        assert delivery.deadline > 0
        assert delivery.expire_s == 30
        seen.append(delivery.id)
        if len(seen) == len(ids):
            stop.set()
        return True

    await h.consume(handler, [q], stop=stop)
    assert seen == ids  # FIFO, each once
    (st,) = await h.call("status", q)
    assert (st.total, st.processing) == (0, 0)


async def redelivery(h: Harness) -> None:
    q = qname("redeliver")
    event_id = await h.call("push", q, b"retry me")
    stop, calls = h.new_stop(), []

    def handler(delivery: Any) -> bool:
        calls.append(delivery.id)
        if len(calls) == 2:
            stop.set()
            return True
        if len(calls) == 1:
            raise RuntimeError("first attempt fails")  # no ack: redelivered after expiry
        return True

    await h.consume(handler, [q], expire_seconds=1, stop=stop)
    assert calls == [event_id, event_id]
    assert (await h.call("status", q))[0].total == 0


async def at_most_once(h: Harness) -> None:
    q = qname("amo")
    await h.call("push_many", q, [b"1", b"2"])
    stop, seen = h.new_stop(), []

    def handler(delivery: Any) -> bool:
        seen.append(delivery.contents)
        assert not delivery.needs_ack
        if len(seen) == 2:
            stop.set()
        return False  # nothing to ack anyway: the server acked on pop

    await h.consume(handler, [q], expire_seconds=-1, stop=stop)
    assert seen == [b"1", b"2"]
    assert (await h.call("status", q))[0].total == 0


async def concurrency(h: Harness) -> None:
    q = qname("conc")
    n = 30
    await h.call("push_many", q, [b"%d" % i for i in range(n)])
    stop, seen = h.new_stop(), []
    lock = threading.Lock()

    def handler(delivery: Any) -> bool:
        with lock:
            seen.append(delivery.id)
            if len(seen) >= n:
                stop.set()
        return True

    await h.consume(handler, [q], concurrency=3, stop=stop)
    assert len(seen) == len(set(seen)) == n
    assert (await h.call("status", q))[0].total == 0


async def graceful_stop_in_flight(h: Harness) -> None:
    q = qname("graceful")
    await h.call("push", q, b"slow")
    stop, done = h.new_stop(), []

    def handler(delivery: Any) -> bool:
        stop.set()  # asked to stop while this handler runs: it still finishes and acks
        time.sleep(0.05)
        done.append(delivery.id)
        return True

    await h.consume(handler, [q], stop=stop)
    assert len(done) == 1
    assert (await h.call("status", q))[0].total == 0  # the final ack was sent


async def stop_abandons_wait(h: Harness) -> None:
    q = qname("idle")
    stop = h.new_stop()

    async def consumer() -> None:
        await h.consume(lambda d: True, [q], stop=stop)

    started = time.monotonic()
    async with h.background(consumer):

        async def registered() -> bool:
            consumers: int = (await h.call("status", q))[0].consumers
            return consumers == 1

        await h.wait_until(registered)
        stop.set()
    assert time.monotonic() - started < 5  # the 30 s QNOTIFY wait was abandoned


async def handler_cancelled_at_expiry(h: Harness) -> None:
    assert h.cancellable_handlers, "only for clients that can cancel a handler (async ones)"
    q = qname("expiry")
    event_id = await h.call("push", q, b"slow")
    stop, attempts, cancelled = h.new_stop(), [], []

    async def handler(delivery: Any) -> bool:
        attempts.append(delivery.id)
        if len(attempts) == 1:
            try:
                await h.sleep(30)
            except BaseException:
                cancelled.append(True)
                raise
        stop.set()
        return True

    await h.consume(handler, [q], expire_seconds=1, stop=stop)
    assert attempts == [event_id, event_id]
    assert cancelled == [True]
    assert (await h.call("status", q))[0].total == 0


async def pull_deliveries(h: Harness) -> None:
    assert h.pull, "only for clients with a deliveries() pull form (async ones)"
    q = qname("pull")
    await h.call("push_many", q, [b"a", b"b", b"c"])
    got = []
    async with h.client.deliveries(q, expire_seconds=30) as stream:
        async for delivery in stream:
            if delivery.contents == b"b":
                with contextlib.suppress(RuntimeError):
                    async with stream.handling(delivery):
                        raise RuntimeError("not acked")
            else:
                stream.ack(delivery)
            got.append(delivery.contents)
            if len(got) == 3:
                break
    assert got == [b"a", b"b", b"c"]
    (st,) = await h.call("status", q)
    assert (st.total, st.processing) == (1, 1)  # b is claimed, unacked


async def server_restart(h: Harness) -> None:
    q = qname("restart")
    stop, seen = h.new_stop(), set()
    lock = threading.Lock()
    pushed: list[str] = []

    def handler(delivery: Any) -> bool:
        with lock:
            seen.add(delivery.id)
        return True

    async def consumer() -> None:
        await h.consume(handler, [q], expire_seconds=2, stop=stop)

    async with h.background(consumer):
        for i in range(10):
            pushed.append(await h.call("push", q, b"before %d" % i))
        assert h.server is not None
        await h.run_sync(h.server.restart)
        for i in range(10):
            pushed.append(await h.call("push", q, b"after %d" % i))

        async def all_seen() -> bool:
            return set(pushed) <= seen

        await h.wait_until(all_seen, timeout=15)
        stop.set()


class DribbleServer:
    """A scripted server on loopback: the first connection gets `reply` cut after `k` bytes
    (the rest only once `release` is set); later connections get `other` at once."""

    def __init__(self, reply: bytes, other: bytes, k: int) -> None:
        self.reply, self.other, self.k = reply, other, k
        self.sent_part = threading.Event()
        self.release = threading.Event()
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                sock, _ = self._listener.accept()
                self.connections += 1
                threading.Thread(
                    target=self._one, args=(sock, self.connections == 1), daemon=True
                ).start()

    def _one(self, sock: socket.socket, victim: bool) -> None:
        with sock, contextlib.suppress(OSError):
            while sock.recv(65536):
                if victim:
                    sock.sendall(self.reply[: self.k])
                    self.sent_part.set()
                    self.release.wait(DEADLINE_S)
                    sock.sendall(self.reply[self.k :])
                else:
                    sock.sendall(self.other)

    def close(self) -> None:
        self.release.set()
        self._listener.close()


VICTIM_REPLY = b"*2\r\n$6\r\nvictim\r\n$5\r\nfirst\r\n"
OTHER_REPLY = b"*2\r\n$5\r\nother\r\n$6\r\nsecond\r\n"


async def cancelled_at_every_byte(h: Harness, make_client: Callable[[str], Any]) -> None:
    """A request cancelled after its bytes left and before its whole reply came back poisons
    its connection: the next request never reads the victim's reply (CVE-2023-28858)."""
    if not h.cancellable_requests:
        pytest.skip("a blocking call cannot be cancelled mid-request")
    for k in range(len(VICTIM_REPLY)):
        server = DribbleServer(VICTIM_REPLY, OTHER_REPLY, k)
        try:
            async with make_client(server.address) as client:

                async def ready(server: DribbleServer = server) -> None:
                    await h.run_sync(lambda: server.sent_part.wait(DEADLINE_S))
                    await h.sleep(0.005)  # let the k bytes land in the client

                cancelled = await h.cancel_when(functools.partial(client.peek_next, "q"), ready)
                assert cancelled, f"k={k}: the request finished"
                server.release.set()  # the rest of the victim's reply is now on the wire
                await h.sleep(0.005)
                event = await client.peek_next("q")
                assert event == Event("q", "other", b"second"), f"k={k}: got {event!r}"
                assert server.connections == 2
        finally:
            server.close()


class MalformedServer:
    """A scripted server on loopback: every request is answered with `bad` (and the
    connection left open) until `healed` is set, then with `good`.  It counts connections, and
    requests that came on a connection after it had sent `bad` (a broken connection reused).

    Args:
        heal_after: set `healed` by itself once `bad` was sent this many times.
    """

    def __init__(self, bad: bytes, good: bytes, heal_after: int | None = None) -> None:
        self.bad, self.good, self.heal_after = bad, good, heal_after
        self.healed = threading.Event()
        self.connections = 0
        self.bad_sent = 0
        self.reused = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                sock, _ = self._listener.accept()
                self.connections += 1
                threading.Thread(target=self._one, args=(sock,), daemon=True).start()

    def _one(self, sock: socket.socket) -> None:
        broken = False
        with sock, contextlib.suppress(OSError):
            while sock.recv(65536):
                if broken:
                    self.reused += 1
                if self.healed.is_set():
                    sock.sendall(self.good)
                    continue
                broken = True
                self.bad_sent += 1
                if self.bad_sent == self.heal_after:
                    self.healed.set()  # before sending: the retry may come at once
                sock.sendall(self.bad)

    def close(self) -> None:
        self._listener.close()


GOOD_PEEK = b"*2\r\n$2\r\nid\r\n$4\r\nbody\r\n"
#: Not RESP2; a bulk string and an array of absurd sizes (beyond okq's `Limits`).
MALFORMED = [b"?what\r\n", b"$2147483647\r\n", b"*2147483648\r\n"]


async def malformed_reply(h: Harness) -> None:
    """A reply that is not RESP2, or announces an absurd size, raises a typed okq error
    (never a library's own) and its connection is never reused."""
    for bad in MALFORMED:
        server = MalformedServer(bad, GOOD_PEEK)
        try:
            # read_timeout_s: redis-py (the adapters' parser) waits for the announced bytes.
            async with h.reopen(server.address, read_timeout_s=1.0) as client:
                with pytest.raises(OkqError) as info:
                    await client.call("peek_next", "q")
                error = info.value
                # one of okq_proto's own errors, not the library's underneath
                assert getattr(okq_proto, type(error).__name__, None) is type(error), repr(error)
                if h.parses_itself or bad == b"?what\r\n":
                    assert isinstance(error, okq_proto.RemoteProtocolError), repr(error)
                assert client.idle_connections() in (0, None)
                server.healed.set()
                assert await client.call("peek_next", "q") == Event("q", "id", b"body")
                assert server.reused == 0, f"{bad!r}: a broken connection was used again"
                assert server.connections == server.bad_sent + 1
        finally:
            server.close()


#: (option, bad value) pairs; each transport tries those its constructor has.
BAD_OPTIONS: list[tuple[str, object]] = [
    ("pool_size", "3"),
    ("pool_size", 0),
    ("pool_size", 2.0),
    ("connect_timeout_s", -1),
    ("read_timeout_s", -1),
    ("read_timeout_s", "5"),
    ("pool_timeout_s", 0),
    ("retries", -1),
    ("notify_timeout_s", 2.5),
    ("notify_timeout_s", 0),
    ("notify_timeout_s", "30"),
    ("notify_timeout_s", True),
    ("id_factory", "uuid4"),
    ("hooks", object()),
]


async def bad_arguments(h: Harness) -> None:
    """Every front door refuses the same bad arguments with `LocalProtocolError`, naming the
    argument, before anything is sent."""
    tried = 0
    for name, value in BAD_OPTIONS:
        if name not in h.options:
            continue
        tried += 1
        with pytest.raises(LocalProtocolError, match=name):
            async with h.reopen(**{name: value}):
                pass
    assert tried >= 6
    q = qname("badargs")
    bad_consumes: list[tuple[Any, Any, dict[str, Any]]] = [
        (_ack, [q], {"concurrency": 2.5}),
        (_ack, [q], {"concurrency": "2"}),
        (_ack, [q], {"concurrency": 0}),
        (_ack, [q], {"concurrency": True}),
        (_ack, [q], {"expire_seconds": -5}),
        (_ack, [q], {"expire_seconds": "30"}),
        (_ack, [], {}),
        (_ack, q, {}),  # one bare name, not a list
        ("not callable", [q], {}),
    ]
    for handler, queues, kw in bad_consumes:
        with pytest.raises(LocalProtocolError):
            await h.consume(handler, queues, stop=h.new_stop(), **kw)
    assert (await h.call("status", q))[0].consumers == 0


def _ack(delivery: Any) -> bool:
    return True


SCENARIOS: list[Callable[[Harness], Awaitable[None]]] = [
    every_method,
    flags_and_binary,
    duplicates,
    consume_and_stop,
    redelivery,
    at_most_once,
    concurrency,
    graceful_stop_in_flight,
    stop_abandons_wait,
    handler_cancelled_at_expiry,
    pull_deliveries,
    server_restart,
    malformed_reply,
    bad_arguments,
]

#: Scenarios that only apply to the async clients: a blocking client's handler runs in a
#: thread, which cannot be cancelled (it reads ``delivery.deadline`` instead; its overrun is
#: tested in test_sync.py), and only the async clients have the ``deliveries()`` pull form.
ASYNC_ONLY: frozenset[Callable[[Harness], Awaitable[None]]] = frozenset(
    {handler_cancelled_at_expiry, pull_deliveries}
)
