"""Tests of the conformance runner itself: loader, framer, replay, report, CLI.

The runner is exercised against ``FakeServer`` (a few commands on a loopback
socket), never against the real okq: these tests prove that failures are
detected and reported, not that any particular server conforms.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance import (
    TRANSCRIPTS_DIR,
    DefectProbe,
    Outcome,
    Report,
    Result,
    Scenario,
    TranscriptError,
    defect_probes,
    load_transcript,
    load_transcripts,
    parse_scenario,
    replay_scenario,
    run_probe,
    run_scenarios,
)
from conformance.__main__ import main
from conformance._resp import (
    FramingError,
    RespError,
    RespSimple,
    encode_command,
    frame_reply,
    parse_reply,
)
from conformance.replay import parse_address

from .fakeserver import FakeServer

SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed(, (\d+) skipped)?$")
PING = "*1\r\n$4\r\nPING\r\n"

ALL_TRANSCRIPTS = sorted(TRANSCRIPTS_DIR.glob("*.json"))


def scenario(steps: list[dict[str, object]], **top: object) -> Scenario:
    """Build a scenario from steps, with sensible top-level defaults."""
    data: dict[str, object] = {
        "name": "synthetic",
        "description": "test scenario",
        "format_version": 1,
        "requires_redis": False,
        "needs_empty_server": False,
        "queues": [],
        "connections": 1 + max((int(str(s.get("conn", 0))) for s in steps), default=0),
        "steps": steps,
    }
    data.update(top)
    return parse_scenario(data)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as srv:
        yield srv


# -- loader ---------------------------------------------------------------------------


def test_transcripts_are_present() -> None:
    assert len(ALL_TRANSCRIPTS) >= 50
    assert [s.name for s in load_transcripts()] == [p.stem for p in ALL_TRANSCRIPTS]


@pytest.mark.parametrize("path", ALL_TRANSCRIPTS, ids=lambda p: p.stem)
def test_every_transcript_loads_and_is_well_formed(path: Path) -> None:
    sc = load_transcript(path)
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert sc.name == path.stem
    assert len(sc.steps) == len(raw["steps"])
    assert len(sc.queues) == len(raw["queues"])
    assert all(isinstance(q, bytes) for q in sc.queues)
    assert sc.requires_redis == any(s.redis for s in sc.steps)
    for step in sc.steps:
        assert (step.conn is None) == step.redis
        assert step.close or step.send is not None or step.reads or step.sleep_before
        assert step.timeout > 0
        # Whatever the real server sent in the recording satisfies the expectation.
        if step.recorded is not None:
            if step.expect_any_of is not None:
                assert step.recorded in step.expect_any_of
            if step.expect_pattern is not None:
                assert step.expect_pattern.fullmatch(step.recorded.decode("latin-1"))
        if step.recorded_elapsed is not None:
            assert step.elapsed_min is not None
            assert step.elapsed_max is not None
            assert step.elapsed_min <= step.recorded_elapsed <= step.elapsed_max
        # Every expected reply is complete RESP (a server could legally send it).
        if step.expect and not step.redis:
            pos = 0
            while pos < len(step.expect):
                end = frame_reply(step.expect, pos)
                assert end is not None, step
                pos = end


def test_parts_and_b64_decode() -> None:
    sc = load_transcript(TRANSCRIPTS_DIR / "large_payload_1mb.json")
    assert sc.steps[0].send is not None
    prefix = b"*4\r\n$6\r\nQLPUSH\r\n$5\r\nbig-q\r\n$3\r\nbig\r\n$1048576\r\n"
    assert sc.steps[0].send.startswith(prefix)
    assert len(sc.steps[0].send) == len(prefix) + 1048576 + 2
    assert sc.steps[0].send.endswith(b"x" * 1000 + b"\r\n")
    assert sc.steps[1].expect is not None
    assert len(sc.steps[1].expect) > 1048576

    raw = b"\xff\xfe\x00bin"
    sc = scenario(
        [
            {
                "conn": 0,
                "send_b64": base64.b64encode(raw).decode(),
                "expect_parts": [
                    "+",
                    {"b64": base64.b64encode(b"O").decode()},
                    {"repeat": "K", "count": 3},
                    "\r\n",
                ],
            },
            {"conn": 0, "send": "é\u0000", "expect_any_of": [{"b64": "JC0xDQo="}, ":1\r\n"]},
        ],
        queues=["plain", {"b64": base64.b64encode(b"\xff").decode()}],
    )
    assert sc.queues == (b"plain", b"\xff")
    assert sc.steps[0].send == raw
    assert sc.steps[0].expect == b"+OKKK\r\n"
    assert sc.steps[1].send == "é\x00".encode()
    assert sc.steps[1].expect_any_of == (b"$-1\r\n", b":1\r\n")


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"conn": 0, "send": PING, "expect": "+PONG\r\n", "bogus": 1}], "unknown fields"),
        ([{"conn": 0, "send": PING, "send_b64": "AA=="}], "more than one"),
        ([{"conn": 0, "send_b64": "not base64!"}], "invalid base64"),
        ([{"conn": 0, "expect": "+OK\r\n", "expect_pattern": "x"}], "at most one"),
        ([{"conn": 0, "expect": ""}], "expect_silence or expect_close"),
        ([{"conn": 0, "expect_pattern": "("}], "bad expect_pattern"),
        ([{"conn": 0, "close": True}, {"conn": 0, "send": PING}], "after closing"),
        ([{"send": PING}], "conn must be"),
        ([{"conn": -1, "send": PING}], "conn must be"),
        ([{"redis": True, "send": PING}], "requires_redis is false"),
        ([{"conn": 0, "send": PING, "elapsed_max": 1}], "need an expect"),
        ([{"conn": 0, "expect": "+OK\r\n", "elapsed_min": 2, "elapsed_max": 1}], "elapsed_min"),
        ([{"conn": 0, "send": PING, "timeout": 0}], "out of range"),
        ([{"conn": 0}], "does nothing"),
        ([{"conn": 0, "send_parts": [{"repeat": "x", "count": -1}]}], "out of range"),
        ([{"conn": 3, "send": PING}], "connections is"),
    ],
)
def test_malformed_steps_are_rejected(steps: list[dict[str, object]], message: str) -> None:
    with pytest.raises(TranscriptError, match=message):
        scenario(steps, connections=1)


def test_malformed_documents_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(TranscriptError, match="format_version"):
        scenario([{"conn": 0, "send": PING}], format_version=2)
    with pytest.raises(TranscriptError, match="missing fields"):
        parse_scenario({"name": "x"})
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"name": "x"}))
    with pytest.raises(TranscriptError):
        load_transcript(bad)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(TranscriptError, match="cannot load"):
        load_transcripts(tmp_path)
    with pytest.raises(TranscriptError, match=r"no \*\.json"):
        load_transcripts(tmp_path / "nothing-here")


# -- framer ---------------------------------------------------------------------------

REPLIES = [
    b"+OK\r\n",
    b"-ERR duplicate event x\r\n",
    b":-12\r\n",
    b"$-1\r\n",
    b"*-1\r\n",
    b"*0\r\n",
    b"$0\r\n\r\n",
    b"$4\r\na\r\nb\r\n",
    b"*2\r\n$2\r\ne1\r\n$2\r\nc1\r\n",
    b"*2\r\n*4\r\n$1\r\na\r\n:1\r\n:0\r\n:0\r\n*4\r\n$0\r\n\r\n:0\r\n:0\r\n:3\r\n",
]


@pytest.mark.parametrize("reply", REPLIES)
def test_framer_finds_the_end_at_every_split(reply: bytes) -> None:
    for cut in range(len(reply)):
        assert frame_reply(reply[:cut]) is None
    assert frame_reply(reply) == len(reply)
    assert frame_reply(reply + b"+NEXT\r\n") == len(reply)
    assert frame_reply(b"+A\r\n" + reply, 4) == 4 + len(reply)


@pytest.mark.parametrize(
    "data",
    [
        b"PING\r\n",
        b"$abc\r\n",
        b"$-2\r\n",
        b":1.5\r\n",
        b"$1\r\nab\r\n",
        b"*x\r\n",
        b"$99999999999\r\n",
    ],
)
def test_framer_rejects_invalid_replies(data: bytes) -> None:
    with pytest.raises(FramingError):
        frame_reply(data)


def test_framer_limits_nesting_and_line_length() -> None:
    with pytest.raises(FramingError, match="nested"):
        frame_reply(b"*1\r\n" * 40)
    with pytest.raises(FramingError, match="longer"):
        frame_reply(b"+" + b"x" * 70000)


def test_parse_reply_and_encode_command() -> None:
    assert parse_reply(REPLIES[-1]) == [[b"a", 1, 0, 0], [b"", 0, 0, 3]]
    assert parse_reply(b"+OK\r\n") == RespSimple(b"OK")
    assert parse_reply(b"-ERR x\r\n") == RespError(b"ERR x")
    assert parse_reply(b"$-1\r\n") is None
    assert parse_reply(b"*-1\r\n") is None
    with pytest.raises(FramingError):
        parse_reply(b"+OK\r\n+OK\r\n")
    assert encode_command(b"QACK", b"q", b"") == b"*3\r\n$4\r\nQACK\r\n$1\r\nq\r\n$0\r\n\r\n"


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:6379") == ("127.0.0.1", 6379)
    assert parse_address("[::1]:6379") == ("::1", 6379)
    for bad in ("nohost", ":1", "h:0", "h:99999", "h:x"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_address(bad)


# -- replay against the fake server --------------------------------------------------


def test_replay_passes_ping(server: FakeServer) -> None:
    result = replay_scenario(
        server.host, server.port, load_transcript(TRANSCRIPTS_DIR / "ping_basic.json")
    )
    assert result.outcome is Outcome.PASS, result.details
    assert result.kind == "transcript"


def test_replay_detects_wrong_bytes(server: FakeServer) -> None:
    sc = scenario(
        [
            {"conn": 0, "send": PING, "expect": "+PONG\r\n"},
            {"conn": 0, "send": "*1\r\n$4\r\nNOPE\r\n", "expect": "+OK\r\n"},
        ]
    )
    result = replay_scenario(server.host, server.port, sc, pause_s=0)
    assert result.outcome is Outcome.FAIL
    assert result.failed_step == 1
    text = "\n".join(result.details)
    assert "step 1 (conn 0)" in text
    assert "expected: b'+OK\\r\\n'" in text
    assert "got:      b'-ERR '" in text  # exactly as many bytes as expected were read
    assert """(then b'unknown command "NOPE"\\r\\n')""" in text
    assert "elapsed" in text


def test_replay_reports_first_difference_of_long_payloads(server: FakeServer) -> None:
    expect = "-" + "E" * 300 + "\r\n"
    sc = scenario(
        [{"conn": 0, "send": "*1\r\n$" + "300\r\n" + "N" * 300 + "\r\n", "expect": expect}]
    )
    result = replay_scenario(server.host, server.port, sc, pause_s=0)
    assert result.outcome is Outcome.FAIL
    assert any("first difference at byte 2" in d for d in result.details)


def test_replay_timeout_eof_and_close(server: FakeServer) -> None:
    sc = scenario(
        [{"conn": 0, "send": "*1\r\n$6\r\nSILENT\r\n", "expect": "+OK\r\n", "timeout": 0.3}]
    )
    result = replay_scenario(server.host, server.port, sc, pause_s=0)
    assert result.outcome is Outcome.FAIL
    assert any("timed out" in d for d in result.details)

    sc = scenario([{"conn": 0, "send": "GARBAGE\r\n", "expect": "+OK\r\n"}])
    result = replay_scenario(server.host, server.port, sc, pause_s=0)
    assert any("closed by the server" in d for d in result.details)

    for name in ("inline_command_closes_connection", "malformed_length_closes_connection"):
        result = replay_scenario(
            server.host, server.port, load_transcript(TRANSCRIPTS_DIR / f"{name}.json"), pause_s=0
        )
        assert result.outcome is Outcome.PASS, result.details

    sc = scenario([{"conn": 0, "send": PING, "expect": "", "expect_close": True, "timeout": 0.3}])
    result = replay_scenario(server.host, server.port, sc, pause_s=0)
    assert any("expected the server to close" in d and "+PONG" in d for d in result.details)


def test_replay_any_of_pattern_elapsed_silence(server: FakeServer) -> None:
    ok = scenario(
        [
            {"conn": 0, "send": PING, "expect_any_of": ["+OK\r\n", "+PONG\r\n"]},
            {"conn": 0, "send": PING, "expect_pattern": r"\+P.NG\r\n"},
            {
                "conn": 0,
                "send": "*1\r\n$4\r\nSLOW\r\n",
                "expect": "+PONG\r\n",
                "elapsed_min": 0.2,
                "elapsed_max": 2.0,
            },
            {"conn": 1, "send": PING, "expect": "+PONG\r\n", "expect_silence": 0.2},
            {"conn": 1, "send": "*1\r\n$4\r\nSLOW\r\n"},
            {"conn": 0, "sleep_before": 0.1, "send": PING, "expect": "+PONG\r\n"},
            {"conn": 1, "expect": "+PONG\r\n", "elapsed_min": 0.2},
            {"conn": 1, "close": True},
        ]
    )
    result = replay_scenario(server.host, server.port, ok, pause_s=0)
    assert result.outcome is Outcome.PASS, result.details

    cases = [
        ({"conn": 0, "send": PING, "expect_any_of": ["+OK\r\n", "$-1\r\n"]}, "expected one of"),
        ({"conn": 0, "send": PING, "expect_pattern": "[+]OK.*"}, "matching"),
        (
            {"conn": 0, "send": "*1\r\n$4\r\nSLOW\r\n", "expect": "+PONG\r\n", "elapsed_max": 0.1},
            "too late",
        ),
        ({"conn": 0, "send": PING, "expect": "+PONG\r\n", "elapsed_min": 1.0}, "too early"),
        (
            {
                "conn": 0,
                "send": "*1\r\n$6\r\nDOUBLE\r\n",
                "expect": "+OK\r\n",
                "expect_silence": 0.2,
            },
            "silence",
        ),
        (
            {
                "conn": 0,
                "send": "*1\r\n$6\r\nSILENT\r\n",
                "expect_any_of": ["+OK\r\n"],
                "timeout": 0.2,
            },
            "timed out",
        ),
    ]
    for step, message in cases:
        result = replay_scenario(server.host, server.port, scenario([step]), pause_s=0)
        assert result.outcome is Outcome.FAIL, step
        assert message in "\n".join(result.details), result.details


def test_replay_detects_unread_bytes_at_the_end(server: FakeServer) -> None:
    sc = scenario([{"conn": 0, "send": "*1\r\n$6\r\nDOUBLE\r\n", "expect": "+OK\r\n"}])
    result = replay_scenario(server.host, server.port, sc, pause_s=0)
    assert result.outcome is Outcome.FAIL
    assert result.details == ("conn 0 has unread bytes after the last step: b'+OK\\r\\n'",)


def test_replay_flushes_queues_and_reports_unreachable_server(server: FakeServer) -> None:
    with server.lock:
        server.queues[b"q1"] = {b"e": b"c"}
    sc = scenario(
        [
            {
                "conn": 0,
                "send": "*4\r\n$6\r\nQLPUSH\r\n$2\r\nq1\r\n$1\r\ne\r\n$1\r\nc\r\n",
                "expect": "+OK\r\n",
            }
        ],
        queues=["q1"],
    )
    assert replay_scenario(server.host, server.port, sc, pause_s=0).outcome is Outcome.PASS
    assert b"q1" not in server.queues  # flushed afterwards too

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    result = replay_scenario("127.0.0.1", port, sc, pause_s=0)
    assert result.outcome is Outcome.FAIL
    assert result.details[0].startswith("set-up failed")


def test_requires_redis_is_not_applicable_without_redis(server: FakeServer) -> None:
    sc = load_transcript(TRANSCRIPTS_DIR / "redis_key_layout.json")
    result = replay_scenario(server.host, server.port, sc)
    assert result.outcome is Outcome.NOT_APPLICABLE
    assert not result.passed
    assert not result.failed


def test_redis_steps_and_flushall(server: FakeServer) -> None:
    # The fake server plays both okq and "its Redis" here.
    sc = scenario(
        [
            {"redis": True, "send": PING, "expect": "+PONG\r\n"},
            {"conn": 0, "send": PING, "expect": "+PONG\r\n"},
            {"redis": True, "send": PING, "expect_pattern": r"\+P[O]NG\r\n"},
        ],
        requires_redis=True,
    )
    redis = (server.host, server.port)
    result = replay_scenario(server.host, server.port, sc, redis=redis, pause_s=0)
    assert result.outcome is Outcome.PASS, result.details
    assert server.flushes == 1
    report = run_scenarios(server.host, server.port, [sc, sc], redis=f"127.0.0.1:{server.port}")
    assert report.summary_line() == "2 passed, 0 failed"
    assert server.flushes == 3
    with FakeServer() as other:
        failing = scenario(
            [{"redis": True, "send": PING, "expect": "+OK\r\n"}], requires_redis=True
        )
        result = replay_scenario(server.host, server.port, failing, redis=(other.host, other.port))
    assert result.outcome is Outcome.FAIL
    assert result.details[0] == "step 0 (redis), after sending b'*1\\r\\n$4\\r\\nPING\\r\\n':"


def test_run_scenarios_parallel_keeps_order_and_counts(server: FakeServer) -> None:
    names = [
        "ping_basic",
        "ping_case_insensitive",
        "fifo_order",
        "redis_key_layout",
        "qack_basic",
    ]
    checks = [load_transcript(TRANSCRIPTS_DIR / f"{n}.json") for n in names]
    seen: list[str] = []
    for jobs in (1, 4):
        report = run_scenarios(
            server.host,
            server.port,
            checks,
            jobs=jobs,
            pause_s=0.05,
            on_result=lambda r: seen.append(r.name),
        )
        assert [r.name for r in report.results] == names
        outcomes = [r.outcome for r in report.results]
        assert outcomes == [
            Outcome.PASS,
            Outcome.PASS,
            Outcome.FAIL,
            Outcome.NOT_APPLICABLE,
            Outcome.FAIL,
        ]
        assert report.summary_line() == "2 passed, 2 failed, 1 skipped"
        assert not report.ok
    assert sorted(seen) == sorted(names * 2)
    with pytest.raises(ValueError, match="jobs"):
        run_scenarios(server.host, server.port, checks, jobs=0)


def test_report_rendering() -> None:
    report = Report(
        (
            Result(name="a", kind="transcript", outcome=Outcome.PASS, needs_empty_server=True),
            Result(
                name="b",
                kind="defect",
                outcome=Outcome.DEFECT_REPRODUCED,
                defect="D2",
                details=("x\ny",),
            ),
            Result(name="c", kind="defect", outcome=Outcome.PASS, defect="D1"),
        )
    )
    text = report.format_text().splitlines()
    assert text[0].startswith("PASS  a")
    assert "needs an empty server" in text[0]
    assert text[1].startswith("FAIL  b")
    assert "okq defect D2 reproduced" in text[1]
    assert text[2:4] == ["      x", "      y"]
    assert "okq defect D1 fixed" in text[4]
    assert text[-1] == "2 passed, 1 failed"
    assert json.loads(report.to_json())["summary"] == "2 passed, 1 failed"
    assert report.by_name("b").defect == "D2"


# -- defect probes against the fake server -------------------------------------------


def _probe(name: str) -> DefectProbe:
    return next(p for p in defect_probes() if p.name == name)


def test_d1_fixed_and_reproduced() -> None:
    probe = _probe("defect_d1_crash_inputs")
    assert probe.final
    with FakeServer() as srv:
        result = run_probe(srv.host, srv.port, probe, pause_s=0)
    assert result.outcome is Outcome.PASS, result.details
    assert len(result.details) == 5
    with FakeServer(crash_on_bad_header=True) as srv:
        result = run_probe(srv.host, srv.port, probe, pause_s=0)
    assert result.outcome is Outcome.DEFECT_REPRODUCED, result.details
    assert "stopped serving other connections" in result.details[-1] or any(
        "stopped serving" in d for d in result.details
    )


def test_d2_fixed_and_reproduced() -> None:
    probe = _probe("defect_d2_crlf_in_duplicate_id")
    with FakeServer(escape_ids=True) as srv:
        result = run_probe(srv.host, srv.port, probe, pause_s=0)
    assert result.outcome is Outcome.PASS, result.details
    with FakeServer(escape_ids=False) as srv:
        result = run_probe(srv.host, srv.port, probe, pause_s=0)
    assert result.outcome is Outcome.DEFECT_REPRODUCED, result.details
    assert "x\\r\\ny" in result.details[0]


def test_d3_on_a_server_without_qnotify_fails_plainly(server: FakeServer) -> None:
    result = run_probe(
        server.host, server.port, _probe("defect_d3_colon_and_empty_names"), pause_s=0
    )
    assert result.outcome is Outcome.FAIL
    assert "probe could not complete" in result.details[0]


def test_probe_list() -> None:
    assert [p.defect for p in defect_probes()] == ["D1", "D2", "D3"]
    assert [p.slow for p in defect_probes()] == [False, False, True]
    assert [p.slow for p in defect_probes(slow=False)] == [False, False, False]


# -- command line ---------------------------------------------------------------------


def test_cli_pass_and_exit_code(server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--port", str(server.port), "-k", "ping_", "--no-defects"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[-1] == "2 passed, 0 failed"
    assert any(line.startswith("PASS  ping_basic") for line in out)


def test_cli_fail_is_reported(server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "--host",
            "127.0.0.1",
            "--port",
            str(server.port),
            "-k",
            "ping_basic",
            "-k",
            "qack_b*",
            "-k",
            "redis_key",
            "--no-defects",
            "--jobs",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    last = out.splitlines()[-1]
    assert SUMMARY.match(last)
    assert last == "1 passed, 1 failed, 1 skipped"
    assert "FAIL  qack_basic" in out
    assert "step 1 (conn 0), after sending b'*4\\r\\n$5\\r\\nQRPOP" in out
    assert "N/A   redis_key_layout" in out


def test_cli_json_list_and_usage_errors(
    server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--port", str(server.port), "-k", "ping_basic", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"] == "1 passed, 0 failed"
    assert doc["results"][0]["outcome"] == "PASS"

    assert main(["--list", "--defects"]) == 0
    listed = capsys.readouterr().out
    assert "defect_d1_crash_inputs" in listed
    assert "ping_basic" not in listed
    assert main(["--list", "--quick", "-k", "d3"]) == 0
    assert "redelivered" not in capsys.readouterr().out

    assert main(["--port", str(server.port), "-k", "no-such-check"]) == 2
    assert main(["--port", str(server.port), "--redis", "nonsense"]) == 2
    assert main(["--port", str(server.port), "--jobs", "0"]) == 2
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    assert main(["--port", str(port), "-k", "ping_basic"]) == 2
    assert "cannot connect" in capsys.readouterr().err


def test_step_timing_is_bounded(server: FakeServer) -> None:
    started = time.monotonic()
    sc = scenario(
        [{"conn": 0, "send": "*1\r\n$6\r\nSILENT\r\n", "expect": "+OK\r\n", "timeout": 0.5}]
    )
    replay_scenario(server.host, server.port, sc, pause_s=0)
    assert time.monotonic() - started < 3
