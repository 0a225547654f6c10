"""One typed request per okq command: its wire arguments and the reading of its reply.

Owns: the argv of every okq command, argument validation (nothing bad is ever sent), and the
mapping of a decoded `Reply` onto a typed result or a typed error.  A command takes a reply that
is already decoded, never bytes, so an adapter over another library's parser (redis-py) reuses
the same interpretation.
Must not know: how bytes travel, pipelining, consumers.

Wire fields (queue names, ids, contents) are `bytes`; names (queues, ids) may be given as `str`
too, encoded as `to_wire` does, as the `Consumer` and the clients take them.  Contents stay
`bytes` (they are opaque).  Results use the public types (`Event`, `QueueStatus`, `str`
names).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Final, Generic, TypeVar, final

from ._errors import ErrorReply, LocalProtocolError, RemoteProtocolError, reply_error
from ._resp import Reply, encode_command_parts
from ._types import Event, PushFlag, QueueStatus, from_wire, to_wire

__all__ = [
    "DEFAULT_EXPIRE_S",
    "NO_ACK",
    "Command",
    "Ping",
    "QAck",
    "QFlush",
    "QInfo",
    "QLPeek",
    "QLPush",
    "QNotify",
    "QRPeek",
    "QRPop",
    "QRPush",
    "QRegister",
    "QStatus",
    "expire_argument",
    "push_command",
]

T = TypeVar("T", covariant=True)

#: okq-go v2's default claim length for consumers, in seconds.
DEFAULT_EXPIRE_S: Final = 30
# Fields shorter than this are formatted into the command; longer ones travel uncopied.
_SMALL: Final = 1024
_NOBLOCK_ARG: Final = b"$7\r\nNOBLOCK\r\n"
_NOBLOCK_TAIL: Final = b"\r\n" + _NOBLOCK_ARG
_QACK_FORMAT: Final = b"*3\r\n$4\r\nQACK\r\n" + b"$%d\r\n%s\r\n" * 2

#: ``expire_s`` value meaning "at-most-once: never ack" (okq-go's ``ExpireSeconds = -1``),
#: sent as ``EX 0`` so the server acknowledges the event as it pops it.
NO_ACK: Final = -1


def _bytes_field(owner: str, name: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise LocalProtocolError(f"{owner}.{name} must be bytes, not {type(value)!r}")


def _name_field(command: object, owner: str, name: str) -> None:
    """Make the name field `name` of a frozen `command` bytes: `str` is encoded as
    `okq_proto.to_wire` does (names are accepted as either, like everywhere in okq_proto).

    Raises:
        LocalProtocolError: for anything but `bytes` or `str`.
    """
    value = getattr(command, name)
    if isinstance(value, str):
        object.__setattr__(command, name, to_wire(value))
    elif not isinstance(value, bytes):
        raise LocalProtocolError(f"{owner}.{name} must be bytes or str, not {type(value)!r}")


def _check_int(owner: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LocalProtocolError(f"{owner}.{name} must be an int, not {value!r}")
    return value


def expire_argument(expire_s: int) -> int:
    """The ``EX`` value sent for an okq-go style ``ExpireSeconds``.

    Args:
        expire_s: seconds a consumer has before its claim expires; `NO_ACK` (-1) for
            at-most-once delivery, sent as ``EX 0``.  0 also means at-most-once.

    Raises:
        LocalProtocolError: for other negative numbers and for anything that is not an int.
    """
    _check_int("QRPop", "expire_s", expire_s)
    if expire_s == NO_ACK:
        return 0
    if expire_s < 0:
        raise LocalProtocolError(
            f"expire_s must be >= 0, or -1 for at-most-once delivery, not {expire_s}"
        )
    return expire_s


def _unexpected(command: str, reply: Reply) -> RemoteProtocolError:
    return RemoteProtocolError(f"{command}: okq never replies {reply!r} to this command")


def _raise_if_error(command: str, reply: Reply) -> None:
    if type(reply) is ErrorReply:
        raise reply_error(reply)


def _read_ok(command: str, reply: Reply) -> None:
    if type(reply) is bytes and reply == b"OK":
        return
    _raise_if_error(command, reply)
    raise _unexpected(command, reply)


def _read_event(command: str, queue: bytes, reply: Reply) -> Event | None:
    if reply is None:
        return None
    if type(reply) is list and len(reply) == 2:
        event_id, contents = reply
        if type(event_id) is bytes and type(contents) is bytes:
            return Event(from_wire(queue), from_wire(event_id), contents)
    _raise_if_error(command, reply)
    raise _unexpected(command, reply)


class Command(Generic[T]):
    """Base of every okq command: ``argv()`` to send, ``read_reply()`` to read the answer.

    Attributes:
        name: the command's wire name.
    """

    __slots__ = ()
    name: ClassVar[bytes]

    def argv(self) -> tuple[bytes, ...]:
        """The command's wire arguments, name first."""
        raise NotImplementedError

    def read_reply(self, reply: Reply) -> T:
        """Turn a decoded reply into this command's result.

        Raises:
            ReplyError: (or a subclass) when the reply is an error reply.
            RemoteProtocolError: for a reply shape okq never sends to this command.
        """
        raise NotImplementedError

    def encode(self) -> list[bytes | bytearray | memoryview]:
        """The command's wire bytes, as parts that concatenate to them (payloads of 1 KiB or
        more are separate, uncopied parts).  Commands sent often override this with a
        pre-formatted fast path."""
        return encode_command_parts(self.argv())

    @property
    def blocking_s(self) -> float:
        """How long the server may legitimately stay silent before replying (QNOTIFY's wait)."""
        return 0.0

    def __repr__(self) -> str:
        return f"<{self.name.decode()} {b' '.join(self.argv()[1:])[:60]!r}>"


