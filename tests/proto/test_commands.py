"""Every okq command: its wire arguments, every reply shape, every error string."""

from __future__ import annotations

from typing import Any

import pytest

import okq_proto as okq
from okq_proto import (
    DuplicateEventError,
    ErrorReply,
    Event,
    LocalProtocolError,
    PushFlag,
    QueueStatus,
    RemoteProtocolError,
    ReplyError,
    TooBusyError,
)

# Every error string of okq-protocol.md section 5, as the server sends it.
EVERY_ERROR = [
    b'ERR unknown command "foo"',
    b"ERR missing args",
    b"ERR invalid command",
    b"ERR duplicate event e1",
    b"ERR too busy to process NOBLOCK event",
    b'ERR bad expires value: strconv.Atoi: parsing "x": invalid syntax',
    b'ERR bad expires value: strconv.Atoi: parsing "99999999999999999999": value out of range',
    b"ERR bad expires value: -5 < 0",
    b'ERR bad timeout value: strconv.Atoi: parsing "x": invalid syntax',
    b'ERR bad timeout value: strconv.Atoi: parsing "99999999999999999999": value out of range',
    b"ERR bad timeout value: -1 < 0",
    b"ERR unexpected server-side error",
]


def _r(*values: Any) -> list[okq.Reply]:
    """Reply values for a loop (typed as Reply so hostile shapes can be listed)."""
    return list(values)


ALL_COMMANDS: list[okq.Command[object]] = [
    okq.QLPush(b"q", b"id", b"c"),
    okq.QRPush(b"q", b"id", b"c", no_block=True),
    okq.QLPeek(b"q"),
    okq.QRPeek(b"q"),
    okq.QRPop(b"q", 5),
    okq.QAck(b"q", b"id"),
    okq.QRegister((b"a", b"b")),
    okq.QNotify(3),
    okq.QFlush(b"q"),
    okq.QStatus((b"q",)),
    okq.QInfo(),
    okq.Ping(),
]


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        (okq.QLPush(b"q", b"i", b"c"), [b"QLPUSH", b"q", b"i", b"c"]),
        (okq.QLPush(b"q", b"i", b"c", True), [b"QLPUSH", b"q", b"i", b"c", b"NOBLOCK"]),
        (okq.QRPush(b"q", b"i", b""), [b"QRPUSH", b"q", b"i", b""]),
        (okq.QRPush(b"q", b"i", b"c", True), [b"QRPUSH", b"q", b"i", b"c", b"NOBLOCK"]),
        (okq.QLPeek(b"q"), [b"QLPEEK", b"q"]),
        (okq.QRPeek(b"q"), [b"QRPEEK", b"q"]),
        (okq.QRPop(b"q"), [b"QRPOP", b"q", b"EX", b"30"]),
        (okq.QRPop(b"q", 0), [b"QRPOP", b"q", b"EX", b"0"]),
        (okq.QRPop(b"q", -1), [b"QRPOP", b"q", b"EX", b"0"]),
        (okq.QRPop(b"q", 7), [b"QRPOP", b"q", b"EX", b"7"]),
        (okq.QAck(b"q", b"i"), [b"QACK", b"q", b"i"]),
        (okq.QRegister(), [b"QREGISTER"]),
        (okq.QRegister((b"a", b"b")), [b"QREGISTER", b"a", b"b"]),
        (okq.QNotify(0), [b"QNOTIFY", b"0"]),
        (okq.QNotify(30), [b"QNOTIFY", b"30"]),
        (okq.QFlush(b"q"), [b"QFLUSH", b"q"]),
        (okq.QStatus(), [b"QSTATUS"]),
        (okq.QStatus((b"a", b"b")), [b"QSTATUS", b"a", b"b"]),
        (okq.QInfo((b"a",)), [b"QINFO", b"a"]),
        (okq.Ping(), [b"PING"]),
    ],
)
def test_argv_and_wire_bytes(command: okq.Command[object], argv: list[bytes]) -> None:
    assert list(command.argv()) == argv
    wire = okq.encode_command(command.argv())
    expected = b"*%d\r\n" % len(argv) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in argv)
    assert wire == expected


@pytest.mark.parametrize(
    ("flags", "name", "noblock"),
    [
        (PushFlag.NORMAL, b"QLPUSH", False),
        (PushFlag.HIGH_PRIORITY, b"QRPUSH", False),
        (PushFlag.NO_BLOCK, b"QLPUSH", True),
        (PushFlag.HIGH_PRIORITY | PushFlag.NO_BLOCK, b"QRPUSH", True),
    ],
)
def test_push_flags_map_like_okq_go(flags: PushFlag, name: bytes, noblock: bool) -> None:
    command = okq.push_command(b"q", b"id", b"c", flags)
    assert command.argv()[0] == name
    assert (command.argv()[-1] == b"NOBLOCK") is noblock
    assert len(command.argv()) == (5 if noblock else 4)


def test_push_flags_must_be_pushflag() -> None:
    with pytest.raises(LocalProtocolError):
        okq.push_command(b"q", b"id", b"c", 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-2, -30, 1.5, "30", True, None])
