"""The client side of one okq connection, as a sans-I/O machine (in the manner of h11).

Owns: pipelining (a FIFO of commands in flight, each reply read by the command at its head),
the connection's state (open, closed by the peer, broken), and how long the server may stay
silent.  Must not know: sockets, clocks, pools, retries.

Use::

    conn = ClientConnection()
    conn.send(QLPush(b"q", b"id1", b"hello"))
    conn.send(QRPeek(b"q"))            # pipelined: both leave in one write
    sock.sendall(conn.data_to_send())
    while (event := conn.next_event()) is NEED_DATA:
        conn.receive_data(sock.recv(65536))   # or conn.receive_eof() on b""
    # event is CommandReplied(command=QLPush(...), result=None, error=None)

The transport flushes `data_to_send` after every call, feeds what it reads to `receive_data`
(or `receive_eof`), and calls `next_event` until it has the replies it wants.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, final

from ._commands import Command
from ._errors import (
    ConnectionClosed,
    LocalProtocolError,
    OkqError,
    RemoteProtocolError,
    ReplyError,
)
from ._machine import SendData, step
from ._resp import DEFAULT_LIMITS, NEED_DATA, Decoder, Limits, NeedData, Reply

__all__ = [
    "CLOSED",
    "DEFAULT_MAX_REPLY_BYTES",
    "ClientConnection",
    "Closed",
    "CommandReplied",
    "ConnectionState",
    "ReplyDecoder",
    "make_decoder",
]


class ReplyDecoder(Protocol):
    """What `ClientConnection` needs of a decoder: `Decoder` and `HiredisDecoder` both fit."""

    def feed(self, data: bytes | bytearray | memoryview) -> None: ...

    def next_reply(self) -> Reply | NeedData: ...

    def has_partial(self) -> bool: ...


Backend = Literal["auto", "python", "hiredis"]

#: The most bytes of one reply a client buffers by default (``max_reply_bytes``): 64 MiB.
DEFAULT_MAX_REPLY_BYTES: Final = 64 * 1024 * 1024


def make_decoder(backend: Backend = "auto", limits: Limits = DEFAULT_LIMITS) -> ReplyDecoder:
    """A reply decoder: hiredis-backed when available (``"auto"``) or asked for, else pure.

    Raises:
        LocalProtocolError: ``backend="hiredis"`` without the ``hiredis`` package, or an
            unknown backend name.
    """
    if backend == "python":
        return Decoder(limits)
    if backend not in ("auto", "hiredis"):
        raise LocalProtocolError(f"unknown decoder backend {backend!r}")
    try:
        from ._hiredis import HiredisDecoder
    except ImportError:
        if backend == "hiredis":
            raise LocalProtocolError(
                "the hiredis decoder needs the hiredis package: pip install 'okq[hiredis]'"
            ) from None
        return Decoder(limits)
    return HiredisDecoder(limits)


class ConnectionState(enum.Enum):
    """Where a `ClientConnection` is.

    OPEN: usable; commands may be in flight.
    CLOSED: the peer closed the connection after answering everything sent (clean end).
    BROKEN: an error happened (bad bytes, EOF with replies owed, misuse): every call raises.
    """

    OPEN = enum.auto()
    CLOSED = enum.auto()
    BROKEN = enum.auto()


@final
@dataclass(frozen=True, slots=True)
class CommandReplied:
    """The server answered `command`.

    Attributes:
        command: the command object that was sent, as given to `ClientConnection.send`.
        result: the command's typed result (see each command's ``read_reply``); None when
            `error` is set.
        error: the typed error when the server replied with an error (the connection stays
            usable), else None.
    """

    command: Command[Any]
    result: object
    error: ReplyError | None = None

    def unwrap(self) -> object:
        """The result, or raise `error`."""
        if self.error is not None:
            raise self.error
        return self.result


class Closed(enum.Enum):
    """Returned by `ClientConnection.next_event` once the peer closed with nothing owed."""

    CLOSED = enum.auto()


CLOSED: Final = Closed.CLOSED


class ClientConnection:
    """One okq connection's protocol state, without any I/O.

    Args:
        decoder: the reply decoder to use (default: `make_decoder` with `backend`, `limits`).
        backend: ``"auto"`` (hiredis when installed), ``"python"`` or ``"hiredis"``.
        limits: decoder limits.
        max_reply_bytes: the most bytes one reply may take while it is incomplete (None: no
            cap but `limits`).  A bulk string announced beyond it is refused at its header
            (the default decoder's ``max_bulk_length`` is lowered to it); any other reply is
            refused once this many of its bytes are buffered (counted to within one
            `receive_data` chunk).  Either way `next_event` raises `RemoteProtocolError`
            naming ``max_reply_bytes`` and the connection is BROKEN.

    Raises:
        LocalProtocolError: `max_reply_bytes` is not an int >= 1 or None.
    """

    __slots__ = (
        "_bulk_capped",
        "_decoder",
        "_eof",
        "_error",
        "_in_flight",
        "_max_reply",
        "_out",
        "_partial",
        "_replies",
        "_state",
    )

    def __init__(
        self,
        decoder: ReplyDecoder | None = None,
        *,
        backend: Backend = "auto",
        limits: Limits = DEFAULT_LIMITS,
        max_reply_bytes: int | None = DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        if max_reply_bytes is not None and (
            isinstance(max_reply_bytes, bool)
            or not isinstance(max_reply_bytes, int)
            or max_reply_bytes < 1
        ):
            raise LocalProtocolError(
                f"max_reply_bytes must be an int >= 1 or None, not {max_reply_bytes!r}"
            )
        self._max_reply = max_reply_bytes
        self._bulk_capped = False
        if decoder is None:
            if max_reply_bytes is not None and max_reply_bytes < limits.max_bulk_length:
                limits = dataclasses.replace(limits, max_bulk_length=max_reply_bytes)
                self._bulk_capped = True
            decoder = make_decoder(backend, limits)
        self._decoder = decoder
        self._partial = 0  # bytes received since the last complete reply
        self._replies = 0
        self._in_flight: deque[Command[Any]] = deque()
        self._out: list[bytes | bytearray | memoryview] = []
        self._state = ConnectionState.OPEN
        self._eof = False
        self._error: OkqError | None = None

    @property
    def state(self) -> ConnectionState:
        """The current `ConnectionState`."""
        return self._state

    @property
    def replies_read(self) -> int:
        """How many replies `next_event` has handed out so far.  A transport that bounds each
        reply's time starts the next reply's deadline when this changes (a machine such as
        `Consumer` reads replies, and sends again, inside one of its calls)."""
        return self._replies

    @property
    def in_flight(self) -> tuple[Command[Any], ...]:
        """Commands sent whose replies have not been handed out yet, oldest first."""
        return tuple(self._in_flight)

    def allowed_silence_s(self) -> float:
        """How long the server may legitimately stay silent with these commands in flight.

        The sum of the blocking waits (``QNOTIFY t``) in flight: a transport's read deadline is
        its ordinary read timeout plus this, so a blocking command can never outlive it.
        """
        return sum(command.blocking_s for command in self._in_flight)

    def reply_budget_s(self, read_timeout_s: float | None) -> float | None:
        """How long the reply now awaited may take as a whole on a transport whose read
        timeout is `read_timeout_s` (None: no deadline): the read timeout plus the blocking
        waits in flight (`allowed_silence_s`).  Counted from the request's write, or from the
        previous reply; every read waits what is left of it (`okq_proto.policy.read_time_left`).
        """
        if read_timeout_s is None:
            return None
        in_flight = self._in_flight
        if len(in_flight) == 1:  # the hot path: one request
            return read_timeout_s + in_flight[0].blocking_s
        return read_timeout_s + sum(command.blocking_s for command in in_flight)

    def has_unsolicited(self) -> bool:
        """Did the server send bytes that no command asked for?  Call it with nothing in
        flight (after the last reply owed was handed out): such bytes are a reply nobody
        asked for, which a later request would take for its own (okq never speaks unasked).

        Parses at most one buffered reply.  When the answer is True the connection is BROKEN
        (its `state` says so, so no pool keeps it); with commands in flight, or once the
        connection is not OPEN, the answer is False and nothing changes.

        Returns:
            True when unsolicited bytes were buffered (the connection is now BROKEN).
        """
        if self._in_flight or self._state is not ConnectionState.OPEN:
            return False
        try:
            reply = self._decoder.next_reply()
        except RemoteProtocolError as exc:
            self._break(exc)
            return True
        if reply is NEED_DATA and not self._decoder.has_partial():
            return False
        self._break(
            RemoteProtocolError(f"the server sent {reply!r} with no command in flight")
            if reply is not NEED_DATA
            else RemoteProtocolError("the server sent bytes with no command in flight")
        )
        return True

    def _check_usable(self, action: str) -> None:
        if self._state is ConnectionState.BROKEN:
            raise LocalProtocolError(
                f"cannot {action}: the connection is broken ({self._error})"
            ) from self._error
        if self._state is ConnectionState.CLOSED:
            raise ConnectionClosed(f"cannot {action}: the server closed the connection")

    def _break(self, error: OkqError) -> OkqError:
        self._state = ConnectionState.BROKEN
        self._error = error
        self._out.clear()
        return error

    def send(self, command: Command[Any]) -> None:
        """Queue a command; its bytes are appended to the outbound buffer.

        Legal in OPEN only.  Any number of commands may be queued before the next flush
        (pipelining); their replies come back in the same order.

        Raises:
            LocalProtocolError: the connection is broken, or `command` is not a `Command`.
            ConnectionClosed: the server already closed the connection.
        """
        if self._state is not ConnectionState.OPEN:  # the message is built only when needed
            self._check_usable(f"send {command!r}")
        if self._eof:
            raise ConnectionClosed(f"cannot send {command!r}: the server closed the connection")
        if not isinstance(command, Command):
            raise LocalProtocolError(f"not an okq command: {command!r}")
        self._out += command.encode()
        self._in_flight.append(command)

    def send_many(self, commands: Iterable[Command[Any]]) -> None:
        """`send` each command in turn (they leave in one write)."""
        for command in commands:
            self.send(command)

    def data_to_send(self) -> bytes:
        """Drain the outbound buffer: the bytes to write now, or ``b""``.

        Each payload of 1 KiB or more is copied once, here; the caller owns the result.
        """
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 and type(out[0]) is bytes else b"".join(out)
        out.clear()
        return data

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Hand over bytes read from the server (copied; parsed later by `next_event`).

        Raises:
            LocalProtocolError: broken connection, or data after EOF.
        """
        if self._state is not ConnectionState.OPEN:
            self._check_usable("receive data")
        if self._eof:
            raise self._break(LocalProtocolError("received data after end of file"))
        if data:
            self._partial += len(data)
            self._decoder.feed(data)

    def receive_eof(self) -> None:
        """Tell the machine the server closed its side.  Idempotent."""
        if self._state is ConnectionState.OPEN:
            self._eof = True

    def step(self, now: float | None = None) -> SendData | CommandReplied | NeedData | Closed:
        """What to do next (the contract of every machine, `okq_proto.Machine`): `SendData`
        with the queued commands' bytes, else `next_event`'s answer.  `now` is accepted for
        the contract's sake (this machine keeps no time)."""
        return step(self, now)  # type: ignore[return-value]  # one of those, by construction

    def _next_for_step(self, now: float | None) -> object:
        return self.next_event()

    def next_deadline(self) -> float | None:
        """None: a connection keeps no timers (a reply's deadline is the driver's read
        timeout plus `allowed_silence_s`; `okq_proto.policy.read_time_left` computes it)."""
        return None

    def next_event(self) -> CommandReplied | NeedData | Closed:
        """Return the next reply, paired with the command it answers, in FIFO order.

        Returns:
            `CommandReplied` for the oldest command in flight whose reply is complete;
            `NEED_DATA` when more bytes must be received first (also with nothing in flight);
            `CLOSED` when the server closed the connection and owed nothing.

        Raises:
            RemoteProtocolError: bytes that are not RESP2, a reply with nothing in flight, or a
                reply okq never sends to that command.  The connection is then BROKEN.
            ConnectionClosed: the server closed the connection with replies still owed (the
                commands are in `in_flight` and `error.unanswered`).  Also BROKEN.
            LocalProtocolError: the connection was already broken.
        """
        if self._state is not ConnectionState.OPEN:
            if self._state is ConnectionState.CLOSED:
                return CLOSED
            self._check_usable("read the next reply")
        try:
            reply = self._decoder.next_reply()
        except RemoteProtocolError as exc:
            if self._bulk_capped and "max_bulk_length" in str(exc):
                exc = RemoteProtocolError(f"reply too large: {exc} (the client's max_reply_bytes)")
            raise self._break(exc) from None
        if reply is NEED_DATA:
            cap = self._max_reply
            if cap is not None and self._partial > cap:
                if self._decoder.has_partial():
                    raise self._break(
                        RemoteProtocolError(
                            f"reply too large: more than max_reply_bytes ({cap}) bytes "
                            "buffered and the reply is still incomplete"
                        )
                    )
                self._partial = 0
            if not self._eof:
                return NEED_DATA
            if self._in_flight or self._decoder.has_partial():
                raise self._break(
                    ConnectionClosed(
                        f"the server closed the connection with {len(self._in_flight)} "
                        "replies owed",
                        tuple(self._in_flight),
                    )
                )
            self._state = ConnectionState.CLOSED
            return CLOSED
        if not self._in_flight:
            raise self._break(RemoteProtocolError(f"reply {reply!r} with no command in flight"))
        self._partial = 0
        self._replies += 1
        command = self._in_flight.popleft()
        try:
            return CommandReplied(command, command.read_reply(reply))
        except ReplyError as exc:
            return CommandReplied(command, None, exc)
        except RemoteProtocolError as exc:
            raise self._break(exc) from None