@dataclass(frozen=True, slots=True, repr=False)
class _Push(Command[None]):
    _format: ClassVar[bytes]
    _no_block_format: ClassVar[bytes]
    _head_format: ClassVar[bytes]
    queue: bytes
    id: bytes
    contents: bytes
    no_block: bool = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        # Pre-built formats for `encode`, derived from the subclass's command name.  (Explicit
        # super: dataclass(slots=True) rebuilds the class, which breaks the zero-argument form.)
        super(_Push, cls).__init_subclass__(**kwargs)
        name = b"$%d\r\n%s\r\n" % (len(cls.name), cls.name)
        cls._format = b"*4\r\n" + name + b"$%d\r\n%s\r\n" * 3
        cls._no_block_format = b"*5\r\n" + name + b"$%d\r\n%s\r\n" * 3 + _NOBLOCK_ARG
        cls._head_format = b"*4\r\n" + name + b"$%d\r\n%s\r\n" * 2 + b"$%d\r\n"

    def __post_init__(self) -> None:
        # One combined test on the hot path; the helpful message only when it fails.
        if (
            type(self.queue) is not bytes
            or type(self.id) is not bytes
            or type(self.contents) is not bytes
        ):
            cls = type(self).__name__
            _name_field(self, cls, "queue")
            _name_field(self, cls, "id")
            _bytes_field(cls, "contents", self.contents)

    def argv(self) -> tuple[bytes, ...]:
        if self.no_block:
            return (self.name, self.queue, self.id, self.contents, b"NOBLOCK")
        return (self.name, self.queue, self.id, self.contents)

    def encode(self) -> list[bytes | bytearray | memoryview]:
        queue, event_id, contents = self.queue, self.id, self.contents
        if len(queue) >= _SMALL or len(event_id) >= _SMALL:
            return encode_command_parts(self.argv())
        if len(contents) >= _SMALL:
            # Large contents travel as their own part: joining the output copies them once.
            head = self._head_format % (len(queue), queue, len(event_id), event_id, len(contents))
            if self.no_block:
                return [b"*5" + head[2:], contents, _NOBLOCK_TAIL]
            return [head, contents, b"\r\n"]
        fmt = self._no_block_format if self.no_block else self._format
        fields = (len(queue), queue, len(event_id), event_id, len(contents), contents)
        return [fmt % fields]

    def read_reply(self, reply: Reply) -> None:
        """``+OK`` -> None.  Raises `DuplicateEventError` or `TooBusyError` on those replies."""
        _read_ok(self.name.decode(), reply)


