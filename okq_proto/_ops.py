"""What every okq client front door shares, written once: no I/O, no clock.

Owns: the `Delivery` record handed to consumer handlers, per-item push outcomes, which
commands may be retried after a connection failure, capped exponential backoff with full
jitter, server address parsing, event id generation and the metrics `Hooks` interface.
Must not know: sockets, event loops, threads, pools.  Transports (sync, asyncio, trio,
redis-py) import these so that none of them re-implements a policy.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from os import urandom
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
    expire_argument,
)
from ._errors import (
    DuplicateEventError,
    LocalProtocolError,
    OkqError,
    RemoteProtocolError,
    ReplyError,
    TimeoutError,
    TransportError,
)
from ._types import Event, to_wire

__all__ = [
    "CONNECTION_FAILURES",
    "DEFAULT_NOTIFY_TIMEOUT_S",
    "DEFAULT_PORT",
    "Backoff",
    "Delivery",
    "Hooks",
    "IdFactory",
    "PushOutcome",
    "check_client_options",
    "check_consume_options",
    "is_transient",
    "new_event_id",
    "parse_address",
    "parse_addresses",
    "read_time_left",
    "refuse_connection_state",
    "retry_safe",
    "settle_retried_push",
]

#: okq's default TCP port.
DEFAULT_PORT: Final = 4777
#: okq-go v2's default ``NotifyTimeout``, in seconds: every client's ``notify_timeout_s``.
DEFAULT_NOTIFY_TIMEOUT_S: Final = 30


#: The UUID variant nibble (RFC 4122: ``10xx``) for each random hex digit, uniformly.
_VARIANT: Final = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def new_event_id() -> str:
    """A fresh event id: UUID4 text, 36 characters, as okq-go's ``Push`` generates
    (122 random bits from `os.urandom`, the version and variant bits set; what
    ``str(uuid.uuid4())`` gives, at a third of its cost)."""
    h = urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


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


#: Failures after which a connection is discarded (never pooled again) and a `retry_safe`
#: request may be sent again on a new one: the link broke, or the peer broke RESP2/okq.
CONNECTION_FAILURES: Final = (TransportError, RemoteProtocolError)

#: okq's reply when its storage (Redis) failed.
_SERVER_SIDE_ERROR: Final = b"ERR unexpected server-side error"


def is_transient(error: BaseException) -> bool:
    """Is `error` worth reconnecting over, for a consumer?

    Connection failures are (`CONNECTION_FAILURES`), and so is okq's ``ERR unexpected
    server-side error`` reply (its storage failed; okq recovers).  Every other error reply
    means the server refuses the consumer's commands: giving up is the only answer.
    """
    if isinstance(error, ReplyError):
        return error.reply.message == _SERVER_SIDE_ERROR
    return isinstance(error, CONNECTION_FAILURES)


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


#: The URL scheme of okq addresses (``okq://HOST:PORT``).
URL_SCHEME: Final = "okq"


def _strip_url(address: str) -> str:
    """``okq://host:port[/]`` -> ``host:port``; other text unchanged.

    Raises:
        LocalProtocolError: another scheme, or a user, path, query or fragment.
    """
    scheme, sep, rest = address.partition("://")
    if not sep:
        return address
    if scheme.lower() != URL_SCHEME:
        raise LocalProtocolError(
            f"unsupported scheme {scheme!r} in server address {address!r}: okq addresses are"
            " okq://HOST:PORT or HOST:PORT (for TLS, pass ssl=)"
        )
    if rest.endswith("/"):
        rest = rest[:-1]
    if any(c in rest for c in "/?#@"):
        raise LocalProtocolError(
            f"bad server address {address!r}: an okq:// URL has only HOST[:PORT]"
            " (no user, path, query or fragment)"
        )
    return rest


def parse_address(address: str | tuple[str, int]) -> tuple[str, int]:
    """``"okq://host:port"``, ``"host:port"``, ``"[v6]:port"``, ``"host"`` (port 4777) or
    ``(host, port)`` -> ``(host, port)``.

    Raises:
        LocalProtocolError: for a scheme other than ``okq://``, an empty host or a port that
            is not 1-65535.
    """
    if isinstance(address, tuple):
        host, port = address
    elif isinstance(address, str):
        text = _strip_url(address.strip())
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

    Each is ``host:port`` or a URL ``okq://host:port``; one URL may name several servers
    (``okq://a:4777,b:4777``).  okq servers sharing one Redis are interchangeable, so clients
    fail over along this list.
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
        """A handled event was acknowledged in time: the handler finished before the claim's
        deadline and QACK replied 1."""

    def late_ack(self, delivery: Delivery) -> None:
        """A late ack: the handler finished at or after the claim's deadline (the event may
        have been delivered again, and the QACK may have removed the redelivered copy), or
        QACK replied 0 (the event was already taken or gone)."""

    def handler_failed(self, delivery: Delivery, error: BaseException | None) -> None:
        """The handler returned false or raised (`error`); the event will be redelivered."""

    def reconnect(self, address: tuple[str, int], attempt: int, delay_s: float) -> None:
        """A connection failed; the next attempt goes to `address` after `delay_s`."""

    def error(self, error: BaseException) -> None:
        """An error a consumer survived (it logs it and carries on)."""

    def command(
        self, command: Command[Any], duration_s: float, error: BaseException | None
    ) -> None:
        """A request of the request methods (``push``, ``peek_next``, ``status``, ``execute``
        ...) got its reply, or failed: `command` is the `okq_proto` command (its ``name``,
        its ``queue`` when it has one), `duration_s` the time from its write to its reply
        (for a pipelined batch, the batch's), `error` the error reply or transport failure
        (None when it succeeded).  Each attempt of a retried request is reported; one that
        found no connection was not sent and is not (the caller gets the `ConnectError`).
        For the metrics of other systems (per-command counts and latencies)."""

    def handler_started(self, delivery: Delivery) -> object:
        """The handler is about to be called with `delivery`, in the thread or task that
        calls it (so a tracing context made current here is the handler's).  What this
        returns is handed to `handler_finished`."""
        return None

    def handler_finished(
        self, delivery: Delivery, started: object, ok: bool, error: BaseException | None
    ) -> None:
        """The handler returned (`ok`: it asked for the ack) or raised `error` (a
        cancellation too, at the claim's deadline or a stop), in the same thread or task as
        `handler_started`, whose return value is `started`."""


#: The type of an event id factory (``Client(id_factory=...)``).
IdFactory = Callable[[], str]


# -- argument checks shared by every front door ----------------------------------------------


def _whole(name: str, value: object, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LocalProtocolError(f"{name} must be an int, not {value!r}")
    if value < least:
        raise LocalProtocolError(f"{name} must be >= {least}, not {value!r}")


def _seconds(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LocalProtocolError(f"{name} must be a number of seconds or None, not {value!r}")
    if not value > 0:
        raise LocalProtocolError(f"{name} must be > 0 or None, not {value!r}")


def _bytes_cap(name: str, value: object) -> None:
    if value is not None:
        _whole(name, value, 1)


def _id_factory(name: str, value: object) -> None:
    if not callable(value):
        raise LocalProtocolError(f"{name} must be callable (returning an id), not {value!r}")


def _hooks(name: str, value: object) -> None:
    if value is not None and not isinstance(value, Hooks):
        raise LocalProtocolError(f"{name} must be an okq_proto.Hooks or None, not {value!r}")


_CLIENT_OPTIONS: Final[dict[str, Callable[[str, object], None]]] = {
    "pool_size": lambda name, value: _whole(name, value, 1),
    "retries": lambda name, value: _whole(name, value, 0),
    "notify_timeout_s": lambda name, value: _whole(name, value, 1),
    "connect_timeout_s": _seconds,
    "read_timeout_s": _seconds,
    "pool_timeout_s": _seconds,
    "max_reply_bytes": _bytes_cap,
    "id_factory": _id_factory,
    "hooks": _hooks,
}


def read_time_left(
    started: float,
    read_timeout_s: float | None,
    now: float,
    blocking_s: float = 0.0,
    source: str = "the server",
) -> float | None:
    """How long the next read of a reply may wait, so that the read timeout bounds the whole
    reply rather than each read.

    A reply's budget is `read_timeout_s` plus `blocking_s` (the waits of blocking commands in
    flight, ``QNOTIFY t``: `ClientConnection.allowed_silence_s`), counted from `started`
    (when the request was written, or the previous reply completed); every read waits what
    is left of it.  A peer that dribbles one byte at a time is cut off at the deadline.

    Args:
        started: the caller's monotonic clock when the budget began.
        read_timeout_s: the read timeout (None: no deadline).
        now: the caller's monotonic clock now.
        blocking_s: the server's allowed silence on top of the read timeout.
        source: who owes the reply, for the message.

    Returns:
        Seconds (> 0) the next read may wait, or None for no deadline.

    Raises:
        TimeoutError: the budget is spent.
    """
    if read_timeout_s is None:
        return None
    budget = read_timeout_s + blocking_s
    left = started + budget - now
    if left <= 0:
        raise TimeoutError(f"no complete reply from {source} within {budget:g} s")
    return left


def check_client_options(**options: object) -> None:
    """Refuse bad client constructor arguments, before anything connects.

    Every front door passes the options it has, by name: ``pool_size`` (int >= 1),
    ``retries`` (int >= 0), ``notify_timeout_s`` (whole seconds >= 1), ``connect_timeout_s``
    / ``read_timeout_s`` / ``pool_timeout_s`` (seconds > 0, or None for no deadline),
    ``max_reply_bytes`` (int >= 1, or None for no cap), ``id_factory`` (callable; None picks
    the default) and ``hooks`` (a `Hooks` or None).

    Raises:
        LocalProtocolError: naming the argument and the value.
    """
    for name, value in options.items():
        if name == "id_factory" and value is None:
            continue
        _CLIENT_OPTIONS[name](name, value)


def check_consume_options(
    handler: object, queues: object, *, expire_seconds: object, concurrency: object
) -> list[str]:
    """Refuse bad ``consume`` arguments before anything is sent; return the queue list.

    Args:
        handler: must be callable.
        queues: a list (or other iterable) of queue names, at least one; one bare name is
            refused (a string is also an iterable of one-letter names).
        expire_seconds: as `expire_argument`: whole seconds >= 0, or -1 (at-most-once).
        concurrency: consumer connections, an int >= 1.

    Raises:
        LocalProtocolError: naming the argument and the value.
    """
    if not callable(handler):
        raise LocalProtocolError(f"handler must be callable, not {handler!r}")
    if isinstance(queues, (str, bytes)) or not isinstance(queues, Iterable):
        raise LocalProtocolError(f"queues must be a list of names, not {queues!r}")
    names = list(queues)
    if not names:
        raise LocalProtocolError("a consumer needs at least one queue")
    for name in names:
        to_wire(name)  # validates each name
    _whole("concurrency", concurrency, 1)
    expire_argument(expire_seconds)  # type: ignore[arg-type]  # it checks the type itself
    return names
