"""The embedded okq server on an asyncio loop: `EmbeddedServer`.

Owns: the listening socket, one task per connection, the QNOTIFY wakers and the bound on the
waits held at once, the NOBLOCK pushes stored in the background, and a graceful close.
Must not know: okq's rules.  Framing is `okq_proto.server.ServerConnection`, command meaning
and replies are `okq_proto.server.Dispatcher`, queues live behind
`okq_transports.server.Storage`.  This module only carries out the `Action` values.  Threads
and trio are `okq_transports.server._runners`.

Like okq, a connection is served one request at a time and is not read while a QNOTIFY waits,
so a client that closes during a QNOTIFY stays a registered consumer until the QNOTIFY ends.
What okq leaves unbounded is capped here (docs/server.md, "Exposure and caps"): the bytes one
request may hold while it is read (``max_query_bytes``, Redis's client-query-buffer-limit) and
the QNOTIFY waits the server holds at once (``max_notify_waits``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, NoReturn, final

from okq_proto import NEED_DATA
from okq_proto.server import (
    DEFAULT_MAX_ARRAY_COUNT,
    DEFAULT_MAX_BULK_BYTES,
    DEFAULT_MAX_LINE_BYTES,
    DEFAULT_MAX_NESTING,
    DEFAULT_MAX_QUERY_BYTES,
    DEFAULT_NOBLOCK_WORKERS,
    ERR_SERVER_SIDE,
    OK,
    Ack,
    Action,
    CloseWithoutReply,
    Dispatcher,
    Flush,
    Peek,
    PeerClosed,
    Pop,
    Push,
    Register,
    Reply,
    RunInBackground,
    RunOp,
    ServerConnection,
    Status,
    StorageOp,
    WaitForNotify,
    encode_event,
    render_ack,
    render_info,
    render_push,
    render_status,
)

from ._options import DEFAULT_MAX_NOTIFY_WAITS, Listening
from ._storage import Storage, StorageError

if TYPE_CHECKING:
    pass  # typing.Unpack is 3.11+; annotations only

__all__ = ["EmbeddedServer", "run_op"]

_log = logging.getLogger("okq.server")
_READ_SIZE: Final = 65536
#: How long `EmbeddedServer.aclose` waits for closing connections to deregister and close.
_CLEANUP_WAIT_S: Final = 5.0
#: Loop steps `EmbeddedServer.aclose` lets pass for connections accepted just before it, and
#: how many times it looks again.
_SETTLE_STEPS: Final = 5
_SETTLE_ROUNDS: Final = 5
#: How long a closing connection may take to send what is buffered, then it is aborted; when
#: the server stops, a connection with unsent replies (a client not reading) is aborted at once.
_FLUSH_S: Final = 10.0
_SHUTDOWN_FLUSH_S: Final = 0.0
_FLUSH_AT: Final = 65536  # pipelined replies are written in batches up to this size


def assert_never(value: NoReturn) -> NoReturn:  # typing.assert_never is 3.11+
    raise AssertionError(f"unhandled value {value!r}")


@final
class EmbeddedServer(Listening):
    """An okq server on an asyncio loop.  Use ``async with``, or `start` and `aclose`.

    ::

        async with EmbeddedServer(port=0, sweep_interval_s=0.5) as srv:
            print(srv.address)   # "127.0.0.1:PORT"

    Args:
        host: address to listen on (loopback by default).
        port: TCP port; 0 picks a free one (read it from `port` after start).
        storage: where queues live; a fresh `MemoryStorage` if None.  Pass the same one to a
            new server to keep the data across a restart.
        **options: the `ServerOptions` (sweep interval, seed, input limits, ...).
    """

    def _init(self) -> None:
        options = self._options
        self.dispatcher = Dispatcher(
            rng=random.Random(options.get("seed")),
            noblock_workers=options.get("noblock_workers", DEFAULT_NOBLOCK_WORKERS),
        )
        """The pure command layer (its ``hub`` holds the QNOTIFY state)."""
        self._limits = (
            options.get("max_bulk_bytes", DEFAULT_MAX_BULK_BYTES),
            options.get("max_array_count", DEFAULT_MAX_ARRAY_COUNT),
            options.get("max_line_bytes", DEFAULT_MAX_LINE_BYTES),
            options.get("max_nesting", DEFAULT_MAX_NESTING),
            options.get("max_query_bytes", DEFAULT_MAX_QUERY_BYTES),
        )
        self._max_waits = options.get("max_notify_waits", DEFAULT_MAX_NOTIFY_WAITS)
        self._waits = 0  # QNOTIFY waits held now
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._ending: set[asyncio.Task[None]] = set()  # connections in their clean-up
        self._writers: set[asyncio.StreamWriter] = set()  # every connection not yet closed
        self._tasks: set[asyncio.Task[None]] = set()  # every connection's task
        self._closing = False  # set by aclose: connections end at their next step
        self._background: set[asyncio.Task[None]] = set()
        self._wakers: dict[str, asyncio.Event] = {}
        self._unsubscribe: list[Callable[[], None]] = []

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound TCP port (known once started)."""
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def connection_count(self) -> int:
        """Open client connections."""
        return len(self._connections)

    @property
    def notify_waits(self) -> int:
        """QNOTIFY waits held now (at most ``max_notify_waits``)."""
        return self._waits

    async def start(self) -> None:
        """Start the storage and listen.

        Raises:
            OSError: the address cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("server already started")
        self._closing = False
        await self.storage.start()
        unsubscribe = self.storage.subscribe(self._on_publish)
        try:
            self._server = await asyncio.start_server(
                self._connected,
                self._host,
                self._requested_port,
                reuse_address=True,
                ssl=self._options.get("ssl"),
            )
        except BaseException:
            unsubscribe()
            await self.storage.stop()
            raise
        self._unsubscribe = [unsubscribe]
        self._port = self._server.sockets[0].getsockname()[1]
        _log.info("okq server listening on %s", self.address)

    async def aclose(self) -> None:
        """Stop listening, close every connection (ending waits), finish pending NOBLOCK
        stores, stop the storage's timers.  Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        self._closing = True
        # A connection accepted just before the close gets its task a few loop steps later
        # (accept, connection_made, the task's first step); it sees `_closing` and ends at
        # once.  Until no connection is left: cancel them (on Python 3.11 asyncio.wait_for
        # can swallow a cancellation that races with its inner wait finishing, a QNOTIFY
        # woken by a push just as the server stops, so one cancel() is not always enough),
        # then wait for their clean-up.
        accepting = [t for t in asyncio.all_tasks() if _accepts(t)]
        if accepting:  # sockets accepted, their transports not yet made: let them finish
            await asyncio.wait(accepting, timeout=_CLEANUP_WAIT_S)
        for _ in range(_SETTLE_ROUNDS):  # bounded: each round is a few loop steps
            for _ in range(_SETTLE_STEPS):
                await asyncio.sleep(0)
            if not self._connections and not self._ending:
                break
            while self._connections:
                for task in list(self._connections):
                    task.cancel()
                await asyncio.wait(list(self._connections), timeout=0.1)
            if self._ending:
                await asyncio.wait(list(self._ending), timeout=_CLEANUP_WAIT_S)
        if self._writers:  # connections whose task had not started: closed here, at once
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()
            await asyncio.sleep(0)  # the transports close their sockets on the next step
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await server.wait_closed()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        await self.storage.stop()

    async def serve_forever(self) -> None:
        """Serve until cancelled (then close gracefully)."""
        try:
            await asyncio.Event().wait()
        finally:
            await self.aclose()

    async def __aenter__(self) -> EmbeddedServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- connections --------------------------------------------------------------------------

    def _on_publish(self, queue: bytes) -> None:
        for consumer in self.dispatcher.hub.publish(queue):
            waker = self._wakers.get(consumer)
            if waker is not None:
                waker.set()

    def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A new connection (called as it is made, before its task runs): known from now on,
        so that `aclose` closes it even if its task never gets to run."""
        self._writers.add(writer)
        task = asyncio.get_running_loop().create_task(self._accept(reader, writer))
        self._tasks.add(task)  # a strong reference until it ends (the loop keeps only a weak one)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        consumer = str(uuid.uuid4())  # okq's per-connection id is a UUID v4 too
        self._wakers[consumer] = asyncio.Event()
        try:
            await self._serve_connection(consumer, reader, writer)
        except (ConnectionError, OSError) as exc:
            _log.debug("connection %s lost: %r", consumer, exc)
        except asyncio.CancelledError:
            pass  # shutdown: end quietly; the finally clause cleans up
        finally:
            # Out of the set `aclose` cancels, into the one it waits for: the clean-up
            # (deregistering, closing the socket) always runs to its end.
            self._connections.discard(task)
            self._ending.add(task)
            try:
                del self._wakers[consumer]
                op = self.dispatcher.connection_closed(consumer)
                with contextlib.suppress(StorageError):
                    await self.storage.register(consumer, op.queues)
            finally:
                await _close_writer(writer, _SHUTDOWN_FLUSH_S if self._closing else _FLUSH_S)
                self._writers.discard(writer)
                self._ending.discard(task)

    async def _serve_connection(
        self, consumer: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        bulk, count, line, nesting, query = self._limits
        conn = ServerConnection(
            max_bulk_bytes=bulk,
            max_array_count=count,
            max_line_bytes=line,
            max_nesting=nesting,
            max_query_bytes=query,
        )
        pending = bytearray()
        # Bounded: each iteration either reads (blocking until data/EOF) or answers a request.
        while not self._closing:
            event = conn.next_event()
            if event is NEED_DATA:
                await _flush(writer, pending)
                data = await reader.read(_READ_SIZE)
                if data:
                    conn.receive_data(data)
                else:
                    conn.receive_eof()
                continue
            if isinstance(event, (CloseWithoutReply, PeerClosed)):
                await _flush(writer, pending)
                if isinstance(event, CloseWithoutReply):
                    _log.debug("closing %s without reply: %s", consumer, event.reason)
                return
            action = self.dispatcher.handle(consumer, event)
            conn.send_reply(await self._carry_out(consumer, action, writer, conn, pending))
            pending += conn.data_to_send()
            if len(pending) >= _FLUSH_AT:
                await _flush(writer, pending)

    async def _carry_out(
        self,
        consumer: str,
        action: Action,
        writer: asyncio.StreamWriter,
        conn: ServerConnection,
        pending: bytearray,
    ) -> bytes:
        match action:
            case Reply():
                return action.data
            case RunOp():
                try:
                    return await run_op(self.storage, consumer, action.op)
                except StorageError as exc:
                    _log.warning("storage failed: %s", exc)
                    return ERR_SERVER_SIDE
            case RunInBackground():
                task = asyncio.get_running_loop().create_task(self._store_later(action.op))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                return action.reply
            case WaitForNotify():
                try:
                    found = await self.storage.first_with_unclaimed(action.queues)
                except StorageError as exc:  # okq: its initial check failed in Redis
                    _log.warning("storage failed: %s", exc)
                    return ERR_SERVER_SIDE
                reply = action.after_check(found)
                if reply is not None:
                    return reply
                if self._waits >= self._max_waits:
                    # okq would wait; past the bound we answer as okq does when it cannot
                    # serve (clients treat that as transient and retry after a backoff).
                    _log.warning("QNOTIFY refused: %d waits held (max_notify_waits)", self._waits)
                    return ERR_SERVER_SIDE
                self._waits += 1  # taken before the flush, which may wait for a slow reader
                try:
                    await _flush(writer, pending)  # earlier pipelined replies go out first
                    hub = self.dispatcher.hub
                    waker = self._wakers[consumer]
                    waker.clear()
                    if not hub.start_wait(consumer):
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.wait_for(waker.wait(), action.wait_s)
                finally:
                    self._waits -= 1
                return hub.end_wait(consumer)
            case _:
                assert_never(action)

    async def _store_later(self, op: Push) -> None:
        try:
            await asyncio.sleep(0)  # the +OK goes out first, as with okq's worker pool
            await self.storage.push(op.queue, op.event_id, op.contents, right=op.right)
        except StorageError as exc:
            _log.warning("NOBLOCK push failed: %s", exc)  # okq only logs it too
        finally:
            self.dispatcher.background_done()


async def run_op(storage: Storage, consumer: str, op: StorageOp) -> bytes:
    """Carry out one `StorageOp` against ``storage`` for connection ``consumer``; the reply.

    Raises:
        StorageError: the storage failed.
    """
    match op:
        case Push():
            stored = await storage.push(op.queue, op.event_id, op.contents, right=op.right)
            return render_push(op, stored)
        case Peek():
            return encode_event(await storage.peek(op.queue, left=op.left))
        case Pop():
            return encode_event(await storage.pop(op.queue, op.expire_s))
        case Ack():
            return render_ack(await storage.ack(op.queue, op.event_id))
        case Flush():
            await storage.flush(op.queue)
            return OK
        case Register():
            await storage.register(consumer, op.queues)
            return OK
        case Status():
            entries = await storage.status(op.queues)
            return render_info(entries) if op.info else render_status(entries)
        case _:
            assert_never(op)


def _accepts(task: asyncio.Task[Any]) -> bool:
    """Is `task` the event loop's own step between accepting a socket and making its
    transport (``_accept_connection2`` of asyncio's selector loop; uvloop has none)?"""
    name = getattr(task.get_coro(), "__qualname__", "")
    return isinstance(name, str) and name.endswith("_accept_connection2")


async def _close_writer(writer: asyncio.StreamWriter, flush_s: float) -> None:
    """Close gracefully (what is buffered is sent first), but abort a peer that has not taken
    it within ``flush_s``: a client that stopped reading must not keep the socket open."""
    if flush_s <= 0 and writer.transport.get_write_buffer_size():
        writer.transport.abort()
        await asyncio.sleep(0)  # the transport closes its socket on the next loop step
        return
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), flush_s)
    except asyncio.TimeoutError:  # TimeoutError itself only from 3.11
        writer.transport.abort()
        await asyncio.sleep(0)  # the transport closes its socket on the next loop step
    except Exception:  # the peer reset: the socket is closed already
        pass


async def _flush(writer: asyncio.StreamWriter, pending: bytearray) -> None:
    if pending:
        writer.write(bytes(pending))
        pending.clear()
        await writer.drain()
