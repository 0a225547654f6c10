"""Event contents and queue names are opaque through every front door, over real loopback TCP.

The awkward contents of ``tests/proto/test_opaque_codec.py`` (RESP lines of every type byte,
huge counts, CR/LF runs, arbitrary bytes) are pushed to the embedded server and read back by
each transport of ``test_scenarios.py`` (sync, asyncio, asyncio on uvloop, trio, redis-py sync
and ``redis.asyncio``): peeked byte for byte, then consumed, the handler getting exactly the
bytes and the event acked (the queue empty at the end).  ``status`` / ``info`` over 1 100 queues
named ``job>N`` and other RESP-looking names, through each door and through ``okq status``.

Dependencies: without trio or redis the file is skipped, without uvloop its doors are, but under
CI (``CI=true``) a missing one fails.  hiredis decodes for the okq doors when installed;
`test_doors_decode_with_hiredis` says whether it is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if os.environ.get("CI", "").lower() != "true":  # under CI a missing one fails the import below
    pytest.importorskip("trio")
    pytest.importorskip("redis")

import okq_proto
from okq_proto import Decoder, Event, from_wire, make_decoder, to_wire
from okq_proto.server import QueueStatus as ServerQueueStatus
from okq_proto.server import render_info
from okq_transports import sync as okq_sync
from okq_transports.server import ThreadedServer
from tests.proto.test_opaque_codec import (
    JOB_QUEUES,
    NO_SHRINK,
    REGRESSIONS,
    RESP_NAMES,
    Blob,
    contents_of,
    nonempty_binary,
    runs,
    shorten,
)
from tests.test_cli import run as run_cli

from .scenarios import Harness, qname, require
from .test_scenarios import TRANSPORTS, run_scenario

pytestmark = pytest.mark.timeout(120)

#: Every front door of test_scenarios.py (asyncio and redis.asyncio also on uvloop's loop, which
#: `run_scenario` requires: skipped locally when missing, a failure under CI).
KINDS = TRANSPORTS
#: How long a consumer may take to be handed one event (it is there before consume starts).
CONSUME_WAIT_S = 10.0


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    srv = ThreadedServer("127.0.0.1", 0, sweep_interval_s=0.2, seed=0)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


# -- what each door must do ---------------------------------------------------------------------


def assert_event(got: Event | None, expected: Event, what: str) -> None:
    """`got == expected`, with a short message (contents can be MiB)."""
    assert got is not None, f"{what}: no event"
    assert (got.queue, got.id) == (expected.queue, expected.id), what
    if got.contents != expected.contents:
        pytest.fail(
            f"{what}: contents differ: {len(got.contents)} bytes {shorten(got.contents, 30)}, "
            f"expected {len(expected.contents)} bytes {shorten(expected.contents, 30)}"
        )


class Trouble(okq_proto.Hooks):
    """What a client reports it survived: errors (retries included) and reconnections."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def error(self, error: BaseException) -> None:
        self.seen.append(f"error {type(error).__name__}: {str(error)[:200]}")

    def reconnect(self, address: tuple[str, int], attempt: int, delay_s: float) -> None:
        self.seen.append(f"reconnect #{attempt}")


Door = Callable[[Harness, bytes, Trouble], Awaitable[None]]


def run_door(kind: str, server: ThreadedServer, door: Door, data: bytes) -> None:
    """`door(h, data, trouble)` on a new client of `kind`, bounded in time (test_scenarios'
    runner); the client must report no trouble."""
    trouble = Trouble()
    run_scenario(kind, server, lambda h: door(h, data, trouble), hooks=trouble)
    assert trouble.seen == [], f"{kind}: {trouble.seen[:5]}"


