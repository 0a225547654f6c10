"""Every front door under injected faults (`faultproxy`), each test written once over the doors.

The delivery ledgers (`faultrun`): N events with unique contents pushed straight to an
embedded server, consumed through the fault-injecting proxy, then 0 lost, 0 unexpected,
every duplicate explained (`faultrun.check`).  ``OKQ_FAULT_N`` sets N for every fault kind
(the documented runs use ``python -m tests.transports.faultrun`` instead).

Then the behaviour a ledger cannot show: the backoff grows behind a server that accepts and
closes, a stop is honoured behind a blackhole and during a connect that hangs, and a handler
that cancels its own consumer and returns true keeps its ack.

Everything is on 127.0.0.1 with ephemeral ports, every run bounded twice (its own deadline
and pytest-timeout), every proxy thread joined.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio

from okq_proto import Delivery, Hooks
from okq_transports.server import ThreadedServer

from . import faultrun
from .faultproxy import FaultProxy
from .faultrun import DOORS, FAULTS, READ_TIMEOUT_S, STOP_BOUND_S, Ledger, check, run_ledger
from .scenarios import Harness, TrioHarness, qname, require
from .test_scenarios import run_scenario

pytestmark = pytest.mark.timeout(60)  # the ledgers set their own, from their size

QUEUE = "faults"
#: The doors whose consumers are coroutines (cancellable, with a pull form).
ASYNC_DOORS = ["asyncio", "trio", "redis-asyncio"]
#: The five front doors (uvloop only where it is cheap: the reset ledger).
FIVE = [door for door in DOORS if not door.endswith("-uvloop")]


def _ledger_cases() -> Iterator[Any]:
    for fault, plan in FAULTS.items():
        doors = DOORS if fault == "reset" else FIVE
        for door in doors:
            n = faultrun.events_for(plan)
            # 120 s beyond the run's own deadline: pytest-timeout only catches a hang.
            timeout = max(30.0, plan.deadline_per_1000_s * n / 1000) + 120
            yield pytest.param(
                door, fault, n, id=f"{fault}-{door}", marks=pytest.mark.timeout(timeout)
            )


@pytest.mark.parametrize(("door", "fault", "n"), list(_ledger_cases()))
def test_ledger(door: str, fault: str, n: int) -> None:
    """N events through `fault`: none lost, none unexpected, duplicates explained."""
    if door.endswith("-uvloop"):
        require("uvloop")
    result = run_ledger(door, fault, n)
    print(faultrun.table([faultrun.row(result)]))
    check(result)
    assert sum(result.faults.values()) > 0, "no fault was injected: the run proves nothing"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("door", ["sync", "asyncio", "redis-sync", "redis-asyncio"])
def test_half_open_without_a_read_timeout(door: str) -> None:
    """A client with ``read_timeout_s=None`` (a redis-py pool with ``socket_timeout=None``)
    behind half-open connections: its consumers bound their reads by themselves (as trio's,
    which have no read timeout, must).  The sync consumers, of the sync client and of a sync
    redis-py pool, used to block for good in the read of a reply that never came."""
    result = run_ledger(door, "half-open", 200, read_timeout_s=None)
    check(result)
    assert result.faults["reset-up"] + result.faults["reset-down"] > 0


# -- the ledger itself: it must be able to fail -------------------------------------------------


def _delivery(contents: bytes, event_id: str = "id") -> Delivery:
    return Delivery(QUEUE, event_id, contents, deadline=time.monotonic() + 2, expire_s=2)


def test_ledger_counts_lost_unexpected_and_kinds() -> None:
    ledger = Ledger([b"a", b"b", b"c", b"d"])
    first = _delivery(b"a", "ida")
    ledger.handle(first)
    ledger.acked(first)
    ledger.handle(_delivery(b"a", "ida"))  # acked in time, handed out again: a bug
    cut = _delivery(b"b", "idb")
    ledger.handle(cut)
    ledger.reported_unacked["idb"] += 1  # the consumer reported it when its link failed
    ledger.handle(_delivery(b"b", "idb"))
    late = _delivery(b"c", "idc")
    ledger.handle(late)
    ledger.late_ack(late)
    ledger.handle(_delivery(b"c", "idc"))
    ledger.handle(_delivery(b"zzz"))
    assert ledger.lost == 1  # d
    assert ledger.unexpected == 1
    assert ledger.duplicates() == collections.Counter(
        {"unexplained": 1, "ack-cut": 1, "expired": 1}
    )


def test_an_unreported_cut_is_unexplained() -> None:
    ledger = Ledger([b"a"])
    ledger.handle(_delivery(b"a"))
    ledger.handle(_delivery(b"a"))
    assert ledger.duplicates() == collections.Counter({"unexplained": 1})


# -- behaviour, over the doors --------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    srv = ThreadedServer("127.0.0.1", 0, sweep_interval_s=0.2, seed=0).start()
    try:
        yield srv
    finally:
        srv.stop()


class Reconnects(Hooks):
    def __init__(self) -> None:
        self.attempts: list[int] = []

    def reconnect(self, address: tuple[str, int], attempt: int, delay_s: float) -> None:
        self.attempts.append(attempt)


async def _stop_after(h: Harness, seconds: float, **consume: Any) -> float:
    """Consume from an empty queue, set the stop after `seconds`; returns how long the
    consume call took to return after that."""
    stop = h.new_stop()
    times: list[float] = []

    async def consumer() -> None:
        await h.consume(lambda d: True, [QUEUE], stop=stop, **consume)

    async with h.background(consumer):
        await h.sleep(seconds)
        times.append(time.monotonic())
        stop.set()
    return time.monotonic() - times[0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("door", FIVE)
def test_backoff_grows_behind_accept_and_close(door: str, server: ThreadedServer) -> None:
    """A listener that accepts and closes at once: every attempt fails before registering,
    so the backoff grows (attempts 1, 2, 3... never back to 1), and the stop is honoured."""
    hooks = Reconnects()
    stop_s: list[float] = []

    async def body(h: Harness) -> None:
        stop_s.append(await _stop_after(h, 3.0))

    with FaultProxy((server.host, server.port), accept_and_close=True) as proxy:
        run_scenario(door, server, body, address=proxy.address_text, hooks=hooks)
    print("attempts", hooks.attempts)
    assert 3 <= len(hooks.attempts) <= 20
    assert hooks.attempts == list(range(1, len(hooks.attempts) + 1))
    assert stop_s[0] < STOP_BOUND_S


@pytest.mark.timeout(60)
@pytest.mark.parametrize("door", FIVE)
def test_blackhole_stop_is_honoured(door: str, server: ThreadedServer) -> None:
    """A server that accepts and never answers: the registration's reply never comes; the
    consumer gives up on it by itself (its read timeout) and a stop ends the call in time."""
    stop_s: list[float] = []

    async def body(h: Harness) -> None:
        stop_s.append(await _stop_after(h, 1.0))

    with FaultProxy((server.host, server.port), blackhole=True) as proxy:
        run_scenario(door, server, body, address=proxy.address_text, read_timeout_s=READ_TIMEOUT_S)
        assert proxy.connections >= 1
    assert proxy.threads_alive == 0
    assert stop_s[0] < STOP_BOUND_S


@pytest.mark.timeout(60)
@pytest.mark.parametrize("door", ASYNC_DOORS)
def test_stop_abandons_a_hanging_connect(door: str, server: ThreadedServer) -> None:
    """A listener whose accept queue is full drops further SYNs, so a connect hangs (trio
    has no connect timeout; redis-py's is long here): a stop still ends the call at once."""
    stop_s: list[float] = []

    async def body(h: Harness) -> None:
        stop_s.append(await _stop_after(h, 0.5))
        pool = getattr(h.client, "_redis_pool", None)
        # redis-py gave back the connection it was connecting when the stop cancelled it.
        assert not getattr(pool, "_in_use_connections", ())

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        host, port = listener.getsockname()[:2]
        with socket.create_connection((host, port), timeout=2.0):  # fills the queue
            run_scenario(door, server, body, address=f"{host}:{port}")
    assert stop_s[0] < 1.0


async def _run_cancelled(h: Harness, body: Callable[[Callable[[], None]], Awaitable[None]]) -> None:
    """Run ``body(cancel)`` where ``cancel()`` cancels the body itself (an asyncio task, a
    trio cancel scope), and wait for it to end cancelled."""
    if isinstance(h, TrioHarness):
        with trio.CancelScope() as scope:
            await body(scope.cancel)
        assert scope.cancelled_caught
        return
    tasks: list[asyncio.Task[None]] = []

    def cancel() -> None:
        tasks[0].cancel()

    tasks.append(asyncio.ensure_future(body(cancel)))
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("door", ASYNC_DOORS)
def test_handler_cancelling_its_consumer_keeps_the_ack(door: str, server: ThreadedServer) -> None:
    """The handler cancels the consume call (its task, its nursery) and returns true: the
    ack is still sent, and nothing more is popped."""
    q = qname("cancel")

    async def body(h: Harness) -> None:
        await h.call("push", q, b"first")
        await h.call("push", q, b"second")

        async def consume(cancel: Callable[[], None]) -> None:
            def handle(delivery: Delivery) -> bool:
                cancel()
                return True

            await h.consume(handle, [q])

        await _run_cancelled(h, consume)
        (status,) = await h.call("status", q)
        assert (status.total, status.processing) == (1, 0)

    run_scenario(door, server, body)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("door", ASYNC_DOORS)
def test_pull_stream_ack_then_cancel(door: str, server: ThreadedServer) -> None:
    """A pull consumer acks, then is cancelled before the next pop: the ack leaves when the
    stream closes."""
    q = qname("pull-cancel")

    async def body(h: Harness) -> None:
        await h.call("push", q, b"one")

        async def pull(cancel: Callable[[], None]) -> None:
            async with h.client.deliveries(q) as stream:
                async for delivery in stream:
                    stream.ack(delivery)
                    cancel()

        await _run_cancelled(h, pull)
        (status,) = await h.call("status", q)
        assert (status.total, status.processing) == (0, 0)

    run_scenario(door, server, body)


@pytest.mark.timeout(60)
def test_anyio_task_group_cancel_keeps_the_ack(server: ThreadedServer) -> None:
    """asyncio under an anyio task group, whose scope cancels again at every iteration: a
    handler that cancels the group and returns true keeps its ack."""
    anyio = require("anyio")
    q = qname("anyio-cancel")

    async def body(h: Harness) -> None:
        await h.call("push", q, b"first")
        await h.call("push", q, b"second")
        async with anyio.create_task_group() as group:

            def handle(delivery: Delivery) -> bool:
                group.cancel_scope.cancel()
                return True

            group.start_soon(h.client.consume, handle, [q])
        (status,) = await h.call("status", q)
        assert (status.total, status.processing) == (1, 0)

    run_scenario("asyncio", server, body)


@pytest.mark.timeout(60)
def test_trio_nursery_start_cancel_keeps_the_ack(server: ThreadedServer) -> None:
    """trio's ``await nursery.start(client.consume, ...)``: started once registered; the
    handler cancels the nursery and returns true; the ack is still sent."""
    q = qname("nursery")

    async def body(h: Harness) -> None:
        await h.call("push", q, b"first")
        await h.call("push", q, b"second")
        seen: list[bytes] = []
        async with trio.open_nursery() as nursery:

            def handle(delivery: Delivery) -> bool:
                seen.append(delivery.contents)
                nursery.cancel_scope.cancel()
                return True

            await nursery.start(h.client.consume, handle, [q])
        assert seen in ([b"first"], [b"second"])
        (status,) = await h.call("status", q)
        assert (status.total, status.processing) == (1, 0)

    run_scenario("trio", server, body)