@final
@dataclass(frozen=True, slots=True, repr=False)
class QLPush(_Push):
    """``QLPUSH q id contents [NOBLOCK]``: add an event at the end consumed last (FIFO)."""

    name: ClassVar[bytes] = b"QLPUSH"
    if TYPE_CHECKING:  # names as bytes or str (made bytes in __post_init__)

        def __init__(
            self, queue: bytes | str, id: bytes | str, contents: bytes, no_block: bool = False
        ) -> None: ...


@final
@dataclass(frozen=True, slots=True, repr=False)
class QRPush(_Push):
    """``QRPUSH q id contents [NOBLOCK]``: add an event at the end consumed next (priority)."""

    name: ClassVar[bytes] = b"QRPUSH"
    if TYPE_CHECKING:  # names as bytes or str (made bytes in __post_init__)

        def __init__(
            self, queue: bytes | str, id: bytes | str, contents: bytes, no_block: bool = False
        ) -> None: ...


def push_command(queue: bytes, event_id: bytes, contents: bytes, flags: PushFlag) -> _Push:
    """The push okq-go sends for these flags: ``QLPUSH``, or ``QRPUSH`` with ``HIGH_PRIORITY``,
    plus ``NOBLOCK`` as 4th argument with ``NO_BLOCK``.

    Raises:
        LocalProtocolError: if `flags` is not a `PushFlag`.
    """
    if flags is _NORMAL:  # the hot path: no flag arithmetic
        return QLPush(queue, event_id, contents, False)
    if not isinstance(flags, PushFlag):
        raise LocalProtocolError(f"flags must be a PushFlag, not {flags!r}")
    value = flags.value
    no_block = bool(value & _NO_BLOCK)
    if value & _HIGH_PRIORITY:
        return QRPush(queue, event_id, contents, no_block)
    return QLPush(queue, event_id, contents, no_block)


_NORMAL: Final = PushFlag.NORMAL
_NO_BLOCK: Final = PushFlag.NO_BLOCK.value
_HIGH_PRIORITY: Final = PushFlag.HIGH_PRIORITY.value


@dataclass(frozen=True, slots=True, repr=False)
class _Peek(Command[Event | None]):
    queue: bytes

    def __post_init__(self) -> None:
        _name_field(self, type(self).__name__, "queue")

    def argv(self) -> tuple[bytes, ...]:
        return (self.name, self.queue)

    def read_reply(self, reply: Reply) -> Event | None:
        """An event -> `Event`; nil (empty queue, or every event claimed) -> None."""
        return _read_event(self.name.decode(), self.queue, reply)


@final
@dataclass(frozen=True, slots=True, repr=False)
class QLPeek(_Peek):
    """``QLPEEK q``: the unclaimed event consumed last (okq-go's ``PeekLast``)."""

    name: ClassVar[bytes] = b"QLPEEK"
    if TYPE_CHECKING:  # names as bytes or str (made bytes in __post_init__)

        def __init__(self, queue: bytes | str) -> None: ...


@final
@dataclass(frozen=True, slots=True, repr=False)
class QRPeek(_Peek):
    """``QRPEEK q``: the unclaimed event consumed next (okq-go's ``PeekNext``)."""

    name: ClassVar[bytes] = b"QRPEEK"
    if TYPE_CHECKING:  # names as bytes or str (made bytes in __post_init__)

        def __init__(self, queue: bytes | str) -> None: ...


