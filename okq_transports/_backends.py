"""What the async consumers and pools need of an event loop library: the seam of the backends.

Owns: the `Backend` protocol (the pool's part, `okq_transports._async.streams.AsyncBackend`,
plus the consumer's: sleeping, running a call until a deadline, racing a call against a stop
event, running workers side by side, telling a pending cancellation, a short shielded call),
the stop event and waiter protocols, the lock-free lock of one event loop, and `ByteStream`
(what every byte stream shares: its machine, and reading once into it).  The backends are
``_asyncio_backend`` and ``_trio_backend`` (httpcore's ``_backends``).
Must not know: okq commands, pools, consumers.  An ``if`` about okq semantics here is a bug.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol, TypeVar

from okq_proto import ClientConnection, DecoderBackend

from ._async.streams import AsyncBackend, AsyncStream, Feedable

__all__ = [
    "NO_LOCK",
    "READ_SIZE",
    "STOPPED",
    "AsyncStream",
    "Backend",
    "ByteStream",
    "NoLock",
    "StopEvent",
    "Stopped",
    "Waiter",
]

T = TypeVar("T")

#: How much one ``receive_some`` asks for.
READ_SIZE: Final = 65536
#: The asyncio stream stops reading from its socket while it buffers more than this unread
#: (flow control): a flood lands in the kernel's buffers, not in ours.
HIGH_WATER: Final = 4 * READ_SIZE


class NoLock:
    """The pool's lock on one event loop: nothing runs between two awaits, and the pool never
    awaits while holding it, so it needs no lock at all."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None

    def __repr__(self) -> str:
        return "NO_LOCK"


NO_LOCK: Final = NoLock()


class Stopped(enum.Enum):
    """Returned by `Backend.race_stop` when the stop event won."""

    STOPPED = enum.auto()


STOPPED: Final = Stopped.STOPPED


class StopEvent(Protocol):
    """What a stop signal must offer: ``asyncio.Event`` and ``trio.Event`` both fit."""

    def is_set(self) -> bool: ...

    async def wait(self) -> object: ...


class Waiter(Protocol):
    """A one-shot event (``asyncio.Event``, ``trio.Event``): what the pool's waiters park on."""

    def is_set(self) -> bool: ...

    def set(self) -> None: ...

    async def wait(self) -> object: ...


class Backend(AsyncBackend, Protocol):
    """The primitives the shared driver uses; one implementation per event loop library."""

    name: str

    async def connect(self, host: str, port: int, timeout_s: float | None) -> AsyncStream:
        """Open a TCP stream (TCP_NODELAY, keepalive).  Raises `ConnectError`/`TimeoutError`."""
        ...

    def event(self) -> Waiter:
        """A fresh one-shot event."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep (a checkpoint)."""
        ...

    def now(self) -> float:
        """The loop's monotonic clock, in seconds (what `Delivery.deadline` is measured in)."""
        ...

    async def run_until(self, fn: Callable[[], Awaitable[T]], deadline: float) -> tuple[bool, T]:
        """Run ``fn()``; cancel it at `deadline`.  Returns (finished in time, its result)."""
        ...

    async def race_stop(self, fn: Callable[[], Awaitable[T]], stop: StopEvent) -> T | Stopped:
        """Run ``fn()`` but cancel it as soon as `stop` is set (then return `STOPPED`)."""
        ...

    async def run_all(self, fns: Sequence[Callable[[], Awaitable[None]]]) -> None:
        """Run the functions side by side; the first error cancels the others and is raised."""
        ...

    def cancel_pending(self) -> bool:
        """True when the calling task has a cancellation pending that its next checkpoint
        will raise (trio: an enclosing cancel scope was cancelled).  asyncio cannot tell
        before 3.11 and answers False: there the cancellation is raised where it lands."""
        ...

    async def shielded(self, fn: Callable[[], Awaitable[None]], timeout_s: float) -> bool:
        """Run ``fn()`` to its end even if the caller is cancelled meanwhile, but for at most
        `timeout_s` seconds (then it is cancelled).  Returns True if it finished in time.  A
        cancellation of the caller is not lost: trio raises it at the next checkpoint, asyncio
        raises it here, once ``fn()`` has ended."""
        ...


class ByteStream:
    """What every byte stream shares: a machine with our own decoder, fed from
    ``receive_some``."""

    __slots__ = ()

    async def receive_some(self, max_bytes: int, timeout_s: float | None) -> bytes:
        raise NotImplementedError

    def new_machine(self, decoder: DecoderBackend, max_reply_bytes: int | None) -> ClientConnection:
        return ClientConnection(backend=decoder, max_reply_bytes=max_reply_bytes)

    async def fill(self, machine: Feedable, timeout_s: float | None) -> None:
        data = await self.receive_some(READ_SIZE, timeout_s)
        if data:
            machine.receive_data(data)
        else:
            machine.receive_eof()
