"""The pure okq queue engine: what the real server keeps in Redis, kept in memory.

Owns: queues of events (unclaimed list, claimed list, contents, claim locks), consumer
registrations (for the ``consumers`` counts), the queue listing, and the periodic restore sweep
that redelivers expired claims.  Everything is in bytes; every time-dependent call takes
``now`` (the caller's monotonic seconds).

Must not know: sockets, clocks, the wire format, connections, notifications (the caller
publishes a notification after a successful push; see `okq_proto._dispatch.NotifyHub`).

It follows the Redis steps of okq (protocol doc section 10) one for one, so the quirks come out
the same: QACK also removes unclaimed events, claim expiry is only enforced by the sweep (every
``sweep_interval_s`` counted from the engine's origin, 50 oldest claims per queue, expired ones
pushed back on the right, oldest claim right-most), lock keys survive QFLUSH and a re-claim keeps
an unexpired old lock.  It does *not* copy defect D3: names containing ``:`` and the empty name
are listed and swept like every other name.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, final

__all__ = [
    "DEFAULT_EXPIRE_S",
    "DEFAULT_SWEEP_INTERVAL_S",
    "MAX_LOCK_EXPIRE_S",
    "SWEEP_BATCH",
    "ExpiryTooLargeError",
    "QueueEngine",
    "QueueStatus",
]

DEFAULT_EXPIRE_S: Final = 30
"""okq's claim expiry when QRPOP has no ``EX`` (and the lock TTL used for ``EX 0``)."""

DEFAULT_SWEEP_INTERVAL_S: Final = 10.0
"""okq's restore sweep period, counted from server start."""

SWEEP_BATCH: Final = 50
"""The sweep looks at this many of the oldest claims of each queue (``LRANGE ... -50 -1``)."""

# Redis 7.0 `SET ... EX n` refuses n > LLONG_MAX / 1000 and, after adding the current Unix time
# in milliseconds, any sum that overflows.  The engine has no wall clock, so it assumes the Unix
# time of 2025-01-01; only values within ~1.7e9 s of the limit depend on that guess.
_LLONG_MAX: Final = 2**63 - 1
_ASSUMED_UNIX_MS: Final = 1_735_689_600_000
MAX_LOCK_EXPIRE_S: Final = (_LLONG_MAX - _ASSUMED_UNIX_MS) // 1000
"""The largest ``EX`` Redis accepts for the claim lock; larger values fail the pop half way."""


class ExpiryTooLargeError(Exception):
    """QRPOP's expiry is too large for Redis: the event was claimed but got no lock.

    Mirrors okq's failing Lua script: the id has already moved to the claimed list (and will be
    returned by the next sweep) when this is raised; the reply is ``ERR unexpected server-side
    error``.
    """


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class QueueStatus:
    """One QSTATUS entry: ``total`` counts unclaimed + claimed, ``processing`` the claimed."""

    name: bytes
    total: int
    processing: int
    consumers: int


@dataclass(slots=True)
class _Queue:
    # Redis `queue:{Q}`: left = most recently QLPUSHed, right = next to pop.
    unclaimed: deque[bytes] = field(default_factory=deque)
    # Redis `queue:{Q}:claimed`: new claims on the left, oldest right.
    claimed: deque[bytes] = field(default_factory=deque)
    # Redis `queue:{Q}:items`: id -> contents for every stored event.
    items: dict[bytes, bytes] = field(default_factory=dict)


