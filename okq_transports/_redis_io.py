"""What the redis-py door needs of redis-py, beside the door itself (written once in
``okq_transports._async.redis_door``, its blocking twin generated).

Owns: checking that a redis-py pool can talk to okq, `ParsedReplies` (replies redis-py parsed,
fed to okq_proto's machines), turning redis-py's errors into okq's (an error *reply* becomes
an `ErrorReply` value), calling ``get_connection`` on every redis-py from 5.0, and the two
halves that differ between sync and ``redis.asyncio``: reading one reply within a deadline
and giving a connection back.
Must not know: okq's reply shapes, pooling, retries, consumers.

okq speaks RESP2 only and treats ``HELLO``, ``AUTH``, ``SELECT`` and ``CLIENT`` as unknown
commands.  redis-py 8 defaults to RESP3 (it sends ``HELLO 3`` on connect), so pools must be
made with ``protocol=2``; the client refuses other pools with a message saying so.  redis-py's
``CLIENT SETINFO`` on connect is answered with an error that redis-py ignores, so it is
harmless.  redis-py's default ``socket_timeout`` (5 s) is shorter than a ``QNOTIFY`` wait:
consumers time that one reply on their own.
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
from typing import Any, Final

import redis

from okq_proto import (
    NEED_DATA,
    ConnectionClosed,
    ErrorReply,
    LocalProtocolError,
    NeedData,
    OkqError,
    RemoteProtocolError,
    Reply,
    TimeoutError,
)

from ._asyncio_backend import run_to_end

__all__ = [
    "FAILURES",
    "ParsedReplies",
    "async_clock",
    "async_hand_back",
    "async_idle_connected",
    "async_read_reply",
    "check_pool",
    "connection_getter",
    "error_reply",
    "okq_error",
    "pool_address",
    "sync_clock",
    "sync_hand_back",
    "sync_idle_connected",
    "sync_read_reply",
]

_RESP2_ONLY: Final = (
    "okq speaks RESP2 only (it answers HELLO with an error): create the redis-py pool with "
    "protocol=2, e.g. redis.ConnectionPool(host=..., port=..., protocol=2)"
)


def check_pool(connection_kwargs: Mapping[str, object]) -> None:
    """Refuse a redis-py pool configuration that cannot talk to okq, with the reason.

    Raises:
        LocalProtocolError: RESP3 (redis-py 8's default, unless redis-py falls back to RESP2
            by itself, as 8.2 does for a pool that names no protocol), credentials (okq has no
            AUTH), a database other than 0 (no SELECT) or a client name (no CLIENT SETNAME).
    """
    protocol = connection_kwargs.get("protocol")
    if protocol is None:
        if _falls_back_to_resp2(connection_kwargs):
            protocol = 2
        else:
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


def _falls_back_to_resp2(connection_kwargs: Mapping[str, object]) -> bool:
    """Whether a pool that did not choose a protocol ends up on RESP2 with okq anyway.

    redis-py 8.2 and later send HELLO 3 on such a pool's connections and, when the server
    answers "unknown command" (as okq does), fall back to RESP2 with a logged warning, unless
    maintenance notifications were switched on explicitly (they need RESP3).
    """
    if not hasattr(redis.connection.AbstractConnection, "_fallback_to_resp2"):
        return False
    maint = connection_kwargs.get("maint_notifications_config")
    return getattr(maint, "enabled", None) is not True


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


def error_reply(exc: redis.ResponseError) -> ErrorReply:
    # redis-py strips a known error code ("ERR ") off the message; okq only sends ERR.
    code = getattr(exc, "status_code", None) or "ERR"
    return ErrorReply(f"{code} {exc}".encode("utf-8", "surrogateescape"))


def okq_error(exc: BaseException, what: str) -> OkqError:
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
FAILURES: Final = (redis.RedisError, OSError)


def pool_address(pool: Any) -> tuple[str, int]:
    """Where a redis-py pool's connections go, for messages: ``(host, port)``, or
    ``("unix:PATH", 0)`` for a unix-socket pool."""
    kwargs = pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}", 0
    return str(kwargs.get("host", "localhost")), int(kwargs.get("port", 6379))


#: The command name given to a redis-py 5.0-5.2 ``get_connection`` (plain pools ignore it).
_COMMAND_NAME: Final = "PING"


def connection_getter(pool: Any) -> Callable[[], Any]:
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


def _idle_connected(pool: Any, stream_attribute: str) -> int:
    idle = getattr(pool, "_available_connections", ())
    return sum(1 for conn in idle if getattr(conn, stream_attribute, None) is not None)


def sync_idle_connected(pool: Any) -> int:
    """How many idle connections of a redis-py pool are connected.  redis-py keeps no public
    count: its list of idle connections (which keeps disconnected ones for reuse) and each
    connection's socket (``_sock``) have kept their names from 5.0 to 8; informational only
    (0 when they are not there)."""
    return _idle_connected(pool, "_sock")


def async_idle_connected(pool: Any) -> int:
    """`sync_idle_connected` for ``redis.asyncio`` (whose connections have a ``_reader``)."""
    return _idle_connected(pool, "_reader")


def _parsed(read: Callable[[], Reply]) -> Reply:
    try:
        return read()
    except redis.ResponseError as exc:
        return error_reply(exc)


def sync_read_reply(rconn: Any, timeout_s: float | None, where: str) -> Reply:
    """One reply through a sync redis-py connection (an error reply as an `ErrorReply`).

    Without `timeout_s`, within redis-py's socket timeout.  With it, no read of the reply
    waits past it: the reply's start is polled (``can_read``: redis-py's own timed-out read
    returns None, which reads exactly like okq's nil reply), its rest read under a socket
    timeout (a reply that stops midway, behind a half-open connection, times out).
    """
    read = functools.partial(rconn.read_response, disable_decoding=True)
    if timeout_s is None:
        return _parsed(read)
    deadline = time.monotonic() + timeout_s
    if not rconn.can_read(timeout=timeout_s):
        raise TimeoutError(f"no reply from {where} within {timeout_s:.1f} s")
    sock = getattr(rconn, "_sock", None)
    try:
        if sock is not None:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
        return _parsed(read)
    finally:
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(rconn.socket_timeout)


async def async_read_reply(rconn: Any, timeout_s: float | None, where: str) -> Reply:
    """`sync_read_reply` for ``redis.asyncio``; `timeout_s` replaces redis-py's socket
    timeout for this read.

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
                raise TimeoutError(f"no reply from {where} within {timeout_s:.1f} s") from exc
        return reply
    except redis.ResponseError as exc:
        return error_reply(exc)


def sync_clock() -> Callable[[], float]:
    """The clock of a blocking redis-py connection's reads: `time.monotonic`."""
    return time.monotonic


def async_clock() -> Callable[[], float]:
    """The clock of a ``redis.asyncio`` connection's reads: the running loop's (call it
    inside the loop)."""
    return asyncio.get_running_loop().time


def sync_hand_back(pool: Any, rconn: Any, disconnect: bool) -> None:
    """Give a borrowed connection back, disconnected first when a reply may still be owed."""
    try:
        if disconnect:
            rconn.disconnect()
    finally:
        pool.release(rconn)


async def async_hand_back(pool: Any, rconn: Any, disconnect: bool) -> None:
    """`sync_hand_back` for ``redis.asyncio``: runs to its end even if the caller is cancelled
    meanwhile (`run_to_end`): a connection never given back is a pool slot lost for good."""

    async def hand_back() -> None:
        try:
            if disconnect:
                await rconn.disconnect()
        finally:
            await pool.release(rconn)

    await run_to_end(hand_back())
