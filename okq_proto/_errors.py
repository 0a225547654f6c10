"""The okq error tree, shared by the core and every transport.

Owns: every exception type a user of okq can see, and `is_dup`.
Must not know: sockets, event loops, or any particular transport library.  Transports
map their own failures (``OSError``, ``trio.BrokenResourceError``, ``redis.ConnectionError``)
onto the `TransportError` branch here, so that code catching okq errors works the same over
every transport.

    OkqError
    ├── ProtocolError                  (abstract: somebody broke the rules)
    │   ├── LocalProtocolError         you misused the API (bad argument, wrong state)
    │   └── RemoteProtocolError        the peer broke RESP2 or okq's reply shapes
    ├── ReplyError                     the server answered with an error reply (.reply kept)
    │   ├── DuplicateEventError        ``ERR duplicate event <id>`` (.event_id)
    │   └── TooBusyError               ``ERR too busy to process NOBLOCK event``
    └── TransportError                 the connection failed
        ├── ConnectError               could not connect
        ├── TimeoutError               a deadline passed (also a builtin ``TimeoutError``)
        └── ConnectionClosed           the connection is gone (closed, reset, broken)
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Final, final

__all__ = [
    "ConnectError",
    "ConnectionClosed",
    "DuplicateEventError",
    "ErrorReply",
    "LocalProtocolError",
    "OkqError",
    "ProtocolError",
    "RemoteProtocolError",
    "ReplyError",
    "TimeoutError",
    "TooBusyError",
    "TransportError",
    "is_dup",
    "reply_error",
]


@final
@dataclass(frozen=True, slots=True)
class ErrorReply:
    """An error reply (``-<message>\\r\\n``) as a value.

    Inside the core an error reply is data, never an exception, so that in a pipeline it keeps
    its slot (hiredis and redis-py do the same).  `message` is everything between ``-`` and CR LF,
    e.g. ``b"ERR duplicate event e1"``.
    """

    message: bytes

    @property
    def prefix(self) -> bytes:
        """The first word of the message (``b"ERR"`` for every okq error)."""
        return self.message.split(b" ", 1)[0]

    @property
    def text(self) -> str:
        """The message as text (invalid UTF-8 is replaced), for error messages and logs."""
        return self.message.decode("utf-8", "replace")


class OkqError(Exception):
    """Root of every error raised by okq."""


class ProtocolError(OkqError):
    """Somebody broke the protocol.  Not raised itself: see the two subclasses."""


class LocalProtocolError(ProtocolError):
    """This side misused the API: a bad argument, or a call that is illegal in this state.

    Nothing has been sent when this is raised for a bad argument.
    """


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that are not valid RESP2, or a reply okq never sends.

    The connection cannot be trusted after this and must be closed.
    """


class ReplyError(OkqError):
    """The server answered with an error reply.  The connection stays usable.

    Attributes:
        reply: the `ErrorReply` exactly as received.
    """

    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(reply.text)
        self.reply = reply


class DuplicateEventError(ReplyError):
    """A push was refused because the queue already holds an event with this id.

    Attributes:
        event_id: the duplicate id, as `str` (surrogateescape for bytes that are not UTF-8).
    """

    def __init__(self, reply: ErrorReply, event_id: str) -> None:
        super().__init__(reply)
        self.event_id = event_id


class TooBusyError(ReplyError):
    """A ``NOBLOCK`` push was refused because every background worker of the server was busy.

    Nothing was stored; the push may be retried.
    """


class TransportError(OkqError):
    """The connection to the server failed.  Raised by transports, never by the pure core."""


class ConnectError(TransportError):
    """A connection to the server could not be made.

    Attributes:
        failures: when several addresses were tried (failover), each address and why it
            failed, in the order tried; empty otherwise.
    """

    def __init__(
        self,
        message: str = "cannot connect",
        failures: tuple[tuple[tuple[str, int], OkqError], ...] = (),
    ) -> None:
        super().__init__(message)
        self.failures = failures


class TimeoutError(TransportError, builtins.TimeoutError):
    """A deadline passed while connecting or waiting for a reply.

    Also a builtin `TimeoutError`, so ``except TimeoutError`` in user code catches it.
    """


class ConnectionClosed(TransportError):
    """The connection is gone: closed by either side, reset, or broken by an earlier error.

    Attributes:
        unanswered: the commands that were in flight and got no reply (the server may or may
            not have executed them), oldest first; empty when unknown or none.
    """

    def __init__(self, message: str = "connection closed", unanswered: tuple[object, ...] = ()):
        super().__init__(message)
        self.unanswered = unanswered


class ClientClosed(LocalProtocolError, ConnectionClosed):
    """A request was made on a client (or pool) that was already closed.

    The same error on every door.  It is a `LocalProtocolError` (the caller's mistake: nothing
    was sent) and, for code written against earlier releases of the async doors, a
    `ConnectionClosed`; it is never retried and never reconnected.
    """

    def __init__(self, message: str = "the client is closed") -> None:
        super().__init__(message)


_DUPLICATE_PREFIX: Final = b"ERR duplicate event "
_TOO_BUSY: Final = b"ERR too busy to process NOBLOCK event"


def reply_error(reply: ErrorReply) -> ReplyError:
    """Return the most specific `ReplyError` for an error reply (it is not raised).

    ``ERR duplicate event <id>`` gives `DuplicateEventError`, ``ERR too busy ...`` gives
    `TooBusyError`, anything else a plain `ReplyError`.
    """
    message = reply.message
    if message.startswith(_DUPLICATE_PREFIX):
        event_id = message[len(_DUPLICATE_PREFIX) :].decode("utf-8", "surrogateescape")
        return DuplicateEventError(reply, event_id)
    if message == _TOO_BUSY:
        return TooBusyError(reply)
    return ReplyError(reply)


def is_dup(exc: BaseException | None) -> bool:
    """Tell whether an error means "this event id is already in the queue" (okq-go's ``IsDup``).

    Args:
        exc: any exception, or None (giving False), so ``is_dup(result.error)`` reads well.
    """
    return isinstance(exc, DuplicateEventError)
