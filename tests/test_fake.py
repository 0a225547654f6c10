"""`okq_transports.testing.FakeServer`: the same reply bytes as the embedded server over TCP,
its own clock, consumers in threads, closes, bad input, and a real `Client` on top."""

from __future__ import annotations

import threading
import time

import pytest

from conformance._net import connect
from okq_proto import ClientConnection, ConnectionClosed, Event, QRegister, to_wire
from okq_proto import TimeoutError as OkqTimeoutError
from okq_transports.server import ThreadedServer
from okq_transports.testing import FakeServer


def cmd(*args: bytes) -> bytes:
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%b\r\n" % (len(a), a)
    return out


#: Requests whose replies do not depend on time or randomness, each with an awkward case.
SCRIPT: list[bytes] = [
    cmd(b"PING"),
    cmd(b"QLPUSH", b"q", b"e1", b"one"),
    cmd(b"QLPUSH", b"q", b"e1", b"dup"),
    cmd(b"QRPUSH", b"q", b"e0", b"\x00\xff binary"),
    cmd(b"QLPUSH", b"q", b"e2", b"noblocked", b"NOBLOCK"),
    cmd(b"QLPUSH", b"q", b"e2", b"dup hidden", b"NOBLOCK"),
    cmd(b"QLPEEK", b"q"),
    cmd(b"QRPEEK", b"q"),
    cmd(b"QSTATUS", b"q", b"none"),
    cmd(b"QINFO", b"q"),
    cmd(b"QRPOP", b"q", b"EX", b"30"),
    cmd(b"QRPOP", b"q", b"EX", b"9223372036854775"),
    cmd(b"QRPOP", b"q", b"EX", b"-5"),
    cmd(b"QRPOP", b"q", b"EX", b"0"),
    cmd(b"QSTATUS"),
    cmd(b"QACK", b"q", b"e0"),
    cmd(b"QACK", b"q", b"e0"),
    cmd(b"QREGISTER", b"q", b"other"),
    cmd(b"QSTATUS", b"other"),
    cmd(b"QNOTIFY", b"0"),
    cmd(b"QNOTIFY", b"x"),
    cmd(b"QFLUSH", b"q"),
    cmd(b"QSTATUS", b"q"),
    cmd(b"QLPUSH"),
    cmd(b"NOSUCH", b"a"),
    cmd(b"PING"),
]


def replies_over_tcp(address: tuple[str, int], requests: list[bytes]) -> list[bytes]:
    conn = connect(address[0], address[1], "tcp")
    try:
        out = []
        for request in requests:
            conn.send(request, 5.0)
            reply, _ = conn.read_reply(time.monotonic() + 5.0)
            out.append(reply)
        return out
    finally:
        conn.close()


def replies_from_fake(fake: FakeServer, requests: list[bytes]) -> list[bytes]:
    conn = fake._connect(("fake", 4777))
    out = []
    for request in requests:
        conn.send_all(request)
        out.append(bytes(conn.replies))
        conn.replies.clear()
    conn.close()
    return out


def test_replies_are_the_embedded_servers_byte_for_byte() -> None:
    with ThreadedServer("127.0.0.1", 0, seed=0) as server:
        over_tcp = replies_over_tcp((server.host, server.port), SCRIPT)
    fake = FakeServer()
    assert replies_from_fake(fake, SCRIPT) == over_tcp
    assert over_tcp[2].startswith(b"-ERR")  # the duplicate
    assert over_tcp[11] == b"-ERR unexpected server-side error\r\n"


def test_a_client_of_the_fake_does_what_a_client_of_a_server_does() -> None:
    fake = FakeServer()
    with fake.client() as client:
        first = client.push("jobs", b"a")
        client.push_event(Event("jobs", "fixed-id", b"b"))
        assert client.peek_next("jobs") == Event("jobs", first, b"a")  # the oldest
        assert client.peek_last("jobs") == Event("jobs", "fixed-id", b"b")
        [status] = client.status("jobs")
        assert (status.total, status.processing, status.consumers) == (2, 0, 0)
        assert client.info() == ["jobs  total: 2  processing: 0  consumers: 0"]
        client.flush("jobs")
        assert client.status() == []
        client.ping()


def test_time_moves_only_when_told_and_the_sweep_redelivers() -> None:
    fake = FakeServer(sweep_interval_s=1.0)
    with fake, fake.client() as client:
        event_id = client.push("jobs", b"x")
        event = fake.pop("jobs", expire_s=30)
        assert event is not None
        assert event.id == event_id
        assert fake.pop("jobs") is None
        assert fake.advance(29.5) == 0  # not yet expired
        assert client.peek_next("jobs") is None
        assert fake.advance(1.5) == 1  # the sweep after expiry puts it back
        assert fake.now == 31.0
        again = fake.pop("jobs", expire_s=30)
        assert again is not None
        assert again.id == event_id
        assert fake.ack(again)
        assert not fake.ack(again)
        assert client.status() == []


@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan")])
def test_advance_refuses_a_bad_duration(bad: float) -> None:
    with pytest.raises(ValueError, match="finite number of seconds"):
        FakeServer().advance(bad)


def test_a_closed_connection_stops_counting_as_a_consumer() -> None:
    fake = FakeServer()
    with fake.client() as client:
        with client.connection() as conn:
            conn.request(QRegister((to_wire("jobs"),))).unwrap()
        [status] = client.status("jobs")
        assert status.consumers == 1
        assert fake.connection_count == 1  # pooled
    assert fake.connection_count == 0
    with fake.client() as client:
        assert client.status() == []  # the registration went with the connection


def test_bad_input_closes_only_that_connection_as_the_server_does() -> None:
    fake = FakeServer()
    bad = fake._connect(("fake", 4777))
    good = fake._connect(("fake", 4777))
    bad.send_all(b"PING\r\n")  # an inline command: okq closes without a reply
    assert bad.replies == b""
    assert bad.has_unread()  # its end of file
    assert fake.connection_count == 1
    with pytest.raises(ConnectionClosed):
        bad.send_all(cmd(b"PING"))
    good.send_all(cmd(b"PING"))
    assert bytes(good.replies) == b"+PONG\r\n"


def test_reading_with_no_request_waiting_is_a_timeout_not_a_hang() -> None:
    conn = FakeServer()._connect(("fake", 4777))
    machine = ClientConnection()
    with pytest.raises(OkqTimeoutError, match="nothing to send"):
        conn.fill(machine, 1.0)


@pytest.mark.timeout(30)
def test_a_consumer_thread_gets_pushes_from_another_thread() -> None:
    fake = FakeServer()
    got: list[bytes] = []
    stop = threading.Event()

    def handler(event: Event) -> bool:
        got.append(event.contents)
        if len(got) == 3:
            stop.set()
        return True

    with fake.client() as consumer_client, fake.client() as producer:
        worker = threading.Thread(
            target=consumer_client.consume, args=(handler, ["jobs"]), kwargs={"stop": stop}
        )
        worker.start()
        deadline = time.monotonic() + 10
        while not fake.storage.engine.status([b"jobs"])[0].consumers:  # registered
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for contents in (b"1", b"2", b"3"):
            producer.push("jobs", contents)
        worker.join(10)
        assert not worker.is_alive()
        assert sorted(got) == [b"1", b"2", b"3"]
        assert producer.status() == []  # all acked, consumer gone


def test_repr_shows_the_clock_and_connections() -> None:
    fake = FakeServer()
    fake.advance(2.5)
    assert repr(fake) == "<FakeServer now=2.5 s, 0 connection(s)>"
