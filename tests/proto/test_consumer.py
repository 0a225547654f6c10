"""The consumer machine: its table, every (state, input) pair, and the wire it writes.

No sockets, no sleeps: replies are fed as bytes, time is a number.
"""

from __future__ import annotations

import contextlib
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from okq_proto import (
    NEED_DATA,
    NOTIFY_MARGIN_S,
    REPLY_TIMEOUT_S,
    AckSettled,
    ClientConnection,
    ConnectionClosed,
    Consumer,
    ConsumerInput,
    ConsumerState,
    ConsumerStopped,
    Delivered,
    Delivery,
    LateAck,
    LocalProtocolError,
    OkqError,
    QLPeek,
    RemoteProtocolError,
    ReplyError,
    encode_commands,
)
from okq_proto._consumer_state import MOVES, PEER_INPUTS, USER_INPUTS, next_state

S = ConsumerState
I = ConsumerInput  # noqa: E741 - short alias for the table tests

Q = "jobs"
OTHER = "other"
NIL = b"$-1\r\n"
OK = b"+OK\r\n"


def event_reply(event_id: bytes = b"e1", contents: bytes = b"hello") -> bytes:
    return b"*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(event_id), event_id, len(contents), contents)


def name_reply(name: bytes = b"jobs") -> bytes:
    return b"$%d\r\n%s\r\n" % (len(name), name)


def wire(*argvs: tuple[bytes, ...]) -> bytes:
    return encode_commands(list(argvs))


def feed(c: Consumer, data: bytes, now: float = 0.0) -> object:
    c.receive_data(data)
    return c.next_event(now)


def new_consumer(expire_s: int = 30, max_drain: int = 100) -> Consumer:
    return Consumer([Q, OTHER], expire_s=expire_s, notify_timeout_s=5, max_drain=max_drain)


def state_of(c: Consumer) -> ConsumerState:
    """The state, read through a call so mypy does not narrow it across calls."""
    return c.state


def make_consumer_in(state: ConsumerState, expire_s: int = 30) -> Consumer:
    """Drive a consumer into `state` through the public API only."""
    c = new_consumer(expire_s)
    c.data_to_send()
    if state is S.REGISTERING:
        return c
    if state is S.ERROR:
        with pytest.raises(ReplyError):
            feed(c, b"-ERR boom\r\n")
        return c
    assert feed(c, OK) is NEED_DATA
    if state is S.WAITING:
        return c
    if state is S.STOPPED:
        c.stop()
        return c
    assert feed(c, name_reply()) is NEED_DATA
    if state is S.POPPING:
        return c
    if state is S.STOP_POPPING:
        c.stop()
        return c
    delivered = feed(c, event_reply())
    assert isinstance(delivered, Delivered)
    if state is S.HANDLING:
        return c
    c.stop()
    if state is S.FINISHING:
        return c
    assert state is S.ACKING
    c.handled(delivered.delivery, True)
    return c


# Reply bytes that mean each peer input when the command at the head is the right one.
PEER_BYTES = {
    I.REGISTERED: OK,
    I.NOTIFIED: name_reply(),
    I.NOTIFY_TIMEOUT: NIL,
    I.POPPED: event_reply(b"e2"),
    I.EMPTY: NIL,
    I.ACK_REPLY: b":1\r\n",
    I.ERROR_REPLY: b"-ERR boom\r\n",
    I.BAD_REPLY: b":7\r\n",
}
# Which peer inputs the reply to the command at the head can be.
HEAD_INPUTS = {
    S.REGISTERING: {I.REGISTERED},
    S.WAITING: {I.NOTIFIED, I.NOTIFY_TIMEOUT},
    S.POPPING: {I.POPPED, I.EMPTY},
    S.STOP_POPPING: {I.POPPED, I.EMPTY},
    S.ACKING: {I.ACK_REPLY},
}
FAILURES = {I.ERROR_REPLY, I.BAD_REPLY, I.CONNECTION_LOST}


def apply_input(c: Consumer, inp: ConsumerInput) -> None:
    """Realise `inp` on the wire or through a call."""
    if inp is I.STOP:
        c.stop()
    elif inp in (I.ACK, I.SKIP):
        in_hand = c.next_deadline() is not None
        delivery = _in_hand(c) if in_hand else Delivery(Q, "x", b"", 1.0, 30)
        c.handled(delivery, inp is I.ACK)
    elif inp is I.CONNECTION_LOST:
        c.receive_eof()
        c.next_event(1.0)
    else:
        if c.state is not S.ERROR:
            c.receive_data(PEER_BYTES[inp])
        c.next_event(1.0)


