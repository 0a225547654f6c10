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
    PushFlag,
    QAck,
    QNotify,
    QRegister,
    QRPop,
    QueueStatus,
    is_dup,
    to_wire,
)
from okq_transports.redis import AsyncRedisPoolClient
from okq_transports.server import ThreadedServer

from .scenarios_servers import (
    DEADLINE_S,
    GOOD_PEEK,
    OTHER_REPLY,
    VICTIM_REPLY,
    DribbleServer,
    MalformedServer,
    cancelled_at_every_byte,
)

__all__ = [  # the scripted servers, for the modules that import them from here
    "DEADLINE_S",
    "GOOD_PEEK",
    "OTHER_REPLY",
    "VICTIM_REPLY",
    "DribbleServer",
    "MalformedServer",
    "cancelled_at_every_byte",
]

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
    failover = True  # the client takes several addresses (a redis-py pool has one)
    #: ``reopen(address=None, **options)``: a `Harness` over a new client of the same kind
    #: (an async context manager); set by the runner.
    reopen: Callable[..., AbstractAsyncContextManager[Any]]

    def __init__(self, client: Any, server: ThreadedServer | None) -> None:
        self.client = client
        self.server = server

    def idle_connections(self) -> int | None:
        """Pooled connections open and idle, where the client pools its own (None: a
        redis-py pool's, which the client does not count)."""
        count = getattr(self.client, "idle_connections", None)
        return count if isinstance(count, int) and self.failover else None

    def open_connections(self) -> int | None:
        """Pooled connections open (idle or in use); None as for `idle_connections`."""
        count = getattr(self.client, "open_connections", None)
        return count if isinstance(count, int) and self.failover else None

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await getattr(self.client, method)(*args, **kwargs)

    def new_stop(self) -> Any:
        return asyncio.Event()

    def now(self) -> float:
        """The clock of ``delivery.deadline`` (the loop's; a blocking client's monotonic)."""
        return asyncio.get_running_loop().time()

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

    def now(self) -> float:
        return time.monotonic()

    async def consume(self, handler: Callable[..., Any], queues: list[str], **kw: Any) -> None:
        await asyncio.to_thread(functools.partial(self.client.consume, handler, queues, **kw))


class TrioHarness(Harness):
    """The trio client, in trio's own terms."""

    name = "trio"

    def new_stop(self) -> Any:
        return trio.Event()

    def now(self) -> float:
        return trio.current_time()

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
    q, nope = qname("every"), qname("nope")
    await h.call("ping")
    assert await h.call("peek_next", q) is None
    first = await h.call("push", q, b"one")
    second = await h.call("push", q, "two")  # str contents go as UTF-8
    assert isinstance(first, str)
    assert len(first) == 36
    nxt, last = await h.call("peek_next", q), await h.call("peek_last", q)
    assert nxt == Event(q, first, b"one")
    assert last == Event(q, second, b"two")
    await h.call("push_event", Event(q, "mine", b"three"))
    assert await h.call("status", q, nope) == [QueueStatus(q, 3, 0, 0), QueueStatus(nope, 0, 0, 0)]
    assert q in [s.name for s in await h.call("status")]  # every known queue
    assert any(q in line for line in await h.call("info"))
    (line,) = await h.call("info", q)
    assert line.startswith(f"{q}  total: 3  processing: 0"), line
    # one request at a time: one connection, back in the pool
    assert h.idle_connections() in (None, 1)
    assert h.open_connections() in (None, 1)
    outcomes = await h.call("push_many", q, [b"a", b"b", b"c"])
    assert [o.ok for o in outcomes] == [True] * 3
    assert len({o.id for o in outcomes}) == 3
    assert not any(o.retried for o in outcomes)
    assert await h.call("push_many", q, []) == []
    claimed = await h.call("execute", QRPop(to_wire(q), 60))  # the escape hatch
    assert claimed.id == first
    assert (await h.call("status", q))[0].processing == 1
    assert await h.call("execute", QAck(to_wire(q), to_wire(first))) == 1
    assert await h.call("execute", QAck(to_wire(q), to_wire(first))) == 0
    for command in (QRegister((to_wire(q),)), QNotify(1)):
        with pytest.raises(LocalProtocolError, match="consume"):
            await h.call("execute", command)  # consumer state: use consume()
    with pytest.raises(LocalProtocolError):
        await h.call("execute", b"PING")
    await h.call("flush", q)
    (st,) = await h.call("status", q)
    assert (st.total, st.processing, st.consumers) == (0, 0, 0)


