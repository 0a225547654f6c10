"""Scenarios of broken connections, written once for every client (see `scenarios`).

Replies cut at every byte (a cancelled request on the async doors, a read timeout on the
blocking ones), malformed replies, connections dropped in mid-request (`retries=`), a
closed client, and bad arguments.  Every server here is a scripted one on loopback
(`scenarios_servers`) or the embedded okq server behind a `DropProxy`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import okq_proto
from okq_proto import (
    ConnectionClosed,
    Event,
    LocalProtocolError,
    OkqError,
    QAck,
    QRPop,
    TransportError,
    to_wire,
)

from .scenarios import Harness, qname
from .scenarios_servers import (
    CUT_REPLY,
    GOOD_PEEK,
    MALFORMED,
    OTHER_REPLY,
    VICTIM_REPLY,
    DribbleServer,
    DropProxy,
    MalformedServer,
    cancelled_at_every_byte,
)

#: The read timeout of the timed-out-at-every-byte runs, and how late the error may come.
CUT_READ_S = 0.2
CUT_MARGIN_S = 1.5
POP = QRPop(b"q", 30)


@contextlib.asynccontextmanager
async def _raw_client(h: Harness, address: str) -> AsyncIterator[Any]:
    """A pool-of-one client of `h`'s kind (a reused connection would show)."""
    async with h.reopen(address, pool_size=1) as one:
        yield one.client


async def cut_at_every_byte(h: Harness) -> None:
    """A reply cut after each of its bytes: the async doors cancel the request there, the
    blocking ones time out there (they cannot cancel a call in flight).  Either way the
    request ends, its connection is never used again, and the next request reads its own
    reply, never the rest of the victim's (CVE-2023-28858)."""
    if h.cancellable_requests:
        await cancelled_at_every_byte(h, lambda address: _raw_client(h, address))
        return
    for k in range(len(VICTIM_REPLY)):
        server = DribbleServer(VICTIM_REPLY, OTHER_REPLY, k)
        try:
            async with h.reopen(server.address, read_timeout_s=CUT_READ_S, pool_size=1) as c:
                started = time.monotonic()
                with pytest.raises(okq_proto.TimeoutError):
                    await c.call("execute", POP)  # QRPOP: never retried, on any door
                elapsed = time.monotonic() - started
                assert elapsed < CUT_READ_S + CUT_MARGIN_S, f"k={k}: {elapsed:.2f} s"
                assert c.idle_connections() in (0, None), f"k={k}: pooled again"
                server.release.set()  # the rest of the victim's reply is now on the wire
                await h.sleep(0.005)
                event = await c.call("execute", POP)
                assert event == Event("q", "other", b"second"), f"k={k}: got {event!r}"
                assert server.connections == 2, f"k={k}: {server.connections} connections"
        finally:
            server.close()


async def malformed_reply(h: Harness) -> None:
    """A reply that is not RESP2, or announces an absurd size, raises a typed okq error
    (never a library's own) and its connection is never reused."""
    for bad in MALFORMED:
        server = MalformedServer(bad, GOOD_PEEK)
        try:
            # read_timeout_s: redis-py (the adapters' parser) waits for the announced bytes.
            async with h.reopen(server.address, read_timeout_s=1.0) as client:
                with pytest.raises(OkqError) as info:
                    await client.call("peek_next", "q")
                error = info.value
                # one of okq_proto's own errors, not the library's underneath
                assert getattr(okq_proto, type(error).__name__, None) is type(error), repr(error)
                if h.parses_itself or bad == b"?what\r\n":
                    assert isinstance(error, okq_proto.RemoteProtocolError), repr(error)
                assert client.idle_connections() in (0, None)
                server.healed.set()
                assert await client.call("peek_next", "q") == Event("q", "id", b"body")
                assert server.reused == 0, f"{bad!r}: a broken connection was used again"
                assert server.connections == server.bad_sent + 1
        finally:
            server.close()


# -- retries -----------------------------------------------------------------------------------