@final
@dataclass(frozen=True, slots=True, repr=False)
class QRPop(Command[Event | None]):
    """``QRPOP q EX n``: claim the next event for `expire_s` seconds.

    Args:
        queue: the queue.
        expire_s: seconds until the claim expires (default 30); -1 (`NO_ACK`) or 0 for
            at-most-once (sent as ``EX 0``: the server acks as it pops).
    """

    name: ClassVar[bytes] = b"QRPOP"
    if TYPE_CHECKING:  # names as bytes or str (made bytes in __post_init__)

        def __init__(self, queue: bytes | str, expire_s: int = DEFAULT_EXPIRE_S) -> None: ...

    queue: bytes
    expire_s: int = DEFAULT_EXPIRE_S
    _ex: bytes = field(init=False, compare=False)
    _wire: list[bytes | bytearray | memoryview] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        _name_field(self, "QRPop", "queue")
        object.__setattr__(self, "_ex", b"%d" % expire_argument(self.expire_s))
        # A consumer sends the same pop over and over: encode it once.
        object.__setattr__(self, "_wire", encode_command_parts(self.argv()))

    def encode(self) -> list[bytes | bytearray | memoryview]:
        return list(self._wire)

    @property
    def acks_on_pop(self) -> bool:
        """True when the server acknowledges the event as it pops it (``EX 0``)."""
        return self._ex == b"0"

    def argv(self) -> tuple[bytes, ...]:
        return (b"QRPOP", self.queue, b"EX", self._ex)

    def read_reply(self, reply: Reply) -> Event | None:
        """An event -> `Event` (now claimed); nil (nothing unclaimed) -> None."""
        return _read_event("QRPOP", self.queue, reply)


@final
@dataclass(frozen=True, slots=True, repr=False)
class QAck(Command[int]):
    """``QACK q id``: acknowledge (delete) an event.  Result: 1 if removed, 0 if not found
    (already acked, flushed, or auto-acked)."""

    name: ClassVar[bytes] = b"QACK"
    if TYPE_CHECKING:  # names as bytes or str (made bytes in __post_init__)

        def __init__(self, queue: bytes | str, id: bytes | str) -> None: ...

    queue: bytes
    id: bytes

    def __post_init__(self) -> None:
        if type(self.queue) is not bytes or type(self.id) is not bytes:
            _name_field(self, "QAck", "queue")
            _name_field(self, "QAck", "id")

    def argv(self) -> tuple[bytes, ...]:
        return (b"QACK", self.queue, self.id)

    def encode(self) -> list[bytes | bytearray | memoryview]:
        queue, event_id = self.queue, self.id
        if len(queue) >= _SMALL or len(event_id) >= _SMALL:
            return encode_command_parts(self.argv())
        return [_QACK_FORMAT % (len(queue), queue, len(event_id), event_id)]

    def read_reply(self, reply: Reply) -> int:
        if type(reply) is int and reply in (0, 1):
            return reply
        _raise_if_error("QACK", reply)
        raise _unexpected("QACK", reply)


def _names(owner: str, queues: Sequence[bytes]) -> tuple[bytes, ...]:
    if isinstance(queues, (str, bytes)):
        raise LocalProtocolError(f"{owner}.queues must be a sequence of names, not one name")
    names = []
    for queue in queues:
        if isinstance(queue, str):
            queue = to_wire(queue)
        elif not isinstance(queue, bytes):
            raise LocalProtocolError(f"{owner}.queues[] must be bytes or str, not {type(queue)!r}")
        names.append(queue)
    return tuple(names)


@final
@dataclass(frozen=True, slots=True, repr=False)
class QRegister(Command[None]):
    """``QREGISTER q...``: make this connection a consumer of exactly these queues (none: of
    no queue)."""

    name: ClassVar[bytes] = b"QREGISTER"
    if TYPE_CHECKING:  # names as bytes or str (made bytes in __post_init__)

        def __init__(self, queues: Sequence[bytes | str] = ()) -> None: ...

    queues: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "queues", _names("QRegister", self.queues))

    def argv(self) -> tuple[bytes, ...]:
        return (b"QREGISTER", *self.queues)

    def read_reply(self, reply: Reply) -> None:
        _read_ok("QREGISTER", reply)


