"""``okq demo``: watch events flow through okq, with every client front door at once.

Owns: the demo's options and story.  An embedded server starts in this process (unless
``--server``/``OKQ_SERVER`` names one); a sync, an asyncio and (when installed) a trio consumer
share one queue, each stopping once it has handled its share of the events (so that all three
are seen at work: otherwise the first one to pop wins most races); a sync producer pushes N
events (one of them high priority); one event fails on its first delivery on purpose, so its
claim expires and the server hands it out again (at-least-once).  A progress bar runs on
stderr; the summary goes to stdout.  Exit status 0 when every event was handled and
acknowledged.
Must not know: the wire protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from okq_proto import Delivery, PushFlag

from ._common import (
    EXIT_ERROR,
    EXIT_OK,
    CliError,
    Progress,
    embedded_or_given,
    one_line,
    positive_int,
    positive_seconds,
)

__all__ = ["add_arguments", "run"]

_EXPIRE_S: Final = 1  # short claims, so the failed event comes back quickly
_SWEEP_S: Final = 0.25  # the embedded server's restore sweep (okq's own: 10 s)
_FLAKY: Final = 5  # the event that fails once, on purpose
# A redelivered event wakes no consumer blocked in QNOTIFY (okq publishes only on push): it is
# seen at the next QNOTIFY.  A short wait makes that within a second instead of okq-go's 30.
_NOTIFY_S: Final = 1
_PACE_S: Final = 0.04  # between two pushes


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``demo`` options to its subparser."""
    p.add_argument("-n", "--events", type=positive_int, default=30, help="events to push (30)")
    p.add_argument("--work", type=float, default=0.02, help="seconds of 'work' per event (0.02)")
    p.add_argument("--timeout", type=positive_seconds, default=60.0, help="give up after N s (60)")
    p.add_argument("--no-trio", action="store_true", help="leave the trio consumer out")


@dataclass
class _Tally:
    """What the consumers did, shared between their threads; `shares` holds how many events
    each consumer handles before it stops (they add up to `total` or more)."""

    total: int
    shares: dict[str, int]
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: set[str] = field(default_factory=set)
    by_client: Counter[str] = field(default_factory=Counter)
    attempts: Counter[str] = field(default_factory=Counter)
    failed_once: set[str] = field(default_factory=set)
    redelivered: set[str] = field(default_factory=set)
    all_done: threading.Event = field(default_factory=threading.Event)

    def handle(self, client: str, delivery: Delivery) -> bool:
        """Record one delivery; False (no ack) for the flaky event's first try."""
        with self.lock:
            self.attempts[delivery.id] += 1
            if self.attempts[delivery.id] > 1:
                self.redelivered.add(delivery.id)
            if delivery.contents.startswith(b"flaky") and delivery.id not in self.failed_once:
                self.failed_once.add(delivery.id)
                return False
            self.by_client[client] += 1
            self.done.add(delivery.id)
            if len(self.done) >= self.total:
                self.all_done.set()
            return True

    def share_done(self, client: str) -> bool:
        """True once `client` has handled its share: it should stop taking events."""
        with self.lock:
            return self.by_client[client] >= self.shares[client]

    def note(self) -> str:
        with self.lock:
            return "  ".join(f"{name} {count}" for name, count in sorted(self.by_client.items()))


#: Runs one consumer until its `stop` is set, by the demo or by itself once its share is done.
Runner = Callable[[str, str, _Tally, float, threading.Event], None]


def _sync_consumer(
    address: str, queue: str, tally: _Tally, work_s: float, stop: threading.Event
) -> None:
    from okq_transports.sync import Client

    def handler(delivery: Delivery) -> bool:
        time.sleep(work_s)
        ok = tally.handle("sync", delivery)
        if tally.share_done("sync"):
            stop.set()  # seen before the next pop: this consumer takes no more events
        return ok

    with Client(address=address, notify_timeout_s=_NOTIFY_S) as client:
        client.consume(handler, [queue], expire_seconds=_EXPIRE_S, stop=stop)


