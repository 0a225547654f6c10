"""okq_proto.server: the sans-I/O core of an okq server, for servers and fuzzers built on it.

Owns: the public names of the server role, in three layers that each know less than the one
above them:

* framing: `ServerConnection` reads requests the way okq reads them and queues the replies; its
  events are `CommandReceived`, `InvalidCommandReceived`, `CloseWithoutReply` and `PeerClosed`,
  its input limits the ``DEFAULT_MAX_*`` constants.
* meaning: `Dispatcher` turns a request into an `Action` (`Reply`, `RunOp`, `RunInBackground`,
  `WaitForNotify`) over a `StorageOp` (`Push`, `Peek`, `Pop`, `Ack`, `Flush`, `Register`,
  `Status`); the ``render_*`` and ``encode_*`` functions give the exact reply bytes, and
  `NotifyHub` keeps QNOTIFY's waiters.
* queues: `QueueEngine` keeps what okq keeps in Redis, in memory, with its restore sweep
  (`QueueStatus` is its bytes-level counters, not the client's `okq_proto.QueueStatus`).

Must not know: sockets, clocks, tasks, threads.  The I/O layer (``okq_transports.server`` is
one) reads bytes into the connection, carries out each `Action` against its storage and passes
the time in; it decides nothing about okq.  The implementations live in ``okq_proto._server``,
``okq_proto._dispatch`` and ``okq_proto._engine``; import them from here.
"""

from ._dispatch import (
    DEFAULT_NOBLOCK_WORKERS,
    ERR_SERVER_SIDE,
    OK,
    Ack,
    Action,
    Dispatcher,
    Flush,
    NotifyHub,
    Peek,
    Pop,
    Push,
    Register,
    Reply,
    RunInBackground,
    RunOp,
    Status,
    StorageOp,
    WaitForNotify,
    encode_bulk,
    encode_error,
    encode_event,
    render_ack,
    render_info,
    render_push,
    render_status,
)
from ._engine import (
    DEFAULT_EXPIRE_S,
    DEFAULT_SWEEP_INTERVAL_S,
    MAX_LOCK_EXPIRE_S,
    SWEEP_BATCH,
    ExpiryTooLargeError,
    QueueEngine,
    QueueStatus,
)
from ._server import (
    DEFAULT_MAX_ARRAY_COUNT,
    DEFAULT_MAX_BULK_BYTES,
    DEFAULT_MAX_LINE_BYTES,
    DEFAULT_MAX_NESTING,
    DEFAULT_MAX_QUERY_BYTES,
    CloseWithoutReply,
    CommandReceived,
    InvalidCommandReceived,
    PeerClosed,
    Request,
    ServerConnection,
    ServerState,
)

__all__ = [
    "DEFAULT_EXPIRE_S",
    "DEFAULT_MAX_ARRAY_COUNT",
    "DEFAULT_MAX_BULK_BYTES",
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_MAX_NESTING",
    "DEFAULT_MAX_QUERY_BYTES",
    "DEFAULT_NOBLOCK_WORKERS",
    "DEFAULT_SWEEP_INTERVAL_S",
    "ERR_SERVER_SIDE",
    "MAX_LOCK_EXPIRE_S",
    "OK",
    "SWEEP_BATCH",
    "Ack",
    "Action",
    "CloseWithoutReply",
    "CommandReceived",
    "Dispatcher",
    "ExpiryTooLargeError",
    "Flush",
    "InvalidCommandReceived",
    "NotifyHub",
    "Peek",
    "PeerClosed",
    "Pop",
    "Push",
    "QueueEngine",
    "QueueStatus",
    "Register",
    "Reply",
    "Request",
    "RunInBackground",
    "RunOp",
    "ServerConnection",
    "ServerState",
    "Status",
    "StorageOp",
    "WaitForNotify",
    "encode_bulk",
    "encode_error",
    "encode_event",
    "render_ack",
    "render_info",
    "render_push",
    "render_status",
]
