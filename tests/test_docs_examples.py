"""Every ```python block of every docs page runs here, against an embedded okq server.

(docs/sync.md's consumer waits for a signal, so tests/test_docs_sync.py runs that page.)

A page's blocks run in order in one namespace (a later block may use what an earlier one
defined), with ``OKQ_SERVER`` pointing at a fresh embedded server whose restore sweep runs
every 0.5 s (so examples that wait for a redelivery finish quickly; the code itself is the
same against a real okq server).  Blocks that are not meant to run use another fence
language (``text``, ``pycon``, ``console``).

Also checks that the generated consumer state diagram is up to date.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from okq_transports.server import ThreadedServer

DOCS = Path(__file__).resolve().parent.parent / "docs"

#: Pages whose examples need more than running in order (docs/sync.md's consumer blocks
#: until a signal arrives): they have a test module of their own.
SPECIAL = {"sync.md": "tests/test_docs_sync.py"}

_FENCE = re.compile(
    r"^(?P<fence>```+|~~~+)(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=fence)\s*$", re.M | re.S
)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of every ```python block in a Markdown text."""
    blocks = []
    for match in _FENCE.finditer(text):
        info = match["info"].strip().split()
        if info and info[0] in ("python", "python3", "py"):
            line = text.count("\n", 0, match.start()) + 2
            blocks.append((line, match["body"]))
    return blocks


#: Every page with a ```python block, except the SPECIAL ones: all are run below.
PAGES = sorted(
    page.name
    for page in DOCS.glob("*.md")
    if page.name not in SPECIAL and python_blocks(page.read_text(encoding="utf-8"))
)


def test_python_blocks_are_found() -> None:
    text = "a\n```python\nx = 1\n```\n```text\nnot run\n```\n````python\ny = 2\n````\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (9, "y = 2\n")]


@pytest.fixture
def docs_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadedServer]:
    server = ThreadedServer("127.0.0.1", 0, sweep_interval_s=0.5, seed=0)
    server.start()
    monkeypatch.setenv("OKQ_SERVER", server.address)
    try:
        yield server
    finally:
        server.stop()


#: Pages whose examples run another event loop or reactor (Twisted, Tornado, hand-made
#: loops): each runs in a fresh interpreter, so nothing it leaves behind (a reactor's waker,
#: a loop policy, a thread) can reach the tests that run after it in this process.
ISOLATED = ("embedding-",)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run(page: str, docs_server: ThreadedServer) -> None:
    path = DOCS / page
    if page.startswith(ISOLATED):
        script = "\n\n".join(code for _, code in python_blocks(path.read_text(encoding="utf-8")))
        done = subprocess.run(
            [sys.executable, "-bb", "-W", "error", "-c", script],
            capture_output=True,
            text=True,
            timeout=80,
            check=False,
            env={**os.environ, "OKQ_SERVER": docs_server.address},  # the blocks read it
        )
        assert done.returncode == 0, done.stderr
        return
    namespace: dict[str, object] = {"__name__": f"docs_example_{path.stem}"}
    for line, code in python_blocks(path.read_text(encoding="utf-8")):
        compiled = compile("\n" * (line - 1) + code, str(path), "exec")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compiled, namespace)  # the docs' own code, run as a reader would run it


def test_every_example_page_is_run() -> None:
    """No page with examples escapes: each is in PAGES or has its own test module."""
    assert {"asyncio.md", "trio.md", "redis-py.md", "conformance.md", "sans-io.md"} <= set(PAGES)
    for page, module in SPECIAL.items():
        assert python_blocks((DOCS / page).read_text(encoding="utf-8")), page
        assert (DOCS.parent / module).exists(), module


def test_state_diagram_is_up_to_date() -> None:
    sys.path.insert(0, str(DOCS))
    try:
        import gen_state_diagram
    finally:
        sys.path.remove(str(DOCS))
    assert gen_state_diagram.stale() == [], "run: python docs/gen_state_diagram.py"


def test_state_diagram_covers_every_move() -> None:
    sys.path.insert(0, str(DOCS))
    try:
        import gen_state_diagram
    finally:
        sys.path.remove(str(DOCS))
    from okq_proto import CONSUMER_MOVES as MOVES

    table = gen_state_diagram.render_table(MOVES)
    for (state, inp), nxt in MOVES.items():
        assert f"| `{state.name}` | `{inp.name}` |" in table
        assert nxt.name in table
    svg = gen_state_diagram.render_svg(MOVES)
    assert svg.startswith("<svg")
    assert svg.rstrip().endswith("</svg>")
    for state in {s for s, _ in MOVES} | set(MOVES.values()):
        assert f">{state.name}</text>" in svg