def _in_hand(c: Consumer) -> Delivery:
    (delivery,) = c.unacked
    return delivery


def meaning(state: ConsumerState, inp: ConsumerInput) -> ConsumerInput:
    """What the bytes for `inp` mean as the reply to the command at the head in `state`."""
    if inp in FAILURES:
        return inp
    for candidate in HEAD_INPUTS[state]:
        if PEER_BYTES[candidate] == PEER_BYTES[inp]:
            return candidate
    return I.BAD_REPLY  # no reply okq sends to that command


def expected_after(state: ConsumerState, inp: ConsumerInput) -> ConsumerState:
    """The state the consumer must reach: the table, applied to what the bytes mean."""
    if state is S.ERROR:
        return S.ERROR
    if inp in PEER_INPUTS:
        if state is S.STOPPED:
            return S.STOPPED  # a stopped consumer reads nothing more
        if state in (S.HANDLING, S.FINISHING):
            return S.ERROR  # reading with a delivery in hand is a misuse
        return MOVES.get((state, meaning(state, inp)), S.ERROR)
    return MOVES.get((state, inp), S.ERROR)


# -- the table itself --------------------------------------------------------------------------


@pytest.mark.parametrize(("pair", "target"), sorted(MOVES.items(), key=str))
def test_legal_moves(pair: tuple[ConsumerState, ConsumerInput], target: ConsumerState) -> None:
    assert next_state(*pair) is target


@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize("inp", list(I))
def test_illegal_pairs_raise_by_side(state: ConsumerState, inp: ConsumerInput) -> None:
    if (state, inp) in MOVES:
        return
    error = RemoteProtocolError if inp in PEER_INPUTS else LocalProtocolError
    with pytest.raises(error, match=state.name):
        next_state(state, inp)


def test_inputs_are_split_into_peer_and_user() -> None:
    assert set(I) == PEER_INPUTS | USER_INPUTS
    assert not PEER_INPUTS & USER_INPUTS
    assert not any(state is S.ERROR for (state, _inp) in MOVES)
    assert not any(state is S.STOPPED and t is not S.STOPPED for (state, _), t in MOVES.items())


# -- every pair on a real consumer --------------------------------------------------------------


def check_pair(state: ConsumerState, inp: ConsumerInput) -> None:
    c = make_consumer_in(state)
    assert c.state is state
    expected = expected_after(state, inp)
    fails = expected is S.ERROR
    with pytest.raises(OkqError) if fails else contextlib.nullcontext():
        apply_input(c, inp)
    assert c.state is expected
    if fails:  # sticky: everything raises afterwards
        with pytest.raises(LocalProtocolError):
            c.next_event(2.0)
        with pytest.raises(LocalProtocolError):
            c.stop()


@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize("inp", list(I))
def test_every_pair_on_a_consumer(state: ConsumerState, inp: ConsumerInput) -> None:
    check_pair(state, inp)


@given(state=st.sampled_from(S), inp=st.sampled_from(I))
def test_every_pair_follows_the_table(state: ConsumerState, inp: ConsumerInput) -> None:
    check_pair(state, inp)


@given(inputs=st.lists(st.sampled_from(I), max_size=12))
def test_random_sequences_never_leave_the_table(inputs: list[ConsumerInput]) -> None:
    c = make_consumer_in(S.REGISTERING)
    for inp in inputs:
        before = c.state
        expected = expected_after(before, inp)
        try:
            apply_input(c, inp)
        except OkqError:
            assert c.state is S.ERROR
        assert c.state is expected
        c.data_to_send()


# -- the wire ------------------------------------------------------------------------------------


def test_registers_then_waits_with_the_notify_timeout() -> None:
    c = Consumer(["a", "b", "a"], notify_timeout_s=7)
    assert c.queues == ("a", "b")
    assert c.data_to_send() == wire((b"QREGISTER", b"a", b"b"))
    assert c.next_event(0.0) is NEED_DATA
    assert feed(c, OK) is NEED_DATA
    assert c.data_to_send() == wire((b"QNOTIFY", b"7"))
    assert c.allowed_silence_s() == 7.0
    assert feed(c, NIL) is NEED_DATA  # timeout: wait again
    assert c.data_to_send() == wire((b"QNOTIFY", b"7"))
    assert c.state is S.WAITING


