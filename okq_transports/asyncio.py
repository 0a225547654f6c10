"""The asyncio okq client: the sync client's methods as coroutines, over one shared driver.

Owns: only what is asyncio's own: the constructor's defaults (asyncio has no cancel scopes,
so read and connect timeouts are arguments), ``async with``, and wiring signals to a stop
event.  Every method, the pool, the consumer and the cancellation safety are in
`okq_transports._async`, shared with every other door.

Producer::

    async with Client("127.0.0.1:4777") as client:
        event_id = await client.push("jobs", b"payload")

Consumer (handlers may be ``async def`` or plain functions; true acks)::

    async def handle(delivery: Delivery) -> bool:
        ...
        return True

    await client.consume(handle, ["jobs"], expire_seconds=30, concurrency=4, stop=stop_event)

Pull form: ``async with client.deliveries("jobs") as stream: async for d in stream: ...``
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence

from okq_proto import (
    Delivery,
)

from ._async.connection import AsyncConnection
from ._async.consume import AsyncDeliveryStream as DeliveryStream
from ._async.workers import AsyncClient, Handler
from ._asyncio_backend import ASYNCIO
from ._exceptions import ConnectionBusyError

__all__ = [
    "AsyncConnection",
    "Client",
    "ConnectionBusyError",
    "Delivery",
    "DeliveryStream",
    "Handler",
    "stop_on_signals",
]


class Client(AsyncClient):
    """An asyncio okq client with a bounded connection pool.

    Methods (coroutines, same names and semantics as ``okq_transports.sync.Client``):
    `push`, `push_event`, `push_many`, `execute`, `peek_next`, `peek_last`, `status`, `info`,
    `flush`, `ping`, `consume`; plus `deliveries` (pull consumer), `connection` (borrow a pooled
    connection) and `aclose`.

    A request cancelled after it was written and before its reply was read closes its
    connection (it is never reused), so no later request can read another one's reply.

    Args:
        address: ``"host:port"``, a comma-separated list, or a list of addresses; servers
            sharing one Redis are interchangeable, so connections fail over along the list.
        pool_size: most connections open at once for requests (consumers own theirs).
        connect_timeout_s: deadline of each connection attempt.
        read_timeout_s: how long a whole reply may take, from the request's write to the
            reply's last byte, however the bytes trickle in (None: forever).  A pipelined
            batch gives each reply this long after the previous one; a ``QNOTIFY`` wait is
            always added on top, never cut short.
        notify_timeout_s: the ``QNOTIFY`` wait of consumers, in whole seconds.
        pool_timeout_s: how long a request waits for a free pooled connection (None:
            forever); then `okq_proto.TimeoutError`.
        retries: how many times a retry-safe request (push with the same id, peeks, status,
            info, flush, ping) is sent again on a new connection after a connection failure
            (`okq_proto.policy.may_retry`; the same on every door).
        id_factory: makes event ids for `push` (uuid4 text by default).
        hooks: metrics hooks (`okq_proto.Hooks`).
        ssl: connect in TLS with this `ssl.SSLContext` (``ssl.create_default_context()``,
            or one with your CA: ``create_default_context(cafile=...)``); each server's
            certificate is checked against its host name.  None (default): plain TCP.
        max_reply_bytes: the most bytes one reply may take while incomplete (64 MiB by
            default; None: no cap).  A reply (or announced bulk string) beyond it raises
            `RemoteProtocolError` and its connection is closed, never reused.

    Raises:
        LocalProtocolError: for a bad address or argument.
    """

    BACKEND = ASYNCIO


def stop_on_signals(
    stop: asyncio.Event, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)
) -> None:
    """Set `stop` on SIGINT/SIGTERM (call inside the running loop; Unix only), for a
    graceful `Client.consume` shutdown."""
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