def test_bad_expire_is_refused_before_sending(bad: object) -> None:
    with pytest.raises(LocalProtocolError):
        okq.QRPop(b"q", bad)  # type: ignore[arg-type]


def test_expire_argument_follows_okq_go() -> None:
    assert okq.expire_argument(-1) == 0
    assert okq.expire_argument(0) == 0
    assert okq.expire_argument(30) == 30
    assert okq.QRPop(b"q", -1).acks_on_pop
    assert not okq.QRPop(b"q", 1).acks_on_pop


@pytest.mark.parametrize("bad", [-1, 1.0, "5", False])
def test_bad_notify_timeout_refused(bad: object) -> None:
    with pytest.raises(LocalProtocolError):
        okq.QNotify(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "build",
    [
        lambda: okq.QRPush(b"q", 5, b"c"),  # type: ignore[arg-type]
        lambda: okq.QLPush(b"q", b"i", "c"),  # type: ignore[arg-type]  # contents: bytes only
        lambda: okq.QLPeek(3),  # type: ignore[arg-type]
        lambda: okq.QAck(b"q", None),  # type: ignore[arg-type]
        lambda: okq.QRegister((1,)),  # type: ignore[arg-type]
        lambda: okq.QRegister("jobs"),  # one name where a sequence is due
        lambda: okq.QStatus((1,)),  # type: ignore[arg-type]
        lambda: okq.QFlush(None),  # type: ignore[arg-type]
        lambda: okq.QInfo((b"a", 2.0)),  # type: ignore[arg-type]
    ],
)
def test_wire_fields_must_be_bytes_or_names(build: object) -> None:
    with pytest.raises(LocalProtocolError, match=r"bytes|sequence of names"):
        build()  # type: ignore[operator]


def test_names_may_be_str_as_everywhere() -> None:
    """Queue names and ids as `str` are encoded as `to_wire` does (UTF-8, surrogateescape)."""
    odd = b"caf\xe9".decode("utf-8", "surrogateescape")
    pairs = [
        (okq.QLPush("q", "i", b"c"), okq.QLPush(b"q", b"i", b"c")),
        (okq.QRPush("é", "i", b"c", True), okq.QRPush("é".encode(), b"i", b"c", True)),
        (okq.QLPeek(odd), okq.QLPeek(b"caf\xe9")),
        (okq.QRPeek("q"), okq.QRPeek(b"q")),
        (okq.QRPop("q", 5), okq.QRPop(b"q", 5)),
        (okq.QAck("q", "i"), okq.QAck(b"q", b"i")),
        (okq.QRegister(("a", b"b")), okq.QRegister((b"a", b"b"))),
        (okq.QFlush("q"), okq.QFlush(b"q")),
        (okq.QStatus(["a"]), okq.QStatus((b"a",))),
        (okq.QInfo(("a",)), okq.QInfo((b"a",))),
    ]
    for given_str, given_bytes in pairs:
        assert given_str == given_bytes
        assert given_str.encode() == given_bytes.encode()
    assert okq.QLPush("q", "i", b"c").queue == b"q"


def test_blocking_only_for_qnotify() -> None:
    for command in ALL_COMMANDS:
        expected = 3.0 if isinstance(command, okq.QNotify) else 0.0
        assert command.blocking_s == expected


# -- replies -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [okq.QLPush(b"q", b"i", b"c"), okq.QRPush(b"q", b"i", b"c"), okq.QFlush(b"q")]
)
def test_ok_commands(command: okq.Command[None]) -> None:
    assert command.read_reply(b"OK") is None
    for bad in _r(None, 1, b"PONG", [b"OK"], b""):
        with pytest.raises(RemoteProtocolError):
            command.read_reply(bad)


def test_register_reply() -> None:
    okq.QRegister().read_reply(b"OK")  # returns None, raises nothing
    with pytest.raises(RemoteProtocolError):
        okq.QRegister().read_reply(None)


def test_duplicate_and_too_busy_are_typed() -> None:
    push = okq.QLPush(b"q", b"e1", b"c")
    with pytest.raises(DuplicateEventError) as dup:
        push.read_reply(ErrorReply(b"ERR duplicate event e1"))
    assert dup.value.event_id == "e1"
    assert okq.is_dup(dup.value)
    assert dup.value.reply == ErrorReply(b"ERR duplicate event e1")
    with pytest.raises(TooBusyError):
        push.read_reply(ErrorReply(b"ERR too busy to process NOBLOCK event"))


def test_duplicate_id_not_utf8_round_trips() -> None:
    error = okq.reply_error(ErrorReply(b"ERR duplicate event \xff\xfe"))
    assert isinstance(error, DuplicateEventError)
    assert okq.to_wire(error.event_id) == b"\xff\xfe"


def test_is_dup() -> None:
    assert not okq.is_dup(None)
    assert not okq.is_dup(ValueError("ERR duplicate event x"))
    assert not okq.is_dup(ReplyError(ErrorReply(b"ERR missing args")))


