"""Redis with AOF (``appendfsync always``) killed with ``-9`` and restarted on the same port and
directory while a producer and a consumer run through our server: during the outage every
request gets ``ERR unexpected server-side error`` promptly, the server recovers by itself
when Redis is back, and the ledger holds: every confirmed push is acknowledged exactly once
(redelivered if its claim was cut off), none is lost.

A reply lost in the kill leaves its command uncertain (it may have run and been written to the
AOF): a push without confirmation may or may not be delivered; a QACK without a reply may have
removed its event.  Only such events may be missing from the ledger.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from okq_transports.server import RedisStorage, ThreadedServer
from tests.redis_fixtures import HOST, RedisProcess, Resp, bulk_strings
from tests.transports.redis_interop import OK, status

pytestmark = pytest.mark.slow

QUEUE = "aof"
SERVER_ERROR = b"-ERR unexpected server-side error\r\n"
PROMPT_S = 2.5  # socket timeout 1 s, connect timeout 0.5 s: an error comes well within this
MAX_PUSHES = 3000
RUN_S = 20.0  # the whole run, at most


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path, ["--appendonly", "yes", "--appendfsync", "always"]).start()
    try:
        yield proc
    finally:
        proc.stop()


@dataclass
class Ledger:
    confirmed: list[bytes] = field(default_factory=list)
    unconfirmed: set[bytes] = field(default_factory=set)  # the push got an error
    acked: Counter[bytes] = field(default_factory=Counter)
    ack_uncertain: set[bytes] = field(default_factory=set)  # the QACK got an error
    errors: int = 0
    slowest_error_s: float = 0.0
    failures: list[str] = field(default_factory=list)  # unexpected replies, by thread

    def error(self, started: float) -> None:
        self.errors += 1
        self.slowest_error_s = max(self.slowest_error_s, time.monotonic() - started)


def _event_id(reply: bytes) -> bytes | None:
    return None if reply == b"$-1\r\n" else bulk_strings(reply)[0]


def _produce(port: int, ledger: Ledger, stop: threading.Event, lock: threading.Lock) -> None:
    conn = Resp(HOST, port)
    try:
        deadline = time.monotonic() + RUN_S
        for n in range(MAX_PUSHES):
            if stop.is_set() or time.monotonic() > deadline:
                break
            event_id = b"ev-%05d" % n
            started = time.monotonic()
            reply = conn.call("QLPUSH", QUEUE, event_id, b"x" * 100)
            with lock:
                if reply == OK:
                    ledger.confirmed.append(event_id)
                elif reply == SERVER_ERROR:
                    ledger.unconfirmed.add(event_id)
                    ledger.error(started)
                    time.sleep(0.02)
                else:
                    ledger.failures.append(f"push {event_id!r}: {reply!r}")
                    return
    finally:
        conn.close()


def _consume(port: int, ledger: Ledger, stop: threading.Event, lock: threading.Lock) -> None:
    conn = Resp(HOST, port)
    try:
        deadline = time.monotonic() + RUN_S + 30.0
        while time.monotonic() < deadline:
            started = time.monotonic()
            reply = conn.call("QRPOP", QUEUE, "EX", 1)
            if reply == SERVER_ERROR:
                with lock:
                    ledger.error(started)
                time.sleep(0.02)
                continue
            popped = _event_id(reply)
            if popped is None:
                if stop.is_set() and conn.call("QSTATUS", QUEUE) == b"*1\r\n" + status(
                    QUEUE.encode(), 0, 0, 0
                ):
                    return  # drained: nothing unclaimed, nothing claimed
                time.sleep(0.02)  # claims cut off by the outage come back after 1 s
                continue
            started = time.monotonic()
            acked = conn.call("QACK", QUEUE, popped)
            with lock:
                if acked == b":1\r\n":
                    ledger.acked[popped] += 1
                elif acked == SERVER_ERROR:
                    ledger.ack_uncertain.add(popped)
                    ledger.error(started)
                else:
                    ledger.failures.append(f"ack {popped!r}: {acked!r}")
                    return
        with lock:
            ledger.failures.append("the queue was not drained in time")
    finally:
        conn.close()


def _wait_for(predicate: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.timeout(120)
def test_redis_killed_and_restarted_with_aof_loses_nothing(redis: RedisProcess) -> None:
    storage = RedisStorage.from_url(
        redis.url, sweep_interval_s=0.3, socket_timeout_s=1.0, connect_timeout_s=0.5
    )
    server = ThreadedServer(HOST, 0, storage=storage, seed=0).start()
    ledger, lock, stop = Ledger(), threading.Lock(), threading.Event()
    threads = [
        threading.Thread(target=job, args=(server.port, ledger, stop, lock), daemon=True)
        for job in (_produce, _consume)
    ]
    try:
        for t in threads:
            t.start()
        _wait_for(lambda: len(ledger.confirmed) >= 100 and len(ledger.acked) >= 30, 15.0)
        assert redis.proc is not None
        redis.proc.kill()  # SIGKILL, by pid
        redis.proc.wait(10)
        errors_before = ledger.errors
        _wait_for(lambda: ledger.errors >= errors_before + 5, 10.0)  # both sides see it
        time.sleep(0.5)
        redis.start()  # same port, same directory: the AOF is loaded
        confirmed_at_restart = len(ledger.confirmed)
        _wait_for(lambda: len(ledger.confirmed) >= confirmed_at_restart + 100, 15.0)
        stop.set()
        for t in threads:
            t.join(RUN_S + 40.0)
            assert not t.is_alive()
    finally:
        stop.set()
        server.stop()
    assert not ledger.failures, ledger.failures
    assert ledger.slowest_error_s < PROMPT_S, ledger.slowest_error_s
    assert all(n == 1 for n in ledger.acked.values()), [k for k, n in ledger.acked.items() if n > 1]
    missing = set(ledger.confirmed) - set(ledger.acked)
    assert missing <= ledger.ack_uncertain, sorted(missing - ledger.ack_uncertain)
    stray = set(ledger.acked) - set(ledger.confirmed) - ledger.unconfirmed
    assert not stray, sorted(stray)
    print(
        f"{len(ledger.confirmed)} pushes confirmed, {len(ledger.unconfirmed)} failed;"
        f" {sum(ledger.acked.values())} acked; {ledger.errors} errors during the outage,"
        f" slowest {ledger.slowest_error_s:.3f} s; {len(missing)} lost with their ack reply"
    )


@pytest.mark.timeout(60)
def test_a_redis_that_stops_answering_times_out_then_serves_again(redis: RedisProcess) -> None:
    """Redis paused (SIGSTOP, by pid): the requests waiting for it get a server-side error
    after the socket timeout; once it runs again (SIGCONT) the next request reconnects."""
    storage = RedisStorage.from_url(redis.url, socket_timeout_s=1.0, connect_timeout_s=0.5)
    server = ThreadedServer(HOST, 0, storage=storage, seed=0).start()
    conns = [Resp(HOST, server.port) for _ in range(3)]
    try:
        assert conns[0].call("QLPUSH", QUEUE, "before", "c") == OK
        assert redis.proc is not None
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            for n, conn in enumerate(conns):
                conn.send("QLPUSH", QUEUE, f"paused-{n}", "c")
            assert [conn.read() for conn in conns] == [SERVER_ERROR] * 3
            assert 0.9 < time.monotonic() - started < PROMPT_S
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 10.0
        while (reply := conns[0].call("QLPUSH", QUEUE, "after", "c")) != OK:
            assert reply in (SERVER_ERROR, b"-ERR duplicate event after\r\n"), reply
            assert time.monotonic() < deadline, reply
            time.sleep(0.05)
        assert conns[1].call("QRPEEK", QUEUE)[:1] == b"*"
    finally:
        for conn in conns:
            conn.close()
        server.stop()