async def peek_exactly(h: Harness, data: bytes, trouble: Trouble) -> None:
    """Push `data`, peek it from both ends, push after it, peek again; flush."""
    q = qname("opaque-peek")
    first = await h.call("push", q, data)
    assert_event(await h.call("peek_next", q), Event(q, first, data), f"{h.name} peek_next")
    assert_event(await h.call("peek_last", q), Event(q, first, data), f"{h.name} peek_last")
    last = await h.call("push", q, b"after")
    assert_event(await h.call("peek_next", q), Event(q, first, data), f"{h.name} peek_next 2")
    assert_event(await h.call("peek_last", q), Event(q, last, b"after"), f"{h.name} peek_last 2")
    (status,) = await h.call("status", q)
    assert (status.name, status.total, status.processing) == (q, 2, 0)
    await h.call("flush", q)
    assert await h.call("peek_next", q) is None


async def consume_exactly(h: Harness, data: bytes, trouble: Trouble) -> None:
    """Push `data` and consume it: the handler gets exactly those bytes, once, and acks."""
    q = qname("opaque-consume")
    event_id = await h.call("push", q, data)
    stop, got = h.new_stop(), []

    def handler(delivery: Any) -> bool:
        got.append(Event(delivery.queue, delivery.id, delivery.contents))
        return True

    ended: list[bool] = []

    async def consumer() -> None:
        try:
            await h.consume(handler, [q], stop=stop)
        finally:
            ended.append(True)  # what it raised, the end of `background` raises

    async def handed_over_or_trouble() -> bool:
        return bool(got or trouble.seen or ended)

    async with h.background(consumer):
        try:
            await h.wait_until(handed_over_or_trouble, timeout=CONSUME_WAIT_S)
        finally:
            stop.set()
    (status,) = await h.call("status", q)
    what = f"{h.name}: handler called {len(got)} times, {status}"
    assert trouble.seen == [], f"{what}; the consumer reported {trouble.seen[:5]}"
    assert len(got) == 1, what
    assert_event(got[0], Event(q, event_id, data), f"{h.name} handler")
    assert (status.total, status.processing) == (0, 0), f"not acked: {what}"


async def peek_and_consume(h: Harness, data: bytes, trouble: Trouble) -> None:
    await peek_exactly(h, data, trouble)
    await consume_exactly(h, data, trouble)


# -- through every door -------------------------------------------------------------------------

#: Up to 1 MiB over the doors (the codec file goes to several MiB).
door_contents = st.one_of(
    nonempty_binary(200),
    contents_of(st.one_of(st.integers(0, 70_000), st.integers(0, 1 << 20))),
    runs,
).map(Blob)


@pytest.mark.parametrize("kind", KINDS)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=NO_SHRINK,
)
@given(blob=door_contents)
def test_awkward_contents(kind: str, server: ThreadedServer, blob: Blob) -> None:
    run_door(kind, server, peek_and_consume, blob.data)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("door", [peek_exactly, consume_exactly], ids=["peek", "consume"])
@pytest.mark.parametrize(
    ("name", "data"), REGRESSIONS[:6], ids=[name for name, _ in REGRESSIONS[:6]]
)
def test_regression_contents(
    kind: str,
    door: Door,
    server: ThreadedServer,
    name: str,
    data: bytes,
) -> None:
    run_door(kind, server, door, data)


@pytest.mark.parametrize("kind", KINDS)
def test_everyday_contents(kind: str, server: ThreadedServer) -> None:
    """The rest of the codec file's regressions (16k lines, CSV, markdown, logs, 4 MiB...)."""

    async def everyday(h: Harness, data: bytes, trouble: Trouble) -> None:
        for _name, contents in REGRESSIONS[6:]:
            await peek_exactly(h, contents, trouble)
        await consume_exactly(h, data, trouble)

    run_door(kind, server, everyday, REGRESSIONS[6][1])


# -- RESP-looking queue names -----------------------------------------------------------------

#: 1 100 queues named ``job>N`` and other RESP-looking names, each holding one event.
NAMES = [from_wire(name) for name in [*JOB_QUEUES, *RESP_NAMES]]


@pytest.fixture(scope="module")
def crowded() -> Iterator[ThreadedServer]:
    """A server of its own whose only queues are `NAMES` (one event each)."""
    srv = ThreadedServer("127.0.0.1", 0, seed=0)
    srv.start()
    try:
        with okq_sync.Client(srv.address) as client:
            for name in NAMES:
                client.push(name, b"*1\r\n" * 4)
        yield srv
    finally:
        srv.stop()


