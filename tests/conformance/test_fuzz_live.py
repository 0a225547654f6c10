"""The live fuzzer (``python -m conformance.fuzz --server``) against fakes with known faults.

Each fault has its own small fake written against the fuzzer's model of okq's reader (so
the fake is otherwise what the model expects): one that hangs on a command, one that
answers a command with broken RESP, one that drops every other connection, one that
"crashes" on a short header and can be restarted on the same port. The shared
``FakeServer(crash_on_bad_header=True)`` reproduces D1; the embedded server must give no
finding.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conformance import load_transcript, replay_scenario
from conformance._report import Outcome
from conformance.fuzz import __main__ as fuzz_main
from conformance.fuzz._live_minimise import minimise, tokens
from conformance.fuzz._live_model import Ending, expect, next_request
from conformance.fuzz._live_mutate import build_corpus, mutate
from conformance.fuzz.live import LiveOptions, LiveReport, run_live
from okq_transports.server import ThreadedServer

from .fakeserver import FakeServer

_OTHER_COMMANDS = frozenset(
    {b"QRPUSH", b"QLPEEK", b"QREGISTER", b"QNOTIFY", b"QFLUSH", b"QSTATUS", b"QINFO"}
)

_ARITY = {b"QLPUSH": 4, b"QRPEEK": 2, b"QRPOP": 2, b"QACK": 3}


class ModelServer:
    """A loopback server that reads requests as the fuzzer's model does, with optional faults.

    Commands: PING, a tiny QLPUSH/QRPEEK/QRPOP/QACK (enough for the sentinel), unknown
    commands answered as okq does (ASCII names), anything else ``+OK``. Faults:
    ``hang_on`` (never answer that command, nor anything after it on that connection),
    ``broken_on`` (answer it with ``:1x``), ``drop_others_on`` (close every other
    connection), ``crash_on_short_header`` (close the listener and every connection).
    """

    def __init__(
        self,
        *,
        hang_on: bytes | None = None,
        broken_on: bytes | None = None,
        drop_others_on: bytes | None = None,
        crash_on_short_header: bool = False,
    ) -> None:
        self.hang_on = hang_on
        self.broken_on = broken_on
        self.drop_others_on = drop_others_on
        self.crash_on_short_header = crash_on_short_header
        self.lock = threading.Lock()
        self.queues: dict[bytes, list[tuple[bytes, bytes]]] = {}
        self.claimed: set[tuple[bytes, bytes]] = set()
        self.clients: set[socket.socket] = set()
        self.port = 0
        self.crashes = 0
        self.listener: socket.socket | None = None
        self.stopped = threading.Event()
        self.start()

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def start(self) -> None:
        """Listen (on the same port as before, after the first start)."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self.listener = listener
        self.stopped = threading.Event()
        self.acceptor = threading.Thread(
            target=self._accept, args=(listener, self.stopped), daemon=True
        )
        self.acceptor.start()

    def crash(self) -> None:
        """Stop listening and drop every connection."""
        with self.lock:
            self.crashes += 1
            clients = list(self.clients)
            self.clients.clear()
        self.stopped.set()
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)

    def restart(self) -> None:
        self.crash()
        self.acceptor.join(timeout=5)  # its poll holds the listening socket until it returns
        self.start()

    def _accept(self, listener: socket.socket, stopped: threading.Event) -> None:
        while not stopped.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one write per reply
            with self.lock:
                self.clients.add(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        buf = b""
        try:
            while True:
                read = next_request(buf)
                if read is Ending.INCOMPLETE:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                    continue
                if isinstance(read, Ending):
                    if self.crash_on_short_header and expect(buf).d1:
                        self.crash()
                    return
                argv, answered, end = read
                buf = buf[end:]
                if not answered:
                    continue
                reply = self._reply(client, argv)
                if reply is None:
                    time.sleep(30)
                    return
                client.sendall(reply)
        except OSError:
            return
        finally:
            with self.lock:
                self.clients.discard(client)
            client.close()

    def _reply(self, client: socket.socket, argv: tuple[bytes, ...] | None) -> bytes | None:
        if argv is None:
            return b"-ERR invalid command\r\n"
        if not argv:
            return b'-ERR unknown command ""\r\n'
        name = argv[0].upper()
        if name == self.hang_on:
            return None
        if name == self.broken_on:
            return b":1x\r\n"
        if name == self.drop_others_on:
            with self.lock:
                others = [c for c in self.clients if c is not client]
            for other in others:
                with contextlib.suppress(OSError):
                    other.shutdown(socket.SHUT_RDWR)
        if name == b"PING":
            return b"+PONG\r\n"
        if name in _ARITY:
            return (
                self._queue(name, argv) if len(argv) >= _ARITY[name] else b"-ERR missing args\r\n"
            )
        if name in _OTHER_COMMANDS:
            return b"+OK\r\n"
        if argv[0].replace(b"-", b"").isalnum() and argv[0].isascii():
            return b'-ERR unknown command "' + argv[0] + b'"\r\n'
        return b'-ERR unknown command "?"\r\n'  # okq quotes it; not needed here

    def _queue(self, name: bytes, argv: tuple[bytes, ...]) -> bytes:
        with self.lock:
            events = self.queues.setdefault(argv[1], [])
            if name == b"QLPUSH":
                events.insert(0, (argv[2], argv[3]))
                return b"+OK\r\n"
            if name == b"QACK":
                found = (argv[1], argv[2]) in self.claimed
                self.claimed.discard((argv[1], argv[2]))
                return b":1\r\n" if found else b":0\r\n"
            if not events:
                return b"$-1\r\n"
            event_id, contents = events[-1] if name == b"QRPEEK" else events.pop()
            if name == b"QRPOP":
                self.claimed.add((argv[1], event_id))
        return b"*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            len(event_id),
            event_id,
            len(contents),
            contents,
        )

    def close(self) -> None:
        self.crash()


