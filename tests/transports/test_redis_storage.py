"""`RedisStorage` against a real ``redis-server``: the transcripts, two instances on one Redis,
a restart, Redis going away and coming back, and the ``okq serve --redis`` command line.

``OKQ_INTEROP_PEER=HOST:PORT`` with ``OKQ_INTEROP_REDIS=HOST:PORT`` runs the two-instance
checks against that okq server (a real okq, say) and its Redis instead of a second server of
ours: ours runs over the peer's Redis, and nothing in it is flushed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance import (
    Check,
    Outcome,
    defect_probes,
    format_result,
    load_transcripts,
    run_scenarios,
)
from okq_proto import ReplyError
from okq_transports.server import (
    RedisStorage,
    RedisUnavailableError,
    StorageError,
    ThreadedServer,
)
from okq_transports.sync import Client
from tests.redis_fixtures import HOST, RedisProcess, Resp, bulk_strings, free_port
from tests.transports.redis_interop import (
    NIL,
    OK,
    bulk,
    check_two_instances,
    event,
    poll,
    status,
)

pytestmark = pytest.mark.slow

FAST_SWEEP_S = 0.5


def _peer() -> tuple[tuple[str, int], tuple[str, int]] | None:
    peer, redis = os.environ.get("OKQ_INTEROP_PEER"), os.environ.get("OKQ_INTEROP_REDIS")
    if not peer:
        return None
    if not redis:
        raise pytest.UsageError("OKQ_INTEROP_PEER needs OKQ_INTEROP_REDIS (its Redis)")

    def split(text: str) -> tuple[str, int]:
        host, _, port = text.rpartition(":")
        return host, int(port)

    return split(peer), split(redis)


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    try:
        yield proc
    finally:
        proc.stop()


def ours(url: str, port: int = 0, **storage_options: float) -> ThreadedServer:
    storage = RedisStorage.from_url(url, **storage_options)
    return ThreadedServer(HOST, port, storage=storage, seed=0).start()


@pytest.mark.timeout(180)
def test_every_transcript_and_probe_over_redis(redis: RedisProcess) -> None:
    server = ours(redis.url)  # okq's own timings: 10 s sweep, 30 s claims
    try:
        scenarios = load_transcripts()
        assert {s.name for s in scenarios if s.requires_redis} == {
            "redis_key_layout",
            "redis_interop_external_writes",
        }
        checks: list[Check] = [*scenarios, *defect_probes()]
        report = run_scenarios(server.host, server.port, checks, redis=redis.address, jobs=8)
        failures = "\n".join(format_result(r) for r in report.results if r.failed)
        assert report.failed == 0, failures
        assert all(r.outcome is Outcome.PASS for r in report.results), report.format_text()
        assert report.passed == len(checks)
    finally:
        server.stop()


def test_two_instances_on_one_redis(redis: RedisProcess) -> None:
    peer = _peer()
    if peer is not None:
        peer_addr, peer_redis = peer
        url = f"redis://{peer_redis[0]}:{peer_redis[1]}/0"
        a = ours(url, sweep_interval_s=FAST_SWEEP_S)
        try:
            print("ours -> peer:", check_two_instances((a.host, a.port), peer_addr))
            found = check_two_instances(peer_addr, (a.host, a.port))
            print("peer -> ours:", found)
        finally:
            a.stop()
    else:
        a = ours(redis.url, sweep_interval_s=FAST_SWEEP_S)
        b = ours(redis.url, sweep_interval_s=FAST_SWEEP_S)
        try:
            found = check_two_instances((a.host, a.port), (b.host, b.port))
        finally:
            a.stop()
            b.stop()
        assert found.notes == []  # ours list every name exactly (no D3)
    print(found)


def test_a_restart_on_the_same_redis_keeps_everything(redis: RedisProcess) -> None:
    server = ours(redis.url)
    port = server.port
    conn = Resp(HOST, port)
    try:
        assert conn.call("QLPUSH", "rs", "e1", "c1") == OK
        assert conn.call("QLPUSH", "rs", "e2", "c2") == OK
        assert conn.call("QRPOP", "rs", "EX", 60) == event(b"e1", b"c1")
        before = conn.call("QSTATUS", "rs")
        assert before == b"*1\r\n" + status(b"rs", 2, 1, 0)
    finally:
        conn.close()
        server.stop()
    again = ours(redis.url, port)  # a new storage object, the same Redis
    conn = Resp(HOST, port)
    try:
        assert conn.call("QSTATUS", "rs") == before
        conn.close()
        again.restart()  # the same storage object again, on the new thread's new loop
        conn = Resp(HOST, port)
        assert conn.call("QSTATUS", "rs") == before
        assert conn.call("QRPEEK", "rs") == event(b"e2", b"c2")
        assert conn.call("QLPUSH", "rs", "e1", "x") == b"-ERR duplicate event e1\r\n"
        assert conn.call("QACK", "rs", "e1") == b":1\r\n"
        assert conn.call("QRPOP", "rs", "EX", 0) == event(b"e2", b"c2")
        assert conn.call("QSTATUS", "rs") == b"*1\r\n" + status(b"rs", 0, 0, 0)
    finally:
        conn.close()
        again.stop()


def test_redis_going_away_and_coming_back(tmp_path: Path) -> None:
    proc = RedisProcess(tmp_path).start()
    server = ours(proc.url, socket_timeout_s=1.0, connect_timeout_s=0.5)
    conn = Resp(HOST, server.port)
    client = Client(address=server.address, retries=0, read_timeout_s=5.0)
    waiter = Resp(HOST, server.port)
    try:
        assert conn.call("QLPUSH", "down", "e1", "c1") == OK
        assert waiter.call("QREGISTER", "down") == OK
        proc.stop()
        for command in (
            ("QLPUSH", "down", "e2", "c2"),
            ("QRPEEK", "down"),
            ("QRPOP", "down"),
            ("QACK", "down", "e1"),
            ("QSTATUS",),
            ("QINFO", "down"),
            ("QREGISTER", "down"),
        ):
            started = time.monotonic()
            assert conn.call(*command) == b"-ERR unexpected server-side error\r\n", command
            assert time.monotonic() - started < 2.0
        assert conn.call("PING") == b"+PONG\r\n"  # the connection stays usable
        started = time.monotonic()
        with pytest.raises(ReplyError, match="unexpected server-side error"):
            client.push("down", b"x")
        assert time.monotonic() - started < 2.0
        # QNOTIFY's initial check fails in Redis like any command (okq-protocol.md §3)
        started = time.monotonic()
        assert waiter.call("QNOTIFY", 5) == b"-ERR unexpected server-side error\r\n"
        assert time.monotonic() - started < 2.0
        assert waiter.call("PING") == b"+PONG\r\n"

        proc.start()  # same port, empty (nothing was saved)
        poll(lambda: conn.call("QLPUSH", "down", "e3", "c3"), OK, 5.0)
        assert conn.call("QSTATUS", "down") == b"*1\r\n" + status(b"down", 1, 0, 0)
        assert client.peek_next("down") is not None
        # the pubsub connection is back too: a waiting QNOTIFY is woken by a push
        w = Resp(HOST, server.port)
        try:
            assert w.call("QREGISTER", "down2") == OK
            watcher = Resp(*proc.address)
            try:
                want = b"*2\r\n" + bulk(b"queue:{down2}") + b":1\r\n"
                poll(lambda: watcher.call("PUBSUB", "NUMSUB", "queue:{down2}"), want, 5.0)
            finally:
                watcher.close()
            w.send("QNOTIFY", 10)
            time.sleep(0.1)
            assert conn.call("QLPUSH", "down2", "n", "c") == OK
            assert w.read() == bulk(b"down2")
        finally:
            w.close()
    finally:
        waiter.close()
        client.close()
        conn.close()
        server.stop()
        proc.stop()


def test_unreachable_redis_at_start() -> None:
    storage = RedisStorage.from_url(f"redis://{HOST}:{free_port()}/0", connect_timeout_s=0.5)
    server = ThreadedServer(HOST, 0, storage=storage)
    with pytest.raises(RuntimeError) as info:
        server.start()
    assert isinstance(info.value.__cause__, RedisUnavailableError)
    assert isinstance(info.value.__cause__, StorageError)
    assert not server.running


@pytest.mark.parametrize(
    ("url", "cluster", "why"),
    [
        ("http://127.0.0.1:6379", False, "expected redis://"),
        ("redis://127.0.0.1:nope/0", False, "bad port"),
        ("redis:///0", False, "no host"),
        ("redis://127.0.0.1:6379/x", False, "database"),
        ("redis://127.0.0.1", True, "needs HOST:PORT"),
        ("redis://127.0.0.1:7000/3", True, "only 0"),
        ("unix:///tmp/r.sock", True, "expected redis://"),
    ],
)
def test_bad_urls(url: str, cluster: bool, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        RedisStorage(url, cluster=cluster)


def test_storage_options_are_checked() -> None:
    with pytest.raises(ValueError, match="sweep_interval_s must be positive"):
        RedisStorage.from_url("redis://127.0.0.1:6379/0", sweep_interval_s=0)


def _okq(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "okq_transports", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cli_serve_redis(redis: RedisProcess) -> None:
    proc = _okq("serve", "--redis", redis.url, "--port", "0", "--sweep-interval", "0.5")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("okq server listening on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        conn = Resp(HOST, port)
        try:
            assert conn.call("QLPUSH", "cli-q", "e", "c") == OK
            assert conn.call("QRPOP", "cli-q", "EX", 1) == event(b"e", b"c")
            poll(lambda: conn.call("QRPEEK", "cli-q"), event(b"e", b"c"), 5.0)
        finally:
            conn.close()
        watcher = Resp(*redis.address)
        try:
            assert watcher.call("LRANGE", "queue:{cli-q}", 0, -1) == b"*1\r\n" + bulk(b"e")
            assert watcher.call("DEL", "queue:{cli-q}", "queue:{cli-q}:items") == b":2\r\n"
        finally:
            watcher.close()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "okq server stopped" in err


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--redis", "http://x"], 2, "bad Redis URL 'http://x'"),
        (["--redis-cluster", "redis://127.0.0.1"], 2, "a cluster seed needs HOST:PORT"),
        (["--redis", "redis://127.0.0.1:1/0"], 1, "cannot serve on Redis redis://127.0.0.1:1/0"),
        (
            ["--redis", "redis://127.0.0.1:1/0", "--redis-cluster", "redis://127.0.0.1:2"],
            2,
            "not allowed with argument",
        ),
    ],
)
def test_cli_serve_redis_errors(argv: list[str], code: int, message: str) -> None:
    proc = _okq("serve", "--port", "0", *argv)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == code, (out, err)
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert out == ""


def test_status_without_arguments_reads_names_exactly(redis: RedisProcess) -> None:
    """D3 and the layout's one ambiguity: ``queue:{*}:items`` also matches a lock key whose id
    ends in ``}:items``; only hashes are contents, so the listing is exact."""
    server = ours(redis.url)
    conn = Resp(HOST, server.port)
    names = [b"d3:a", b"", b"}x", b"plain"]
    try:
        for name in names:
            assert conn.call("QLPUSH", name, "e", "c") == OK
        assert conn.call("QLPUSH", "lk", "x}:items", "c") == OK
        assert conn.call("QRPOP", "lk", "EX", 60) == event(b"x}:items", b"c")
        listed = conn.call("QSTATUS")
        for name in [*names, b"lk"]:
            assert status(name, 1, 1 if name == b"lk" else 0, 0) in listed
        assert b"lk}:lock:x" not in listed
        assert listed.startswith(b"*5\r\n")
    finally:
        for name in [*names, b"lk"]:
            conn.call("QFLUSH", name)
        conn.close()
        server.stop()


def test_ids_with_no_contents_pop_empty(redis: RedisProcess) -> None:
    """okq: an event whose contents are missing from Redis peeks as nil and pops empty."""
    server = ours(redis.url)
    conn = Resp(HOST, server.port)
    watcher = Resp(*redis.address)
    try:
        assert watcher.call("LPUSH", "queue:{nc}", "ghost") == b":1\r\n"
        assert conn.call("QRPEEK", "nc") == NIL
        assert conn.call("QRPOP", "nc", "EX", 0) == event(b"ghost", b"")
    finally:
        watcher.call("DEL", "queue:{nc}", "queue:{nc}:claimed")
        watcher.close()
        conn.close()
        server.stop()


def test_consumer_refresh_restamps_ours_and_drops_the_stale(redis: RedisProcess) -> None:
    storage = RedisStorage.from_url(redis.url, refresh_interval_s=0.3, consumer_ttl_s=30)
    server = ThreadedServer(HOST, 0, storage=storage, seed=0).start()
    consumer = Resp(HOST, server.port)
    watcher = Resp(*redis.address)
    key = "queue:{rf}:consumers"
    try:
        assert consumer.call("QREGISTER", "rf") == OK
        (member,) = bulk_strings(watcher.call("ZRANGE", key, 0, -1))
        now = int(time.time())
        assert watcher.call("ZADD", key, now - 25, member) == b":0\r\n"  # as if not refreshed
        assert watcher.call("ZADD", key, now - 31, "dead-instance") == b":1\r\n"
        assert watcher.call("ZADD", key, now, "live-elsewhere") == b":1\r\n"
        poll(lambda: watcher.call("ZCARD", key), b":2\r\n", 3.0)
        assert int(watcher.call("ZSCORE", key, member)[4:-2]) >= now - 1
        assert consumer.call("QSTATUS", "rf") == b"*1\r\n" + status(b"rf", 0, 0, 2)
    finally:
        watcher.call("DEL", key)
        watcher.close()
        consumer.close()
        server.stop()


def test_concurrent_requests_share_pipelines(redis: RedisProcess) -> None:
    """200 clients pushing at once: their commands travel in a few pipelines, over a few
    Redis connections, not one connection per request."""
    server = ours(redis.url)
    watcher = Resp(*redis.address)
    clients = [Resp(HOST, server.port) for _ in range(200)]
    try:
        for round_no in range(3):
            for n, c in enumerate(clients):
                c.send("QLPUSH", "pipe", f"e{round_no}-{n}", "c")
            assert all(c.read() == OK for c in clients)
        assert clients[0].call("QSTATUS", "pipe") == b"*1\r\n" + status(b"pipe", 600, 0, 0)
        info = watcher.call("INFO", "clients")
        connected = int(info.split(b"connected_clients:")[1].split(b"\r\n")[0])
        print(f"Redis connections after 3 x 200 concurrent pushes: {connected}")
        assert connected <= 40, info  # ours (pool + pubsub) and the watcher
    finally:
        clients[0].call("QFLUSH", "pipe")
        for c in clients:
            c.close()
        watcher.close()
        server.stop()


def test_expiry_too_large_for_redis_leaves_the_claim_for_the_sweep(redis: RedisProcess) -> None:
    """okq: the pop script fails at its SET, the id stays claimed without a lock, and the
    next sweep puts it back."""
    server = ours(redis.url, sweep_interval_s=FAST_SWEEP_S)
    conn = Resp(HOST, server.port)
    try:
        assert conn.call("QLPUSH", "huge", "e", "c") == OK
        reply = conn.call("QRPOP", "huge", "EX", 9223372036854775)
        assert reply == b"-ERR unexpected server-side error\r\n"
        assert conn.call("QSTATUS", "huge") in (
            b"*1\r\n" + status(b"huge", 1, 1, 0),
            b"*1\r\n" + status(b"huge", 1, 0, 0),  # already swept back
        )
        poll(lambda: conn.call("QRPEEK", "huge"), event(b"e", b"c"), 3.0)
    finally:
        conn.call("QFLUSH", "huge")
        conn.close()
        server.stop()


def test_claims_are_swept_back_by_the_other_instance(redis: RedisProcess) -> None:
    """An instance that never sweeps (ours with a sweep far away) relies on the other one,
    as okq instances do; with ``OKQ_INTEROP_PEER`` the other one is that okq."""
    peer = _peer()
    url = redis.url if peer is None else f"redis://{peer[1][0]}:{peer[1][1]}/0"
    lazy = ours(url, sweep_interval_s=3600)
    other = ours(url, sweep_interval_s=FAST_SWEEP_S) if peer is None else None
    other_addr = (other.host, other.port) if other is not None else peer[0]  # type: ignore[index]
    conn, seen = Resp(HOST, lazy.port), Resp(*other_addr)
    queue = f"sweep-{time.monotonic_ns()}"
    try:
        assert conn.call("QLPUSH", queue, "e", "c") == OK
        assert conn.call("QRPOP", queue, "EX", 1) == event(b"e", b"c")
        took = poll(lambda: conn.call("QRPEEK", queue), event(b"e", b"c"), 13.0)
        print(f"swept back by the other instance after {took:.2f} s")
        assert seen.call("QRPOP", queue, "EX", 0) == event(b"e", b"c")
    finally:
        conn.call("QFLUSH", queue)
        conn.close()
        seen.close()
        lazy.stop()
        if other is not None:
            other.stop()


def test_registrations_outlive_the_other_instances_refresh(redis: RedisProcess) -> None:
    """The other instance drops registrations not re-stamped for 30 s; ours re-stamps every
    10 s, so its consumers stay counted there (against ours: the same with 2 s and 0.5 s)."""
    peer = _peer()
    if peer is None:
        a = ours(redis.url, refresh_interval_s=0.5, consumer_ttl_s=2)
        b = ours(redis.url, refresh_interval_s=0.5, consumer_ttl_s=2)
        other, wait_s, servers = (b.host, b.port), 4.0, [a, b]
    else:
        a = ours(f"redis://{peer[1][0]}:{peer[1][1]}/0")
        other, wait_s, servers = peer[0], 32.0, [a]
    queue = f"stay-{time.monotonic_ns()}".encode()
    consumer, watcher = Resp(HOST, a.port), Resp(*other)
    try:
        assert consumer.call("QREGISTER", queue) == OK
        time.sleep(wait_s)
        assert watcher.call("QSTATUS", queue) == b"*1\r\n" + status(queue, 0, 0, 1)
        consumer.close()
        poll(lambda: watcher.call("QSTATUS", queue), b"*1\r\n" + status(queue, 0, 0, 0), 3.0)
    finally:
        consumer.close()
        watcher.close()
        for server in servers:
            server.stop()


def test_scripts_are_loaded_again_after_script_flush(redis: RedisProcess) -> None:
    """The pop and restore scripts go by EVALSHA; a Redis that lost them (SCRIPT FLUSH, a
    restart) gets them again by EVAL."""
    server = ours(redis.url, sweep_interval_s=FAST_SWEEP_S)
    conn, watcher = Resp(HOST, server.port), Resp(*redis.address)
    try:
        assert conn.call("QLPUSH", "sf", "e", "c") == OK
        assert watcher.call("SCRIPT", "FLUSH") == OK
        assert conn.call("QRPOP", "sf", "EX", 1) == event(b"e", b"c")
        assert watcher.call("SCRIPT", "FLUSH") == OK
        poll(lambda: conn.call("QRPEEK", "sf"), event(b"e", b"c"), 5.0)  # the restore script
        assert conn.call("QRPOP", "sf", "EX", 0) == event(b"e", b"c")
    finally:
        conn.close()
        watcher.close()
        server.stop()


def test_without_redis_py_the_server_imports_and_the_storage_says_what_to_install() -> None:
    code = (
        "import sys, asyncio\n"
        "sys.modules['redis'] = None  # as if redis-py were not installed\n"
        "import okq_transports.server as s\n"
        "storage = s.RedisStorage.from_url('redis://127.0.0.1:1/0')\n"
        "try:\n"
        "    asyncio.run(storage.start())\n"
        "except s.RedisMissingError as exc:\n"
        "    print('missing:', exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == "missing: Redis storage needs redis-py: pip install 'okq[redis]'\n"
    code = "import sys, okq_transports.server; print('redis' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout == "False\n"
