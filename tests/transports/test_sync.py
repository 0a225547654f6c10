"""The sync client over real loopback TCP against the embedded okq server.

Every wait is bounded; consumers run in threads joined with a timeout.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

import okq_proto as okq
from okq_proto import (
    ConnectError,
    ConnectionClosed,
    Delivery,
    DuplicateEventError,
    Event,
    Hooks,
    LocalProtocolError,
    PushFlag,
    QueueStatus,
    TransportError,
    is_dup,
)
from okq_transports.server import ThreadedServer
from okq_transports.sync import Client, expired, remaining, stop_on_signals

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


# -- methods and flags ----------------------------------------------------------------------------


def test_push_peek_status_info_flush_ping(client: Client) -> None:
    client.ping()
    assert client.peek_next("q") is None
    first = client.push("q", b"one")
    last = client.push("q", "two")  # str contents go as UTF-8
    assert len(first) == 36
    assert client.peek_next("q") == Event("q", first, b"one")
    assert client.peek_last("q") == Event("q", last, b"two")
    assert client.status("q", "nope") == [QueueStatus("q", 2, 0, 0), QueueStatus("nope", 0, 0, 0)]
    assert [s.name for s in client.status()] == ["q"]
    (line,) = client.info("q")
    assert line.startswith("q  total: 2  processing: 0")
    client.flush("q")
    assert counts(client, "q") == [(0, 0)]
    assert client.idle_connections == client.open_connections == 1


def test_binary_contents_and_names_round_trip(client: Client) -> None:
    contents = bytes(range(256)) + b"\r\n\x00" * 100
    event = Event("q\udcff\r\n", "id\x00\udcfe", contents)
    client.push_event(event)
    assert client.peek_next(event.queue) == event
    got: list[Delivery] = []

    def handler(delivery: Delivery) -> bool:
        got.append(delivery)
        return True

    run = Consuming(client, handler, queues=[event.queue])
    wait_until(lambda: bool(got))
    run.finish()
    assert got[0].contents == contents
    assert got[0].id == event.id
    assert client.status(event.queue)[0].total == 0


def test_duplicates_are_reported(client: Client) -> None:
    client.push_event(Event("q", "same", b"1"))
    with pytest.raises(DuplicateEventError) as info:
        client.push_event(Event("q", "same", b"2"))
    assert is_dup(info.value)
    assert info.value.event_id == "same"
    assert client.peek_next("q") == Event("q", "same", b"1")
    # NOBLOCK hides duplicates (okq replies before storing)
    client.push_event(Event("q", "same", b"3"), PushFlag.NO_BLOCK)


def test_custom_id_factory_and_push_many_outcomes(server: ThreadedServer) -> None:
    ids = iter(["a", "b", "a", "c"])
    with Client(server.address, id_factory=lambda: next(ids)) as client:
        outcomes = client.push_many("q", [b"1", b"2", b"3", b"4"])
    assert [o.id for o in outcomes] == ["a", "b", "a", "c"]
    assert [o.ok for o in outcomes] == [True, True, False, True]
    assert is_dup(outcomes[2].error)
    assert not any(o.retried for o in outcomes)
    with pytest.raises(DuplicateEventError):
        outcomes[2].unwrap()


def test_high_priority_goes_first(client: Client) -> None:
    a = client.push("q", b"a")
    b = client.push("q", b"b")
    c = client.push("q", b"c", PushFlag.HIGH_PRIORITY)
    (d,) = client.push_many("q", [b"d"], PushFlag.HIGH_PRIORITY)
    assert client.peek_next("q") == Event("q", d.id, b"d")
    order: list[str] = []

    def handler(delivery: Delivery) -> bool:
        order.append(delivery.id)
        return True

    run = Consuming(client, handler, queues=["q"])
    wait_until(lambda: len(order) == 4)
    run.finish()
    assert order == [d.id, c, a, b]


def test_noblock_push_lands_shortly(client: Client) -> None:
    event_id = client.push("q", b"x", PushFlag.NO_BLOCK | PushFlag.HIGH_PRIORITY)
    wait_until(lambda: client.peek_next("q") is not None)
    assert client.peek_next("q") == Event("q", event_id, b"x")


def test_push_many_pipelines_a_large_batch(client: Client) -> None:
    outcomes = client.push_many("q", (b"%d" % i for i in range(10_000)))
    assert all(o.ok for o in outcomes)
    assert len({o.id for o in outcomes}) == 10_000
    assert client.status("q")[0].total == 10_000
    assert client.peek_next("q") == Event("q", outcomes[0].id, b"0")


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


def test_failed_handler_gets_the_event_again(server: ThreadedServer) -> None:
    hooks = Recorder()
    attempts: Counter[str] = Counter()

    def handler(delivery: Delivery) -> bool:
        attempts[delivery.id] += 1
        assert 0 < remaining(delivery) <= 1.0
        if attempts[delivery.id] == 1:
            raise RuntimeError("first try fails")
        return attempts[delivery.id] >= 3  # the second try returns False

    with Client(server.address, notify_timeout_s=1, hooks=hooks) as client:
        event_id = client.push("q", b"x")
        run = Consuming(client, handler, queues=["q"], expire_seconds=1)
        wait_until(lambda: hooks.calls["acked"] == 1)
        run.finish()
        assert attempts[event_id] == 3
        assert counts(client, "q") == [(0, 0)]
    assert isinstance(hooks.failed[0], RuntimeError)
    assert hooks.failed[1] is None
    assert hooks.calls["delivered"] == 3


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


def test_at_most_once_never_acks_and_never_redelivers(client: Client) -> None:
    got: list[Delivery] = []

    def handler(delivery: Delivery) -> bool:
        got.append(delivery)
        assert remaining(delivery) == float("inf")
        return False  # lost: that is what at-most-once means

    client.push_many("q", [b"1", b"2"])
    run = Consuming(client, handler, queues=["q"], expire_seconds=-1)
    wait_until(lambda: len(got) == 2)
    time.sleep(0.5)  # well past any sweep: nothing comes back
    run.finish()
    assert len(got) == 2
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


def test_stop_while_waiting_is_prompt(client: Client) -> None:
    run = Consuming(client, lambda d: True, queues=["q"])
    wait_until(lambda: client.status("q")[0].consumers == 1)
    began = time.monotonic()
    run.finish()
    assert time.monotonic() - began < 1.0


def test_a_notify_wait_longer_than_the_read_timeout_does_not_raise(server: ThreadedServer) -> None:
    hooks = Recorder()
    got: list[Delivery] = []
    with Client(server.address, read_timeout_s=0.2, notify_timeout_s=1, hooks=hooks) as client:

        def handler(delivery: Delivery) -> bool:
            got.append(delivery)
            return True

        run = Consuming(client, handler, queues=["q"])
        time.sleep(1.6)  # more than one QNOTIFY round, each far longer than the read timeout
        client.push("q", b"late")
        wait_until(lambda: bool(got))
        run.finish()
    assert hooks.calls["error"] == 0


def test_handler_exceptions_are_logged(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def handler(delivery: Delivery) -> bool:
        calls.append(1)
        raise ValueError("boom")

    client.push("q", b"x")
    with caplog.at_level(logging.ERROR, logger="okq"):
        run = Consuming(client, handler, queues=["q"], expire_seconds=30)
        wait_until(lambda: bool(calls))
        run.finish()
    (record,) = [r for r in caplog.records if "handler failed" in r.getMessage()]
    assert record.okq_queue == "q"  # type: ignore[attr-defined]
    assert record.exc_info is not None
    assert client.status("q")[0].processing == 1  # not acked


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


def test_failover_to_the_next_address(server: ThreadedServer) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()
    with Client(f"127.0.0.1:{dead_port}, {server.address}") as client:
        client.ping()
        assert client.push("q", b"x")
    with Client([("127.0.0.1", dead_port), server.address]) as client:
        client.ping()


def test_refused_connection_is_a_connect_error() -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    with Client(f"127.0.0.1:{port}") as client, pytest.raises(ConnectError):
        client.ping()


class HalfReplyServer:
    """Answers each connection's first request with half a reply, then closes."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(WAIT_S)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                conn.settimeout(WAIT_S)
                conn.recv(65536)
                conn.sendall(b"*2\r\n$2\r\nid\r\n$10\r\nabc")  # QRPEEK reply cut short

    def close(self) -> None:
        self.sock.close()
        self.thread.join(WAIT_S)


