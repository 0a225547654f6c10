"""Mutants of our okq server, each with one injected fault, for the suite's mutation test.

Every `Mutant` runs our real embedded server (`ThreadedServer`) on 127.0.0.1 with two layers
in front of its queues, both built on real parts:

* a `Storage` wrapper (`PlainStorage` and its subclasses) that delegates to a `MemoryStorage`
  and changes one behaviour of the queues (counts, order, expiry, notifications, ...);
* a `RewritingProxy` (``rewriting_proxy``) that relays every connection and may rewrite one
  request, one reply or the pairing of the two (error strings, reply shapes, pipelining,
  closes).

A mutant changes exactly one of the two layers; the other stays the identity.  `CONTROL` is
both identities, so it runs through the same machinery and proves that machinery transparent:
the suite must pass it completely, and must fail every other mutant.

``mutant.serve()`` starts the server and the proxy and yields the proxy's address (`Served`);
both are stopped when the block ends.  `MUTANTS` lists them all; ``area`` names the group of
behaviour a mutant breaks, so a report can say which kind of fault slipped through.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from conformance._resp import RespSimple, RespValue, encode_command, parse_reply
from okq_proto.server import MAX_LOCK_EXPIRE_S, QueueStatus
from okq_transports.server import MemoryStorage, Storage, ThreadedServer

from .rewriting_proxy import Fault, ProxyConnection, Request, RewritingProxy, encode_value

__all__ = ["CONTROL", "MUTANTS", "SWEEP_INTERVAL_S", "Mutant", "PlainStorage", "Served"]

#: Restore sweep period of every mutant's storage (okq: 10 s); redelivery windows still hold.
SWEEP_INTERVAL_S: Final = 0.5

PublishHandler = Callable[[bytes], None]

_PING: Final = encode_command(b"PING")
_PUSHES: Final = (b"QLPUSH", b"QRPUSH")
_PEEKS: Final = (b"QLPEEK", b"QRPEEK")
_DIGITS: Final = re.compile(rb"[0-9]+")


# -- storage wrappers --------------------------------------------------------------------------


class PlainStorage:
    """A `Storage` that delegates every call to a `MemoryStorage`: the identity wrapper."""

    def __init__(self) -> None:
        self.inner = MemoryStorage(sweep_interval_s=SWEEP_INTERVAL_S)

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    def subscribe(self, handler: PublishHandler) -> Callable[[], None]:
        return self.inner.subscribe(handler)

    async def push(self, queue: bytes, event_id: bytes, contents: bytes, *, right: bool) -> bool:
        return await self.inner.push(queue, event_id, contents, right=right)

    async def peek(self, queue: bytes, *, left: bool) -> tuple[bytes, bytes] | None:
        return await self.inner.peek(queue, left=left)

    async def pop(self, queue: bytes, expire_s: int | None) -> tuple[bytes, bytes] | None:
        return await self.inner.pop(queue, expire_s)

    async def ack(self, queue: bytes, event_id: bytes) -> int:
        return await self.inner.ack(queue, event_id)

    async def flush(self, queue: bytes) -> None:
        await self.inner.flush(queue)

    async def status(self, queues: Sequence[bytes] | None) -> list[QueueStatus]:
        return await self.inner.status(queues)

    async def register(self, consumer: str, queues: Sequence[bytes]) -> None:
        await self.inner.register(consumer, queues)

    async def first_with_unclaimed(self, queues: Sequence[bytes]) -> bytes | None:
        return await self.inner.first_with_unclaimed(queues)


class _NotificationsLost(PlainStorage):
    def subscribe(self, handler: PublishHandler) -> Callable[[], None]:
        return lambda: None  # the server's waker is never called


class _NotificationsLate(PlainStorage):
    def subscribe(self, handler: PublishHandler) -> Callable[[], None]:
        def late(queue: bytes) -> None:
            asyncio.get_running_loop().call_later(0.5, handler, queue)

        return self.inner.subscribe(late)


class _ColonNotificationsLost(PlainStorage):
    def subscribe(self, handler: PublishHandler) -> Callable[[], None]:
        def filtered(queue: bytes) -> None:
            if queue and b":" not in queue:
                handler(queue)

        return self.inner.subscribe(filtered)


class _InitialCheckSkipped(PlainStorage):
    async def first_with_unclaimed(self, queues: Sequence[bytes]) -> bytes | None:
        return None


class _InitialCheckPicksEmpty(PlainStorage):
    async def first_with_unclaimed(self, queues: Sequence[bytes]) -> bytes | None:
        found = await self.inner.first_with_unclaimed(queues)
        return found if found is not None or not queues else queues[0]


class _NeverRedelivers(PlainStorage):
    async def start(self) -> None:
        pass  # the restore sweep is never started

    async def stop(self) -> None:
        pass


class _DefaultExpiryShort(PlainStorage):
    async def pop(self, queue: bytes, expire_s: int | None) -> tuple[bytes, bytes] | None:
        return await self.inner.pop(queue, 2 if expire_s is None else expire_s)


class _ExSecondsIgnored(PlainStorage):
    async def pop(self, queue: bytes, expire_s: int | None) -> tuple[bytes, bytes] | None:
        return await self.inner.pop(queue, None if expire_s else expire_s)


class _ExZeroNotAcked(PlainStorage):
    async def pop(self, queue: bytes, expire_s: int | None) -> tuple[bytes, bytes] | None:
        return await self.inner.pop(queue, None if expire_s == 0 else expire_s)


class _PopsFromLeft(PlainStorage):
    async def pop(self, queue: bytes, expire_s: int | None) -> tuple[bytes, bytes] | None:
        engine = self.inner.engine
        left = engine.peek(queue, left=True)
        if left is not None:  # move the left-most event to the right end, unpublished
            engine.ack(queue, left[0])
            engine.push(queue, left[0], left[1], right=True)
        return await self.inner.pop(queue, expire_s)


class _DoubleDelivery(PlainStorage):
    """Two pops of one queue within 20 ms hand out the same event."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[bytes, tuple[float, tuple[bytes, bytes]]] = {}

    async def pop(self, queue: bytes, expire_s: int | None) -> tuple[bytes, bytes] | None:
        now = time.monotonic()
        last = self._last.get(queue)
        if last is not None and now - last[0] < 0.02:
            return last[1]
        event = await self.inner.pop(queue, expire_s)
        if event is not None:
            self._last[queue] = (now, event)
        return event


class _PeeksSwapped(PlainStorage):
    async def peek(self, queue: bytes, *, left: bool) -> tuple[bytes, bytes] | None:
        return await self.inner.peek(queue, left=not left)


class _QrpushAsQlpush(PlainStorage):
    async def push(self, queue: bytes, event_id: bytes, contents: bytes, *, right: bool) -> bool:
        return await self.inner.push(queue, event_id, contents, right=False)


class _QlpushAsQrpush(PlainStorage):
    async def push(self, queue: bytes, event_id: bytes, contents: bytes, *, right: bool) -> bool:
        return await self.inner.push(queue, event_id, contents, right=True)


class _DuplicatesAccepted(PlainStorage):
    async def push(self, queue: bytes, event_id: bytes, contents: bytes, *, right: bool) -> bool:
        await self.inner.push(queue, event_id, contents, right=right)
        return True


class _IdsGlobal(PlainStorage):
    """An id stored in any queue counts as a duplicate in every queue."""

    async def push(self, queue: bytes, event_id: bytes, contents: bytes, *, right: bool) -> bool:
        engine = self.inner.engine
        for name in engine.queue_names():
            if name != queue and engine.contents(name, event_id) is not None:
                return False
        return await self.inner.push(queue, event_id, contents, right=right)


