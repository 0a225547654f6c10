"""The suite's command line as users run it: ``okq conformance`` and ``python -m conformance``
with ``--server``, the JSON and JUnit XML reports, the exit codes, and the refusal of a
``conformance`` package that is not okq's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance import Outcome, Report, Result, report_to_junit
from conformance.__main__ import main
from okq_transports.cli import main as okq_main
from okq_transports.server import ThreadedServer, run_in_thread
from tests.conformance.fakeserver import FakeServer


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with run_in_thread(host="127.0.0.1", port=0) as srv:
        yield srv


def _address(server: ThreadedServer | FakeServer) -> str:
    return f"{server.host}:{server.port}"


def test_okq_conformance_writes_junit_and_json(
    server: ThreadedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junit, report = tmp_path / "junit.xml", tmp_path / "report.json"
    argv = ["conformance", "--server", _address(server), "-k", "ping_basic", "-k", "defect_d2"]
    code = okq_main([*argv, "--junit", str(junit), "--json", str(report)])
    out = capsys.readouterr().out.splitlines()
    assert code == 0, out
    assert out[-1] == "2 passed, 0 failed"
    assert out[0].startswith(f"okq conformance: 2 checks against {_address(server)}")
    root = ET.parse(junit).getroot()
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("2", "0", "0")
    assert suite.get("name") == f"okq-conformance {_address(server)}"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"ping_basic", "defect_d2_crlf_in_duplicate_id"}
    assert cases["ping_basic"].get("classname") == "transcript"
    assert cases["ping_basic"].find("failure") is None
    prop = cases["defect_d2_crlf_in_duplicate_id"].find("properties/property")
    assert prop is not None
    assert (prop.get("name"), prop.get("value")) == ("defect", "D2")
    doc = json.loads(report.read_text(encoding="utf-8"))
    assert doc["summary"] == "2 passed, 0 failed"


def test_global_server_option_is_passed_on(
    server: ThreadedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert okq_main(["--server", _address(server), "conformance", "-k", "ping_basic"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 passed, 0 failed"
    assert okq_main([f"--server={_address(server)}", "conformance", "-k", "ping_basic"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 passed, 0 failed"


def test_failures_reach_the_junit_report(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeServer() as fake:
        argv = ["--server", _address(fake), "-k", "ping_basic", "-k", "qack_basic"]
        code = main([*argv, "-k", "redis_key", "--no-defects", "--junit", "-"])
    assert code == 1
    root = ET.fromstring(capsys.readouterr().out)  # stdout holds the XML alone
    cases = {c.get("name"): c for c in root.iter("testcase")}
    failure = cases["qack_basic"].find("failure")
    assert failure is not None
    assert failure.get("type") == "conformance"
    assert "QRPOP" in (failure.text or "")
    assert cases["ping_basic"].find("failure") is None
    assert cases["redis_key_layout"].find("skipped") is not None


def test_junit_rendering_of_every_outcome() -> None:
    results = (
        Result(name="a", kind="transcript", outcome=Outcome.PASS, duration_s=0.25),
        Result(
            name="b", kind="transcript", outcome=Outcome.FAIL, details=("got b'\\x00'\x00\x07",)
        ),
        Result(name="c", kind="defect", outcome=Outcome.DEFECT_REPRODUCED, defect="D1"),
        Result(name="d", kind="transcript", outcome=Outcome.NOT_APPLICABLE, details=("no redis",)),
        Result(name="e", kind="semantic", outcome=Outcome.PASS, section="§13"),
    )
    root = ET.fromstring(report_to_junit(Report(results, duration_s=1.5)).split("\n", 1)[1])
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("5", "2", "1")
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert cases["a"].get("time") == "0.250"
    text = cases["b"].findtext("failure") or ""
    assert "\\x00" in text
    assert "\\x07" in text  # control characters XML cannot carry are spelled out
    assert cases["c"].find("failure") is not None
    assert cases["c"].find("failure").get("type") == "okq-defect-D1"  # type: ignore[union-attr]
    assert cases["d"].find("skipped").get("message") == "no redis"  # type: ignore[union-attr]
    assert cases["e"].find("properties/property").get("value") == "§13"  # type: ignore[union-attr]


def test_usage_errors_exit_2(
    server: ThreadedServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--server", "nonsense", "-k", "ping_basic"]) == 2
    assert main(["--server", _address(server), "--port", "1", "-k", "ping_basic"]) == 2
    missing = tmp_path / "no-such-dir" / "junit.xml"
    assert main(["--server", _address(server), "-k", "ping_basic", "--junit", str(missing)]) == 2
    assert "cannot write the report" in capsys.readouterr().err


def test_a_foreign_conformance_package_is_refused(tmp_path: Path) -> None:
    (tmp_path / "conformance").mkdir()
    (tmp_path / "conformance" / "__init__.py").write_text('"""Someone else\'s."""\n')
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "okq_transports", "conformance", "--list"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "is not okq's conformance suite" in proc.stderr
    assert str(tmp_path / "conformance") in proc.stderr


def test_fuzz_and_model_through_okq_conformance(
    server: ThreadedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["conformance", "model", "--server", _address(server), "--runs", "1", "--steps", "8"]
    assert okq_main(argv) == 0
    assert "okq conformance model" not in capsys.readouterr().err
    fuzz = ["--iterations", "200", "--seconds", "20", "--lanes", "2"]
    assert okq_main(["--server", _address(server), "conformance", "fuzz", *fuzz]) == 0
    assert okq_main(["conformance", "model", "--runs", "1"]) == 2  # no --server
    assert "okq conformance model" in capsys.readouterr().err
