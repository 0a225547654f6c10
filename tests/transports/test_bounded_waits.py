"""The sync client's waits are bounded: the read timeout bounds a whole reply, and a reply may
buffer at most ``max_reply_bytes``.

Scripted loopback TCP servers (`MalformedServer`, made to misbehave slowly here): one dribbles
a reply a byte at a time, one sends a bulk string or an array that never ends.  Each must fail
within the read timeout plus a margin, with a typed error, on a connection never used again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from okq_proto import (
    DEFAULT_MAX_REPLY_BYTES,
    NEED_DATA,
    NOTIFY_MARGIN_S,
    ClientConnection,
    ConnectionState,
    Delivery,
    Event,
    Hooks,
    LocalProtocolError,
    QRPeek,
    RemoteProtocolError,
    TimeoutError,
)
from okq_proto.policy import read_time_left
from okq_transports import asyncio as okq_asyncio
from okq_transports import trio as okq_trio
from okq_transports._socket import readable_now
from okq_transports.server import ThreadedServer
from okq_transports.sync import Client
from tests.transports.scenarios import GOOD_PEEK, MalformedServer, run_on_uvloop

pytestmark = pytest.mark.timeout(120)

READ_TIMEOUT_S = 1.0
MARGIN_S = 2.0  # generous: the machine may be loaded
CAP = 1024 * 1024  # the max_reply_bytes the endless-reply tests set
SEND_LIMIT = 128 * 1024 * 1024  # a scripted server gives up after this many bytes


class DribblingServer(MalformedServer):
    """Answers each request with `bad`, one byte every `interval_s`, until `healed`."""

    def __init__(self, bad: bytes, interval_s: float) -> None:
        super().__init__(bad, GOOD_PEEK)
        self.interval_s = interval_s

    def _one(self, sock: socket.socket) -> None:
        broken = False
        with sock, contextlib.suppress(OSError):
            while sock.recv(65536):
                if broken:
                    self.reused += 1
                if self.healed.is_set():
                    sock.sendall(self.good)
                    continue
                broken = True
                self.bad_sent += 1
                for i in range(len(self.bad)):
                    sock.sendall(self.bad[i : i + 1])
                    time.sleep(self.interval_s)


class EndlessServer(MalformedServer):
    """Answers each request with `head`, then `chunk` after `chunk` (up to `SEND_LIMIT`
    bytes), until `healed`; `sent` counts the bytes of the endless replies."""

    def __init__(self, head: bytes, chunk: bytes) -> None:
        super().__init__(head, GOOD_PEEK)
        self.chunk = chunk
        self.sent = 0
        self.stopped = threading.Event()

    def _one(self, sock: socket.socket) -> None:
        broken = False
        with sock, contextlib.suppress(OSError):
            while sock.recv(65536):
                if broken:
                    self.reused += 1
                if self.healed.is_set():
                    sock.sendall(self.good)
                    continue
                broken = True
                self.bad_sent += 1
                try:
                    sock.sendall(self.bad)
                    while self.sent < SEND_LIMIT:
                        sock.sendall(self.chunk)
                        self.sent += len(self.chunk)
                finally:
                    self.stopped.set()


@contextlib.contextmanager
def scripted(server: MalformedServer) -> Iterator[MalformedServer]:
    try:
        yield server
    finally:
        server.healed.set()
        server.close()


def check_healed(client: Client, server: MalformedServer) -> None:
    """The failed connection was dropped: a new one serves the next request."""
    assert client.idle_connections == 0
    assert client.open_connections == 0
    server.healed.set()
    assert client.peek_next("q") == Event("q", "id", b"body")
    assert server.reused == 0, "a broken connection was used again"
    assert server.connections == 2


def test_a_dribbled_reply_times_out_within_the_read_timeout() -> None:
    # 25 bytes at 0.6 s each: every read succeeds within 1 s, the reply takes 15 s.
    with (
        scripted(DribblingServer(GOOD_PEEK, 0.6)) as server,
        Client(server.address, read_timeout_s=READ_TIMEOUT_S, retries=0) as client,
    ):
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            client.peek_next("q")
        elapsed = time.monotonic() - start
        assert READ_TIMEOUT_S * 0.9 <= elapsed < READ_TIMEOUT_S + MARGIN_S, elapsed
        check_healed(client, server)


def test_a_dribbled_pipelined_reply_times_out_too() -> None:
    with (
        scripted(DribblingServer(GOOD_PEEK, 0.6)) as server,
        Client(server.address, read_timeout_s=READ_TIMEOUT_S, retries=0) as client,
    ):
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            client.push_many("q", [b"a", b"b"])
        assert time.monotonic() - start < READ_TIMEOUT_S + MARGIN_S


def test_an_endless_bulk_string_is_refused_at_its_header() -> None:
    # Just under RESP's 512 MiB, then data forever.
    endless = EndlessServer(b"$536870000\r\n", b"x" * 65536)
    with (
        scripted(endless) as server,
        Client(server.address, read_timeout_s=READ_TIMEOUT_S, retries=0) as client,
    ):
        start = time.monotonic()
        with pytest.raises(RemoteProtocolError, match="max_reply_bytes"):
            client.peek_next("q")
        assert time.monotonic() - start < READ_TIMEOUT_S + MARGIN_S
        check_healed(client, server)
        assert endless.stopped.wait(10)
        assert endless.sent < 32 * 1024 * 1024  # the client read no more than its socket held


@pytest.mark.parametrize("cap", [CAP, 8 * CAP])
def test_an_endless_reply_stops_at_max_reply_bytes(cap: int) -> None:
    # An array of (almost) okq's most elements, each a bulk within every limit: only the
    # bytes buffered for the one reply give it away.
    endless = EndlessServer(b"*16000000\r\n", b"$65530\r\n" + b"x" * 65530 + b"\r\n")
    with (
        scripted(endless) as server,
        Client(
            server.address, read_timeout_s=READ_TIMEOUT_S, retries=0, max_reply_bytes=cap
        ) as client,
    ):
        start = time.monotonic()
        with pytest.raises(RemoteProtocolError, match="max_reply_bytes"):
            client.peek_next("q")
        assert time.monotonic() - start < READ_TIMEOUT_S + MARGIN_S
        check_healed(client, server)
        assert endless.stopped.wait(10)
        # What the client read is at most the cap and a read; the rest sat in socket buffers.
        assert endless.sent < cap + 32 * 1024 * 1024, endless.sent


def test_without_a_cap_the_decoder_limits_still_hold() -> None:
    # max_reply_bytes=None: no cap of the client's own; RESP's 512 MiB still refuses this.
    endless = EndlessServer(b"$2147483647\r\n", b"x" * 65536)
    with (
        scripted(endless) as server,
        Client(
            server.address, read_timeout_s=READ_TIMEOUT_S, retries=0, max_reply_bytes=None
        ) as client,
    ):
        with pytest.raises(RemoteProtocolError):
            client.peek_next("q")
        check_healed(client, server)


def test_max_reply_bytes_is_checked() -> None:
    for bad in (0, -1, "64", 1.5, True):
        with pytest.raises(LocalProtocolError, match="max_reply_bytes"):
            Client("127.0.0.1:1", max_reply_bytes=bad)  # type: ignore[arg-type]
        with pytest.raises(LocalProtocolError, match="max_reply_bytes"):
            ClientConnection(max_reply_bytes=bad)  # type: ignore[arg-type]
    assert Client("127.0.0.1:1").max_reply_bytes == DEFAULT_MAX_REPLY_BYTES == 64 * 1024 * 1024
    assert Client("127.0.0.1:1", max_reply_bytes=None).max_reply_bytes is None


@pytest.mark.parametrize("backend", ["python", "auto"])
def test_the_machine_buffers_at_most_the_cap_and_one_chunk(backend: str) -> None:
    conn = ClientConnection(backend=backend, max_reply_bytes=10_000)  # type: ignore[arg-type]
    conn.send(QRPeek(b"q"))
    conn.data_to_send()
    conn.receive_data(b"*1000\r\n")  # an array of bulks, each well within the cap
    chunk = b"$994\r\n" + b"y" * 994 + b"\r\n"  # 1000 bytes
    fed = 0
    error: RemoteProtocolError | None = None
    for _ in range(100):  # bounded
        try:
            assert conn.next_event() is NEED_DATA
        except RemoteProtocolError as exc:
            error = exc
            break
        conn.receive_data(chunk)
        fed += len(chunk)
    assert error is not None
    assert "max_reply_bytes" in str(error)
    assert fed <= 10_000 + len(chunk)
    assert conn.state is ConnectionState.BROKEN
    # A bulk announced beyond the cap is refused at its header.
    conn = ClientConnection(backend=backend, max_reply_bytes=10_000)  # type: ignore[arg-type]
    conn.send(QRPeek(b"q"))
    conn.receive_data(b"*2\r\n$2\r\nid\r\n$10001\r\n")
    with pytest.raises(RemoteProtocolError, match="max_reply_bytes"):
        conn.next_event()


def test_pipelined_replies_each_within_the_cap_pass() -> None:
    conn = ClientConnection(backend="python", max_reply_bytes=1000)
    body = b"z" * 900
    reply = b"*2\r\n$2\r\nid\r\n$900\r\n" + body + b"\r\n"
    for _ in range(20):
        conn.send(QRPeek(b"q"))
    conn.data_to_send()
    conn.receive_data(reply * 20)  # 20 replies in one chunk: far beyond the cap together
    for _ in range(20):
        event = conn.next_event()
        assert event is not NEED_DATA
    assert conn.next_event() is NEED_DATA


def test_read_time_left() -> None:
    assert read_time_left(10.0, None, 1e9) is None
    assert read_time_left(10.0, 5.0, 12.0) == 3.0
    assert read_time_left(10.0, 5.0, 12.0, blocking_s=30.0) == 33.0
    with pytest.raises(TimeoutError, match=r"from 1\.2\.3\.4:5 within 5 s"):
        read_time_left(10.0, 5.0, 15.0, source="1.2.3.4:5")


class DribblingOkqServer(MalformedServer):
    """Plays okq for one consumer: ``+OK`` to ``QREGISTER``, the queue's name to ``QNOTIFY``,
    and an event to ``QRPOP``; the reply to `dribble` (``b"QRPOP"`` or ``b"QNOTIFY"``) goes
    one byte every `interval_s`.  Records when the first connection started dribbling and
    when the client hung up on it."""

    def __init__(self, interval_s: float, dribble: bytes = b"QRPOP") -> None:
        super().__init__(b"", b"")
        self.interval_s = interval_s
        self.dribble = dribble
        self.dribble_started: float | None = None
        self.hung_up = threading.Event()
        self.hung_up_at: float | None = None

    def _one(self, sock: socket.socket) -> None:
        first = self.dribble_started is None
        with sock, contextlib.suppress(OSError):
            data = b""
            while self.dribble not in data:
                more = sock.recv(65536)
                if not more:
                    return
                data += more
                if b"QREGISTER" in more:
                    sock.sendall(b"+OK\r\n")
                if b"QNOTIFY" in more and self.dribble != b"QNOTIFY":
                    sock.sendall(b"$9\r\nslowqueue\r\n")
            if not first:
                return  # later connections: no answer; the test is over
            self.dribble_started = time.monotonic()
            if self.dribble == b"QNOTIFY":
                time.sleep(0.5)  # part of the wait, then the queue's name, slowly
                reply = b"$9\r\nslowqueue\r\n"
            else:
                reply = b"*2\r\n$2\r\nid\r\n$4\r\nbody\r\n"
            for i in range(len(reply)):
                sock.sendall(reply[i : i + 1])
                readable, _, _ = select.select([sock], [], [], self.interval_s)
                if readable and not sock.recv(65536):
                    break  # the client hung up
            else:
                sock.settimeout(30)
                while sock.recv(65536):
                    pass
        if first:
            self.hung_up_at = time.monotonic()
            self.hung_up.set()


@pytest.mark.parametrize(
    ("dribble", "budget_s"),
    [(b"QRPOP", READ_TIMEOUT_S), (b"QNOTIFY", 1 + NOTIFY_MARGIN_S + READ_TIMEOUT_S)],
)
def test_a_consumer_gives_up_on_a_dribbled_reply_within_its_budget(
    dribble: bytes, budget_s: float
) -> None:
    # QRPOP: the read timeout; QNOTIFY: its wait (1 s), the margin and the read timeout (the
    # budget every door's consumers take, `Consumer.reply_budget_s`).
    server = DribblingOkqServer(0.6, dribble)
    stop = threading.Event()
    got: list[object] = []
    try:
        with Client(server.address, read_timeout_s=READ_TIMEOUT_S, notify_timeout_s=1) as client:
            worker = threading.Thread(
                target=client.consume,
                args=(got.append, ["slowqueue"]),
                kwargs={"stop": stop},
                daemon=True,
            )
            worker.start()
            assert server.hung_up.wait(30)
            stop.set()
            worker.join(10)
            assert not worker.is_alive()
    finally:
        stop.set()
        server.close()
    assert server.dribble_started is not None
    assert server.hung_up_at is not None
    elapsed = server.hung_up_at - server.dribble_started
    assert elapsed < budget_s + MARGIN_S, elapsed
    assert got == []  # the dribbled event never reached the handler


# -- the async doors -------------------------------------------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_asyncio_a_dribbled_reply_times_out_within_the_read_timeout(loop: str) -> None:
    # The asyncio door used to restart its deadline at every chunk: 25 bytes at 0.6 s each
    # held it 15 s past a 1 s read timeout.
    async def main() -> float:
        async with okq_asyncio.Client(server.address, read_timeout_s=READ_TIMEOUT_S) as client:
            start = time.monotonic()
            with pytest.raises(TimeoutError):
                async with client.connection() as conn:  # no retry on a new connection
                    await conn.request(QRPeek(b"q"))
            elapsed = time.monotonic() - start
            assert not conn.usable
            assert client.idle_connections == 0
            server.healed.set()
            assert await client.peek_next("q") == Event("q", "id", b"body")
            return elapsed

    with scripted(DribblingServer(GOOD_PEEK, 0.6)) as server:
        elapsed = run_on_uvloop(main) if loop == "uvloop" else asyncio.run(main())
        assert READ_TIMEOUT_S * 0.9 <= elapsed < READ_TIMEOUT_S + MARGIN_S, elapsed
        assert server.reused == 0
        assert server.connections == 2


def test_asyncio_a_dribbled_pipelined_reply_gives_each_reply_one_budget() -> None:
    # Two replies, each dribbled over ~0.7 s: within a 1 s budget each (counted from the
    # previous reply), though the batch takes longer than one read timeout.
    two = GOOD_PEEK * 2

    async def main() -> None:
        async with okq_asyncio.Client(server.address, read_timeout_s=READ_TIMEOUT_S) as client:
            async with client.connection() as conn:
                replies = await conn.request_many([QRPeek(b"q"), QRPeek(b"q")])
            assert [r.result for r in replies] == [Event("q", "id", b"body")] * 2

    with scripted(DribblingServer(two, 0.7 / len(GOOD_PEEK))) as server:
        asyncio.run(main())


def test_async_doors_check_max_reply_bytes() -> None:
    async def main() -> None:
        for bad in (0, -1, "64", 1.5, True):
            with pytest.raises(LocalProtocolError, match="max_reply_bytes"):
                okq_asyncio.Client("127.0.0.1:1", max_reply_bytes=bad)  # type: ignore[arg-type]
        assert okq_asyncio.Client("127.0.0.1:1").max_reply_bytes == DEFAULT_MAX_REPLY_BYTES
        assert okq_asyncio.Client("127.0.0.1:1", max_reply_bytes=None).max_reply_bytes is None

    asyncio.run(main())

    async def trio_main() -> None:
        for bad in (0, "64", True):
            with pytest.raises(LocalProtocolError, match="max_reply_bytes"):
                async with okq_trio.open_client("127.0.0.1:1", max_reply_bytes=bad):  # type: ignore[arg-type]
                    pass
        async with okq_trio.open_client("127.0.0.1:1", max_reply_bytes=5) as client:
            assert client.max_reply_bytes == 5

    trio.run(trio_main)


def _sockopt(sock: Any) -> tuple[int, int | None]:
    """SO_KEEPALIVE and (Linux) TCP_KEEPIDLE of a connected socket."""
    idle = getattr(socket, "TCP_KEEPIDLE", None)
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        None if idle is None else sock.getsockopt(socket.IPPROTO_TCP, idle),
    )


EXPECTED_KEEPALIVE = (1, None if getattr(socket, "TCP_KEEPIDLE", None) is None else 60)


@pytest.mark.parametrize("door", ["sync", "asyncio", "uvloop", "trio"])
def test_every_door_turns_keepalive_on(door: str) -> None:
    with scripted(MalformedServer(b"", b"")) as server:
        if door == "sync":
            with Client(server.address) as client, client.connection() as conn:
                assert _sockopt(conn.stream.sock) == EXPECTED_KEEPALIVE  # type: ignore[attr-defined]
            return

        async def asyncio_main() -> tuple[int, int | None]:
            async with (
                okq_asyncio.Client(server.address) as client,
                client.connection() as conn,
            ):
                transport = conn._stream._transport  # type: ignore[attr-defined]
                return _sockopt(transport.get_extra_info("socket"))

        async def trio_main() -> tuple[int, int | None]:
            async with okq_trio.open_client(server.address) as client, client.connection() as conn:
                return _sockopt(conn._stream._stream.socket)  # type: ignore[attr-defined]

        if door == "trio":
            assert trio.run(trio_main) == EXPECTED_KEEPALIVE
        elif door == "uvloop":
            assert run_on_uvloop(asyncio_main) == EXPECTED_KEEPALIVE
        else:
            assert asyncio.run(asyncio_main()) == EXPECTED_KEEPALIVE


# -- replies nobody asked for ------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["python", "auto"])
def test_a_reply_nobody_asked_for_breaks_the_machine(backend: str) -> None:
    good = b"*2\r\n$2\r\nid\r\n$4\r\nbody\r\n"
    for extra, unsolicited in [(b"", False), (b":1\r\n", True), (b"*2\r\n$2", True), (b"?", True)]:
        conn = ClientConnection(backend=backend)  # type: ignore[arg-type]
        conn.send(QRPeek(b"q"))
        assert not conn.has_unsolicited()  # a command in flight: nothing is unsolicited
        conn.receive_data(good + extra)
        event = conn.next_event()
        assert event is not NEED_DATA
        assert event.result == Event("q", "id", b"body")  # type: ignore[union-attr]
        assert conn.has_unsolicited() is unsolicited, extra
        assert (conn.state is ConnectionState.BROKEN) is unsolicited
        assert not conn.has_unsolicited()  # once broken, nothing changes


def test_readable_now() -> None:
    a, b = socket.socketpair()
    with a, b:
        assert not readable_now(a.fileno())
        b.sendall(b"x")
        deadline = time.monotonic() + 5
        while not readable_now(a.fileno()):  # bounded: the byte is on its way
            assert time.monotonic() < deadline
            time.sleep(0.001)
        a.recv(1)
        assert not readable_now(a.fileno())
        b.shutdown(socket.SHUT_WR)  # an end of file is readable too
        deadline = time.monotonic() + 5
        while not readable_now(a.fileno()):
            assert time.monotonic() < deadline
            time.sleep(0.001)


class _Errors(Hooks):
    """Records the errors consumers survive (each failed connection reports one)."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []

    def error(self, error: BaseException) -> None:
        self.errors.append(error)


