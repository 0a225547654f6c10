"""The synchronous okq client: a thread-safe connection pool, okq-go v2's methods, consumers.

Owns: the connection pool (bounded, thread-safe, address failover), retrying what is safe to
retry, running handlers, consumer threads with reconnects, logging and hooks.
Must not know: okq's wire rules.  Commands and their replies are `okq_proto` commands, the
consumer loop is `okq_proto.Consumer`, retry and backoff policies are `okq_proto` functions;
bytes move through `okq_transports._sync_io`.

::

    from okq_transports.sync import Client

    with Client("127.0.0.1:4777") as client:
        event_id = client.push("jobs", b"hello")
        client.consume(lambda event: print(event.contents) or True, ["jobs"], stop=stop)
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from types import FrameType, TracebackType
from typing import Final, TypeVar

from okq_proto import (
    Backoff,
    Command,
    CommandReplied,
    Consumer,
    Delivery,
    Event,
    Hooks,
    IdFactory,
    LocalProtocolError,
    Ping,
    PushFlag,
    PushOutcome,
    QFlush,
    QInfo,
    QLPeek,
    QRPeek,
    QStatus,
    QueueStatus,
    RemoteProtocolError,
    TransportError,
    contents_bytes,
    new_event_id,
    parse_addresses,
    push_command,
    refuse_connection_state,
    retry_safe,
    settle_retried_push,
    to_wire,
)
from okq_proto._consumer import DEFAULT_NOTIFY_TIMEOUT_S

from ._sync_consume import ConsumerSettings, Handler, StopFlag, call_hook, run_consumers
from ._sync_io import Pool, log, where

__all__ = ["Client", "Handler", "StopFlag", "expired", "remaining", "stop_on_signals"]

T = TypeVar("T")

_BATCH: Final = 4096  # push_many writes at most this many pushes at once


def remaining(delivery: Delivery) -> float:
    """Seconds left before `delivery`'s claim expires (negative once it has; ``inf`` for
    at-most-once deliveries).

    okq-go cancels a handler's context at that moment; a sync handler cannot be interrupted,
    so check this between steps of long work and give up (return False) when it runs out:
    after expiry the server hands the event to another consumer.
    """
    return delivery.remaining(time.monotonic())


def expired(delivery: Delivery) -> bool:
    """True once `delivery`'s claim has expired (see `remaining`)."""
    return delivery.remaining(time.monotonic()) <= 0


def stop_on_signals(
    stop: StopFlag | None = None,
    signals: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
) -> StopFlag:
    """Make SIGINT and SIGTERM stop consumers gracefully; returns the flag to pass as ``stop``.

    The first signal sets the flag (in-flight handlers finish, their acks are sent) and puts
    the previous handlers back, so a second Ctrl-C interrupts at once.  Call it from the main
    thread (Python only installs signal handlers there)::

        client.consume(handler, ["jobs"], stop=stop_on_signals())

    Args:
        stop: the flag to set (a new `threading.Event` by default).
        signals: which signals to catch.
    """
    flag: StopFlag = stop if stop is not None else threading.Event()
    previous: dict[signal.Signals, object] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("okq: signal %s, stopping consumers", signum, extra={"okq_signal": signum})
        flag.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]  # what signal.signal returned

    for sig in signals:
        previous[sig] = signal.signal(sig, on_signal)
    return flag