def _safe_requests(q: str) -> list[tuple[str, tuple[Any, ...]]]:
    """Every retry-safe request (pushes carry their own id)."""
    return [
        ("ping", ()),
        ("push", (q, b"pushed")),
        ("push_event", (Event(q, qname("own"), b"own id"),)),
        ("push_many", (q, [b"m1", b"m2"])),
        ("peek_next", (q,)),
        ("peek_last", (q,)),
        ("status", (q,)),
        ("info", (q,)),
        ("flush", (q,)),
    ]


async def _through_drops(
    h: Harness, drops: int, method: str, args: tuple[Any, ...], cut: bytes = b"", **options: Any
) -> tuple[Any, DropProxy]:
    """`method` on a new client (of `options`) whose first `drops` connections fail in
    mid-request; returns its result, or the okq error it raised, and the proxy."""
    assert h.server is not None
    proxy = DropProxy((h.server.host, h.server.port), drops, cut)
    try:
        async with h.reopen(proxy.address, **options) as client:
            try:
                outcome: Any = await client.call(method, *args)
            except OkqError as exc:
                assert client.idle_connections() in (0, None), "a failed connection was pooled"
                assert client.open_connections() in (0, None)
                outcome = exc
        return outcome, proxy
    finally:
        proxy.close()


async def retries_resend_safe_requests(h: Harness) -> None:
    """With ``retries=2`` a retry-safe request survives two connections failing in
    mid-request (closed before a reply, or in the middle of one), on a third; a third
    failure raises a `TransportError`.  Each attempt is a new connection."""
    q = qname("retries")
    for i, (method, args) in enumerate(_safe_requests(q)):
        cut = CUT_REPLY if i % 2 else b""
        outcome, proxy = await _through_drops(h, 2, method, args, cut, retries=2)
        assert not isinstance(outcome, BaseException), f"{method}: {outcome!r}"
        assert (proxy.connections, proxy.dropped) == (3, 2), (
            method,
            proxy.connections,
            proxy.dropped,
        )
        if method == "push_many":
            assert all(o.ok and o.retried for o in outcome), outcome
        outcome, proxy = await _through_drops(h, 3, method, args, cut, retries=2)
        assert isinstance(outcome, TransportError), f"{method}: {outcome!r}"
        assert (proxy.connections, proxy.dropped) == (3, 3), (
            method,
            proxy.connections,
            proxy.dropped,
        )


async def retries_zero_never_resends(h: Harness) -> None:
    """``retries=0``: one failure raises, nothing is sent again."""
    q = qname("no-retries")
    for method, args in _safe_requests(q)[:3]:
        outcome, proxy = await _through_drops(h, 1, method, args, CUT_REPLY, retries=0)
        assert isinstance(outcome, ConnectionClosed), f"{method}: {outcome!r}"
        assert (proxy.connections, proxy.dropped) == (1, 1), method
    assert (await h.call("status", q))[0].total == 0  # no push went through


async def retries_default_to_one(h: Harness) -> None:
    """Without ``retries=``, a retry-safe request is sent again once."""
    q = qname("one-retry")
    for method, args in _safe_requests(q)[:2]:
        outcome, proxy = await _through_drops(h, 1, method, args)
        assert not isinstance(outcome, BaseException), f"{method}: {outcome!r}"
        assert proxy.connections == 2, method
        outcome, proxy = await _through_drops(h, 2, method, args)
        assert isinstance(outcome, TransportError), f"{method}: {outcome!r}"
        assert proxy.connections == 2, method


async def retries_never_resend_pop_or_ack(h: Harness) -> None:
    """``QRPOP`` and ``QACK`` (through `execute`) are never sent again, whatever
    ``retries`` says: a blind retry could claim a second event, or lie about an ack."""
    q = qname("pop-ack")
    await h.call("push", q, b"x")
    for command in (QRPop(to_wire(q), 30), QAck(to_wire(q), b"some-id")):
        outcome, proxy = await _through_drops(h, 1, "execute", (command,), retries=2)
        assert isinstance(outcome, TransportError), f"{command!r}: {outcome!r}"
        assert (proxy.connections, proxy.dropped) == (1, 1), repr(command)
    (st,) = await h.call("status", q)
    assert (st.total, st.processing) == (1, 0)  # never claimed


# -- a closed client ---------------------------------------------------------------------------


