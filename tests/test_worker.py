"""``okq worker MODULE:FUNCTION QUEUE...`` run as a user runs it: a handler module in a fresh
folder, the worker a real process against an embedded server; acks, redelivery of what
failed, async handlers, concurrency, the graceful stop on SIGINT (exit 130) and the errors
for a bad spec."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import IO

import pytest

from okq_transports.server import ThreadedServer
from okq_transports.sync import Client

HANDLERS = textwrap.dedent(
    """
    import asyncio
    import os
    import threading
    import time

    OUT = os.environ["WORKER_OUT"]
    _lock = threading.Lock()


    def _note(text):
        with _lock, open(OUT, "a", encoding="utf-8") as out:
            out.write(text + "\\n")


    def handle(delivery):
        _note(f"{delivery.queue} {delivery.contents.decode()}")
        if delivery.contents == b"refuse":
            return False
        if delivery.contents == b"raise":
            raise RuntimeError("handler failed on purpose")
        return None  # returning normally acks


    async def handle_async(delivery):
        await asyncio.sleep(0.01)
        _note(f"async {delivery.contents.decode()}")


    def slow(delivery):
        _note(f"start {threading.current_thread().name}")
        time.sleep(0.5)
        _note("done")


    class Tasks:
        @staticmethod
        def nested(delivery):
            _note("nested")


    not_callable = 42
    """
)


def start_worker(
    folder: Path, url: str, *args: str, out: Path
) -> tuple[subprocess.Popen[str], IO[str]]:
    env = {k: v for k, v in os.environ.items() if k not in ("OKQ_URL", "OKQ_SERVER")}
    env["WORKER_OUT"] = str(out)
    env.pop("PYTHONPATH", None)
    err_file = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by the caller
    proc = subprocess.Popen(
        [sys.executable, "-m", "okq_transports", "-u", url, "worker", *args],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=err_file,
        text=True,
    )
    return proc, err_file


def finish(proc: subprocess.Popen[str], err_file: IO[str], timeout: float = 30) -> tuple[int, str]:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    err_file.seek(0)
    text = err_file.read()
    err_file.close()
    return proc.returncode, text


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "myjobs.py").write_text(HANDLERS, encoding="utf-8")
    return tmp_path


def lines(out: Path) -> list[str]:
    return out.read_text(encoding="utf-8").splitlines() if out.exists() else []


@pytest.mark.timeout(60)
def test_returning_acks_false_or_raising_does_not(folder: Path) -> None:
    out = folder / "out.txt"
    with (
        ThreadedServer("127.0.0.1", 0, sweep_interval_s=0.2) as server,
        Client(server.address) as client,
    ):
        for contents in (b"one", b"refuse", b"raise", b"two"):
            client.push("jobs", contents)
        args = ("myjobs:handle", "jobs", "--ex", "30", "--max-events", "4")
        proc, err_file = start_worker(folder, server.url, *args, out=out)
        code, err = finish(proc, err_file)
        assert code == 0, err
        assert sorted(lines(out)) == ["jobs one", "jobs raise", "jobs refuse", "jobs two"]
        assert "handler failed on purpose" in err  # logged with its traceback
        assert "Traceback" in err
        [status] = client.status("jobs")
        assert (status.total, status.processing) == (2, 2)  # the two not acked, claimed
    assert "okq worker: myjobs:handle (function) on jobs" in err


@pytest.mark.timeout(60)
def test_an_async_handler_and_a_dotted_name(folder: Path) -> None:
    out = folder / "out.txt"
    with ThreadedServer("127.0.0.1", 0) as server, Client(server.address) as client:
        client.push("a", b"x")
        client.push("b", b"y")
        proc, err_file = start_worker(
            folder, server.url, "myjobs:handle_async", "a", "b", "--max-events", "2", out=out
        )
        code, err = finish(proc, err_file)
        assert code == 0, err
        assert sorted(lines(out)) == ["async x", "async y"]
        assert client.status("a", "b")[0].total == 0
        client.push("c", b"z")
        proc, err_file = start_worker(
            folder, server.url, "myjobs:Tasks.nested", "c", "--max-events", "1", out=out
        )
        assert finish(proc, err_file)[0] == 0
        assert lines(out)[-1] == "nested"
    assert "(coroutine function)" in err
    assert "Warning" not in err  # the loops are closed


@pytest.mark.timeout(60)
def test_concurrency_and_ctrl_c(folder: Path) -> None:
    out = folder / "out.txt"
    with ThreadedServer("127.0.0.1", 0) as server, Client(server.address) as client:
        for n in range(3):
            client.push("slow", b"%d" % n)
        proc, err_file = start_worker(
            folder, server.url, "myjobs:slow", "slow", "--concurrency", "3", out=out
        )
        deadline = time.monotonic() + 20
        while sum(line.startswith("start") for line in lines(out)) < 3:  # all three at once
            assert proc.poll() is None, finish(proc, err_file)
            assert time.monotonic() < deadline, lines(out)
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        code, err = finish(proc, err_file)
        assert code == 130, err
        assert lines(out).count("done") == 3  # the handlers in hand finished
        assert len({line for line in lines(out) if line.startswith("start")}) == 3
        assert client.status("slow")[0].total == 0  # and were acked


@pytest.mark.parametrize(
    ("spec", "code", "message"),
    [
        ("myjobs", 2, "is not MODULE:FUNCTION"),
        ("nosuchmodule:handle", 2, "no module named 'nosuchmodule'"),
        ("myjobs:missing", 2, "myjobs has no 'missing'"),
        ("myjobs:not_callable", 2, "myjobs:not_callable is not callable"),
        ("broken:handle", 1, "cannot import broken: ZeroDivisionError"),
    ],
)
def test_a_bad_handler_is_one_clear_line(folder: Path, spec: str, code: int, message: str) -> None:
    (folder / "broken.py").write_text("1 / 0\n", encoding="utf-8")
    proc, err_file = start_worker(folder, "okq://127.0.0.1:1", spec, "jobs", out=folder / "o")
    got, err = finish(proc, err_file)
    assert got == code, err
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
