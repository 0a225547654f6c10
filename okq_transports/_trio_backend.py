"""The trio backend of the one async driver.

Owns: any ``trio.abc.Stream`` as a byte stream (so ``memory_stream_pair`` works too),
connecting, and the consumer's primitives on trio (cancel scopes, nurseries).  trio is
imported on first use: it is an optional dependency.  Every failure leaves as an okq error:
no ``OSError``, ``trio.BrokenResourceError`` or ``TooSlowError`` escapes as is.
Must not know: okq commands, pools, consumers.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable, Iterator, Sequence
from ssl import SSLContext
from typing import TYPE_CHECKING, TypeVar, cast

from okq_proto import (
    ConnectError,
    TimeoutError,
    TransportError,
)

from ._async.streams import AsyncStream, Feedable
from ._async.streams import StopEvent as PoolStop
from ._async.streams import Waiter as PoolWaiter
from ._backends import (
    ByteStream,
    EventLoopBackend,
    StopEvent,
    Waiter,
)
from ._exceptions import to_okq_error
from ._socket import keep_alive, readable_now

T = TypeVar("T")

if TYPE_CHECKING:
    import trio

__all__ = ["TrioBackend", "TrioStream", "trio_backend", "unwrap_single_group"]


class TrioStream(ByteStream):
    """Any ``trio.abc.Stream`` as an `AsyncStream` (so ``memory_stream_pair`` works too)."""

    __slots__ = ("_stream", "_trio", "now")

    def __init__(self, stream: trio.abc.Stream) -> None:
        import trio

        self._trio = trio
        self._stream = stream
        self.now = trio.current_time

    async def receive_some(self, max_bytes: int, timeout_s: float | None) -> bytes:
        trio = self._trio
        try:
            if timeout_s is None:
                return bytes(await self._stream.receive_some(max_bytes))
            with trio.fail_after(timeout_s):
                return bytes(await self._stream.receive_some(max_bytes))
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise to_okq_error(exc, "receive") from exc
        except trio.TooSlowError as exc:
            raise TimeoutError("no reply from the server in time") from exc
        except trio.BusyResourceError as exc:
            raise TransportError(f"stream used by two tasks at once: {exc}") from exc

    async def send_all(self, data: bytes) -> None:
        trio = self._trio
        try:
            await self._stream.send_all(data)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise to_okq_error(exc, "send") from exc
        except trio.BusyResourceError as exc:
            raise TransportError(f"stream used by two tasks at once: {exc}") from exc

    async def aclose(self) -> None:
        await self._trio.aclose_forcefully(self._stream)

    def has_unread(self) -> bool:
        inner = getattr(self._stream, "transport_stream", self._stream)  # under a trio.SSLStream
        sock = getattr(inner, "socket", None)  # a trio.SocketStream's
        return sock is not None and readable_now(sock.fileno())


class TrioBackend(EventLoopBackend):
    """The trio implementation of `Backend`."""

    name = "trio"

    def __init__(self) -> None:
        import trio

        self._trio = trio

    async def connect(
        self, host: str, port: int, timeout_s: float | None, tls: SSLContext | None = None
    ) -> AsyncStream:
        trio = self._trio
        what = f"connect to {host}:{port}" + (" (TLS)" if tls is not None else "")
        try:
            with trio.fail_after(timeout_s if timeout_s is not None else math.inf):
                return await self._open(host, port, tls, what)
        except trio.TooSlowError as exc:
            raise ConnectError(f"{what}: timed out") from exc

    async def _open(self, host: str, port: int, tls: SSLContext | None, what: str) -> AsyncStream:
        trio = self._trio
        try:
            tcp = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise ConnectError(f"{what}: {exc}") from exc
        try:
            keep_alive(tcp.setsockopt)  # trio sets TCP_NODELAY itself
        except OSError as exc:
            await trio.aclose_forcefully(tcp)
            raise ConnectError(f"{what}: {exc}") from exc
        if tls is None:
            return TrioStream(tcp)
        stream = trio.SSLStream(tcp, tls, server_hostname=host)
        try:
            await stream.do_handshake()  # a bad certificate fails here, not at first use
        except (OSError, trio.BrokenResourceError) as exc:
            await trio.aclose_forcefully(stream)
            cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
            raise ConnectError(f"{what}: {cause or exc}") from exc
        return TrioStream(stream)

    def event(self) -> Waiter:
        return self._trio.Event()

    async def wait(self, waiter: PoolWaiter, timeout_s: float | None) -> bool:
        event = cast(Waiter, waiter)  # a trio.Event, made by `event`
        if timeout_s is None:
            await event.wait()
            return True
        with self._trio.move_on_after(timeout_s):
            await event.wait()
        return waiter.is_set()

    async def sleep(self, seconds: float) -> None:
        await self._trio.sleep(seconds)

    def now(self) -> float:
        return self._trio.current_time()

    async def run_until(self, fn: Callable[[], Awaitable[T]], deadline: float) -> tuple[bool, T]:
        with self._trio.move_on_at(deadline) as scope:
            return True, await fn()
        assert scope.cancelled_caught
        return False, None  # type: ignore[return-value]  # (False, _) carries no result

    async def race_stop(self, fn: Callable[[], Awaitable[T]], stop: PoolStop) -> T | None:
        result: list[T] = []
        with unwrap_single_group():
            async with self._trio.open_nursery() as nursery:

                async def run() -> None:
                    result.append(await fn())
                    nursery.cancel_scope.cancel()

                async def watch() -> None:
                    await cast(StopEvent, stop).wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(run)
                nursery.start_soon(watch)
        return result[0] if result else None

    async def sleep_or_stop(self, seconds: float, stop: PoolStop) -> bool:
        with self._trio.move_on_after(seconds):
            await cast(StopEvent, stop).wait()
            return False
        return True

    async def fill_or_stop(
        self, stream: AsyncStream, machine: Feedable, timeout_s: float, stop: PoolStop
    ) -> bool:
        async def filled() -> bool:
            await stream.fill(machine, timeout_s)
            return True

        return await self.race_stop(filled, stop) is not None

    def stop_group(self, stop: PoolStop | None) -> PoolStop | None:
        return stop  # the first failure cancels the other workers (the nursery)

    async def run_all(
        self, fns: Sequence[Callable[[], Awaitable[None]]], group: PoolStop | None
    ) -> None:
        with unwrap_single_group():
            async with self._trio.open_nursery() as nursery:
                for fn in fns:
                    nursery.start_soon(fn)

    def cancel_pending(self) -> bool:
        return self._trio.current_effective_deadline() == -math.inf

    async def shielded(self, fn: Callable[[], Awaitable[None]], timeout_s: float) -> bool:
        trio = self._trio
        with trio.CancelScope(shield=True, deadline=trio.current_time() + timeout_s) as scope:
            await fn()
        return not scope.cancelled_caught


@contextlib.contextmanager
def unwrap_single_group() -> Iterator[None]:
    """Re-raise the one exception of an exception group that holds exactly one (trio's
    nurseries always group), so callers can write plain ``except ConnectionClosed``."""
    try:
        yield
    except BaseException as exc:
        leaves = getattr(exc, "exceptions", None)
        if (
            type(exc).__name__ in ("ExceptionGroup", "BaseExceptionGroup")
            and isinstance(leaves, tuple)
            and len(leaves) == 1
            and isinstance(leaves[0], BaseException)
            and not hasattr(leaves[0], "exceptions")
        ):
            raise leaves[0] from exc
        raise


_TRIO: list[TrioBackend] = []


def trio_backend() -> TrioBackend:
    """The trio backend (trio is imported on first use: it is an optional dependency)."""
    if not _TRIO:
        _TRIO.append(TrioBackend())
    return _TRIO[0]