async def flags_and_binary(h: Harness) -> None:
    q = qname("flags")
    blob = bytes(range(256)) * 3 + b"\r\n\x00"
    a = await h.call("push", q, blob)
    b = await h.call("push", q, b"normal")
    urgent = await h.call("push", q, b"urgent", PushFlag.HIGH_PRIORITY)
    (first,) = await h.call("push_many", q, [b"first"], PushFlag.HIGH_PRIORITY)
    assert (await h.call("peek_next", q)) == Event(q, first.id, b"first")
    assert (await h.call("peek_last", q)) == Event(q, b, b"normal")
    order = await _consume_all(h, [q], 4)
    assert [d.id for d in order] == [first.id, urgent, a, b]
    assert order[2].contents == blob
    fast = await h.call("push", q, b"fast", PushFlag.NO_BLOCK | PushFlag.HIGH_PRIORITY)

    async def landed() -> bool:
        return await h.call("peek_next", q) is not None

    await h.wait_until(landed)  # NO_BLOCK: the reply came before the event was stored
    assert await h.call("peek_next", q) == Event(q, fast, b"fast")
    # Names and ids are bytes too (surrogate escapes, CR LF, NUL), in and out.
    odd = Event(qname("q\udcff\r\n"), "id\x00\udcfe", blob + b"\r\n\x00" * 100)
    await h.call("push_event", odd)
    assert await h.call("peek_next", odd.queue) == odd
    (got,) = await _consume_all(h, [odd.queue], 1)
    assert (got.queue, got.id, got.contents) == (odd.queue, odd.id, odd.contents)
    assert (await h.call("status", odd.queue))[0].total == 0


async def _consume_all(h: Harness, queues: list[str], n: int) -> list[Any]:
    """Consume (and ack) `n` deliveries from `queues`, in the order they came."""
    stop, seen = h.new_stop(), []
    lock = threading.Lock()

    def handler(delivery: Any) -> bool:
        with lock:
            seen.append(delivery)
            if len(seen) >= n:
                stop.set()
        return True

    await h.consume(handler, queues, stop=stop)
    return seen


async def custom_id_factory(h: Harness) -> None:
    """Ids come from the client's ``id_factory``; a duplicate in a batch is that item's
    outcome, not the batch's."""
    q = qname("ids")
    ids = iter(["a", "b", "a", "c"])
    async with h.reopen(id_factory=lambda: next(ids)) as client:
        outcomes = await client.call("push_many", q, [b"1", b"2", b"3", b"4"])
    assert [o.id for o in outcomes] == ["a", "b", "a", "c"]
    assert [o.ok for o in outcomes] == [True, True, False, True]
    assert is_dup(outcomes[2].error)
    assert not any(o.retried for o in outcomes)
    with pytest.raises(DuplicateEventError):
        outcomes[2].unwrap()
    assert (await h.call("status", q))[0].total == 3


async def large_batch(h: Harness) -> None:
    """`push_many` pipelines a large batch (in writes of its own size)."""
    q = qname("batch")
    outcomes = await h.call("push_many", q, (b"%d" % i for i in range(10_000)))
    assert all(o.ok for o in outcomes)
    assert len({o.id for o in outcomes}) == 10_000
    assert (await h.call("status", q))[0].total == 10_000
    assert await h.call("peek_next", q) == Event(q, outcomes[0].id, b"0")
    await h.call("flush", q)


async def duplicates(h: Harness) -> None:
    q = qname("dup")
    await h.call("push_event", Event(q, "same", b"x"))
    with pytest.raises(DuplicateEventError) as info:
        await h.call("push_event", Event(q, "same", b"y"))
    assert is_dup(info.value)
    assert info.value.event_id == "same"
    assert (await h.call("peek_next", q)).contents == b"x"
    # NO_BLOCK hides duplicates (okq replies before storing)
    await h.call("push_event", Event(q, "same", b"z"), PushFlag.NO_BLOCK)


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


async def failed_handlers_are_reported(h: Harness) -> None:
    """A handler that raises, then one that returns false: no ack, the event comes back after
    its 1 s claim; the third attempt acks it.  Each failure is reported to the hooks."""
    q, hooks = qname("redeliver"), _Failures()
    event_id = await h.call("push", q, b"retry me")
    calls = []
    async with h.reopen(hooks=hooks) as client:
        stop = client.new_stop()

        def handler(delivery: Any) -> bool:
            calls.append(delivery.id)
            assert 0 < delivery.remaining(client.now()) <= 1.0
            if len(calls) == 1:
                raise RuntimeError("first attempt fails")
            if len(calls) == 2:
                return False
            stop.set()
            return True

        await client.consume(handler, [q], expire_seconds=1, stop=stop)
    assert calls == [event_id] * 3
    assert [type(e) for e in hooks.failed] == [RuntimeError, type(None)]
    assert hooks.deliveries == 3
    assert (await h.call("status", q))[0].total == 0


