"""What each client method sends and how it reads the answers, for sync and async alike.

Owns: the body of every request method (`push`, `push_event`, `push_many`, peeks, `status`,
`info`, `flush`, `ping`) as a `Plan`: the commands to pipeline, and a function that turns
their replies (and whether they were retried) into the method's result.  A client only runs
the commands and calls ``finish`` (``okq_transports._async.client``, and its generated
blocking twin).
Must not know: I/O, pools, event loops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from okq_proto import (
    Command,
    CommandReplied,
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
    contents_bytes,
    push_command,
    to_wire,
)
from okq_proto.policy import refuse_connection_state, settle_retried_push

from ._observe import call_hook, log

__all__ = [
    "BATCH",
    "Contents",
    "Plan",
    "flush",
    "info",
    "peek_last",
    "peek_next",
    "ping",
    "push",
    "push_event",
    "push_many",
    "settle_push",
    "status",
]

T = TypeVar("T")

#: How `to_wire` encodes a str (UTF-8, surrogateescape), for the hot path of `push`.
_WIRE: Final = ("utf-8", "surrogateescape")

#: push_many sends at most this many pushes in one write (a longer batch takes several).
BATCH: Final = 4096


#: What a push accepts as contents (`str` is sent as UTF-8).
Contents = bytes | bytearray | memoryview | str


@dataclass(frozen=True, slots=True)
class Plan(Generic[T]):
    """Commands to send in one write, and how to turn their replies into the result.

    Attributes:
        commands: sent pipelined, on one connection.
        finish: ``finish(replies, retried) -> result``; raises the method's errors.
    """

    commands: tuple[Command[Any], ...]
    finish: Callable[[list[CommandReplied], bool], T]


def _unwrap(replies: list[CommandReplied], retried: bool) -> Any:
    return replies[0].unwrap()


def _one(command: Command[Any]) -> Plan[Any]:
    return Plan((command,), _unwrap)


def settle_push(
    queue: str, event_id: str, replied: CommandReplied, retried: bool, hooks: Hooks | None
) -> None:
    """Judge a push reply (a duplicate after our own retry means it landed), log a retry,
    call ``hooks.pushed``; raise the push's error if it failed."""
    error = replied.error
    if error is None and not retried:  # the hot path
        if hooks is not None:
            call_hook(hooks, "pushed", queue, event_id, retried=False)
        return
    outcome = settle_retried_push(event_id, error, retried)
    if outcome.error is not None:
        raise outcome.error
    log.info(
        "okq: push of %s to %s retried; it landed",
        event_id,
        queue,
        extra={"okq_queue": queue, "okq_event_id": event_id, "okq_retried": True},
    )
    call_hook(hooks, "pushed", queue, event_id, retried=True)


def push(
    queue: str, contents: Contents, flags: PushFlag, id_factory: IdFactory
) -> tuple[str, Command[None]]:
    """`push`: a fresh id from `id_factory` and its ``QLPUSH``/``QRPUSH``.  The hot path, so
    no `Plan`: send the command, then `settle_push` its reply."""
    event_id = id_factory()
    # str names and ids are the common case: encoded here, without to_wire's type checks
    wire_queue = queue.encode("utf-8", "surrogateescape") if type(queue) is str else to_wire(queue)
    wire_id = (
        event_id.encode("utf-8", "surrogateescape") if type(event_id) is str else to_wire(event_id)
    )
    data = contents if type(contents) is bytes else contents_bytes(contents)
    return event_id, push_command(wire_queue, wire_id, data, flags)


def push_event(event: Event, flags: PushFlag, hooks: Hooks | None) -> Plan[None]:
    """`push_event`: ``QLPUSH``/``QRPUSH``; a duplicate after our own retry is success."""
    if not isinstance(event, Event):
        raise LocalProtocolError(f"push_event needs an okq Event, not {type(event)!r}")

    def finish(replies: list[CommandReplied], retried: bool) -> None:
        settle_push(event.queue, event.id, replies[0], retried, hooks)

    command = push_command(to_wire(event.queue), to_wire(event.id), event.contents, flags)
    return Plan((command,), finish)


def push_many(
    queue: str,
    contents: Iterable[Contents],
    flags: PushFlag,
    id_factory: IdFactory,
    hooks: Hooks | None,
) -> list[Plan[list[PushOutcome]]]:
    """`push_many`: one push per item, pipelined, `BATCH` pushes per write; one `PushOutcome`
    per item, in order (concatenate the plans' results).  A bad item raises here, before
    anything is sent.
    """
    wire_queue = to_wire(queue)
    items = [contents_bytes(item) for item in contents]
    return [
        _push_batch(queue, wire_queue, items[start : start + BATCH], flags, id_factory, hooks)
        for start in range(0, len(items), BATCH)
    ]


def _push_batch(
    queue: str,
    wire_queue: bytes,
    contents: list[bytes],
    flags: PushFlag,
    id_factory: IdFactory,
    hooks: Hooks | None,
) -> Plan[list[PushOutcome]]:
    ids: list[str] = []
    commands: list[Command[Any]] = []
    for item in contents:
        event_id = id_factory()
        ids.append(event_id)
        commands.append(push_command(wire_queue, to_wire(event_id), item, flags))

    def finish(replies: list[CommandReplied], retried: bool) -> list[PushOutcome]:
        outcomes = [
            settle_retried_push(event_id, reply.error, retried)
            for event_id, reply in zip(ids, replies, strict=True)
        ]
        if hooks is not None:
            for outcome in outcomes:
                if outcome.ok:
                    call_hook(hooks, "pushed", queue, outcome.id, retried=outcome.retried)
        return outcomes

    return Plan(tuple(commands), finish)


def execute(command: Command[T]) -> Plan[T]:
    """`execute`: any okq command but ``QREGISTER`` / ``QNOTIFY`` (consumer state)."""
    refuse_connection_state(command)
    return _one(command)


def peek_next(queue: str) -> Plan[Event | None]:
    """`peek_next`: ``QRPEEK``."""
    return _one(QRPeek(to_wire(queue)))


def peek_last(queue: str) -> Plan[Event | None]:
    """`peek_last`: ``QLPEEK``."""
    return _one(QLPeek(to_wire(queue)))


def status(queues: Iterable[str]) -> Plan[list[QueueStatus]]:
    """`status`: ``QSTATUS``."""
    return _one(QStatus(tuple(to_wire(q) for q in queues)))


def info(queues: Iterable[str]) -> Plan[list[str]]:
    """`info`: ``QINFO``."""
    return _one(QInfo(tuple(to_wire(q) for q in queues)))


def flush(queue: str) -> Plan[None]:
    """`flush`: ``QFLUSH``."""
    return _one(QFlush(to_wire(queue)))


def ping() -> Plan[None]:
    """`ping`: ``PING``."""
    return _one(Ping())
