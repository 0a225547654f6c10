"""okq over a user's redis-py pool, sync and ``redis.asyncio``: okq-go v2's ``RedisPool``.

`RedisPoolClient` (over a ``redis.ConnectionPool``) and `AsyncRedisPoolClient` (over a
``redis.asyncio.ConnectionPool``) are the one driver's clients on connections borrowed from
the user's pool: every byte goes through it, so its TLS, unix socket, limits and timeouts
hold.  Pools must be made with ``protocol=2`` (`check_pool` says why a pool is refused).

::

    pool = redis.ConnectionPool(host="127.0.0.1", port=4777, protocol=2)
    with RedisPoolClient(pool) as client:
        client.push("jobs", b"payload")

The door is written once (``okq_transports._async.redis_door``; the blocking one is its
generated twin), over ``okq_transports._redis_io`` (what it needs of redis-py).
"""

from __future__ import annotations

try:
    import redis  # noqa: F401  # only: is the optional dependency installed?
except ImportError as exc:
    raise ModuleNotFoundError(
        "okq_transports.redis needs redis-py: pip install 'okq[redis]'", name=exc.name
    ) from exc

from ._async.redis_door import AsyncRedisPoolClient
from ._redis_io import ParsedReplies, check_pool
from ._sync.redis_door import RedisPoolClient

__all__ = ["AsyncRedisPoolClient", "ParsedReplies", "RedisPoolClient", "check_pool"]
