"""One multiplexed Redis connection: every request's commands written as they come, the replies
read in order by hiredis and handed back to the request that sent them.

Owns: when a URL can be served this way (``redis://HOST[:PORT][/0]``, no credentials, hiredis
installed), connecting (again, after a failure, on the next command), the write buffer flushed
once per event loop iteration (the commands of concurrent requests travel in one write: a
pipeline without waiting for earlier replies), the read timeout, failing every request whose
replies are still due when the connection fails.
Must not know: okq's keys and steps; scripts; the cluster client (``_redis_link``).

A command whose reply was lost may have run; nothing is sent again (okq's steps are not
idempotent).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections import deque
from collections.abc import Sequence
from typing import Any, Final, final

__all__ = ["Mux", "mux_address"]

DEFAULT_PORT: Final = 6379


def mux_address(url: str) -> tuple[str, int] | None:
    """``(host, port)`` if ``url`` can be served by a `Mux` (and hiredis is installed)."""
    try:
        import hiredis  # noqa: F401
    except ImportError:
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "redis" or parts.username or parts.password or parts.query:
        return None
    if parts.path.strip("/") not in ("", "0") or not parts.hostname:
        return None
    return parts.hostname, parts.port or DEFAULT_PORT


class _Failed(ConnectionError):
    pass


@final
class _Protocol(asyncio.Protocol):
    def __init__(self, mux: Mux) -> None:
        self.mux = mux

    def data_received(self, data: bytes) -> None:
        self.mux._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.mux._lost(self, exc)


@final
class Mux:
    """The connection: `request` writes commands and returns their replies (an error reply as
    ``error_type(message)`` in its place, NOSCRIPT as ``noscript_type``).

    Args:
        address: Redis's host and port.
        read_timeout_s: how long Redis may go without answering while replies are due.
        connect_timeout_s: how long connecting may take.
        error_type: the exception made for an error reply.
        noscript_type: the one made for a ``NOSCRIPT`` error reply.
    """

    def __init__(
        self,
        address: tuple[str, int],
        *,
        read_timeout_s: float,
        connect_timeout_s: float,
        error_type: type[Exception],
        noscript_type: type[Exception],
    ) -> None:
        self.address = address
        self._timeouts = (read_timeout_s, connect_timeout_s)
        self._error_type = error_type
        self._noscript_type = noscript_type
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._reader: Any = None
        self._connecting: asyncio.Future[None] | None = None
        # (future, replies wanted, replies so far) in the order the commands were written
        self._due: deque[tuple[asyncio.Future[list[Any]], int, list[Any]]] = deque()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._progress = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._pack: Any = None

    @property
    def connected(self) -> bool:
        """True while the connection is up (a `request` then writes at once)."""
        return self._transport is not None

    async def request(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """The replies of ``commands``, written in this order (after those of earlier calls).

        Raises:
            ConnectionError: connecting failed, or the connection failed (or went silent for
                the read timeout) before every reply came; the commands may have run.
        """
        if self._transport is None:
            await self._connect()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        pack = self._pack
        self._out.extend([pack(tuple(c)) for c in commands])
        if not self._due:
            self._progress = loop.time()
        self._due.append((future, len(commands), []))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        if self._timer is None:
            self._timer = loop.call_at(self._progress + self._timeouts[0], self._check_timeout)
        return await future

    async def _connect(self) -> None:
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_future()
            try:
                await self._open()
            except BaseException as exc:
                failure = _Failed(f"cannot connect to Redis: {type(exc).__name__}: {exc}")
                self._connecting.set_exception(failure)
                self._connecting.exception()  # retrieved: waiters, if any, get it too
                if isinstance(exc, Exception):
                    raise failure from exc
                raise
            else:
                self._connecting.set_result(None)
            finally:
                self._connecting = None
        else:
            await asyncio.shield(self._connecting)
        if self._transport is None:
            raise _Failed("the Redis connection failed")

    async def _open(self) -> None:
        import hiredis

        loop = asyncio.get_running_loop()
        host, port = self.address
        transport, protocol = await asyncio.wait_for(
            loop.create_connection(lambda: _Protocol(self), host, port), self._timeouts[1]
        )
        self._reader = hiredis.Reader(replyError=self._error_type)
        self._pack = hiredis.pack_command
        self._transport = transport
        self._protocol = protocol

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if self._transport is not None and out:
            self._transport.write(b"".join(out))

    def _received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        due = self._due
        self._progress = asyncio.get_running_loop().time()
        try:
            while (reply := reader.gets()) is not False:
                if isinstance(reply, self._error_type) and str(reply).startswith("NOSCRIPT"):
                    reply = self._noscript_type(str(reply))
                future, wanted, got = due[0]
                got.append(reply)
                if len(got) == wanted:
                    due.popleft()
                    if not future.done():
                        future.set_result(got)
        except Exception as exc:  # a protocol error, or a reply nobody waits for
            self._fail(f"bad reply from Redis: {type(exc).__name__}: {exc}")

    def _check_timeout(self) -> None:
        self._timer = None
        if not self._due:
            return
        loop = asyncio.get_running_loop()
        late = self._progress + self._timeouts[0]
        if loop.time() >= late:
            self._fail(f"Timeout reading from Redis {self.address[0]}:{self.address[1]}")
        else:
            self._timer = loop.call_at(late, self._check_timeout)

    def _lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is self._protocol:
            self._fail(
                f"Connection to Redis lost: {exc!r}" if exc else "Redis closed the connection"
            )

    def _fail(self, why: str) -> None:
        transport, self._transport, self._protocol = self._transport, None, None
        self._out = []
        due, self._due = self._due, deque()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if transport is not None:
            transport.abort()
        for future, _, _ in due:
            if not future.done():
                future.set_exception(_Failed(why))

    async def close(self) -> None:
        """Wait (up to the read timeout) for the replies due, then close.  Idempotent."""
        waiting = [f for f, _, _ in self._due]
        if waiting:
            await asyncio.wait(waiting, timeout=self._timeouts[0])
        self._fail("the Redis connection was closed")