def test_a_connection_broken_mid_reply_is_discarded() -> None:
    raw = HalfReplyServer()
    try:
        with Client(raw.address, retries=0) as client:
            with pytest.raises(ConnectionClosed):
                client.peek_next("q")
            assert client.open_connections == 0  # closed, not pooled
            with Client(raw.address, retries=1) as retrying, pytest.raises(ConnectionClosed):
                retrying.peek_next("q")  # safe to retry: once, on a new connection
            assert raw.accepted == 3
    finally:
        raw.close()


def test_pooled_connections_survive_a_restart(server: ThreadedServer) -> None:
    with Client(server.address) as client:
        client.push("q", b"x")
        server.restart()
        assert client.peek_next("q") is not None  # the stale pooled connection is retried
        event_id = client.push("q", b"y")  # a push retried after failure
        assert client.peek_last("q") == Event("q", event_id, b"y")


def test_bad_arguments_fail_before_anything_is_sent(server: ThreadedServer) -> None:
    with Client(server.address) as client:
        with pytest.raises(LocalProtocolError):
            client.push(3, b"x")  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError):
            client.push("q", 3)  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError):
            client.push("q", b"x", 3)  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError):
            client.push_event(("q", "i", b"c"))  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError):
            client.push_many("q", [b"ok", 5])  # type: ignore[list-item]
        with pytest.raises(LocalProtocolError):
            client.consume(lambda d: True, ["q"], expire_seconds=-5)
        with pytest.raises(LocalProtocolError):
            client.consume(lambda d: True, [])
        with pytest.raises(LocalProtocolError):
            client.consume(lambda d: True, ["q"], concurrency=0)
        assert client.open_connections == 0  # nothing was even connected
    for bad in ({"pool_size": 0}, {"retries": -1}, {"read_timeout_s": 0}, {"notify_timeout_s": -1}):
        with pytest.raises(LocalProtocolError):
            Client(server.address, **bad)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Client("host:notaport")


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


