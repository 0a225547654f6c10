"""Every step of the recorded okq transcripts used as a codec and command vector.

For each well-formed recorded request, the typed command built from it encodes to exactly the
recorded bytes; each recorded reply decodes (whole, byte by byte, at random split points, and
with trailing bytes) to the same value, and the command that asked for it turns that value
into the expected typed result or typed error.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

import okq_proto as okq
from conformance._transcripts import Scenario, load_transcripts
from okq_proto import NEED_DATA, ErrorReply, Event, QueueStatus, Reply, ReplyError

SCENARIOS = load_transcripts()
BACKENDS = ["python", "hiredis"]


def typed_command(argv: list[bytes]) -> okq.Command[object] | None:
    """The typed command whose argv is exactly `argv`, if our API can send it."""
    name, args = argv[0], argv[1:]
    command: okq.Command[object] | None = None
    n = len(args)
    if name in (b"QLPUSH", b"QRPUSH") and (n == 3 or (n == 4 and args[3] == b"NOBLOCK")):
        cls = okq.QLPush if name == b"QLPUSH" else okq.QRPush
        command = cls(args[0], args[1], args[2], n == 4)
    elif name in (b"QLPEEK", b"QRPEEK") and n == 1:
        command = (okq.QLPeek if name == b"QLPEEK" else okq.QRPeek)(args[0])
    elif name == b"QRPOP" and n == 3 and args[1] == b"EX" and args[2].isdigit():
        command = okq.QRPop(args[0], int(args[2]))
    elif name == b"QACK" and n == 2:
        command = okq.QAck(args[0], args[1])
    elif name == b"QREGISTER":
        command = okq.QRegister(tuple(args))
    elif name == b"QNOTIFY" and n == 1 and args[0].isdigit():
        command = okq.QNotify(int(args[0]))
    elif name == b"QFLUSH" and n == 1:
        command = okq.QFlush(args[0])
    elif name == b"QSTATUS":
        command = okq.QStatus(tuple(args))
    elif name == b"QINFO":
        command = okq.QInfo(tuple(args))
    elif name == b"PING" and n == 0:
        command = okq.Ping()
    if command is not None and list(command.argv()) != argv:
        return None  # e.g. "EX +20": the server takes it, our API never sends it
    return command


def requests_in(data: bytes) -> list[list[bytes]] | None:
    """The commands in a recorded write, or None when it is not plain well-formed commands."""
    decoder = okq.Decoder()
    decoder.feed(data)
    out: list[list[bytes]] = []
    try:
        while (value := decoder.next_reply()) is not NEED_DATA:
            if not (type(value) is list and value and all(type(v) is bytes for v in value)):
                return None
            out.append(value)  # type: ignore[arg-type]
    except okq.RemoteProtocolError:
        return None
    if decoder.has_partial() or okq.encode_commands(out) != data:
        return None
    return out


def decode_all(data: bytes, backend: str, chunks: Iterator[int]) -> list[Reply]:
    decoder = okq.make_decoder(backend)  # type: ignore[arg-type]
    values: list[Reply] = []
    pos = 0
    while pos < len(data):
        size = next(chunks)
        decoder.feed(data[pos : pos + size])
        pos += size
        while (value := decoder.next_reply()) is not NEED_DATA:
            values.append(value)
    assert not decoder.has_partial()
    return values


def check_result(command: okq.Command[object], reply: Reply) -> None:
    """`command.read_reply(reply)` gives what the raw reply means, judged independently."""
    if isinstance(reply, ErrorReply):
        with pytest.raises(ReplyError) as info:
            command.read_reply(reply)
        assert info.value.reply == reply
        assert okq.is_dup(info.value) == reply.message.startswith(b"ERR duplicate event ")
        return
    result = command.read_reply(reply)
    if isinstance(command, (okq.QLPush, okq.QRPush, okq.QFlush, okq.QRegister, okq.Ping)):
        assert result is None
    elif isinstance(command, (okq.QLPeek, okq.QRPeek, okq.QRPop)):
        if reply is None:
            assert result is None
        else:
            assert isinstance(reply, list)
            assert result == Event(okq.from_wire(command.queue), okq.from_wire(reply[0]), reply[1])  # type: ignore[arg-type]
    elif isinstance(command, okq.QAck):
        assert result == reply
    elif isinstance(command, okq.QNotify):
        assert result == (None if reply is None else okq.from_wire(reply))  # type: ignore[arg-type]
    elif isinstance(command, okq.QStatus):
        assert isinstance(result, list)
        assert isinstance(reply, list)
        assert [s.name for s in result] == [okq.from_wire(e[0]) for e in reply]  # type: ignore[index, arg-type]
        assert all(isinstance(s, QueueStatus) for s in result)
        if command.queues:
            assert [okq.to_wire(s.name) for s in result] == list(command.queues)
    elif isinstance(command, okq.QInfo):
        assert result == [okq.from_wire(line) for line in reply]  # type: ignore[union-attr, arg-type]
    else:  # pragma: no cover - every command is listed above
        raise AssertionError(command)


@dataclass
class Tally:
    requests: int = 0
    typed: int = 0
    replies: int = 0
    interpreted: int = 0
    quirky_conns: list[str] = field(default_factory=list)


def replay_offline(scenario: Scenario, backend: str, seed: int) -> Tally:
    tally = Tally()
    rng = random.Random(seed)
    slots: dict[int, deque[okq.Command[object] | None]] = {}
    quirky: set[int] = set()
    for step in scenario.steps:
        if step.redis or step.conn is None:
            continue
        conn = step.conn
        pending = slots.setdefault(conn, deque())
        if step.send is not None and conn not in quirky:
            requests = requests_in(step.send)
            if requests is None:
                quirky.add(conn)
                tally.quirky_conns.append(f"{scenario.name}#{conn}")
            else:
                for argv in requests:
                    tally.requests += 1
                    command = typed_command(argv)
                    if command is not None:
                        tally.typed += 1
                        assert okq.encode_command(command.argv()) == okq.encode_command(argv)
                    pending.append(command)
        if conn in quirky:
            continue
        expected = step.expect if step.expect is not None else step.recorded
        if not expected:
            continue
        ways = [
            itertools.repeat(len(expected)),  # whole
            itertools.repeat(1),  # byte by byte
            iter(lambda: rng.randint(1, 9), None),  # random split points
        ]
        decoded = [decode_all(expected, backend, way) for way in ways]
        assert decoded[0] == decoded[1] == decoded[2]
        # With trailing bytes: the same replies come first, the rest stays buffered.
        decoder = okq.make_decoder(backend)  # type: ignore[arg-type]
        decoder.feed(expected + b"*3\r\n$1")
        assert [decoder.next_reply() for _ in decoded[0]] == decoded[0]
        assert decoder.next_reply() is NEED_DATA
        for reply in decoded[0]:
            tally.replies += 1
            command = pending.popleft()
            if command is not None:
                check_result(command, reply)
                tally.interpreted += 1
    return tally


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_transcript_vectors(scenario: Scenario, backend: str) -> None:
    tally = replay_offline(scenario, backend, seed=len(scenario.name))
    assert tally.requests > 0 or scenario.name in {
        "inline_command_closes_connection",
        "malformed_length_closes_connection",
    }


def test_vectors_cover_the_transcripts() -> None:
    """Guard against the vector walk silently skipping everything."""
    total = Tally()
    for scenario in SCENARIOS:
        tally = replay_offline(scenario, "python", 0)
        total.requests += tally.requests
        total.typed += tally.typed
        total.replies += tally.replies
        total.interpreted += tally.interpreted
        total.quirky_conns += tally.quirky_conns
    assert len(SCENARIOS) == 53  # 52 recordings, and bulk_trailer_unchecked_then_close
    assert total.requests > 300
    assert total.typed > 0.8 * total.requests
    assert total.interpreted > 250
    # Only the scenarios that send deliberately malformed bytes leave the vector walk.
    assert len(total.quirky_conns) < 12, total.quirky_conns