class _AckedIdsNotReusable(PlainStorage):
    def __init__(self) -> None:
        super().__init__()
        self._acked: set[tuple[bytes, bytes]] = set()

    async def ack(self, queue: bytes, event_id: bytes) -> int:
        removed = await self.inner.ack(queue, event_id)
        if removed:
            self._acked.add((queue, event_id))
        return removed

    async def push(self, queue: bytes, event_id: bytes, contents: bytes, *, right: bool) -> bool:
        if (queue, event_id) in self._acked:
            return False
        return await self.inner.push(queue, event_id, contents, right=right)


class _AckSkipsUnclaimed(PlainStorage):
    async def ack(self, queue: bytes, event_id: bytes) -> int:
        if event_id not in self.inner.engine.claimed_ids(queue):
            return 0
        return await self.inner.ack(queue, event_id)


class _FlushKeepsClaimed(PlainStorage):
    async def flush(self, queue: bytes) -> None:
        engine = self.inner.engine
        claimed = [(i, engine.contents(queue, i) or b"") for i in engine.claimed_ids(queue)]
        await self.inner.flush(queue)
        for event_id, contents in claimed:  # newest claim first, each on the right end
            engine.push(queue, event_id, contents, right=True)
        for _ in claimed:  # oldest first: claimed again, keeping their surviving locks
            engine.pop(queue, None, time.monotonic())


class _ContentsTruncated(PlainStorage):
    async def push(self, queue: bytes, event_id: bytes, contents: bytes, *, right: bool) -> bool:
        return await self.inner.push(queue, event_id, contents[:65536], right=right)


class _ContentsCorrupted(PlainStorage):
    async def push(self, queue: bytes, event_id: bytes, contents: bytes, *, right: bool) -> bool:
        if len(contents) > 100_000:
            flipped = contents[100_000] ^ 0x01
            contents = contents[:100_000] + bytes([flipped]) + contents[100_001:]
        return await self.inner.push(queue, event_id, contents, right=right)


class _CrlfNormalised(PlainStorage):
    async def push(self, queue: bytes, event_id: bytes, contents: bytes, *, right: bool) -> bool:
        return await self.inner.push(queue, event_id, contents.replace(b"\r\n", b"\n"), right=right)


class _ProcessingUndercounted(PlainStorage):
    async def status(self, queues: Sequence[bytes] | None) -> list[QueueStatus]:
        return [
            dataclasses.replace(e, processing=e.processing - 1) if e.processing else e
            for e in await self.inner.status(queues)
        ]


class _ListingCaseInsensitive(PlainStorage):
    async def status(self, queues: Sequence[bytes] | None) -> list[QueueStatus]:
        entries = await self.inner.status(queues)
        return entries if queues is not None else sorted(entries, key=lambda e: e.name.lower())


class _NamedStatusSorted(PlainStorage):
    async def status(self, queues: Sequence[bytes] | None) -> list[QueueStatus]:
        entries = await self.inner.status(queues)
        return entries if queues is None else sorted(entries, key=lambda e: e.name)


class _UnknownQueuesOmitted(PlainStorage):
    async def status(self, queues: Sequence[bytes] | None) -> list[QueueStatus]:
        entries = await self.inner.status(queues)
        return [e for e in entries if e.total or e.consumers]


class _GhostQueuesListed(PlainStorage):
    """Queues that once held an event stay in the no-argument listing, with zeros."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[bytes] = set()

    async def push(self, queue: bytes, event_id: bytes, contents: bytes, *, right: bool) -> bool:
        self._seen.add(queue)
        return await self.inner.push(queue, event_id, contents, right=right)

    async def status(self, queues: Sequence[bytes] | None) -> list[QueueStatus]:
        if queues is not None:
            return await self.inner.status(queues)
        listed = {e.name for e in await self.inner.status(None)}
        return await self.inner.status(sorted(listed | self._seen))


class _ColonNamesUnlisted(PlainStorage):
    async def status(self, queues: Sequence[bytes] | None) -> list[QueueStatus]:
        entries = await self.inner.status(queues)
        if queues is not None:
            return entries
        return [e for e in entries if e.name and b":" not in e.name]


class _RegisterAppends(PlainStorage):
    def __init__(self) -> None:
        super().__init__()
        self._queues: dict[str, set[bytes]] = {}

    async def register(self, consumer: str, queues: Sequence[bytes]) -> None:
        merged = self._queues.setdefault(consumer, set())
        merged.update(queues)
        if not queues:
            merged.clear()
        await self.inner.register(consumer, sorted(merged))


class _DeregistrationIgnored(PlainStorage):
    async def register(self, consumer: str, queues: Sequence[bytes]) -> None:
        if queues:
            await self.inner.register(consumer, queues)


class _RegistrationsSeen(PlainStorage):
    """Remembers every consumer's registration as given (repeats included)."""

    def __init__(self) -> None:
        super().__init__()
        self.registered: dict[str, tuple[bytes, ...]] = {}

    async def register(self, consumer: str, queues: Sequence[bytes]) -> None:
        if queues:
            self.registered[consumer] = tuple(queues)
        else:
            self.registered.pop(consumer, None)
        await self.inner.register(consumer, queues)


class _RepeatedNamesCountTwice(_RegistrationsSeen):
    async def status(self, queues: Sequence[bytes] | None) -> list[QueueStatus]:
        def extra(name: bytes) -> int:
            return sum(max(names.count(name) - 1, 0) for names in self.registered.values())

        entries = await self.inner.status(queues)
        return [dataclasses.replace(e, consumers=e.consumers + extra(e.name)) for e in entries]


class _WokenByOtherQueues(_RegistrationsSeen):
    """A push to any queue wakes every waiting consumer, with one of its own queues' names."""

    def subscribe(self, handler: PublishHandler) -> Callable[[], None]:
        def everyone(queue: bytes) -> None:
            handler(queue)
            for names in list(self.registered.values()):
                if queue not in names:
                    handler(names[0])

        return self.inner.subscribe(everyone)


class _StaleNotification(PlainStorage):
    """A push seen while nobody waited makes the next QNOTIFY return that queue, empty or not."""

    def __init__(self) -> None:
        super().__init__()
        self._pushed: set[bytes] = set()

    async def push(self, queue: bytes, event_id: bytes, contents: bytes, *, right: bool) -> bool:
        self._pushed.add(queue)
        return await self.inner.push(queue, event_id, contents, right=right)

    async def first_with_unclaimed(self, queues: Sequence[bytes]) -> bytes | None:
        found = await self.inner.first_with_unclaimed(queues)
        stale = next((q for q in queues if q in self._pushed), None)
        self._pushed.difference_update(queues)
        return found if found is not None else stale


class _NamedStatusDeduplicated(PlainStorage):
    async def status(self, queues: Sequence[bytes] | None) -> list[QueueStatus]:
        return await self.inner.status(None if queues is None else list(dict.fromkeys(queues)))


class _OwnSweep(PlainStorage):
    """Runs the engine's restore sweep itself, to see which events each sweep put back."""

    def __init__(self) -> None:
        super().__init__()
        self._task: asyncio.Task[None] | None = None
        self._handlers: list[PublishHandler] = []

    def subscribe(self, handler: PublishHandler) -> Callable[[], None]:
        self._handlers.append(handler)
        return self.inner.subscribe(handler)

    async def start(self) -> None:
        self.inner.engine.restart_sweep_clock(time.monotonic())
        self._task = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _sweep_forever(self) -> None:
        engine = self.inner.engine
        while True:  # until stop() cancels it, as MemoryStorage's own sweeper
            await asyncio.sleep(max(0.0, engine.next_deadline() - time.monotonic()))
            claimed = {q: set(engine.claimed_ids(q)) for q in engine.queue_names()}
            if engine.handle_timeout(time.monotonic()):
                for queue, ids in claimed.items():
                    back = [i for i in engine.unclaimed_ids(queue) if i in ids]
                    if back:
                        self.redelivered(queue, back)

    def redelivered(self, queue: bytes, ids: list[bytes]) -> None:
        """Called after a sweep put ``ids`` of ``queue`` back."""


