"""A sync handler that finishes after its claim expired is a late ack, never an ack.

Real loopback TCP against the embedded server with a fast restore sweep: the first consumer's
handler sleeps past its one-second claim while a second consumer takes the redelivery.  Its
``QACK`` then still removes the event (the redelivered copy), so the reply alone would say
"acked"; the deadline says "late".
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest

from okq_proto import Delivery, Hooks
from okq_transports.server import ThreadedServer
from okq_transports.sync import Client

pytestmark = pytest.mark.timeout(60)

WAIT_S = 20.0


class Recorder(Hooks):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.got: list[Delivery] = []
        self.settled: list[Delivery] = []
        self.late: list[Delivery] = []

    def delivered(self, delivery: Delivery) -> None:
        with self.lock:
            self.got.append(delivery)

    def acked(self, delivery: Delivery) -> None:
        with self.lock:
            self.settled.append(delivery)

    def late_ack(self, delivery: Delivery) -> None:
        with self.lock:
            self.late.append(delivery)


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    srv = ThreadedServer("127.0.0.1", 0, sweep_interval_s=0.1, seed=3)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_a_handler_finishing_after_its_claim_expired_is_reported_late(
    server: ThreadedServer, caplog: pytest.LogCaptureFixture
) -> None:
    first_hooks, second_hooks = Recorder(), Recorder()
    first_started = threading.Event()
    redelivered = threading.Event()
    stop_first, stop_second = threading.Event(), threading.Event()

    def slow(delivery: Delivery) -> bool:
        first_started.set()
        # Sleep past the claim until the redelivery is with the second consumer (bounded).
        redelivered.wait(WAIT_S)
        time.sleep(0.2)
        assert time.monotonic() >= delivery.deadline
        stop_first.set()  # the final ack still goes out
        return True

    def fast(delivery: Delivery) -> bool:
        redelivered.set()
        # Hold the redelivered copy until the first consumer's ack has been answered.
        give_up = time.monotonic() + WAIT_S
        while not (first_hooks.late or first_hooks.settled) and time.monotonic() < give_up:
            time.sleep(0.05)
        stop_second.set()
        return True

    with Client(server.address, read_timeout_s=5.0, notify_timeout_s=1) as producer:
        event_id = producer.push("late", b"slow work")
        first = Client(server.address, read_timeout_s=5.0, notify_timeout_s=1, hooks=first_hooks)
        second = Client(server.address, read_timeout_s=5.0, notify_timeout_s=1, hooks=second_hooks)
        errors: list[BaseException] = []

        def run(client: Client, handler: object, stop: threading.Event) -> None:
            try:
                client.consume(handler, ["late"], expire_seconds=1, stop=stop)  # type: ignore[arg-type]
            except BaseException as exc:  # reported below
                errors.append(exc)

        with caplog.at_level(logging.WARNING, logger="okq"), first, second:
            t1 = threading.Thread(target=run, args=(first, slow, stop_first), daemon=True)
            t1.start()
            assert first_started.wait(WAIT_S)
            t2 = threading.Thread(target=run, args=(second, fast, stop_second), daemon=True)
            t2.start()
            t1.join(WAIT_S)
            t2.join(WAIT_S)
            assert not t1.is_alive()
            assert not t2.is_alive()
        assert errors == []

    assert [d.id for d in first_hooks.got] == [event_id]
    assert [d.id for d in second_hooks.got] == [event_id]  # the redelivery
    # The first ack removed the redelivered copy (QACK replied 1), yet it is late, not acked.
    assert first_hooks.settled == []
    assert [d.id for d in first_hooks.late] == [event_id]
    # ...and the second consumer, whose copy was removed under it, sees QACK 0: late too.
    assert second_hooks.settled == []
    assert [d.id for d in second_hooks.late] == [event_id]
    late_records = [r for r in caplog.records if "late ack" in r.getMessage()]
    assert len(late_records) == 2
    assert all(r.levelno == logging.WARNING for r in late_records)
    assert all(getattr(r, "okq_event_id", None) == event_id for r in late_records)
