"""The sync consumer driver: one `okq_proto.Consumer` per connection, handlers, reconnects.

Owns: running the handler and turning its verdict into ``Consumer.handled``, waiting in
``QNOTIFY`` while watching a stop flag, reconnecting with `okq_proto.Backoff` after a failure
(and logging what was left claimed), consumer threads, hooks and log records of consumers.
Must not know: okq's wire rules, or how bytes reach the server.  What to send next, drain,
pipelining, stop and failure reports are decisions of the machine; a `Link` moves the bytes
(a `SyncConnection` of the sync client, or a borrowed redis-py connection of
``okq_transports.redis``), and this module moves time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from okq_proto import (
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
    RemoteProtocolError,
    ReplyError,
    TimeoutError,
    TransportError,
)

from ._sync_io import log, where

__all__ = [
    "AnyStop",
    "ConsumerSettings",
    "Handler",
    "Link",
    "LinkSource",
    "StopFlag",
    "call_hook",
    "consume_forever",
    "run_consumers",
]

#: A consumer's handler: returns true to ack the event; false or an exception: no ack.
Handler = Callable[[Delivery], bool]

STOP_POLL_S: Final = 0.1  # how often a consumer waiting in QNOTIFY looks at its stop flag
# okq's reply when Redis fails: transient, so a consumer reconnects rather than giving up.
_SERVER_SIDE: Final = b"ERR unexpected server-side error"


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


def call_hook(method: Callable[..., None], *args: object, **kwargs: object) -> None:
    """Call a `Hooks` method; what it raises is logged and ignored (hooks must not break
    the client)."""
    try:
        method(*args, **kwargs)
    except Exception:
        log.exception("okq: hook %s raised", getattr(method, "__name__", method))


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


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    """What every consumer of one `consume` call shares.

    ``read_timeout_s`` is how long a reply may take (None: forever); a ``QNOTIFY`` reply may
    take that long past its wait.  A link that times its reads itself (redis-py's
    ``socket_timeout``) ignores it but for that bound on the wait.
    """

    links: LinkSource
    handler: Handler
    queues: list[str]
    expire_s: int
    notify_timeout_s: int
    read_timeout_s: float | None
    hooks: Hooks
    hooked: bool


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
        consume_forever(settings, stop, backoff(), 0)
        return
    failures: list[BaseException] = []
    halt = AnyStop(stop)

    def run(index: int) -> None:
        try:
            consume_forever(settings, halt, backoff(), index)
        except BaseException as exc:
            failures.append(exc)
            halt.set()

    threads = [
        threading.Thread(target=run, args=(i,), name=f"okq-consumer-{i}", daemon=True)
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


def consume_forever(
    settings: ConsumerSettings, stop: StopFlag, backoff: Backoff, index: int
) -> None:
    """Run one consumer until `stop` is set, reconnecting after failures.

    Raises:
        ReplyError: the server refused a consumer command (other than a server-side error).
        LocalProtocolError: a bug or misuse; BaseException from the handler (KeyboardInterrupt).
    """
    while not stop.is_set():
        try:
            connection = settings.links.connect_any(settings.read_timeout_s)
        except (ConnectError, TimeoutError) as exc:
            _pause(settings, stop, backoff, exc, index)
            continue
        consumer = Consumer(
            settings.queues,
            expire_s=settings.expire_s,
            notify_timeout_s=settings.notify_timeout_s,
            connection=connection.conn,
            report_acks=settings.hooked,  # AckSettled only matters to the acked hook
        )
        try:
            _run(settings, connection, consumer, stop, backoff)
            return
        except (TransportError, RemoteProtocolError, ReplyError) as exc:
            if isinstance(exc, ReplyError) and exc.reply.message != _SERVER_SIDE:
                raise
            _report_lost(consumer, connection, exc)
            _pause(settings, stop, backoff, exc, index)
        finally:
            connection.close()


def _pause(
    settings: ConsumerSettings, stop: StopFlag, backoff: Backoff, exc: OkqError, index: int
) -> None:
    delay = backoff.next_delay()
    address = settings.links.preferred_address
    log.warning(
        "okq: consumer %d: %s; reconnecting in %.2f s",
        index,
        exc,
        delay,
        extra={"okq_address": where(address), "okq_attempt": backoff.attempt},
    )
    if settings.hooked:
        call_hook(settings.hooks.error, exc)
        call_hook(settings.hooks.reconnect, address, backoff.attempt, delay)
    stop.wait(delay)


def _report_lost(consumer: Consumer, connection: Link, exc: OkqError) -> None:
    address = where(connection.address)
    for delivery in consumer.unacked:
        log.warning(
            "okq: event %s of %s claimed and not acked when the connection failed; the server "
            "hands it out again after its claim expires",
            delivery.id,
            delivery.queue,
            extra={
                "okq_queue": delivery.queue,
                "okq_event_id": delivery.id,
                "okq_address": address,
            },
        )
    if consumer.pop_in_flight is not None:
        log.info(
            "okq: a pop of %s was in flight when the connection failed (%s)",
            consumer.pop_in_flight,
            exc,
            extra={"okq_queue": consumer.pop_in_flight, "okq_address": address},
        )


def _run(
    settings: ConsumerSettings,
    connection: Link,
    consumer: Consumer,
    stop: StopFlag,
    backoff: Backoff,
) -> None:
    """Drive one consumer machine over one connection until it stops or fails."""
    hooks, hooked, handler = settings.hooks, settings.hooked, settings.handler
    read_timeout = settings.read_timeout_s
    monotonic = time.monotonic
    registered = False
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
            silence = consumer.allowed_silence_s()
            if not silence:
                connection.set_read_timeout(read_timeout)
                connection.fill()
                continue
            # Waiting in QNOTIFY: nothing is claimed, so a stop may end the wait at once.
            if not registered:
                registered = True
                backoff.reset()
            deadline = monotonic() + silence + (read_timeout or 0.0)
            while not stop.is_set():
                if connection.fill_by(min(deadline, monotonic() + STOP_POLL_S)):
                    break
                if read_timeout is not None and monotonic() >= deadline:
                    raise TimeoutError(
                        f"no reply to QNOTIFY from {where(connection.address)} within "
                        f"{silence + read_timeout:.1f} s"
                    )
            else:
                consumer.stop()
            continue
        if isinstance(event, Delivered):
            delivery = event.delivery
            ok = _handle(handler, delivery, hooks, hooked)
            if stop.is_set():
                consumer.stop()
            consumer.handled(delivery, ok)
        elif isinstance(event, AckSettled):
            if hooked:
                call_hook(hooks.acked, event.delivery)
        elif isinstance(event, LateAck):
            delivery = event.delivery
            log.warning(
                "okq: late ack of %s in %s: its claim had expired and it was gone",
                delivery.id,
                delivery.queue,
                extra={"okq_queue": delivery.queue, "okq_event_id": delivery.id},
            )
            if hooked:
                call_hook(hooks.late_ack, delivery)
        else:
            assert isinstance(event, ConsumerStopped)
            return


def _handle(handler: Handler, delivery: Delivery, hooks: Hooks, hooked: bool) -> bool:
    if hooked:
        call_hook(hooks.delivered, delivery)
    try:
        ok = bool(handler(delivery))
    except Exception as exc:
        log.exception(
            "okq: handler failed on %s of %s; not acked",
            delivery.id,
            delivery.queue,
            extra={"okq_queue": delivery.queue, "okq_event_id": delivery.id},
        )
        if hooked:
            call_hook(hooks.handler_failed, delivery, exc)
        return False
    if not ok and hooked:
        call_hook(hooks.handler_failed, delivery, None)
    return ok