class _RedeliveryWakes(_OwnSweep):
    def redelivered(self, queue: bytes, ids: list[bytes]) -> None:
        for handler in list(self._handlers):
            handler(queue)


class _RedeliveredOnLeft(_OwnSweep):
    def redelivered(self, queue: bytes, ids: list[bytes]) -> None:
        engine = self.inner.engine
        for event_id in ids:
            contents = engine.contents(queue, event_id) or b""
            engine.ack(queue, event_id)
            engine.push(queue, event_id, contents, right=False)


class _RedeliveredOrderReversed(_OwnSweep):
    """Several claims put back by one sweep come back newest claim right-most."""

    def redelivered(self, queue: bytes, ids: list[bytes]) -> None:
        if len(ids) < 2:
            return
        engine = self.inner.engine
        contents = [(i, engine.contents(queue, i) or b"") for i in ids]
        for event_id, _ in contents:
            engine.ack(queue, event_id)
        for event_id, data in reversed(contents):
            engine.push(queue, event_id, data, right=True)


class _FlushClearsLocks(PlainStorage):
    """QFLUSH also drops the claim locks (kinder than okq, whose locks survive a flush)."""

    async def flush(self, queue: bytes) -> None:
        await self.inner.flush(queue)
        self.inner.engine._locks.pop(queue, None)


class _HugeExpiryAccepted(PlainStorage):
    async def pop(self, queue: bytes, expire_s: int | None) -> tuple[bytes, bytes] | None:
        if expire_s is not None and expire_s > MAX_LOCK_EXPIRE_S:
            expire_s = MAX_LOCK_EXPIRE_S
        return await self.inner.pop(queue, expire_s)


class _WokenByDroppedQueues(_RegistrationsSeen):
    """A push to a queue a consumer registered for earlier (and dropped) still wakes it."""

    def __init__(self) -> None:
        super().__init__()
        self._ever: dict[str, set[bytes]] = {}

    async def register(self, consumer: str, queues: Sequence[bytes]) -> None:
        self._ever.setdefault(consumer, set()).update(queues)
        await super().register(consumer, queues)

    def subscribe(self, handler: PublishHandler) -> Callable[[], None]:
        def also_dropped(queue: bytes) -> None:
            handler(queue)
            for consumer, names in list(self.registered.items()):
                if queue not in names and queue in self._ever.get(consumer, ()):
                    handler(names[0])

        return self.inner.subscribe(also_dropped)


class _ChoiceNotRandom(PlainStorage):
    """QNOTIFY's initial check always picks the smallest non-empty name, whatever the shuffle."""

    async def first_with_unclaimed(self, queues: Sequence[bytes]) -> bytes | None:
        return await self.inner.first_with_unclaimed(sorted(queues))


class _AckAnyQueue(PlainStorage):
    """QACK of an id not in the named queue removes it from another queue holding it."""

    async def ack(self, queue: bytes, event_id: bytes) -> int:
        removed = await self.inner.ack(queue, event_id)
        if removed:
            return removed
        engine = self.inner.engine
        for name in engine.queue_names():
            if engine.contents(name, event_id) is not None:
                return engine.ack(name, event_id)
        return 0


class _FlushDropsConsumers(_RegistrationsSeen):
    async def flush(self, queue: bytes) -> None:
        await self.inner.flush(queue)
        for consumer, names in list(self.registered.items()):
            if queue in names:
                await self.inner.register(consumer, [n for n in names if n != queue])


class _ConsumerOnlyQueuesUnlisted(PlainStorage):
    async def status(self, queues: Sequence[bytes] | None) -> list[QueueStatus]:
        entries = await self.inner.status(queues)
        return entries if queues is not None else [e for e in entries if e.total]


class _SweepBatchUnlimited(PlainStorage):
    """The restore sweep puts back every expired claim at once, not the 50 oldest per queue."""

    def __init__(self) -> None:
        super().__init__()
        self.inner.engine._sweep_batch = 1_000_000


class _RegistrationCountedLate(PlainStorage):
    """QREGISTER reaches the consumer counts only 0.5 s later (in the background)."""

    async def register(self, consumer: str, queues: Sequence[bytes]) -> None:
        def later() -> None:
            asyncio.get_running_loop().create_task(self.inner.register(consumer, queues))

        asyncio.get_running_loop().call_later(0.5, later)


