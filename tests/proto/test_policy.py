"""okq_proto.policy: the decisions every door takes from the core, with no sockets or clock."""

from __future__ import annotations

import pytest

from okq_proto import (
    ClientClosed,
    ClientConnection,
    ConnectError,
    ConnectionClosed,
    ErrorReply,
    LocalProtocolError,
    Ping,
    QAck,
    QLPush,
    QNotify,
    QRPop,
    RemoteProtocolError,
    ReplyError,
    TimeoutError,
)
from okq_proto.policy import DEFAULT_RETRIES, Failover, may_retry, read_time_left

PUSH = QLPush(b"q", b"id", b"x")
POP = QRPop(b"q", 30)
ACK = QAck(b"q", b"id")


@pytest.mark.parametrize(
    ("commands", "error", "attempt", "retries", "expected"),
    [
        ((PUSH,), ConnectionClosed("reset"), 0, 1, True),
        ((PUSH,), TimeoutError("slow"), 0, 1, True),
        ((PUSH,), RemoteProtocolError("garbage"), 0, 1, True),
        ((PUSH,), ConnectionClosed("reset"), 1, 1, False),  # retries spent
        ((PUSH,), ConnectionClosed("reset"), 1, 3, True),
        ((PUSH,), ConnectionClosed("reset"), 0, 0, False),  # retries=0: never
        ((POP,), ConnectionClosed("reset"), 0, 5, False),  # a pop may have claimed
        ((ACK,), ConnectionClosed("reset"), 0, 5, False),
        ((PUSH, POP), ConnectionClosed("reset"), 0, 5, False),  # one unsafe: none
        ((PUSH, Ping()), ConnectionClosed("reset"), 0, 5, True),
        ((PUSH,), ClientClosed(), 0, 5, False),  # the caller's mistake
        ((PUSH,), ReplyError(ErrorReply(b"ERR no")), 0, 5, False),  # the server answered
        ((PUSH,), LocalProtocolError("bad"), 0, 5, False),
        ((PUSH,), KeyboardInterrupt(), 0, 5, False),
    ],
)
def test_may_retry(
    commands: tuple[object, ...], error: BaseException, attempt: int, retries: int, expected: bool
) -> None:
    assert may_retry(commands, error, attempt, retries) is expected  # type: ignore[arg-type]


def test_default_retries_is_one_everywhere() -> None:
    import inspect

    from okq_transports import asyncio as okq_asyncio
    from okq_transports import sync as okq_sync
    from okq_transports import trio as okq_trio
    from okq_transports.redis import AsyncRedisPoolClient, RedisPoolClient

    assert DEFAULT_RETRIES == 1
    for door in (okq_sync.Client, okq_asyncio.Client, RedisPoolClient, AsyncRedisPoolClient):
        assert inspect.signature(door).parameters["retries"].default == DEFAULT_RETRIES, door
    assert inspect.signature(okq_trio.open_client).parameters["retries"].default == 1


A, B, C = ("10.0.0.1", 4777), ("10.0.0.2", 4777), ("10.0.0.3", 4777)


def test_failover_goes_round_from_the_last_address_that_worked() -> None:
    failover = Failover([A, B, C])
    assert failover.order() == (A, B, C)
    failover.succeeded(B)
    assert failover.preferred == B
    assert failover.order() == (B, C, A)
    failover.succeeded(A)
    assert failover.order() == (A, B, C)


def test_failover_error_with_one_address_is_its_own() -> None:
    own = TimeoutError("connect to 10.0.0.1:4777: timed out")
    assert Failover([A]).error([(A, own)]) is own


def test_failover_error_names_every_address_and_chains_the_last() -> None:
    first = ConnectError("connect to 10.0.0.1:4777: refused")
    last = TimeoutError("connect to 10.0.0.2:4777: timed out")
    error = Failover([A, B]).error([(A, first), (B, last)])
    assert isinstance(error, ConnectError)
    assert "10.0.0.1:4777" in str(error)
    assert "10.0.0.2:4777" in str(error)
    assert "refused" in str(error)
    assert "timed out" in str(error)
    assert error.failures == ((A, first), (B, last))
    assert error.__cause__ is last


def test_failover_needs_an_address() -> None:
    with pytest.raises(LocalProtocolError):
        Failover([])


def test_reply_budget_of_the_client_machine_adds_blocking_waits() -> None:
    conn = ClientConnection()
    assert conn.reply_budget_s(None) is None
    assert conn.reply_budget_s(2.0) == 2.0
    conn.send(QNotify(7))
    assert conn.reply_budget_s(2.0) == 9.0  # the wait is the server's to take, on top
    assert conn.reply_budget_s(None) is None


def test_read_time_left_bounds_a_whole_reply_in_simulated_time() -> None:
    # a reply whose budget began at t=100 with a 5 s read timeout, read at t=101, 104, 105
    assert read_time_left(100.0, 5.0, 101.0) == 4.0
    assert read_time_left(100.0, 5.0, 104.5) == 0.5
    with pytest.raises(TimeoutError, match="within 5 s"):
        read_time_left(100.0, 5.0, 105.0)
    assert read_time_left(100.0, None, 1e12) is None


def test_client_closed_is_local_and_a_closed_connection() -> None:
    error = ClientClosed()
    assert isinstance(error, LocalProtocolError)
    assert isinstance(error, ConnectionClosed)
    assert "closed" in str(error)
