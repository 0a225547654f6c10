"""The public records of okq: `Event`, `QueueStatus`, `PushFlag`, and the name codec.

Owns: how names and ids cross between the public API (`str`) and the wire (`bytes`).  Queue
names and event ids are `str` for users and UTF-8 on the wire; bytes that are not valid UTF-8
decode with ``surrogateescape``, so every name and id round-trips exactly.  Contents are `bytes`
(a `str` given to a push is encoded as UTF-8).
Must not know: RESP, commands, I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from ._errors import LocalProtocolError

__all__ = [
    "Event",
    "PushFlag",
    "QueueStatus",
    "contents_bytes",
    "from_wire",
    "to_wire",
]

_ENCODING: Final = "utf-8"
_ERRORS: Final = "surrogateescape"


def to_wire(name: str | bytes) -> bytes:
    """Encode a queue name or event id for the wire (UTF-8 with surrogateescape).

    `bytes` pass through unchanged, so callers holding raw names need not decode them.

    Raises:
        LocalProtocolError: for anything but `str` or `bytes`.
    """
    if isinstance(name, str):
        try:
            return name.encode(_ENCODING, _ERRORS)
        except UnicodeEncodeError as exc:  # a lone surrogate that surrogateescape cannot map
            raise LocalProtocolError(f"name {name!r} cannot be encoded: {exc}") from None
    if isinstance(name, bytes):
        return name
    raise LocalProtocolError(f"a queue name or event id must be str or bytes, not {type(name)!r}")


def from_wire(data: bytes) -> str:
    """Decode a queue name or event id from the wire; the exact inverse of `to_wire`."""
    return data.decode(_ENCODING, _ERRORS)


def contents_bytes(contents: bytes | bytearray | memoryview | str) -> bytes:
    """Contents as `bytes`: `str` is encoded as UTF-8, bytes-like objects are copied.

    Raises:
        LocalProtocolError: for any other type.
    """
    if isinstance(contents, bytes):
        return contents
    if isinstance(contents, str):
        return contents.encode(_ENCODING, _ERRORS)
    if isinstance(contents, (bytearray, memoryview)):
        return bytes(contents)
    raise LocalProtocolError(f"event contents must be bytes or str, not {type(contents)!r}")


@dataclass(frozen=True, slots=True)
class Event:
    """One okq event: an id unique within its queue, and opaque contents.

    Attributes:
        queue: the queue's name.
        id: the event id (okq-go and this driver generate UUID4 text by default).
        contents: the payload, any bytes.
    """

    queue: str
    id: str
    contents: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.queue, str) or not isinstance(self.id, str):
            raise LocalProtocolError("Event.queue and Event.id must be str")
        if not isinstance(self.contents, bytes):
            object.__setattr__(self, "contents", contents_bytes(self.contents))

    @property
    def text(self) -> str:
        """The contents decoded as UTF-8 (strict: raises `UnicodeDecodeError` if they are not)."""
        return self.contents.decode(_ENCODING)


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """One queue's counters, as reported by ``QSTATUS``.

    Attributes:
        name: the queue's name.
        total: events stored, claimed or not.
        processing: events claimed and not yet acknowledged (expired claims included until the
            server's sweep puts them back).
        consumers: connections registered to consume from the queue, across all okq servers
            sharing the storage.
        extra: further fields after the first four; okq warns entries may grow, so they are
            kept rather than refused.
    """

    name: str
    total: int
    processing: int
    consumers: int
    extra: tuple[object, ...] = field(default=(), compare=False)

    @property
    def waiting(self) -> int:
        """Events not claimed by anybody (``total - processing``)."""
        return self.total - self.processing


class PushFlag(enum.Flag):
    """How a push is made, combinable with ``|`` (okq-go's ``Normal``, ``HighPriority``,
    ``NoBlock``).

    NORMAL: ``QLPUSH``, consumed after everything already waiting (FIFO).
    HIGH_PRIORITY: ``QRPUSH``, consumed next, before events already waiting.
    NO_BLOCK: append ``NOBLOCK``: the server replies before storing the event, so the push is
        fast but a duplicate id is silently dropped rather than reported.
    """

    NORMAL = 0
    HIGH_PRIORITY = enum.auto()
    NO_BLOCK = enum.auto()
