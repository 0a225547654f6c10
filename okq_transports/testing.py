"""A socket-free okq server for unit tests: `FakeServer`, the fakeredis of okq.

Owns: `FakeServer` (okq's queues in memory, answered in the calling thread, on a clock the
test moves) and the in-memory streams its clients talk through.
Must not know: okq's rules.  Requests are framed by `okq_proto.server.ServerConnection`,
meant by `okq_proto.server.Dispatcher` and carried out by the embedded server's own storage
code (`MemoryStorage` over `QueueEngine`, through ``run_op``), so a request gets the reply
bytes the embedded server sends over TCP.  The client is the real
`okq_transports.sync.Client`, with its connections made here instead of by a socket.

::

    from okq_transports.testing import FakeServer

    fake = FakeServer()
    with fake.client() as client:
        client.push("jobs", b"hello")
        event = fake.pop("jobs")
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

from okq_proto import (
    DEFAULT_EXPIRE_S,
    NEED_DATA,
    ClientConnection,
    ConnectionClosed,
    DecoderBackend,
    Event,
    QAck,
    QRPop,
    to_wire,
)
from okq_proto import (
    TimeoutError as OkqTimeoutError,
)
from okq_proto.server import (
    DEFAULT_SWEEP_INTERVAL_S,
    ERR_SERVER_SIDE,
    Action,
    CloseWithoutReply,
    Dispatcher,
    PeerClosed,
    Reply,
    RunInBackground,
    RunOp,
    ServerConnection,
    WaitForNotify,
    encode_event,
)

from ._sync.streams import Feedable
from .server._embedded import run_op
from .server._storage import MemoryStorage, StorageError
from .sync import Client

__all__ = ["FakeServer"]

T = TypeVar("T")

_NIL: Final = encode_event(None)
#: The address a fake's clients show in messages and reprs (nothing listens there).
FAKE_ADDRESS: Final = ("fake", 4777)


def _at_once(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never waits (the memory storage's) to its end, here and now."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("the fake's storage tried to wait")


class FakeServer:
    """okq's queues in one process, with no sockets, no threads and no real clock.

    Every request is answered at once in the calling thread, with the bytes the embedded server
    would send.  Time is the fake's own: `now` starts at 0 and only `advance` moves it (running
    the restore sweep on the way).  A ``QNOTIFY`` answers at once with the first registered
    queue that has work; when none has, it waits (real time) for a push from another thread,
    at most ``max_notify_wait_s``, then answers nil as okq does when its timeout passes.  So
    consumers in threads work against a fake too, and see their ``stop`` that often.

    Args:
        sweep_interval_s: restore sweep period (okq: 10 s) in the fake's time.
        default_expire_s: claim duration of a ``QRPOP`` without ``EX``.
        seed: seeds the order in which ``QNOTIFY`` checks queues and the connection ids.
        max_notify_wait_s: the longest a ``QNOTIFY`` waits, whatever its timeout.

    Thread-safe: clients of one fake may be used from several threads.
    """

    def __init__(
        self,
        *,
        sweep_interval_s: float = DEFAULT_SWEEP_INTERVAL_S,
        default_expire_s: int = DEFAULT_EXPIRE_S,
        seed: int | None = 0,
        max_notify_wait_s: float = 0.1,
    ) -> None:
        self.max_notify_wait_s = max_notify_wait_s
        self._now = 0.0
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)  # a push wakes a waiting QNOTIFY
        self._woken: set[str] = set()
        self._rng = random.Random(seed)
        self.storage = MemoryStorage(
            sweep_interval_s=sweep_interval_s,
            default_expire_s=default_expire_s,
            clock=lambda: self._now,
        )
        """The queues (a `MemoryStorage`; its ``engine`` is the pure `QueueEngine`)."""
        self.dispatcher = Dispatcher(rng=random.Random(seed))
        """The pure command layer."""
        self.storage.subscribe(self._on_publish)
        self._connections: set[_FakeConnection] = set()
        self._client: Client | None = None

    def __repr__(self) -> str:
        return f"<FakeServer now={self._now:g} s, {len(self._connections)} connection(s)>"

    # -- time ---------------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """The fake's clock, in seconds (starts at 0)."""
        return self._now

    def advance(self, seconds: float) -> int:
        """Move the clock forward, running every restore sweep that falls due on the way;
        returns how many events the sweeps put back.

        Raises:
            ValueError: for a negative or non-finite ``seconds``.
        """
        if not 0 <= seconds < float("inf"):
            raise ValueError(f"advance() needs a finite number of seconds >= 0, not {seconds!r}")
        with self._lock:
            target = self._now + seconds
            engine = self.storage.engine
            moved = 0
            while engine.next_deadline() <= target:  # bounded: each sweep moves the deadline on
                self._now = max(self._now, engine.next_deadline())
                moved += engine.handle_timeout(self._now)
            self._now = target
            return moved

    # -- clients ------------------------------------------------------------------------------

    def client(self, **options: Any) -> Client:
        """A real sync `Client` whose connections go into this fake; ``options`` are the
        Client's (``pool_size``, ``retries``, ``hooks``, ``id_factory``...)."""
        return Client(FAKE_ADDRESS, connect=self._connect, **options)

    def pop(self, queue: str | bytes, expire_s: int = DEFAULT_EXPIRE_S) -> Event | None:
        """Claim the next event of ``queue`` for ``expire_s`` seconds (``QRPOP``), or None."""
        return self._own_client().execute(QRPop(to_wire(queue), expire_s))

    def ack(self, event: Event) -> bool:
        """Acknowledge a claimed event (``QACK``); False if it was no longer claimed."""
        return self._own_client().execute(QAck(to_wire(event.queue), to_wire(event.id))) == 1

    @property
    def connection_count(self) -> int:
        """Open client connections."""
        return len(self._connections)

    def close(self) -> None:
        """Close the fake's own client (the one behind `pop` and `ack`)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _own_client(self) -> Client:
        if self._client is None:
            self._client = self.client()
        return self._client

    # -- the server side ----------------------------------------------------------------------

    def _connect(self, address: tuple[str, int]) -> _FakeConnection:
        with self._lock:
            consumer = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
            conn = _FakeConnection(self, consumer)
            self._connections.add(conn)
            return conn

    def _on_publish(self, queue: bytes) -> None:
        woken = self.dispatcher.hub.publish(queue)
        if woken:
            self._woken.update(woken)
            self._wake.notify_all()

    def _serve(self, conn: _FakeConnection, data: bytes) -> None:
        """Frame, mean and carry out what a client sent; queue the replies for it."""
        with self._lock:
            machine = conn.server
            machine.receive_data(data)
            while True:  # bounded: each round consumes one request of ``data``
                event = machine.next_event()
                if isinstance(event, (CloseWithoutReply, PeerClosed)):
                    conn.replies += machine.data_to_send()
                    self._closed(conn)
                    return
                if event is NEED_DATA:
                    break
                action = self.dispatcher.handle(conn.consumer, event)
                machine.send_reply(self._carry_out(conn.consumer, action))
                conn.replies += machine.data_to_send()

    def _carry_out(self, consumer: str, action: Action) -> bytes:
        if isinstance(action, Reply):
            return action.data
        if isinstance(action, RunOp):
            try:
                return _at_once(run_op(self.storage, consumer, action.op))
            except StorageError:  # a too-large EX: okq's server-side error, the event claimed
                return ERR_SERVER_SIDE
        if isinstance(action, RunInBackground):
            try:  # NOBLOCK: stored right after its +OK, which is what a client can observe
                _at_once(run_op(self.storage, consumer, action.op))
            finally:
                self.dispatcher.background_done()
            return action.reply
        if isinstance(action, WaitForNotify):
            found = _at_once(self.storage.first_with_unclaimed(action.queues))
            reply = action.after_check(found)
            if reply is not None:
                return reply
            return self._wait_for_push(consumer, min(action.wait_s, self.max_notify_wait_s))
        raise AssertionError(f"unknown action {action!r}")  # pragma: no cover

    def _wait_for_push(self, consumer: str, wait_s: float) -> bytes:
        """A QNOTIFY that found nothing: wait (real time, the lock released) for a push from
        another thread to one of its queues, at most ``wait_s``."""
        hub = self.dispatcher.hub
        self._woken.discard(consumer)
        if not hub.start_wait(consumer):
            deadline = time.monotonic() + wait_s
            while consumer not in self._woken:  # bounded by the deadline
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(left)
        self._woken.discard(consumer)
        return hub.end_wait(consumer)

    def _closed(self, conn: _FakeConnection) -> None:
        with self._lock:
            if conn.closed:
                return
            conn.closed = True
            self._connections.discard(conn)
            op = self.dispatcher.connection_closed(conn.consumer)
            _at_once(self.storage.register(conn.consumer, op.queues))


class _FakeConnection:
    """One client connection into a `FakeServer`: the `SyncStream` the client reads."""

    def __init__(self, fake: FakeServer, consumer: str) -> None:
        self.fake = fake
        self.consumer = consumer
        self.server = ServerConnection()
        self.replies = bytearray()
        self.closed = False
        self._client_closed = False

    def new_machine(self, decoder: DecoderBackend, max_reply_bytes: int | None) -> ClientConnection:
        return ClientConnection(backend=decoder, max_reply_bytes=max_reply_bytes)

    def send_all(self, data: bytes) -> None:
        if self._client_closed or self.closed:
            raise ConnectionClosed("the fake server closed this connection")
        self.fake._serve(self, bytes(data))

    def fill(self, machine: Feedable, timeout_s: float | None) -> None:
        if self.replies:
            data, self.replies = bytes(self.replies), bytearray()
            machine.receive_data(data)
        elif self.closed:
            machine.receive_eof()
        else:  # a socket would wait for bytes that never come
            raise OkqTimeoutError("the fake server has nothing to send (no request waits)")

    def has_unread(self) -> bool:
        return bool(self.replies) or self.closed

    def close(self) -> None:
        if not self._client_closed:
            self._client_closed = True
            self.fake._closed(self)

    def now(self) -> float:
        return self.fake.now
