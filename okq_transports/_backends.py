"""What the async consumers and pools need of an event loop library: the seam of the backends.

Owns: what the asyncio and trio backends of `okq_transports._async.streams.AsyncBackend`
share: the async stop event and waiter protocols (what they wait on), the lock-free lock of
one event loop, and `ByteStream`
(what every byte stream shares: its machine, and reading once into it).  The backends are
``_asyncio_backend`` and ``_trio_backend`` (httpcore's ``_backends``).
Must not know: okq commands, pools, consumers.  An ``if`` about okq semantics here is a bug.
"""

from __future__ import annotations

from typing import Final, Protocol, TypeVar

from okq_proto import ClientConnection, DecoderBackend

from ._async.streams import AsyncStream, Feedable

__all__ = [
    "NO_LOCK",
    "READ_SIZE",
    "AsyncStream",
    "ByteStream",
    "EventLoopBackend",
    "NoLock",
    "StopEvent",
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


class StopEvent(Protocol):
    """What a stop signal must offer: ``asyncio.Event`` and ``trio.Event`` both fit."""

    def is_set(self) -> bool: ...

    async def wait(self) -> object: ...


class Waiter(Protocol):
    """A one-shot event (``asyncio.Event``, ``trio.Event``): what the pool's waiters park on."""

    def is_set(self) -> bool: ...

    def set(self) -> None: ...

    async def wait(self) -> object: ...


class EventLoopBackend:
    """What the asyncio and trio backends share: one event loop, so the pool's bookkeeping
    needs no lock."""

    __slots__ = ()

    def lock(self) -> NoLock:
        return NO_LOCK


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