@pytest.fixture
def model_server() -> Iterator[Callable[..., ModelServer]]:
    servers: list[ModelServer] = []

    def make(**faults: object) -> ModelServer:
        server = ModelServer(**faults)  # type: ignore[arg-type]
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.close()


def _options(host: str, port: int, out: Path | None, **more: object) -> LiveOptions:
    options = LiveOptions(
        host=host,
        port=port,
        seconds=20.0,
        iterations=20_000,
        seed=1,
        out=out,
        timeout_s=0.3,
        max_block_s=0.0,
        lanes=2,
        minimise_seconds=15.0,
        log=None,
    )
    for key, value in more.items():
        setattr(options, key, value)
    return options


def _only(report: LiveReport, kind: str) -> Path:
    assert [f.kind for f in report.findings] == [kind], report.format_text()
    path = report.findings[0].path
    assert path is not None
    assert path.exists()
    return path


# -- the model, the mutations, the minimiser -----------------------------------------------


@pytest.mark.parametrize(
    ("data", "replies", "ending"),
    [
        (b"*1\r\n$4\r\nPING\r\n", 1, Ending.COMPLETE),
        (b"*1\r\n$4\r\nPINGxy", 1, Ending.COMPLETE),  # the trailer is not checked
        (b"*1X\n$4\r\nPING\r\n", 1, Ending.COMPLETE),  # header value: line minus 2 bytes
        (b"*1\r\n$4\r\nPING", 0, Ending.INCOMPLETE),
        (b"*1\r\n$4\r\nPING\r\nPING\r\n", 1, Ending.CLOSE),  # inline after a request
        (b"*\n", 0, Ending.CLOSE),
        (b"*1\n", 0, Ending.CLOSE),  # value '' does not parse
        (b"+OK\r\n*-1\r\n*0\r\n:5\r\n", 1, Ending.COMPLETE),
        (b"*2\r\n:1\r\n*1\r\n+a\r\n", 1, Ending.COMPLETE),  # invalid command, one reply
        (b"*1\r\n$1000000000000000\r\n", 0, Ending.OPEN_END),
        (b"*1\r\n$9223372036854775808\r\n", 0, Ending.CLOSE),  # out of int64 range
    ],
)
def test_model(data: bytes, replies: int, ending: Ending) -> None:
    exp = expect(data)
    assert (exp.replies, exp.ending) == (replies, ending)


def test_model_marks_d1_and_blocking() -> None:
    assert expect(b"$\n").d1
    assert expect(b"*1000000000000000\r\n").d1
    assert expect(b"*1\r\n$2000000\r\n").d1  # okq allocates it first
    assert not expect(b"*1\r\n$70000\r\n").d1
    assert expect(b"*2\r\n$7\r\nqnotify\r\n$2\r\n+3\r\n").block_s == 3.0
    assert expect(b"*2\r\n$7\r\nQNOTIFY\r\n$2\r\n-3\r\n").block_s == 0.0


def test_mutations_are_seeded_and_varied() -> None:
    corpus = build_corpus()
    first = [mutate(random.Random(5), corpus) for _ in range(3)]
    again = [mutate(random.Random(5), corpus) for _ in range(3)]
    assert first == again
    rng = random.Random(7)
    endings = {expect(mutate(rng, corpus)).ending for _ in range(2000)}
    assert endings == set(Ending)


def test_minimiser_on_a_synthetic_predicate() -> None:
    data = bytes(random.Random(3).randrange(256) for _ in range(400)) + b"\n"
    data = data[:150] + b"B" + data[150:300] + b"UG" + data[300:]

    def predicate(candidate: bytes) -> bool:
        return b"B" in candidate and b"UG" in candidate[candidate.index(b"B") :]

    smallest, stats = minimise(data, predicate)
    assert smallest == b"BUG"
    assert 0 < stats.runs < 2000
    assert b"".join(tokens(data)) == data
    bounded, stats = minimise(data, predicate, max_runs=5)
    assert predicate(bounded)
    assert stats.exhausted
    assert stats.runs == 5


