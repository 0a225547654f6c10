"""Tests for okq_proto._engine: okq's queue semantics, the restore sweep, and invariants."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from okq_proto._engine import (
    MAX_LOCK_EXPIRE_S,
    ExpiryTooLargeError,
    QueueEngine,
    QueueStatus,
)


def make(now: float = 0.0, **kw: object) -> QueueEngine:
    return QueueEngine(now=now, **kw)  # type: ignore[arg-type]


def test_push_left_and_right_order() -> None:
    e = make()
    assert e.push(b"q", b"a", b"1")
    assert e.push(b"q", b"b", b"2")
    assert e.push(b"q", b"c", b"3", right=True)
    assert e.unclaimed_ids(b"q") == [b"b", b"a", b"c"]
    assert e.peek(b"q", left=True) == (b"b", b"2")
    assert e.peek(b"q", left=False) == (b"c", b"3")


def test_duplicate_ids_per_queue_until_acked() -> None:
    e = make()
    assert e.push(b"q", b"a", b"1")
    assert not e.push(b"q", b"a", b"other")
    assert e.contents(b"q", b"a") == b"1"
    assert e.push(b"q2", b"a", b"x")
    assert e.pop(b"q", None, 0.0) == (b"a", b"1")
    assert not e.push(b"q", b"a", b"while claimed")
    assert e.ack(b"q", b"a") == 1
    assert e.push(b"q", b"a", b"again")


def test_pop_claims_and_status_counts() -> None:
    e = make()
    e.push(b"q", b"a", b"1")
    e.push(b"q", b"b", b"2")
    assert e.pop(b"q", None, 0.0) == (b"a", b"1")
    assert e.peek(b"q", left=False) == (b"b", b"2")
    assert e.status([b"q", b"nope", b"q"]) == [
        QueueStatus(name=b"q", total=2, processing=1, consumers=0),
        QueueStatus(name=b"nope", total=0, processing=0, consumers=0),
        QueueStatus(name=b"q", total=2, processing=1, consumers=0),
    ]
    assert e.pop(b"q", None, 0.0) == (b"b", b"2")
    assert e.pop(b"q", None, 0.0) is None
    assert e.peek(b"q", left=True) is None
    assert e.claimed_ids(b"q") == [b"b", b"a"]  # newest claim left


def test_pop_ex0_acks() -> None:
    e = make()
    e.push(b"q", b"a", b"1")
    assert e.pop(b"q", 0, 0.0) == (b"a", b"1")
    assert e.status() == []
    assert e.ack(b"q", b"a") == 0


def test_pop_negative_expiry_rejected() -> None:
    e = make()
    e.push(b"q", b"a", b"1")
    with pytest.raises(ValueError, match="expire_s"):
        e.pop(b"q", -1, 0.0)


def test_ack_claimed_then_unclaimed() -> None:
    e = make()
    e.push(b"q", b"a", b"1")
    e.push(b"q", b"b", b"2")
    assert e.ack(b"q", b"b") == 1  # never popped: okq deletes it anyway
    assert e.ack(b"q", b"b") == 0
    assert e.ack(b"nope", b"a") == 0
    e.pop(b"q", 5, 0.0)
    assert e.ack(b"q", b"a") == 1
    assert e.queue_names() == []


def test_flush_keeps_consumers_and_allows_reuse() -> None:
    e = make()
    e.register("c1", [b"q"])
    e.push(b"q", b"a", b"1")
    e.pop(b"q", None, 0.0)
    e.flush(b"q")
    assert e.status([b"q"]) == [QueueStatus(name=b"q", total=0, processing=0, consumers=1)]
    assert e.ack(b"q", b"a") == 0
    assert e.push(b"q", b"a", b"new")


def test_listing_sorted_and_includes_colon_and_empty_names() -> None:
    e = make()
    for name in [b"b", b"a2", b"_x", b"B", b"a", b"ab:cd", b""]:
        e.push(name, b"id", b"c")
    e.register("c", [b"reg"])
    assert e.queue_names() == [b"", b"B", b"_x", b"a", b"a2", b"ab:cd", b"b", b"reg"]


def test_register_overwrite_empty_and_unregister() -> None:
    e = make()
    e.register("c1", [b"a", b"b", b"a"])
    e.register("c2", [b"a"])
    assert [s.consumers for s in e.status([b"a", b"b"])] == [2, 1]
    e.register("c1", [b"b"])
    assert [s.consumers for s in e.status([b"a", b"b"])] == [1, 1]
    assert e.registered_queues("c1") == frozenset({b"b"})
    e.register("c1", [])
    e.unregister("c2")
    assert e.queue_names() == []
    assert e.registered_queues("c1") == frozenset()


def test_first_with_unclaimed_follows_given_order() -> None:
    e = make()
    e.push(b"x", b"1", b"")
    e.push(b"y", b"1", b"")
    assert e.first_with_unclaimed([b"none", b"y", b"x"]) == b"y"
    e.pop(b"y", None, 0.0)
    assert e.first_with_unclaimed([b"y", b"x"]) == b"x"
    assert e.first_with_unclaimed([]) is None


def test_sweep_schedule_counts_from_origin() -> None:
    e = make(now=100.0, sweep_interval_s=10.0)
    assert e.next_deadline() == 110.0
    assert e.handle_timeout(109.9) == 0
    assert e.next_deadline() == 110.0
    e.handle_timeout(110.0)
    assert e.next_deadline() == 120.0
    e.handle_timeout(145.0)  # missed ticks are not caught up
    assert e.next_deadline() == 150.0
    e.restart_sweep_clock(200.0)
    assert e.next_deadline() == 210.0


def test_redelivery_window_matches_okq() -> None:
    # Transcript redelivery_after_expiry: EX 1 pop, back (at the right end) within 12.5 s.
    e = make(now=0.0)
    e.push(b"q", b"e1", b"c1")
    e.push(b"q", b"e2", b"c2")
    assert e.pop(b"q", 1, 3.0) == (b"e1", b"c1")
    e.push(b"q", b"e3", b"c3")
    assert e.handle_timeout(4.0) == 0  # not due
    assert e.handle_timeout(10.0) == 1
    assert e.unclaimed_ids(b"q") == [b"e3", b"e2", b"e1"]


def test_not_redelivered_before_expiry() -> None:
    # Transcript qrpop_ex_n_not_redelivered_early: EX 5 popped 1 s before a sweep.
    e = make(now=0.0)
    e.push(b"q", b"e1", b"c1")
    e.pop(b"q", 5, 9.0)
    assert e.handle_timeout(10.0) == 0
    assert e.status([b"q"])[0].processing == 1
    assert e.handle_timeout(14.0) == 0  # exactly at expiry the lock still exists (Redis)
    assert e.sweep(14.0) == 0
    assert e.handle_timeout(20.0) == 1


def test_sweep_moves_oldest_fifty_oldest_rightmost() -> None:
    e = make(now=0.0)
    for i in range(60):
        e.push(b"q", b"%02d" % i, b"")
    for _ in range(60):
        e.pop(b"q", 1, 0.0)
    assert e.sweep(5.0) == 50
    # Oldest claims were 00..49; 00 is right-most.
    assert e.unclaimed_ids(b"q") == [b"%02d" % i for i in reversed(range(50))]
    assert e.claimed_ids(b"q") == [b"%02d" % i for i in reversed(range(50, 60))]
    assert e.sweep(5.0) == 10


def test_sweep_batch_configurable_and_unexpired_block_nothing() -> None:
    e = make(now=0.0, sweep_batch=2)
    for i in range(3):
        e.push(b"q", b"%d" % i, b"")
    e.pop(b"q", 1, 0.0)  # 0 expires at 1
    e.pop(b"q", 100, 0.0)  # 1 long claim
    e.pop(b"q", 1, 0.0)  # 2 expires at 1, but outside the 2 oldest
    assert e.sweep(2.0) == 1
    assert e.claimed_ids(b"q") == [b"2", b"1"]


def test_colon_and_empty_names_are_swept() -> None:  # defect D3 not copied
    e = make(now=0.0)
    for name in (b"a:b", b""):
        e.push(name, b"id", b"c")
        e.pop(name, 1, 0.0)
    assert e.sweep(3.0) == 2


def test_lock_survives_flush_and_is_kept_by_new_claim() -> None:
    e = make(now=0.0)
    e.push(b"q", b"a", b"1")
    e.pop(b"q", 100, 0.0)  # lock until 100
    e.flush(b"q")
    e.push(b"q", b"a", b"2")
    e.pop(b"q", 1, 10.0)  # SET NX: the old lock (100) stays
    assert e.sweep(50.0) == 0
    assert e.sweep(101.0) == 1


def test_huge_expiry_claims_without_lock() -> None:
    e = make(now=0.0)
    e.push(b"q", b"a", b"1")
    e.pop(b"q", MAX_LOCK_EXPIRE_S, 0.0)
    e.ack(b"q", b"a")
    e.push(b"q", b"a", b"1")
    with pytest.raises(ExpiryTooLargeError):
        e.pop(b"q", MAX_LOCK_EXPIRE_S + 1, 0.0)
    assert e.status([b"q"])[0].processing == 1
    assert e.sweep(0.0) == 1  # no lock: the very next sweep puts it back


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="sweep_interval_s"):
        make(sweep_interval_s=0)
    with pytest.raises(ValueError, match="sweep_batch"):
        make(sweep_batch=0)
    with pytest.raises(ValueError, match="default_expire_s"):
        make(default_expire_s=0)
    assert make(sweep_interval_s=2.5).sweep_interval_s == 2.5


def test_default_expiry_configurable() -> None:
    e = make(now=0.0, default_expire_s=2)
    e.push(b"q", b"a", b"1")
    e.pop(b"q", None, 0.0)
    assert e.sweep(2.0) == 0
    assert e.sweep(2.5) == 1


# -- stateful model ------------------------------------------------------------------------------

QUEUES = st.sampled_from([b"q1", b"q2", b"a:b", b""])
IDS = st.sampled_from([b"e%d" % i for i in range(6)])


class EngineModel(RuleBasedStateMachine):
    """Random okq operations; every pushed event must stay accounted for exactly once."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.engine = QueueEngine(now=0.0, sweep_interval_s=10.0, sweep_batch=3)
        self.pushed: dict[tuple[bytes, bytes], int] = {}  # times pushed
        self.gone: dict[tuple[bytes, bytes], int] = {}  # times acked/flushed/auto-acked
        self.contents: dict[tuple[bytes, bytes], bytes] = {}
        self.consumers: dict[str, set[bytes]] = {}

    def _live(self, queue: bytes) -> set[bytes]:
        return set(self.engine.unclaimed_ids(queue)) | set(self.engine.claimed_ids(queue))

    @rule(queue=QUEUES, event_id=IDS, contents=st.binary(max_size=4), right=st.booleans())
    def push(self, queue: bytes, event_id: bytes, contents: bytes, right: bool) -> None:
        existed = event_id in self._live(queue)
        stored = self.engine.push(queue, event_id, contents, right=right)
        assert stored is not existed
        if stored:
            key = (queue, event_id)
            self.pushed[key] = self.pushed.get(key, 0) + 1
            self.contents[key] = contents

    @rule(queue=QUEUES, expire=st.sampled_from([None, 0, 1, 5, 30]))
    def pop(self, queue: bytes, expire: int | None) -> None:
        before = self.engine.peek(queue, left=False)
        got = self.engine.pop(queue, expire, self.now)
        assert got == before
        if got is not None:
            assert self.contents[(queue, got[0])] == got[1]
            if expire == 0:
                self.gone[(queue, got[0])] = self.gone.get((queue, got[0]), 0) + 1

    @rule(queue=QUEUES, event_id=IDS)
    def ack(self, queue: bytes, event_id: bytes) -> None:
        live = event_id in self._live(queue)
        assert self.engine.ack(queue, event_id) == int(live)
        if live:
            self.gone[(queue, event_id)] = self.gone.get((queue, event_id), 0) + 1

    @rule(queue=QUEUES)
    def flush(self, queue: bytes) -> None:
        for event_id in self._live(queue):
            self.gone[(queue, event_id)] = self.gone.get((queue, event_id), 0) + 1
        self.engine.flush(queue)

    @rule(consumer=st.sampled_from(["c1", "c2"]), queues=st.lists(QUEUES, max_size=3))
    def register(self, consumer: str, queues: list[bytes]) -> None:
        self.engine.register(consumer, queues)
        self.consumers[consumer] = set(queues)

    @rule(dt=st.sampled_from([0.5, 3.0, 11.0]))
    def advance(self, dt: float) -> None:
        self.now += dt
        self.engine.handle_timeout(self.now)

    @precondition(lambda self: self.now > 0)
    @rule()
    def sweep_now(self) -> None:
        self.engine.sweep(self.now)

    @invariant()
    def every_event_accounted_once(self) -> None:
        for key, times in self.pushed.items():
            queue, event_id = key
            unclaimed = self.engine.unclaimed_ids(queue).count(event_id)
            claimed = self.engine.claimed_ids(queue).count(event_id)
            assert unclaimed + claimed <= 1
            assert unclaimed + claimed + self.gone.get(key, 0) == times

    @invariant()
    def nothing_unknown(self) -> None:
        for name in self.engine.queue_names():
            for event_id in self.engine.unclaimed_ids(name) + self.engine.claimed_ids(name):
                assert (name, event_id) in self.pushed
                assert self.engine.contents(name, event_id) == self.contents[(name, event_id)]

    @invariant()
    def status_matches(self) -> None:
        names = [b"q1", b"q2", b"a:b", b""]
        for s in self.engine.status(names):
            claimed = len(self.engine.claimed_ids(s.name))
            assert s.processing == claimed
            assert s.total == claimed + len(self.engine.unclaimed_ids(s.name))
            assert s.consumers == sum(s.name in qs for qs in self.consumers.values())
        listed = {s.name for s in self.engine.status()}
        expected = {n for n in names if s_total(self.engine, n)}
        expected |= {q for qs in self.consumers.values() for q in qs}
        assert listed == expected
        assert self.engine.queue_names() == sorted(listed)


def s_total(engine: QueueEngine, name: bytes) -> int:
    return len(engine.unclaimed_ids(name)) + len(engine.claimed_ids(name))


TestEngineModel = EngineModel.TestCase
TestEngineModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
