"""What only the sync client has, over real loopback TCP against the embedded okq server:
handlers in threads (several at once, overrunning their claim), a thread-safe bounded pool,
its hooks, signal handling, a producer retrying across restarts.

Every behaviour the doors share (requests, flags, consumers, retries, failover, a closed
client, bad arguments) is a scenario in `scenarios*.py`, run on every door by
test_scenarios.py.  Every wait is bounded; consumers run in threads joined with a timeout.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from okq_proto import (
    Delivery,
    DuplicateEventError,
    Event,
    Hooks,
    TransportError,
)
from okq_transports.server import ThreadedServer
from okq_transports.sync import Client, expired, stop_on_signals

pytestmark = pytest.mark.timeout(60)

WAIT_S = 10.0


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    """An embedded server with a fast restore sweep (redelivery within ~expire + 0.2 s)."""
    srv = ThreadedServer("127.0.0.1", 0, sweep_interval_s=0.2, seed=1)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: ThreadedServer) -> Iterator[Client]:
    with Client(server.address, read_timeout_s=5.0, notify_timeout_s=1) as c:
        yield c


def wait_until(predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def counts(client: Client, *queues: str) -> list[tuple[int, int]]:
    """(total, processing) per queue.  Consumer counts are left out: a consumer connection
    closed during QNOTIFY stays registered until that QNOTIFY times out (okq section 8)."""
    return [(s.total, s.processing) for s in client.status(*queues)]


class Recorder(Hooks):
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.late: list[Delivery] = []
        self.failed: list[BaseException | None] = []

    def pushed(self, queue: str, event_id: str, *, retried: bool = False) -> None:
        self.calls["pushed"] += 1
        self.calls["retried"] += retried

    def delivered(self, delivery: Delivery) -> None:
        self.calls["delivered"] += 1

    def acked(self, delivery: Delivery) -> None:
        self.calls["acked"] += 1

    def late_ack(self, delivery: Delivery) -> None:
        self.late.append(delivery)

    def handler_failed(self, delivery: Delivery, error: BaseException | None) -> None:
        self.failed.append(error)

    def reconnect(self, address: tuple[str, int], attempt: int, delay_s: float) -> None:
        self.calls["reconnect"] += 1

    def error(self, error: BaseException) -> None:
        self.calls["error"] += 1


class Consuming:
    """``client.consume(...)`` in a thread; `finish` stops it and joins."""

    def __init__(self, client: Client, handler: Callable[[Delivery], bool], **kw: object) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None

        def run() -> None:
            try:
                client.consume(handler, stop=self.stop, **kw)  # type: ignore[arg-type]
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "consume did not stop"
        if self.error is not None:
            raise self.error


# -- consumers ------------------------------------------------------------------------------------


def test_several_consumers_handle_each_event_once(client: Client) -> None:
    seen: Counter[str] = Counter()
    threads: set[str] = set()
    lock = threading.Lock()

    def handler(delivery: Delivery) -> bool:
        with lock:
            seen[delivery.id] += 1
            threads.add(threading.current_thread().name)
        time.sleep(0.001)
        return True

    run = Consuming(client, handler, queues=["q", "r"], concurrency=4)
    ids = [o.id for o in client.push_many("q", [b"x"] * 300)]
    ids += [o.id for o in client.push_many("r", [b"y"] * 100)]
    wait_until(lambda: sum(seen.values()) >= 400)
    run.finish()
    assert set(seen) == set(ids)
    assert set(seen.values()) == {1}
    assert len(threads) > 1
    assert counts(client, "q", "r") == [(0, 0), (0, 0)]


def test_overrun_handler_is_redelivered_and_its_late_ack_reported(server: ThreadedServer) -> None:
    hooks = Recorder()
    firsts: list[str] = []
    done = threading.Event()
    lock = threading.Lock()

    def handler(delivery: Delivery) -> bool:
        with lock:
            first = not firsts
            firsts.append(threading.current_thread().name)
        if first:  # overrun: another consumer gets it meanwhile
            assert done.wait(WAIT_S)
            # Return only once the redelivery's ack is settled: finishing after the claim
            # expired, this ack is late whatever QACK replies (here 0: the event is gone).
            wait_until(lambda: hooks.calls["acked"] >= 1)
            assert expired(delivery)
            return True
        done.set()
        return True

    with Client(server.address, notify_timeout_s=1, hooks=hooks) as client:
        client.push("q", b"slow")
        run = Consuming(client, handler, queues=["q"], expire_seconds=1, concurrency=2)
        wait_until(lambda: bool(hooks.late))
        run.finish()
        assert len(firsts) == 2
        assert firsts[0] != firsts[1]
        assert hooks.calls["acked"] == 1
        assert counts(client, "q") == [(0, 0)]


def test_graceful_stop_finishes_in_flight_handlers_and_acks(client: Client) -> None:
    started = threading.Barrier(3)
    handled: list[str] = []
    lock = threading.Lock()

    def handler(delivery: Delivery) -> bool:
        if len(handled) < 2:
            started.wait(WAIT_S)
        time.sleep(0.2)
        with lock:
            handled.append(delivery.id)
        return True

    client.push_many("q", [b"x"] * 20)
    run = Consuming(client, handler, queues=["q"], concurrency=2)
    started.wait(WAIT_S)  # both consumers are inside a handler
    run.finish()
    status = client.status("q")[0]
    assert status.processing == 0  # every claimed event was acked before consume returned
    assert status.total == 20 - len(handled)
    assert len(handled) >= 2


# -- resilience -----------------------------------------------------------------------------------


def test_server_restart_under_a_consumer_and_a_producer(server: ThreadedServer) -> None:
    hooks = Recorder()
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    def handler(delivery: Delivery) -> bool:
        with lock:
            seen[delivery.id] += 1
        return True

    pushed: list[str] = []
    producing = threading.Event()

    def produce(client: Client) -> None:
        for i in range(300):
            event = Event("q", f"e{i}", b"%d" % i)
            while True:  # the producer's own retry loop, across the outage
                try:
                    client.push_event(event)
                    break
                except DuplicateEventError:
                    break  # an earlier attempt landed
                except TransportError:
                    time.sleep(0.02)
            pushed.append(event.id)
            time.sleep(0.002)
        producing.set()

    with Client(server.address, notify_timeout_s=1, connect_timeout_s=1, hooks=hooks) as client:
        run = Consuming(client, handler, queues=["q"], expire_seconds=2)
        producer = threading.Thread(target=produce, args=(client,), daemon=True)
        producer.start()
        for _ in range(2):
            wait_until(lambda: len(seen) > 30 * (1 + hooks.calls["reconnect"]))
            server.stop()
            time.sleep(0.3)
            server.start()
        assert producing.wait(WAIT_S * 2)
        wait_until(lambda: set(seen) >= set(pushed), timeout_s=WAIT_S * 2)
        wait_until(lambda: client.status("q")[0].total == 0, timeout_s=WAIT_S)
        run.finish()
    assert len(pushed) == 300
    assert set(seen) == set(pushed)  # nothing lost
    duplicates = sum(n - 1 for n in seen.values())
    # only redelivery of claims cut off by the restarts can duplicate, a handful at most
    assert duplicates <= 2 * 2
    assert hooks.calls["reconnect"] >= 2


def test_pool_is_bounded_and_thread_safe(server: ThreadedServer) -> None:
    with Client(server.address, pool_size=3) as client:
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for i in range(50):
                    client.push(f"q{n % 2}", b"%d" % i)
                    client.status(f"q{n % 2}")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT_S)
        assert not errors
        assert client.open_connections <= 3
        assert [s.total for s in client.status("q0", "q1")] == [200, 200]
    assert client.open_connections == 0


def test_stop_on_signals_sets_the_flag_and_restores_handlers() -> None:
    before = signal.getsignal(signal.SIGINT)
    flag = stop_on_signals()
    assert not flag.is_set()
    signal.raise_signal(signal.SIGINT)
    assert flag.is_set()
    assert signal.getsignal(signal.SIGINT) is before
    assert signal.getsignal(signal.SIGTERM) is not None
