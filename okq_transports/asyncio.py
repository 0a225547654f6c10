"""The asyncio okq client: the sync client's methods as coroutines, over one shared driver.

Owns: only what is asyncio's own: the constructor's defaults (asyncio has no cancel scopes,
so read and connect timeouts are arguments), ``async with``, and wiring signals to a stop
event.  Every method, the pool, the consumer and the cancellation safety are in
`okq_transports._async_driver` / `_async_consume`, shared with the trio client.

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
from types import TracebackType

from okq_proto import DEFAULT_EXPIRE_S, Delivery, Hooks, IdFactory

from ._async_consume import DeliveryStream, Handler, consume
from ._async_driver import AsyncClientCore, AsyncConnection, ConnectionBusyError
from ._backends import ASYNCIO

__all__ = [
    "AsyncConnection",
    "Client",
    "ConnectionBusyError",
    "Delivery",
    "DeliveryStream",
    "Handler",
    "stop_on_signals",
]


class Client(AsyncClientCore):
    """An asyncio okq client with a bounded connection pool.

    Methods (coroutines, same names and semantics as ``okq_transports.sync.Client``):
    `push`, `push_event`, `push_many`, `peek_next`, `peek_last`, `status`, `info`, `flush`,
    `ping`, `consume`; plus `deliveries` (pull consumer), `connection` (borrow a pooled
    connection) and `aclose`.

    A request cancelled after it was written and before its reply was read closes its
    connection (it is never reused), so no later request can read another one's reply.

    Args:
        address: ``"host:port"``, a comma-separated list, or a list of addresses; servers
            sharing one Redis are interchangeable, so connections fail over along the list.
        pool_size: most connections open at once for requests (consumers own theirs).
        connect_timeout_s: deadline of each connection attempt.
        read_timeout_s: how long the server may stay silent on a request; a ``QNOTIFY``
            wait is always added on top, never cut short.
        notify_timeout_s: the ``QNOTIFY`` wait of consumers, in whole seconds.
        id_factory: makes event ids for `push` (uuid4 text by default).
        hooks: metrics hooks (`okq_proto.Hooks`).
    """

    def __init__(
        self,
        address: str | tuple[str, int] | Sequence[str | tuple[str, int]] = "127.0.0.1:4777",
        *,
        pool_size: int = 10,
        connect_timeout_s: float | None = 5.0,
        read_timeout_s: float | None = 10.0,
        notify_timeout_s: int = 30,
        id_factory: IdFactory | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        super().__init__(
            ASYNCIO,
            address,
            pool_size=pool_size,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            notify_timeout_s=notify_timeout_s,
            id_factory=id_factory,
            hooks=hooks,
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def consume(
        self,
        handler: Handler,
        queues: Sequence[str],
        *,
        expire_seconds: int = DEFAULT_EXPIRE_S,
        concurrency: int = 1,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Consume from `queues` until `stop` is set, or until cancelled.

        Each delivery goes to ``handler(delivery)`` (``async def`` or plain; a plain function
        runs on the loop, so keep it short).  True acks it; false or an exception leaves it
        to be redelivered (reported through logging and ``hooks.handler_failed``).  The
        handler is cancelled when the event's claim expires (``delivery.deadline``, loop
        time), as okq-go cancels the handler's context.

        Stop: setting `stop` abandons ``QNOTIFY`` waits at once, lets running handlers finish
        and sends their acks, then returns.  Cancelling the task instead cancels handlers
        too (their events are redelivered).  Connection failures reconnect with backoff.

        Args:
            handler: called with each `Delivery`.
            queues: the queue names.
            expire_seconds: claim length; -1 for at-most-once (never acked, never cancelled).
            concurrency: consumer connections (and handlers) running side by side.
            stop: an `asyncio.Event`; see `stop_on_signals`.

        Raises:
            ReplyError: the server refused a consumer command.
        """
        await consume(
            self,
            handler,
            queues,
            expire_seconds=expire_seconds,
            concurrency=concurrency,
            stop=stop,
        )

    def deliveries(
        self,
        *queues: str,
        expire_seconds: int = DEFAULT_EXPIRE_S,
        stop: asyncio.Event | None = None,
    ) -> DeliveryStream:
        """A pull consumer on its own connection: use as ``async with`` and ``async for``.

        ::

            async with client.deliveries("q1", "q2", expire_seconds=30) as stream:
                async for delivery in stream:
                    async with stream.handling(delivery):   # acks unless the block raises
                        await work(delivery)

        Or call ``stream.ack(delivery)`` explicitly.  The ack leaves with the next pop.
        """
        return DeliveryStream(self, queues, expire_seconds=expire_seconds, stop=stop)


def stop_on_signals(
    stop: asyncio.Event, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)
) -> None:
    """Set `stop` on SIGINT/SIGTERM (call inside the running loop; Unix only), for a
    graceful `Client.consume` shutdown."""
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
