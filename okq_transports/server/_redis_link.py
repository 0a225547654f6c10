"""The Redis connection behind `RedisStorage`: clients, pipelining, scripts, key listing.

Owns: importing redis-py (only here and in the modules beside it: the core needs no
dependency), checking a Redis URL, making the ``redis.asyncio`` client for one Redis or a
Redis Cluster, the errors `RedisStorage` raises (`RedisUnavailableError`,
`RedisMissingError`), sending the commands of concurrent requests in one pipeline
(`Link.call`, `Link.group`), Lua scripts by EVALSHA with a fallback to EVAL, listing keys on
every primary (`Link.scan`) and the plain connection the pubsub listener reads from.
Must not know: okq's key names or steps (``_redis_storage``), notifications (``_redis_pubsub``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast, final

from ._redis_mux import Mux, mux_address
from ._storage import StorageError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.connection import AbstractConnection

__all__ = [
    "INSTALL_HINT",
    "Link",
    "LuaScript",
    "RedisMissingError",
    "RedisUnavailableError",
    "check_url",
]

_log = logging.getLogger("okq.server")

INSTALL_HINT: Final = "pip install 'okq[redis]'"
_SCHEMES: Final = ("redis", "rediss", "unix")
#: Commands one pipeline carries at most; a larger burst goes out in several.
MAX_PIPELINE: Final = 512

Command = tuple[bytes | str | int, ...]


class RedisMissingError(ImportError):
    """redis-py is not installed; the message says how to install it."""


class RedisUnavailableError(StorageError, ConnectionError):
    """Redis could not be reached, or the connection failed during a command.

    A `StorageError` (requests get ``ERR unexpected server-side error``) and a
    `ConnectionError`: where the server has no error reply to give (QNOTIFY's initial check),
    it closes that client's connection instead, as for a lost connection.
    """


def _redis() -> Any:
    try:
        import redis
        import redis.asyncio
        import redis.asyncio.cluster
    except ImportError as exc:
        raise RedisMissingError(f"Redis storage needs redis-py: {INSTALL_HINT}") from exc
    return redis


def check_url(url: str, *, cluster: bool) -> str:
    """``url`` if it names a Redis okq can use, else ValueError saying what is wrong."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in (_SCHEMES[:2] if cluster else _SCHEMES):
        allowed = "redis:// or rediss://" if cluster else "redis://, rediss:// or unix://"
        raise ValueError(f"bad Redis URL {url!r}: expected {allowed}")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"bad Redis URL {url!r}: no socket path")
        return url
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad Redis URL {url!r}: bad port") from None
    if not parts.hostname:
        raise ValueError(f"bad Redis URL {url!r}: no host")
    if cluster and port is None:
        raise ValueError(f"bad Redis URL {url!r}: a cluster seed needs HOST:PORT")
    db = parts.path.strip("/")
    if db and (not db.isdigit() or (cluster and db != "0")):
        raise ValueError(f"bad Redis URL {url!r}: database {db!r} (a cluster has only 0)")
    return url


def _unavailable(exc: BaseException) -> StorageError:
    """The `StorageError` for a redis-py or socket failure."""
    redis = _redis()
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError, TimeoutError)):
        return RedisUnavailableError(text)
    return StorageError(text)


@dataclass(frozen=True)
class LuaScript:
    """A Lua script run with EVALSHA, falling back to EVAL (which caches it in Redis)."""

    source: str
    sha1: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "sha1", hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        )


@dataclass
class _Group:
    commands: Sequence[Command]
    future: asyncio.Future[list[Any]]


