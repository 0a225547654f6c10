"""Delivery ledgers under injected faults, written once for every front door.

One run: push N events with unique contents straight to an embedded server, consume them
through a `FaultProxy` (two consumer connections, at-least-once acks), then count: every
event handled at least once (0 lost), nothing handled that was not pushed (0 unexpected),
and every second handling of an event explained (the duplicate kinds below).  The queue must
be left empty (total 0, processing 0, no consumer).

Duplicate kinds (each extra handler call, judged by what became of the call before it):

- ``ack-cut``: the handler returned true, its ``QACK`` never got a reply, and the consumer
  reported the event "claimed and not acked" when its connection failed.  The ``QACK`` never
  reached the server (had it arrived, the event would be gone), so the claim expired and the
  event came back.  At most one per consumer connection cut by a fault (a consumer holds one
  delivery at a time; its ack leaves with the next pop).
- ``expired``: the claim ran out first: the ack was late (the handler finished after the
  claim's deadline, or its ``QACK`` arrived after the sweep had put the event back and
  another consumer had taken it), or the handler was cancelled at the deadline.
- ``unexplained``: anything else (an event acked in time and still handed out again, or cut
  without being reported): a bug, and the tests fail on it.

A claim whose ``QRPOP`` reply was cut (``pops-cut``) is not a duplicate: no handler saw it;
it comes back after its expiry and is handled once.

Run as a script for the documented runs::

    python -m tests.transports.faultrun --events 10000 --door all --fault reset
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import trio

from okq_proto import Delivery, Hooks, OkqError, QueueStatus
from okq_transports.server import ThreadedServer
from okq_transports.sync import Client as SyncClient

from .faultproxy import FaultProxy
from .scenarios import Harness
from .test_scenarios import harness_for, run_asyncio

__all__ = [
    "DOORS",
    "FAULTS",
    "FaultPlan",
    "Ledger",
    "Result",
    "events_for",
    "run_ledger",
]

#: The front doors; ``asyncio-uvloop`` is the asyncio client on uvloop's loop.
DOORS = ["sync", "asyncio", "trio", "redis-sync", "redis-asyncio", "asyncio-uvloop"]
QUEUE = "faults"
#: Claim length of the consumers: a lost claim comes back 2 to 2.2 s later (sweep 0.2 s).
EXPIRE_S = 2
SWEEP_S = 0.2
CONCURRENCY = 2
#: The read timeout of the doors that take one (redis-py's ``socket_timeout``); trio bounds
#: its reads itself (``okq_proto.REPLY_TIMEOUT_S``).
READ_TIMEOUT_S = 2.0
#: The consume call must return this soon after its stop is set.
STOP_BOUND_S = 5.0


@dataclasses.dataclass(frozen=True)
class FaultPlan:
    """One fault kind: the proxy's options, an optional periodic fault (``"restart"`` the
    server, or ``"blackout"`` the path for `every_s`; `at_most` times in a CI run, spread over
    its progress),
    the CI size (``OKQ_FAULT_N`` overrides it) and the run's deadline per thousand events."""

    name: str
    proxy: dict[str, Any]
    n: int
    periodic: str | None = None
    every_s: float = 1.0
    at_most: int = 0
    deadline_per_1000_s: float = 60.0
    #: Duplicates are impossible (no connection is ever cut).
    exact: bool = False

    def periodic_count(self, n: int) -> int:
        """How many periodic faults a run of `n` events gets: `at_most` at the CI size, as
        many more per event in bigger runs, 20 at most."""
        return min(20, self.at_most * max(1, n // self.n)) if self.periodic else 0


FAULTS: dict[str, FaultPlan] = {
    plan.name: plan
    for plan in [
        # ~1 % of the chunks read (either direction) cut at a random byte, then RST both ways.
        FaultPlan("reset", {"reset_probability": 0.01}, n=2000),
        # The same draw resets the server's side only: ours stays open and silent.
        FaultPlan("half-open", {"reset_probability": 0.004, "reset_side": "upstream"}, n=300),
        # The connection goes silent both ways at a random byte (a blackhole mid-connection).
        FaultPlan("stall", {"stall_probability": 0.004}, n=300),
        # The path goes black for 1 s, twice: open connections stall (for good), new ones are
        # accepted and never forwarded.
        FaultPlan("blackhole", {}, n=300, periodic="blackout", every_s=1.0, at_most=2),
        # Every byte on its own write, each chunk 1 ms late.
        FaultPlan("slice", {"slice_bytes": True, "latency_s": 0.001}, n=200, exact=True),
        # 5 ms added to every chunk, both ways.
        FaultPlan("latency", {"latency_s": 0.005}, n=300, exact=True),
        # The server restarts (storage kept) 4 times in the run.
        FaultPlan("restart", {}, n=1000, periodic="restart", at_most=4),
    ]
}


def events_for(plan: FaultPlan) -> int:
    """The run's size: ``OKQ_FAULT_N`` if set, else the plan's CI size."""
    override = os.environ.get("OKQ_FAULT_N")
    return int(override) if override else plan.n


@dataclasses.dataclass
class _Call:
    delivery: Delivery
    at: float
    settled: str | None = None  # "acked" | "late" | "failed"
    settled_at: float = 0.0


class Ledger(Hooks):
    """What the handlers saw and how each delivery ended, per event contents (thread-safe).

    It is the consumers' `Hooks` (acked, late ack, handler failed, reconnect) and, through
    `watching_log`, reads the consumers' "claimed and not acked" reports."""

    def __init__(self, contents: list[bytes]) -> None:
        self.expected = frozenset(contents)
        self._lock = threading.Lock()
        self.calls: dict[bytes, list[_Call]] = {}
        self._by_delivery: dict[int, _Call] = {}
        self.unexpected = 0
        self.reconnects = 0
        self.reported_unacked: collections.Counter[str] = collections.Counter()
        self.pops_cut = 0

    # -- the handler and the hooks ---------------------------------------------------------

    def handle(self, delivery: Delivery) -> bool:
        """The consumers' handler: record the call, ack."""
        call = _Call(delivery, time.monotonic())
        with self._lock:
            if delivery.contents not in self.expected or delivery.queue != QUEUE:
                self.unexpected += 1
            self.calls.setdefault(delivery.contents, []).append(call)
            self._by_delivery[id(delivery)] = call  # the delivery is kept: its id stays unique
        return True

    def _settle(self, delivery: Delivery, how: str) -> None:
        with self._lock:
            call = self._by_delivery.get(id(delivery))
            if call is not None and call.settled is None:
                call.settled, call.settled_at = how, time.monotonic()

    def acked(self, delivery: Delivery) -> None:
        self._settle(delivery, "acked")

    def late_ack(self, delivery: Delivery) -> None:
        self._settle(delivery, "late")

    def handler_failed(self, delivery: Delivery, error: BaseException | None) -> None:
        self._settle(delivery, "failed")

    def reconnect(self, address: tuple[str, int], attempt: int, delay_s: float) -> None:
        with self._lock:
            self.reconnects += 1

    @contextlib.contextmanager
    def watching_log(self) -> Iterator[None]:
        """Count the consumers' reports of what a failed connection held (``okq`` logger)."""
        ledger = self

        class Reports(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                msg = record.getMessage()
                if "claimed and not acked" in msg:
                    event_id = getattr(record, "okq_event_id", None)
                    with ledger._lock:
                        ledger.reported_unacked[str(event_id)] += 1
                elif "was in flight when the connection failed" in msg:
                    with ledger._lock:
                        ledger.pops_cut += 1

        logger = logging.getLogger("okq")
        handler = Reports(logging.INFO)
        old_level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)

    # -- the figures -----------------------------------------------------------------------

    @property
    def handled(self) -> int:
        """Distinct pushed events handled."""
        with self._lock:
            return len(self.expected & self.calls.keys())

    @property
    def lost(self) -> int:
        """Pushed events never handled."""
        return len(self.expected) - self.handled

    def duplicates(self) -> collections.Counter[str]:
        """Handler calls beyond the first per event, by kind (see the module docstring)."""
        kinds: collections.Counter[str] = collections.Counter()
        with self._lock:
            reported = collections.Counter(self.reported_unacked)
            for calls in self.calls.values():
                for prev, call in itertools.pairwise(calls):
                    kinds[self._kind(prev, call, reported)] += 1
        return kinds

    @staticmethod
    def _kind(prev: _Call, call: _Call, reported: collections.Counter[str]) -> str:
        if prev.settled in ("late", "failed"):
            return "expired"
        if prev.settled == "acked":
            # Acked in time by the client's clock, yet handed out again before the ack's
            # reply came: the sweep had put it back meanwhile (the ack then removed it).
            return "expired" if call.at < prev.settled_at else "unexplained"
        if reported[prev.delivery.id] > 0:
            reported[prev.delivery.id] -= 1
            return "ack-cut"
        return "unexplained"


@dataclasses.dataclass
class Result:
    """The figures of one run."""

    door: str
    fault: str
    events: int
    lost: int
    unexpected: int
    duplicates: collections.Counter[str]
    faults: collections.Counter[str]
    #: Consumer connections a fault could have cut while they held a claim.
    cuts: int
    reconnects: int
    pops_cut: int
    seconds: float
    stop_s: float
    status: QueueStatus | None
    threads_alive: int

    @property
    def duplicate_total(self) -> int:
        return sum(self.duplicates.values())


def _status(address: str) -> QueueStatus | None:
    """The queue's counters, or None while the server is not answering (a restart)."""
    with contextlib.suppress(OkqError), SyncClient(address, read_timeout_s=2.0) as client:
        return client.status(QUEUE)[0]
    return None


def _final_status(address: str) -> QueueStatus | None:
    """The counters once the server has seen every consumer connection go (bounded)."""
    status = _status(address)
    for _ in range(100):
        if status is not None and status.consumers == 0:
            break
        time.sleep(0.05)
        status = _status(address)
    return status


def _periodic(
    plan: FaultPlan,
    server: ThreadedServer,
    proxy: FaultProxy,
    ledger: Ledger,
    done: threading.Event,
) -> Callable[[], collections.Counter[str]]:
    """Start `plan`'s periodic fault in a thread, `FaultPlan.periodic_count` times spread
    over the run's progress (after 1/(k+1), 2/(k+1)... of the events were handled, so the
    faults land mid-run however fast the door is).  Returns a function that ends and joins
    the thread and says what it injected."""
    injected: collections.Counter[str] = collections.Counter()
    if plan.periodic is None:
        return lambda: injected
    n = len(ledger.expected)
    count = plan.periodic_count(n)
    marks = [n * (i + 1) // (count + 1) for i in range(count)]

    def run() -> None:
        for mark in marks:
            while ledger.handled < mark:
                if done.wait(0.005):
                    return
            if plan.periodic == "restart":
                server.restart()
                injected["restart"] += 1
            else:
                proxy.set_blackout(True)
                done.wait(plan.every_s)
                proxy.set_blackout(False)
                injected["blackout"] += 1

    thread = threading.Thread(target=run, name="faultrun-periodic", daemon=True)
    thread.start()

    def finish() -> collections.Counter[str]:
        done.set()
        thread.join(30.0)
        assert not thread.is_alive(), "the periodic fault did not end"
        return injected

    return finish


async def _consume(
    h: Harness, ledger: Ledger, done: Callable[[], bool], deadline_s: float
) -> tuple[float, float]:
    """Consume through `h` until `done` (polled in a thread) or the deadline; returns (run
    time, time from stop to the consume call's return)."""
    stop = h.new_stop()

    async def consumer() -> None:
        await h.consume(
            ledger.handle, [QUEUE], expire_seconds=EXPIRE_S, concurrency=CONCURRENCY, stop=stop
        )

    start = time.monotonic()
    async with h.background(consumer):
        while time.monotonic() < start + deadline_s and not await h.run_sync(done):
            await h.sleep(0.1)
        stopped = time.monotonic()
        stop.set()
    return stopped - start, time.monotonic() - stopped


def _run_door(
    door: str,
    address: str,
    ledger: Ledger,
    done: Callable[[], bool],
    deadline_s: float,
    read_timeout_s: float | None,
) -> tuple[float, float]:
    """Open a client of `door` to `address` and consume (`_consume`) on its own loop."""
    times: list[tuple[float, float]] = []
    options = {"read_timeout_s": read_timeout_s, "hooks": ledger}

    async def main() -> None:
        async with harness_for(door, None, address, **options) as h:
            times.append(await _consume(h, ledger, done, deadline_s))

    if door == "trio":

        async def trio_main() -> None:
            with trio.fail_after(deadline_s + 30):
                await main()

        trio.run(trio_main)
    else:

        async def asyncio_main() -> None:
            await asyncio.wait_for(main(), deadline_s + 30)

        run_asyncio(door, asyncio_main)
    return times[0]


def run_ledger(
    door: str, fault: str, n: int, *, seed: int = 7, read_timeout_s: float | None = READ_TIMEOUT_S
) -> Result:
    """One ledger run of `n` events through `door` under `fault` (a `FAULTS` name).

    `read_timeout_s` goes to the door's client (redis-py: ``socket_timeout``; trio: none)."""
    plan = FAULTS[fault]
    contents = [b"%s-%d" % (fault.encode(), i) for i in range(n)]
    ledger = Ledger(contents)
    deadline_s = max(30.0, plan.deadline_per_1000_s * n / 1000)
    server = ThreadedServer("127.0.0.1", 0, sweep_interval_s=SWEEP_S, seed=0).start()
    try:
        with SyncClient(server.address) as direct:
            for i in range(0, n, 1000):
                outcomes = direct.push_many(QUEUE, contents[i : i + 1000])
                assert all(o.ok for o in outcomes)

        def done() -> bool:
            status = _status(server.address)
            return (
                status is not None
                and (status.total, status.processing) == (0, 0)
                and ledger.lost == 0
            )

        with (
            ledger.watching_log(),
            FaultProxy((server.host, server.port), seed=seed, **plan.proxy) as proxy,
        ):
            finish = _periodic(plan, server, proxy, ledger, threading.Event())
            try:
                run_s, stop_s = _run_door(
                    door, proxy.address_text, ledger, done, deadline_s, read_timeout_s
                )
            finally:
                periodic = finish()
        faults = proxy.faults + periodic
        if plan.proxy.get("slice_bytes"):
            faults["sliced-chunks"] = proxy.chunks
        elif plan.proxy.get("latency_s"):
            faults["delayed-chunks"] = proxy.chunks
        status = _final_status(server.address)
    finally:
        server.stop()
    cuts = proxy.resets + proxy.stalls + periodic["restart"] * CONCURRENCY
    return Result(
        door=door,
        fault=fault,
        events=n,
        lost=ledger.lost,
        unexpected=ledger.unexpected,
        duplicates=ledger.duplicates(),
        faults=faults,
        cuts=cuts,
        reconnects=ledger.reconnects,
        pops_cut=ledger.pops_cut,
        seconds=run_s,
        stop_s=stop_s,
        status=status,
        threads_alive=proxy.threads_alive,
    )


def check(result: Result) -> None:
    """The ledger's rules (see the module docstring); raises AssertionError."""
    plan = FAULTS[result.fault]
    status = result.status
    assert result.lost == 0, f"{result.lost} events lost"
    assert result.unexpected == 0, f"{result.unexpected} unexpected deliveries"
    assert result.duplicates["unexplained"] == 0, f"unexplained duplicates: {result}"
    assert result.duplicates["ack-cut"] <= result.cuts, f"more acks cut than faults: {result}"
    if plan.exact:
        assert result.duplicate_total == 0, f"duplicates without a fault: {result}"
    assert status is not None
    assert (status.total, status.processing, status.consumers) == (0, 0, 0), status
    assert result.threads_alive == 0
    assert result.stop_s < STOP_BOUND_S, f"stop took {result.stop_s:.2f} s"


HEADER = (
    "door",
    "fault",
    "events",
    "lost",
    "unexpected",
    "dup ack-cut",
    "dup expired",
    "dup unexplained",
    "faults injected",
    "reconnects",
    "seconds",
)


def row(result: Result) -> tuple[str, ...]:
    """`result` as a table row (`HEADER`)."""
    injected = " ".join(f"{k}={v}" for k, v in sorted(result.faults.items())) or "-"
    d = result.duplicates
    return (
        result.door,
        result.fault,
        str(result.events),
        str(result.lost),
        str(result.unexpected),
        str(d["ack-cut"]),
        str(d["expired"]),
        str(d["unexplained"]),
        injected,
        str(result.reconnects),
        f"{result.seconds:.1f}",
    )


def table(rows: list[tuple[str, ...]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.transports.faultrun", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--events", type=int, default=None, help="events per run (default: CI N)")
    parser.add_argument("--door", default="all", help=f"one of {DOORS}, or all")
    parser.add_argument("--fault", default="reset", help=f"one of {list(FAULTS)}, or all")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    doors = DOORS if args.door == "all" else args.door.split(",")
    faults = list(FAULTS) if args.fault == "all" else args.fault.split(",")
    rows, failed = [], 0
    print(table([]), flush=True)
    for fault in faults:
        for door in doors:
            n = args.events or events_for(FAULTS[fault])
            result = run_ledger(door, fault, n, seed=args.seed)
            rows.append(row(result))
            print("| " + " | ".join(rows[-1]) + " |", flush=True)
            try:
                check(result)
            except AssertionError as exc:
                failed += 1
                print(f"FAILED {door} {fault}: {exc}", file=sys.stderr, flush=True)
    print()
    print(table(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
