"""The sync consumer under injected connection resets (`faultproxy`): the comparison run
for test_faults_trio.py and test_faults_asyncio.py, same ledger and bounds."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from okq_proto import Delivery
from okq_transports.server import ThreadedServer
from okq_transports.sync import Client

from .faultproxy import FaultProxy, Ledger

pytestmark = pytest.mark.timeout(120)

N = 300
RUN_DEADLINE_S = 60.0
STOP_BOUND_S = 5.0
QUEUE = "faults"


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    srv = ThreadedServer("127.0.0.1", 0, sweep_interval_s=0.2, seed=0).start()
    try:
        yield srv
    finally:
        srv.stop()


def test_resets_lose_nothing(server: ThreadedServer) -> None:
    """~1 % of forwarded chunks reset the connection (both sides)."""
    with Client(server.address) as direct:
        direct.push_many(QUEUE, [b"%d" % i for i in range(N)])
    ledger = Ledger(N)
    stop = threading.Event()

    def handle(delivery: Delivery) -> bool:
        ledger.record(delivery.contents)
        return True

    with (
        FaultProxy((server.host, server.port), reset_probability=0.01, seed=7) as proxy,
        Client(proxy.address_text, notify_timeout_s=1) as client,
    ):
        consumer = threading.Thread(
            target=client.consume,
            args=(handle, [QUEUE]),
            kwargs={"expire_seconds": 2, "concurrency": 2, "stop": stop},
        )
        start = time.monotonic()
        consumer.start()
        with Client(server.address) as direct:
            while direct.status(QUEUE)[0].total and time.monotonic() < start + RUN_DEADLINE_S:
                time.sleep(0.1)
            stopped = time.monotonic()
            stop.set()
            consumer.join(STOP_BOUND_S + 5)
            returned = time.monotonic()
            assert not consumer.is_alive()
            status = direct.status(QUEUE)[0]
            for _ in range(50):
                if status.consumers == 0:
                    break
                time.sleep(0.05)
                status = direct.status(QUEUE)[0]
    print(
        f"events={N} lost={ledger.lost} duplicates={ledger.duplicates} "
        f"run={stopped - start:.1f}s stop={returned - stopped:.2f}s status={status}"
    )
    assert proxy.threads_alive == 0
    assert ledger.lost == 0
    assert (status.total, status.processing, status.consumers) == (0, 0, 0)
    assert returned - stopped < STOP_BOUND_S
