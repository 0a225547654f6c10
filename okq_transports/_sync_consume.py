"""The sync consumer driver: one `okq_proto.Consumer` per connection, handlers, reconnects.

Owns: running the handler and turning its verdict into ``Consumer.handled``, waiting in
``QNOTIFY`` while watching a stop flag, reconnecting with `okq_proto.Backoff` after a failure
(and logging what was left claimed), consumer threads, hooks and log records of consumers.
Must not know: okq's wire rules, or how bytes reach the server.  What to send next, drain,
pipelining, stop and failure reports are decisions of the machine; a `Link` moves the bytes
(`StreamLink`: a `SyncStream` of the blocking driver, over a socket or a borrowed redis-py
connection), and this module moves time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from okq_proto import (
    CONNECTION_FAILURES,
    NEED_DATA,
    AckSettled,
    Backoff,
    ClientConnection,
    ConnectError,
    Consumer,
    ConsumerStopped,
    Delivered,
    Delivery,
    Hooks,
    LateAck,
    OkqError,
    ReplyError,
    TimeoutError,
    check_consume_options,
    is_transient,
    read_time_left,
)

from ._observe import call_hook, handler_failed, late_ack, lost, reconnecting, where
from ._sync.client import SyncClientCore, SyncConnectionSource
from ._sync.streams import SyncStream

__all__ = [
    "AnyStop",
    "ConsumerSettings",
    "Handler",
    "Link",
    "LinkSource",
    "PoolLinks",
    "StopFlag",
    "StreamLink",
    "consume_forever",
    "consume_from",
    "run_consumers",
]

#: A consumer's handler: returns true to ack the event; false or an exception: no ack.
Handler = Callable[[Delivery], bool]

STOP_POLL_S: Final = 0.1  # how often a consumer waiting in QNOTIFY looks at its stop flag


class StopFlag(Protocol):
    """What `Client.consume` needs of its ``stop``: a `threading.Event` fits."""

    def is_set(self) -> bool:
        """True once stopping was asked for."""
        ...

    def set(self) -> None:
        """Ask for a stop."""
        ...

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until set or `timeout`; return `is_set()`."""
        ...


class Link(Protocol):
    """One consumer's connection, as `consume_forever` drives it: a `SyncConnection`, or a
    borrowed redis-py connection that feeds replies redis-py parsed (``okq_transports.redis``).

    Every method but `close` raises okq's `TransportError` (or `RemoteProtocolError`) when the
    connection fails; the link is then closed, never reused.
    """

    @property
    def conn(self) -> ClientConnection:
        """The connection machine the `Consumer` wraps (what `fill` feeds)."""
        ...

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, for messages and log fields."""
        ...

    def set_read_timeout(self, seconds: float | None) -> None:
        """Let the next `fill` wait at most `seconds` (None: forever)."""
        ...

    def flush(self, data: bytes) -> None:
        """Send all of `data`."""
        ...

    def fill(self) -> None:
        """Read once (within the read timeout) and feed `conn`."""
        ...

    def fill_by(self, deadline: float) -> bool:
        """Read once, waiting until `deadline` (monotonic) at most.  False if nothing came."""
        ...

    def close(self) -> None:
        """Close the link (a reply it may still owe reaches nobody)."""
        ...


class LinkSource(Protocol):
    """Where consumers get their links: the sync client's `Pool`, or a redis-py pool."""

    @property
    def preferred_address(self) -> tuple[str, int]:
        """The address a new link goes to first (for messages and hooks)."""
        ...

    def connect_any(self, read_timeout_s: float | None) -> Link:
        """Open a link for one consumer.

        Raises:
            ConnectError: no address accepted the connection.
            TimeoutError: connecting took too long.
        """
        ...


class AnyStop:
    """A stop flag set by the user's flag or by a sibling consumer that failed."""

    def __init__(self, outer: StopFlag) -> None:
        self._outer = outer
        self._inner = threading.Event()

    def is_set(self) -> bool:
        """True when either flag is set."""
        return self._inner.is_set() or self._outer.is_set()

    def set(self) -> None:
        """Set the inner flag (the user's flag is left alone)."""
        self._inner.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for either flag (polling the user's, which may not be an Event)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = (
                STOP_POLL_S if deadline is None else min(STOP_POLL_S, deadline - time.monotonic())
            )
            if left <= 0:
                return False
            self._inner.wait(left)
        return True


