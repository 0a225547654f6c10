"""The synchronous okq client: a thread-safe connection pool, okq-go v2's methods, consumers.

Owns: the connection pool (bounded, thread-safe, address failover), retrying what is safe to
retry, running handlers, consumer threads with reconnects, logging and hooks.
Must not know: okq's wire rules.  Commands and their replies are `okq_proto` commands, the
consumer loop is `okq_proto.Consumer`, retry and backoff policies are `okq_proto` functions;
the request methods, the pool and the bytes are the one driver's (``okq_transports._sync``,
generated from ``okq_transports._async``) over blocking sockets (`okq_transports._socket`).

::

    from okq_transports.sync import Client

    with Client("127.0.0.1:4777") as client:
        event_id = client.push("jobs", b"hello")
        client.consume(lambda event: print(event.contents) or True, ["jobs"], stop=stop)
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TypeVar

from okq_proto import (
    DEFAULT_MAX_REPLY_BYTES,
    DEFAULT_NOTIFY_TIMEOUT_S,
    Backoff,
    Delivery,
    Hooks,
    IdFactory,
    new_event_id,
)
from okq_proto.policy import DEFAULT_POOL_TIMEOUT_S, DEFAULT_RETRIES

from ._observe import log
from ._socket import SOCKETS
from ._sync.client import SyncClientCore
from ._sync_consume import Handler, StopFlag, consume_from

__all__ = ["Client", "Handler", "StopFlag", "expired", "remaining", "stop_on_signals"]

T = TypeVar("T")


def remaining(delivery: Delivery) -> float:
    """Seconds left before `delivery`'s claim expires (negative once it has; ``inf`` for
    at-most-once deliveries).

    okq-go cancels a handler's context at that moment; a sync handler cannot be interrupted,
    so check this between steps of long work and give up (return False) when it runs out:
    after expiry the server hands the event to another consumer.
    """
    return delivery.remaining(time.monotonic())


def expired(delivery: Delivery) -> bool:
    """True once `delivery`'s claim has expired (see `remaining`)."""
    return delivery.remaining(time.monotonic()) <= 0


def stop_on_signals(
    stop: StopFlag | None = None,
    signals: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
) -> StopFlag:
    """Make SIGINT and SIGTERM stop consumers gracefully; returns the flag to pass as ``stop``.

    The first signal sets the flag (in-flight handlers finish, their acks are sent) and puts
    the previous handlers back, so a second Ctrl-C interrupts at once.  Call it from the main
    thread (Python only installs signal handlers there)::

        client.consume(handler, ["jobs"], stop=stop_on_signals())

    Args:
        stop: the flag to set (a new `threading.Event` by default).
        signals: which signals to catch.
    """
    flag: StopFlag = stop if stop is not None else threading.Event()
    previous: dict[signal.Signals, object] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("okq: signal %s, stopping consumers", signum, extra={"okq_signal": signum})
        flag.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]  # what signal.signal returned

    for sig in signals:
        previous[sig] = signal.signal(sig, on_signal)
    return flag


class Client(SyncClientCore):
    """A synchronous okq client over a bounded, thread-safe connection pool.

    Args:
        address: ``"host:port"``, a comma-separated list of them, or a list of addresses
            (``"host:port"`` or ``(host, port)``).  okq servers sharing one Redis are
            interchangeable: connections fail over along the list.
        pool_size: most connections open at once for requests (consumers have their own).
        connect_timeout_s: how long connecting may take.
        read_timeout_s: how long a whole reply may take, from the request's write to the
            reply's last byte, however the bytes trickle in (None: forever).  A pipelined
            batch gives each reply this long after the previous one.
        notify_timeout_s: the ``QNOTIFY`` wait of consumers, in whole seconds.  Their read
            deadline is always this plus `read_timeout_s`, so a wait never times out a read.
        max_reply_bytes: the most bytes one reply may take while incomplete (64 MiB by
            default; None: no cap).  A reply (or announced bulk string) beyond it raises
            `RemoteProtocolError` and its connection is closed, never reused.  Raise it if
            your events are larger.
        pool_timeout_s: how long a request waits for a free pooled connection.
        retries: how many times a retry-safe request (push with the same id, peeks, status,
            info, flush, ping) is sent again on a new connection after a transport failure.
        id_factory: makes event ids for `push` (UUID4 text by default).
        hooks: metrics callbacks (`okq_proto.Hooks`).

    Raises:
        LocalProtocolError: for a bad address or argument.
    """

    def __init__(
        self,
        address: str | tuple[str, int] | Sequence[str | tuple[str, int]] = "127.0.0.1:4777",
        *,
        pool_size: int = 10,
        connect_timeout_s: float | None = 5.0,
        read_timeout_s: float | None = 10.0,
        notify_timeout_s: int = DEFAULT_NOTIFY_TIMEOUT_S,
        pool_timeout_s: float | None = DEFAULT_POOL_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        id_factory: IdFactory = new_event_id,
        hooks: Hooks | None = None,
        max_reply_bytes: int | None = DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        super().__init__(
            SOCKETS,
            address,
            pool_size=pool_size,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            pool_timeout_s=pool_timeout_s,
            retries=retries,
            notify_timeout_s=notify_timeout_s,
            id_factory=id_factory,
            hooks=hooks,
            max_reply_bytes=max_reply_bytes,
        )

    # -- consumers -------------------------------------------------------------------------

    def consume(
        self,
        handler: Handler,
        queues: Sequence[str],
        *,
        expire_seconds: int = 30,
        concurrency: int = 1,
        stop: StopFlag | None = None,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        """Consume events until `stop` is set (or an unrecoverable error).

        Each consumer is its own connection: it registers for `queues`, waits with ``QNOTIFY``,
        claims events with ``QRPOP q EX expire_seconds`` and calls ``handler(event)`` with a
        `Delivery` (an `Event` plus its claim ``deadline`` in `time.monotonic` seconds; see
        `remaining`).  True acks the event; false, or an exception, leaves it claimed, and the
        server hands it out again once the claim expires.  Exceptions are logged (logger
        ``"okq"``) and reported to ``hooks.handler_failed``; they do not stop the consumer.

        A consumer that loses its connection (server restart, network) reconnects with
        capped exponential backoff and full jitter, failing over along the addresses, and
        re-registers.  What it had claimed and not acked is logged; the server redelivers it.

        Stopping is graceful: a consumer waiting for work stops at once; a handler that is
        running finishes, and its ack is sent before `consume` returns.

        Args:
            handler: called with each `Delivery`, from the consumer's thread.
            queues: the queues to consume from.
            expire_seconds: the claim length; -1 for at-most-once delivery (popped with
                ``EX 0``, never acked, a failed handler loses the event).
            concurrency: consumer connections, each in its own thread (the calling thread
                waits for all of them).
            stop: set it to stop (`threading.Event`, or `stop_on_signals`).  None: run until
                an unrecoverable error.
            backoff: makes the reconnect `Backoff` of each consumer.

        Raises:
            LocalProtocolError: bad arguments (before anything is sent).
            ReplyError: the server refused the consumer's commands (other than with its
                transient ``unexpected server-side error``).
        """
        consume_from(self, handler, queues, expire_seconds, concurrency, stop, backoff)
