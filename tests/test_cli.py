"""The ``okq`` command line end to end, against the embedded server over loopback TCP.

Most tests call ``main(argv)`` in-process with captured output; a few run
``python -m okq_transports`` as a subprocess (``serve``, ``demo``, a refused connection).
Every failure must be one line on stderr, a non-zero status, and no traceback.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from okq_transports.cli import main
from okq_transports.server import ThreadedServer

ROOT = Path(__file__).resolve().parent.parent
UUID_LEN = 36


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadedServer]:
    """An embedded server with a fast sweep; OKQ_SERVER points at it."""
    srv = ThreadedServer("127.0.0.1", 0, sweep_interval_s=0.2, seed=0)
    srv.start()
    monkeypatch.delenv("OKQ_URL", raising=False)  # it would win over OKQ_SERVER
    monkeypatch.setenv("OKQ_SERVER", srv.address)
    try:
        yield srv
    finally:
        srv.stop()


def run(
    capsys: pytest.CaptureFixture[str], *argv: str, stdin: bytes | None = None
) -> tuple[int, str, str]:
    """``main(argv)`` -> (status, stdout, stderr)."""
    if stdin is not None:
        saved = sys.stdin
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        code = main(list(argv))
    finally:
        if stdin is not None:
            sys.stdin = saved
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, out: str, err: str, expected_code: int | None = None) -> None:
    assert code != 0
    if expected_code is not None:
        assert code == expected_code
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("okq")


# -- simple commands -----------------------------------------------------------------------


def test_ping(server: ThreadedServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "ping")
    assert code == 0
    assert out.startswith(f"PONG from {server.address} in ")
    assert err == ""


def test_server_option_before_or_after_the_subcommand(
    server: ThreadedServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OKQ_SERVER")
    assert run(capsys, "--server", server.address, "ping")[0] == 0
    assert run(capsys, "ping", "--server", server.address)[0] == 0


def test_push_prints_the_id(server: ThreadedServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "push", "jobs", "hello")
    assert code == 0
    assert len(out.strip()) == UUID_LEN
    code, out, _ = run(capsys, "peek", "jobs")
    assert code == 0
    assert out == f"{out.split(chr(9))[0]}\thello\n"


def test_push_with_id_and_duplicate(
    server: ThreadedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "push", "jobs", "--id", "order-42", "first") == (0, "order-42\n", "")
    code, out, err = run(capsys, "push", "jobs", "first again", "--id", "order-42")
    assert_one_line_error(code, out, err, 1)
    assert "duplicate" in err


def test_push_stdin_and_lines(server: ThreadedServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "push", "blob", stdin=b"line one\nline two\n")
    assert code == 0
    code, out, _ = run(capsys, "peek", "blob", "--raw")
    assert out == "line one\nline two\n"
    code, out, _ = run(capsys, "push", "letters", "--lines", stdin=b"a\nb\n\nc\n")
    assert code == 0
    assert len(out.splitlines()) == 4
    code, out, _ = run(capsys, "status", "letters", "--json")
    assert json.loads(out)[0]["total"] == 4


def test_push_lines_misuse(server: ThreadedServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(*run(capsys, "push", "q", "text", "--lines"), 2)
    assert_one_line_error(*run(capsys, "push", "q", "--lines", "--id", "x", stdin=b"a\n"), 2)


def test_push_flags(server: ThreadedServer, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "push", "prio", "normal")
    assert run(capsys, "push", "prio", "urgent", "--high-priority")[0] == 0
    assert run(capsys, "peek", "prio")[1].endswith("\turgent\n")
    assert run(capsys, "peek", "prio", "--last")[1].endswith("\tnormal\n")
    assert run(capsys, "push", "prio", "fast", "--no-block")[0] == 0


def test_peek_formats_and_empty(server: ThreadedServer, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "push", "fmt", "--id", "e1", "tab\there")
    assert run(capsys, "peek", "fmt")[1] == "e1\ttab\\there\n"
    record = json.loads(run(capsys, "peek", "fmt", "--json")[1])
    assert record == {"queue": "fmt", "id": "e1", "contents": "tab\there"}
    code, out, err = run(capsys, "peek", "nothing-here")
    assert (code, out) == (3, "")
    assert_one_line_error(code, out, err, 3)


def test_pop_ack_flush(server: ThreadedServer, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "push", "work", "--id", "w1", "one")
    run(capsys, "push", "work", "--id", "w2", "two")
    code, out, _ = run(capsys, "pop", "work", "--ex", "30")
    assert (code, out) == (0, "w1\tone\n")
    status = json.loads(run(capsys, "status", "work", "--json")[1])[0]
    assert (status["total"], status["processing"], status["waiting"]) == (2, 1, 1)
    assert run(capsys, "ack", "work", "w1") == (0, "acked\n", "")
    assert_one_line_error(*run(capsys, "ack", "work", "w1"), 3)
    assert run(capsys, "pop", "work", "--ex", "0")[1] == "w2\ttwo\n"  # at-most-once
    assert json.loads(run(capsys, "status", "work", "--json")[1])[0]["total"] == 0
    assert_one_line_error(*run(capsys, "pop", "work"), 3)
    run(capsys, "push", "work", "three")
    assert run(capsys, "flush", "work") == (0, "flushed work\n", "")
    assert json.loads(run(capsys, "status", "work", "--json")[1])[0]["total"] == 0


def test_status_table(server: ThreadedServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "status")[1].splitlines()[1] == "(no queues)"
    run(capsys, "push", "a", "x")
    run(capsys, "push", "a-much-longer-name", "y")
    run(capsys, "push", "a-much-longer-name", "z")
    code, out, _ = run(capsys, "status")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["QUEUE", "TOTAL", "PROCESSING", "WAITING", "CONSUMERS"]
    assert lines[1].split() == ["a", "1", "0", "1", "0"]
    assert lines[2].split() == ["a-much-longer-name", "2", "0", "2", "0"]
    assert len({len(line) for line in lines}) == 1  # aligned columns
    named = run(capsys, "status", "a", "unknown")[1].splitlines()
    assert named[2].split() == ["unknown", "0", "0", "0", "0"]


def test_status_watch(server: ThreadedServer, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "push", "w", "x")
    code, out, _ = run(capsys, "status", "--watch", "--count", "3", "--interval", "0.05")
    assert code == 0
    assert out.count("okq status") == 3
    assert out.count("QUEUE") == 3


def test_info(server: ThreadedServer, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "push", "iw-a", "x")
    code, out, _ = run(capsys, "info")
    assert code == 0
    assert out == "iw-a  total: 1  processing: 0  consumers: 0\n"


# -- consume --------------------------------------------------------------------------------


def test_consume_prints_and_acks(
    server: ThreadedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "push", "c1", "--id", "e1", "one")
    run(capsys, "push", "c2", "--id", "e2", "two")
    code, out, _ = run(capsys, "consume", "c1", "c2", "--max-events", "2")
    assert code == 0
    assert sorted(out.splitlines()) == ["c1\te1\tone", "c2\te2\ttwo"]
    status = json.loads(run(capsys, "status", "c1", "c2", "--json")[1])
    assert [s["total"] for s in status] == [0, 0]


def test_consume_json(server: ThreadedServer, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "push", "cj", "--id", "e1", "one")
    out = run(capsys, "consume", "cj", "--max-events", "1", "--json")[1]
    assert json.loads(out) == {"queue": "cj", "id": "e1", "contents": "one"}


def test_consume_exec(
    server: ThreadedServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run(capsys, "push", "ex", "--id", "e1", "payload")
    target = tmp_path / "out"
    command = f'cat > "{target}"; echo "$OKQ_QUEUE $OKQ_EVENT_ID" >> "{target}"'
    code, _, _ = run(capsys, "consume", "ex", "--exec", command, "--max-events", "1")
    assert code == 0
    assert target.read_text() == "payloadex e1\n"
    assert json.loads(run(capsys, "status", "ex", "--json")[1])[0]["total"] == 0  # acked


def test_consume_exec_failure_is_not_acked(
    server: ThreadedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "push", "exf", "--id", "e1", "payload")
    code, _, err = run(capsys, "consume", "exf", "--exec", "exit 3", "--max-events", "1")
    assert code == 0
    assert "exited 3" in err
    status = json.loads(run(capsys, "status", "exf", "--json")[1])[0]
    assert (status["total"], status["processing"]) == (1, 1)  # claimed, will come back


def test_consume_concurrency_and_expire(
    server: ThreadedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "push", "cc", "--lines", stdin=b"".join(b"%d\n" % n for n in range(6)))
    code, out, _ = run(
        capsys, "consume", "cc", "--concurrency", "3", "--expire", "-1", "--max-events", "6"
    )
    assert code == 0
    assert sorted(line.split("\t")[2] for line in out.splitlines()) == [str(n) for n in range(6)]


# -- bench and demo ---------------------------------------------------------------------------


def handled_by(out: str) -> dict[str, int]:
    """The demo summary's ``consumer  NAME  handled  N events`` lines, as {NAME: N}."""
    found = re.findall(r"^  consumer  (\S+) +handled +(\d+) events", out, re.MULTILINE)
    return {name: int(count) for name, count in found}