class StreamLink:
    """A `Link` over a `SyncStream` (a consumer's own connection from its client's pool)."""

    __slots__ = ("_timeout_s", "address", "conn", "stream")

    def __init__(
        self, stream: SyncStream, address: tuple[str, int], max_reply_bytes: int | None
    ) -> None:
        self.stream = stream
        self.address = address
        self.conn = stream.new_machine("auto", max_reply_bytes)
        self._timeout_s: float | None = None

    def set_read_timeout(self, seconds: float | None) -> None:
        self._timeout_s = seconds

    def flush(self, data: bytes) -> None:
        self.stream.send_all(data)

    def fill(self) -> None:
        self.stream.fill(self.conn, self._timeout_s)

    def fill_by(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            self.stream.fill(self.conn, remaining)
        except TimeoutError:
            return False  # nothing came in time (nothing was read)
        return True

    def close(self) -> None:
        self.stream.close()


class PoolLinks:
    """The `LinkSource` of a client's pool: each consumer opens a stream of its own
    (failing over along the addresses, or borrowing from a redis-py pool)."""

    __slots__ = ("_pool",)

    def __init__(self, pool: SyncConnectionSource) -> None:
        self._pool = pool

    @property
    def preferred_address(self) -> tuple[str, int]:
        return self._pool.preferred_address

    def connect_any(self, read_timeout_s: float | None) -> StreamLink:
        stream, address = self._pool.open_stream()
        return StreamLink(stream, address, self._pool.max_reply_bytes)


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    """What every consumer of one `consume` call shares.

    ``read_timeout_s`` is how long a whole reply may take (None: ``okq_proto.REPLY_TIMEOUT_S``, as a
    consumer never reads without a deadline), however its bytes trickle in; a ``QNOTIFY``
    reply may take that long past its wait.  A link that times its reads itself (redis-py's
    ``socket_timeout``) ignores it but for that bound on the wait.
    ``hooks`` is None when no hook is overridden (see `active_hooks`).
    """

    links: LinkSource
    handler: Handler
    queues: list[str]
    expire_s: int
    notify_timeout_s: int
    read_timeout_s: float | None
    hooks: Hooks | None


def run_consumers(
    settings: ConsumerSettings,
    stop: StopFlag,
    backoff: Callable[[], Backoff],
    concurrency: int,
) -> None:
    """Run `concurrency` consumers (threads; the calling thread waits) until `stop` is set.

    A consumer that fails for good stops its siblings (not the caller's `stop`) and its error
    is raised once all have ended; so is a KeyboardInterrupt of the calling thread.
    """
    if concurrency == 1:
        consume_forever(settings, stop, backoff())
        return
    failures: list[BaseException] = []
    halt = AnyStop(stop)

    def run() -> None:
        try:
            consume_forever(settings, halt, backoff())
        except BaseException as exc:
            failures.append(exc)
            halt.set()

    threads = [
        threading.Thread(target=run, name=f"okq-consumer-{i}", daemon=True)
        for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except BaseException:
        halt.set()
        for thread in threads:
            thread.join()
        raise
    if failures:
        raise failures[0]


def consume_forever(settings: ConsumerSettings, stop: StopFlag, backoff: Backoff) -> None:
    """Run one consumer until `stop` is set, reconnecting after failures.

    Raises:
        ReplyError: the server refused a consumer command (other than a server-side error).
        LocalProtocolError: a bug or misuse; BaseException from the handler (KeyboardInterrupt).
    """
    while not stop.is_set():
        try:
            connection = settings.links.connect_any(settings.read_timeout_s)
        except (ConnectError, TimeoutError) as exc:
            _pause(settings, stop, backoff, exc)
            continue
        consumer = Consumer(
            settings.queues,
            expire_s=settings.expire_s,
            notify_timeout_s=settings.notify_timeout_s,
            connection=connection.conn,
            report_acks=settings.hooks is not None,  # AckSettled only matters to the hook
        )
        try:
            _run(settings, connection, consumer, stop, backoff)
            return
        except (*CONNECTION_FAILURES, ReplyError) as exc:
            if not is_transient(exc):
                raise
            lost(consumer.unacked, consumer.pop_in_flight, connection.address, exc)
            _pause(settings, stop, backoff, exc)
        finally:
            connection.close()


def _pause(settings: ConsumerSettings, stop: StopFlag, backoff: Backoff, exc: OkqError) -> None:
    delay = backoff.next_delay()
    reconnecting(settings.hooks, settings.links.preferred_address, exc, backoff.attempt, delay)
    stop.wait(delay)


def _run(
    settings: ConsumerSettings,
    connection: Link,
    consumer: Consumer,
    stop: StopFlag,
    backoff: Backoff,
) -> None:
    """Drive one consumer machine over one connection until it stops or fails."""
    hooks, handler = settings.hooks, settings.handler
    # A consumer never reads without a deadline (`Consumer.reply_budget_s`), even when the
    # client has no read timeout.
    read_timeout = settings.read_timeout_s
    monotonic = time.monotonic
    registered = False
    conn = consumer.connection
    # One read budget per reply awaited (the read timeout, plus a QNOTIFY's wait), however
    # its bytes trickle in: it starts when a new reply is awaited (after an event, or once
    # the machine read a reply and sent again by itself), and each read waits what is left.
    started: float | None = None
    seen = -1  # conn.replies_read when the budget started
    while True:
        # Flush after every call into the machine: next_event queues the next command itself.
        out = consumer.data_to_send()
        if out:
            connection.flush(out)
        event = consumer.next_event(monotonic())
        if event is NEED_DATA:
            out = consumer.data_to_send()
            if out:
                connection.flush(out)
            fresh = started is None or conn.replies_read != seen
            if fresh:
                started, seen = monotonic(), conn.replies_read
            assert started is not None
            budget = consumer.reply_budget_s(read_timeout)
            if not consumer.allowed_silence_s():
                if fresh:
                    connection.set_read_timeout(budget)
                else:
                    connection.set_read_timeout(
                        read_time_left(started, budget, monotonic(), 0.0, where(connection.address))
                    )
                connection.fill()
                continue
            # Waiting in QNOTIFY: nothing is claimed, so a stop may end the wait at once.
            if not registered:
                registered = True
                backoff.reset()
            deadline = started + budget
            while not stop.is_set():
                if connection.fill_by(min(deadline, monotonic() + STOP_POLL_S)):
                    break
                if monotonic() >= deadline:
                    raise TimeoutError(
                        f"no reply to QNOTIFY from {where(connection.address)} within "
                        f"{budget:.1f} s"
                    )
            else:
                consumer.stop()
            continue
        started = None
        if isinstance(event, Delivered):
            delivery = event.delivery
            ok = _handle(handler, delivery, hooks)
            if stop.is_set():
                consumer.stop()
            consumer.handled(delivery, ok, monotonic())  # finished after the deadline: late
        elif isinstance(event, AckSettled):
            call_hook(hooks, "acked", event.delivery)
        elif isinstance(event, LateAck):
            late_ack(hooks, event.delivery, removed=event.removed)
        else:
            assert isinstance(event, ConsumerStopped)
            return


def _handle(handler: Handler, delivery: Delivery, hooks: Hooks | None) -> bool:
    call_hook(hooks, "delivered", delivery)
    try:
        ok = bool(handler(delivery))
    except Exception as exc:
        handler_failed(hooks, delivery, exc)
        return False
    if not ok:
        handler_failed(hooks, delivery, None)
    return ok


def consume_from(
    client: SyncClientCore,
    handler: Handler,
    queues: Sequence[str],
    expire_seconds: int,
    concurrency: int,
    stop: StopFlag | None,
    backoff: Callable[[], Backoff],
) -> None:
    """``consume`` of the blocking doors: check the arguments, then run the consumers on
    connections of `client`'s pool until `stop` is set."""
    queue_list = check_consume_options(
        handler, queues, expire_seconds=expire_seconds, concurrency=concurrency
    )
    settings = ConsumerSettings(
        PoolLinks(client.pool),
        handler,
        queue_list,
        expire_seconds,
        client.notify_timeout_s,
        client.read_timeout_s,
        client.active_hooks,
    )
    run_consumers(settings, stop if stop is not None else threading.Event(), backoff, concurrency)
