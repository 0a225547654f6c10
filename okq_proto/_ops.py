"""What every okq client front door shares, written once: no I/O, no clock.

Owns: the `Delivery` record handed to consumer handlers, per-item push outcomes, which
commands may be retried after a connection failure, capped exponential backoff with full
jitter, server address parsing, event id generation and the metrics `Hooks` interface.
Must not know: sockets, event loops, threads, pools.  Transports (sync, asyncio, trio,
redis-py) import these so that none of them re-implements a policy.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ._commands import (
    Command,
    Ping,
    QFlush,
    QInfo,
    QLPeek,
    QLPush,
    QNotify,
    QRegister,
    QRPeek,
    QRPush,
    QStatus,
)
from ._errors import DuplicateEventError, LocalProtocolError, OkqError
from ._types import Event

__all__ = [
    "DEFAULT_PORT",
    "Backoff",
    "Delivery",
    "Hooks",
    "IdFactory",
    "PushOutcome",
    "new_event_id",
    "parse_address",
    "parse_addresses",
    "refuse_connection_state",
    "retry_safe",
    "settle_retried_push",
]

#: okq's default TCP port.
DEFAULT_PORT: Final = 4777


def new_event_id() -> str:
    """A fresh event id: UUID4 text, 36 characters, as okq-go's ``Push`` generates."""
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Delivery(Event):
    """An event handed to a consumer, with its claim's deadline.

    A `Delivery` is an `Event`, so ``handler(event) -> bool`` reads naturally; the extra fields
    are there when needed.

    Attributes:
        deadline: when the claim expires, in the transport's monotonic clock (``time.monotonic``
            for sync, the loop's clock for asyncio/trio); ``math.inf`` when the event was
            popped at-most-once (nothing to ack, no deadline).
        expire_s: the claim length that was asked for (-1 for at-most-once).
    """

    deadline: float = float("inf")
    expire_s: int = 30

    @property
    def needs_ack(self) -> bool:
        """False for at-most-once deliveries (``expire_s`` -1 or 0): the server acked on pop."""
        return self.expire_s > 0

    def remaining(self, now: float) -> float:
        """Seconds left before the claim expires (may be negative)."""
        return self.deadline - now


@dataclass(frozen=True, slots=True)
class PushOutcome:
    """The result of one item of a batch push.

    Attributes:
        id: the event id that was pushed (or refused).
        error: None on success; else the typed error (`DuplicateEventError`, `TooBusyError`,
            a transport error...).
        retried: True when the push was sent again after a connection failure.  A duplicate
            reply to our own retry means the first attempt landed: it counts as success, and
            this flag says so.
    """

    id: str
    error: OkqError | None = None
    retried: bool = False

    @property
    def ok(self) -> bool:
        """True when the event is stored (or, for NOBLOCK, accepted)."""
        return self.error is None

    def unwrap(self) -> str:
        """The id, or raise the error."""
        if self.error is not None:
            raise self.error
        return self.id


def settle_retried_push(event_id: str, error: OkqError | None, retried: bool) -> PushOutcome:
    """Judge a push reply: after our own retry, a duplicate means the first attempt landed."""
    if retried and isinstance(error, DuplicateEventError):
        return PushOutcome(event_id, None, True)
    return PushOutcome(event_id, error, retried)


_RETRY_SAFE: Final = (QLPush, QRPush, QLPeek, QRPeek, QStatus, QInfo, QFlush, Ping)


def retry_safe(command: Command[Any]) -> bool:
    """May `command` be sent again on a new connection after the old one failed mid-request?

    Pushes (same id: a second copy is refused as a duplicate), peeks, status, info, flush and
    ping are safe.  QRPOP never is (a blind retry could claim a second event and strand the
    first), nor QNOTIFY/QREGISTER (connection state) nor QACK (its 0/1 answer would lie).
    """
    return isinstance(command, _RETRY_SAFE)


def refuse_connection_state(command: Command[Any]) -> None:
    """Refuse commands that must not run on a shared, pooled connection.

    ``QREGISTER`` would leave the pooled connection registered as a consumer (counted by
    ``QSTATUS`` and woken by pushes); ``QNOTIFY`` only makes sense after it.  Consumers own
    their connection instead (``consume``).

    Raises:
        LocalProtocolError: for `QRegister` and `QNotify`; also for non-commands.
    """
    if not isinstance(command, Command):
        raise LocalProtocolError(f"not an okq command: {command!r}")
    if isinstance(command, (QRegister, QNotify)):
        raise LocalProtocolError(
            f"{command.name.decode()} changes a connection's consumer state and cannot run on "
            "a pooled connection: use consume() for consumers"
        )