class _ExpiryHalved(PlainStorage):
    async def pop(self, queue: bytes, expire_s: int | None) -> tuple[bytes, bytes] | None:
        return await self.inner.pop(queue, max(expire_s // 2, 1) if expire_s else expire_s)


class _TotalExcludesClaimed(PlainStorage):
    async def status(self, queues: Sequence[bytes] | None) -> list[QueueStatus]:
        return [
            dataclasses.replace(e, total=e.total - e.processing)
            for e in await self.inner.status(queues)
        ]


# -- proxy faults ------------------------------------------------------------------------------

RequestChange = Callable[[ProxyConnection, Request], bytes | None]
ReplyChange = Callable[[ProxyConnection, Request, bytes], bytes | None]
RawChange = Callable[[ProxyConnection, bytes], bytes | None]


class _Change(Fault):
    """A fault made of optional hooks; a hook returning None leaves its bytes alone."""

    def __init__(
        self,
        *,
        request: RequestChange | None = None,
        reply: ReplyChange | None = None,
        raw: RawChange | None = None,
        keep_server_connection: bool = False,
    ) -> None:
        self._request = request
        self._reply = reply
        self._raw = raw
        self.keep_server_connection = keep_server_connection

    def rewrite_request(self, conn: ProxyConnection, request: Request) -> bytes:
        changed = None if self._request is None else self._request(conn, request)
        return request.raw if changed is None else changed

    def rewrite_reply(self, conn: ProxyConnection, request: Request, reply: bytes) -> bytes:
        changed = None if self._reply is None else self._reply(conn, request, reply)
        return reply if changed is None else changed

    def rewrite_raw(self, conn: ProxyConnection, data: bytes) -> bytes:
        changed = None if self._raw is None else self._raw(conn, data)
        return data if changed is None else changed


def _args(request: Request) -> tuple[bytes, ...]:
    return request.args or ()


def _noblock_push(request: Request) -> bool:
    args = _args(request)
    return request.name in _PUSHES and len(args) >= 5 and args[4].upper() == b"NOBLOCK"


def _error_rewording(old: bytes, new: bytes) -> Fault:
    def reply(conn: ProxyConnection, request: Request, data: bytes) -> bytes | None:
        return data.replace(old, new, 1) if data.startswith(b"-") else None

    return _Change(reply=reply)


def _answer_instead(
    applies: Callable[[Request], bool], answer: Callable[[Request], bytes]
) -> Fault:
    """Requests for which ``applies`` holds never reach the server: ``answer`` replies."""

    def request(conn: ProxyConnection, req: Request) -> bytes | None:
        return _PING if applies(req) else None

    def reply(conn: ProxyConnection, req: Request, data: bytes) -> bytes | None:
        return answer(req) if applies(req) else None

    return _Change(request=request, reply=reply)


def _reply_swap(commands: Sequence[bytes], old: bytes, new: bytes) -> Fault:
    def reply(conn: ProxyConnection, request: Request, data: bytes) -> bytes | None:
        return new if request.name in commands and data == old else None

    return _Change(reply=reply)


def _rewrite_request(change: Callable[[Request], tuple[bytes, ...] | None]) -> Fault:
    def request(conn: ProxyConnection, req: Request) -> bytes | None:
        args = change(req) if req.args else None
        return None if args is None else encode_command(*args)

    return _Change(request=request)


def _strip_noblock(req: Request) -> tuple[bytes, ...] | None:
    return _args(req)[:4] if _noblock_push(req) else None


def _noblock_case_sensitive(req: Request) -> tuple[bytes, ...] | None:
    args = _args(req)
    return args[:4] if _noblock_push(req) and args[4] != b"NOBLOCK" else None


def _noblock_anywhere(req: Request) -> tuple[bytes, ...] | None:
    args = _args(req)
    if req.name not in _PUSHES or len(args) < 6 or args[4].upper() == b"NOBLOCK":
        return None
    later = any(a.upper() == b"NOBLOCK" for a in args[5:])
    return (*args[:4], b"NOBLOCK") if later else None


def _scaled_timeout(scale: Callable[[int], int]) -> Callable[[Request], tuple[bytes, ...] | None]:
    def change(req: Request) -> tuple[bytes, ...] | None:
        args = _args(req)
        if req.name != b"QNOTIFY" or len(args) < 2 or not _DIGITS.fullmatch(args[1]):
            return None
        return (args[0], b"%d" % scale(int(args[1])), *args[2:])

    return change


def _ex_dropped(case_sensitive_only: bool) -> Callable[[Request], tuple[bytes, ...] | None]:
    def change(req: Request) -> tuple[bytes, ...] | None:
        args = _args(req)
        if req.name != b"QRPOP" or len(args) < 4 or args[2].upper() != b"EX":
            return None
        if case_sensitive_only and args[2] == b"EX":
            return None
        return args[:2]

    return change


def _ex_anywhere(req: Request) -> tuple[bytes, ...] | None:
    args = _args(req)
    if req.name != b"QRPOP" or len(args) < 5 or args[2].upper() == b"EX":
        return None
    return (*args[:2], *args[3:5]) if args[3].upper() == b"EX" else None


def _qack_one_arg(req: Request) -> tuple[bytes, ...] | None:
    args = _args(req)
    return (*args, b"") if req.name == b"QACK" and len(args) == 2 else None


def _too_many_args(req: Request) -> bool:
    most = {b"PING": 1, b"QLPEEK": 2, b"QRPEEK": 2, b"QFLUSH": 2, b"QACK": 3}.get(req.name)
    return most is not None and len(_args(req)) > most


def _reply_values(
    commands: Sequence[bytes], change: Callable[[Request, list[RespValue]], list[RespValue] | None]
) -> Fault:
    """Rewrite an array reply of ``commands`` through its parsed elements."""

    def reply(conn: ProxyConnection, request: Request, data: bytes) -> bytes | None:
        if request.name not in commands or not data.startswith(b"*"):
            return None
        value = parse_reply(data)
        if not isinstance(value, list):
            return None
        changed = change(request, list(value))
        return None if changed is None else encode_value(changed)

    return _Change(reply=reply)


def _status_field(index: int, alter: Callable[[int], int]) -> Fault:
    def change(request: Request, entries: list[RespValue]) -> list[RespValue]:
        out: list[RespValue] = []
        for entry in entries:
            if isinstance(entry, list) and len(entry) >= 4:
                value = entry[index]
                if isinstance(value, int):
                    entry = [*entry[:index], alter(value), *entry[index + 1 :]]
            out.append(entry)
        return out

    return _reply_values((b"QSTATUS",), change)


def _info_field(label: bytes, alter: Callable[[int], int]) -> Fault:
    pattern = re.compile(label + rb": ([0-9]+)")

    def change(request: Request, lines: list[RespValue]) -> list[RespValue]:
        def sub(match: re.Match[bytes]) -> bytes:
            return label + b": %d" % alter(int(match.group(1)))

        return [pattern.sub(sub, x) if isinstance(x, bytes) else x for x in lines]

    return _reply_values((b"QINFO",), change)


def _listing_reversed(command: bytes) -> Fault:
    def change(request: Request, entries: list[RespValue]) -> list[RespValue] | None:
        return entries[::-1] if len(_args(request)) == 1 else None

    return _reply_values((command,), change)


def _info_trimmed(request: Request, lines: list[RespValue]) -> list[RespValue]:
    return [x.rstrip(b" ") if isinstance(x, bytes) else x for x in lines]


def _empty_contents_nil(conn: ProxyConnection, request: Request, data: bytes) -> bytes | None:
    if request.name not in (b"QRPOP", *_PEEKS) or not data.endswith(b"$0\r\n\r\n"):
        return None
    value = parse_reply(data)
    if isinstance(value, list) and len(value) == 2 and value[1] == b"":
        return encode_value([value[0], None])
    return None


def _ping_case_sensitive(conn: ProxyConnection, request: Request, data: bytes) -> bytes | None:
    args = _args(request)
    if request.name == b"PING" and args[0] != b"PING" and args[0].isascii():
        return b'-ERR unknown command "%s"\r\n' % args[0]
    return None


def _ping_echoes(conn: ProxyConnection, request: Request, data: bytes) -> bytes | None:
    args = _args(request)
    return encode_value(args[1]) if request.name == b"PING" and len(args) > 1 else None


def _unknown_unquoted(conn: ProxyConnection, request: Request, data: bytes) -> bytes | None:
    match = re.fullmatch(rb'-ERR unknown command "(.*)"\r\n', data, re.S)
    return None if match is None else b"-ERR unknown command %s\r\n" % match.group(1)


def _unknown_uppercased(conn: ProxyConnection, request: Request, data: bytes) -> bytes | None:
    match = re.fullmatch(rb'-ERR unknown command "(.*)"\r\n', data, re.S)
    return None if match is None else b'-ERR unknown command "%s"\r\n' % match.group(1).upper()


def _raw_crlf_in_duplicate(conn: ProxyConnection, request: Request, data: bytes) -> bytes | None:
    if not data.startswith(b"-ERR duplicate event "):
        return None
    return data[:-2].replace(b"\\r", b"\r").replace(b"\\n", b"\n") + b"\r\n"


def _close_after_error(conn: ProxyConnection, request: Request, data: bytes) -> bytes | None:
    if data.startswith(b"-"):
        conn.state["close_now"] = True
    return None


def _pipeline_reordered(conn: ProxyConnection, request: Request, data: bytes) -> bytes | None:
    """With several requests in one read, the first two replies change places."""
    if request.batch_size < 2 or request.batch_index > 1:
        return None
    if request.batch_index == 0:
        conn.state["held"] = data
        return b""
    held = conn.state.pop("held", b"")
    assert isinstance(held, bytes)
    return data + held


def _pipeline_dropped(conn: ProxyConnection, request: Request, data: bytes) -> bytes | None:
    last = request.batch_size >= 2 and request.batch_index == request.batch_size - 1
    return b"" if last else None


def _inline_accepted(conn: ProxyConnection, data: bytes) -> bytes | None:
    """Plain-text command lines are turned into RESP arrays instead of closing."""
    if not data[:1].isalpha():
        return None
    lines = data.split(b"\n")
    out = [encode_command(*line.rstrip(b"\r").split()) for line in lines[:-1] if line.strip()]
    return b"".join(out) + lines[-1]


def _qinfo_by_bytes(request: Request, lines: list[RespValue]) -> list[RespValue] | None:
    """Re-pad QINFO's name column by bytes instead of characters."""
    rows: list[tuple[bytes, bytes, bytes, bytes]] = []
    for line in lines:
        match = _QINFO_LINE.fullmatch(line) if isinstance(line, bytes) else None
        if match is None:
            return None
        name, total, processing, consumers = match.groups()
        rows.append((name.rstrip(b" "), total, processing, consumers))
    widths = [max((len(row[i]) for row in rows), default=1) for i in range(4)]

    def pad(text: bytes, width: int) -> bytes:
        return text + b" " * (max(width, 1) - len(text))

    return [
        pad(row[0], widths[0])
        + b"  total: "
        + pad(row[1], widths[1])
        + b"  processing: "
        + pad(row[2], widths[2])
        + b"  consumers: "
        + pad(row[3], widths[3])
        for row in rows
    ]


_QINFO_LINE: Final = re.compile(
    rb"(.*)  total: ([0-9]+) *  processing: ([0-9]+) *  consumers: ([0-9]+) *", re.S
)


def _hex_uppercase(conn: ProxyConnection, request: Request, data: bytes) -> bytes | None:
    if not data.startswith(b'-ERR unknown command "'):
        return None
    return re.sub(rb"\\x([0-9a-f]{2})", lambda m: b"\\x" + m.group(1).upper(), data)


_SIGNED: Final = re.compile(rb"\+[0-9]+|-0+")


def _signed_number(req: Request) -> bytes | None:
    """The signed-number argument of QRPOP ... EX or QNOTIFY, if there is one."""
    args = _args(req)
    if req.name == b"QRPOP" and len(args) >= 4 and args[2].upper() == b"EX":
        return args[3] if _SIGNED.fullmatch(args[3]) else None
    if req.name == b"QNOTIFY" and len(args) >= 2:
        return args[1] if _SIGNED.fullmatch(args[1]) else None
    return None


def _signed_refused(req: Request) -> bytes:
    what = b"expires" if req.name == b"QRPOP" else b"timeout"
    number = _signed_number(req) or b""
    return b'-ERR bad %s value: strconv.Atoi: parsing "%s": invalid syntax\r\n' % (what, number)


_NAMED: Final = (*_PUSHES, *_PEEKS, b"QRPOP", b"QACK", b"QFLUSH")


def _empty_name(req: Request) -> bool:
    args = _args(req)
    return req.name in _NAMED and len(args) >= 2 and args[1] == b""


def _unregistered_notify(conn: ProxyConnection, req: Request) -> bytes | None:
    args = _args(req)
    if req.name == b"QREGISTER":
        conn.state["registered"] = len(args) > 1
    elif req.name == b"QNOTIFY" and len(args) >= 2 and not conn.state.get("registered"):
        return encode_command(args[0], b"0", *args[2:])
    return None


_UNKNOWN: Final = b'-ERR unknown command "'


def _unicode_escapes_raw(conn: ProxyConnection, request: Request, data: bytes) -> bytes | None:
    if not data.startswith(_UNKNOWN):
        return None
    return re.sub(rb"\\u([0-9a-f]{4})", lambda m: chr(int(m.group(1), 16)).encode(), data)


def _quotes_unescaped(conn: ProxyConnection, request: Request, data: bytes) -> bytes | None:
    if not data.startswith(_UNKNOWN):
        return None
    return data.replace(b'\\"', b'"').replace(b"\\\\", b"\\")


def _duplicate_id_escaped(conn: ProxyConnection, request: Request, data: bytes) -> bytes | None:
    head = b"-ERR duplicate event "
    if not data.startswith(head):
        return None
    event_id = data[len(head) : -2]
    escaped = b"".join(bytes([b]) if 0x20 <= b < 0x7F else b"\\x%02x" % b for b in event_id)
    return head + escaped + b"\r\n"


_COMMANDS: Final = frozenset(
    (*_PUSHES, *_PEEKS, b"PING", b"QRPOP", b"QACK", b"QREGISTER", b"QNOTIFY", b"QFLUSH", b"QSTATUS")
) | {b"QINFO"}


def _unicode_name(req: Request) -> bool:
    """A command name that only Unicode upper-casing (Go's strings.ToUpper) turns into one."""
    args = _args(req)
    if not args or args[0].isascii():
        return False
    try:
        return args[0].decode("utf-8").upper().encode("utf-8") in _COMMANDS
    except UnicodeDecodeError:
        return False


def _has_simple_string(req: Request) -> bool:
    value = parse_reply(req.raw)
    return isinstance(value, list) and any(isinstance(x, RespSimple) for x in value)


def _ex_without_value(req: Request) -> bool:
    args = _args(req)
    return req.name == b"QRPOP" and len(args) == 3 and args[2].upper() == b"EX"


def _ex_last_pair(req: Request) -> tuple[bytes, ...] | None:
    """``QRPOP q EX a ... EX b``: the last pair wins instead of the first."""
    args = _args(req)
    if req.name != b"QRPOP" or len(args) < 6 or args[2].upper() != b"EX":
        return None
    last = max((i for i in range(4, len(args) - 1) if args[i].upper() == b"EX"), default=None)
    return None if last is None else (*args[:2], args[last], args[last + 1])


class _WakesOneConsumer(Fault):
    """Of the consumers a push wakes, only the first is told the queue; the others get nil."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._told: dict[bytes, tuple[float, int]] = {}

    def rewrite_reply(self, conn: ProxyConnection, request: Request, reply: bytes) -> bytes:
        if request.name != b"QNOTIFY" or not reply.startswith(b"$") or reply == _NIL:
            return reply
        now = time.monotonic()
        with self._lock:
            told = self._told.get(reply)
            self._told[reply] = (now, id(conn))
        if told is not None and told[1] != id(conn) and now - told[0] < 0.05:
            return _NIL
        return reply


_CRASH_INPUT: Final = re.compile(rb"(?:[*$+:\-].?\n|.*[*$][0-9]{13,}\r\n)", re.S)


def _crash_on_d1(conn: ProxyConnection, data: bytes) -> bytes | None:
    """What crashes the real okq takes down every connection here too (defect D1)."""
    if _CRASH_INPUT.match(data):
        conn.proxy.crash()
        return b""
    return None


# -- the mutants -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mutant:
    """One injected fault.

    Attributes:
        name: short identifier (the test id).
        area: the group of behaviour it breaks.
        description: what the altered server does wrong.
        storage: makes the server's storage (`PlainStorage` when unaltered).
        fault: makes the proxy's fault (the identity `Fault` when unaltered).
    """

    name: str
    area: str
    description: str
    storage: Callable[[], Storage] = PlainStorage
    fault: Callable[[], Fault] = Fault

    @contextlib.contextmanager
    def serve(self) -> Iterator[Served]:
        """Run the altered server; yields where to reach it (``served.host``, ``served.port``)."""
        server = ThreadedServer("127.0.0.1", 0, storage=self.storage())
        server.start()
        try:
            with RewritingProxy(server.host, server.port, self.fault()) as proxy:
                yield Served(proxy.host, proxy.port, proxy.crash)
        finally:
            server.stop()


@dataclass(frozen=True, slots=True)
class Served:
    """A running mutant.

    Attributes:
        host, port: its address.
        halt: drop every connection now and refuse new ones (once it has been caught, so
            checks still running end at once instead of waiting out the fault).
    """

    host: str
    port: int
    halt: Callable[[], None]


def _storage(name: str, area: str, description: str, storage: Callable[[], Storage]) -> Mutant:
    return Mutant(name, area, description, storage=storage)


def _proxy(name: str, area: str, description: str, fault: Callable[[], Fault]) -> Mutant:
    return Mutant(name, area, description, fault=fault)


CONTROL: Final = Mutant("control", "none", "no fault: identity storage wrapper and proxy")

_OK: Final = b"+OK\r\n"
_NIL: Final = b"$-1\r\n"
_NIL_ARRAY: Final = b"*-1\r\n"

MUTANTS: Final[tuple[Mutant, ...]] = (
    # NOBLOCK
    _proxy(
        "noblock_reports_duplicates",
        "noblock",
        "NOBLOCK ignored: the push runs in the foreground and reports a duplicate id",
        lambda: _rewrite_request(_strip_noblock),
    ),
    _proxy(
        "noblock_push_dropped",
        "noblock",
        "a NOBLOCK push answers +OK but is never stored",
        lambda: _answer_instead(_noblock_push, lambda req: _OK),
    ),
    _proxy(
        "noblock_case_sensitive",
        "noblock",
        "only upper-case NOBLOCK is recognised",
        lambda: _rewrite_request(_noblock_case_sensitive),
    ),
    _proxy(
        "noblock_anywhere",
        "noblock",
        "NOBLOCK is honoured after the 4th argument too",
        lambda: _rewrite_request(_noblock_anywhere),
    ),
    # QNOTIFY
    _proxy(
        "qnotify_waits_twice_timeout",
        "qnotify",
        "QNOTIFY n waits 2n seconds",
        lambda: _rewrite_request(_scaled_timeout(lambda n: 2 * n)),
    ),
    _proxy(
        "qnotify_zero_blocks",
        "qnotify",
        "QNOTIFY 0 waits one second instead of answering at once",
        lambda: _rewrite_request(_scaled_timeout(lambda n: n or 1)),
    ),
    _proxy(
        "qnotify_timeout_short",
        "qnotify",
        "QNOTIFY n waits n - 1 seconds",
        lambda: _rewrite_request(_scaled_timeout(lambda n: max(n - 1, 0))),
    ),
    _storage(
        "qnotify_notifications_lost",
        "qnotify",
        "a push never wakes a blocked QNOTIFY (it times out)",
        _NotificationsLost,
    ),
    _storage(
        "qnotify_notifications_late",
        "qnotify",
        "a push wakes a blocked QNOTIFY only 0.5 s later",
        _NotificationsLate,
    ),
    _storage(
        "qnotify_initial_check_skipped",
        "qnotify",
        "QNOTIFY never returns at once for a queue that already holds events",
        _InitialCheckSkipped,
    ),
    _storage(
        "qnotify_initial_check_picks_empty",
        "qnotify",
        "QNOTIFY's initial check returns the first registered queue even when all are empty",
        _InitialCheckPicksEmpty,
    ),
    _proxy(
        "qnotify_timeout_nil_array",
        "nil shapes",
        "a QNOTIFY timeout answers *-1 instead of $-1",
        lambda: _reply_swap((b"QNOTIFY",), _NIL, _NIL_ARRAY),
    ),
    # redelivery and expiry
    _storage(
        "never_redelivers",
        "redelivery",
        "expired claims are never redelivered, for any queue name",
        _NeverRedelivers,
    ),
    _storage(
        "default_expiry_2s",
        "redelivery",
        "QRPOP without EX claims for 2 s instead of 30 s",
        _DefaultExpiryShort,
    ),
    _storage(
        "ex_seconds_ignored",
        "expiry",
        "QRPOP ... EX n (n > 0) claims with the default expiry",
        _ExSecondsIgnored,
    ),
    _storage(
        "ex_zero_not_acked",
        "expiry",
        "QRPOP ... EX 0 claims with the default expiry instead of acking at once",
        _ExZeroNotAcked,
    ),
    _proxy(
        "ex_ignored",
        "expiry",
        "QRPOP's EX argument is ignored altogether (default expiry, bad values accepted)",
        lambda: _rewrite_request(_ex_dropped(case_sensitive_only=False)),
    ),
    _proxy(
        "ex_case_sensitive",
        "expiry",
        "only upper-case EX is recognised",
        lambda: _rewrite_request(_ex_dropped(case_sensitive_only=True)),
    ),
    _proxy(
        "ex_anywhere",
        "expiry",
        "EX is honoured after another argument too (QRPOP q foo EX 0 acks)",
        lambda: _rewrite_request(_ex_anywhere),
    ),
    # error strings and arity
    _proxy(
        "err_missing_args_wording",
        "errors",
        "ERR missing args reads ERR missing arguments",
        lambda: _error_rewording(b"-ERR missing args", b"-ERR missing arguments"),
    ),
    _proxy(
        "err_unknown_command_unquoted",
        "errors",
        "the unknown-command error does not quote the name",
        lambda: _Change(reply=_unknown_unquoted),
    ),
    _proxy(
        "err_unknown_command_uppercased",
        "errors",
        "the unknown-command error shows the name upper-cased",
        lambda: _Change(reply=_unknown_uppercased),
    ),
    _proxy(
        "err_duplicate_wording",
        "errors",
        "ERR duplicate event <id> reads ERR duplicate id <id>",
        lambda: _error_rewording(b"-ERR duplicate event ", b"-ERR duplicate id "),
    ),
    _proxy(
        "err_bad_timeout_wording",
        "errors",
        "ERR bad timeout value: ... reads ERR bad timeout: ...",
        lambda: _error_rewording(b"-ERR bad timeout value", b"-ERR bad timeout"),
    ),
    _proxy(
        "err_bad_expires_wording",
        "errors",
        "ERR bad expires value: ... reads ERR bad expiry value: ...",
        lambda: _error_rewording(b"-ERR bad expires value", b"-ERR bad expiry value"),
    ),
    _proxy(
        "err_out_of_range_wording",
        "errors",
        "strconv's ': value out of range' reads ': out of range'",
        lambda: _error_rewording(b": value out of range", b": out of range"),
    ),
    _proxy(
        "err_invalid_command_wording",
        "errors",
        "ERR invalid command reads ERR invalid request",
        lambda: _error_rewording(b"-ERR invalid command", b"-ERR invalid request"),
    ),
    _proxy(
        "error_closes_connection",
        "errors",
        "the server closes the connection after any error reply",
        lambda: _Change(reply=_close_after_error),
    ),
    _proxy(
        "arity_extra_args_rejected",
        "arity",
        "arguments beyond the syntax are refused (PING x, QACK q id x, ...)",
        lambda: _answer_instead(_too_many_args, lambda req: b"-ERR wrong number of arguments\r\n"),
    ),
    _proxy(
        "arity_qregister_needs_a_queue",
        "arity",
        "QREGISTER without arguments answers ERR missing args",
        lambda: _answer_instead(
            lambda req: req.name == b"QREGISTER" and len(_args(req)) == 1,
            lambda req: b"-ERR missing args\r\n",
        ),
    ),
    _proxy(
        "arity_qack_one_arg",
        "arity",
        "QACK with only a queue answers :0 instead of ERR missing args",
        lambda: _rewrite_request(_qack_one_arg),
    ),
    # QSTATUS / QINFO
    _proxy(
        "qstatus_total_off",
        "qstatus",
        "QSTATUS reports total + 1 for a non-empty queue",
        lambda: _status_field(1, lambda n: n + 1 if n else n),
    ),
    _proxy(
        "qstatus_processing_off",
        "qstatus",
        "QSTATUS reports processing - 1 while events are claimed",
        lambda: _status_field(2, lambda n: n - 1 if n else n),
    ),
    _proxy(
        "qstatus_consumers_off",
        "qstatus",
        "QSTATUS reports consumers + 1 when two or more are registered",
        lambda: _status_field(3, lambda n: n + 1 if n > 1 else n),
    ),
    _storage(
        "status_processing_undercounted",
        "qstatus",
        "QSTATUS and QINFO count one claimed event too few",
        _ProcessingUndercounted,
    ),
    _proxy(
        "qstatus_listing_reversed",
        "order",
        "the no-argument QSTATUS lists queues in reverse order",
        lambda: _listing_reversed(b"QSTATUS"),
    ),
    _storage(
        "listing_case_insensitive",
        "order",
        "the no-argument QSTATUS/QINFO sort names case-insensitively, not by bytes",
        _ListingCaseInsensitive,
    ),
    _storage(
        "named_status_sorted",
        "order",
        "QSTATUS/QINFO with arguments answer in sorted order, not argument order",
        _NamedStatusSorted,
    ),
    _storage(
        "unknown_queues_omitted",
        "qstatus",
        "QSTATUS/QINFO with arguments leave out queues without events or consumers",
        _UnknownQueuesOmitted,
    ),
    _storage(
        "ghost_queues_listed",
        "qstatus",
        "queues emptied by QACK or QFLUSH stay in the no-argument listing",
        _GhostQueuesListed,
    ),
    _proxy(
        "qinfo_listing_reversed",
        "order",
        "the no-argument QINFO lists queues in reverse order",
        lambda: _listing_reversed(b"QINFO"),
    ),
    _proxy(
        "qinfo_total_off",
        "qinfo",
        "QINFO reports total + 1 for a non-empty queue",
        lambda: _info_field(b"total", lambda n: n + 1 if n else n),
    ),
    _proxy(
        "qinfo_consumers_off",
        "qinfo",
        "QINFO reports consumers + 1 when one or more are registered",
        lambda: _info_field(b"consumers", lambda n: n + 1 if n else n),
    ),
    _proxy(
        "qinfo_padding_trimmed",
        "qinfo",
        "QINFO lines lose their trailing padding",
        lambda: _reply_values((b"QINFO",), _info_trimmed),
    ),
    # QACK
    _proxy(
        "qack_replies_ok",
        "qack",
        "a successful QACK answers +OK instead of :1",
        lambda: _reply_swap((b"QACK",), b":1\r\n", _OK),
    ),
    _proxy(
        "qack_replies_zero",
        "qack",
        "a successful QACK answers :0",
        lambda: _reply_swap((b"QACK",), b":1\r\n", b":0\r\n"),
    ),
    _proxy(
        "qack_unknown_replies_one",
        "qack",
        "QACK of an unknown id answers :1",
        lambda: _reply_swap((b"QACK",), b":0\r\n", b":1\r\n"),
    ),
    _storage(
        "qack_skips_unclaimed",
        "qack",
        "QACK of an event that was never popped leaves it and answers :0",
        _AckSkipsUnclaimed,
    ),
    # peeks, nil shapes, FIFO
    _storage(
        "peeks_swapped",
        "peek",
        "QLPEEK answers what QRPEEK should and vice versa",
        _PeeksSwapped,
    ),
    _proxy(
        "pop_empty_nil_array",
        "nil shapes",
        "QRPOP of an empty queue answers *-1 instead of $-1",
        lambda: _reply_swap((b"QRPOP",), _NIL, _NIL_ARRAY),
    ),
    _proxy(
        "peek_empty_nil_array",
        "nil shapes",
        "a peek of an empty queue answers *-1 instead of $-1",
        lambda: _reply_swap(_PEEKS, _NIL, _NIL_ARRAY),
    ),
    _proxy(
        "empty_listing_nil_array",
        "nil shapes",
        "QSTATUS/QINFO with nothing to list answer *-1 instead of *0",
        lambda: _reply_swap((b"QSTATUS", b"QINFO"), b"*0\r\n", _NIL_ARRAY),
    ),
    _proxy(
        "empty_contents_nil",
        "nil shapes",
        "an event with empty contents comes back with a nil instead of $0",
        lambda: _Change(reply=_empty_contents_nil),
    ),
    _storage(
        "qrpush_acts_as_qlpush",
        "fifo",
        "QRPUSH adds on the left like QLPUSH",
        _QrpushAsQlpush,
    ),
    _storage(
        "qlpush_acts_as_qrpush",
        "fifo",
        "QLPUSH adds on the right like QRPUSH (LIFO consumption)",
        _QlpushAsQrpush,
    ),
    _storage(
        "pops_from_left",
        "fifo",
        "QRPOP takes the left-most event instead of the right-most",
        _PopsFromLeft,
    ),
    # duplicates
    _storage(
        "duplicates_accepted",
        "duplicates",
        "pushing an id already stored answers +OK",
        _DuplicatesAccepted,
    ),
    _storage(
        "ids_unique_across_queues",
        "duplicates",
        "an id stored in one queue is refused as a duplicate in another",
        _IdsGlobal,
    ),
    _storage(
        "acked_ids_not_reusable",
        "duplicates",
        "an id stays a duplicate after its event was acknowledged",
        _AckedIdsNotReusable,
    ),
    _proxy(
        "d2_raw_crlf_in_duplicate_error",
        "defects",
        "the duplicate error embeds CR LF of the id raw, as okq does (defect D2)",
        lambda: _Change(reply=_raw_crlf_in_duplicate),
    ),
    # consumers and registration
    _proxy(
        "disconnect_not_noticed",
        "consumers",
        "a closed connection stays registered (consumer counts never go down on close)",
        lambda: _Change(keep_server_connection=True),
    ),
    _storage(
        "deregistration_ignored",
        "consumers",
        "QREGISTER with no queues and closes leave the old registration counted",
        _DeregistrationIgnored,
    ),
    _storage(
        "qregister_appends",
        "consumers",
        "QREGISTER adds to the earlier list instead of replacing it",
        _RegisterAppends,
    ),
    # payloads
    _storage(
        "large_contents_truncated",
        "payload",
        "contents longer than 64 KiB are cut to 64 KiB",
        _ContentsTruncated,
    ),
    _storage(
        "large_contents_corrupted",
        "payload",
        "byte 100000 of long contents is flipped",
        _ContentsCorrupted,
    ),
    _storage(
        "crlf_normalised",
        "payload",
        "CR LF in contents is stored as LF",
        _CrlfNormalised,
    ),
    # QFLUSH
    _storage(
        "qflush_keeps_claimed",
        "qflush",
        "QFLUSH removes the unclaimed events only; claimed ones stay",
        _FlushKeepsClaimed,
    ),
    # framing, pipelining, case rules
    _proxy(
        "pipeline_replies_reordered",
        "pipelining",
        "with several requests in one read, the first two replies change places",
        lambda: _Change(reply=_pipeline_reordered),
    ),
    _proxy(
        "pipeline_reply_dropped",
        "pipelining",
        "with several requests in one read, the last one gets no reply",
        lambda: _Change(reply=_pipeline_dropped),
    ),
    _proxy(
        "ping_case_sensitive",
        "case rules",
        "only upper-case PING is a command; ping is unknown",
        lambda: _Change(reply=_ping_case_sensitive),
    ),
    _proxy(
        "ping_echoes_argument",
        "case rules",
        "PING x answers x (as Redis does) instead of +PONG",
        lambda: _Change(reply=_ping_echoes),
    ),
    _proxy(
        "inline_commands_accepted",
        "framing",
        "inline (plain text) commands are answered instead of closing the connection",
        lambda: _Change(raw=_inline_accepted),
    ),
    _proxy(
        "d1_crash_inputs_kill_server",
        "defects",
        "a header shorter than 3 bytes or an absurd length drops every connection (D1)",
        lambda: _Change(raw=_crash_on_d1),
    ),
    # D3 and concurrency
    _storage(
        "d3_colon_names_unlisted",
        "defects",
        "the no-argument listing leaves out names with ':' and the empty name (D3)",
        _ColonNamesUnlisted,
    ),
    _storage(
        "d3_colon_notifications_lost",
        "defects",
        "pushes to names with ':' or the empty name wake nobody (D3)",
        _ColonNotificationsLost,
    ),
    _storage(
        "concurrent_pops_share_an_event",
        "concurrency",
        "two pops of one queue within 20 ms get the same event",
        _DoubleDelivery,
    ),
    _storage(
        "qnotify_stale_notification",
        "qnotify",
        "a push while nobody waited makes the next QNOTIFY return that queue even if empty",
        _StaleNotification,
    ),
    _storage(
        "qnotify_woken_by_other_queues",
        "qnotify",
        "a push to any queue wakes every waiting consumer",
        _WokenByOtherQueues,
    ),
    _proxy(
        "qnotify_unregistered_returns_at_once",
        "qnotify",
        "QNOTIFY on a connection registered for nothing answers $-1 at once",
        lambda: _Change(request=_unregistered_notify),
    ),
    _storage(
        "redelivery_wakes_qnotify",
        "redelivery",
        "events put back by the restore sweep wake a waiting QNOTIFY",
        _RedeliveryWakes,
    ),
    _storage(
        "redelivered_on_the_left",
        "redelivery",
        "expired claims come back on the left end (consumed last) instead of the right",
        _RedeliveredOnLeft,
    ),
    _storage(
        "repeated_register_names_count_twice",
        "consumers",
        "QREGISTER q q counts the connection twice for q",
        _RepeatedNamesCountTwice,
    ),
    _storage(
        "named_status_deduplicated",
        "qstatus",
        "QSTATUS q q answers one entry instead of two",
        _NamedStatusDeduplicated,
    ),
    _proxy(
        "qinfo_pads_by_bytes",
        "qinfo",
        "QINFO pads its name column by bytes, not by characters",
        lambda: _reply_values((b"QINFO",), _qinfo_by_bytes),
    ),
    _proxy(
        "err_quote_hex_uppercase",
        "errors",
        "the unknown-command quoting writes \\xNN escapes in upper-case hex",
        lambda: _Change(reply=_hex_uppercase),
    ),
    _proxy(
        "signed_numbers_refused",
        "arguments",
        "EX and QNOTIFY values with a sign (+5, -0) are refused as invalid syntax",
        lambda: _answer_instead(lambda req: _signed_number(req) is not None, _signed_refused),
    ),
    _proxy(
        "empty_queue_name_refused",
        "defects",
        "commands naming the empty queue are refused",
        lambda: _answer_instead(_empty_name, lambda req: b"-ERR invalid queue name\r\n"),
    ),
    _storage(
        "redelivered_order_reversed",
        "redelivery",
        "claims put back by one sweep come back newest claim right-most (not oldest)",
        _RedeliveredOrderReversed,
    ),
    _storage(
        "qflush_clears_claim_locks",
        "qflush",
        "QFLUSH drops claim locks too, so a re-pushed, re-popped id gets its new EX",
        _FlushClearsLocks,
    ),
    _storage(
        "huge_ex_accepted",
        "expiry",
        "an EX too large for Redis is clamped instead of failing with the server-side error",
        _HugeExpiryAccepted,
    ),
    _proxy(
        "err_quote_unicode_raw",
        "errors",
        "the unknown-command quoting writes non-printable code points raw, not as \\uNNNN",
        lambda: _Change(reply=_unicode_escapes_raw),
    ),
    _proxy(
        "err_quote_no_escapes",
        "errors",
        "the unknown-command quoting does not escape double quotes and backslashes",
        lambda: _Change(reply=_quotes_unescaped),
    ),
    _proxy(
        "err_duplicate_id_escaped",
        "errors",
        "the duplicate error escapes non-printable bytes of the id instead of writing them raw",
        lambda: _Change(reply=_duplicate_id_escaped),
    ),
    _proxy(
        "command_names_ascii_upper_only",
        "case rules",
        "command names are upper-cased as ASCII only (PING spelt with a dotless i is unknown)",
        lambda: _answer_instead(
            _unicode_name, lambda req: b'-ERR unknown command "%s"\r\n' % _args(req)[0]
        ),
    ),
    _proxy(
        "empty_array_missing_args",
        "framing",
        'an empty request array answers ERR missing args instead of the unknown command ""',
        lambda: _answer_instead(lambda req: req.args == (), lambda req: b"-ERR missing args\r\n"),
    ),
    _proxy(
        "simple_string_args_refused",
        "framing",
        "requests with simple-string elements are refused as invalid commands",
        lambda: _answer_instead(_has_simple_string, lambda req: b"-ERR invalid command\r\n"),
    ),
    _storage(
        "qnotify_woken_by_dropped_queues",
        "qnotify",
        "after QREGISTER replaced the list, pushes to a dropped queue still wake the consumer",
        _WokenByDroppedQueues,
    ),
    _storage(
        "qnotify_choice_not_random",
        "qnotify",
        "QNOTIFY's initial check always picks the smallest non-empty registered name",
        _ChoiceNotRandom,
    ),
    _proxy(
        "ex_without_value_refused",
        "expiry",
        "QRPOP q EX (no value) is refused instead of being a plain pop",
        lambda: _answer_instead(
            _ex_without_value,
            lambda req: b'-ERR bad expires value: strconv.Atoi: parsing "": invalid syntax\r\n',
        ),
    ),
    _proxy(
        "ex_last_pair_wins",
        "expiry",
        "in QRPOP q EX a ... EX b the last EX pair is used, not the first",
        lambda: _rewrite_request(_ex_last_pair),
    ),
    _storage(
        "qack_any_queue",
        "qack",
        "QACK removes the id from another queue when the named one does not hold it",
        _AckAnyQueue,
    ),
    _storage(
        "qflush_drops_consumers",
        "qflush",
        "QFLUSH also removes the queue's consumer registrations",
        _FlushDropsConsumers,
    ),
    _storage(
        "consumer_only_queues_unlisted",
        "qstatus",
        "queues with consumers but no events are left out of the no-argument listing",
        _ConsumerOnlyQueuesUnlisted,
    ),
    _storage(
        "sweep_batch_unlimited",
        "redelivery",
        "the restore sweep puts back every expired claim of a queue, not the 50 oldest",
        _SweepBatchUnlimited,
    ),
    _proxy(
        "qnotify_wakes_one_consumer",
        "qnotify",
        "a push wakes only the first waiting consumer; the others are answered nil",
        _WakesOneConsumer,
    ),
    _storage(
        "registration_counted_late",
        "consumers",
        "QREGISTER shows in the consumer counts only 0.5 s later",
        _RegistrationCountedLate,
    ),
    _storage(
        "claims_expire_at_half_ex",
        "expiry",
        "QRPOP ... EX n claims for n / 2 seconds (at least 1)",
        _ExpiryHalved,
    ),
    _storage(
        "total_excludes_claimed",
        "qstatus",
        "QSTATUS/QINFO total counts unclaimed events only",
        _TotalExcludesClaimed,
    ),
)

assert len({m.name for m in MUTANTS}) == len(MUTANTS), "mutant names must be unique"