def test_bench(server: ThreadedServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "bench", "-n", "300", "--batch", "50")
    assert code == 0, err
    assert "events/s" in out
    assert "p50" in out
    assert "p99" in out
    assert "300/300" in err  # the progress bar's final state


def test_bench_json(server: ThreadedServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "bench", "-n", "50", "--batch", "10", "--json")
    result = json.loads(out)
    assert code == 0
    assert (result["events"], result["pushed"], result["consumed"]) == (50, 50, 50)
    assert set(result["latency_ms"]) == {"p50", "p90", "p99", "max"}
    assert result["push_s"] > 0


def test_bench_bad_size(server: ThreadedServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(*run(capsys, "bench", "--size", "5"), 2)


def test_demo_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OKQ_SERVER", raising=False)
    code, out, err = run(capsys, "demo", "-n", "12")
    assert code == 0, err
    assert "embedded server" in out
    assert "All 12 events handled and acknowledged" in out
    assert "1 redelivered" in out
    counts = handled_by(out)
    assert set(counts) == {"sync", "asyncio", "trio"}
    assert all(count >= 1 for count in counts.values()), out  # every client did some work
    assert sum(counts.values()) == 12
    assert "consumers 0" in out  # the stopped consumers are gone from the status


def test_demo_against_a_given_server(
    server: ThreadedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "demo", "-n", "8", "--no-trio")
    assert code == 0, err
    assert server.address in out
    assert "server from --server" in out
    counts = handled_by(out)
    assert set(counts) == {"sync", "asyncio"}
    assert all(count >= 1 for count in counts.values()), out


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["pop", "q", "--ex", "soon"],
        ["pop", "q", "--ex", "-2"],
        ["status", "--watch", "--count", "0"],
        ["status", "--watch", "--interval", "-1"],
        ["status", "--watch", "--interval", "nan"],
        ["consume", "q", "--concurrency", "many"],
        ["consume", "q", "--expire", "-5"],
        ["bench", "-n", "1e3"],
        ["serve", "--port", "http"],
        ["push"],
        ["frobnicate"],
        [],
        ["--server", "host:port", "ping"],
        ["--server", "[::1", "ping"],
        ["--server", "localhost:99999", "ping"],
    ],
)
def test_bad_command_lines(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(*run(capsys, *argv), 2)


@pytest.mark.parametrize(
    "argv",
    [
        ["ping"],
        ["push", "q", "x"],
        ["peek", "q"],
        ["pop", "q"],
        ["ack", "q", "id"],
        ["flush", "q"],
        ["status"],
        ["info"],
    ],
)
@pytest.mark.parametrize("address", ["127.0.0.1:1", "no-such-host.invalid:4777"])
def test_unreachable_server(
    argv: list[str], address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_one_line_error(*run(capsys, "--server", address, *argv), 1)


def test_okq_server_environment_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OKQ_SERVER", "127.0.0.1:1")
    code, out, err = run(capsys, "ping")
    assert_one_line_error(code, out, err, 1)
    assert "127.0.0.1:1" in err


# -- as a program -----------------------------------------------------------------------------


def _python_m(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OKQ_SERVER"}
    return subprocess.run(
        [sys.executable, "-m", "okq_transports", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_port_zero_prints_the_address() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "okq_transports", "serve", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("okq server listening on 127.0.0.1:")
        address = line.split()[-1]
        assert int(address.rsplit(":", 1)[1]) > 0
        check = _python_m("--server", address, "ping")
        assert check.returncode == 0
        assert check.stdout.startswith(f"PONG from {address}")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "Traceback" not in err


def test_program_refused_connection() -> None:
    done = _python_m("--server", "127.0.0.1:1", "status")
    assert done.returncode == 1
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_program_demo() -> None:
    done = _python_m("demo", "-n", "10")
    assert done.returncode == 0, done.stderr
    assert "All 10 events handled and acknowledged" in done.stdout
    counts = handled_by(done.stdout)
    assert set(counts) == {"sync", "asyncio", "trio"}
    assert all(count >= 1 for count in counts.values()), done.stdout
    assert "Traceback" not in done.stderr


def _consume_then_signal(
    okq_server: ThreadedServer, queue: str, exec_s: float, signals: list[signal.Signals]
) -> tuple[int, str, int, float]:
    """Run ``okq consume QUEUE --exec 'sleep exec_s'``; once the event is in hand send
    `signals` (0.3 s apart).  Returns (exit status, stderr, events left, seconds from the
    first signal to the exit)."""
    from okq_transports.sync import Client

    slow = f"{shlex.quote(sys.executable)} -c 'import time; time.sleep({exec_s})'"
    env = {k: v for k, v in os.environ.items() if k not in ("OKQ_SERVER", "OKQ_URL")}
    with Client(okq_server.address) as client:
        client.push(queue, b"payload")
        argv = ["-u", okq_server.url, "consume", queue, "--exec", slow]
        # Files, not pipes: a command left running by a forced quit keeps them open.
        with (
            tempfile.TemporaryFile("w+") as err_file,
            subprocess.Popen(
                [sys.executable, "-m", "okq_transports", *argv],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err_file,
                text=True,
            ) as proc,
        ):
            try:
                deadline = time.monotonic() + 15
                while client.status(queue)[0].processing != 1:  # the event is in hand
                    assert proc.poll() is None, "the consumer ended early"
                    assert time.monotonic() < deadline, "the consumer never claimed the event"
                    time.sleep(0.02)
                first = time.monotonic()
                for number, sig in enumerate(signals):
                    if number:
                        time.sleep(0.3)
                    proc.send_signal(sig)
                proc.wait(timeout=15)
                took = time.monotonic() - first
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
            err_file.seek(0)
            err = err_file.read()
        (status,) = client.status(queue)
        client.flush(queue)
    return proc.returncode, err, status.total, took


def test_program_consume_stops_gracefully_on_ctrl_c(okq_server: ThreadedServer) -> None:
    """SIGINT while ``--exec`` runs: the command finishes, its event is acked, exit 130."""
    code, err, left, _ = _consume_then_signal(okq_server, "slow", 1, [signal.SIGINT])
    assert code == 130, err
    assert "Traceback" not in err
    assert "stopping" in err
    assert left == 0  # acked


def test_program_consume_stops_gracefully_on_sigterm(okq_server: ThreadedServer) -> None:
    code, err, left, _ = _consume_then_signal(okq_server, "slow-term", 1, [signal.SIGTERM])
    assert code == 128 + signal.SIGTERM, err
    assert left == 0


def test_a_second_ctrl_c_quits_at_once(okq_server: ThreadedServer) -> None:
    """The handler would run 20 s more; the second SIGINT ends the process now, unacked (the
    server redelivers the event after its claim)."""
    code, err, left, took = _consume_then_signal(
        okq_server, "stuck", 20, [signal.SIGINT, signal.SIGINT]
    )
    assert code == 130, err
    assert took < 10
    assert "interrupted again" in err
    assert "Traceback" not in err
    assert left == 1  # not acked


def test_status_json_keeps_a_name_that_is_not_utf8_exact(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import base64
    import json

    from okq_transports.server import ThreadedServer
    from okq_transports.sync import Client

    with ThreadedServer() as srv, Client(srv.address) as client:
        client.push(b"-caf\xe9".decode("utf-8", "surrogateescape"), b"x")
        client.push("plain", b"y")
        code, out, err = run(capsys, "--server", srv.address, "status", "--json")
    assert (code, err) == (0, "")
    entries = {e["queue"]: e for e in json.loads(out)}
    assert set(entries) == {"-caf\\xe9", "plain"}
    assert base64.b64decode(entries["-caf\\xe9"]["queue_base64"]) == b"-caf\xe9"
    assert "queue_base64" not in entries["plain"]


# -- one spelling, JSON everywhere --------------------------------------------------------


def test_ex_is_the_one_spelling_of_the_claim_and_the_old_ones_still_work(
    server: ThreadedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    for option, value in (("--ex", "0"), ("--ex", "-1"), ("--expire", "-1"), ("--expire", "0")):
        run(capsys, "push", "once", "x")
        code, out, err = run(capsys, "consume", "once", option, value, "--max-events", "1")
        assert (code, err) == (0, ""), (option, value)
        assert out.startswith("once\t")
        assert json.loads(run(capsys, "status", "--json", "once")[1])[0]["total"] == 0  # acked
    run(capsys, "push", "once", "y")
    assert run(capsys, "pop", "once", "--ex", "-1")[0] == 0  # pop takes -1 too
    assert json.loads(run(capsys, "status", "--json", "once")[1])[0]["total"] == 0
    _, help_text, _ = run_help(capsys, "consume")
    assert "--ex SECONDS, --expire SECONDS" in help_text
    assert "0: at-most-once" in " ".join(help_text.split())


def run_help(capsys: pytest.CaptureFixture[str], command: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_json_wherever_there_is_output(
    server: ThreadedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "push", "j", "one", "--id", "e1", "--json")
    assert (code, json.loads(out)) == (0, {"queue": "j", "id": "e1"})
    code, out, err = run(capsys, "push", "j", "--lines", "--json", stdin=b"two\nthree\n")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0, err
    assert [r["queue"] for r in records] == ["j", "j"]
    assert all(len(r["id"]) == UUID_LEN for r in records)
    code, out, _ = run(capsys, "info", "j", "--json")
    assert (code, json.loads(out)) == (0, ["j  total: 3  processing: 0  consumers: 0"])
    code, out, _ = run(capsys, "ack", "j", "e1", "--json")
    assert (code, json.loads(out)) == (0, {"queue": "j", "id": "e1", "acked": True})
    code, out, _ = run(capsys, "flush", "j", "--json")
    assert (code, json.loads(out)) == (0, {"queue": "j", "flushed": True})
    code, out, _ = run(capsys, "ping", "--json")
    pong = json.loads(out)
    assert code == 0
    assert pong["server"] == server.address
    assert pong["rtt_ms"] > 0
    for command in (
        "push",
        "peek",
        "pop",
        "ack",
        "flush",
        "ping",
        "status",
        "info",
        "consume",
        "bench",
    ):
        assert "--json" in run_help(capsys, command)[1], command
