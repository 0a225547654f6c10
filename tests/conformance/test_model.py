"""Tests of the model-based random sequences (``conformance.model``).

The model must agree with the embedded server over many seeds; put a deliberately broken
server in front of it (`FaultyProxy`: a request/reply-rewriting TCP proxy before the embedded
server) and a run must find the fault, shrink it to a handful of steps and write a transcript
that fails against the broken server and passes against the good one.  The shrinker, the
ledger of invariants and the transcript writer are also tested on their own.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import pytest

from conformance import (
    Outcome,
    load_transcript,
    parse_scenario,
    replay_scenario,
    run_probe,
    run_scenarios,
)
from conformance._model_exec import execute
from conformance._model_ledger import Ledger
from conformance._model_ref import ReferenceModel
from conformance._net import ReadFailure, connect
from conformance._resp import RespSimple, encode_command, parse_reply
from conformance.model import (
    PROFILES,
    ModelStep,
    ddmin,
    generate,
    model_checks,
    run_model,
    run_queues,
    shrink,
    to_transcript,
)
from conformance.model_main import main
from okq_proto import NEED_DATA
from okq_proto.server import CommandReceived, ServerConnection
from okq_transports.server import ThreadedServer

#: Our server waits at once; real okq subscribes a moment after QREGISTER.
FAST_WAKE_S: Final = 0.005
#: How long a proxy thread may live (every loop is bounded by it).
_PROXY_LIFETIME_S: Final = 60.0

#: A request rewriter: (per-connection state, argv) -> argv to forward.
Rewrite = Callable[[dict[str, int], tuple[bytes, ...]], tuple[bytes, ...]]
#: A reply rewriter: (per-connection state, original argv, reply) -> reply to return.
Answer = Callable[[dict[str, int], tuple[bytes, ...], bytes], bytes]


def _same_request(state: dict[str, int], argv: tuple[bytes, ...]) -> tuple[bytes, ...]:
    return argv


def _same_reply(state: dict[str, int], argv: tuple[bytes, ...], reply: bytes) -> bytes:
    return reply


class FaultyProxy:
    """A loopback TCP proxy in front of an okq server that rewrites requests and replies.

    Each client connection gets its own upstream connection and a state dict for the
    rewriters; requests are answered one at a time, in order.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        rewrite: Rewrite = _same_request,
        answer: Answer = _same_reply,
    ) -> None:
        self.upstream = upstream
        self.rewrite = rewrite
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.host, self.port = self.listener.getsockname()[:2]
        self.stopped = threading.Event()
        self.threads: list[threading.Thread] = []
        self.started = time.monotonic()

    def alive(self) -> bool:
        return not self.stopped.is_set() and time.monotonic() - self.started < _PROXY_LIFETIME_S

    def __enter__(self) -> FaultyProxy:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self.threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        for thread in list(self.threads):
            thread.join(timeout=2)
        self.listener.close()

    def refuse(self) -> None:
        """Stop accepting connections (open ones stay)."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()

    def _accept(self) -> None:
        while self.alive():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve(self, client: socket.socket) -> None:
        machine = ServerConnection()
        state: dict[str, int] = {}
        client.settimeout(0.05)
        upstream = None
        try:
            upstream = connect(*self.upstream, "upstream")
            while self.alive():
                event = machine.next_event()
                if isinstance(event, CommandReceived):
                    upstream.send(encode_command(*self.rewrite(state, event.argv)), 5.0)
                    reply, _ = upstream.read_reply(time.monotonic() + 10.0)
                    machine.send_reply(b"")
                    machine.data_to_send()
                    client.sendall(self.answer(state, event.argv, reply))
                    continue
                if event is not NEED_DATA:  # an invalid request, the client's close, ...
                    return
                try:
                    data = client.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                machine.receive_data(data)
        except (OSError, ReadFailure):
            return
        finally:
            if upstream is not None:
                upstream.close()
            client.close()


# -- the faults ---------------------------------------------------------------------------------


def duplicate_as_ok(state: dict[str, int], argv: tuple[bytes, ...], reply: bytes) -> bytes:
    """A duplicate push is answered +OK (the event is still not stored twice)."""
    return b"+OK\r\n" if reply.startswith(b"-ERR duplicate event") else reply


def drop_every_third_ack(state: dict[str, int], argv: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """Every third QACK of a connection acknowledges nothing (and is answered :1 below)."""
    if argv[0].upper() != b"QACK":
        return argv
    state["acks"] = state.get("acks", 0) + 1
    if state["acks"] % 3 == 0:
        state["dropped"] = 1
        return (b"PING",)
    return argv


def dropped_ack_says_one(state: dict[str, int], argv: tuple[bytes, ...], reply: bytes) -> bytes:
    if state.pop("dropped", 0):
        return b":1\r\n"
    return reply


def status_total_plus_one(state: dict[str, int], argv: tuple[bytes, ...], reply: bytes) -> bytes:
    """QSTATUS reports one more event than a non-empty queue stores."""
    if argv[0].upper() != b"QSTATUS":
        return reply
    entries = parse_reply(reply)
    assert isinstance(entries, list)
    parts = [b"*%d\r\n" % len(entries)]
    for entry in entries:
        assert isinstance(entry, list)
        name, total, processing, consumers = entry
        assert isinstance(name, bytes)
        assert isinstance(total, int)
        assert isinstance(processing, int)
        assert isinstance(consumers, int)
        parts.append(b"*4\r\n$%d\r\n%b\r\n" % (len(name), name))
        parts.append(b":%d\r\n:%d\r\n:%d\r\n" % (total + (total > 0), processing, consumers))
    return b"".join(parts)


def ping_answered_twice(state: dict[str, int], argv: tuple[bytes, ...], reply: bytes) -> bytes:
    """PING gets two replies (the second one is read as the next request's)."""
    return reply * 2 if argv[0].upper() == b"PING" else reply


FAULTS: Final = {
    # fault: (request rewriter, reply rewriter, most steps a shrunk sequence may keep)
    "duplicate_as_ok": (_same_request, duplicate_as_ok, 3),
    "drop_every_third_ack": (drop_every_third_ack, dropped_ack_says_one, 4),
    "status_total_plus_one": (_same_request, status_total_plus_one, 3),
    "ping_answered_twice": (_same_request, ping_answered_twice, 1),
}


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    srv = ThreadedServer("127.0.0.1", 0, seed=0)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


# -- the model against the embedded server -----------------------------------------------------


def test_model_agrees_with_embedded_server_over_many_seeds(server: ThreadedServer) -> None:
    started = time.monotonic()
    sequences = 0
    for seed in range(6):
        report = run_model(
            server.host, server.port, seed=seed, runs=4, steps=50, wake_delay_s=FAST_WAKE_S
        )
        assert report.ok, "\n".join(report.format())
        sequences += report.sequences
        assert report.steps > report.sequences * 50
    assert sequences == 6 * 4 * len(PROFILES)
    assert time.monotonic() - started < 20


def test_generation_is_seeded_and_stays_off_the_defects() -> None:
    queues, spare = run_queues("events", 3, 1)
    first = generate(random.Random(5), queues, spare, 80, "consumers")
    assert first == generate(random.Random(5), queues, spare, 80, "consumers")
    assert first != generate(random.Random(6), queues, spare, 80, "consumers")
    for name in (*queues, spare):
        assert name
        assert b":" not in name
    commands = {s.argv[0].upper() for s in first if s.argv is not None}
    assert {b"QLPUSH", b"QRPOP", b"QACK", b"QREGISTER", b"QNOTIFY", b"QSTATUS"} <= commands
    assert any(s.is_close for s in first)
    for step in first:
        if step.argv is not None and step.argv[0].upper() in (b"QLPUSH", b"QRPUSH"):
            assert b"\r" not in step.argv[2]
            assert b"\n" not in step.argv[2]


def test_model_checks_are_semantic_checks_with_their_own_queues(server: ThreadedServer) -> None:
    checks = model_checks(seed=2, runs=3, steps=30)
    names = [c.name for c in checks]
    assert len(set(names)) == len(names) == len(PROFILES)
    seen: set[bytes] = set()
    for check in checks:
        assert check.section.startswith("§")
        assert check.queues
        assert not seen & set(check.queues)
        assert all(b":" not in q for q in check.queues)
        seen |= set(check.queues)
        assert not check.needs_empty_server
    report = run_scenarios(server.host, server.port, checks, jobs=2, pause_s=0.05)
    assert report.ok, report.format_text()
    assert {r.section for r in report.results} == {c.section for c in checks}


# -- against broken servers -------------------------------------------------------------------


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_broken_server_is_found_shrunk_and_written_out(
    server: ThreadedServer, tmp_path: Path, fault: str
) -> None:
    rewrite, answer, minimal = FAULTS[fault]
    with FaultyProxy((server.host, server.port), rewrite, answer) as proxy:
        report = run_model(
            proxy.host,
            proxy.port,
            seed=0,
            runs=10,
            steps=60,
            out_dir=tmp_path,
            settle_s=0.5,
            wake_delay_s=FAST_WAKE_S,
        )
        assert not report.ok
        (finding,) = report.findings
        assert finding.original_length > 40
        assert 1 <= len(finding.steps) <= minimal, "\n".join(finding.format())
        assert finding.transcript is not None
        assert finding.transcript.parent == tmp_path
        scenario = load_transcript(finding.transcript)
        assert scenario.name == finding.name
        assert len(scenario.steps) >= len(finding.steps)
        bad = replay_scenario(proxy.host, proxy.port, scenario, pause_s=0.05)
        assert bad.outcome is Outcome.FAIL, bad.details
    good = run_scenarios(server.host, server.port, [scenario], pause_s=0.05)
    assert good.ok, good.format_text()


def test_a_model_check_fails_on_a_broken_server_and_writes_its_transcript(
    server: ThreadedServer, tmp_path: Path
) -> None:
    check = model_checks(seed=1, runs=5, steps=60, out_dir=tmp_path)[0]
    with FaultyProxy((server.host, server.port), answer=duplicate_as_ok) as proxy:
        result = run_probe(proxy.host, proxy.port, check, pause_s=0.05)
    assert result.outcome is Outcome.FAIL
    assert result.section == check.section
    (written,) = tmp_path.glob("model_*.json")
    assert any(str(written) in line for line in result.details)


def test_a_failure_that_does_not_come_back_is_not_shrunk(server: ThreadedServer) -> None:
    faults = [1]

    def once(state: dict[str, int], argv: tuple[bytes, ...], reply: bytes) -> bytes:
        if faults and reply.startswith(b"-ERR duplicate event"):
            faults.pop()
            return b"+OK\r\n"
        return reply

    with FaultyProxy((server.host, server.port), answer=once) as proxy:
        report = run_model(proxy.host, proxy.port, runs=10, steps=60, wake_delay_s=FAST_WAKE_S)
    (finding,) = report.findings
    assert not finding.reproduced
    assert finding.shrink_runs == 2
    assert len(finding.steps) == finding.original_length
    assert "not again in 2 re-runs" in finding.format()[0]


def test_shrinking_stops_when_its_budget_is_spent(server: ThreadedServer) -> None:
    with FaultyProxy((server.host, server.port), answer=duplicate_as_ok) as proxy:
        started = time.monotonic()
        report = run_model(
            proxy.host,
            proxy.port,
            runs=10,
            steps=60,
            wake_delay_s=FAST_WAKE_S,
            shrink_budget_s=0.3,
        )
        spent = time.monotonic() - started
    (finding,) = report.findings
    assert finding.reproduced  # the re-run came first, within the budget
    assert 1 <= finding.shrink_runs < 30, finding.shrink_runs  # unbounded, it runs ~100
    assert len(finding.steps) <= finding.original_length
    assert spent < 20.0, spent


def test_a_server_gone_while_shrinking_is_an_error(server: ThreadedServer) -> None:
    proxies: list[FaultyProxy] = []

    def answer(state: dict[str, int], argv: tuple[bytes, ...], reply: bytes) -> bytes:
        if reply.startswith(b"-ERR duplicate event"):
            proxies[0].refuse()  # the shrinker cannot start another run
            return b"+OK\r\n"
        return reply

    with FaultyProxy((server.host, server.port), answer=answer) as proxy:
        proxies.append(proxy)
        report = run_model(proxy.host, proxy.port, runs=10, steps=60, wake_delay_s=FAST_WAKE_S)
    (finding,) = report.findings
    (error,) = report.errors
    assert "not shrunk, the server stopped answering" in error
    assert len(finding.steps) == finding.original_length
    assert finding.shrink_runs == 1
    assert not report.ok


def test_connections_spread_over_several_servers(server: ThreadedServer) -> None:
    # Two doors to one storage: directly, and through a proxy (faulty or not).
    with FaultyProxy((server.host, server.port)) as proxy:
        good = run_model(
            server.host,
            server.port,
            seed=6,
            runs=3,
            steps=40,
            others=[(proxy.host, proxy.port)],
            wake_delay_s=FAST_WAKE_S,
        )
    assert good.ok, "\n".join(good.format())
    with FaultyProxy((server.host, server.port), answer=duplicate_as_ok) as proxy:
        bad = run_model(
            server.host,
            server.port,
            seed=6,
            runs=10,
            steps=60,
            others=[(proxy.host, proxy.port)],
            wake_delay_s=FAST_WAKE_S,
        )
    (finding,) = bad.findings
    assert any(s.conn % 2 == 1 for s in finding.steps)  # the odd connections met the fault


def test_a_transparent_proxy_passes(server: ThreadedServer) -> None:
    with FaultyProxy((server.host, server.port)) as proxy:
        report = run_model(
            proxy.host, proxy.port, seed=4, runs=3, steps=40, wake_delay_s=FAST_WAKE_S
        )
    assert report.ok, "\n".join(report.format())


# -- the shrinker -------------------------------------------------------------------------------


def test_ddmin_finds_the_two_culprits_within_budget() -> None:
    calls: list[int] = []

    def fails(items: list[int]) -> bool:
        calls.append(len(items))
        assert items
        return 13 in items and 71 in items and items.index(13) < items.index(71)

    assert ddmin(list(range(100)), fails) == [13, 71]
    assert len(calls) < 100


def test_ddmin_stops_at_its_budget_with_a_failing_list() -> None:
    calls = []

    def fails(items: list[int]) -> bool:
        calls.append(1)
        return sum(items) >= 50

    small = ddmin(list(range(20)), fails, max_tests=5)
    assert len(calls) == 5
    assert sum(small) >= 50


def test_ddmin_is_one_minimal() -> None:
    def fails(items: list[int]) -> bool:
        return len([i for i in items if i % 7 == 0]) >= 3

    small = ddmin(list(range(1, 60)), fails)
    assert small == [7, 14, 21] or (len(small) == 3 and all(i % 7 == 0 for i in small))
    for i in range(len(small)):
        assert not fails(small[:i] + small[i + 1 :])


def test_shrink_drops_whole_connections() -> None:
    steps = [ModelStep(i % 4, (b"PING", b"%d" % i)) for i in range(40)]

    def fails(candidate: list[ModelStep]) -> bool:
        # Fails when conn 2 sends anything after conn 1 did.
        conns = [s.conn for s in candidate]
        return 1 in conns and 2 in conns[conns.index(1) :]

    small = shrink(steps, fails)
    assert [s.conn for s in small] == [1, 2]


# -- ledger, reference model, transcripts -----------------------------------------------------


def test_ledger_catches_a_second_delivery_and_a_lost_event() -> None:
    ledger = Ledger()
    assert ledger.observe(0, (b"QLPUSH", b"q", b"e1", b"c"), b"+OK\r\n") == []
    event = b"*2\r\n$2\r\ne1\r\n$1\r\nc\r\n"
    assert ledger.observe(0, (b"QRPOP", b"q"), event) == []
    (problem,) = ledger.observe(1, (b"QRPOP", b"q"), event)
    assert "again while its claim is live" in problem
    assert ledger.observe(0, (b"QLPUSH", b"q", b"e2", b"d"), b"+OK\r\n") == []
    (problem,) = ledger.observe(0, (b"QRPOP", b"q", b"EX", b"0"), b"$-1\r\n")
    assert problem.startswith("lost")
    (problem,) = ledger.observe(0, (b"QSTATUS", b"q"), b"*1\r\n*4\r\n$1\r\nq\r\n:1\r\n:1\r\n:0\r\n")
    assert "(2, 1, 0)" in problem
    (problem,) = ledger.observe(0, (b"QACK", b"q", b"nope"), b":1\r\n")
    assert "not stored" in problem


def test_reference_model_settles_and_sets() -> None:
    model = ReferenceModel()
    push = model.send(0, (b"QLPUSH", b"q", b"e1", b"c", b"NOBLOCK"))
    assert push.replies == {b"+OK\r\n"}
    assert push.settle
    model.send(0, (b"QLPUSH", b"r", b"e1", b"c"))
    assert model.send(1, (b"QREGISTER", b"q", b"r", b"q")).exact == b"+OK\r\n"
    notify = model.send(1, (b"QNOTIFY", b"0"))
    assert notify.replies == {b"$1\r\nq\r\n", b"$1\r\nr\r\n"}
    assert notify.exact is None
    assert model.close(1).settle
    assert not model.close(0).settle
    assert model.status_reply((b"q",)) == b"*1\r\n*4\r\n$1\r\nq\r\n:1\r\n:0\r\n:0\r\n"


def test_transcript_of_a_sequence_replays(server: ThreadedServer, tmp_path: Path) -> None:
    q, r = b"mdl-test-q", b"mdl-test-r"
    steps = [
        ModelStep(0, (b"QLPUSH", q, b"e1", b"\xff\x00bin")),
        ModelStep(0, (b"QRPUSH", r, b"e2", b"x", b"NOBLOCK")),
        ModelStep(1, (b"QREGISTER", q, r)),
        ModelStep(1, (b"QNOTIFY", b"0")),
        ModelStep(1, None),
        ModelStep(2, (b"QSTATUS", q, r)),
        ModelStep(2, (b"QRPOP", q, b"EX", b"0")),
    ]
    document = to_transcript("model_test", "a test", (q, r), steps)
    path = tmp_path / "model_test.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    scenario = parse_scenario(json.loads(path.read_text(encoding="utf-8")), path=path)
    assert scenario.connections == 4  # and one that watches the server settle
    assert scenario.steps[2].sleep_before > 0  # after the NOBLOCK push
    assert scenario.steps[2].send == encode_command(b"QSTATUS", q, r)
    assert scenario.steps[4].expect_any_of is not None
    assert scenario.steps[4].elapsed_max is not None  # QNOTIFY 0 answers at once
    assert scenario.steps[6].sleep_before > 0  # after the consumer's close
    assert scenario.steps[8].expect == b"*2\r\n$2\r\ne1\r\n$5\r\n\xff\x00bin\r\n"
    assert "send_b64" in document["steps"][0]  # type: ignore[index]
    result = replay_scenario(server.host, server.port, scenario, pause_s=0.05)
    assert result.outcome is Outcome.PASS, result.details


def test_a_consumer_closing_during_its_qnotify(server: ThreadedServer, tmp_path: Path) -> None:
    q = b"mdl-test-abandon"
    steps = [
        ModelStep(0, (b"QREGISTER", q)),
        ModelStep(0, (b"QNOTIFY", b"1"), abandon=True),
        ModelStep(1, (b"QSTATUS", q)),
    ]
    started = time.monotonic()
    assert execute(server.host, server.port, (q,), steps).failed_at is None
    assert time.monotonic() - started > 0.9  # the server noticed the close after the wait
    document = to_transcript("model_abandon", "a test", (q,), steps)
    scenario = parse_scenario(document)
    assert [s.close for s in scenario.steps] == [False, False, True, False, False, False]
    assert scenario.steps[3].expect is not None
    assert b":1\r\n" in scenario.steps[3].expect  # still counted
    assert scenario.steps[4].sleep_before > 1.0
    result = replay_scenario(server.host, server.port, scenario, pause_s=0.05)
    assert result.outcome is Outcome.PASS, result.details


# -- the command line ---------------------------------------------------------------------------


def test_cli_passes_fails_and_rejects_usage(
    server: ThreadedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--server", server.address, "--runs", "2", "--steps", "20"]) == 0
    assert "sequences/s" in capsys.readouterr().out
    with FaultyProxy((server.host, server.port), answer=duplicate_as_ok) as proxy:
        status = main(["--server", f"{proxy.host}:{proxy.port}", "--out", str(tmp_path)])
    assert status == 1
    out = capsys.readouterr().out
    (written,) = tmp_path.glob("*.json")
    assert str(written) in out
    assert main(["--server", "nonsense"]) == 2
    assert main(["--server", server.address, "--runs", "0"]) == 2
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    assert main(["--server", f"127.0.0.1:{port}"]) == 2
    assert main([]) == 2
    capsys.readouterr()


def test_proxy_forwards_replies_unchanged(server: ThreadedServer) -> None:
    with FaultyProxy((server.host, server.port)) as proxy:
        conn = connect(proxy.host, proxy.port, "c")
        with contextlib.closing(conn.sock):
            conn.send(encode_command(b"PING"), 5.0)
            reply, _ = conn.read_reply(time.monotonic() + 5.0)
    assert parse_reply(reply) == RespSimple(b"PONG")
