"""The at-least-once invariants, checked on what a server answered.

Owns: `Ledger`, an account of each queue's events kept only from the server's own replies to a
sequence (never from the reference model), and the rules every reply must keep (okq-protocol.md
§1, §4, §7):

* an event whose push was answered ``+OK`` is stored until it is acknowledged, popped with
  ``EX 0`` or flushed: a pop, peek or QNOTIFY that finds nothing while it is stored has lost it;
* a pop never delivers an event that is not stored, nor one whose claim is live (at most one
  delivery per claim), and delivers the contents that were pushed;
* a duplicate is reported exactly for an id that is stored; QACK answers ``:1`` exactly for a
  stored id;
* QSTATUS/QINFO counts are the stored events (total), the claimed ones (processing) and the
  open connections registered for the queue (consumers).

It is a second, independent oracle next to the byte-exact comparison with the model: its
messages say which guarantee broke.  Must not know: sockets, the model, okq_proto.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from ._resp import FramingError, RespError, RespSimple, RespValue, parse_reply

__all__ = ["Ledger"]

_INFO_LINE: Final = re.compile(rb"total: (\d+) +processing: (\d+) +consumers: (\d+) *\Z")
_GO_INT: Final = re.compile(rb"[+-]?[0-9]{1,18}")


@dataclass(slots=True)
class _Event:
    contents: bytes
    claimed: bool = False


@dataclass(slots=True)
class _Queue:
    events: dict[bytes, _Event] = field(default_factory=dict)

    def unclaimed(self) -> list[bytes]:
        return [i for i, e in self.events.items() if not e.claimed]


def _expiry(args: tuple[bytes, ...]) -> int | str | None:
    """QRPOP's expiry as okq reads it: None (default), a number, or "bad"."""
    if len(args) > 2 and args[1].upper() == b"EX":
        if not _GO_INT.fullmatch(args[2]) or int(args[2]) < 0:
            return "bad"
        return int(args[2])
    return None