# -- findings ------------------------------------------------------------------------------


def test_finds_d1_on_the_fake_okq_and_saves_a_transcript(tmp_path: Path) -> None:
    with FakeServer(crash_on_bad_header=True) as server:
        report = run_live(_options(server.host, server.port, tmp_path))
    assert report.findings, report.format_text()
    finding = report.findings[0]
    assert finding.kind == "crash"
    assert not finding.reproduced
    assert finding.found_after_s < 10
    assert finding.path is not None
    scenario = load_transcript(finding.path)
    assert scenario.steps[1].send is not None
    assert finding.input in scenario.steps[1].send


def test_crash_minimised_with_restarts(
    model_server: Callable[..., ModelServer], tmp_path: Path
) -> None:
    server = model_server(crash_on_short_header=True)
    report = run_live(_options(server.host, server.port, tmp_path, restart=server.restart))
    path = _only(report, "crash")
    finding = report.findings[0]
    assert finding.reproduced
    assert finding.known == "D1"
    assert len(finding.minimised) <= 3, finding.minimised  # e.g. b"*\n"
    assert report.restarts >= 2
    assert server.crashes >= 2
    scenario = load_transcript(path)
    server.restart()
    assert replay_scenario(server.host, server.port, scenario, pause_s=0).outcome is Outcome.FAIL


def test_skip_known_leaves_d1_inputs_out(model_server: Callable[..., ModelServer]) -> None:
    server = model_server(crash_on_short_header=True)
    options = _options(server.host, server.port, None, iterations=3000, skip_known=True)
    report = run_live(options)
    assert report.findings == [], report.format_text()
    assert server.crashes == 0
    assert report.skipped > 0


def test_hang_found_minimised_and_replayable(
    model_server: Callable[..., ModelServer], tmp_path: Path
) -> None:
    server = model_server(hang_on=b"QINFO")
    report = run_live(_options(server.host, server.port, tmp_path))
    path = _only(report, "hang")
    assert len(report.findings[0].minimised) <= 20, report.findings[0].minimised
    assert b"QINFO" in report.findings[0].minimised.upper()
    scenario = load_transcript(path)
    result = replay_scenario(server.host, server.port, scenario, pause_s=0)
    assert result.outcome is Outcome.FAIL
    fixed = model_server()
    assert replay_scenario(fixed.host, fixed.port, scenario, pause_s=0).outcome is Outcome.PASS


def test_broken_framing_found_and_minimised(
    model_server: Callable[..., ModelServer], tmp_path: Path
) -> None:
    server = model_server(broken_on=b"QACK")
    report = run_live(_options(server.host, server.port, tmp_path))
    path = _only(report, "framing")
    assert len(report.findings[0].minimised) <= 20, report.findings[0].minimised
    scenario = load_transcript(path)
    assert replay_scenario(server.host, server.port, scenario, pause_s=0).outcome is Outcome.FAIL


def test_damage_to_the_sentinel_found(
    model_server: Callable[..., ModelServer], tmp_path: Path
) -> None:
    server = model_server(drop_others_on=b"QSTATUS")
    report = run_live(_options(server.host, server.port, tmp_path, lanes=1))
    _only(report, "damage")
    assert report.sentinel == "full"
    assert len(report.findings[0].minimised) <= 20, report.findings[0].minimised


def test_embedded_server_gives_no_finding(okq_server: ThreadedServer) -> None:
    options = _options(okq_server.host, okq_server.port, None, iterations=3000, timeout_s=2.0)
    report = run_live(options)
    assert report.findings == [], report.format_text()
    assert report.inputs == 3000
    assert report.sentinel == "full"
    assert report.rate > 0


# -- the command line ----------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cli_exit_codes(
    okq_server: ThreadedServer,
    model_server: Callable[..., ModelServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert fuzz_main.main(["--server", "no-port"]) == 2
    assert fuzz_main.main(["--server", f"127.0.0.1:{_closed_port()}"]) == 2
    assert fuzz_main.main(["--server", okq_server.address, "--oracles", "nope"]) == 2
    assert fuzz_main.main(["--server", okq_server.address, "decoder"]) == 2
    ok = ["--server", f"127.0.0.1:{okq_server.port}", "--iterations", "300", "--max-block", "0"]
    assert fuzz_main.main(ok) == 0
    assert "0 finding(s)" in capsys.readouterr().out
    broken = model_server(broken_on=b"QACK")
    args = ["--server", f"127.0.0.1:{broken.port}", "--seconds", "20", "--timeout", "0.3"]
    assert fuzz_main.main([*args, "--out", str(tmp_path)]) == 1
    assert list(tmp_path.glob("fuzz_framing_*.json"))
    assert fuzz_main.main(["--iterations", "20", "decoder"]) == 0  # in-process mode still works