@final
class Link:
    """One okq Redis (or Redis Cluster) for one event loop: made in `open`, ended by `close`.

    Commands issued in the same loop iteration by concurrent requests travel in one pipeline
    (no transaction: okq's steps never need one); each request still waits for its own
    replies, so the steps of one request keep their order.

    Args:
        url: where Redis is (checked by `check_url`).
        cluster: a Redis Cluster seed: the client follows slots, listing runs on every primary.
        socket_timeout_s: how long one reply may take before the command fails.
        connect_timeout_s: how long connecting may take.
    """

    def __init__(
        self, url: str, *, cluster: bool, socket_timeout_s: float, connect_timeout_s: float
    ) -> None:
        self.url = check_url(url, cluster=cluster)
        self.cluster = cluster
        self._timeouts = (socket_timeout_s, connect_timeout_s)
        self._client: Redis | RedisCluster | None = None
        self._pending: list[_Group] = []
        self._flushing: set[asyncio.Task[None]] = set()
        self._scheduled = False
        self._pubsub_node: Any = None
        self._get_connection: Callable[[], Any] = _not_open
        self._response_error: type[Exception] = Exception
        self._mux: Mux | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Make the client and check Redis answers (PING).

        Raises:
            RedisUnavailableError: Redis cannot be reached.
            RedisMissingError: redis-py is not installed.
        """
        redis = _redis()
        self._pending, self._scheduled = [], False  # nothing carries over from another loop
        socket_timeout, connect_timeout = self._timeouts
        options: dict[str, Any] = {
            "protocol": 2,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout,
        }
        if self.cluster:
            # redis-py's cluster client formats a command's first two arguments with an
            # f-string to look up its routing, which under ``python -b`` warns for bytes; so on
            # a cluster every bytes argument is sent as the latin-1 str of the same bytes
            # (`_wire`), and encoded back to them byte for byte.
            options["encoding"] = "latin-1"
            client: Redis | RedisCluster = redis.asyncio.cluster.RedisCluster.from_url(
                self.url, **options
            )
        else:
            # no retries: a command whose reply was lost may have run (okq's steps are not
            # idempotent: a second LPUSH would store the id twice)
            options["retry"] = redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0)
            options["retry_on_timeout"] = False
            from okq_transports._redis_io import connection_getter

            plain: Redis = redis.asyncio.Redis.from_url(self.url, **options)
            self._get_connection = connection_getter(plain.connection_pool)
            client = plain
        self._response_error = redis.ResponseError
        self._client = client
        address = None if self.cluster else mux_address(self.url)
        if address is not None:
            self._mux = Mux(
                address,
                read_timeout_s=socket_timeout,
                connect_timeout_s=connect_timeout,
                error_type=redis.ResponseError,
                noscript_type=redis.exceptions.NoScriptError,
            )
        try:
            if self.cluster:
                await cast("RedisCluster", client).initialize()
            await client.execute_command("PING")
            if self._mux is not None:
                await self.call("PING")
        except BaseException as exc:
            await self.close()
            if isinstance(exc, Exception):
                raise _unavailable(exc) from exc
            raise
        where = "Redis Cluster" if self.cluster else "Redis"
        _log.info("okq storage on %s %s", where, _redacted(self.url))

    async def close(self) -> None:
        """Wait for the pipelines pending and in flight, then close every connection.
        Idempotent."""
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)
        mux, self._mux = self._mux, None
        if mux is not None:
            await mux.close()
        client, self._client = self._client, None
        if client is not None:
            closer = getattr(client, "aclose", None) or client.close
            try:
                await closer()
            except Exception as exc:  # closing a broken connection may fail; nothing to keep
                _log.debug("closing the Redis client: %r", exc)

    @property
    def writes_at_once(self) -> bool:
        """True when a command is written to Redis as soon as it is issued (one Redis, one
        multiplexed connection): a request cancelled after that leaves the command running."""
        return self._mux is not None and self._mux.connected

    @property
    def client(self) -> Redis | RedisCluster:
        if self._client is None:
            raise RuntimeError("Redis storage not started")
        return self._client

    # -- commands -------------------------------------------------------------------------

    async def call(self, *args: bytes | str | int) -> Any:
        """One command's reply.

        Raises:
            StorageError: Redis refused it (`RedisUnavailableError`: it could not be reached).
        """
        (reply,) = await self.group([args])
        return reply

    async def group(self, commands: Sequence[Command]) -> list[Any]:
        """The replies of ``commands``, sent in this order in one pipeline.

        Raises:
            StorageError: Redis refused one of them (after all of them ran) or failed.
        """
        replies = await self.replies(commands)
        for reply in replies:
            if isinstance(reply, Exception):
                raise _unavailable(reply) from reply
        return replies

    async def replies(self, commands: Sequence[Command]) -> list[Any]:
        """Like `group`, but a command Redis refused has its exception in its place.

        Raises:
            StorageError: the connection failed.
        """
        mux = self._mux
        if mux is not None:  # one connection, commands written as they come
            try:
                return await mux.request(commands)
            except ConnectionError as exc:
                raise RedisUnavailableError(str(exc)) from exc
        loop = asyncio.get_running_loop()
        group = _Group(commands, loop.create_future())
        self._pending.append(group)
        if not self._scheduled:
            # the sender starts at the next loop iteration, with every group added until then
            self._scheduled = True
            task = loop.create_task(self._send_pending())
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)
        return await group.future

    async def script(self, script: LuaScript, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        """``script``'s reply: EVALSHA, and EVAL if Redis does not have it yet.

        Raises:
            StorageError: the script failed (what it did before failing stays done).
        """
        (reply,) = await self.scripts(script, [(keys, args)])
        return reply

    async def scripts(
        self, script: LuaScript, calls: Sequence[tuple[Sequence[bytes], Sequence[Any]]]
    ) -> list[Any]:
        """``script`` once per ``(keys, args)``, in order, in one pipeline (see `script`)."""
        noscript = _redis().exceptions.NoScriptError
        replies = await self.replies(
            [("EVALSHA", script.sha1, len(keys), *keys, *args) for keys, args in calls]
        )
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, noscript)]
        if missing:
            # NOSCRIPT: nothing ran for that call; EVAL runs it and caches it in Redis.
            again = await self.replies(
                [
                    ("EVAL", script.source, len(calls[i][0]), *calls[i][0], *calls[i][1])
                    for i in missing
                ]
            )
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise _unavailable(reply) from reply
        return replies

    async def publish(self, channel: bytes, message: bytes) -> None:
        """``PUBLISH``; on a cluster to the node our pubsub connection is on, so that our own
        waiters hear it at once (other nodes get it over the cluster bus, a moment later).

        Raises:
            StorageError: Redis failed.
        """
        if not self.cluster:
            await self.call("PUBLISH", channel, message)
            return
        try:
            await self.client.execute_command(
                *self._wire(("PUBLISH", channel, message)), target_nodes=self._pubsub_node
            )
        except Exception as exc:
            raise _unavailable(exc) from exc

    async def scan(self, pattern: bytes, key_type: str) -> list[bytes]:
        """Every key matching ``pattern`` of type ``key_type``, on every primary.

        Raises:
            StorageError: Redis failed.
        """
        try:
            found: list[bytes] = []
            match = pattern.decode("latin-1") if self.cluster else pattern
            async for key in self.client.scan_iter(match=match, count=1000, _type=key_type):
                found.append(key)
            return found
        except Exception as exc:
            raise _unavailable(exc) from exc

    def pubsub_connection(self) -> AbstractConnection:
        """A new, unconnected connection to one primary, with no read timeout (pubsub).
        On a cluster any node will do: a ``PUBLISH`` reaches the subscribers of every node."""
        client = self.client
        maker: Any
        if self.cluster:
            node = random.choice(cast("RedisCluster", client).get_primaries())
            self._pubsub_node = node
            kwargs = dict(node.connection_kwargs)
            kwargs.pop("response_callbacks", None)
            maker = node.connection_class
        else:
            pool = cast("Redis", client).connection_pool
            kwargs = dict(pool.connection_kwargs)
            maker = pool.connection_class
        kwargs["socket_timeout"] = None
        connection: AbstractConnection = maker(**kwargs)
        return connection

    def _wire(self, command: Command) -> Command:
        """``command`` for the cluster client: bytes as latin-1 str (see `open`)."""
        if not self.cluster:
            return command
        return tuple(a.decode("latin-1") if isinstance(a, bytes) else a for a in command)

    # -- the pipeline -----------------------------------------------------------------------

    async def _send_pending(self) -> None:
        self._scheduled = False
        groups, self._pending = self._pending, []
        chunks: list[list[_Group]] = [[]]
        size = 0
        for g in groups:  # at most MAX_PIPELINE commands a pipeline; a group is never split
            if chunks[-1] and size + len(g.commands) > MAX_PIPELINE:
                chunks.append([])
                size = 0
            chunks[-1].append(g)
            size += len(g.commands)
        if len(chunks) == 1:
            await self._send(chunks[0])
        else:
            await asyncio.gather(*(self._send(chunk) for chunk in chunks))

    async def _send_plain(self, commands: Sequence[Command]) -> list[Any]:
        """``commands`` written at once on one pooled connection, their replies read in order
        (redis-py's own pipeline costs as much again in Python); a refused command has its
        error in its place.  Replies stay raw: ints, bytes, lists, None."""
        client = cast("Redis", self.client)
        pool = client.connection_pool
        conn = await self._get_connection()
        try:
            await conn.send_packed_command(conn.pack_commands(commands))
            results: list[Any] = []
            for _ in commands:
                try:
                    results.append(await conn.read_response())
                except self._response_error as exc:
                    results.append(exc)
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
        return results

    async def _send(self, groups: list[_Group]) -> None:
        commands = [c for g in groups for c in g.commands]
        try:
            if self._client is None:
                raise RedisUnavailableError("Redis storage not started")
            if self.cluster:
                pipe = self._client.pipeline(transaction=False)
                for command in commands:
                    pipe.execute_command(*self._wire(command))
                results: list[Any] = list(await pipe.execute(raise_on_error=False))
            else:
                results = await self._send_plain(commands)
        except Exception as exc:
            failure = exc if isinstance(exc, StorageError) else _unavailable(exc)
            for g in groups:
                if not g.future.done():
                    g.future.set_exception(failure)
            return
        except BaseException:
            for g in groups:
                g.future.cancel()
            raise
        at = 0
        for g in groups:
            n = len(g.commands)
            if not g.future.done():
                g.future.set_result(results[at : at + n])
            at += n


def _not_open() -> Any:
    raise RuntimeError("Redis storage not started")


def _redacted(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