@pytest.mark.parametrize("door", ["asyncio", "trio"])
def test_async_consumers_keep_the_clients_reply_cap(door: str) -> None:
    """A consumer's connection buffers no more of one reply than its client's
    ``max_reply_bytes``: an event larger than that is refused (its connection fails with a
    typed error naming the cap) and never reaches the handler; smaller ones are consumed."""
    server = ThreadedServer("127.0.0.1", 0, seed=0).start()
    try:
        with Client(server.address) as pusher:
            pusher.push("capped", b"small")
            pusher.push("capped", b"x" * 8192)
        hooks = _Errors()
        seen: list[bytes] = []

        def handler(delivery: Delivery) -> bool:
            seen.append(delivery.contents)
            return True

        if door == "asyncio":

            async def main_asyncio() -> None:
                stop = asyncio.Event()
                async with okq_asyncio.Client(
                    server.address, max_reply_bytes=1024, hooks=hooks
                ) as client:
                    task = asyncio.ensure_future(
                        client.consume(handler, ["capped"], expire_seconds=30, stop=stop)
                    )
                    for _ in range(100):
                        if hooks.errors and seen:
                            break
                        await asyncio.sleep(0.05)
                    stop.set()
                    await asyncio.wait_for(task, 10)

            asyncio.run(main_asyncio())
        else:

            async def main_trio() -> None:
                stop = trio.Event()
                async with (
                    okq_trio.open_client(
                        server.address, max_reply_bytes=1024, hooks=hooks
                    ) as client,
                    trio.open_nursery() as nursery,
                ):
                    nursery.start_soon(
                        functools.partial(
                            client.consume, handler, ["capped"], expire_seconds=30, stop=stop
                        )
                    )
                    for _ in range(100):
                        if hooks.errors and seen:
                            break
                        await trio.sleep(0.05)
                    stop.set()

            trio.run(main_trio)
        assert seen == [b"small"]
        assert any(
            isinstance(e, RemoteProtocolError) and "max_reply_bytes" in str(e) for e in hooks.errors
        ), hooks.errors
    finally:
        server.stop()
