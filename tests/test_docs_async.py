"""Every ```python block of docs/asyncio.md, docs/trio.md and docs/redis-py.md runs here.

A page's blocks run in order in one namespace, with ``OKQ_SERVER`` pointing at a fresh
embedded okq server on loopback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from okq_transports.server import ThreadedServer

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ["asyncio.md", "trio.md", "redis-py.md"]
_FENCE = re.compile(r"^```python\n(?P<body>.*?)^```\s*$", re.M | re.S)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of every ```python block."""
    return [(text.count("\n", 0, m.start()) + 2, m["body"]) for m in _FENCE.finditer(text)]


@pytest.fixture
def okq_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadedServer]:
    server = ThreadedServer(sweep_interval_s=0.5)
    server.start()
    monkeypatch.setenv("OKQ_SERVER", server.address)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run(page: str, okq_server: ThreadedServer) -> None:
    path = DOCS / page
    blocks = python_blocks(path.read_text(encoding="utf-8"))
    assert blocks, f"{page} has no python example"
    namespace: dict[str, object] = {"__name__": f"docs_{page}"}
    for line, code in blocks:
        exec(compile(code, f"{path}:{line}", "exec"), namespace)
