"""okq's push notifications through Redis pubsub, for `RedisStorage`.

Owns: the one pubsub connection an okq instance keeps, ``SUBSCRIBE``d to the channel
``queue:{Q}`` of exactly the queues that have a local consumer (`Listener.want`); the
``PING`` every 30 s, the reconnection after a failure (subscribing again to everything wanted)
and handing each message's queue name to the storage's handlers.
Must not know: okq's other keys and steps (``_redis_storage``), how commands are sent
(``_redis_link``, which also makes this connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, final

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection

__all__ = ["CHANNEL_PREFIX", "Listener", "channel_of"]

_log = logging.getLogger("okq.server")

CHANNEL_PREFIX: Final = b"queue:{"
_RETRY_FIRST_S: Final = 0.05
_RETRY_MAX_S: Final = 1.0


def channel_of(queue: bytes) -> bytes:
    """okq's pubsub channel for ``queue``: ``queue:{Q}``."""
    return CHANNEL_PREFIX + queue + b"}"


def _queue_of(channel: bytes) -> bytes | None:
    if channel.startswith(CHANNEL_PREFIX) and channel.endswith(b"}") and len(channel) >= 8:
        return channel[len(CHANNEL_PREFIX) : -1]
    return None


@final
class Listener:
    """The pubsub connection: one task that connects, subscribes, reads, pings, reconnects.

    Args:
        connect: a new, unconnected connection (no read timeout) each time one is needed.
        on_message: called with the queue name of every message received.
        ping_s: the PING period (okq: 30 s); a PING not answered by the next one, or any
            failure, ends the connection and a new one is made (after 0.05 s, then up to 1 s).
    """

    def __init__(
        self,
        connect: Callable[[], AbstractConnection],
        on_message: Callable[[bytes], None],
        *,
        ping_s: float,
    ) -> None:
        self._connect = connect
        self._on_message = on_message
        self._ping_s = ping_s
        self._wanted: set[bytes] = set()  # channels
        self._subscribed: set[bytes] = set()  # as asked on the live connection
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        self._last_heard = 0.0

    @property
    def connected(self) -> bool:
        """True while a pubsub connection is up."""
        return self._connected

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def want(self, queues: Iterable[bytes]) -> None:
        """Be subscribed to exactly the channels of ``queues`` (soon: the task does it)."""
        wanted = {channel_of(q) for q in queues}
        if wanted != self._wanted:
            self._wanted = wanted
            self._dirty.set()

    async def _run(self) -> None:
        delay = _RETRY_FIRST_S
        failing = False  # warn once per outage
        # Bounded by `stop`: every pass waits (on Redis, or the retry delay).
        while True:
            conn = self._connect()
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                if failing:
                    _log.warning("Redis pubsub connection is back")
                self._connected = True
                failing = False
                delay = _RETRY_FIRST_S
                await self._serve(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log = _log.debug if failing else _log.warning
                log("Redis pubsub connection failed (reconnecting): %s", exc)
                failing = True
            finally:
                self._connected = False
                self._subscribed = set()
                with contextlib.suppress(Exception):
                    await conn.disconnect()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_S)

    async def _serve(self, conn: AbstractConnection) -> None:
        self._last_heard = time.monotonic()
        self._dirty.set()
        reader = asyncio.get_running_loop().create_task(self._read(conn))
        try:
            # Bounded by the connection: it ends on a failure (reader done) or on `stop`.
            while not reader.done():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._dirty.wait(), self._ping_s)
                if reader.done():
                    break
                if self._dirty.is_set():
                    self._dirty.clear()
                    await self._sync(conn)
                    continue
                if time.monotonic() - self._last_heard > 2 * self._ping_s:
                    raise ConnectionError("no reply to PING on the pubsub connection")
                await conn.send_command("PING")
            reader.result()  # its failure
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    async def _sync(self, conn: AbstractConnection) -> None:
        add = sorted(self._wanted - self._subscribed)
        drop = sorted(self._subscribed - self._wanted)
        if add:
            await conn.send_command("SUBSCRIBE", *add)
        if drop:
            await conn.send_command("UNSUBSCRIBE", *drop)
        self._subscribed = set(self._wanted)

    async def _read(self, conn: AbstractConnection) -> None:
        # Bounded by the connection: read_response fails once it is gone.
        while True:
            reply: Any = await conn.read_response()
            self._last_heard = time.monotonic()
            if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                queue = _queue_of(reply[1])
                if queue is not None:
                    self._on_message(queue)