def test_busy_queue_costs_one_round_trip_per_event() -> None:
    c = new_consumer(expire_s=10)
    c.data_to_send()
    feed(c, OK)
    c.data_to_send()
    feed(c, name_reply())
    assert c.data_to_send() == wire((b"QRPOP", b"jobs", b"EX", b"10"))
    assert c.pop_in_flight == Q
    got = feed(c, event_reply(b"e1", b"one"), now=100.0)
    assert got == Delivered(Delivery(Q, "e1", b"one", 110.0, 10))
    assert isinstance(got, Delivered)
    assert c.pop_in_flight is None
    assert c.next_deadline() == 110.0
    assert c.unacked == (got.delivery,)
    c.handled(got.delivery, True)
    # the ack and the next pop (same queue: drain) leave in one write
    assert c.data_to_send() == wire((b"QACK", b"jobs", b"e1"), (b"QRPOP", b"jobs", b"EX", b"10"))
    assert c.unacked == (got.delivery,)
    c.receive_data(b":1\r\n" + event_reply(b"e2", b"two"))
    assert c.next_event(101.0) == AckSettled(got.delivery)
    second = c.next_event(101.0)
    assert isinstance(second, Delivered)
    assert second.delivery.id == "e2"
    assert second.delivery.deadline == 111.0
    c.handled(second.delivery, True)
    assert c.data_to_send() == wire((b"QACK", b"jobs", b"e2"), (b"QRPOP", b"jobs", b"EX", b"10"))
    c.receive_data(b":0\r\n" + NIL)
    assert c.next_event(102.0) == LateAck(second.delivery)
    assert c.next_event(102.0) is NEED_DATA  # drained: back to waiting
    assert c.state is S.WAITING
    assert c.data_to_send() == wire((b"QNOTIFY", b"5"))


def test_failed_handler_sends_no_ack_but_still_drains() -> None:
    c = make_consumer_in(S.HANDLING)
    c.data_to_send()
    (delivery,) = c.unacked
    c.handled(delivery, False)
    assert c.data_to_send() == wire((b"QRPOP", b"jobs", b"EX", b"30"))
    assert c.unacked == ()
    assert c.state is S.POPPING


def test_at_most_once_pops_with_ex_0_and_never_acks() -> None:
    c = make_consumer_in(S.WAITING, expire_s=-1)
    c.data_to_send()
    feed(c, name_reply())
    assert c.data_to_send() == wire((b"QRPOP", b"jobs", b"EX", b"0"))
    got = feed(c, event_reply(), now=5.0)
    assert isinstance(got, Delivered)
    assert got.delivery.deadline == math.inf
    assert not got.delivery.needs_ack
    assert c.unacked == ()
    c.handled(got.delivery, True)
    assert c.data_to_send() == wire((b"QRPOP", b"jobs", b"EX", b"0"))


def test_drain_gives_the_next_queue_a_turn() -> None:
    c = new_consumer(max_drain=2)
    c.data_to_send()
    feed(c, OK)
    feed(c, name_reply())
    c.data_to_send()
    d1 = feed(c, event_reply(b"1"))
    assert isinstance(d1, Delivered)
    c.handled(d1.delivery, True)
    assert c.data_to_send().endswith(wire((b"QRPOP", b"jobs", b"EX", b"30")))
    c.receive_data(b":1\r\n")
    c.next_event(0.0)
    d2 = feed(c, event_reply(b"2"))
    assert isinstance(d2, Delivered)
    c.handled(d2.delivery, False)
    assert c.data_to_send() == wire((b"QRPOP", b"other", b"EX", b"30"))
    d3 = feed(c, event_reply(b"3"))
    assert isinstance(d3, Delivered)
    assert d3.delivery.queue == OTHER


def test_notify_for_an_unregistered_queue_is_a_protocol_error() -> None:
    c = make_consumer_in(S.WAITING)
    with pytest.raises(RemoteProtocolError, match="not registered"):
        feed(c, name_reply(b"nope"))
    assert c.state is S.ERROR


# -- stop ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [S.REGISTERING, S.WAITING])
def test_stop_abandons_a_wait_at_once(state: ConsumerState) -> None:
    c = make_consumer_in(state)
    c.data_to_send()
    c.stop()
    assert c.state is S.STOPPED
    assert c.data_to_send() == b""
    assert c.next_event(0.0) == ConsumerStopped()
    assert c.unacked == ()


