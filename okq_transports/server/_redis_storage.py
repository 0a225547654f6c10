"""`RedisStorage`: the embedded server's queues in Redis, with okq's exact layout and steps.

Owns: okq's key names (``queue:{Q}``, ``:claimed``, ``:items``, ``:lock:<id>``,
``:consumers``), the Redis commands of each operation in okq's order (protocol notes section
10), the Lua scripts (pop, restore; on one Redis also the push: okq's three steps in one
round trip), the restore sweep and the consumer refresh on okq's
10 s schedules, the local registrations, and which queues the pubsub listener follows.  A
server on this storage shares its queues with real okq instances and with other servers of
ours on the same Redis (or Redis Cluster).
Must not know: connections, RESP to clients, okq's argument rules (the server and
`okq_proto.server`); how commands travel (``_redis_link``) and the pubsub connection
(``_redis_pubsub``).

Where okq's Redis steps have a defect (protocol notes D3: queue names containing ``:`` and
the empty name are lost when okq reads names back from keys), this storage reads the names
exactly instead: such queues are listed, woken and swept like every other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar, final

from okq_proto.server import DEFAULT_EXPIRE_S, DEFAULT_SWEEP_INTERVAL_S, SWEEP_BATCH, QueueStatus

from ._redis_link import Command, Link, LuaScript, RedisUnavailableError
from ._redis_pubsub import Listener, channel_of
from ._storage import PublishHandler, StorageError

__all__ = [
    "DEFAULT_CONSUMER_TTL_S",
    "DEFAULT_PUBSUB_PING_S",
    "DEFAULT_REFRESH_INTERVAL_S",
    "RedisStorage",
]

_log = logging.getLogger("okq.server")
T = TypeVar("T")

#: okq re-stamps its registrations this often ...
DEFAULT_REFRESH_INTERVAL_S: Final = 10.0
#: ... and drops registrations not re-stamped for this long.
DEFAULT_CONSUMER_TTL_S: Final = 30
#: okq pings its pubsub connection this often.
DEFAULT_PUBSUB_PING_S: Final = 30.0

_PREFIX: Final = b"queue:{"
_ITEMS: Final = b"}:items"
_CONSUMERS: Final = b"}:consumers"

# okq's pop: RPOPLPUSH to the claimed list, a lock only if absent, the contents.  A rejected
# SET (an expiry too large for Redis) fails the script with the id already claimed, lockless.
_POP: Final = LuaScript(
    """local id = redis.call('RPOPLPUSH', KEYS[1], KEYS[2])
if not id then return false end
redis.call('SET', ARGV[2] .. id, '1', 'EX', ARGV[1], 'NX')
return {id, redis.call('HGET', KEYS[3], id)}
"""
)
# A push on one Redis in one round trip: okq's HSETNX (0: a duplicate, nothing more), then
# LPUSH or RPUSH (ARGV[3]) and PUBLISH, in okq's order.
_PUSH: Final = LuaScript(
    """if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call(ARGV[3], KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[1])
return 1
"""
)
# okq's restore of one expired claim: out of the claimed list, back on the right end.
_RESTORE: Final = LuaScript(
    """if redis.call('LREM', KEYS[1], 0, ARGV[1]) > 0 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
