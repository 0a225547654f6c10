"""The seam between the driver and a backend: what a stream and a backend must do.

Owns: the `AsyncStream` protocol (send bytes, read once into a machine, close, tell whether
the peer spoke unasked), the `AsyncBackend` protocol (connect, the clock, a waiter, a lock),
and `close_quietly`.
Must not know: how any backend does it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from ssl import SSLContext
from types import TracebackType
from typing import Protocol, TypeVar

from okq_proto import ClientConnection, DecoderBackend

__all__ = [
    "AsyncBackend",
    "AsyncStream",
    "Feedable",
    "Lock",
    "StopEvent",
    "Waiter",
    "close_quietly",
]


T = TypeVar("T")


class Feedable(Protocol):
    """What a stream feeds: a `ClientConnection`, or a `Consumer` wrapping one."""

    def receive_data(self, data: bytes | bytearray | memoryview) -> None: ...

    def receive_eof(self) -> None: ...


class AsyncStream(Protocol):
    """A connection's bytes, as the driver needs them.

    Every failure is an okq `TransportError` (`TimeoutError` for a read that waited its
    `timeout_s`); nothing else escapes.
    """

    def new_machine(self, decoder: DecoderBackend, max_reply_bytes: int | None) -> ClientConnection:
        """The `ClientConnection` this stream feeds (a stream whose library parses replies
        itself gives one that takes parsed replies)."""
        ...

    async def fill(self, machine: Feedable, timeout_s: float | None) -> None:
        """Read once, waiting at most `timeout_s` (None: no limit), and feed `machine`
        (its end of file too).  `machine` is the one `new_machine` made, or the `Consumer`
        wrapping it."""
        ...

    async def send_all(self, data: bytes) -> None:
        """Write all of `data`."""
        ...

    async def aclose(self) -> None:
        """Close at once (idempotent)."""
        ...

    def has_unread(self) -> bool:
        """Did the peer send anything (bytes, its end of file) not yet read?  Then a pooled
        connection is dropped instead of being handed out."""
        ...

    def now(self) -> float:
        """The monotonic clock its read deadlines are measured with (the backend's: the
        loop's time on asyncio, trio's clock, `time.monotonic` for threads), read without
        looking the loop up each time."""
        ...


class Waiter(Protocol):
    """An event a task (or thread) waits on: ``asyncio.Event``, ``trio.Event``,
    ``threading.Event``."""

    def is_set(self) -> bool: ...

    def set(self) -> None: ...


class StopEvent(Protocol):
    """What a consumer needs of its ``stop``: ``threading.Event``, ``asyncio.Event`` or
    ``trio.Event`` (each backend waits on its own kind)."""

    def is_set(self) -> bool: ...


class Lock(Protocol):
    """Mutual exclusion for the pool's bookkeeping: a real lock for threads; for one event
    loop, where nothing runs between two awaits, a lock that does nothing."""

    def __enter__(self) -> object: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> object: ...


class AsyncBackend(Protocol):
    """What the driver needs of an I/O world besides streams."""

    async def connect(
        self, host: str, port: int, timeout_s: float | None, tls: SSLContext | None = None
    ) -> AsyncStream:
        """A stream to ``host:port``, in TLS with the context `tls` when given (the server's
        name checked against ``host``; the handshake is part of connecting).  Raises
        `ConnectError` (a failed handshake or certificate check too) or `TimeoutError`."""
        ...

    def now(self) -> float:
        """The monotonic clock read timeouts are measured with."""
        ...

    def event(self) -> Waiter:
        """A new waiter."""
        ...

    async def wait(self, waiter: Waiter, timeout_s: float | None) -> bool:
        """Wait until `waiter` is set (True) or `timeout_s` passed (False)."""
        ...

    def lock(self) -> Lock:
        """A lock for the pool's bookkeeping."""
        ...

    # -- what consumers need -----------------------------------------------------------

    async def sleep(self, seconds: float) -> None:
        """Sleep (a checkpoint on the async backends)."""
        ...

    async def sleep_or_stop(self, seconds: float, stop: StopEvent) -> bool:
        """Sleep, or less if `stop` is set meanwhile.  True if the whole sleep passed."""
        ...

    async def fill_or_stop(
        self, stream: AsyncStream, machine: Feedable, timeout_s: float, stop: StopEvent
    ) -> bool:
        """`AsyncStream.fill`, abandoned as soon as `stop` is set (then False: the stream
        may be left mid-read and must be closed)."""
        ...

    async def race_stop(self, fn: Callable[[], Awaitable[T]], stop: StopEvent) -> T | None:
        """Run ``fn()``; abandon it once `stop` is set, where the backend can cancel a call
        (then None).  A blocking backend only looks at `stop` before the call."""
        ...

    # async only: begin (a blocking handler cannot be cancelled: it runs to its end)
    async def run_until(self, fn: Callable[[], Awaitable[T]], deadline: float) -> tuple[bool, T]:
        """Run ``fn()``; cancel it at `deadline` (on `now`'s clock) where the backend can
        cancel.  Returns (finished in time, its result)."""
        ...

    # async only: end

    def stop_group(self, stop: StopEvent | None) -> StopEvent | None:
        """The stop event of workers run together by `run_all`: set by `stop`, and by
        `run_all` when one of them fails (a backend that cancels instead returns `stop`)."""
        ...

    async def run_all(
        self, fns: Sequence[Callable[[], Awaitable[None]]], group: StopEvent | None
    ) -> None:
        """Run the functions side by side until all have ended; the first error stops the
        others (cancelled, or through `group`) and is raised."""
        ...

    def cancel_pending(self) -> bool:
        """True when the caller has a cancellation pending that its next checkpoint will
        raise (trio: an enclosing cancel scope was cancelled); False where it cannot tell."""
        ...

    async def shielded(self, fn: Callable[[], Awaitable[None]], timeout_s: float) -> bool:
        """Run ``fn()`` to its end even if the caller is cancelled meanwhile, but for at most
        `timeout_s` seconds where the backend can cut it.  True if it finished in time."""
        ...


async def close_quietly(stream: AsyncStream) -> None:
    """Close a stream that may already be failing; errors are dropped (nothing to report)."""
    with contextlib.suppress(Exception):
        await stream.aclose()