def expected_info(names: list[str]) -> list[str]:
    """QINFO's lines for `names` (one event each, none claimed), rendered by the server's own
    code and decoded by the pure decoder."""
    entries = [
        ServerQueueStatus(name=to_wire(name), total=1, processing=0, consumers=0) for name in names
    ]
    decoder = Decoder()
    decoder.feed(render_info(entries))
    lines = decoder.next_reply()
    assert isinstance(lines, list)
    return [from_wire(line) for line in lines]  # type: ignore[arg-type]


async def crowded_status(h: Harness) -> None:
    by_wire = sorted(NAMES, key=to_wire)  # the server lists every queue sorted by name
    everything = await h.call("status")
    assert [s.name for s in everything] == by_wire, f"{h.name}: status() names differ"
    assert {(s.total, s.processing, s.consumers) for s in everything} == {(1, 0, 0)}
    named = await h.call("status", *reversed(NAMES))
    assert [s.name for s in named] == NAMES[::-1], f"{h.name}: status(*names) names differ"
    assert await h.call("info") == expected_info(by_wire), f"{h.name}: info() differs"
    some = NAMES[-40:]
    assert await h.call("info", *some) == expected_info(some), f"{h.name}: info(*names) differs"
    for name in ("job>7", "*1\r\n*1\r\n", "-caf\udce9"):
        event = await h.call("peek_next", name)
        assert event is not None, name
        assert (event.queue, event.contents) == (name, b"*1\r\n" * 4), f"{h.name}: {name!r}"


@pytest.mark.parametrize("kind", KINDS)
def test_resp_looking_queue_names(kind: str, crowded: ThreadedServer) -> None:
    run_scenario(kind, crowded, crowded_status)


def test_cli_status_over_resp_looking_queue_names(
    crowded: ThreadedServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OKQ_SERVER", crowded.address)
    code, out, err = run_cli(capsys, "status")
    assert (code, err) == (0, ""), err
    lines = out.splitlines()
    assert len(lines) == 1 + len(NAMES)  # the header, then one line per queue
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:] if line.startswith("job>")}
    assert rows == {from_wire(name): ["1", "0", "1", "0"] for name in JOB_QUEUES}
    jobs = [from_wire(name) for name in JOB_QUEUES]
    code, out, err = run_cli(capsys, "status", "--json", *jobs, "*1\r\n*1\r\n", "~1 ")
    assert (code, err) == (0, ""), err
    entries = json.loads(out)
    assert [entry["queue"] for entry in entries] == [*jobs, "*1\r\n*1\r\n", "~1 "]
    assert {(e["total"], e["processing"], e["waiting"], e["consumers"]) for e in entries} == {
        (1, 0, 1, 0)
    }
    code, out, err = run_cli(capsys, "info", *jobs[:50])
    assert (code, err) == (0, ""), err
    assert out.splitlines() == expected_info(jobs[:50])


def test_cli_status_json_over_every_queue(
    crowded: ThreadedServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``okq status --json`` lists every queue, the one whose name is not UTF-8 included."""
    monkeypatch.setenv("OKQ_SERVER", crowded.address)
    code, out, err = run_cli(capsys, "status", "--json")
    assert (code, err) == (0, ""), err
    entries = json.loads(out)
    assert len(entries) == len(NAMES)
    utf8 = [name for name in sorted(NAMES, key=to_wire) if _is_utf8(name)]
    assert len(utf8) < len(NAMES)  # b"-caf\xe9" is not UTF-8
    assert [entry["queue"] for entry in entries if entry["queue"] in utf8] == utf8


def _is_utf8(name: str) -> bool:
    try:
        to_wire(name).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize("backend", ["hiredis"])
def test_doors_decode_with_hiredis(backend: str) -> None:
    """The okq doors decode with hiredis when it is installed (the default decoder), so the
    tests above cover it; under CI it must be installed."""
    require(backend)
    from okq_proto.hiredis import HiredisDecoder

    assert isinstance(make_decoder(), HiredisDecoder)