class _Failures(okq_proto.Hooks):
    """Counts what the hooks hear."""

    def __init__(self) -> None:
        self.failed: list[BaseException | None] = []
        self.deliveries = self.pushes = self.acks = 0

    def pushed(self, queue: str, event_id: str, *, retried: bool = False) -> None:
        self.pushes += 1

    def handler_failed(self, delivery: Any, error: BaseException | None) -> None:
        self.failed.append(error)

    def delivered(self, delivery: Any) -> None:
        self.deliveries += 1

    def acked(self, delivery: Any) -> None:
        self.acks += 1


async def hooks_see_pushes_deliveries_and_acks(h: Harness) -> None:
    q, hooks = qname("hooks"), _Failures()
    async with h.reopen(hooks=hooks) as client:
        await client.call("push", q, b"1")
        await client.call("push_many", q, [b"2", b"3"])
        await _consume_all(client, [q], 3)
    assert (hooks.pushes, hooks.deliveries, hooks.acks, hooks.failed) == (3, 3, 3, [])


async def at_most_once(h: Harness) -> None:
    q = qname("amo")
    await h.call("push_many", q, [b"1", b"2"])
    stop, seen = h.new_stop(), []

    def handler(delivery: Any) -> bool:
        seen.append(delivery.contents)
        assert not delivery.needs_ack
        assert delivery.remaining(0.0) == float("inf")  # no claim, no deadline
        return False  # lost: that is what at-most-once means (the server acked on pop)

    async def consumer() -> None:
        await h.consume(handler, [q], expire_seconds=-1, stop=stop)

    async with h.background(consumer):

        async def both() -> bool:
            return len(seen) == 2

        await h.wait_until(both)
        await h.sleep(0.5)  # well past any sweep: nothing comes back
        stop.set()
    assert seen == [b"1", b"2"]
    (st,) = await h.call("status", q)
    assert (st.total, st.processing) == (0, 0)


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

    async with h.background(consumer):

        async def registered() -> bool:
            consumers: int = (await h.call("status", q))[0].consumers
            return consumers == 1

        await h.wait_until(registered)
        await h.sleep(0.1)  # inside the QNOTIFY wait by now
        stopped = time.monotonic()
        stop.set()
    assert time.monotonic() - stopped < 1.0  # the QNOTIFY wait was abandoned


async def notify_wait_outlasts_read_timeout(h: Harness) -> None:
    """A ``QNOTIFY`` wait (1 s) longer than the read timeout (redis-py's ``socket_timeout``),
    more than once: the consumer waits it out and reports no error."""
    q, errors, got = qname("slow-notify"), _Errors(), []
    async with h.reopen(read_timeout_s=0.2, hooks=errors) as client:
        stop = client.new_stop()

        def handler(delivery: Any) -> bool:
            got.append(delivery.contents)
            stop.set()
            return True

        async def consumer() -> None:
            await client.consume(handler, [q], stop=stop)

        async with client.background(consumer):
            await client.sleep(2.5)  # two QNOTIFY rounds and more
            await h.call("push", q, b"late")
    assert got == [b"late"]
    assert errors.errors == []


class _Errors(okq_proto.Hooks):
    def __init__(self) -> None:
        self.errors: list[BaseException] = []

    def error(self, error: BaseException) -> None:
        self.errors.append(error)


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


SCENARIOS: list[Callable[[Harness], Awaitable[None]]] = [
    every_method,
    flags_and_binary,
    custom_id_factory,
    large_batch,
    duplicates,
    consume_and_stop,
    redelivery,
    failed_handlers_are_reported,
    hooks_see_pushes_deliveries_and_acks,
    at_most_once,
    concurrency,
    graceful_stop_in_flight,
    stop_abandons_wait,
    notify_wait_outlasts_read_timeout,
    handler_cancelled_at_expiry,
    pull_deliveries,
]

#: Scenarios that only apply to the async clients: a blocking client's handler runs in a
#: thread, which cannot be cancelled (it reads ``delivery.deadline`` instead; its overrun is
#: tested in test_sync.py), and only the async clients have the ``deliveries()`` pull form.
ASYNC_ONLY: frozenset[Callable[[Harness], Awaitable[None]]] = frozenset(
    {handler_cancelled_at_expiry, pull_deliveries}
)