class Ledger:
    """What a server's replies say is stored, checked against the invariants as they arrive.

    Connections are numbered like the steps of a sequence.
    """

    def __init__(self) -> None:
        self._queues: dict[bytes, _Queue] = {}
        self._registered: dict[int, frozenset[bytes]] = {}

    def _queue(self, name: bytes) -> _Queue:
        return self._queues.setdefault(name, _Queue())

    def consumers(self, name: bytes) -> int:
        """Open connections registered for ``name``, by the replies seen."""
        return sum(1 for queues in self._registered.values() if name in queues)

    def closed(self, conn: int) -> None:
        """The client closed ``conn``: it is no consumer any more (once the server noticed)."""
        self._registered.pop(conn, None)

    def observe(self, conn: int, argv: tuple[bytes, ...], reply: bytes) -> list[str]:
        """Account for one request and its reply; return the invariants it breaks."""
        try:
            value = parse_reply(reply)
        except FramingError as exc:
            return [f"the reply is not one RESP value: {exc}"]
        command, args = argv[0].upper(), argv[1:]
        if isinstance(value, RespError) and not value.message.startswith(b"ERR duplicate"):
            return []  # argument errors change nothing; the byte comparison judges their text
        if command in (b"QLPUSH", b"QRPUSH"):
            return self._push(args, value)
        if command == b"QRPOP":
            return self._pop(args, value)
        if command in (b"QLPEEK", b"QRPEEK"):
            return self._peek(args[0], value)
        if command == b"QACK":
            return self._ack(args[0], args[1], value)
        if command == b"QFLUSH":
            self._queues.pop(args[0], None)
            return []
        if command == b"QREGISTER":
            if value == RespSimple(b"OK"):
                self._registered[conn] = frozenset(args)
            return []
        if command == b"QNOTIFY":
            return self._notify(conn, value)
        if command in (b"QSTATUS", b"QINFO"):
            return self._status(args, value, info=command == b"QINFO")
        return []

    # -- the rules ----------------------------------------------------------------------------

    def _push(self, args: tuple[bytes, ...], value: RespValue) -> list[str]:
        queue, event_id, contents = self._queue(args[0]), args[1], args[2]
        stored = event_id in queue.events
        noblock = len(args) > 3 and args[3].upper() == b"NOBLOCK"
        if isinstance(value, RespError):
            if noblock:
                return [f"a NOBLOCK push answered {value.message!r}"]
            if not stored:
                return [f"duplicate reported for {event_id!r}, which is not stored"]
            return []
        if value != RespSimple(b"OK"):
            return [f"a push answered {value!r}"]
        if stored:
            return [] if noblock else [f"{event_id!r} accepted again while it is stored"]
        queue.events[event_id] = _Event(contents)
        return []

    def _pop(self, args: tuple[bytes, ...], value: RespValue) -> list[str]:
        queue = self._queue(args[0])
        expiry = _expiry(args)
        if expiry == "bad":
            return [] if isinstance(value, RespError) else [f"a bad EX value popped {value!r}"]
        if value is None:
            waiting = queue.unclaimed()
            if waiting:
                return [
                    f"lost: {len(waiting)} unclaimed events ({waiting[0]!r}...) stored"
                    f" but QRPOP found none"
                ]
            return []
        problems = self._delivered(queue, value)
        if problems or not isinstance(value, list):
            return problems
        event_id = value[0]
        assert isinstance(event_id, bytes)
        if expiry == 0:
            del queue.events[event_id]
        else:
            queue.events[event_id].claimed = True
        return []

    def _delivered(self, queue: _Queue, value: RespValue) -> list[str]:
        """Problems with an event handed out by a pop or peek (``[id, contents]``)."""
        if not (
            isinstance(value, list)
            and len(value) == 2
            and isinstance(value[0], bytes)
            and isinstance(value[1], bytes)
        ):
            return [f"not an event: {value!r}"]
        event_id, contents = value[0], value[1]
        assert isinstance(event_id, bytes)
        event = queue.events.get(event_id)
        if event is None:
            return [f"delivered {event_id!r}, which is not stored (never pushed, acked or flushed)"]
        if event.claimed:
            return [f"delivered {event_id!r} again while its claim is live"]
        if event.contents != contents:
            return [f"{event_id!r} delivered with contents {contents!r}, pushed {event.contents!r}"]
        return []

    def _peek(self, name: bytes, value: RespValue) -> list[str]:
        queue = self._queue(name)
        if value is None:
            waiting = queue.unclaimed()
            return (
                [f"lost: {len(waiting)} unclaimed events stored but the peek found none"]
                if waiting
                else []
            )
        return self._delivered(queue, value)

    def _ack(self, name: bytes, event_id: bytes, value: RespValue) -> list[str]:
        queue = self._queue(name)
        stored = event_id in queue.events
        if value not in (0, 1):
            return [f"QACK answered {value!r}"]
        if value == 1 and not stored:
            return [f"QACK of {event_id!r} answered :1, but it is not stored"]
        if value == 0 and stored:
            return [f"QACK of stored {event_id!r} answered :0"]
        queue.events.pop(event_id, None)
        return []

    def _notify(self, conn: int, value: RespValue) -> list[str]:
        registered = self._registered.get(conn, frozenset())
        with_work = {q for q in registered if self._queue(q).unclaimed()}
        if value is None:
            return (
                [f"QNOTIFY found nothing, but {sorted(with_work)!r} have work"] if with_work else []
            )
        if not isinstance(value, bytes) or value not in with_work:
            return [f"QNOTIFY named {value!r}; registered queues with work: {sorted(with_work)!r}"]
        return []

    def _counts(self, name: bytes) -> tuple[int, int, int]:
        queue = self._queues.get(name, _Queue())
        claimed = sum(1 for e in queue.events.values() if e.claimed)
        return len(queue.events), claimed, self.consumers(name)

    def _status(self, args: tuple[bytes, ...], value: RespValue, *, info: bool) -> list[str]:
        if not isinstance(value, list) or len(value) != len(args):
            return [f"{len(args)} queues asked, reply {value!r:.200}"]
        problems = []
        for name, entry in zip(args, value, strict=True):
            if info:
                match = _INFO_LINE.search(entry) if isinstance(entry, bytes) else None
                got = tuple(int(g) for g in match.groups()) if match else None
            elif isinstance(entry, list) and len(entry) >= 4 and entry[0] == name:
                got = (entry[1], entry[2], entry[3])  # type: ignore[assignment]
            else:
                got = None
            want = self._counts(name)
            if got != want:
                problems.append(
                    f"{name!r}: total/processing/consumers {got!r}, the replies so far say {want!r}"
                )
        return problems