@final
@dataclass(frozen=True, slots=True, repr=False)
class QNotify(Command[str | None]):
    """``QNOTIFY t``: wait up to `timeout_s` whole seconds for one of this connection's
    registered queues to have work.  Result: the queue's name, or None on timeout."""

    name: ClassVar[bytes] = b"QNOTIFY"
    timeout_s: int

    def __post_init__(self) -> None:
        if _check_int("QNotify", "timeout_s", self.timeout_s) < 0:
            raise LocalProtocolError(f"QNotify.timeout_s must be >= 0, not {self.timeout_s}")

    @property
    def blocking_s(self) -> float:
        return float(self.timeout_s)

    def argv(self) -> tuple[bytes, ...]:
        return (b"QNOTIFY", b"%d" % self.timeout_s)

    def read_reply(self, reply: Reply) -> str | None:
        if reply is None:
            return None
        if type(reply) is bytes:
            return from_wire(reply)
        _raise_if_error("QNOTIFY", reply)
        raise _unexpected("QNOTIFY", reply)


@final
@dataclass(frozen=True, slots=True, repr=False)
class QFlush(Command[None]):
    """``QFLUSH q``: delete every event of the queue, claimed ones included."""

    name: ClassVar[bytes] = b"QFLUSH"
    if TYPE_CHECKING:  # names as bytes or str (made bytes in __post_init__)

        def __init__(self, queue: bytes | str) -> None: ...

    queue: bytes

    def __post_init__(self) -> None:
        _name_field(self, "QFlush", "queue")

    def argv(self) -> tuple[bytes, ...]:
        return (b"QFLUSH", self.queue)

    def read_reply(self, reply: Reply) -> None:
        _read_ok("QFLUSH", reply)


@final
@dataclass(frozen=True, slots=True, repr=False)
class QStatus(Command[list[QueueStatus]]):
    """``QSTATUS q...``: counters for these queues, or for every known queue (sorted by name)
    when none are given.  Unknown queues report zeros."""

    name: ClassVar[bytes] = b"QSTATUS"
    if TYPE_CHECKING:  # names as bytes or str (made bytes in __post_init__)

        def __init__(self, queues: Sequence[bytes | str] = ()) -> None: ...

    queues: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "queues", _names("QStatus", self.queues))

    def argv(self) -> tuple[bytes, ...]:
        return (b"QSTATUS", *self.queues)

    def read_reply(self, reply: Reply) -> list[QueueStatus]:
        if type(reply) is list:
            result = []
            for entry in reply:
                # okq may add fields after the first four: read those, keep the rest.
                if type(entry) is list and len(entry) >= 4:
                    name, total, processing, consumers = entry[:4]
                    if (
                        isinstance(name, bytes)
                        and type(total) is int
                        and type(processing) is int
                        and type(consumers) is int
                    ):
                        status = QueueStatus(
                            from_wire(name), total, processing, consumers, tuple(entry[4:])
                        )
                        result.append(status)
                        continue
                raise RemoteProtocolError(f"QSTATUS: malformed entry {entry!r}")
            return result
        _raise_if_error("QSTATUS", reply)
        raise _unexpected("QSTATUS", reply)


@final
@dataclass(frozen=True, slots=True, repr=False)
class QInfo(Command[list[str]]):
    """``QINFO q...``: one human-readable line per queue (selected like `QStatus`)."""

    name: ClassVar[bytes] = b"QINFO"
    if TYPE_CHECKING:  # names as bytes or str (made bytes in __post_init__)

        def __init__(self, queues: Sequence[bytes | str] = ()) -> None: ...

    queues: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "queues", _names("QInfo", self.queues))

    def argv(self) -> tuple[bytes, ...]:
        return (b"QINFO", *self.queues)

    def read_reply(self, reply: Reply) -> list[str]:
        if type(reply) is list and all(type(line) is bytes for line in reply):
            return [from_wire(line) for line in reply]  # type: ignore[arg-type]  # checked
        _raise_if_error("QINFO", reply)
        raise _unexpected("QINFO", reply)


@final
@dataclass(frozen=True, slots=True, repr=False)
class Ping(Command[None]):
    """``PING``: the server answers ``+PONG``."""

    name: ClassVar[bytes] = b"PING"

    def argv(self) -> tuple[bytes, ...]:
        return (b"PING",)

    def read_reply(self, reply: Reply) -> None:
        if type(reply) is bytes and reply == b"PONG":
            return
        _raise_if_error("PING", reply)
        raise _unexpected("PING", reply)
