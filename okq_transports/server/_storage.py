"""Where the embedded okq server keeps its queues: the `Storage` interface and `MemoryStorage`.

Owns: the async storage interface the server talks to (one method per okq operation, in bytes),
push notifications out of the storage (`Storage.subscribe`), and the in-memory implementation
that drives the pure `okq_proto.server.QueueEngine` and its restore sweep timer.
Must not know: connections, RESP, okq's argument rules or reply formats (the
`okq_proto.server.Dispatcher`).

The interface mirrors okq's Redis steps (protocol doc section 10) so that a Redis-backed
storage using okq's key layout can be dropped in; it would raise `StorageError` for any Redis
failure (the server then replies ``ERR unexpected server-side error``) and publish what its
pubsub connection receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol, final

from okq_proto.server import (
    DEFAULT_EXPIRE_S,
    DEFAULT_SWEEP_INTERVAL_S,
    ExpiryTooLargeError,
    QueueEngine,
    QueueStatus,
)

__all__ = ["MemoryStorage", "PublishHandler", "Storage", "StorageError"]

_log = logging.getLogger("okq.server")

PublishHandler = Callable[[bytes], None]
"""Called with a queue name each time an event was pushed to that queue."""


class StorageError(Exception):
    """The storage failed an operation (okq: a Redis error).  The reply is a server-side error."""


class Storage(Protocol):
    """What the embedded server needs from its storage.  All names, ids, contents are bytes.

    Methods are called from the server's event loop only.  ``consumer`` is a connection id.
    """

    async def start(self) -> None:
        """Begin background work (the restore sweep) on the running loop; may be called again
        after `stop`."""

    async def stop(self) -> None:
        """End background work; the stored data stays."""

    def subscribe(self, handler: PublishHandler) -> Callable[[], None]:
        """Call ``handler(queue)`` for every successful push; returns an unsubscribe function."""

    async def push(self, queue: bytes, event_id: bytes, contents: bytes, *, right: bool) -> bool:
        """QLPUSH/QRPUSH; False for a duplicate id.  Publishes on success."""

    async def peek(self, queue: bytes, *, left: bool) -> tuple[bytes, bytes] | None:
        """QLPEEK/QRPEEK."""

    async def pop(self, queue: bytes, expire_s: int | None) -> tuple[bytes, bytes] | None:
        """QRPOP (None: default expiry; 0: acknowledge at once)."""

    async def ack(self, queue: bytes, event_id: bytes) -> int:
        """QACK; 1 if removed, else 0."""

    async def flush(self, queue: bytes) -> None:
        """QFLUSH."""

    async def status(self, queues: Sequence[bytes] | None) -> list[QueueStatus]:
        """QSTATUS data for ``queues`` in order, or for every listed queue (sorted) if None."""

    async def register(self, consumer: str, queues: Sequence[bytes]) -> None:
        """Count ``consumer`` for exactly ``queues`` (empty: for none)."""

    async def first_with_unclaimed(self, queues: Sequence[bytes]) -> bytes | None:
        """QNOTIFY's initial check: the first of ``queues`` with an unclaimed event."""


@final
class MemoryStorage:
    """`Storage` over the pure in-memory `QueueEngine`.

    Survives server restarts (keep the instance, start a new server with it).  Not
    thread-safe: use it from one event loop at a time.

    Args:
        sweep_interval_s: restore sweep period (okq: 10 s), counted from each `start`.
        default_expire_s: claim duration of a QRPOP without ``EX``.
        clock: monotonic seconds (tests may inject one).
    """

    def __init__(
        self,
        *,
        sweep_interval_s: float = DEFAULT_SWEEP_INTERVAL_S,
        default_expire_s: int = DEFAULT_EXPIRE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.engine = QueueEngine(
            now=clock(), sweep_interval_s=sweep_interval_s, default_expire_s=default_expire_s
        )
        """The pure engine (inspect it from the server's loop thread only)."""
        self._handlers: list[PublishHandler] = []
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the sweep timer; the sweep phase restarts now, like a restarted okq."""
        if self._sweeper is not None:
            raise RuntimeError("MemoryStorage already started")
        self.engine.restart_sweep_clock(self._clock())
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def stop(self) -> None:
        """Stop the sweep timer (idempotent)."""
        task, self._sweeper = self._sweeper, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _sweep_forever(self) -> None:
        while True:
            delay = self.engine.next_deadline() - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            moved = self.engine.handle_timeout(self._clock())
            if moved:
                _log.debug("restore sweep put back %d event(s)", moved)

    def subscribe(self, handler: PublishHandler) -> Callable[[], None]:
        """Call ``handler(queue)`` after every successful push; returns the unsubscriber."""
        self._handlers.append(handler)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._handlers.remove(handler)

        return unsubscribe

    async def push(self, queue: bytes, event_id: bytes, contents: bytes, *, right: bool) -> bool:
        """QLPUSH/QRPUSH; False for a duplicate id.  Publishes on success."""
        stored = self.engine.push(queue, event_id, contents, right=right)
        if stored:
            for handler in list(self._handlers):
                handler(queue)
        return stored

    async def peek(self, queue: bytes, *, left: bool) -> tuple[bytes, bytes] | None:
        """QLPEEK/QRPEEK."""
        return self.engine.peek(queue, left=left)

    async def pop(self, queue: bytes, expire_s: int | None) -> tuple[bytes, bytes] | None:
        """QRPOP.

        Raises:
            StorageError: the expiry is too large for Redis (the event stays claimed, lockless).
        """
        try:
            return self.engine.pop(queue, expire_s, self._clock())
        except ExpiryTooLargeError as exc:
            raise StorageError(str(exc)) from exc

    async def ack(self, queue: bytes, event_id: bytes) -> int:
        """QACK."""
        return self.engine.ack(queue, event_id)

    async def flush(self, queue: bytes) -> None:
        """QFLUSH."""
        self.engine.flush(queue)

    async def status(self, queues: Sequence[bytes] | None) -> list[QueueStatus]:
        """QSTATUS data."""
        return self.engine.status(queues)

    async def register(self, consumer: str, queues: Sequence[bytes]) -> None:
        """Count ``consumer`` for exactly ``queues``."""
        self.engine.register(consumer, queues)

    async def first_with_unclaimed(self, queues: Sequence[bytes]) -> bytes | None:
        """QNOTIFY's initial check."""
        return self.engine.first_with_unclaimed(queues)
