"""okq over a user's redis-py pool (sync and ``redis.asyncio``): okq-go v2's ``RedisPool``.

Owns: checking that a redis-py pool can talk to okq, borrowing its connections
(``get_connection`` / ``send_packed_command([data])`` / ``read_response(disable_decoding=True)``
/ ``release``, after ``disconnect()`` when a reply may still be owed), and turning redis-py's
raised ``ResponseError`` back into an `ErrorReply` value.
Must not know: okq's reply shapes or consumer rules.  The replies redis-py parsed are fed to
okq_proto's own machines through `ParsedReplies`, a decoder that hands out already-decoded
replies, so commands, pipelining and the consumer machine are the core's, unchanged; and
consumers run on the clients' own consumer drivers (``_sync_consume`` over a `Link`,
``_async_consume`` over a `ConsumerLink`).

okq speaks RESP2 only and treats ``HELLO``, ``AUTH``, ``SELECT`` and ``CLIENT`` as unknown
commands.  redis-py 8 defaults to RESP3 (it sends ``HELLO 3`` on connect), so pools must be
made with ``protocol=2``; the client refuses other pools with a message saying so.  redis-py's
``CLIENT SETINFO`` on connect is answered with an error that redis-py ignores, so it is
harmless.  redis-py's default ``socket_timeout`` (5 s) is shorter than a ``QNOTIFY`` wait:
consumers wait for that one reply on their own (sync: polling ``can_read``; asyncio: a timed
``read_response(timeout=math.inf)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

import redis
import redis.asyncio

from okq_proto import (
    DEFAULT_EXPIRE_S,
    DEFAULT_NOTIFY_TIMEOUT_S,
    NEED_DATA,
    Backoff,
    ClientConnection,
    Command,
    CommandReplied,
    ConnectError,
    ConnectionClosed,
    Consumer,
    Delivery,
    ErrorReply,
    Hooks,
    IdFactory,
    LocalProtocolError,
    NeedData,
    OkqError,
    RemoteProtocolError,
    Reply,
    TimeoutError,
    check_client_options,
    check_consume_options,
    new_event_id,
    retry_safe,
)

from . import _plans as plans
from ._async_consume import AsyncClient, ConsumerLink
from ._backends import ASYNCIO, run_to_end
from ._observe import active_hooks, retrying, where
from ._sync_consume import ConsumerSettings, run_consumers

T = TypeVar("T")

__all__ = ["AsyncRedisPoolClient", "ParsedReplies", "RedisPoolClient", "check_pool"]

_RESP2_ONLY: Final = (
    "okq speaks RESP2 only (it answers HELLO with an error): create the redis-py pool with "
    "protocol=2, e.g. redis.ConnectionPool(host=..., port=..., protocol=2)"
)


def check_pool(connection_kwargs: Mapping[str, object]) -> None:
    """Refuse a redis-py pool configuration that cannot talk to okq, with the reason.

    Raises:
        LocalProtocolError: RESP3 (redis-py 8's default), credentials (okq has no AUTH), a
            database other than 0 (no SELECT) or a client name (no CLIENT SETNAME).
    """
    protocol = connection_kwargs.get("protocol")
    if protocol is None:
        protocol = getattr(redis.utils, "DEFAULT_RESP_VERSION", 2)
    if str(protocol) != "2":
        raise LocalProtocolError(f"{_RESP2_ONLY}; this pool uses protocol={protocol}")
    for key in ("username", "password", "credential_provider"):
        if connection_kwargs.get(key):
            raise LocalProtocolError(f"okq has no AUTH command: remove {key}= from the pool")
    if connection_kwargs.get("db") not in (None, 0, "0"):
        raise LocalProtocolError("okq has no SELECT command: use db=0 (the default)")
    if connection_kwargs.get("client_name"):
        raise LocalProtocolError("okq has no CLIENT SETNAME command: remove client_name=")


class ParsedReplies:
    """A `ReplyDecoder` that hands out replies another library already parsed.

    `ClientConnection` (and so the consumer machine) pairs them with its commands in FIFO
    order exactly as it pairs replies it decoded itself.  Bytes are never fed to it.
    """

    __slots__ = ("_replies",)

    def __init__(self) -> None:
        self._replies: deque[Reply] = deque()

    def push(self, reply: Reply) -> None:
        """Queue one parsed reply."""
        self._replies.append(reply)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Not used: replies arrive parsed.

        Raises:
            LocalProtocolError: always.
        """
        raise LocalProtocolError("ParsedReplies takes parsed replies (push), not bytes")

    def next_reply(self) -> Reply | NeedData:
        """The next queued reply, or `NEED_DATA`."""
        return self._replies.popleft() if self._replies else NEED_DATA

    def has_partial(self) -> bool:
        """Never: a parsed reply is whole."""
        return False


def _error_reply(exc: redis.ResponseError) -> ErrorReply:
    # redis-py strips a known error code ("ERR ") off the message; okq only sends ERR.
    code = getattr(exc, "status_code", None) or "ERR"
    return ErrorReply(f"{code} {exc}".encode("utf-8", "surrogateescape"))


def _okq_error(exc: BaseException, what: str) -> OkqError:
    """okq's error for what redis-py raised (an `OkqError` is returned as is).

    redis-py parses the replies here, so a reply that is not RESP2 (``InvalidResponse``) or
    any other non-reply `redis.RedisError` means the peer broke the protocol:
    `RemoteProtocolError`, as okq's own decoder says.  Timeouts and broken connections are
    okq's `TimeoutError` and `ConnectionClosed`.  (Error *replies*, `redis.ResponseError`,
    never get here: they are `ErrorReply` values.)
    """
    if isinstance(exc, OkqError):
        return exc
    if isinstance(exc, (redis.TimeoutError, TimeoutError)):
        return TimeoutError(f"{what}: {exc}")
    if isinstance(exc, (redis.ConnectionError, OSError)):
        return ConnectionClosed(f"{what}: {exc}")
    return RemoteProtocolError(f"{what}: {type(exc).__name__}: {exc}")


#: What redis-py raises when a connection or a reply fails (ours are passed through): every
#: `redis.RedisError` but `redis.ResponseError`, which `_sync_read` / `_async_read` turn into
#: `ErrorReply` values before this is caught.
_FAILURES: Final = (redis.RedisError, OSError)


class _Exchange:
    """One pipelined request over a redis-py connection, for the sync and async clients:
    the bytes to send, then parsed replies pushed one at a time until all are in."""

    __slots__ = ("_count", "_feed", "_machine", "replies")

    def __init__(self, commands: Sequence[Command[Any]]) -> None:
        self._feed = ParsedReplies()
        self._machine = ClientConnection(self._feed)
        self._machine.send_many(commands)
        self._count = len(commands)
        self.replies: list[CommandReplied] = []

    @property
    def owed(self) -> bool:
        """True until every reply was read: the connection must then not be reused."""
        return len(self.replies) < self._count

    def data_to_send(self) -> bytes:
        """The request's bytes (send them with ``send_packed_command([data])``)."""
        return self._machine.data_to_send()

    def wants_reply(self) -> bool:
        """Collect the replies available; True while one more parsed reply is needed."""
        while self.owed:
            event = self._machine.next_event()
            if event is NEED_DATA:
                return True
            assert type(event) is CommandReplied
            self.replies.append(event)
        return False

    def push(self, reply: Reply) -> None:
        """Hand over one reply redis-py parsed."""
        self._feed.push(reply)


def _retry_or_raise(
    exc: BaseException,
    attempt: int,
    commands: Sequence[Command[Any]],
    hooks: Hooks | None,
    address: tuple[str, int],
) -> bool:
    """After a failed attempt: True (retry, logged) for a first failure of retry-safe
    commands, else raise the okq error."""
    error = _okq_error(exc, "okq over redis-py")
    if attempt or not all(map(retry_safe, commands)):
        raise error from exc
    retrying(hooks, commands, address, error, attempt + 1)
    return True


def _address(pool: Any) -> tuple[str, int]:
    kwargs = pool.connection_kwargs
    return str(kwargs.get("host", "localhost")), int(kwargs.get("port", 6379))


#: The command name given to a redis-py 5.0-5.2 ``get_connection`` (plain pools ignore it).
_COMMAND_NAME: Final = "PING"


def _connection_getter(pool: Any) -> Callable[[], Any]:
    """``pool.get_connection`` as a call without arguments, for sync and ``redis.asyncio``
    pools alike (for the latter, the call returns the coroutine to await).

    redis-py 5.0 to 5.2 require a command name (``get_connection(command_name, *keys,
    **options)``), which plain pools ignore; later versions make it optional and warn when
    one is given.  So a name is passed exactly when the signature requires one.
    """
    get: Callable[..., Any] = pool.get_connection
    try:
        params = list(inspect.signature(get).parameters.values())
    except (TypeError, ValueError):  # no signature to read: call it as current redis-py does
        return get
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if params and params[0].kind in positional and params[0].default is inspect.Parameter.empty:
        return functools.partial(get, _COMMAND_NAME)
    return get


def _get_connection(get: Callable[[], Any]) -> Any:
    """A connection from a sync pool's `_connection_getter`."""
    try:
        return get()
    except _FAILURES as exc:
        raise ConnectError(f"okq over redis-py: cannot connect: {exc}") from exc


async def _aget_connection(get: Callable[[], Any]) -> Any:
    """A connection from a ``redis.asyncio`` pool's `_connection_getter`."""
    try:
        return await get()
    except _FAILURES as exc:
        raise ConnectError(f"okq over redis.asyncio: cannot connect: {exc}") from exc


async def _agive_back(pool: Any, rconn: Any, disconnect: bool) -> None:
    """Give a borrowed ``redis.asyncio`` connection back, disconnected first when a reply may
    still be owed on it.  Runs to its end even if the caller is cancelled meanwhile
    (`run_to_end`): a connection never given back is a pool slot lost for good."""

    async def give_back() -> None:
        try:
            if disconnect:
                await rconn.disconnect()
        finally:
            await pool.release(rconn)

    await run_to_end(give_back())


def _sync_read(rconn: Any) -> Reply:
    """One parsed reply (read within redis-py's socket timeout); an error reply comes back
    as an `ErrorReply` value."""
    try:
        reply: Reply = rconn.read_response(disable_decoding=True)
        return reply
    except redis.ResponseError as exc:
        return _error_reply(exc)


async def _async_read(rconn: Any, timeout_s: float | None) -> Reply:
    """`_sync_read` for ``redis.asyncio``; `timeout_s` (a QNOTIFY wait) replaces redis-py's
    socket timeout for this read.

    redis-py's own ``read_response(timeout=...)`` returns None when that timeout passes,
    which reads exactly like okq's nil reply, so the read is timed here instead: redis-py
    waits without limit and a timeout cancels it (redis-py then disconnects).
    """
    try:
        if timeout_s is None:
            reply: Reply = await rconn.read_response(disable_decoding=True)
        else:
            read = rconn.read_response(disable_decoding=True, timeout=math.inf)
            try:
                reply = await asyncio.wait_for(read, timeout_s)
            except asyncio.TimeoutError as exc:
                raise TimeoutError(f"no QNOTIFY reply within {timeout_s} s") from exc
        return reply
    except redis.ResponseError as exc:
        return _error_reply(exc)


class RedisPoolClient(plans.SyncMethods):
    """The sync okq client over a user's ``redis.ConnectionPool`` (same methods as
    ``okq_transports.sync.Client``: `push`, `push_event`, `push_many`, `peek_next`,
    `peek_last`, `status`, `info`, `flush`, `ping`, `consume`).

    The pool stays the caller's: `close` does not close it.  Each request borrows a
    connection, pipelines its commands in one ``send_packed_command``, reads the replies
    redis-py parsed, and gives the connection back (disconnected first if a reply might
    still be owed, so no later user can read it).

    Args:
        pool: a ``redis.ConnectionPool`` made with ``protocol=2`` (see `check_pool`).
        notify_timeout_s: the ``QNOTIFY`` wait of consumers, in whole seconds.
        id_factory: makes event ids for `push` (uuid4 text by default).
        hooks: metrics hooks.

    Raises:
        LocalProtocolError: the pool cannot talk to okq (`check_pool`).
    """

    def __init__(
        self,
        pool: redis.ConnectionPool,
        *,
        notify_timeout_s: int = DEFAULT_NOTIFY_TIMEOUT_S,
        id_factory: IdFactory | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        check_pool(pool.connection_kwargs)
        check_client_options(notify_timeout_s=notify_timeout_s, id_factory=id_factory, hooks=hooks)
        self._pool: Any = pool
        self._get = _connection_getter(pool)
        self._address = _address(pool)
        self.notify_timeout_s = notify_timeout_s
        self._id_factory = id_factory or new_event_id
        self.hooks = hooks or Hooks()
        self.active_hooks = active_hooks(self.hooks)

    def __enter__(self) -> RedisPoolClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to close: the pool belongs to the caller."""

    def _run(self, commands: Sequence[Command[Any]]) -> tuple[list[CommandReplied], bool]:
        retried = False
        for attempt in range(2):
            rconn = _get_connection(self._get)
            exchange = _Exchange(commands)
            try:
                rconn.send_packed_command([exchange.data_to_send()])
                while exchange.wants_reply():
                    exchange.push(_sync_read(rconn))
                return exchange.replies, retried
            except _FAILURES as exc:
                retried = _retry_or_raise(exc, attempt, commands, self.active_hooks, self._address)
            finally:
                if exchange.owed:  # failed mid-request: the reply may still come, to nobody
                    rconn.disconnect()
                self._pool.release(rconn)
        raise AssertionError("unreachable")  # pragma: no cover

    def consume(
        self,
        handler: Callable[[Delivery], bool],
        queues: Sequence[str],
        *,
        expire_seconds: int = DEFAULT_EXPIRE_S,
        concurrency: int = 1,
        stop: threading.Event | None = None,
    ) -> None:
        """Consume until `stop` is set, as ``okq_transports.sync.Client.consume`` does (the
        same consumer driver): one borrowed redis-py connection per consumer thread.

        A ``QNOTIFY`` wait is polled in short slices (``can_read``) so a stop is noticed at
        once, and may outlast redis-py's ``socket_timeout``; handlers run to completion
        (threads cannot be cancelled: check ``delivery.deadline`` against `time.monotonic`).
        Connection failures reconnect with backoff.
        """
        queue_list = check_consume_options(
            handler, queues, expire_seconds=expire_seconds, concurrency=concurrency
        )
        settings = ConsumerSettings(
            _SyncRedisLinks(self._pool, self._get),
            handler,
            queue_list,
            expire_seconds,
            self.notify_timeout_s,
            None,  # the consumer's own budgets (`Consumer.reply_budget_s`), and redis-py's
            self.active_hooks,
        )
        run_consumers(settings, stop or threading.Event(), Backoff, concurrency)


class _SyncRedisLink:
    """A `Link` of the sync consumer driver over a borrowed redis-py connection: redis-py
    reads and parses, its replies reach the consumer machine through `ParsedReplies`."""

    __slots__ = ("_feed", "_pool", "_rconn", "_read_timeout_s", "address", "conn")

    def __init__(self, pool: Any, rconn: Any, address: tuple[str, int]) -> None:
        self._pool = pool
        self._rconn = rconn
        self._feed = ParsedReplies()
        self.conn = ClientConnection(self._feed)
        self.address = address
        self._read_timeout_s: float | None = None

    def set_read_timeout(self, seconds: float | None) -> None:
        """How long `fill` may take: waiting for a reply to start, then each read of its rest
        (the socket's timeout while redis-py reads; its ``socket_timeout`` again after)."""
        self._read_timeout_s = seconds

    def flush(self, data: bytes) -> None:
        try:
            self._rconn.send_packed_command([data])
        except _FAILURES as exc:
            raise _okq_error(exc, "okq over redis-py") from exc

    def fill(self) -> None:
        timeout = self._read_timeout_s
        if timeout is None:
            self._read(None)
        elif not self.fill_by(time.monotonic() + timeout):
            raise TimeoutError(
                f"no reply from {where(self.address)} within {timeout:.1f} s (okq over redis-py)"
            )

    def fill_by(self, deadline: float) -> bool:
        # Polled, not read with read_response(timeout=...): redis-py's timed-out read returns
        # None, which reads exactly like okq's nil reply.
        remaining = deadline - time.monotonic()
        try:
            ready = remaining > 0 and self._rconn.can_read(timeout=remaining)
        except _FAILURES as exc:
            raise _okq_error(exc, "okq over redis-py") from exc
        if ready:
            self._read(deadline)
        return bool(ready)

    def _read(self, deadline: float | None) -> None:
        """One reply through redis-py; with a `deadline`, no read of it waits past it (a reply
        that stops midway, behind a half-open connection, fails with a timeout)."""
        rconn = self._rconn
        sock = getattr(rconn, "_sock", None) if deadline is not None else None
        try:
            if sock is not None:
                assert deadline is not None
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
            self._feed.push(_sync_read(rconn))
        except _FAILURES as exc:
            raise _okq_error(exc, "okq over redis-py") from exc
        finally:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.settimeout(rconn.socket_timeout)

    def close(self) -> None:
        # Never hand a consumer connection back as is: it is registered (the server counts it
        # as a consumer) and may owe a QNOTIFY reply.
        try:
            self._rconn.disconnect()
        finally:
            self._pool.release(self._rconn)


class _SyncRedisLinks:
    """The `LinkSource` of `RedisPoolClient.consume`: connections borrowed from its pool."""

    __slots__ = ("_get", "_pool", "preferred_address")

    def __init__(self, pool: Any, get: Callable[[], Any]) -> None:
        self._pool = pool
        self._get = get
        self.preferred_address = _address(pool)

    def connect_any(self, read_timeout_s: float | None) -> _SyncRedisLink:
        return _SyncRedisLink(self._pool, _get_connection(self._get), self.preferred_address)


class _RedisLink:
    """A `ConsumerLink` over a borrowed ``redis.asyncio`` connection."""

    def __init__(self, pool: Any, rconn: Any) -> None:
        self._pool = pool
        self._rconn = rconn
        self._feed = ParsedReplies()
        self.connection: ClientConnection | None = ClientConnection(self._feed)
        self.address: tuple[str, int] | None = None
        self.read_timeout_s: float | None = None  # None: redis-py's socket_timeout

    async def send(self, data: bytes) -> None:
        try:
            await self._rconn.send_packed_command([data])
        except _FAILURES as exc:
            raise _okq_error(exc, "okq over redis.asyncio") from exc

    async def receive(self, consumer: Consumer, timeout_s: float | None) -> None:
        try:
            self._feed.push(await _async_read(self._rconn, timeout_s))
        except _FAILURES as exc:
            raise _okq_error(exc, "okq over redis.asyncio") from exc

    async def aclose(self) -> None:
        # A consumer connection may owe a QNOTIFY reply: never hand it back as is.
        await _agive_back(self._pool, self._rconn, disconnect=True)


class AsyncRedisPoolClient(AsyncClient):
    """The asyncio okq client over a user's ``redis.asyncio.ConnectionPool``: the same
    coroutines as ``okq_transports.asyncio.Client`` (`consume` and `deliveries` included,
    handlers cancelled at claim expiry), with requests and consumers on connections
    borrowed from the pool.  `aclose` leaves the pool to its owner.

    Raises:
        LocalProtocolError: the pool cannot talk to okq (`check_pool`).
    """

    def __init__(
        self,
        pool: redis.asyncio.ConnectionPool,
        *,
        notify_timeout_s: int = DEFAULT_NOTIFY_TIMEOUT_S,
        id_factory: IdFactory | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        check_pool(pool.connection_kwargs)
        super().__init__(
            ASYNCIO,
            _address(pool),
            pool_size=1,
            connect_timeout_s=None,
            read_timeout_s=None,
            notify_timeout_s=notify_timeout_s,
            id_factory=id_factory,
            hooks=hooks,
        )
        self._redis_pool: Any = pool
        self._get = _connection_getter(pool)
        self._address = _address(pool)
        self._open_link = self._open_redis_link

    async def aclose(self) -> None:
        """Nothing to close: the pool belongs to the caller."""

    async def _run(self, commands: Sequence[Command[Any]]) -> tuple[list[CommandReplied], bool]:
        retried = False
        for attempt in range(2):
            rconn = await _aget_connection(self._get)
            exchange = _Exchange(commands)
            try:
                await rconn.send_packed_command([exchange.data_to_send()])
                while exchange.wants_reply():
                    exchange.push(await _async_read(rconn, None))
                return exchange.replies, retried
            except _FAILURES as exc:
                retried = _retry_or_raise(exc, attempt, commands, self.active_hooks, self._address)
            finally:
                # cancelled or failed mid-request: disconnect, so the reply goes to nobody
                await _agive_back(self._redis_pool, rconn, disconnect=exchange.owed)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _open_redis_link(self) -> ConsumerLink:
        rconn = await _aget_connection(self._get)
        return _RedisLink(self._redis_pool, rconn)
