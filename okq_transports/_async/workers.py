"""Consuming, written once: handlers, `concurrency` workers side by side, the client's methods.

Owns: the push-style `consume` built on the pull-style `AsyncDeliveryStream`: a handler (plain,
or ``async def`` on the async doors) per delivery, an async one run until its claim's deadline
where the backend can cancel it (a plain one runs to its end: one that finishes late gets a
late ack), a failed worker stopping the others; and the client class that offers `consume`
and `deliveries` on every door.
Must not know: okq's consumer rules, how a backend runs workers or cancels a call.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from okq_proto import DEFAULT_EXPIRE_S, Backoff, Delivery
from okq_proto.policy import check_consume_options
from okq_transports._observe import call_hook, handler_started

from .client import AsyncClientCore
from .consume import AsyncDeliveryStream
from .streams import AsyncBackend, StopEvent

__all__ = ["AsyncClient", "Handler", "TaskStatus", "consume"]

#: A consumer handler: ``handler(delivery) -> bool`` (``async def`` too on the async doors);
#: true acks the event.
Handler = Callable[[Delivery], bool | Awaitable[bool]]


class TaskStatus(Protocol):
    """trio's and anyio's ``task_status`` (``nursery.start``, ``TaskGroup.start``)."""

    def started(self) -> None: ...


# async only: begin (a blocking handler returns its verdict; only a coroutine is awaited)


async def _settle(result: Awaitable[bool], outcome: list[bool]) -> bool:
    ok = bool(await result)
    outcome.append(ok)  # seen even if our caller is cancelled before it reads the result
    return ok


async def _await_handler(
    backend: AsyncBackend, result: Awaitable[bool], delivery: Delivery, outcome: list[bool]
) -> tuple[bool, bool]:
    """An ``async def`` handler's verdict, cancelled at its claim's deadline.  Returns
    (finished in time, acked)."""
    if not delivery.needs_ack:
        return True, await _settle(result, outcome)
    settle = functools.partial(_settle, result, outcome)
    return await backend.run_until(settle, delivery.deadline)


# async only: end


async def consume(
    core: AsyncClientCore,
    handler: Handler,
    queues: Sequence[str],
    *,
    expire_seconds: int,
    concurrency: int,
    stop: StopEvent | None,
    on_registered: Callable[[], None] | None = None,
    backoff: Callable[[], Backoff] | None = None,
) -> None:
    """Run `concurrency` consumer connections until `stop` is set (or cancellation).

    Each handler call runs until its delivery's claim deadline and is cancelled there where
    the backend can cancel (no ack; the server redelivers).  A handler that raises or
    returns false is reported through the log and ``hooks.handler_failed``; the consumer
    carries on.  A consumer that fails for good stops the others (not the caller's `stop`)
    and its error is raised once all have ended.
    """
    queues = check_consume_options(
        handler, queues, expire_seconds=expire_seconds, concurrency=concurrency
    )
    backend = core.backend
    group = backend.stop_group(stop)
    pending = [concurrency]

    def registered() -> None:
        pending[0] -= 1
        if pending[0] == 0 and on_registered is not None:
            on_registered()

    async def worker() -> None:
        async with AsyncDeliveryStream(
            core,
            queues,
            expire_seconds=expire_seconds,
            stop=group,
            on_registered=registered,
            backoff=backoff,
        ) as stream:
            async for delivery in stream:
                error: BaseException | None = None
                outcome: list[bool] = []
                hooks = core.active_hooks
                started = handler_started(hooks, delivery) if hooks is not None else None
                try:
                    result = handler(delivery)  # a plain handler runs here, to its end
                    finished, ok = True, bool(result)
                    if inspect.isawaitable(result):  # async only
                        verdict = _await_handler(backend, result, delivery, outcome)  # async only
                        finished, ok = await verdict  # async only
                except Exception as exc:
                    finished, ok, error = True, False, exc
                except BaseException as exc:
                    if hooks is not None:
                        call_hook(hooks, "handler_finished", delivery, started, False, exc)
                    # Cancelled just as the handler returned true: still ack it.
                    if outcome and outcome[0] and delivery.needs_ack:
                        stream.ack(delivery)
                        await stream.send_final_ack()
                    raise
                if hooks is not None:
                    call_hook(hooks, "handler_finished", delivery, started, ok, error)
                if finished and ok:
                    stream.ack(delivery)
                else:
                    stream._fail(delivery, error, expired=not finished)

    await backend.run_all([worker] * concurrency, group)


class AsyncClient(AsyncClientCore):
    """`AsyncClientCore` plus consuming: the base of every door's client."""

    async def consume(
        self,
        handler: Handler,
        queues: Sequence[str],
        *,
        expire_seconds: int = DEFAULT_EXPIRE_S,
        concurrency: int = 1,
        stop: StopEvent | None = None,
        backoff: Callable[[], Backoff] = Backoff,
        task_status: TaskStatus | None = None,
    ) -> None:
        """Consume from `queues` until `stop` is set (or an unrecoverable error, or
        cancellation on the async doors).

        Each consumer is its own connection: it registers for `queues`, waits with
        ``QNOTIFY``, claims events with ``QRPOP q EX expire_seconds`` and calls
        ``handler(delivery)`` with a `Delivery` (an `Event` plus its claim ``deadline`` on the
        door's clock).  True acks the event (the ack leaves with the next pop); false or an
        exception leaves it to be redelivered once the claim expires (reported through the
        log ``"okq"`` and ``hooks.handler_failed``; the consumer carries on).  The async doors
        cancel a handler when its claim expires, as okq-go cancels the handler's context; a
        blocking handler cannot be cancelled (check ``remaining(delivery)``), and one that
        finishes late gets a late ack (``hooks.late_ack``).

        A consumer that loses its connection reconnects with its `Backoff` (reset once a new
        connection registered), failing over along the addresses, and registers again; what
        it had claimed and not acked is logged, and the server redelivers it.

        Stop: setting `stop` abandons ``QNOTIFY`` waits at once, lets running handlers finish
        and sends their acks, then returns.  Cancelling instead (async doors) cancels
        handlers too (their events are redelivered); a handler that has already returned
        true keeps its ack, sent shielded from the cancellation for at most `FINAL_ACK_S`.

        Args:
            handler: called with each `Delivery` (``async def`` too, on the async doors).
            queues: the queue names.
            expire_seconds: claim length; -1 for at-most-once delivery (popped with
                ``EX 0``, never acked, never cancelled: a failed handler loses the event).
            concurrency: consumer connections (and handlers) running side by side (threads
                on the blocking doors; the calling thread waits for all of them).
            stop: the door's event (`threading.Event`, ``asyncio.Event``, ``trio.Event``);
                None: run until an unrecoverable error.
            backoff: makes the reconnect `Backoff` of each consumer.
            task_status: trio's and anyio's (``await nursery.start(client.consume, ...)``):
                ``started()`` once every consumer registered.

        Raises:
            LocalProtocolError: bad arguments (before anything is sent).
            ClientClosed: the client is closed.
            ReplyError: the server refused the consumer's commands (other than with its
                transient ``unexpected server-side error``).
        """
        await consume(
            self,
            handler,
            queues,
            expire_seconds=expire_seconds,
            concurrency=concurrency,
            stop=stop,
            on_registered=None if task_status is None else task_status.started,
            backoff=backoff,
        )

    def deliveries(
        self,
        *queues: str,
        expire_seconds: int = DEFAULT_EXPIRE_S,
        stop: StopEvent | None = None,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> AsyncDeliveryStream:
        """A pull consumer on its own connection: use as a context manager and iterate.

        ::

            async with client.deliveries("q1", "q2", expire_seconds=30) as stream:
                async for delivery in stream:
                    async with stream.handling(delivery):   # acks unless the block raises
                        await work(delivery)

        Or call ``stream.ack(delivery)``.  The ack leaves with the next pop.  `backoff`
        makes the stream's reconnect `Backoff`.
        """
        return AsyncDeliveryStream(
            self, queues, expire_seconds=expire_seconds, stop=stop, backoff=backoff
        )
