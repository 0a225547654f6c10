"""The consumer's states, its inputs and its transition table: data, nothing else.

Theory of operation
-------------------
A consumer is one okq connection that registers for some queues and then loops: wait for
work (``QNOTIFY t``), claim an event (``QRPOP q EX n``), hand it to the application, and
acknowledge it (``QACK q id``) when the application reports success.  Each state says what is
in flight on the connection:

REGISTERING   ``QREGISTER q...`` in flight.  Nothing popped yet.
WAITING       ``QNOTIFY t`` in flight.  Nothing popped; a stop may abandon the wait at once.
POPPING       ``QRPOP q EX n`` in flight, possibly behind the ``QACK`` of the previous event
              (the two leave in one write: one round trip per event on a busy queue).
HANDLING      a delivery is with the application; nothing in flight.
STOP_POPPING  as POPPING, but a stop was asked: an event the pop returns has been claimed
              already, so it is still handed out (dropping it would delay it by the whole
              claim, or lose it for at-most-once pops), and no further pop follows.
FINISHING     as HANDLING, but a stop was asked: the verdict sends the final ``QACK`` only.
ACKING        the final ``QACK`` in flight; its reply ends the consumer.
STOPPED       done.  The connection may still owe the reply of an abandoned ``QNOTIFY`` or
              ``QREGISTER``: close it, never reuse it.
ERROR         something failed (an error reply, the connection lost, a protocol violation, a
              misuse).  Every later call raises.  What was popped and not acked is reported by
              the consumer (``Consumer.unacked``); the server hands it out again once its
              claim expires.

Peer inputs come from replies, user inputs from method calls.  A pair missing from `MOVES` is
a protocol error: `RemoteProtocolError` for a peer input, `LocalProtocolError` for a user
input, and the consumer is in ERROR before the exception leaves it.  The three failure inputs
lead to ERROR explicitly from every state where a command can be in flight: they are legal
news, not protocol errors, and raise the error that carries them.

This module knows no roles and no I/O; `okq_proto._consumer` applies the table.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError

__all__ = ["MOVES", "PEER_INPUTS", "USER_INPUTS", "ConsumerInput", "ConsumerState", "next_state"]


class ConsumerState(enum.Enum):
    """Where a `Consumer` is; see the module docstring for what each state has in flight."""

    REGISTERING = enum.auto()  # QREGISTER in flight
    WAITING = enum.auto()  # QNOTIFY in flight
    POPPING = enum.auto()  # [QACK +] QRPOP in flight
    HANDLING = enum.auto()  # delivery with the application, nothing in flight
    STOP_POPPING = enum.auto()  # [QACK +] QRPOP in flight, stop asked
    FINISHING = enum.auto()  # delivery with the application, stop asked
    ACKING = enum.auto()  # final QACK in flight
    STOPPED = enum.auto()  # done; close the connection
    ERROR = enum.auto()  # failed; every call raises


class ConsumerInput(enum.Enum):
    """What can happen to a consumer: a reply (peer) or a method call (user)."""

    # peer: replies
    REGISTERED = enum.auto()  # QREGISTER -> +OK
    NOTIFIED = enum.auto()  # QNOTIFY -> a queue name
    NOTIFY_TIMEOUT = enum.auto()  # QNOTIFY -> nil
    POPPED = enum.auto()  # QRPOP -> an event
    EMPTY = enum.auto()  # QRPOP -> nil (another consumer was faster)
    ACK_REPLY = enum.auto()  # QACK -> 1 or 0
    # peer: failures
    ERROR_REPLY = enum.auto()  # -ERR to any command
    CONNECTION_LOST = enum.auto()  # EOF with replies owed
    BAD_REPLY = enum.auto()  # bytes or a reply okq never sends
    # user: method calls
    ACK = enum.auto()  # the handler succeeded and the event needs a QACK
    SKIP = enum.auto()  # the handler failed, or nothing to ack (at-most-once)
    STOP = enum.auto()  # stop gracefully


PEER_INPUTS: Final = frozenset(
    {
        ConsumerInput.REGISTERED,
        ConsumerInput.NOTIFIED,
        ConsumerInput.NOTIFY_TIMEOUT,
        ConsumerInput.POPPED,
        ConsumerInput.EMPTY,
        ConsumerInput.ACK_REPLY,
        ConsumerInput.ERROR_REPLY,
        ConsumerInput.CONNECTION_LOST,
        ConsumerInput.BAD_REPLY,
    }
)
USER_INPUTS: Final = frozenset(ConsumerInput) - PEER_INPUTS

_S = ConsumerState
_I = ConsumerInput

# Every legal move of the consumer.  A pair that is absent is a protocol error.
_LEGAL: dict[tuple[ConsumerState, ConsumerInput], ConsumerState] = {
    (_S.REGISTERING, _I.REGISTERED): _S.WAITING,  # send QNOTIFY
    (_S.REGISTERING, _I.STOP): _S.STOPPED,  # nothing popped: abandon
    (_S.WAITING, _I.NOTIFIED): _S.POPPING,  # send QRPOP <name>
    (_S.WAITING, _I.NOTIFY_TIMEOUT): _S.WAITING,  # send QNOTIFY again
    (_S.WAITING, _I.STOP): _S.STOPPED,  # nothing popped: abandon the wait
    (_S.POPPING, _I.ACK_REPLY): _S.POPPING,  # the pipelined QACK of the previous event
    (_S.POPPING, _I.POPPED): _S.HANDLING,  # hand it out
    (_S.POPPING, _I.EMPTY): _S.WAITING,  # drained (or lost the race): send QNOTIFY
    (_S.POPPING, _I.STOP): _S.STOP_POPPING,
    (_S.HANDLING, _I.ACK): _S.POPPING,  # send QACK + QRPOP (same queue: drain) in one write
    (_S.HANDLING, _I.SKIP): _S.POPPING,  # send QRPOP; the claim lapses, the server redelivers
    (_S.HANDLING, _I.STOP): _S.FINISHING,
    (_S.STOP_POPPING, _I.ACK_REPLY): _S.STOP_POPPING,
    (_S.STOP_POPPING, _I.POPPED): _S.FINISHING,  # claimed already: still hand it out
    (_S.STOP_POPPING, _I.EMPTY): _S.STOPPED,
    (_S.STOP_POPPING, _I.STOP): _S.STOP_POPPING,
    (_S.FINISHING, _I.ACK): _S.ACKING,  # send the final QACK
    (_S.FINISHING, _I.SKIP): _S.STOPPED,
    (_S.FINISHING, _I.STOP): _S.FINISHING,
    (_S.ACKING, _I.ACK_REPLY): _S.STOPPED,
    (_S.ACKING, _I.STOP): _S.ACKING,
    (_S.STOPPED, _I.STOP): _S.STOPPED,
}
# Failures are legal news wherever a command can be in flight.
for _state in (_S.REGISTERING, _S.WAITING, _S.POPPING, _S.STOP_POPPING, _S.ACKING):
    for _input in (_I.ERROR_REPLY, _I.CONNECTION_LOST, _I.BAD_REPLY):
        _LEGAL[_state, _input] = _S.ERROR

MOVES: Final[Mapping[tuple[ConsumerState, ConsumerInput], ConsumerState]] = _LEGAL


# The same table keyed by one int: hashing two enum members (a Python-level __hash__) costs
# more than the rest of a move on the consumer's hot path.
_STRIDE: Final = 64
_FAST: Final[Mapping[int, ConsumerState]] = {
    state._value_ * _STRIDE + event._value_: target for (state, event), target in MOVES.items()
}


def next_state(state: ConsumerState, event: ConsumerInput) -> ConsumerState:
    """The state after `event` in `state`, or raise if the pair is not in `MOVES`.

    Raises:
        RemoteProtocolError: a peer input that is illegal in `state`.
        LocalProtocolError: a user input that is illegal in `state`.
    """
    target = _FAST.get(state._value_ * _STRIDE + event._value_)
    if target is None:
        error: ProtocolError
        if event in PEER_INPUTS:
            error = RemoteProtocolError(f"unexpected {event.name} while {state.name}")
        else:
            error = LocalProtocolError(f"cannot {event.name} while {state.name}")
        raise error
    return target