async def closed_client(h: Harness) -> None:
    """Every request on a closed client raises `okq_proto.ClientClosed` (a
    `LocalProtocolError` and a `ConnectionClosed`), and sends nothing."""
    q = qname("closed")
    async with h.reopen() as client:
        await client.call("ping")  # one pooled connection, closed with the client
    requests = [*_safe_requests(q), ("execute", (QRPop(to_wire(q), 30),))]
    wrong = []
    for method, args in requests:
        try:
            result = await client.call(method, *args)
        except Exception as exc:  # judged below
            ok = (
                isinstance(exc, LocalProtocolError)
                and isinstance(exc, ConnectionClosed)
                and type(exc).__name__ == "ClientClosed"
            )
            if not ok:
                wrong.append(f"{method}: {type(exc).__module__}.{type(exc).__name__}: {exc}")
        else:
            wrong.append(f"{method}: returned {result!r}")
    assert wrong == [], f"{h.name}: " + "; ".join(wrong)
    (st,) = await h.call("status", q)
    assert st.total == 0


# -- bad arguments -----------------------------------------------------------------------------


#: (option, bad value) pairs; each transport tries those its constructor has.
BAD_OPTIONS: list[tuple[str, object]] = [
    ("pool_size", "3"),
    ("pool_size", 0),
    ("pool_size", 2.0),
    ("connect_timeout_s", -1),
    ("read_timeout_s", -1),
    ("read_timeout_s", 0),
    ("read_timeout_s", "5"),
    ("pool_timeout_s", 0),
    ("retries", -1),
    ("notify_timeout_s", 2.5),
    ("notify_timeout_s", 0),
    ("notify_timeout_s", "30"),
    ("notify_timeout_s", True),
    ("notify_timeout_s", -1),
    ("id_factory", "uuid4"),
    ("hooks", object()),
]


async def bad_arguments(h: Harness) -> None:
    """Every front door refuses the same bad arguments with `LocalProtocolError`, naming the
    argument, before anything is sent."""
    tried = 0
    for name, value in BAD_OPTIONS:
        if name not in h.options:
            continue
        tried += 1
        with pytest.raises(LocalProtocolError, match=name):
            async with h.reopen(**{name: value}):
                pass
    assert tried >= 6
    q = qname("badargs")
    bad_consumes: list[tuple[Any, Any, dict[str, Any]]] = [
        (_ack, [q], {"concurrency": 2.5}),
        (_ack, [q], {"concurrency": "2"}),
        (_ack, [q], {"concurrency": 0}),
        (_ack, [q], {"concurrency": True}),
        (_ack, [q], {"expire_seconds": -5}),
        (_ack, [q], {"expire_seconds": "30"}),
        (_ack, [], {}),
        (_ack, q, {}),  # one bare name, not a list
        ("not callable", [q], {}),
    ]
    for handler, queues, kw in bad_consumes:
        with pytest.raises(LocalProtocolError):
            await h.consume(handler, queues, stop=h.new_stop(), **kw)
    bad_requests: list[tuple[str, tuple[Any, ...]]] = [
        ("push", (3, b"x")),
        ("push", (q, 3)),
        ("push", (q, b"x", 3)),
        ("push_event", ((q, "i", b"c"),)),
        ("push_many", (q, [b"ok", 5])),
    ]
    async with h.reopen() as fresh:
        for method, args in bad_requests:
            with pytest.raises(LocalProtocolError):
                await fresh.call(method, *args)
        assert fresh.open_connections() in (None, 0)  # nothing was even connected
    (st,) = await h.call("status", q)
    assert (st.total, st.consumers) == (0, 0)
    if "pool_size" in h.options:  # the doors that parse addresses themselves
        with pytest.raises(LocalProtocolError):
            async with h.reopen("host:notaport"):
                pass


def _ack(delivery: Any) -> bool:
    return True


#: Scenarios over one shared server (`Harness.server`), for every door.
FAULT_SCENARIOS: list[Callable[[Harness], Awaitable[None]]] = [
    cut_at_every_byte,
    malformed_reply,
    retries_resend_safe_requests,
    retries_zero_never_resends,
    retries_default_to_one,
    retries_never_resend_pop_or_ack,
    closed_client,
    bad_arguments,
]
