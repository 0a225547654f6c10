"""Scenarios of servers that go away, written once for every client (see `scenarios`).

Failover along several addresses, the error when none answers, consumers that reconnect
after a restart (with the backoff they were given) and that keep retrying, ever slower,
while the server is down, and pooled connections left stale by a restart.  The scenarios
of `RESTARTING` restart their `Harness.server`: each runs on a server of its own.
"""

from __future__ import annotations

import inspect
import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import okq_proto
from okq_proto import Backoff, ConnectError, Event

from .scenarios import Harness, _consume_all, qname
from .scenarios_servers import dead_address

#: How long the consumers of the backoff scenarios face a server that is down.
DOWN_S = 2.5
#: `okq_proto.Backoff`'s defaults: the first ceiling and the cap.
DEFAULT_BASE_S, DEFAULT_CAP_S = 0.05, 5.0


class Reconnects(okq_proto.Hooks):
    """Records each ``reconnect`` hook call: attempt, delay, and when it came."""

    def __init__(self) -> None:
        self.attempts: list[int] = []
        self.delays: list[float] = []
        self.times: list[float] = []

    def reconnect(self, address: tuple[str, int], attempt: int, delay_s: float) -> None:
        self.attempts.append(attempt)
        self.delays.append(delay_s)
        self.times.append(time.monotonic())

    def check_paused(self) -> None:
        """Each attempt came at least its announced delay after the one before."""
        for i, gap in enumerate(b - a for a, b in zip(self.times, self.times[1:], strict=False)):
            assert gap >= self.delays[i] - 0.02, f"attempt {i + 2}: {gap:.3f} s after the last"


class _Ceiling(random.Random):
    """A `random.Random` whose ``uniform(a, b)`` is always `b`: a backoff without jitter."""

    def uniform(self, a: float, b: float) -> float:
        return b


class RecordingBackoff(Backoff):
    """A `Backoff` that logs its delays and resets in `log`."""

    def __init__(self, log: list[tuple[str, float]], **kw: Any) -> None:
        super().__init__(**kw)
        self.log = log

    def next_delay(self) -> float:
        delay = super().next_delay()
        self.log.append(("delay", delay))
        return delay

    def reset(self) -> None:
        super().reset()
        self.log.append(("reset", 0.0))


def _has_backoff_option(h: Harness) -> None:
    parameters = inspect.signature(h.client.consume).parameters
    assert "backoff" in parameters, f"{h.name}: consume() has no backoff= option"


async def _consume_while_down(h: Harness, seconds: float, **consume: Any) -> float:
    """Consume from an empty queue for `seconds`, then stop; returns how long the stop
    took to end the call."""
    stop = h.new_stop()
    stopped: list[float] = []

    async def consumer() -> None:
        await h.consume(lambda d: True, [qname("down")], stop=stop, **consume)

    async with h.background(consumer):
        await h.sleep(seconds)
        stopped.append(time.monotonic())
        stop.set()
    return time.monotonic() - stopped[0]


# -- several addresses ---------------------------------------------------------------------------


async def failover(h: Harness) -> None:
    """The first address is dead: requests and consumers go to the second (the address
    list as text and as a list)."""
    assert h.failover, "only for clients with several addresses (not a redis-py pool's one)"
    assert h.server is not None
    dead = dead_address()
    host, port = dead.rsplit(":", 1)
    for address in (f"{dead}, {h.server.address}", [(host, int(port)), h.server.address]):
        q = qname("failover")
        async with h.reopen(address) as client:
            await client.call("ping")
            event_id = await client.call("push", q, b"x")
            assert await client.call("peek_next", q) == Event(q, event_id, b"x")
            (got,) = await _consume_all(client, [q], 1)
            assert got.id == event_id
        assert (await h.call("status", q))[0].total == 0


async def nobody_answers(h: Harness) -> None:
    """No address answers: `ConnectError` (the same from every door), naming each
    address as ``host:port``."""
    wrong = []
    several = [dead_address(), dead_address()] if h.failover else []
    for addresses in ([dead_address()], several):
        if not addresses:
            continue
        async with h.reopen(", ".join(addresses)) as client:
            try:
                await client.call("ping")
            except ConnectError as exc:
                if type(exc) is not ConnectError:
                    wrong.append(f"{type(exc).__module__}.{type(exc).__name__}: {exc}")
                wrong += [f"{a} not in {str(exc)!r}" for a in addresses if a not in str(exc)]
            except Exception as exc:  # judged here
                wrong.append(f"{type(exc).__module__}.{type(exc).__name__}: {exc}")
            else:
                wrong.append(f"{addresses}: the ping went through")
    assert wrong == [], f"{h.name}: " + "; ".join(wrong)