def test_hooks_see_pushes_deliveries_and_acks(server: ThreadedServer) -> None:
    hooks = Recorder()
    with Client(server.address, notify_timeout_s=1, hooks=hooks) as client:
        client.push("q", b"1")
        client.push_many("q", [b"2", b"3"])
        run = Consuming(client, lambda d: True, queues=["q"])
        wait_until(lambda: hooks.calls["acked"] == 3)
        run.finish()
    assert hooks.calls["pushed"] == 3
    assert hooks.calls["delivered"] == 3


def test_stop_on_signals_sets_the_flag_and_restores_handlers() -> None:
    before = signal.getsignal(signal.SIGINT)
    flag = stop_on_signals()
    assert not flag.is_set()
    signal.raise_signal(signal.SIGINT)
    assert flag.is_set()
    assert signal.getsignal(signal.SIGINT) is before
    assert signal.getsignal(signal.SIGTERM) is not None


def test_execute_runs_any_command_and_refuses_consumer_state(okq_server: ThreadedServer) -> None:
    with Client(okq_server.address) as client:
        client.push("exec-q", b"one")
        event = client.execute(okq.QRPop(okq.to_wire("exec-q"), 60))
        assert event is not None
        assert event.contents == b"one"
        assert client.status("exec-q")[0].processing == 1
        assert client.execute(okq.QAck(okq.to_wire("exec-q"), okq.to_wire(event.id))) == 1
        assert client.execute(okq.QAck(okq.to_wire("exec-q"), okq.to_wire(event.id))) == 0
        for command in (okq.QRegister((b"exec-q",)), okq.QNotify(1)):
            with pytest.raises(okq.LocalProtocolError, match="consume"):
                client.execute(command)
        with pytest.raises(okq.LocalProtocolError):
            client.execute(b"PING")  # type: ignore[arg-type]
        assert client.status("exec-q")[0].consumers == 0
