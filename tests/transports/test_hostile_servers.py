"""Hostile servers, written once as scripts and run against every front door.

Each `Hostile` script answers the first request of the first connection badly: garbage, a
reply cut off by a close, silence, a reply after the read timeout, an unsolicited extra
reply, the wrong type or shape for ``QRPOP``, an endless line, an endless bulk string, a
reply dribbled a byte at a time.  Every later request (on any connection) gets a good
reply of its own.  Each door must then:

* fail with a typed okq error (a subclass of `okq_proto.OkqError`) within the read timeout
  plus a margin; trio has no read timeout, so there the caller's ``trio.fail_after`` ends
  the call, and only bytes (never time) give it an okq error of its own;
* never send a request on the hostile connection again (the server counts any);
* give the next request on the same client its own reply, never the hostile one's;
* buffer at most about ``max_reply_bytes`` of an endless reply (tracemalloc's peak).

The redis-py adapters parse with redis-py, not with okq's decoder, so redis-py's limits are
theirs (docs/redis-py.md): no reply byte cap at all, and for the sync pool a
``socket_timeout`` that bounds each read rather than a whole reply.  The scripts bound what
they send (bytes and time), so those doors still end with a typed error; the test checks
what redis-py actually gives, and says so where it differs.

Every scripted server listens on 127.0.0.1 port 0, every loop in it is bounded in count and
time, and its threads are joined when the test ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import socket
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import trio

import okq_proto
from okq_proto import Event, OkqError, QRPop, RemoteProtocolError

from .scenarios import Harness
from .test_scenarios import TRANSPORTS, client_kind, harness_for, run_asyncio

pytestmark = pytest.mark.timeout(60)

READ_TIMEOUT_S = 1.0
#: Generous: two cores are shared with other test runs.
MARGIN_S = 2.5
#: The ``max_reply_bytes`` every door that has it gets here.
CAP = 1024 * 1024
#: What an endless script sends at most: far beyond `CAP`, so an uncapped door shows.
ENDLESS_BYTES = 32 * 1024 * 1024
#: A door may hold the cap, a read or two and the decoder's own copy at its peak.
PEAK_LIMIT = 8 * 1024 * 1024
#: A scripted server's connection gives up after this long (bounds every loop in it).
SCRIPT_LIMIT_S = 15.0
#: Slowloris: one byte every this many seconds, for at most `DRIBBLE_BYTES` bytes.
DRIBBLE_INTERVAL_S = 0.5
DRIBBLE_BYTES = 8

QUEUE = "q"
POP = QRPop(b"q", 30)
#: The one good reply of a connection that is not hostile, and what the client must read.
GOOD_REPLY = b"*2\r\n$4\r\nmine\r\n$4\r\ngood\r\n"
GOOD_EVENT = Event(QUEUE, "mine", b"good")
#: A well-formed reply the hostile connection sends where none may be read.
HOSTILE_REPLY = b"*2\r\n$4\r\nlate\r\n$6\r\nhostil\r\n"
HOSTILE_EVENT = Event(QUEUE, "late", b"hostil")


class Conn:
    """One accepted connection, as a script sees it: bounded sends and sleeps."""

    def __init__(self, sock: socket.socket, stop: threading.Event) -> None:
        self.sock = sock
        self.stop = stop
        self.deadline = time.monotonic() + SCRIPT_LIMIT_S

    def alive(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.deadline

    def send(self, data: bytes) -> bool:
        """Send `data`; False once the peer is gone or the test is over."""
        view = memoryview(data)
        while view and self.alive():
            try:
                n = self.sock.send(view)
            except TimeoutError:
                continue  # the peer is not reading: check the stop and the deadline
            except OSError:
                return False
            view = view[n:]
        return not view

    def sleep(self, seconds: float) -> bool:
        """Wait `seconds` (less if the test ends); False if it ended."""
        return not self.stop.wait(seconds) and self.alive()


Script = Callable[[Conn], None]


class HostileServer:
    """Loopback server: the first request of the first connection goes to `script`; every
    other request gets `GOOD_REPLY`.  `reused` counts requests that came on the hostile
    connection after its script ran (a broken connection used again)."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.stop = threading.Event()
        self.connections = 0
        self.requests = 0
        self.reused = 0
        self.script_ran = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        deadline = time.monotonic() + 2 * SCRIPT_LIMIT_S
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(
                target=self._serve, args=(sock, self.connections == 1), daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, hostile: bool) -> None:
        with sock, contextlib.suppress(OSError):
            sock.settimeout(0.05)
            conn = Conn(sock, self.stop)
            scripted = False
            while conn.alive():
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                self.requests += 1
                if hostile and not scripted:
                    scripted = True
                    self.script(conn)
                    self.script_ran.set()
                    continue
                if hostile:
                    self.reused += 1
                conn.send(GOOD_REPLY)

    def close(self) -> None:
        self.stop.set()
        self._listener.close()
        self._accepter.join(5)
        for thread in self._threads:
            thread.join(5)
        assert not self._accepter.is_alive()
        assert not any(thread.is_alive() for thread in self._threads), "a script hung"