# -- consumers facing a server that is down ----------------------------------------------------


async def backoff_grows_while_down(h: Harness) -> None:
    """A consumer facing a port that refuses keeps trying, each pause drawn below a ceiling
    that doubles (the default backoff: attempts 1, 2, 3... never back to 1), and a stop
    still ends it at once."""
    hooks = Reconnects()
    async with h.reopen(dead_address(), hooks=hooks) as client:
        stop_s = await _consume_while_down(client, DOWN_S)
    n = len(hooks.attempts)
    assert 3 <= n <= 40, hooks.attempts  # a tight loop would make thousands
    assert hooks.attempts == list(range(1, n + 1))
    for attempt, delay in zip(hooks.attempts, hooks.delays, strict=True):
        assert 0 <= delay <= min(DEFAULT_CAP_S, DEFAULT_BASE_S * 2 ** (attempt - 1)) + 1e-9
    hooks.check_paused()
    assert stop_s < 1.5, stop_s


async def given_backoff_paces_reconnects(h: Harness) -> None:
    """``consume(backoff=...)``: the pauses are the given backoff's (here without jitter:
    0.1, 0.2, then 0.4 s each)."""
    _has_backoff_option(h)
    hooks, made = Reconnects(), []

    def backoff() -> Backoff:
        made.append(True)
        return Backoff(base_s=0.1, cap_s=0.4, rng=_Ceiling())

    async with h.reopen(dead_address(), hooks=hooks) as client:
        await _consume_while_down(client, 2.0, backoff=backoff)
    n = len(hooks.attempts)
    assert made
    assert 3 <= n <= 12, hooks.delays  # about 7 in 2 s (more if the stop comes late)
    assert hooks.delays == [min(0.4, 0.1 * 2**i) for i in range(n)]
    hooks.check_paused()


async def reconnect_with_given_backoff(h: Harness) -> None:
    """The server goes away (down half a second) under a registered consumer: it
    reconnects, pacing its attempts with the backoff it was given, re-registers (the
    backoff is reset) and consumes again."""
    _has_backoff_option(h)
    assert h.server is not None
    server = h.server
    q, hooks = qname("reconnect"), Reconnects()
    log: list[tuple[str, float]] = []
    seen: list[bytes] = []

    async def registered() -> bool:
        return bool((await h.call("status", q))[0].consumers == 1)

    async with h.reopen(hooks=hooks) as client:
        stop = client.new_stop()

        def handler(delivery: Any) -> bool:
            seen.append(delivery.contents)
            return True

        def backoff() -> Backoff:
            return RecordingBackoff(log, base_s=0.05, cap_s=0.2)

        async def consumer() -> None:
            await client.consume(handler, [q], stop=stop, backoff=backoff)

        async with client.background(consumer):
            await h.wait_until(registered)
            await h.call("push", q, b"before")
            await h.wait_until(lambda: _is(seen, [b"before"]))
            await h.run_sync(server.stop)
            await h.sleep(0.5)
            await h.run_sync(server.start)
            await h.call("push", q, b"after")
            await h.wait_until(lambda: _is(seen, [b"before", b"after"]), timeout=15)
            await h.wait_until(registered)
            stop.set()
    delays = [value for kind, value in log if kind == "delay"]
    assert delays, "the given backoff was never asked for a delay"
    assert hooks.delays == delays  # every pause was the given backoff's
    last_delay = max(i for i, (kind, _) in enumerate(log) if kind == "delay")
    assert ("reset", 0.0) in log[last_delay:], log  # reset once registered again


async def _is(seen: list[bytes], expected: list[bytes]) -> bool:
    return seen == expected


async def stale_pool_after_restart(h: Harness) -> None:
    """A restart leaves the pooled connections stale: the next requests (a peek, a push)
    are sent again on new connections, and succeed."""
    assert h.server is not None
    q = qname("stale")
    async with h.reopen() as client:
        await client.call("push", q, b"x")
        await client.run_sync(h.server.restart)
        assert await client.call("peek_next", q) is not None
        event_id = await client.call("push", q, b"y")
        assert await client.call("peek_last", q) == Event(q, event_id, b"y")


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


#: Scenarios over the shared server.  `failover` only runs where ``Harness.failover``.
LINK_SCENARIOS: list[Callable[[Harness], Awaitable[None]]] = [
    failover,
    nobody_answers,
    backoff_grows_while_down,
    given_backoff_paces_reconnects,
]
#: Scenarios that restart their server: each gets one of its own.
RESTARTING: list[Callable[[Harness], Awaitable[None]]] = [
    server_restart,
    reconnect_with_given_backoff,
    stale_pool_after_restart,
]