class Backoff:
    """Capped exponential backoff with full jitter (delay = uniform(0, min(cap, base * 2**n))).

    Args:
        base_s: the first ceiling.
        cap_s: the largest ceiling.
        rng: a `random.Random` (inject a seeded one for deterministic tests).
    """

    __slots__ = ("_attempt", "_rng", "base_s", "cap_s")

    def __init__(
        self, base_s: float = 0.05, cap_s: float = 5.0, rng: random.Random | None = None
    ) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise LocalProtocolError("Backoff needs 0 < base_s <= cap_s")
        self.base_s = base_s
        self.cap_s = cap_s
        self._rng = rng if rng is not None else random.Random()
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """Failures since the last `reset`."""
        return self._attempt

    def ceiling(self) -> float:
        """The ceiling of the next delay."""
        return min(self.cap_s, self.base_s * 2.0 ** min(self._attempt, 62))

    def next_delay(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        delay = self._rng.uniform(0.0, self.ceiling())
        self._attempt += 1
        return delay

    def reset(self) -> None:
        """Forget the failures (call after a success)."""
        self._attempt = 0


def parse_address(address: str | tuple[str, int]) -> tuple[str, int]:
    """``"host:port"``, ``"[v6]:port"``, ``"host"`` (port 4777) or ``(host, port)`` ->
    ``(host, port)``.

    Raises:
        LocalProtocolError: for an empty host or a port that is not 1-65535.
    """
    if isinstance(address, tuple):
        host, port = address
    elif isinstance(address, str):
        text = address.strip()
        if text.startswith("["):
            close = text.find("]")
            if close < 0:
                raise LocalProtocolError(f"bad server address {address!r}: missing ']'")
            host, rest = text[1:close], text[close + 1 :]
            port_text = rest[1:] if rest.startswith(":") else (rest or None)
            if rest and not rest.startswith(":"):
                raise LocalProtocolError(f"bad server address {address!r}")
        elif text.count(":") == 1:
            host, port_text = text.split(":")
        else:
            host, port_text = text, None
        if port_text is None or port_text == "":
            port = DEFAULT_PORT
        else:
            if not port_text.isdigit():
                raise LocalProtocolError(f"bad port in server address {address!r}")
            port = int(port_text)
    else:
        raise LocalProtocolError(f"a server address must be 'host:port', not {address!r}")
    if not host or not isinstance(port, int) or not 0 < port < 65536:
        raise LocalProtocolError(f"bad server address {address!r}")
    return host, port


def parse_addresses(
    address: str | tuple[str, int] | Sequence[str | tuple[str, int]],
) -> list[tuple[str, int]]:
    """One address, a comma-separated string of them, or a list -> ``[(host, port), ...]``.

    okq servers sharing one Redis are interchangeable, so clients fail over along this list.
    """
    if isinstance(address, tuple):
        return [parse_address(address)]
    if isinstance(address, str):
        items: Sequence[str | tuple[str, int]] = [a for a in address.split(",") if a.strip()]
    elif isinstance(address, (list, tuple)):
        items = list(address)
    else:
        raise LocalProtocolError(f"server addresses must be a string or a list, not {address!r}")
    if not items:
        raise LocalProtocolError("at least one server address is needed")
    return [parse_address(item) for item in items]


class Hooks:
    """Metrics hooks: subclass and override what you need; every method is a no-op here.

    Hooks are called by the transports, on the calling thread/task, and must not block.
    Exceptions raised by a hook are logged and ignored.
    """

    def pushed(self, queue: str, event_id: str, *, retried: bool = False) -> None:
        """An event was stored (or accepted, with NOBLOCK)."""

    def delivered(self, delivery: Delivery) -> None:
        """An event was popped and is about to be handed to the handler."""

    def acked(self, delivery: Delivery) -> None:
        """A handled event was acknowledged (QACK replied 1)."""

    def late_ack(self, delivery: Delivery) -> None:
        """QACK replied 0: the claim had expired and the event was already taken or gone."""

    def handler_failed(self, delivery: Delivery, error: BaseException | None) -> None:
        """The handler returned false or raised (`error`); the event will be redelivered."""

    def reconnect(self, address: tuple[str, int], attempt: int, delay_s: float) -> None:
        """A connection failed; the next attempt goes to `address` after `delay_s`."""

    def error(self, error: BaseException) -> None:
        """An error a consumer survived (it logs it and carries on)."""


#: The type of an event id factory (``Client(id_factory=...)``).
IdFactory = Callable[[], str]
