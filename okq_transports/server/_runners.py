"""The embedded server outside an asyncio program: threads, trio and the foreground.

Owns: `ThreadedServer` (an `EmbeddedServer` on its own loop in a daemon thread, for sync code
and pytest fixtures), `run_in_thread`, `open_server` (trio: the thread started and stopped
from trio worker threads) and `serve` (the CLI's ``okq serve``: the foreground until SIGINT or
SIGTERM).
Must not know: okq's rules or the wire (`EmbeddedServer` and the machines under it); the
thread itself is `okq_transports.server._loop_thread.LoopThread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Final, final

from ._embedded import EmbeddedServer
from ._loop_thread import LoopThread
from ._options import Listening, ServerOptions, default_storage
from ._storage import Storage

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is 3.11+; annotations only

__all__ = ["ThreadedServer", "open_server", "run_in_thread", "serve"]

_START_TIMEOUT_S: Final = 10.0


@final
class ThreadedServer(Listening):
    """An `EmbeddedServer` on its own event loop in a daemon thread, for sync code and fixtures.

    ::

        with run_in_thread(sweep_interval_s=0.5) as srv:
            sock = socket.create_connection((srv.host, srv.port))
            ...
            srv.stop()        # clients see their connections closed
            srv.start()       # same port, same storage

    Args:
        host, port: as for `EmbeddedServer`; after the first start the bound port is reused by
            later starts.
        storage: kept across `stop` / `start`; a fresh `MemoryStorage` if None.
        **options: the `ServerOptions`, as for `EmbeddedServer`.
    """

    def _init(self) -> None:
        self._port = self._requested_port
        self._thread = LoopThread("okq-embedded-server")

    @property
    def port(self) -> int:
        """The bound port (0 before the first start)."""
        return self._port

    @property
    def running(self) -> bool:
        """True between `start` and `stop`."""
        return self._thread.running

    def _listening(self) -> bool:
        return self._thread.running

    def start(self) -> ThreadedServer:
        """Start serving in a new thread; returns once listening (on the same port as before).

        Raises:
            RuntimeError: already running, or the server failed to start (cause chained).
        """
        if self._thread.running:
            raise RuntimeError("server already running")
        try:
            server = self._thread.start(self._new_server, _START_TIMEOUT_S)
        except BaseException as exc:
            raise RuntimeError(f"embedded okq server did not start on {self.address}") from exc
        self._port = server.port
        return self

    def _new_server(self) -> EmbeddedServer:
        return EmbeddedServer(self._host, self._port, storage=self.storage, **self._options)

    def stop(self) -> None:
        """Close the server gracefully and join its thread.  The storage is kept.  Idempotent."""
        self._thread.stop(_START_TIMEOUT_S * 3)

    def restart(self) -> None:
        """`stop`, then `start` on the same port with the same storage."""
        self.stop()
        self.start()

    def reset(self) -> None:
        """Empty the server: `stop` (every connection closes, so no consumer stays
        registered), a fresh storage made from the options (events, claims, queues and
        consumer counts are gone), then `start` on the same port.  A storage passed to the
        constructor is replaced too.  Takes a few milliseconds (the pytest plugin's
        ``okq_server`` calls it after each test).

        Raises:
            RuntimeError: the server failed to start again (cause chained).
        """
        self.stop()
        self.storage = default_storage(self._options)
        self.start()

    def __enter__(self) -> ThreadedServer:
        if not self._thread.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def run_in_thread(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    storage: Storage | None = None,
    **options: Unpack[ServerOptions],
) -> Iterator[ThreadedServer]:
    """Run a `ThreadedServer` for the ``with`` block: ``with run_in_thread() as srv: ...``."""
    with ThreadedServer(host, port, storage=storage, **options) as server:
        yield server


@contextlib.asynccontextmanager
async def open_server(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    storage: Storage | None = None,
    **options: Unpack[ServerOptions],
) -> AsyncIterator[ThreadedServer]:
    """For trio: run a `ThreadedServer` for the ``async with`` block.

    ::

        async with open_server(sweep_interval_s=0.5) as srv:
            client = await trio.open_tcp_stream(srv.host, srv.port)

    The server keeps its own asyncio loop in a thread; starting and stopping it happen in a
    trio worker thread, so the trio loop never blocks.  Leaving the block (also by an
    exception or a cancellation) stops the server and closes its connections.  The server's
    own `ThreadedServer.stop` / `restart` block: call them through ``trio.to_thread.run_sync``.
    Under asyncio, use `EmbeddedServer` on the running loop instead.  Needs trio (imported on
    first use).

    Raises:
        RuntimeError: the server failed to start (cause chained).
    """
    import trio  # optional dependency: only this helper needs it

    server = ThreadedServer(host, port, storage=storage, **options)
    await trio.to_thread.run_sync(server.start)
    try:
        yield server
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(server.stop)


def serve(host: str = "127.0.0.1", port: int = 4777, **options: Unpack[ServerOptions]) -> None:
    """Run the server in the foreground until SIGINT or SIGTERM (the CLI's ``serve``), with the
    `ServerOptions` given.

    Prints ``okq server listening on HOST:PORT`` (flushed) once listening, so a parent
    process that passed port 0 can read the port.
    """

    async def main() -> None:
        server = EmbeddedServer(host, port, **options)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        async with server:
            print(f"okq server listening on {server.address}", flush=True)
            await stop.wait()
        print("okq server stopped", file=sys.stderr, flush=True)

    asyncio.run(main())