@pytest.mark.parametrize("message", EVERY_ERROR)
@pytest.mark.parametrize("command", ALL_COMMANDS, ids=repr)
def test_every_error_string_is_a_typed_error(command: okq.Command[object], message: bytes) -> None:
    with pytest.raises(ReplyError) as info:
        command.read_reply(ErrorReply(message))
    assert info.value.reply.message == message
    assert str(info.value) == message.decode()
    expected = (
        DuplicateEventError
        if b"duplicate" in message
        else TooBusyError
        if b"too busy" in message
        else ReplyError
    )
    assert type(info.value) is expected


@pytest.mark.parametrize("cls", [okq.QLPeek, okq.QRPeek])
def test_peek_replies(cls: type[okq.QLPeek]) -> None:
    command = cls(b"q\xff")
    assert command.read_reply(None) is None
    event = command.read_reply([b"id", b"\x00\r\n"])
    assert event == Event("q\udcff", "id", b"\x00\r\n")
    for bad in _r([b"id"], [b"id", 1], [b"a", b"b", b"c"], b"x", 1, [None, b"x"]):
        with pytest.raises(RemoteProtocolError):
            command.read_reply(bad)


def test_qrpop_replies() -> None:
    command = okq.QRPop(b"q", 10)
    assert command.read_reply(None) is None
    assert command.read_reply([b"i", b""]) == Event("q", "i", b"")
    with pytest.raises(RemoteProtocolError):
        command.read_reply([])


def test_qack_replies() -> None:
    command = okq.QAck(b"q", b"i")
    assert command.read_reply(1) == 1
    assert command.read_reply(0) == 0
    for bad in _r(2, -1, None, b"1", [1]):
        with pytest.raises(RemoteProtocolError):
            command.read_reply(bad)


def test_qnotify_replies() -> None:
    command = okq.QNotify(1)
    assert command.read_reply(None) is None
    assert command.read_reply(b"nm-a") == "nm-a"
    assert command.read_reply(b"\xff") == "\udcff"
    assert command.read_reply(b"") == ""  # the empty name is a valid queue name
    for bad in _r(1, [b"q"]):
        with pytest.raises(RemoteProtocolError):
            command.read_reply(bad)


def test_qstatus_replies() -> None:
    command = okq.QStatus()
    assert command.read_reply([]) == []
    reply: okq.Reply = [[b"a", 3, 1, 2], [b"b", 0, 0, 0, b"future", 7]]
    result = command.read_reply(reply)
    assert result == [QueueStatus("a", 3, 1, 2), QueueStatus("b", 0, 0, 0)]
    assert result[0].waiting == 2
    assert result[1].extra == (b"future", 7)
    for bad in _r([[b"a", 1, 2]], [[1, 1, 2, 3]], [[b"a", b"1", 2, 3]], None, [b"a"], 5):
        with pytest.raises(RemoteProtocolError):
            command.read_reply(bad)


def test_qinfo_replies() -> None:
    command = okq.QInfo()
    assert command.read_reply([]) == []
    line = b"q  total: 1  processing: 0  consumers: 0"
    assert command.read_reply([line]) == [line.decode()]
    for bad in _r([1], None, b"x"):
        with pytest.raises(RemoteProtocolError):
            command.read_reply(bad)


def test_ping_replies() -> None:
    okq.Ping().read_reply(b"PONG")  # returns None, raises nothing
    with pytest.raises(RemoteProtocolError):
        okq.Ping().read_reply(b"OK")


def test_commands_are_frozen_values() -> None:
    assert okq.QAck(b"q", b"i") == okq.QAck(b"q", b"i")
    assert hash(okq.QRPop(b"q", 5)) == hash(okq.QRPop(b"q", 5))
    with pytest.raises(AttributeError):
        okq.QAck(b"q", b"i").queue = b"x"  # type: ignore[misc]
    assert "QACK" in repr(okq.QAck(b"q", b"i"))


BIG = b"\x00\r\n" * 1000


@pytest.mark.parametrize(
    "command",
    [
        *ALL_COMMANDS,
        okq.QLPush(b"q", b"i", b"c", no_block=True),
        okq.QRPush(b"q", b"i", b"c"),
        okq.QLPush(b"q", b"i", BIG),
        okq.QLPush(b"q", b"i", BIG, no_block=True),
        okq.QRPush(b"q", b"i", BIG, no_block=True),
        okq.QRPush(BIG, b"i", b"c", no_block=True),
        okq.QLPush(b"q", BIG, b""),
        okq.QAck(b"q", BIG),
        okq.QAck(BIG, b"i"),
        okq.QRPop(BIG, -1),
    ],
    ids=repr,
)
def test_fast_encoding_equals_the_generic_one(command: okq.Command[object]) -> None:
    parts = command.encode()
    assert b"".join(parts) == okq.encode_command(command.argv())
    if any(len(arg) >= 1024 for arg in command.argv()):
        # Large fields travel as their own, uncopied parts.
        assert any(part is BIG for part in parts)
    assert command.encode() == parts  # repeatable (QRPop hands out a copy of its cache)
