"""The seam between the driver and a backend: what a stream and a backend must do.

Owns: the `AsyncStream` protocol (send bytes, read once into a machine, close, tell whether
the peer spoke unasked), the `AsyncBackend` protocol (connect, the clock, a waiter, a lock),
and `close_quietly`.
Must not know: how any backend does it.
"""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Protocol

from okq_proto import ClientConnection, DecoderBackend

__all__ = ["AsyncBackend", "AsyncStream", "Feedable", "Lock", "Waiter", "close_quietly"]


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


class Waiter(Protocol):
    """An event a task (or thread) waits on: ``asyncio.Event``, ``trio.Event``,
    ``threading.Event``."""

    def is_set(self) -> bool: ...

    def set(self) -> None: ...


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

    async def connect(self, host: str, port: int, timeout_s: float | None) -> AsyncStream:
        """A stream to ``host:port``.  Raises `ConnectError` or `TimeoutError`."""
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


async def close_quietly(stream: AsyncStream) -> None:
    """Close a stream that may already be failing; errors are dropped (nothing to report)."""
    with contextlib.suppress(Exception):
        await stream.aclose()
