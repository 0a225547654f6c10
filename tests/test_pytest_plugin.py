"""The pytest plugin (okq_transports.pytest_plugin), run the way a user runs it.

The test file of docs/testing.md is written into a fresh folder and run by pytest in a
subprocess, without this repository's conftest (the folder is the rootdir), with warnings as
errors; the outcome is read from its JUnit XML report.  Also: the plugin is registered under
``pytest11``, loading it imports no server, and `ThreadedServer.reset` empties a server.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from okq_proto import QRegister, QRPop, to_wire
from okq_transports.server import ThreadedServer
from okq_transports.sync import Client

DOCS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "testing.md"

INI = """\
[pytest]
asyncio_default_fixture_loop_scope = function
filterwarnings =
    error
"""


def docs_test_file() -> str:
    """The ```text listing of docs/testing.md that starts with ``# test_jobs.py``."""
    text = DOCS_PAGE.read_text(encoding="utf-8")
    match = re.search(r"^```text\n(# test_jobs\.py\n.*?)^```$", text, re.M | re.S)
    assert match is not None, "docs/testing.md lost its test_jobs.py listing"
    return match[1]


def run_user_pytest(folder: Path, *args: str) -> tuple[dict[str, str], str]:
    """Run pytest in ``folder``; returns {test name: outcome} and the output."""
    report = folder / "report.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    command = [sys.executable, "-bb", "-m", "pytest", "-p", "no:cacheprovider", "-q"]
    proc = subprocess.run(
        [*command, "--junitxml", str(report), *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert report.exists(), output
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name", "")] = kinds[0] if kinds else "passed"
    return outcomes, output


@pytest.mark.timeout(180)
def test_the_documented_test_file_passes_in_a_users_folder(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text(INI, encoding="utf-8")
    (tmp_path / "test_jobs.py").write_text(docs_test_file(), encoding="utf-8")
    outcomes, output = run_user_pytest(tmp_path)
    assert outcomes == {
        "test_push_then_claim": "passed",
        "test_each_test_sees_an_empty_server": "passed",
        "test_url": "passed",
        "test_own_server": "passed",
        "test_asyncio": "passed",
        "test_anyio_on_trio[trio]": "passed",
        "test_pytest_trio": "passed",
    }, output
    assert "warning" not in output.lower(), output


@pytest.mark.timeout(180)
def test_without_the_reset_the_next_test_would_see_the_claim(tmp_path: Path) -> None:
    """The isolation test above can fail: sharing a server without emptying it does."""
    (tmp_path / "pytest.ini").write_text(INI, encoding="utf-8")
    (tmp_path / "conftest.py").write_text(
        "import pytest\n\n\n"
        "@pytest.fixture\n"
        "def okq_server(okq_session_server):\n"
        "    return okq_session_server  # shared, never reset\n",
        encoding="utf-8",
    )
    (tmp_path / "test_jobs.py").write_text(docs_test_file(), encoding="utf-8")
    outcomes, output = run_user_pytest(tmp_path, "-k", "claim or empty")
    assert outcomes == {
        "test_push_then_claim": "passed",
        "test_each_test_sees_an_empty_server": "failure",
    }, output


def test_the_plugin_is_registered_under_pytest11() -> None:
    points = importlib.metadata.entry_points(group="pytest11")
    assert {p.name: p.value for p in points}.get("okq") == "okq_transports.pytest_plugin"


def test_loading_the_plugin_imports_no_server() -> None:
    code = (
        "import sys, okq_transports.pytest_plugin\n"
        "print(sorted(m for m in sys.modules if m.startswith('okq_transports.server')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-bb", "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.strip() == "[]"


def test_reset_drops_events_claims_and_consumers() -> None:
    with ThreadedServer("127.0.0.1", 0, seed=0) as server, Client(server.address) as client:
        port = server.port
        client.push("jobs", b"a")
        client.push("jobs", b"b")
        assert client.execute(QRPop(to_wire("jobs"), 60)) is not None
        with client.connection() as conn:  # a registered consumer, back in the pool
            conn.request(QRegister((to_wire("jobs"),))).unwrap()
        assert [(s.name, s.total, s.processing, s.consumers) for s in client.status()] == [
            ("jobs", 2, 1, 1)
        ]
        server.reset()
        assert server.running
        assert server.port == port
        assert client.status() == []  # the client reconnects (a retried request)


def test_reset_of_a_stopped_server_starts_it_empty() -> None:
    server = ThreadedServer("127.0.0.1", 0)
    server.start()
    try:
        with Client(server.address) as client:
            client.push("jobs", b"a")
        server.stop()
        server.reset()
        with Client(server.address) as client:
            assert client.status() == []
    finally:
        server.stop()


def test_url_of_a_server() -> None:
    server = ThreadedServer("127.0.0.1", 0)
    with server:
        assert server.url == f"okq://127.0.0.1:{server.port}"
