"""The one contract of every machine (`okq_proto.Machine`): ``step`` hands queued bytes out
as `SendData` before anything else, so a pump cannot wait for data with its own requests
unsent; ``next_deadline`` and ``allowed_silence_s`` exist on all three."""

from __future__ import annotations

import math

import pytest

from okq_proto import (
    NEED_DATA,
    ClientConnection,
    CommandReplied,
    Consumer,
    Delivered,
    LocalProtocolError,
    Machine,
    QLPush,
    QRPeek,
    SendData,
    encode_command,
)
from okq_proto.server import CommandReceived, ServerConnection


def test_a_client_connection_hands_out_its_commands_first() -> None:
    conn = ClientConnection()
    conn.send(QLPush(b"q", b"e1", b"x"))
    conn.send(QRPeek(b"q"))
    action = conn.step()
    assert action == SendData(
        encode_command([b"QLPUSH", b"q", b"e1", b"x"]) + encode_command([b"QRPEEK", b"q"])
    )
    assert conn.step() is NEED_DATA  # taken: nothing queued any more
    conn.receive_data(b"+OK\r\n$-1\r\n")
    first, second = conn.step(), conn.step()
    assert isinstance(first, CommandReplied)
    assert isinstance(second, CommandReplied)
    assert second.unwrap() is None
    assert conn.next_deadline() is None


def test_a_consumer_hands_out_what_it_queues_itself() -> None:
    consumer = Consumer(["jobs"], expire_s=30, notify_timeout_s=1)
    register = consumer.step(now=0.0)
    assert register == SendData(encode_command([b"QREGISTER", b"jobs"]))
    assert consumer.step(now=0.0) is NEED_DATA
    consumer.receive_data(b"+OK\r\n")
    # Each reply makes the consumer queue its next command by itself (QNOTIFY, then QRPOP):
    # the step hands it out, it is not left in the buffer while the caller waits for data.
    assert consumer.step(now=0.0) == SendData(encode_command([b"QNOTIFY", b"1"]))
    assert consumer.step(now=0.0) is NEED_DATA
    consumer.receive_data(b"$4\r\njobs\r\n")
    pop = consumer.step(now=0.0)
    assert isinstance(pop, SendData)
    assert pop.data.startswith(b"*4\r\n$5\r\nQRPOP\r\n")
    assert consumer.step(now=0.0) is NEED_DATA
    consumer.receive_data(b"*2\r\n$2\r\ne1\r\n$4\r\nwork\r\n")
    delivered = consumer.step(now=1.0)
    assert isinstance(delivered, Delivered)
    assert consumer.next_deadline() == 31.0
    consumer.handled(delivered.delivery, True, now=2.0)
    ack_and_pop = consumer.step(now=2.0)
    assert isinstance(ack_and_pop, SendData)
    assert b"QACK" in ack_and_pop.data
    assert b"QRPOP" in ack_and_pop.data  # one write


def test_a_consumer_step_needs_the_time() -> None:
    consumer = Consumer(["jobs"])
    consumer.data_to_send()
    with pytest.raises(LocalProtocolError, match="needs now="):
        consumer.step()


def test_a_server_connection_hands_out_its_replies_first() -> None:
    server = ServerConnection()
    server.receive_data(encode_command([b"PING"]))
    request = server.step()
    assert isinstance(request, CommandReceived)
    server.send_reply(b"+PONG\r\n")
    assert server.step() == SendData(b"+PONG\r\n")
    assert server.step() is NEED_DATA
    assert server.next_deadline() is None
    assert server.allowed_silence_s() == math.inf


def pump(client: Machine, server: ServerConnection, rounds: int = 20) -> list[object]:
    """A generic pump between two machines, with no isinstance check on the machines: the
    contract's verbs only.  Returns the client's events."""
    events: list[object] = []
    for _ in range(rounds):  # bounded
        action = client.step(0.0)
        if isinstance(action, SendData):
            server.receive_data(action.data)
            while True:
                request = server.step()
                if isinstance(request, SendData):
                    client.receive_data(request.data)
                    continue
                if isinstance(request, CommandReceived):
                    server.send_reply(b"+OK\r\n")
                    continue
                break
        elif action is NEED_DATA:
            return events
        else:
            events.append(action)
    return events


def test_one_pump_drives_any_client_machine() -> None:
    conn = ClientConnection()
    conn.send(QLPush(b"q", b"e1", b"x"))
    [replied] = pump(conn, ServerConnection())
    assert isinstance(replied, CommandReplied)
    assert replied.unwrap() is None
    assert conn.step() is NEED_DATA
