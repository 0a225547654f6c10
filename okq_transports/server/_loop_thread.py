"""An async server on its own asyncio loop in a daemon thread.

Owns: the thread, its event loop, the start handshake (return once the server listens, or
raise what stopped it) and the stop request sent from another thread.
Must not know: what the server does or how it is configured; `okq_transports.server` builds
`ThreadedServer` (sync code, fixtures) and `open_server` (trio) on `LoopThread`
(in ``okq_transports.server._runners``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Protocol, TypeVar, final

__all__ = ["AsyncServer", "LoopThread"]


class AsyncServer(Protocol):
    """What `LoopThread` runs: started and closed on the thread's own loop."""

    async def start(self) -> None:
        """Begin serving; return once listening."""

    async def aclose(self) -> None:
        """Stop serving."""


S = TypeVar("S", bound=AsyncServer)


@final
class LoopThread:
    """Runs one server at a time, each start on a fresh asyncio loop in a new daemon thread.

    Not thread-safe itself: call `start` and `stop` from one thread (or under a lock).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    @property
    def running(self) -> bool:
        """True between a successful `start` and `stop`."""
        return self._thread is not None

    def start(self, factory: Callable[[], S], timeout_s: float) -> S:
        """Build a server with ``factory`` in a new thread, start it there, and return it once it
        listens.

        Raises:
            RuntimeError: already running.
            TimeoutError: the server did not start within ``timeout_s``.
            BaseException: whatever building or starting the server raised.
        """
        if self._thread is not None:
            raise RuntimeError("server already running")
        ready = threading.Event()
        started: list[S] = []
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(factory, ready, started, failure), name=self._name, daemon=True
        )
        self._thread.start()
        if ready.wait(timeout_s) and started:
            return started[0]
        self.stop(timeout_s)
        if failure:
            raise failure[0]
        raise TimeoutError(f"the server did not start within {timeout_s} s")

    def stop(self, timeout_s: float) -> None:
        """Ask the server to close gracefully and join its thread (waiting up to ``timeout_s``).
        Idempotent.

        Raises:
            RuntimeError: the thread was still running after ``timeout_s``.
        """
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout_s)
        if thread.is_alive():
            # Never pretend: a server still closing holds its port and its storage.
            raise RuntimeError(f"the server thread did not stop within {timeout_s} s")
        self._thread = None

    def _run(
        self,
        factory: Callable[[], S],
        ready: threading.Event,
        started: list[S],
        failure: list[BaseException],
    ) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = stop = asyncio.Event()
            try:
                server = factory()
                await server.start()
            except BaseException as exc:
                failure.append(exc)
                return
            started.append(server)
            ready.set()
            try:
                await stop.wait()
            finally:
                await server.aclose()

        try:
            asyncio.run(main())
        finally:
            self._loop = None
            ready.set()
