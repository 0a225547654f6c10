"""The embedded okq server: asyncio TCP around the pure server machines of `okq_proto.server`.

Owns: the public names of the server (this module is the API; the modules under it are not):
`EmbeddedServer` (an async context manager on the running asyncio loop), `ThreadedServer` and
`run_in_thread` (a background thread for sync code and pytest fixtures), `open_server` (trio),
`serve` (the CLI's ``okq serve``, ``python -m okq_transports serve``), their `ServerOptions`
and where queues live (`Storage`, `MemoryStorage`, `StorageError`; `RedisStorage` in okq's
Redis layout, beside real okq instances, with its errors `RedisUnavailableError` and
`RedisMissingError`: redis-py is imported only when a `RedisStorage` starts).
Must not know: okq's rules (`okq_proto.server`) or the clients.

Modules below, each knowing less than the one before: ``_runners`` (threads, trio, the
foreground), ``_embedded`` (`EmbeddedServer`: sockets, tasks, waits), ``_options``,
``_storage`` (the queues behind the server), ``_redis_storage`` (okq's Redis layout and steps)
over ``_redis_pubsub`` (notifications) and ``_redis_link`` (redis-py), and ``_loop_thread``
(a loop in a thread).
"""

from __future__ import annotations

from ._embedded import EmbeddedServer
from ._options import DEFAULT_MAX_NOTIFY_WAITS, ServerOptions
from ._redis_link import RedisMissingError, RedisUnavailableError
from ._redis_storage import RedisStorage
from ._runners import ThreadedServer, open_server, run_in_thread, serve
from ._storage import MemoryStorage, Storage, StorageError

__all__ = [
    "DEFAULT_MAX_NOTIFY_WAITS",
    "EmbeddedServer",
    "MemoryStorage",
    "RedisMissingError",
    "RedisStorage",
    "RedisUnavailableError",
    "ServerOptions",
    "Storage",
    "StorageError",
    "ThreadedServer",
    "open_server",
    "run_in_thread",
    "serve",
]