# -- the scripts ------------------------------------------------------------------------------


def garbage(conn: Conn) -> None:
    conn.send(b"\x00\xff\x13garbage that is no RESP2\r\n")


def partial_then_close(conn: Conn) -> None:
    conn.send(GOOD_REPLY[:15])
    conn.sock.shutdown(socket.SHUT_RDWR)


def silence(conn: Conn) -> None:
    conn.sleep(READ_TIMEOUT_S + MARGIN_S + 1)


def reply_after_timeout(conn: Conn) -> None:
    if conn.sleep(READ_TIMEOUT_S + 0.5):
        conn.send(HOSTILE_REPLY)


def extra_reply(conn: Conn) -> None:
    conn.send(GOOD_REPLY + HOSTILE_REPLY)  # one answer too many, in the same write


def extra_reply_later(conn: Conn) -> None:
    if conn.send(GOOD_REPLY) and conn.sleep(0.2):  # lands while the connection is idle
        conn.send(HOSTILE_REPLY)


def integer_for_pop(conn: Conn) -> None:
    conn.send(b":1\r\n")


def three_for_pop(conn: Conn) -> None:
    conn.send(b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n")


def nested_for_pop(conn: Conn) -> None:
    conn.send(b"*2\r\n*1\r\n:1\r\n$1\r\nb\r\n")


def _endless(conn: Conn, head: bytes, chunk: bytes) -> None:
    sent = 0
    if not conn.send(head):
        return
    while sent < ENDLESS_BYTES and conn.send(chunk):
        sent += len(chunk)
    conn.sleep(READ_TIMEOUT_S + MARGIN_S)  # then silence, till the peer hangs up


def endless_line(conn: Conn) -> None:
    _endless(conn, b"+", b"x" * 65536)


def endless_bulk(conn: Conn) -> None:
    _endless(conn, b"$536870000\r\n", b"x" * 65536)


def endless_array(conn: Conn) -> None:
    # Every element within every limit: only the bytes of the one reply give it away.
    _endless(conn, b"*16000000\r\n", b"$65530\r\n" + b"x" * 65530 + b"\r\n")


def slowloris(conn: Conn) -> None:
    for i in range(DRIBBLE_BYTES):  # every read gets a byte well within the timeout
        if not (conn.send(GOOD_REPLY[i : i + 1]) and conn.sleep(DRIBBLE_INTERVAL_S)):
            return
    conn.sock.shutdown(socket.SHUT_RDWR)  # the script's bound: then it closes


@dataclasses.dataclass(frozen=True)
class Hostile:
    """One hostile behaviour and what a door must make of it.

    Attributes:
        script: what the server does with the first request.
        error: the okq error the request raises (None: the request succeeds, and its
            connection must be dropped all the same).
        timed: only time gives it away (trio: the caller's scope ends it).
        endless: memory is checked (tracemalloc's peak).
        redis_error: what the redis-py adapters raise instead, where redis-py's parser
            differs (an okq error type; None: as `error`).
        redis_slow: the sync redis-py pool only ends it when the script ends (redis-py's
            ``socket_timeout`` bounds each read, not the reply), with `redis_sync_error`.
    """

    script: Script
    error: type[OkqError] | None
    timed: bool = False
    endless: bool = False
    redis_error: type[OkqError] | None = None
    redis_slow: bool = False
    redis_sync_error: type[OkqError] | None = None

    @property
    def name(self) -> str:
        return self.script.__name__


HOSTILES = [
    Hostile(garbage, RemoteProtocolError),
    Hostile(partial_then_close, okq_proto.ConnectionClosed),
    Hostile(silence, okq_proto.TimeoutError, timed=True),
    Hostile(reply_after_timeout, okq_proto.TimeoutError, timed=True),
    Hostile(extra_reply, None),
    Hostile(extra_reply_later, None),
    Hostile(integer_for_pop, RemoteProtocolError),
    Hostile(three_for_pop, RemoteProtocolError),
    Hostile(nested_for_pop, RemoteProtocolError),
    Hostile(endless_line, RemoteProtocolError, endless=True, redis_error=okq_proto.TimeoutError),
    Hostile(endless_bulk, RemoteProtocolError, endless=True, redis_error=okq_proto.TimeoutError),
    Hostile(endless_array, RemoteProtocolError, endless=True, redis_error=okq_proto.TimeoutError),
    Hostile(
        slowloris,
        okq_proto.TimeoutError,
        timed=True,
        redis_slow=True,
        redis_sync_error=okq_proto.ConnectionClosed,
    ),
]


# -- running one script against one door -------------------------------------------------------


@contextlib.asynccontextmanager
async def door(kind: str, address: str) -> AsyncIterator[Harness]:
    """A `Harness` over a new client of `kind` with a read timeout, a pool of one and, where
    the door has it, a reply byte cap."""
    options: dict[str, Any] = {"read_timeout_s": READ_TIMEOUT_S}
    if not client_kind(kind).startswith("redis"):
        options.update(pool_size=1, max_reply_bytes=CAP)
    async with harness_for(kind, None, address, **options) as h:
        yield h


async def pop(h: Harness) -> Any:
    """One ``QRPOP`` (never retried by any door), bounded as the door bounds it: trio by the
    caller's scope, the others by their read timeout (and a safety net far above it)."""
    if h.name == "trio":
        with trio.fail_after(READ_TIMEOUT_S):
            return await h.call("execute", POP)
    return await asyncio.wait_for(h.call("execute", POP), READ_TIMEOUT_S + 4 * MARGIN_S)


@contextlib.contextmanager
def peak_memory(measure: bool) -> Iterator[list[int]]:
    """Yields a list that holds tracemalloc's peak (bytes) once the block ends."""
    peak: list[int] = []
    if not measure:
        yield peak
        return
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


async def face(h: Harness, hostile: Hostile, server: HostileServer, kind: str) -> None:
    redis_door = client_kind(kind).startswith("redis")
    expected = hostile.redis_error if redis_door and hostile.redis_error else hostile.error
    bound_s = READ_TIMEOUT_S + MARGIN_S
    if hostile.redis_slow and kind == "redis-sync":  # redis-py: a timeout for each read
        expected = hostile.redis_sync_error
        bound_s = DRIBBLE_BYTES * DRIBBLE_INTERVAL_S + MARGIN_S
    started = time.monotonic()
    outcome: BaseException | Any
    with peak_memory(hostile.endless and not redis_door) as peak:
        try:
            outcome = await pop(h)
        except BaseException as exc:  # judged below
            outcome = exc
    elapsed = time.monotonic() - started
    assert elapsed < bound_s, f"{hostile.name}: {elapsed:.2f} s (bound {bound_s:.1f} s)"

    if expected is None:
        assert outcome == GOOD_EVENT, f"{hostile.name}: {outcome!r}"
    elif h.name == "trio" and hostile.timed:
        assert isinstance(outcome, trio.TooSlowError), f"{hostile.name}: {outcome!r}"
        assert elapsed >= READ_TIMEOUT_S * 0.9
    else:
        assert isinstance(outcome, expected), f"{hostile.name}: {outcome!r}"
        assert getattr(okq_proto, type(outcome).__name__, None) is type(outcome), repr(outcome)
        if hostile.timed and not redis_door:
            assert elapsed >= READ_TIMEOUT_S * 0.9, f"{hostile.name}: {elapsed:.2f} s"
        if hostile.endless and not redis_door:  # the cap (a line has a shorter limit)
            assert re.search("max_reply_bytes|max_line_length", str(outcome)), repr(outcome)
    if peak:
        assert peak[0] < PEAK_LIMIT, f"{hostile.name}: peak {peak[0]} bytes"
    if expected is not None:
        assert h.idle_connections() in (0, None), "a broken connection went back to the pool"

    if hostile.name == "extra_reply_later":
        assert await h.run_sync(lambda: server.script_ran.wait(5))
        await h.sleep(0.3)  # the extra reply is now in the idle connection's buffers
    # The next request gets its own reply, on a new connection.
    assert await pop(h) == GOOD_EVENT, hostile.name
    assert await pop(h) == GOOD_EVENT, hostile.name
    assert server.reused == 0, f"{hostile.name}: the hostile connection was used again"
    assert server.connections == 2, f"{hostile.name}: {server.connections} connections"


def run(kind: str, hostile: Hostile) -> None:
    server = HostileServer(hostile.script)
    try:

        async def main() -> None:
            async with door(kind, server.address) as h:
                await face(h, hostile, server, kind)

        if kind == "trio":

            async def trio_main() -> None:
                with trio.fail_after(30):
                    await main()

            trio.run(trio_main)
        else:

            async def asyncio_main() -> None:
                await asyncio.wait_for(main(), 30)

            run_asyncio(kind, asyncio_main)
    finally:
        server.close()


@pytest.mark.parametrize(
    ("hostile", "kind"),
    [
        pytest.param(hostile, kind, id=f"{hostile.name}-{kind}")
        for hostile in HOSTILES
        for kind in TRANSPORTS
    ],
)
def test_hostile_server(hostile: Hostile, kind: str) -> None:
    run(kind, hostile)
