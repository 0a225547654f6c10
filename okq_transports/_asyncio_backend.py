"""The asyncio backend of the one async driver.

Owns: an asyncio Protocol as a byte stream (cheaper than asyncio streams: no StreamReader
buffer copies, no ``drain`` call when the transport is not paused; flow control past
`HIGH_WATER`), connecting, and the consumer's primitives on asyncio.  Any loop (uvloop's
too: transports are checked by what they can do, not by class) and any canceller (anyio's
cancel scopes cancel again and again): a task started here has always ended when the call
that started it returns (`wait_ended`).  Every failure leaves as an okq error
(`_exceptions.to_okq_error`): no ``OSError`` escapes as is.
Must not know: okq commands, pools, consumers.
"""

from __future__ import annotations

import asyncio
import functools
import math
import sys
from collections.abc import Awaitable, Callable, Collection, Sequence
from ssl import SSLContext
from typing import Any, Final, Protocol, TypeVar, cast, runtime_checkable

from okq_proto import (
    ConnectError,
    ConnectionClosed,
    TimeoutError,
)

from ._async.streams import AsyncStream, Feedable
from ._async.streams import StopEvent as PoolStop
from ._async.streams import Waiter as PoolWaiter
from ._backends import (
    HIGH_WATER,
    ByteStream,
    EventLoopBackend,
    StopEvent,
    Waiter,
)
from ._exceptions import to_okq_error
from ._socket import keep_alive

T = TypeVar("T")

__all__ = [
    "ASYNCIO",
    "AsyncioBackend",
    "ByteTransport",
    "cancel_and_wait",
    "run_to_end",
    "wait_ended",
]