def test_stop_while_handling_sends_the_final_ack_then_stops() -> None:
    c = make_consumer_in(S.HANDLING)
    c.data_to_send()
    (delivery,) = c.unacked
    c.stop()
    c.stop()  # idempotent
    assert c.state is S.FINISHING
    c.handled(delivery, True)
    assert c.data_to_send() == wire((b"QACK", b"jobs", b"e1"))
    assert state_of(c) is S.ACKING
    assert feed(c, b":1\r\n") == AckSettled(delivery)
    assert c.next_event(0.0) == ConsumerStopped()


def test_stop_while_handling_a_failure_stops_at_once() -> None:
    c = make_consumer_in(S.FINISHING)
    c.data_to_send()
    (delivery,) = c.unacked
    c.handled(delivery, False)
    assert c.state is S.STOPPED
    assert c.data_to_send() == b""


def test_stop_with_a_pop_in_flight_still_hands_out_what_it_claimed() -> None:
    c = make_consumer_in(S.HANDLING)
    (first,) = c.unacked
    c.handled(first, True)
    c.data_to_send()
    c.stop()
    assert c.state is S.STOP_POPPING
    c.receive_data(b":1\r\n" + event_reply(b"e2"))
    assert c.next_event(0.0) == AckSettled(first)
    got = c.next_event(0.0)
    assert isinstance(got, Delivered)
    assert state_of(c) is S.FINISHING
    c.handled(got.delivery, True)
    assert c.data_to_send() == wire((b"QACK", b"jobs", b"e2"))  # no further pop
    assert feed(c, b":1\r\n") == AckSettled(got.delivery)
    assert c.next_event(0.0) == ConsumerStopped()


def test_stop_with_an_empty_pop_in_flight() -> None:
    c = make_consumer_in(S.STOP_POPPING)
    assert feed(c, NIL) == ConsumerStopped()
    assert c.state is S.STOPPED


# -- failures ------------------------------------------------------------------------------------


def test_connection_lost_reports_the_unacked_and_the_lost_pop() -> None:
    c = make_consumer_in(S.HANDLING)
    (delivery,) = c.unacked
    c.handled(delivery, True)
    c.data_to_send()
    c.receive_eof()
    with pytest.raises(ConnectionClosed):
        c.next_event(0.0)
    assert c.state is S.ERROR
    assert c.unacked == (delivery,)
    assert c.pop_in_flight == Q


def test_error_reply_is_raised_and_sticky() -> None:
    c = make_consumer_in(S.POPPING)
    with pytest.raises(ReplyError, match="boom"):
        feed(c, b"-ERR boom\r\n")
    with pytest.raises(LocalProtocolError, match="boom"):
        c.next_event(0.0)
    with pytest.raises(LocalProtocolError):
        c.handled(Delivery(Q, "x", b""), True)


def test_reading_with_a_delivery_in_hand_is_a_misuse() -> None:
    c = make_consumer_in(S.HANDLING)
    with pytest.raises(LocalProtocolError, match="HANDLING"):
        c.next_event(0.0)
    assert c.state is S.ERROR
    assert len(c.unacked) == 1


