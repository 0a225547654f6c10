"""okq over a user's redis-py pool (sync and ``redis.asyncio``): okq-go v2's ``RedisPool``.

Owns: checking that a redis-py pool can talk to okq, borrowing its connections
(``get_connection`` / ``send_packed_command([data])`` / ``read_response(disable_decoding=True)``
/ ``release``, after ``disconnect()`` when a reply may still be owed), and turning redis-py's
raised ``ResponseError`` back into an `ErrorReply` value.
Must not know: okq's reply shapes or consumer rules, pooling, retries.  A borrowed
connection is a stream of the one driver (`RedisStream`, `AsyncRedisStream`) lent by the
user's pool (``okq_transports._async.borrowed``): the replies redis-py parsed are fed to
okq_proto's own machines through `ParsedReplies`, a decoder that hands out already-decoded
replies, so commands, pipelining, retries and the consumer loop are the driver's, unchanged.

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
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import redis
import redis.asyncio

from okq_proto import (
    DEFAULT_NOTIFY_TIMEOUT_S,
    NEED_DATA,
    ClientConnection,
    ConnectError,
    ConnectionClosed,
    DecoderBackend,
    ErrorReply,
    Hooks,
    IdFactory,
    LocalProtocolError,
    NeedData,
    OkqError,
    RemoteProtocolError,
    Reply,
    TimeoutError,
)
from okq_proto.policy import DEFAULT_RETRIES

from ._async.borrowed import AsyncBorrowedPool
from ._async.consume import AsyncClient
from ._asyncio_backend import ASYNCIO, run_to_end
from ._observe import where
from ._socket import SOCKETS
from ._sync.borrowed import SyncBorrowedPool
from ._sync.consume import SyncClient

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


class RedisStream:
    """A connection borrowed from a ``redis.ConnectionPool`` as the blocking driver's stream:
    bytes leave through ``send_packed_command``, replies come back parsed by redis-py
    (``read_response``) and reach the machine through `ParsedReplies`."""

    __slots__ = ("_feed", "_pool", "_rconn", "_returned")

    def __init__(self, pool: Any, rconn: Any) -> None:
        self._pool = pool
        self._rconn = rconn
        self._feed = ParsedReplies()
        self._returned = False

    def new_machine(self, decoder: DecoderBackend, max_reply_bytes: int | None) -> ClientConnection:
        return ClientConnection(self._feed)

    def send_all(self, data: bytes) -> None:
        try:
            self._rconn.send_packed_command([data])
        except _FAILURES as exc:
            raise _okq_error(exc, "okq over redis-py") from exc

    def fill(self, machine: object, timeout_s: float | None) -> None:
        """One reply through redis-py.  With `timeout_s`, no read of it waits past that: the
        reply's start is polled (``can_read``: redis-py's own timed-out read returns None,
        which reads exactly like okq's nil reply), its rest read under a socket timeout
        (a reply that stops midway, behind a half-open connection, times out)."""
        rconn = self._rconn
        try:
            if timeout_s is None:
                self._feed.push(_sync_read(rconn))
                return
            deadline = time.monotonic() + timeout_s
            if not rconn.can_read(timeout=timeout_s):
                raise TimeoutError(
                    f"no reply from {where(_address(self._pool))} within {timeout_s:.1f} s"
                )
            sock = getattr(rconn, "_sock", None)
            try:
                if sock is not None:
                    sock.settimeout(max(deadline - time.monotonic(), 0.001))
                self._feed.push(_sync_read(rconn))
            finally:
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.settimeout(rconn.socket_timeout)
        except _FAILURES as exc:
            raise _okq_error(exc, "okq over redis-py") from exc

    def has_unread(self) -> bool:
        return False  # redis-py's pool checks a connection it hands out (can_read)

    def give_back(self) -> None:
        if not self._returned:
            self._returned = True
            self._pool.release(self._rconn)

    def close(self) -> None:
        # A reply may still be owed (or, for a consumer, it is registered): never hand the
        # connection back as it is.
        if self._returned:
            return
        self._returned = True
        try:
            self._rconn.disconnect()
        finally:
            self._pool.release(self._rconn)


class AsyncRedisStream:
    """A connection borrowed from a ``redis.asyncio.ConnectionPool`` as the async driver's
    stream (`RedisStream` for ``redis.asyncio``)."""

    __slots__ = ("_feed", "_pool", "_rconn", "_returned")

    def __init__(self, pool: Any, rconn: Any) -> None:
        self._pool = pool
        self._rconn = rconn
        self._feed = ParsedReplies()
        self._returned = False

    def new_machine(self, decoder: DecoderBackend, max_reply_bytes: int | None) -> ClientConnection:
        return ClientConnection(self._feed)

    async def send_all(self, data: bytes) -> None:
        try:
            await self._rconn.send_packed_command([data])
        except _FAILURES as exc:
            raise _okq_error(exc, "okq over redis.asyncio") from exc

    async def fill(self, machine: object, timeout_s: float | None) -> None:
        try:
            self._feed.push(await _async_read(self._rconn, timeout_s))
        except _FAILURES as exc:
            raise _okq_error(exc, "okq over redis.asyncio") from exc

    def has_unread(self) -> bool:
        return False  # redis-py's pool checks a connection it hands out

    async def give_back(self) -> None:
        await self._hand_back(disconnect=False)

    async def aclose(self) -> None:
        await self._hand_back(disconnect=True)

    async def _hand_back(self, *, disconnect: bool) -> None:
        """Give the connection back, disconnected first when a reply may still be owed on
        it.  Runs to its end even if the caller is cancelled meanwhile (`run_to_end`): a
        connection never given back is a pool slot lost for good."""
        if self._returned:
            return
        self._returned = True
        pool, rconn = self._pool, self._rconn

        async def hand_back() -> None:
            try:
                if disconnect:
                    await rconn.disconnect()
            finally:
                await pool.release(rconn)

        await run_to_end(hand_back())


def _idle_connected(pool: Any, stream_attribute: str) -> int:
    """How many idle connections of a redis-py pool are connected.  redis-py keeps no public
    count: its list of idle connections (which keeps disconnected ones for reuse) and each
    connection's socket (``_sock``) or reader (``_reader``, ``redis.asyncio``) have kept their
    names from 5.0 to 8; informational only (0 when they are not there)."""
    idle = getattr(pool, "_available_connections", ())
    return sum(1 for conn in idle if getattr(conn, stream_attribute, None) is not None)


class _Lender:
    """Lends the connections of a sync ``redis.ConnectionPool`` (`SyncLender`)."""

    def __init__(self, pool: Any) -> None:
        check_pool(pool.connection_kwargs)
        self._pool = pool
        self._get = _connection_getter(pool)
        self.address = _address(pool)

    def idle_count(self) -> int:
        return _idle_connected(self._pool, "_sock")

    def borrow(self) -> RedisStream:
        try:
            return RedisStream(self._pool, self._get())
        except _FAILURES as exc:
            raise ConnectError(f"okq over redis-py: cannot connect: {exc}") from exc


class _AsyncLender:
    """Lends the connections of a ``redis.asyncio.ConnectionPool`` (`AsyncLender`)."""

    def __init__(self, pool: Any) -> None:
        check_pool(pool.connection_kwargs)
        self._pool = pool
        self._get = _connection_getter(pool)
        self.address = _address(pool)

    def idle_count(self) -> int:
        return _idle_connected(self._pool, "_reader")

    async def borrow(self) -> AsyncRedisStream:
        try:
            return AsyncRedisStream(self._pool, await self._get())
        except _FAILURES as exc:
            raise ConnectError(f"okq over redis.asyncio: cannot connect: {exc}") from exc


class RedisPoolClient(SyncClient):
    """The sync okq client over a user's ``redis.ConnectionPool`` (same methods as
    ``okq_transports.sync.Client``: `push`, `push_event`, `push_many`, `execute`,
    `peek_next`, `peek_last`, `status`, `info`, `flush`, `ping`, `consume`, `connection`).

    The pool stays the caller's: `close` does not close it.  Every byte goes through it
    (its TLS, unix socket, limits and timeouts hold): each request borrows a connection,
    pipelines its commands in one ``send_packed_command``, reads the replies redis-py parsed,
    and gives the connection back (disconnected first if a reply might still be owed, so no
    later user can read it).  Each consumer borrows a connection of its own; a ``QNOTIFY``
    wait is polled in short slices (``can_read``) so a stop is noticed at once, and may
    outlast redis-py's ``socket_timeout``; handlers run to completion (threads cannot be
    cancelled: check ``delivery.deadline`` against `time.monotonic`).

    Args:
        pool: a ``redis.ConnectionPool`` made with ``protocol=2`` (see `check_pool`).
        notify_timeout_s: the ``QNOTIFY`` wait of consumers, in whole seconds.
        retries: how many times a retry-safe request is sent again on a new connection after
            a connection failure (`okq_proto.policy.may_retry`; the same on every door).
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
        retries: int = DEFAULT_RETRIES,
        id_factory: IdFactory | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        lender = _Lender(pool)
        super().__init__(
            lender.address,
            backend=SOCKETS,
            retries=retries,
            notify_timeout_s=notify_timeout_s,
            id_factory=id_factory,
            hooks=hooks,
            pool=SyncBorrowedPool(lender),
        )

    def close(self) -> None:
        """Refuse further requests (`okq_proto.ClientClosed`); the pool stays open: it
        belongs to the caller."""
        super().close()


class AsyncRedisPoolClient(AsyncClient):
    """The asyncio okq client over a user's ``redis.asyncio.ConnectionPool``: the same
    coroutines as ``okq_transports.asyncio.Client`` (`consume`, `deliveries` and
    `connection` included, handlers cancelled at claim expiry), every byte through the
    user's pool: each request and each consumer borrows its connections.  `aclose` leaves
    the pool to its owner.

    Raises:
        LocalProtocolError: the pool cannot talk to okq (`check_pool`).
    """

    def __init__(
        self,
        pool: redis.asyncio.ConnectionPool,
        *,
        notify_timeout_s: int = DEFAULT_NOTIFY_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        id_factory: IdFactory | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        lender = _AsyncLender(pool)
        super().__init__(
            lender.address,
            backend=ASYNCIO,
            retries=retries,
            notify_timeout_s=notify_timeout_s,
            id_factory=id_factory,
            hooks=hooks,
            pool=AsyncBorrowedPool(lender),
        )

    async def aclose(self) -> None:
        """Refuse further requests (`okq_proto.ClientClosed`); the pool stays open: it
        belongs to the caller."""
        await super().aclose()