@runtime_checkable
class ByteTransport(Protocol):
    """What `_AsyncioStream` uses of its transport.  Checked by shape, not by class: uvloop's
    transports (``uvloop.loop.TCPTransport``) are not ``asyncio.Transport`` subclasses."""

    def write(self, data: bytes) -> None: ...

    def is_closing(self) -> bool: ...

    def abort(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class _AsyncioStream(ByteStream, asyncio.Protocol):
    """An asyncio Protocol used as an `AsyncStream`: cheaper than asyncio streams (no
    StreamReader buffer copies, no ``drain`` call when the transport is not paused)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.now = loop.time  # the loop's clock, without looking the loop up each time
        self._transport: ByteTransport | None = None
        self._chunks: list[bytes] = []
        self._eof = False
        self._lost: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused = False
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._unread = 0  # bytes in _chunks
        self._reading = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, ByteTransport):
            self._transport = transport
        # else: left None, and `AsyncioBackend.connect` refuses the connection, saying why

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._unread += len(data)
        if self._unread > HIGH_WATER and self._reading and self._transport is not None:
            self._reading = False
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._eof = True
        self._lost = exc if exc is not None else ConnectionClosed("connection closed")
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _check_deadline(self) -> None:
        # One timer per stream, re-armed lazily: a busy connection pays a clock read per
        # request, not a timer handle (call_later + cancel) per read.
        self._timer = None
        waiter, deadline = self._waiter, self._deadline
        if waiter is None or waiter.done() or deadline is None:
            return
        if self._loop.time() >= deadline:
            waiter.set_exception(TimeoutError("no reply from the server in time"))
        else:
            self._timer = self._loop.call_at(deadline, self._check_deadline)

    async def fill(self, machine: Feedable, timeout_s: float | None) -> None:
        # ByteStream's fill, without the receive_some call: one coroutine per read
        if not self._chunks and not self._eof:
            waiter = self._waiter = self._loop.create_future()
            if timeout_s is None:
                self._deadline = None
            else:
                deadline = self._deadline = self._loop.time() + timeout_s
                timer = self._timer
                if timer is None or timer.when() > deadline:
                    if timer is not None:
                        timer.cancel()
                    self._timer = self._loop.call_at(deadline, self._check_deadline)
            try:
                await waiter
            finally:
                self._waiter = None
        chunks = self._chunks
        if chunks:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            self._unread = 0
            if not self._reading:
                self._reading = True
                transport = self._transport
                if transport is not None and not transport.is_closing():
                    transport.resume_reading()
            machine.receive_data(data)
            return
        if isinstance(self._lost, OSError):
            raise to_okq_error(self._lost, "receive")
        machine.receive_eof()

    async def send_all(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionClosed("send: the connection is closed")
        transport.write(data)
        if self._paused:
            self._drain = self._loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None
            if self._lost is not None:
                raise to_okq_error(self._lost, "send")

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.abort()

    def has_unread(self) -> bool:
        return bool(self._chunks) or self._eof


class AsyncioBackend(EventLoopBackend):
    """The asyncio implementation of `Backend`."""

    name = "asyncio"

    async def connect(
        self, host: str, port: int, timeout_s: float | None, tls: SSLContext | None = None
    ) -> AsyncStream:
        loop = asyncio.get_running_loop()
        what = f"connect to {host}:{port}" + (" (TLS)" if tls is not None else "")
        try:
            transport, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _AsyncioStream(loop),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                ),
                timeout_s,
            )
        except OSError as exc:  # builtin TimeoutError is an OSError too
            raise to_okq_error(exc, what, connecting=True) from exc
        if protocol._transport is None:
            transport.close()
            raise ConnectError(
                f"{what}: unsupported asyncio transport {type(transport).__qualname__} "
                "(it needs write(), is_closing() and abort())"
            )
        sock = transport.get_extra_info("socket")  # asyncio sets TCP_NODELAY itself
        try:
            if sock is not None:
                keep_alive(sock.setsockopt)
        except OSError as exc:
            transport.abort()
            raise to_okq_error(exc, what, connecting=True) from exc
        return protocol

    def event(self) -> Waiter:
        return asyncio.Event()

    async def wait(self, waiter: PoolWaiter, timeout_s: float | None) -> bool:
        event = cast(asyncio.Event, waiter)  # made by `event`
        if timeout_s is None:
            await event.wait()
            return True
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except asyncio.TimeoutError:
            return waiter.is_set()
        return True

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def run_until(self, fn: Callable[[], Awaitable[T]], deadline: float) -> tuple[bool, T]:
        if _TIMEOUT_AT is not None:  # 3.11+: in the caller's own task, no task per call
            scope = _TIMEOUT_AT(deadline)
            try:
                async with scope:
                    return True, await fn()
            except TimeoutError:
                if scope.expired():
                    return False, None  # type: ignore[return-value]  # (False, _): no result
                raise  # the call's own TimeoutError
        task = asyncio.ensure_future(fn())
        try:
            done, _ = await asyncio.wait((task,), timeout=max(0.0, deadline - self.now()))
        except BaseException:  # we are cancelled: so is the handler, which ends before we do
            await cancel_and_wait((task,))
            raise
        if done:
            return True, task.result()
        await cancel_and_wait((task,))  # let it unwind; its outcome is dropped on purpose
        if not task.cancelled() and task.exception() is None:
            return True, task.result()  # it finished while being cancelled
        return False, None  # type: ignore[return-value]  # (False, _) carries no result

    async def race_stop(self, fn: Callable[[], Awaitable[T]], stop: PoolStop) -> T | None:
        if stop.is_set():
            return None
        task = asyncio.ensure_future(fn())
        stopper = asyncio.ensure_future(cast(StopEvent, stop).wait())
        try:
            await asyncio.wait((task, stopper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait((task, stopper))  # a finished task is left as it is
        return None if task.cancelled() else task.result()

    async def sleep_or_stop(self, seconds: float, stop: PoolStop) -> bool:
        return await self.race_stop(functools.partial(self._slept, seconds), stop) is not None

    async def _slept(self, seconds: float) -> bool:
        await asyncio.sleep(seconds)
        return True

    async def fill_or_stop(
        self, stream: AsyncStream, machine: Feedable, timeout_s: float, stop: PoolStop
    ) -> bool:
        return (
            await self.race_stop(functools.partial(_filled, stream, machine, timeout_s), stop)
            is not None
        )

    def stop_group(self, stop: PoolStop | None) -> PoolStop | None:
        return stop  # the first failure cancels the other workers

    async def run_all(
        self, fns: Sequence[Callable[[], Awaitable[None]]], group: PoolStop | None
    ) -> None:
        if len(fns) == 1:  # in the caller's own task: a cancellation of it is seen at once
            await fns[0]()
            return
        tasks = [asyncio.ensure_future(fn()) for fn in fns]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            await cancel_and_wait(tasks)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]  # checked not None just above

    def cancel_pending(self) -> bool:
        # A cancel() of the running task (by a handler, or anyio's scope) that its next
        # await will raise: Task.cancelling() on 3.11+, the task's own flag before.
        task = asyncio.current_task()
        if task is None:
            return False
        cancelling = getattr(task, "cancelling", None)
        if cancelling() if cancelling is not None else getattr(task, "_must_cancel", False):
            return True
        # anyio's scopes cancel the running task only at its next iteration: ask anyio
        anyio = sys.modules.get("anyio")
        if anyio is None:
            return False
        try:
            return bool(anyio.current_effective_deadline() == -math.inf)
        except Exception:  # not in a context anyio knows
            return False

    async def shielded(self, fn: Callable[[], Awaitable[None]], timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        task = asyncio.ensure_future(fn())
        cancelled: asyncio.CancelledError | None = None
        # Bounded: each pass ends at the deadline, when the task ends, or at a new
        # cancellation of ours (anyio's scopes cancel at every loop iteration); past the
        # deadline the task is cancelled and waited for (`wait_ended`).
        while not task.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                task.cancel()
                try:
                    await wait_ended((task,))
                except asyncio.CancelledError as exc:
                    cancelled = exc
                break
            try:
                await asyncio.wait((task,), timeout=remaining)
            except asyncio.CancelledError as exc:
                cancelled = exc
        finished = not task.cancelled()
        if finished:
            task.result()  # its own error is raised (the caller catches what it expects)
        if cancelled is not None:
            raise cancelled
        return finished


#: ``asyncio.timeout_at`` (3.11+), else None (a task per timed call).
_TIMEOUT_AT: Final = getattr(asyncio, "timeout_at", None)


async def _filled(stream: AsyncStream, machine: Feedable, timeout_s: float) -> bool:
    await stream.fill(machine, timeout_s)
    return True


async def wait_ended(tasks: Collection[asyncio.Future[Any]]) -> None:
    """Return once every task has ended, even if the caller is cancelled meanwhile: that
    cancellation is raised afterwards, so no task outlives its caller.

    Plain asyncio cancels a task once, but anyio's cancel scopes (on its asyncio backend)
    cancel it again at every loop iteration until it leaves the scope: a bare ``await
    asyncio.wait(tasks)`` in a ``finally`` would then return at once, leaving handlers
    running after `consume` ended, or a borrowed connection never given back.  The tasks'
    errors are marked retrieved: the callers read or drop them on purpose.
    """
    cancelled: asyncio.CancelledError | None = None
    # Bounded by the tasks: each pass ends when they all have, or at a new cancellation.
    while not all(task.done() for task in tasks):
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError as exc:
            cancelled = exc
    for task in tasks:
        if not task.cancelled():
            task.exception()
    if cancelled is not None:
        raise cancelled


async def cancel_and_wait(tasks: Collection[asyncio.Future[Any]]) -> None:
    """Cancel the tasks (those still running) and `wait_ended` for them."""
    for task in tasks:
        task.cancel()
    await wait_ended(tasks)


async def run_to_end(awaitable: Awaitable[T]) -> T:
    """Await `awaitable` to its end even if the caller is cancelled meanwhile (`wait_ended`):
    for cleanup that must finish, such as giving a borrowed connection back."""
    task = asyncio.ensure_future(awaitable)
    await wait_ended((task,))
    return task.result()


ASYNCIO: Final = AsyncioBackend()