"""
)


def _unclaimed(q: bytes) -> bytes:
    return _PREFIX + q + b"}"


def _claimed(q: bytes) -> bytes:
    return _PREFIX + q + b"}:claimed"


def _items(q: bytes) -> bytes:
    return _PREFIX + q + _ITEMS


def _lock_prefix(q: bytes) -> bytes:
    return _PREFIX + q + b"}:lock:"


def _consumers(q: bytes) -> bytes:
    return _PREFIX + q + _CONSUMERS


def _name_in(key: bytes, suffix: bytes) -> bytes | None:
    """The queue a key ``queue:{Q}<suffix>`` belongs to (exactly: D3), or None."""
    if key.startswith(_PREFIX) and key.endswith(suffix) and len(key) >= len(_PREFIX + suffix):
        return key[len(_PREFIX) : len(key) - len(suffix)]
    return None


@final
class RedisStorage:
    """`Storage` in Redis, laid out and driven exactly as okq does (protocol notes section 10).

    Several servers (ours, and real okq instances) may share one Redis: events pushed to any
    are served by all, claims expire the same way, pushes wake QNOTIFY waiters on every one
    (pubsub), consumer counts add up.  Keep one instance per server; it may be started again
    after `stop` (on a new event loop too: connections are made by `start`).

    ::

        storage = RedisStorage.from_url("redis://127.0.0.1:6379/0")
        async with EmbeddedServer(port=4777, storage=storage) as srv: ...

    Args:
        url: ``redis://HOST:PORT[/DB]``, ``rediss://...`` or ``unix:///path``; for a cluster,
            one seed ``redis://HOST:PORT`` (okq uses database 0).
        cluster: talk to a Redis Cluster (`from_cluster_url`).
        sweep_interval_s: restore sweep period, counted from `start` (okq: 10 s).
        default_expire_s: claim duration of a QRPOP without ``EX`` (okq: 30 s).
        refresh_interval_s: consumer refresh period (okq: 10 s).
        consumer_ttl_s: registrations not re-stamped for this long are removed (okq: 30 s).
        pubsub_ping_s: PING period of the pubsub connection (okq: 30 s).
        socket_timeout_s: how long one Redis reply may take before the request fails.
        connect_timeout_s: how long connecting to Redis may take.

    Raises:
        ValueError: ``url`` is not a Redis URL (or not a cluster seed).

    Where it is not okq: names are read back from keys exactly (D3: names with ``:`` and the
    empty name are listed, woken and swept); QNOTIFY's initial check failing on Redis closes
    that connection (`RedisUnavailableError` is a `ConnectionError`: the server has no error
    reply there).  Use it from one event loop at a time.  redis-py reads replies with hiredis
    when it is installed.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        cluster: bool = False,
        sweep_interval_s: float = DEFAULT_SWEEP_INTERVAL_S,
        default_expire_s: int = DEFAULT_EXPIRE_S,
        refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S,
        consumer_ttl_s: int = DEFAULT_CONSUMER_TTL_S,
        pubsub_ping_s: float = DEFAULT_PUBSUB_PING_S,
        socket_timeout_s: float = 5.0,
        connect_timeout_s: float = 2.0,
    ) -> None:
        for name, value in (
            ("sweep_interval_s", sweep_interval_s),
            ("refresh_interval_s", refresh_interval_s),
            ("pubsub_ping_s", pubsub_ping_s),
            ("socket_timeout_s", socket_timeout_s),
            ("connect_timeout_s", connect_timeout_s),
            ("default_expire_s", default_expire_s),
            ("consumer_ttl_s", consumer_ttl_s),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        self._link = Link(
            url,
            cluster=cluster,
            socket_timeout_s=socket_timeout_s,
            connect_timeout_s=connect_timeout_s,
        )
        self.sweep_interval_s = sweep_interval_s
        self.default_expire_s = default_expire_s
        self.refresh_interval_s = refresh_interval_s
        self.consumer_ttl_s = consumer_ttl_s
        self._ping_s = pubsub_ping_s
        self._handlers: list[PublishHandler] = []
        self._registered: dict[str, tuple[bytes, ...]] = {}  # local connection -> queues
        self._local: dict[bytes, int] = {}  # queue -> local connections registered for it
        self._listener: Listener | None = None
        self._timers: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[Any]] = set()
        self.sweeps = 0
        """Restore sweeps completed since the first `start` (a test can wait for one)."""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStorage:
        """Storage on the Redis at ``url`` (``redis://HOST:PORT/0``); options as for the class."""
        return cls(url, **options)

    @classmethod
    def from_cluster_url(cls, url: str, **options: Any) -> RedisStorage:
        """Storage on the Redis Cluster that the seed ``redis://HOST:PORT`` belongs to."""
        return cls(url, cluster=True, **options)

    @property
    def url(self) -> str:
        """Where the storage is."""
        return self._link.url

    @property
    def cluster(self) -> bool:
        """True on a Redis Cluster."""
        return self._link.cluster

    @property
    def pubsub_connected(self) -> bool:
        """True while the pubsub connection is up."""
        return self._listener is not None and self._listener.connected

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (checking that Redis answers), start the pubsub listener, the restore sweep
        and the consumer refresh (their phase starts now, like a restarted okq).

        Raises:
            RedisUnavailableError: Redis cannot be reached.
            RedisMissingError: redis-py is not installed (``pip install 'okq[redis]'``).
        """
        if self._listener is not None:
            raise RuntimeError("RedisStorage already started")
        await self._link.open()
        self._listener = Listener(
            self._link.pubsub_connection, self._on_message, ping_s=self._ping_s
        )
        self._listener.want(self._local)
        self._listener.start()
        loop = asyncio.get_running_loop()
        self._timers = [
            loop.create_task(self._every(self.sweep_interval_s, self._sweep, "restore sweep")),
            loop.create_task(
                self._every(self.refresh_interval_s, self._refresh, "consumer refresh")
            ),
        ]

    async def stop(self) -> None:
        """Stop the timers and the listener, finish the operations in flight, disconnect.
        Idempotent.  The data stays in Redis."""
        timers, self._timers = self._timers, []
        for task in timers:
            task.cancel()
        for task in timers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.stop()
        await self._link.close()

    async def _every(self, period: float, job: Callable[[], Awaitable[None]], what: str) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + period
        # Bounded by `stop`, which cancels it; each pass sleeps until the next due time.
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due = max(due + period, loop.time())
            try:
                await self._guarded(job())
            except StorageError as exc:
                _log.warning("%s failed (retried at the next tick): %s", what, exc)

    async def _guarded(self, work: Awaitable[T]) -> T:
        """``work`` run to its end even if the request waiting for it is cancelled: okq's steps
        are not atomic, and a shutdown must not stop one half way (`stop` waits for it)."""

        async def run() -> T:
            return await work

        task = asyncio.get_running_loop().create_task(run())
        self._inflight.add(task)
        task.add_done_callback(self._finished)
        return await asyncio.shield(task)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._inflight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # retrieved here too: its request may have been cancelled and not be waiting
            _log.debug("storage operation failed: %r", task.exception())

    # -- notifications ------------------------------------------------------------------------

    def subscribe(self, handler: PublishHandler) -> Callable[[], None]:
        """Call ``handler(queue)`` for every message on a followed queue's pubsub channel: the
        pushes of every instance on this Redis (and any other ``PUBLISH``, as in okq)."""
        self._handlers.append(handler)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._handlers.remove(handler)

        return unsubscribe

    def _on_message(self, queue: bytes) -> None:
        for handler in list(self._handlers):
            handler(queue)

    # -- operations ---------------------------------------------------------------------------

    async def push(self, queue: bytes, event_id: bytes, contents: bytes, *, right: bool) -> bool:
        """QLPUSH/QRPUSH: ``HSETNX`` the contents (0: duplicate), then the id on the list and
        ``PUBLISH``: on one Redis in one script, on a cluster one after the other (they may go
        to two nodes).

        Raises:
            StorageError: Redis failed.
        """
        if self._link.writes_at_once:  # one script, written before the first await
            return await self._push(queue, event_id, contents, right)
        return await self._guarded(self._push(queue, event_id, contents, right))

    async def _push(self, queue: bytes, event_id: bytes, contents: bytes, right: bool) -> bool:
        link = self._link
        if not link.cluster:  # the keys and the channel may be on several nodes of a cluster
            keys = [_items(queue), _unclaimed(queue)]
            side = b"RPUSH" if right else b"LPUSH"
            args = [event_id, contents, side, channel_of(queue)]
            return bool(await link.script(_PUSH, keys, args))
        if not await link.call("HSETNX", _items(queue), event_id, contents):
            return False
        add: Command = ("RPUSH" if right else "LPUSH", _unclaimed(queue), event_id)
        if link.cluster:
            await link.group([add])
            await link.publish(channel_of(queue), event_id)
        else:
            await link.group([add, ("PUBLISH", channel_of(queue), event_id)])
        return True

    async def peek(self, queue: bytes, *, left: bool) -> tuple[bytes, bytes] | None:
        """QLPEEK/QRPEEK: ``LRANGE`` one end, then ``HGET`` its contents."""
        end = 0 if left else -1
        ids = await self._link.call("LRANGE", _unclaimed(queue), end, end)
        if not ids:
            return None
        contents = await self._link.call("HGET", _items(queue), ids[0])
        return None if contents is None else (bytes(ids[0]), bytes(contents))

    async def pop(self, queue: bytes, expire_s: int | None) -> tuple[bytes, bytes] | None:
        """QRPOP: the pop script; for ``EX 0`` (claimed for the default time) then the ack (a
        separate step, as in okq: if the pop's reply is lost, the claim comes back).

        Raises:
            StorageError: Redis failed or refused the expiry (the event then stays claimed,
                without a lock: the next sweep puts it back, as in okq).
        """
        if self._link.writes_at_once and expire_s != 0:  # one script, written at once
            return await self._pop(queue, expire_s)
        return await self._guarded(self._pop(queue, expire_s))

    async def _pop(self, queue: bytes, expire_s: int | None) -> tuple[bytes, bytes] | None:
        lock_s = expire_s if expire_s else self.default_expire_s
        keys = [_unclaimed(queue), _claimed(queue), _items(queue)]
        reply = await self._link.script(_POP, keys, [lock_s, _lock_prefix(queue)])
        if not reply:
            return None
        event_id = bytes(reply[0])
        contents = b"" if len(reply) < 2 or reply[1] is None else bytes(reply[1])
        if expire_s == 0:
            await self._ack(queue, event_id)
        return event_id, contents

    async def ack(self, queue: bytes, event_id: bytes) -> int:
        """QACK: ``LREM`` from the claimed list, else from the unclaimed one; if either removed
        it, ``HDEL`` the contents and ``DEL`` the lock (pipelined)."""
        return await self._guarded(self._ack(queue, event_id))

    async def _ack(self, queue: bytes, event_id: bytes) -> int:
        link = self._link
        removed = int(await link.call("LREM", _claimed(queue), -1, event_id))
        if not removed:
            removed = int(await link.call("LREM", _unclaimed(queue), -1, event_id))
        if removed:
            await link.group(
                [("HDEL", _items(queue), event_id), ("DEL", _lock_prefix(queue) + event_id)]
            )
        return removed

    async def flush(self, queue: bytes) -> None:
        """QFLUSH: ``DEL`` the unclaimed list, the claimed list and the contents (lock keys and
        consumers stay, as in okq)."""
        keys = (_unclaimed(queue), _claimed(queue), _items(queue))
        if self._link.cluster:  # one slot unless the name has no hash tag (the empty name)
            await self._link.group([("DEL", key) for key in keys])
        else:
            await self._link.call("DEL", *keys)

    async def status(self, queues: Sequence[bytes] | None) -> list[QueueStatus]:
        """QSTATUS/QINFO data: ``LLEN`` claimed and unclaimed, ``ZCARD`` consumers per queue
        (pipelined), for ``queues`` or for every listed queue in byte order."""
        names = list(queues) if queues is not None else sorted(await self.list_queues())
        if not names:
            return []
        commands: list[Command] = []
        for q in names:
            commands += [("LLEN", _claimed(q)), ("LLEN", _unclaimed(q)), ("ZCARD", _consumers(q))]
        counts = [int(n) for n in await self._link.group(commands)]
        return [
            QueueStatus(
                name=q,
                total=counts[3 * i] + counts[3 * i + 1],
                processing=counts[3 * i],
                consumers=counts[3 * i + 2],
            )
            for i, q in enumerate(names)
        ]

    async def list_queues(self) -> set[bytes]:
        """Every queue with stored events or registered consumers, on every primary: ``SCAN``
        for ``queue:{*}:items`` (hashes) and ``queue:{*}:consumers`` (sorted sets).  The type
        filter keeps lock keys of ids ending in ``}:items`` out; names are read exactly."""
        items = await self._link.scan(_PREFIX + b"*" + _ITEMS, "hash")
        consumers = await self._link.scan(_PREFIX + b"*" + _CONSUMERS, "zset")
        names = {_name_in(key, _ITEMS) for key in items}
        names |= {_name_in(key, _CONSUMERS) for key in consumers}
        names.discard(None)
        return {bytes(n) for n in names if n is not None}

    async def register(self, consumer: str, queues: Sequence[bytes]) -> None:
        """QREGISTER (and a closed connection, with no queues): the local set is replaced,
        then ``ZREM`` for each queue dropped and ``ZADD <now>`` for each queue kept
        (pipelined); the pubsub listener follows the queues with a local consumer."""
        new = tuple(dict.fromkeys(queues))
        old = self._registered.pop(consumer, ())
        if new:
            self._registered[consumer] = new
        for q in old:
            self._local[q] -= 1
            if not self._local[q]:
                del self._local[q]
        for q in new:
            self._local[q] = self._local.get(q, 0) + 1
        if self._listener is not None:
            self._listener.want(self._local)
        member = consumer.encode()
        now = int(time.time())
        commands: list[Command] = [("ZREM", _consumers(q), member) for q in old if q not in new]
        commands += [("ZADD", _consumers(q), now, member) for q in new]
        if commands:
            await self._guarded(self._link.group(commands))

    async def first_with_unclaimed(self, queues: Sequence[bytes]) -> bytes | None:
        """QNOTIFY's initial check: ``LLEN`` of each queue (pipelined), the first non-empty.

        Raises:
            RedisUnavailableError: Redis failed (also a `ConnectionError`: the server closes
                the connection, having no error reply to give here).
        """
        if not queues:
            return None
        try:
            counts = await self._link.group([("LLEN", _unclaimed(q)) for q in queues])
        except StorageError as exc:
            if isinstance(exc, RedisUnavailableError):
                raise
            raise RedisUnavailableError(str(exc)) from exc
        return next((q for q, n in zip(queues, counts, strict=True) if n), None)

    # -- background work ----------------------------------------------------------------------

    async def _sweep(self) -> None:
        """okq's restore sweep: for each listed queue its 50 oldest claims, ``MGET`` of their
        locks, and the restore script for each one unlocked, in list order (no PUBLISH)."""
        queues = await self.list_queues()
        moved = 0
        for q in queues:
            ids = await self._link.call("LRANGE", _claimed(q), -SWEEP_BATCH, -1)
            if not ids:
                continue
            prefix = _lock_prefix(q)
            locks = await self._link.call("MGET", *[prefix + bytes(i) for i in ids])
            expired = [bytes(i) for i, lock in zip(ids, locks, strict=True) if lock is None]
            if expired:
                calls = [([_claimed(q), _unclaimed(q)], [i]) for i in expired]
                moved += sum(int(n) for n in await self._link.scripts(_RESTORE, calls))
        self.sweeps += 1
        if moved:
            _log.debug("restore sweep put back %d event(s)", moved)

    async def _refresh(self) -> None:
        """okq's consumer refresh: ``ZADD <now>`` for every local registration, then
        ``ZREMRANGEBYSCORE -inf <now - ttl>`` on every consumers set."""
        now = int(time.time())
        commands: list[Command] = [
            ("ZADD", _consumers(q), now, consumer.encode())
            for consumer, queues in self._registered.items()
            for q in queues
        ]
        if commands:
            await self._link.group(commands)
        keys = await self._link.scan(_PREFIX + b"*" + _CONSUMERS, "zset")
        if keys:
            limit = now - self.consumer_ttl_s
            await self._link.group([("ZREMRANGEBYSCORE", k, "-inf", limit) for k in keys])
