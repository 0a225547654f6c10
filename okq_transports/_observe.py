"""What every front door logs and reports to hooks, written once: same messages, levels and
``extra`` field names over sync, asyncio, trio and redis-py.

Owns: the ``"okq"`` logger, calling `Hooks` methods (a hook that raises is logged and
ignored), and one function per thing worth telling: a request retried, a handler that
failed or overran its claim, a late ack, a consumer reconnecting and recovering, claims
left behind by a lost connection.  An error is raised or logged, never both: what reaches
the caller as an exception is not logged at WARNING or above (a failed retry is, at DEBUG);
what is swallowed (a retry that worked, a consumer's reconnects, a handler's failure, a
hook that raised) is logged.  Log records carry these ``extra`` fields:

- ``okq_address``: ``"host:port"`` (a string everywhere);
- ``okq_queue`` and ``okq_event_id``: the event's queue and id;
- ``okq_retry``: the attempt number of a retried request; ``okq_attempt``: of a reconnect;
- ``okq_failures`` and ``okq_failing_s``: a consumer's failed attempts so far and how long
  they have been failing (seconds).

Must not know: sockets, event loops, pools.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

from okq_proto import Command, CommandReplied, Delivery, Hooks

__all__ = [
    "active_hooks",
    "call_hook",
    "commands_done",
    "handler_failed",
    "handler_started",
    "late_ack",
    "log",
    "lost",
    "reconnecting",
    "recovered",
    "retried",
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


def commands_done(
    hooks: Hooks,
    commands: Sequence[Command[Any]],
    replies: Sequence[CommandReplied] | None,
    duration_s: float,
    failure: BaseException | None,
) -> None:
    """Report each of a pipelined batch to ``hooks.command``: its error reply, or the
    transport `failure` that ended the batch (then `replies` is None)."""
    for number, command in enumerate(commands):
        error = failure if replies is None else replies[number].error
        call_hook(hooks, "command", command, duration_s, error)


def handler_started(hooks: Hooks, delivery: Delivery) -> object:
    """``hooks.handler_started`` (None when it raised: logged, as any hook)."""
    try:
        return hooks.handler_started(delivery)
    except Exception:
        log.exception(
            "okq: hook %s raised", "handler_started", extra={"okq_hook": "handler_started"}
        )
        return None


def retrying(
    hooks: Hooks | None,
    commands: Sequence[Command[Any]],
    address: tuple[str, int] | None,
    error: BaseException,
    attempt: int,
) -> None:
    """Retry-safe `commands` failed on their connection and are sent again on a new one.

    Logged at DEBUG only: if the retry fails too, its error is raised to the caller (and not
    logged); if it works, `retried` logs the failure it hid at WARNING."""
    log.debug(
        "okq: %s failed on %s (%s); retrying on a new connection",
        _what(commands),
        where(address),
        error,
        extra={"okq_address": where(address), "okq_retry": attempt},
    )
    call_hook(hooks, "error", error)


def retried(
    commands: Sequence[Command[Any]],
    address: tuple[str, int] | None,
    error: BaseException,
    attempt: int,
) -> None:
    """`commands` failed with `error` on `address`, were sent again (`attempt`: the retry
    that worked) and got their replies: the caller never saw `error`, so it is logged."""
    log.warning(
        "okq: %s failed on %s (%s); retrying on a new connection worked",
        _what(commands),
        where(address),
        error,
        extra={"okq_address": where(address), "okq_retry": attempt},
    )


def _what(commands: Sequence[Command[Any]]) -> str:
    first = commands[0].name.decode()
    return first if len(commands) == 1 else f"{len(commands)} pipelined commands ({first}...)"


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
    *,
    failures: int = 1,
    failing_s: float = 0.0,
    report: bool = True,
) -> None:
    """A consumer's connection failed (or could not be made); it tries again after
    `delay_s`.  `failures`: its failed attempts in a row so far (this one included), over
    `failing_s`; `report`: log this one at WARNING (`okq_proto.policy.FailureLog` says
    which), else at DEBUG.  The hooks hear of every attempt."""
    level = logging.WARNING if report else logging.DEBUG
    if log.isEnabledFor(level):
        fields = {
            "okq_address": where(address),
            "okq_attempt": attempt,
            "okq_failures": failures,
            "okq_failing_s": failing_s,
        }
        if failures <= 1:
            log.log(
                level,
                "okq: consumer connection to %s failed (%s); reconnecting in %.2f s",
                where(address),
                error,
                delay_s,
                extra=fields,
            )
        else:
            log.log(
                level,
                "okq: consumer connection to %s still failing: %d attempts failed in %.1f s "
                "(last: %s); reconnecting in %.2f s",
                where(address),
                failures,
                failing_s,
                error,
                delay_s,
                extra=fields,
            )
    call_hook(hooks, "error", error)
    if address is not None:
        call_hook(hooks, "reconnect", address, attempt, delay_s)


def recovered(address: tuple[str, int] | None, failures: int, failing_s: float) -> None:
    """A consumer registered again after `failures` failed attempts over `failing_s`: the end
    of the outage its warnings told of, at the same level (WARNING)."""
    log.warning(
        "okq: consumer connection to %s recovered after %d failed attempt%s (%.1f s)",
        where(address),
        failures,
        "" if failures == 1 else "s",
        failing_s,
        extra={
            "okq_address": where(address),
            "okq_failures": failures,
            "okq_failing_s": failing_s,
        },
    )


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
