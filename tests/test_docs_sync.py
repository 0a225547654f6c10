"""Every ```python block of docs/sync.md runs here, in order, in one namespace, against an
embedded okq server whose address is in ``OKQ_SERVER``.

The consumer example blocks until SIGINT or SIGTERM (``stop_on_signals``): a timer sends the
process a SIGINT once the example has handled its events, which also shows the signal wiring
works.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from okq_transports.server import ThreadedServer
from tests.test_docs_examples import python_blocks as page_blocks

PAGE = Path(__file__).resolve().parent.parent / "docs" / "sync.md"


def python_blocks() -> list[str]:
    return [code for _, code in page_blocks(PAGE.read_text(encoding="utf-8"))]


@pytest.fixture
def okq_address(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadedServer("127.0.0.1", 0, sweep_interval_s=0.5, seed=0)
    server.start()
    monkeypatch.setenv("OKQ_SERVER", server.address)
    try:
        yield server.address
    finally:
        server.stop()


def _interrupt_when(predicate: threading.Event) -> threading.Thread:
    def run() -> None:
        if predicate.wait(10):
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(60)
def test_every_python_block_runs(
    okq_address: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    blocks = python_blocks()
    assert len(blocks) >= 6
    namespace: dict[str, object] = {"__name__": "docs_sync"}
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for number, block in enumerate(blocks):
            interrupter = None
            if "stop_on_signals()" in block:
                consumed = threading.Event()
                namespace["__consumed__"] = consumed
                block = block.replace(
                    '    print(f"got {event.id}: {event.contents!r}")\n',
                    '    print(f"got {event.id}: {event.contents!r}")\n    __consumed__.set()\n',
                )
                interrupter = _interrupt_when(consumed)
            code = compile(block, f"{PAGE.name}[{number}]", "exec")
            exec(code, namespace)
            if interrupter is not None:
                interrupter.join(15)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    out = capsys.readouterr().out
    assert "pushed" in out
    assert "got" in out  # the consumer example handled events before SIGINT stopped it
    assert not [r for r in caplog.records if r.levelno >= 30], "an example logged a failure"