@final
class QueueEngine:
    """All queues of one (simulated) Redis, with okq's operations on them.

    Args:
        now: the caller's monotonic time at server start; sweeps run at
            ``now + k * sweep_interval_s``.
        sweep_interval_s: restore sweep period (okq: 10 s).  Tests use small values.
        sweep_batch: how many of the oldest claims each sweep looks at per queue (okq: 50).
        default_expire_s: claim duration of a QRPOP without ``EX`` (okq: 30); also the lock
            TTL of an ``EX 0`` pop, which is acknowledged at once anyway.
    """

    def __init__(
        self,
        *,
        now: float,
        sweep_interval_s: float = DEFAULT_SWEEP_INTERVAL_S,
        sweep_batch: int = SWEEP_BATCH,
        default_expire_s: int = DEFAULT_EXPIRE_S,
    ) -> None:
        if not sweep_interval_s > 0:
            raise ValueError(f"sweep_interval_s must be > 0, not {sweep_interval_s!r}")
        if sweep_batch < 1:
            raise ValueError(f"sweep_batch must be >= 1, not {sweep_batch!r}")
        if default_expire_s < 1:
            raise ValueError(f"default_expire_s must be >= 1, not {default_expire_s!r}")
        self._default_expire_s = default_expire_s
        self._queues: dict[bytes, _Queue] = {}
        # Redis `queue:{Q}:lock:<id>`: claim deadline (monotonic seconds); survives QFLUSH.
        self._locks: dict[bytes, dict[bytes, float]] = {}
        # Redis `queue:{Q}:consumers`: consumer ids registered for Q.
        self._consumers: dict[bytes, set[str]] = {}
        self._registrations: dict[str, frozenset[bytes]] = {}
        self._sweep_interval_s = sweep_interval_s
        self._sweep_batch = sweep_batch
        self._origin = now
        self._next_sweep = now + sweep_interval_s

    # -- time ---------------------------------------------------------------------------------

    @property
    def sweep_interval_s(self) -> float:
        """The restore sweep period in seconds."""
        return self._sweep_interval_s

    def restart_sweep_clock(self, now: float) -> None:
        """Count sweeps from ``now`` again, as a restarted okq process does."""
        self._origin = now
        self._next_sweep = now + self._sweep_interval_s

    def next_deadline(self) -> float:
        """When `handle_timeout` must be called next (monotonic seconds): the next sweep."""
        return self._next_sweep

    def handle_timeout(self, now: float) -> int:
        """Run the restore sweep if it is due.

        Missed ticks are not caught up (a Go ticker drops them); the next sweep stays on the
        ``origin + k * interval`` grid.

        Returns:
            the number of events put back in their queues (0 if no sweep was due).
        """
        if now < self._next_sweep:
            return 0
        ticks = math.floor((now - self._origin) / self._sweep_interval_s) + 1
        self._next_sweep = max(self._origin + ticks * self._sweep_interval_s, self._next_sweep)
        if self._next_sweep <= now:  # float rounding at a tick boundary
            self._next_sweep += self._sweep_interval_s
        return self.sweep(now)

    def sweep(self, now: float) -> int:
        """Redeliver expired claims now (okq's restore sweep), whatever the schedule.

        For each listed queue, the ``sweep_batch`` oldest claims are checked; each whose lock is
        gone is moved, newest first, to the right end of the unclaimed list, so when several
        come back the oldest claim ends right-most.  No notification is published.

        Returns:
            the number of events put back.
        """
        moved = 0
        for name in self.queue_names():
            queue = self._queues.get(name)
            locks = self._locks.get(name, {})
            if queue is not None and queue.claimed:
                batch = list(queue.claimed)[-self._sweep_batch :]
                expired = [i for i in batch if not self._lock_alive(locks, i, now)]
                for event_id in expired:
                    queue.claimed.remove(event_id)
                    queue.unclaimed.append(event_id)
                    moved += 1
        self._drop_dead_locks(now)
        return moved

    # -- events -------------------------------------------------------------------------------

    def push(self, queue: bytes, event_id: bytes, contents: bytes, *, right: bool = False) -> bool:
        """Store an event (QLPUSH, or QRPUSH with ``right=True``).

        Returns:
            True if stored; False if the queue already holds ``event_id`` (claimed or not), in
            which case nothing changed.
        """
        q = self._queues.get(queue)
        if q is None:
            q = self._queues[queue] = _Queue()
        if event_id in q.items:
            return False
        q.items[event_id] = bytes(contents)
        if right:
            q.unclaimed.append(event_id)
        else:
            q.unclaimed.appendleft(event_id)
        return True

    def peek(self, queue: bytes, *, left: bool) -> tuple[bytes, bytes] | None:
        """The left-most (QLPEEK) or right-most (QRPEEK) unclaimed ``(id, contents)``, or None."""
        q = self._queues.get(queue)
        if q is None or not q.unclaimed:
            return None
        event_id = q.unclaimed[0] if left else q.unclaimed[-1]
        return event_id, q.items[event_id]

    def pop(self, queue: bytes, expire_s: int | None, now: float) -> tuple[bytes, bytes] | None:
        """Claim the right-most unclaimed event (QRPOP).

        Args:
            expire_s: claim duration; None for the default (30 s); 0 claims and acks at once.
            now: monotonic seconds, the start of the claim.

        Returns:
            ``(id, contents)``, or None when no event is unclaimed.

        Raises:
            ExpiryTooLargeError: ``expire_s`` > `MAX_LOCK_EXPIRE_S`; the event is left claimed
                without a lock (okq's half-run Lua script), so the next sweep returns it.
            ValueError: ``expire_s`` is negative (the dispatcher rejects those first).
        """
        if expire_s is not None and expire_s < 0:
            raise ValueError(f"expire_s must be >= 0, not {expire_s}")
        q = self._queues.get(queue)
        if q is None or not q.unclaimed:
            return None
        event_id = q.unclaimed.pop()  # RPOPLPUSH queue:{Q} queue:{Q}:claimed
        q.claimed.appendleft(event_id)
        lock_s = expire_s if expire_s else self._default_expire_s
        if lock_s > MAX_LOCK_EXPIRE_S:
            raise ExpiryTooLargeError(f"EX {lock_s} is too large for Redis")
        locks = self._locks.setdefault(queue, {})
        if not self._lock_alive(locks, event_id, now):  # SET ... NX keeps a live old lock
            locks[event_id] = now + lock_s
        result = event_id, q.items[event_id]
        if expire_s == 0:
            self.ack(queue, event_id)
        return result

    def ack(self, queue: bytes, event_id: bytes) -> int:
        """Delete an event by id, looking among claimed events first, then unclaimed (QACK).

        Returns:
            1 if an event was removed, else 0.
        """
        q = self._queues.get(queue)
        if q is None or event_id not in q.items:
            return 0
        if event_id in q.claimed:
            q.claimed.remove(event_id)
        else:
            q.unclaimed.remove(event_id)
        del q.items[event_id]
        locks = self._locks.get(queue)
        if locks is not None:
            locks.pop(event_id, None)
            if not locks:
                del self._locks[queue]
        if not q.items:
            del self._queues[queue]
        return 1

    def flush(self, queue: bytes) -> None:
        """Delete every event of the queue, claimed ones too (QFLUSH).  Locks and consumers stay."""
        self._queues.pop(queue, None)

    # -- listing and status -------------------------------------------------------------------

    def queue_names(self) -> list[bytes]:
        """Every queue that stores an event or has a consumer, sorted by bytes."""
        names = {n for n, q in self._queues.items() if q.items}
        names.update(n for n, c in self._consumers.items() if c)
        return sorted(names)

    def status(self, queues: Sequence[bytes] | None = None) -> list[QueueStatus]:
        """QSTATUS data: one entry per name in order (unknown ones zero), or every listed queue."""
        names = self.queue_names() if queues is None else list(queues)
        return [self._status_of(name) for name in names]

    def unclaimed_count(self, queue: bytes) -> int:
        """Number of unclaimed events (``LLEN queue:{Q}``)."""
        q = self._queues.get(queue)
        return 0 if q is None else len(q.unclaimed)

    def first_with_unclaimed(self, queues: Iterable[bytes]) -> bytes | None:
        """The first of ``queues`` (in the given order) with an unclaimed event, or None."""
        for name in queues:
            if self.unclaimed_count(name):
                return name
        return None

    # -- consumers ----------------------------------------------------------------------------

    def register(self, consumer: str, queues: Iterable[bytes]) -> None:
        """Replace the queue set ``consumer`` counts for (QREGISTER); an empty set removes it."""
        new = frozenset(queues)
        old = self._registrations.pop(consumer, frozenset())
        for name in old - new:
            members = self._consumers.get(name)
            if members is not None:
                members.discard(consumer)
                if not members:
                    del self._consumers[name]
        for name in new:
            self._consumers.setdefault(name, set()).add(consumer)
        if new:
            self._registrations[consumer] = new

    def unregister(self, consumer: str) -> None:
        """Remove ``consumer`` from every queue (its connection closed)."""
        self.register(consumer, ())

    def registered_queues(self, consumer: str) -> frozenset[bytes]:
        """The queues ``consumer`` is registered for (empty if none)."""
        return self._registrations.get(consumer, frozenset())

    # -- inspection (tests and invariants) ----------------------------------------------------

    def unclaimed_ids(self, queue: bytes) -> list[bytes]:
        """Unclaimed ids, left to right."""
        q = self._queues.get(queue)
        return [] if q is None else list(q.unclaimed)

    def claimed_ids(self, queue: bytes) -> list[bytes]:
        """Claimed ids, newest claim first (left), oldest last."""
        q = self._queues.get(queue)
        return [] if q is None else list(q.claimed)

    def contents(self, queue: bytes, event_id: bytes) -> bytes | None:
        """Stored contents of an event, or None."""
        q = self._queues.get(queue)
        return None if q is None else q.items.get(event_id)

    # -- internals ----------------------------------------------------------------------------

    def _status_of(self, name: bytes) -> QueueStatus:
        q = self._queues.get(name)
        claimed = 0 if q is None else len(q.claimed)
        unclaimed = 0 if q is None else len(q.unclaimed)
        return QueueStatus(
            name=name,
            total=claimed + unclaimed,
            processing=claimed,
            consumers=len(self._consumers.get(name, ())),
        )

    @staticmethod
    def _lock_alive(locks: dict[bytes, float], event_id: bytes, now: float) -> bool:
        # Redis keeps a key until now > its expiry time.
        deadline = locks.get(event_id)
        return deadline is not None and now <= deadline

    def _drop_dead_locks(self, now: float) -> None:
        for name in list(self._locks):
            locks = self._locks[name]
            for event_id in [i for i, d in locks.items() if now > d]:
                del locks[event_id]
            if not locks:
                del self._locks[name]
