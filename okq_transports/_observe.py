"""What every front door logs and reports to hooks, written once: same messages, levels and
``extra`` field names over sync, asyncio, trio and redis-py.

Owns: the ``"okq"`` logger, calling `Hooks` methods (a hook that raises is logged and
ignored), and one function per thing worth telling: a request retried, a handler that
failed or overran its claim, a late ack, a consumer reconnecting, claims left behind by a
lost connection.  Log records carry these ``extra`` fields:

- ``okq_address``: ``"host:port"`` (a string everywhere);
- ``okq_queue`` and ``okq_event_id``: the event's queue and id;
- ``okq_retry``: the attempt number of a retried request; ``okq_attempt``: of a reconnect.

Must not know: sockets, event loops, pools.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

from okq_proto import Command, Delivery, Hooks

__all__ = [
    "active_hooks",
    "call_hook",
    "handler_failed",
    "late_ack",
    "log",
    "lost",
    "reconnecting",
    "retrying",
    "where",
]

log: Final = logging.getLogger("okq")


def where(address: tuple[str, int] | None) -> str:
    """``"host:port"`` for messages and the ``okq_address`` field (``"?"`` when unknown)."""
    if address is None:
        return "?"
    return f"{address[0]}:{address[1]}"


def active_hooks(hooks: Hooks | None) -> Hooks | None:
    """`hooks` when some method is overridden, else None: hot paths then skip no-op calls."""
    return hooks if hooks is not None and type(hooks) is not Hooks else None


def call_hook(hooks: Hooks | None, name: str, *args: object, **kwargs: object) -> None:
    """Call ``hooks.<name>(...)`` (nothing when `hooks` is None); a hook that raises is
    logged and ignored (see `Hooks`)."""
    if hooks is None:
        return
    try:
        getattr(hooks, name)(*args, **kwargs)
    except Exception:
        log.exception("okq: hook %s raised", name, extra={"okq_hook": name})


def retrying(
    hooks: Hooks | None,
    commands: Sequence[Command[Any]],
    address: tuple[str, int] | None,
    error: BaseException,
    attempt: int,
) -> None:
    """Retry-safe `commands` failed on their connection and are sent again on a new one."""
    first = commands[0].name.decode()
    what = first if len(commands) == 1 else f"{len(commands)} pipelined commands ({first}...)"
    log.warning(
        "okq: %s failed on %s (%s); retrying on a new connection",
        what,
        where(address),
        error,
        extra={"okq_address": where(address), "okq_retry": attempt},
    )
    call_hook(hooks, "error", error)


def handler_failed(
    hooks: Hooks | None, delivery: Delivery, error: BaseException | None, *, expired: bool = False
) -> None:
    """The handler returned false, raised `error`, or was cancelled at its claim's expiry
    (`expired`): no ack, the server hands the event out again."""
    fields = {"okq_queue": delivery.queue, "okq_event_id": delivery.id}
    if expired:
        log.warning(
            "okq: handler of %s in %s cancelled: its claim expired; not acked",
            delivery.id,
            delivery.queue,
            extra=fields,
        )
    elif isinstance(error, Exception):
        log.error(
            "okq: handler failed on %s of %s; not acked",
            delivery.id,
            delivery.queue,
            exc_info=error,
            extra=fields,
        )
    call_hook(hooks, "handler_failed", delivery, error)


def late_ack(hooks: Hooks | None, delivery: Delivery, *, removed: bool = False) -> None:
    """A late ack (`okq_proto.LateAck`): the handler finished after the claim's deadline, or
    ``QACK`` replied 0.  The event may have been delivered again; `removed`: the ``QACK``
    still removed it (after a redelivery, possibly the copy another consumer holds)."""
    log.warning(
        "okq: late ack of %s in %s: its claim had expired or it was gone; the event may have "
        "been delivered again (%s)",
        delivery.id,
        delivery.queue,
        "the ack removed it" if removed else "the ack found nothing",
        extra={"okq_queue": delivery.queue, "okq_event_id": delivery.id},
    )
    call_hook(hooks, "late_ack", delivery)


def reconnecting(
    hooks: Hooks | None,
    address: tuple[str, int] | None,
    error: BaseException,
    attempt: int,
    delay_s: float,
) -> None:
    """A consumer's connection failed (or could not be made); it tries again after
    `delay_s`."""
    log.warning(
        "okq: consumer connection to %s failed (%s); reconnecting in %.2f s",
        where(address),
        error,
        delay_s,
        extra={"okq_address": where(address), "okq_attempt": attempt},
    )
    call_hook(hooks, "error", error)
    if address is not None:
        call_hook(hooks, "reconnect", address, attempt, delay_s)


def lost(
    unacked: tuple[Delivery, ...],
    pop_in_flight: str | None,
    address: tuple[str, int] | None,
    error: BaseException,
) -> None:
    """A consumer lost its connection: log what it had claimed and not acked (the server
    redelivers it once its claim expires) and a pop that was in flight."""
    for delivery in unacked:
        log.warning(
            "okq: event %s of %s claimed and not acked when the connection failed; the server "
            "hands it out again after its claim expires",
            delivery.id,
            delivery.queue,
            extra={
                "okq_queue": delivery.queue,
                "okq_event_id": delivery.id,
                "okq_address": where(address),
            },
        )
    if pop_in_flight is not None:
        log.info(
            "okq: a pop of %s was in flight when the connection failed (%s)",
            pop_in_flight,
            error,
            extra={"okq_queue": pop_in_flight, "okq_address": where(address)},
        )
