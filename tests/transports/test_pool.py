"""The one driver's pool and retry loop on a scripted backend: no sockets, simulated time.

The blocking twin (``okq_transports._sync``) is the async code with ``await`` taken out, so
what holds here holds for every door's pool (the behaviour suite runs the real doors).
"""

from __future__ import annotations

import threading
from collections import deque
from types import TracebackType

import pytest

from okq_proto import (
    ClientClosed,
    ClientConnection,
    ConnectError,
    ConnectionClosed,
    DecoderBackend,
    Ping,
    QRPop,
    TimeoutError,
)
from okq_proto.policy import Address
from okq_transports._sync.client import SyncClientCore
from okq_transports._sync.pool import SyncPool
from okq_transports._sync.streams import Feedable, SyncStream, Waiter

A, B = ("10.0.0.1", 4777), ("10.0.0.2", 4777)


class FakeStream:
    """Answers each request with the next scripted reply, or fails as scripted."""

    def __init__(self, address: Address, script: deque[bytes | BaseException]) -> None:
        self.address = address
        self.script = script
        self.sent: list[bytes] = []
        self.closed = False
        self.unread = False

    def new_machine(self, decoder: DecoderBackend, max_reply_bytes: int | None) -> ClientConnection:
        return ClientConnection(backend="python", max_reply_bytes=max_reply_bytes)

    def fill(self, machine: Feedable, timeout_s: float | None) -> None:
        step = self.script.popleft() if self.script else ConnectionClosed("script ended")
        if isinstance(step, BaseException):
            raise step
        machine.receive_data(step)

    def send_all(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionClosed("closed")
        self.sent.append(data)

    def close(self) -> None:
        self.closed = True

    def has_unread(self) -> bool:
        return self.unread

    def now(self) -> float:
        return 1000.0


class NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None


class FakeBackend:
    """Connects by the script: a dead address raises; waits return at once (simulated)."""

    def __init__(self, dead: set[Address] | None = None) -> None:
        self.dead = dead or set()
        self.connects: list[Address] = []
        self.streams: list[FakeStream] = []
        self.replies: deque[bytes | BaseException] = deque()
        self.clock = 1000.0

    def connect(
        self, host: str, port: int, timeout_s: float | None, tls: object = None
    ) -> SyncStream:
        assert tls is None  # these pools are plain TCP
        self.connects.append((host, port))
        if (host, port) in self.dead:
            raise ConnectError(f"connect to {host}:{port}: refused")
        stream = FakeStream((host, port), self.replies)
        self.streams.append(stream)
        return stream

    def now(self) -> float:
        return self.clock

    def event(self) -> Waiter:
        return threading.Event()

    def wait(self, waiter: Waiter, timeout_s: float | None) -> bool:
        self.clock += timeout_s or 0.0  # time passes; nobody releases meanwhile
        return waiter.is_set()

    def lock(self) -> NoLock:
        return NoLock()


def pool(backend: FakeBackend, *addresses: Address, size: int = 2) -> SyncPool:
    return SyncPool(
        backend,  # type: ignore[arg-type]  # the pool's part of the backend only
        list(addresses or (A,)),
        size=size,
        connect_timeout_s=1.0,
        read_timeout_s=1.0,
        pool_timeout_s=0.5,
    )


def test_bounded_pool_times_out_in_simulated_time() -> None:
    backend = FakeBackend()
    p = pool(backend, size=2)
    first, second = p.acquire(), p.acquire()
    with pytest.raises(TimeoutError, match=r"within 0.5 s \(pool size 2\)"):
        p.acquire()
    assert backend.clock == 1000.5
    p.release(first)
    assert p.acquire() is first  # the idle connection is handed out again
    p.release(second)
    assert p.open_count == 2
    assert p.idle_count == 1


def test_failover_prefers_the_address_that_worked() -> None:
    backend = FakeBackend(dead={A})
    p = pool(backend, A, B)
    conn = p.acquire()
    assert conn.address == B
    assert backend.connects == [A, B]
    assert p.preferred_address == B
    p.acquire()
    assert backend.connects == [A, B, B]  # B first from now on


def test_every_address_dead_is_one_connect_error() -> None:
    p = pool(FakeBackend(dead={A, B}), A, B)
    with pytest.raises(ConnectError) as caught:
        p.acquire()
    assert "10.0.0.1:4777" in str(caught.value)
    assert "10.0.0.2:4777" in str(caught.value)
    assert p.open_count == 0  # the slot went back


def test_an_idle_connection_that_heard_something_is_never_handed_out() -> None:
    backend = FakeBackend()
    p = pool(backend)
    conn = p.acquire()
    p.release(conn)
    backend.streams[0].unread = True  # the server spoke unasked (or hung up)
    again = p.acquire()
    assert again is not conn
    assert backend.streams[0].closed


def test_closed_pool_refuses_and_wakes_nobody_twice() -> None:
    backend = FakeBackend()
    p = pool(backend)
    conn = p.acquire()
    p.close()
    with pytest.raises(ClientClosed):
        p.acquire()
    p.release(conn)  # given back after close: closed, not pooled
    assert backend.streams[0].closed
    assert p.idle_count == 0


class Core(SyncClientCore):
    BACKEND = None  # type: ignore[assignment]  # given per test


def client(backend: FakeBackend, retries: int) -> Core:
    return Core(
        "10.0.0.1:4777",
        backend=backend,  # type: ignore[arg-type]  # the pool's part of the backend only
        retries=retries,
        pool_timeout_s=0.5,
    )


@pytest.mark.parametrize(
    ("retries", "failures", "succeeds"), [(0, 1, False), (1, 1, True), (2, 2, True), (2, 3, False)]
)
def test_retries_mean_the_same_on_every_door(retries: int, failures: int, succeeds: bool) -> None:
    backend = FakeBackend()
    backend.replies.extend([ConnectionClosed("reset")] * failures + [b"+PONG\r\n"])
    c = client(backend, retries)
    if succeeds:
        c.ping()
    else:
        with pytest.raises(ConnectionClosed):
            c.ping()
    assert len(backend.connects) == min(failures, retries) + 1  # a new connection each time
    # every connection that failed was closed, never pooled again
    failed = backend.streams if not succeeds else backend.streams[:-1]
    assert all(stream.closed for stream in failed)
    assert c.idle_connections == (1 if succeeds else 0)


def test_a_pop_is_never_sent_twice() -> None:
    backend = FakeBackend()
    backend.replies.extend([ConnectionClosed("reset"), b"*-1\r\n"])
    c = client(backend, retries=5)
    with pytest.raises(ConnectionClosed):
        c.execute(QRPop(b"q", 30))
    assert len(backend.connects) == 1


def test_closed_client_is_client_closed_and_not_retried() -> None:
    backend = FakeBackend()
    c = client(backend, retries=5)
    c.close()
    with pytest.raises(ClientClosed):
        c.execute(Ping())
    assert backend.connects == []
