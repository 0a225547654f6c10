"""Every ```python block of README.md runs, in a fresh interpreter, against an embedded server.

The README's examples name the default address ``127.0.0.1:4777``; the test points them at a
fresh embedded server on a free port by replacing that address (and ``port=4777``) only.
Each block runs in its own subprocess with a time limit, as a reader would run it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from okq_transports.server import ThreadedServer
from tests.test_docs_examples import python_blocks

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_readme_has_examples_for_every_front_door() -> None:
    text = "\n".join(code for _, code in BLOCKS)
    for needle in ("okq_transports.sync", "okq_transports.asyncio", "okq_transports.trio",
                   "okq_transports.redis", "consume", "nursery.start"):  # fmt: skip
        assert needle in text, needle


def test_readme_names_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "okq demo" in text
    assert "scripts/test" in text
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "scripts/test" in ci


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_readme_example_runs(line: int, code: str, okq_server: ThreadedServer) -> None:
    if "FakeServer" not in code:  # the fake has no address
        assert "127.0.0.1:4777" in code or "port=4777" in code, "examples name the default address"
    code = code.replace("127.0.0.1:4777", okq_server.address).replace(
        "port=4777", f"port={okq_server.port}"
    )
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, f"README line {line}:\n{result.stderr}"
    assert result.stdout.strip(), "every example prints what it did"