def test_reporting_another_delivery_is_a_misuse() -> None:
    c = make_consumer_in(S.HANDLING)
    with pytest.raises(LocalProtocolError, match="not the delivery in hand"):
        c.handled(Delivery(Q, "e1", b"hello", 30.0, 30), True)  # equal, but not the one
    assert c.state is S.ERROR


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"queues": []}, "at least one queue"),
        ({"queues": "jobs"}, "list of names"),
        ({"queues": [Q], "expire_s": -2}, "expire_s"),
        ({"queues": [Q], "notify_timeout_s": -1}, "timeout_s"),
        ({"queues": [Q], "max_drain": 0}, "max_drain"),
        ({"queues": [3]}, "str or bytes"),
    ],
)
def test_bad_arguments_queue_nothing(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        Consumer(**kwargs)  # type: ignore[arg-type]


def test_connection_must_be_idle() -> None:
    conn = ClientConnection()
    conn.send(QLPeek(b"q"))
    with pytest.raises(LocalProtocolError, match="nothing in flight"):
        Consumer([Q], connection=conn)
    conn2 = ClientConnection()
    c = Consumer([b"raw\xff"], connection=conn2)
    assert c.connection is conn2
    assert c.queues == ("raw\udcff",)


def test_successful_acks_can_go_unreported_but_late_acks_never_do() -> None:
    c = Consumer([Q], report_acks=False)
    c.data_to_send()
    feed(c, OK)
    feed(c, name_reply())
    first = feed(c, event_reply(b"e1"))
    assert isinstance(first, Delivered)
    c.handled(first.delivery, True)
    c.receive_data(b":1\r\n" + event_reply(b"e2"))
    second = c.next_event(0.0)  # the ack's reply went by silently
    assert isinstance(second, Delivered)
    c.handled(second.delivery, True)
    c.receive_data(b":0\r\n" + NIL)
    assert c.next_event(0.0) == LateAck(second.delivery)
    c.stop()
    assert c.next_event(0.0) == ConsumerStopped()


def test_allowed_silence_is_the_notify_wait_only_while_waiting() -> None:
    c = make_consumer_in(S.POPPING)
    assert c.allowed_silence_s() == 0.0
    c = make_consumer_in(S.WAITING)
    assert c.allowed_silence_s() == 5.0
    c.stop()
    assert c.allowed_silence_s() == 0.0


def test_reply_budget_never_leaves_a_read_without_a_deadline() -> None:
    c = make_consumer_in(S.POPPING)
    assert c.reply_budget_s(2.0) == 2.0
    assert c.reply_budget_s(None) == REPLY_TIMEOUT_S  # no read timeout of the transport's
    c = make_consumer_in(S.WAITING)  # QNOTIFY 5: its wait, the margin, the read timeout
    assert c.reply_budget_s(2.0) == 5.0 + NOTIFY_MARGIN_S + 2.0
    assert c.reply_budget_s(None) == 5.0 + NOTIFY_MARGIN_S


def _ack_reply_after(
    finished: float | None, reply: bytes, read_at: float = 200.0
) -> tuple[object, Delivery]:
    """Pop one event at t=100 (claim 10 s: deadline 110), report it handled (finished at
    `finished`, or with no time), feed the QACK's `reply`, return what the machine says."""
    c = Consumer([Q], expire_s=10, notify_timeout_s=5)
    c.data_to_send()
    feed(c, OK)
    feed(c, name_reply())
    got = feed(c, event_reply(b"e2"), now=100.0)
    assert isinstance(got, Delivered)
    assert got.delivery.deadline == 110.0
    c.data_to_send()
    c.stop()
    c.handled(got.delivery, True, now=finished)
    assert c.data_to_send() == wire((b"QACK", b"jobs", b"e2"))
    c.receive_data(reply)
    return c.next_event(read_at), got.delivery


@pytest.mark.parametrize("reply", [b":1\r\n", b":0\r\n"])
def test_a_handler_finishing_after_its_deadline_is_a_late_ack_whatever_the_reply(
    reply: bytes,
) -> None:
    event, delivery = _ack_reply_after(110.5, reply)
    assert event == LateAck(delivery, removed=reply == b":1\r\n")
    event, delivery = _ack_reply_after(110.0, reply)  # at the deadline
    assert isinstance(event, LateAck)


def test_a_handler_finishing_in_time_is_acked_even_if_the_reply_is_read_later() -> None:
    event, delivery = _ack_reply_after(109.0, b":1\r\n", read_at=500.0)
    assert event == AckSettled(delivery)
    event, delivery = _ack_reply_after(109.0, b":0\r\n")
    assert event == LateAck(delivery, removed=False)


def test_without_a_finish_time_the_reply_time_decides() -> None:
    event, delivery = _ack_reply_after(None, b":1\r\n", read_at=105.0)
    assert event == AckSettled(delivery)
    event, delivery = _ack_reply_after(None, b":1\r\n", read_at=111.0)
    assert event == LateAck(delivery, removed=True)


def test_late_acks_are_reported_even_when_acks_are_not() -> None:
    c = Consumer([Q], expire_s=1, report_acks=False)
    c.data_to_send()
    feed(c, OK)
    feed(c, name_reply())
    first = feed(c, event_reply(b"e1"), now=0.0)
    assert isinstance(first, Delivered)
    c.handled(first.delivery, True, now=5.0)  # 4 s past its 1 s claim
    c.receive_data(b":1\r\n" + NIL)
    assert c.next_event(5.0) == LateAck(first.delivery, removed=True)
