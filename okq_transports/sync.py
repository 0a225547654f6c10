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
from typing import Protocol, TypeVar

from okq_proto import (
    Delivery,
)

from ._observe import log
from ._socket import SOCKETS
from ._sync.workers import Handler, SyncClient

__all__ = ["Client", "Handler", "StopFlag", "expired", "remaining", "stop_on_signals"]

T = TypeVar("T")


class StopFlag(Protocol):
    """What `Client.consume` needs of its ``stop``: a `threading.Event` fits."""

    def is_set(self) -> bool:
        """True once stopping was asked."""
        ...

    def set(self) -> None:
        """Ask to stop."""
        ...

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until set, at most `timeout` seconds."""
        ...


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
    *,
    on_signal: Callable[[int], None] | None = None,
) -> StopFlag:
    """Make SIGINT and SIGTERM stop consumers gracefully; returns the flag to pass as ``stop``.

    The first signal sets the flag (in-flight handlers finish, their acks are sent) and puts
    the previous handlers back, so a second Ctrl-C interrupts at once.  Call it from the main
    thread (Python only installs signal handlers there)::

        client.consume(handler, ["jobs"], stop=stop_on_signals())

    Args:
        stop: the flag to set (a new `threading.Event` by default).
        signals: which signals to catch.
        on_signal: called with the signal's number first (a command line exits with
            128 + that number after the graceful stop, as shells expect).
    """
    flag: StopFlag = stop if stop is not None else threading.Event()
    previous: dict[signal.Signals, object] = {}

    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("okq: signal %s, stopping consumers", signum, extra={"okq_signal": signum})
        if on_signal is not None:
            on_signal(signum)
        flag.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]  # what signal.signal returned

    for sig in signals:
        previous[sig] = signal.signal(sig, handle)
    return flag


class Client(SyncClient):
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
        ssl: connect in TLS with this `ssl.SSLContext` (``ssl.create_default_context()``,
            or one with your CA: ``create_default_context(cafile=...)``); each server's
            certificate is checked against its host name.  None (default): plain TCP.

    Raises:
        LocalProtocolError: for a bad address or argument.
    """

    BACKEND = SOCKETS