def _asyncio_consumer(
    address: str, queue: str, tally: _Tally, work_s: float, stop: threading.Event
) -> None:
    from okq_transports.asyncio import Client

    async def main() -> None:
        async_stop = asyncio.Event()

        async def handler(delivery: Delivery) -> bool:
            await asyncio.sleep(work_s)
            ok = tally.handle("asyncio", delivery)
            if tally.share_done("asyncio"):
                async_stop.set()
            return ok

        async def relay() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.02)
            async_stop.set()

        relay_task = asyncio.create_task(relay())
        try:
            async with Client(address=address, notify_timeout_s=_NOTIFY_S) as client:
                await client.consume(handler, [queue], expire_seconds=_EXPIRE_S, stop=async_stop)
        finally:
            relay_task.cancel()

    asyncio.run(main())


def _trio_consumer(
    address: str, queue: str, tally: _Tally, work_s: float, stop: threading.Event
) -> None:
    import trio

    from okq_transports.trio import open_client

    async def main() -> None:
        trio_stop = trio.Event()

        async def handler(delivery: Delivery) -> bool:
            await trio.sleep(work_s)
            ok = tally.handle("trio", delivery)
            if tally.share_done("trio"):
                trio_stop.set()
            return ok

        async def relay() -> None:
            while not stop.is_set():
                await trio.sleep(0.02)
            trio_stop.set()

        async with (
            open_client(address=address, notify_timeout_s=_NOTIFY_S) as client,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(relay)
            await client.consume(handler, [queue], expire_seconds=_EXPIRE_S, stop=trio_stop)

    trio.run(main)


def _runners(no_trio: bool) -> dict[str, Runner]:
    runners: dict[str, Runner] = {"sync": _sync_consumer, "asyncio": _asyncio_consumer}
    if not no_trio:
        try:
            import trio  # noqa: F401  # only: is it installed?
        except ImportError:
            pass
        else:
            runners["trio"] = _trio_consumer
    return runners


def _wait_for_consumers(client: object, queue: str, count: int, stop_at: float) -> None:
    from okq_transports.sync import Client

    assert isinstance(client, Client)
    while time.monotonic() < stop_at:
        (entry,) = client.status(queue)
        if entry.consumers >= count:
            return
        time.sleep(0.02)
    raise CliError(f"demo: the consumers did not register on {queue} in time")


def _final_status(client: object, queue: str, stop_at: float) -> object:
    """The queue's status once the stopped consumers are gone, or after a bounded wait.

    A consumer that stopped while waiting in ``QNOTIFY`` stays registered (okq's rule) until
    that wait ends, at most ``_NOTIFY_S`` later.
    """
    from okq_transports.sync import Client

    assert isinstance(client, Client)
    stop_at = min(stop_at, time.monotonic() + _NOTIFY_S + 0.5)
    while True:
        (entry,) = client.status(queue)
        if entry.consumers == 0 or time.monotonic() >= stop_at:
            return entry
        time.sleep(0.02)


def _shares(total: int, names: list[str]) -> dict[str, int]:
    """Split `total` events between the consumers as evenly as can be (each at least 1)."""
    base, extra = divmod(total, len(names))
    return {name: max(1, base + (i < extra)) for i, name in enumerate(names)}


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit status."""
    from okq_transports.sync import Client

    runners = _runners(args.no_trio)
    total: int = args.events
    tally = _Tally(total, _shares(total, list(runners)))
    stops = {name: threading.Event() for name in runners}
    errors: list[str] = []
    started = time.monotonic()
    deadline = started + args.timeout
    with embedded_or_given(getattr(args, "server", None), sweep_interval_s=_SWEEP_S) as (
        address,
        embedded,
    ):
        queue = "demo" if embedded else f"okq-demo-{uuid.uuid4().hex[:6]}"
        where = "embedded server, in this process" if embedded else "server from --server"
        print(f"okq demo: {address} ({where}); queue {queue!r}")
        print(f"  consumers: {', '.join(runners)} clients; producer: sync client")

        def guarded(name: str, runner: Runner) -> Callable[[], None]:
            def target() -> None:
                try:
                    runner(address, queue, tally, args.work, stops[name])
                except BaseException as exc:  # reported below, never a traceback
                    errors.append(f"{name} consumer: {one_line(exc) or type(exc).__name__}")

            return target

        threads = [
            threading.Thread(target=guarded(name, runner), name=f"okq-demo-{name}", daemon=True)
            for name, runner in runners.items()
        ]
        with Client(address=address) as client:
            for thread in threads:
                thread.start()
            try:
                _wait_for_consumers(client, queue, len(threads), deadline)
                progress = Progress("demo", total)
                pushed, urgent = _produce(
                    client, queue, total, lambda: progress.update(len(tally.done), tally.note())
                )
                while not tally.all_done.wait(0.05) and time.monotonic() < deadline:
                    if errors:
                        break
                    progress.update(len(tally.done), tally.note())
                progress.update(len(tally.done), tally.note(), force=True)
                progress.close()
            finally:
                for stop in stops.values():
                    stop.set()
                for thread in threads:
                    thread.join(10)
            status = _final_status(client, queue, deadline)
            if not embedded:
                with contextlib.suppress(Exception):
                    client.flush(queue)
    elapsed = time.monotonic() - started
    return _summary(tally, runners, pushed, urgent, status, elapsed, errors)


def _produce(
    client: object, queue: str, total: int, pushed_one: Callable[[], None]
) -> tuple[int, int]:
    """Push `total` events at a gentle pace (so you can watch): one high priority, one that
    fails once.  Calls `pushed_one` after each push."""
    from okq_transports.sync import Client

    assert isinstance(client, Client)
    urgent = 0
    for n in range(1, total + 1):
        if n == _FLAKY:
            client.push(queue, b"flaky %d: fails on its first try" % n)
        elif n == total // 2:
            client.push(queue, b"urgent %d: jumps the queue" % n, PushFlag.HIGH_PRIORITY)
            urgent += 1
        else:
            client.push(queue, b"job %d: resize photo %d.jpg" % (n, n))
        pushed_one()
        time.sleep(_PACE_S)
    return total, urgent


def _summary(
    tally: _Tally,
    runners: dict[str, Runner],
    pushed: int,
    urgent: int,
    status: object,
    elapsed: float,
    errors: list[str],
) -> int:
    from okq_proto import QueueStatus

    assert isinstance(status, QueueStatus)
    out = sys.stdout
    print(f"\nSummary ({elapsed:.1f} s)", file=out)
    print(f"  producer  sync     pushed  {pushed:4d} events ({urgent} high priority)", file=out)
    for name in runners:
        print(
            f"  consumer  {name:<8} handled {tally.by_client[name]:4d} events "
            f"(its share: {tally.shares[name]})",
            file=out,
        )
    print(
        f"  at-least-once: {len(tally.failed_once)} event failed on purpose, its claim "
        f"({_EXPIRE_S} s) expired, and it was delivered again "
        f"({len(tally.redelivered)} redelivered)",
        file=out,
    )
    lingering = (
        " (stopped while waiting in QNOTIFY: registered until that wait ends)"
        if status.consumers
        else ""
    )
    print(
        f"  queue {status.name!r} at the end: total {status.total}, processing "
        f"{status.processing}, consumers {status.consumers}{lingering}",
        file=out,
    )
    for error in errors:
        print(f"okq: error: {error}", file=sys.stderr)
    if len(tally.done) < tally.total or errors:
        print(
            f"okq: error: demo incomplete: {len(tally.done)} of {tally.total} events handled",
            file=sys.stderr,
        )
        return EXIT_ERROR
    print(f"All {tally.total} events handled and acknowledged. Next: okq --help, docs/.")
    return EXIT_OK
