"""Static checks of okq_proto's types: mypy verifies every ``assert_type`` here (never run).

The result type of each command follows from the command class, so a transport's
``call(command)`` can be typed ``Command[T] -> T``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import okq_proto as okq

if TYPE_CHECKING:
    from typing_extensions import assert_type


def check_command_results(reply: okq.Reply) -> None:
    assert_type(okq.QLPush(b"q", b"i", b"c").read_reply(reply), None)
    assert_type(okq.QRPush(b"q", b"i", b"c").read_reply(reply), None)
    assert_type(okq.QLPeek(b"q").read_reply(reply), okq.Event | None)
    assert_type(okq.QRPeek(b"q").read_reply(reply), okq.Event | None)
    assert_type(okq.QRPop(b"q", 30).read_reply(reply), okq.Event | None)
    assert_type(okq.QAck(b"q", b"i").read_reply(reply), int)
    assert_type(okq.QRegister((b"q",)).read_reply(reply), None)
    assert_type(okq.QNotify(1).read_reply(reply), str | None)
    assert_type(okq.QFlush(b"q").read_reply(reply), None)
    assert_type(okq.QStatus().read_reply(reply), list[okq.QueueStatus])
    assert_type(okq.QInfo().read_reply(reply), list[str])
    assert_type(okq.Ping().read_reply(reply), None)


def check_machine(conn: okq.ClientConnection) -> None:
    event = conn.next_event()
    if event is not okq.NEED_DATA and event is not okq.CLOSED:
        assert_type(event, okq.CommandReplied)
        assert_type(event.error, okq.ReplyError | None)
    assert_type(conn.data_to_send(), bytes)
    assert_type(conn.allowed_silence_s(), float)


def check_decoder(decoder: okq.Decoder) -> None:
    reply = decoder.next_reply()
    if reply is not okq.NEED_DATA:
        assert_type(reply, okq.Reply)


def check_errors(exc: okq.DuplicateEventError, outcome: okq.PushOutcome) -> None:
    assert_type(exc.event_id, str)
    assert_type(exc.reply, okq.ErrorReply)
    assert_type(okq.is_dup(exc), bool)
    assert_type(outcome.unwrap(), str)