class Client:
    """A synchronous okq client over a bounded, thread-safe connection pool.

    Args:
        address: ``"host:port"``, a comma-separated list of them, or a list of addresses
            (``"host:port"`` or ``(host, port)``).  okq servers sharing one Redis are
            interchangeable: connections fail over along the list.
        pool_size: most connections open at once for requests (consumers have their own).
        connect_timeout_s: how long connecting may take.
        read_timeout_s: how long a reply may take (None: forever).
        notify_timeout_s: the ``QNOTIFY`` wait of consumers, in whole seconds.  Their read
            deadline is always this plus `read_timeout_s`, so a wait never times out a read.
        pool_timeout_s: how long a request waits for a free pooled connection.
        retries: how many times a retry-safe request (push with the same id, peeks, status,
            info, flush, ping) is sent again on a new connection after a transport failure.
        id_factory: makes event ids for `push` (UUID4 text by default).
        hooks: metrics callbacks (`okq_proto.Hooks`).

    Raises:
        LocalProtocolError: for a bad address or argument.
    """

    def __init__(
        self,
        address: str | tuple[str, int] | Sequence[str | tuple[str, int]] = "127.0.0.1:4777",
        *,
        pool_size: int = 10,
        connect_timeout_s: float | None = 5.0,
        read_timeout_s: float | None = 10.0,
        notify_timeout_s: int = DEFAULT_NOTIFY_TIMEOUT_S,
        pool_timeout_s: float | None = 30.0,
        retries: int = 1,
        id_factory: IdFactory = new_event_id,
        hooks: Hooks | None = None,
    ) -> None:
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise LocalProtocolError(f"pool_size must be an int >= 1, not {pool_size!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise LocalProtocolError(f"retries must be an int >= 0, not {retries!r}")
        for name, value in (
            ("connect_timeout_s", connect_timeout_s),
            ("read_timeout_s", read_timeout_s),
            ("pool_timeout_s", pool_timeout_s),
        ):
            if value is not None and not value > 0:
                raise LocalProtocolError(f"{name} must be > 0 or None, not {value!r}")
        if isinstance(notify_timeout_s, bool) or not isinstance(notify_timeout_s, int):
            raise LocalProtocolError(f"notify_timeout_s must be an int, not {notify_timeout_s!r}")
        if notify_timeout_s < 0:
            raise LocalProtocolError(f"notify_timeout_s must be >= 0, not {notify_timeout_s}")
        self.addresses: list[tuple[str, int]] = parse_addresses(address)
        """The server addresses, in failover order."""
        self.read_timeout_s = read_timeout_s
        self.notify_timeout_s = notify_timeout_s
        self.retries = retries
        self.id_factory = id_factory
        self.hooks = hooks if hooks is not None else Hooks()
        self._hooked = type(self.hooks) is not Hooks
        self._pool = Pool(
            self.addresses, pool_size, connect_timeout_s, read_timeout_s, pool_timeout_s
        )

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the pooled connections; connections in use are closed when released.
        Running consumers are not affected (stop them with their ``stop`` flag).  Idempotent.
        """
        self._pool.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def open_connections(self) -> int:
        """Pooled connections open now (idle or in use)."""
        return self._pool.open_count

    @property
    def idle_connections(self) -> int:
        """Pooled connections open and idle now."""
        return self._pool.idle_count

    # -- requests --------------------------------------------------------------------------

    def _request(self, command: Command[T]) -> tuple[CommandReplied, bool]:
        """Send one command on a pooled connection; retry it on a new one if it is safe.

        Returns the reply and whether it answers a retry."""
        pool = self._pool
        attempt = 0
        while True:
            connection = pool.acquire()
            try:
                replied = connection.request(command)
            except (TransportError, RemoteProtocolError) as exc:
                pool.discard(connection)
                if attempt >= self.retries or not retry_safe(command):
                    raise
                attempt += 1
                log.warning(
                    "okq: %r failed on %s:%s (%s); retrying on a new connection",
                    command,
                    *connection.address,
                    exc,
                    extra={"okq_address": where(connection.address), "okq_retry": attempt},
                )
                if self._hooked:
                    call_hook(self.hooks.error, exc)
                continue
            except BaseException:
                pool.discard(connection)
                raise
            pool.release(connection)
            return replied, attempt > 0

    def push(self, queue: str, contents: bytes | str, flags: PushFlag = PushFlag.NORMAL) -> str:
        """Push a new event with a fresh id (okq-go's ``Push``).

        Args:
            queue: the queue's name.
            contents: the payload; `str` is sent as UTF-8.
            flags: `PushFlag.HIGH_PRIORITY` (``QRPUSH``: consumed next) and/or
                `PushFlag.NO_BLOCK` (the server replies before storing; duplicates are not
                reported).

        Returns:
            The new event's id (from `id_factory`).

        Raises:
            LocalProtocolError: bad arguments (nothing was sent).
            DuplicateEventError: the id is already in the queue (only with a custom
                `id_factory`).
            TooBusyError: ``NO_BLOCK`` and the server's workers are all busy.
            TransportError: the server could not be reached, even after a retry.
        """
        event_id = self.id_factory()
        self._push(to_wire(queue), event_id, contents_bytes(contents), flags, queue)
        return event_id

    def push_event(self, event: Event, flags: PushFlag = PushFlag.NORMAL) -> None:
        """Push `event` with its own id (okq-go's ``PushEvent``).

        Raises:
            DuplicateEventError: the queue already holds an event with this id (`is_dup`).
            LocalProtocolError, TooBusyError, TransportError: as for `push`.
        """
        if not isinstance(event, Event):
            raise LocalProtocolError(f"push_event needs an okq Event, not {type(event)!r}")
        self._push(to_wire(event.queue), event.id, event.contents, flags, event.queue)

    def _push(
        self, queue: bytes, event_id: str, contents: bytes, flags: PushFlag, name: str
    ) -> None:
        replied, retried = self._request(push_command(queue, to_wire(event_id), contents, flags))
        if replied.error is None and not retried:  # the common case, without an outcome object
            if self._hooked:
                call_hook(self.hooks.pushed, name, event_id, retried=False)
            return
        outcome = settle_retried_push(event_id, replied.error, retried)
        if outcome.error is not None:
            raise outcome.error
        if retried:
            log.info(
                "okq: push of %s to %s retried; it landed",
                event_id,
                name,
                extra={"okq_queue": name, "okq_event_id": event_id, "okq_retried": True},
            )
        if self._hooked:
            call_hook(self.hooks.pushed, name, event_id, retried=retried)

    def push_many(
        self,
        queue: str,
        contents: Iterable[bytes | str],
        flags: PushFlag = PushFlag.NORMAL,
    ) -> list[PushOutcome]:
        """Push one new event per item, pipelined: a batch leaves in one write.

        Never raises for one item: each `PushOutcome` says whether its event is stored
        (``ok``), carries the error otherwise (`is_dup`, `TooBusyError`...), and says whether
        it was sent again after a connection failure (``retried``; a duplicate reply to our
        own retry means the first attempt landed and counts as success).

        Raises:
            LocalProtocolError: a bad argument (nothing was sent).
            TransportError: the server could not be reached even after `retries`.
        """
        wire_queue = to_wire(queue)
        factory = self.id_factory
        items = [(factory(), contents_bytes(item)) for item in contents]
        commands = [push_command(wire_queue, to_wire(i), c, flags) for i, c in items]
        outcomes: list[PushOutcome] = []
        for start in range(0, len(commands), _BATCH):
            outcomes += self._push_batch(queue, items, commands, start, start + _BATCH)
        return outcomes

    def _push_batch(
        self,
        name: str,
        items: list[tuple[str, bytes]],
        commands: Sequence[Command[None]],
        start: int,
        stop: int,
    ) -> list[PushOutcome]:
        pending = list(commands[start:stop])
        ids = [event_id for event_id, _ in items[start:stop]]
        outcomes: list[PushOutcome] = []
        attempt = 0
        pool = self._pool
        while pending:
            connection = pool.acquire()
            replies: list[CommandReplied] = []
            try:
                connection.conn.send_many(pending)
                connection.flush(connection.conn.data_to_send())
                connection.read_replies(len(pending), replies)
            except (TransportError, RemoteProtocolError) as exc:
                pool.discard(connection)
                self._settle(name, ids, replies, outcomes, attempt > 0)
                del pending[: len(replies)]
                del ids[: len(replies)]
                if attempt >= self.retries:
                    raise
                attempt += 1
                log.warning(
                    "okq: push_many lost its connection to %s:%s (%s); resending %d pushes",
                    *connection.address,
                    exc,
                    len(pending),
                    extra={"okq_queue": name, "okq_retry": attempt},
                )
                continue
            except BaseException:
                pool.discard(connection)
                raise
            pool.release(connection)
            self._settle(name, ids, replies, outcomes, attempt > 0)
            break
        return outcomes

    def _settle(
        self,
        name: str,
        ids: list[str],
        replies: list[CommandReplied],
        outcomes: list[PushOutcome],
        retried: bool,
    ) -> None:
        hooked = self._hooked
        for event_id, replied in zip(ids, replies, strict=False):
            outcome = settle_retried_push(event_id, replied.error, retried)
            outcomes.append(outcome)
            if hooked and outcome.error is None:
                call_hook(self.hooks.pushed, name, event_id, retried=retried)

    def _call(self, command: Command[T]) -> T:
        replied, _ = self._request(command)
        if replied.error is not None:
            raise replied.error
        return replied.result  # type: ignore[return-value]  # the command's own result type

    def execute(self, command: Command[T]) -> T:
        """Send any okq command from `okq_proto` on a pooled connection; return its result.

        The escape hatch for what the named methods do not cover, e.g. a one-off claim and
        acknowledgement::

            event = client.execute(QRPop(to_wire("jobs"), 60))
            ...
            client.execute(QAck(to_wire("jobs"), to_wire(event.id)))

        Retry-safe commands are retried like the named methods; ``QRPOP`` and ``QACK`` never.

        Raises:
            LocalProtocolError: for ``QREGISTER`` / ``QNOTIFY``, which change or need a
                connection's consumer state: use `consume` for those.
            ReplyError: the server replied with an error.
            TransportError: the connection failed.
        """
        refuse_connection_state(command)
        return self._call(command)

    def peek_next(self, queue: str) -> Event | None:
        """The event a consumer would get next (``QRPEEK``), or None (okq-go's ``PeekNext``)."""
        return self._call(QRPeek(to_wire(queue)))

    def peek_last(self, queue: str) -> Event | None:
        """The event consumed last (``QLPEEK``), or None (okq-go's ``PeekLast``)."""
        return self._call(QLPeek(to_wire(queue)))

    def status(self, *queues: str) -> list[QueueStatus]:
        """Counters of these queues (unknown ones report zeros), or of every known queue when
        none is named (``QSTATUS``)."""
        return self._call(QStatus(tuple(to_wire(q) for q in queues)))

    def info(self, *queues: str) -> list[str]:
        """One human-readable line per queue (``QINFO``), selected like `status`."""
        return self._call(QInfo(tuple(to_wire(q) for q in queues)))

    def flush(self, queue: str) -> None:
        """Delete every event of `queue`, claimed ones included (``QFLUSH``)."""
        self._call(QFlush(to_wire(queue)))

    def ping(self) -> None:
        """Check the server answers (``PING``)."""
        self._call(Ping())

    # -- consumers -------------------------------------------------------------------------

    def consume(
        self,
        handler: Handler,
        queues: Sequence[str],
        *,
        expire_seconds: int = 30,
        concurrency: int = 1,
        stop: StopFlag | None = None,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        """Consume events until `stop` is set (or an unrecoverable error).

        Each consumer is its own connection: it registers for `queues`, waits with ``QNOTIFY``,
        claims events with ``QRPOP q EX expire_seconds`` and calls ``handler(event)`` with a
        `Delivery` (an `Event` plus its claim ``deadline`` in `time.monotonic` seconds; see
        `remaining`).  True acks the event; false, or an exception, leaves it claimed, and the
        server hands it out again once the claim expires.  Exceptions are logged (logger
        ``"okq"``) and reported to ``hooks.handler_failed``; they do not stop the consumer.

        A consumer that loses its connection (server restart, network) reconnects with
        capped exponential backoff and full jitter, failing over along the addresses, and
        re-registers.  What it had claimed and not acked is logged; the server redelivers it.

        Stopping is graceful: a consumer waiting for work stops at once; a handler that is
        running finishes, and its ack is sent before `consume` returns.

        Args:
            handler: called with each `Delivery`, from the consumer's thread.
            queues: the queues to consume from.
            expire_seconds: the claim length; -1 for at-most-once delivery (popped with
                ``EX 0``, never acked, a failed handler loses the event).
            concurrency: consumer connections, each in its own thread (the calling thread
                waits for all of them).
            stop: set it to stop (`threading.Event`, or `stop_on_signals`).  None: run until
                an unrecoverable error.
            backoff: makes the reconnect `Backoff` of each consumer.

        Raises:
            LocalProtocolError: bad arguments (before anything is sent).
            ReplyError: the server refused the consumer's commands (other than with its
                transient ``unexpected server-side error``).
        """
        queue_list = [queues] if isinstance(queues, str) else list(queues)
        # Validates queues and expire_seconds before anything is sent (the machine is pure).
        Consumer(queue_list, expire_s=expire_seconds, notify_timeout_s=self.notify_timeout_s)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise LocalProtocolError(f"concurrency must be an int >= 1, not {concurrency!r}")
        if not callable(handler):
            raise LocalProtocolError(f"handler must be callable, not {handler!r}")
        flag: StopFlag = stop if stop is not None else threading.Event()
        settings = ConsumerSettings(
            self._pool,
            handler,
            queue_list,
            expire_seconds,
            self.notify_timeout_s,
            self.read_timeout_s,
            self.hooks,
            self._hooked,
        )
        run_consumers(settings, flag, backoff, concurrency)
