"""Logging like a library: a NullHandler on ``"okq"``, an error raised or logged (never
both), and a consumer's reconnect storm summarised (`okq_proto.policy.FailureLog`)."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import okq_proto
from okq_proto import ConnectError, LocalProtocolError
from okq_proto.policy import Backoff, FailureLog
from okq_transports import sync as okq_sync
from okq_transports.server import ThreadedServer


def _free_port() -> int:
    """A loopback port where nothing listens (bound, read, closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _okq_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "okq" and r.levelno >= level]


class _Counting(okq_proto.Hooks):
    def __init__(self) -> None:
        self.reconnects = 0

    def reconnect(self, address: tuple[str, int], attempt: int, delay_s: float) -> None:
        self.reconnects += 1


def _fast_backoff() -> Backoff:
    return Backoff(base_s=0.01, cap_s=0.05)


# -- the NullHandler ----------------------------------------------------------------------------


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_okq_warnings_print_nothing_when_logging_is_not_configured() -> None:
    """No handler configured: a real okq warning (a consumer's failed connection) and records
    on ``"okq"`` / ``"okq.server"`` reach no stderr (no "last resort" output)."""
    port = _free_port()
    done = _run(
        f"""
        import logging, threading
        from okq_transports.sync import Client
        logging.getLogger("okq").warning("okq: a warning")
        logging.getLogger("okq.server").error("okq: an error")
        stop = threading.Event()
        threading.Timer(0.3, stop.set).start()
        with Client("127.0.0.1:{port}") as client:
            client.consume(lambda delivery: True, ["q"], stop=stop)
        print("done")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n"
    assert done.stderr == ""


def test_the_server_logger_is_quiet_too_when_only_the_server_is_imported() -> None:
    done = _run(
        """
        import logging
        import okq_transports.server
        logging.getLogger("okq.server").warning("okq: a warning")
        """
    )
    assert (done.returncode, done.stderr) == (0, "")


def test_a_configured_application_still_sees_okq_warnings() -> None:
    done = _run(
        """
        import logging
        logging.basicConfig(format="%(name)s %(levelname)s %(message)s")
        import okq_transports.sync
        logging.getLogger("okq").warning("okq: a warning")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "okq WARNING okq: a warning\n"


def test_the_null_handler_is_added_once() -> None:
    import importlib

    import okq_transports

    importlib.reload(okq_transports)
    handlers = logging.getLogger("okq").handlers
    assert sum(isinstance(h, logging.NullHandler) for h in handlers) == 1


# -- raised or logged ---------------------------------------------------------------------------


def test_a_request_to_a_dead_port_raises_and_logs_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="okq")
    with okq_sync.Client(f"127.0.0.1:{_free_port()}", connect_timeout_s=2.0) as client:
        with pytest.raises(ConnectError):
            client.ping()
        with pytest.raises(ConnectError):
            client.push("q", b"x")
    assert _okq_records(caplog, logging.WARNING) == []


def test_failover_failure_raises_and_logs_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="okq")
    addresses = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    client = okq_sync.Client(addresses, connect_timeout_s=2.0)
    with client, pytest.raises(ConnectError, match="any of 2 addresses"):
        client.status("q")
    assert _okq_records(caplog, logging.WARNING) == []


class _CutFirst:
    """A loopback listener whose first connection is closed as soon as a request arrives;
    then it either stops listening (`answer` None) or answers each request on its next
    connection with `answer`."""

    def __init__(self, answer: bytes | None) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(10.0)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._answer = answer
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with self._listener:
            first, _ = self._listener.accept()
            with first:
                first.recv(65536)
                if self._answer is None:
                    self._listener.close()  # the retry's connect is refused
                    return
            second, _ = self._listener.accept()
            with second:
                second.settimeout(10.0)
                while second.recv(65536):
                    second.sendall(self._answer)

    def join(self) -> None:
        self._thread.join(10.0)


def test_a_failed_retry_is_raised_and_its_first_failure_only_logged_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The ping's connection is closed under it; it is retried on a new connection, which
    cannot be made: the caller gets that error, and nothing is logged at WARNING."""
    caplog.set_level(logging.DEBUG, logger="okq")
    cut = _CutFirst(answer=None)
    client = okq_sync.Client(cut.address, connect_timeout_s=2.0)
    with client, pytest.raises(ConnectError):
        client.ping()
    cut.join()
    assert _okq_records(caplog, logging.WARNING) == []
    debug = [r for r in _okq_records(caplog, logging.DEBUG) if "retrying" in r.getMessage()]
    assert [getattr(r, "okq_retry", None) for r in debug] == [1]


def test_a_retry_that_worked_logs_the_failure_it_hid(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="okq")
    cut = _CutFirst(answer=b"+PONG\r\n")
    with okq_sync.Client(cut.address, connect_timeout_s=2.0) as client:
        client.ping()
    cut.join()
    warnings = _okq_records(caplog, logging.WARNING)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "PING failed on 127.0.0.1:" in warnings[0].getMessage()
    assert "retrying on a new connection worked" in warnings[0].getMessage()
    assert getattr(warnings[0], "okq_retry", None) == 1


# -- the reconnect storm ------------------------------------------------------------------------


class TestFailureLog:
    def test_the_first_failure_then_doubling_intervals_up_to_the_cap(self) -> None:
        failures = FailureLog(first_interval_s=1.0, max_interval_s=8.0)
        reported = [t / 10 for t in range(0, 400) if failures.failed(t / 10)]  # every 0.1 s
        assert reported == [0.0, 1.0, 3.0, 7.0, 15.0, 23.0, 31.0, 39.0]
        assert failures.failures == 400
        assert failures.failing_s(39.9) == pytest.approx(39.9)

    def test_the_default_schedule(self) -> None:
        failures = FailureLog()
        reported = [t for t in range(0, 300) if failures.failed(float(t))]  # every second
        assert reported == [0, 1, 3, 7, 15, 31, 63, 123, 183, 243]

    def test_sparse_failures_are_each_reported(self) -> None:
        failures = FailureLog(first_interval_s=1.0, max_interval_s=60.0)
        assert [failures.failed(t) for t in (100.0, 105.0, 200.0)] == [True, True, True]

    def test_recovered_ends_the_run(self) -> None:
        failures = FailureLog()
        assert failures.recovered(5.0) is None
        assert failures.failed(10.0)
        assert not failures.failed(10.5)
        assert not failures.failed(10.9)
        assert failures.recovered(12.5) == (3, 2.5)
        assert (failures.failures, failures.started_s) == (0, None)
        assert failures.recovered(13.0) is None
        assert failures.failed(13.1)  # a new run: its first failure is reported again
        assert not failures.failed(13.2)  # and the interval starts over

    def test_clock_going_backwards_is_harmless(self) -> None:
        failures = FailureLog()
        assert failures.failed(10.0)
        assert not failures.failed(9.0)
        assert failures.failing_s(9.0) == 0.0

    @pytest.mark.parametrize(("first", "most"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
    def test_bad_intervals_are_refused(self, first: float, most: float) -> None:
        with pytest.raises(LocalProtocolError):
            FailureLog(first, most)


@pytest.fixture
def okq_debug(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="okq")
    return caplog


def test_a_consumer_facing_a_dead_server_logs_a_few_warnings(
    okq_debug: pytest.LogCaptureFixture,
) -> None:
    hooks = _Counting()
    stop = threading.Event()
    timer = threading.Timer(2.0, stop.set)
    with okq_sync.Client(f"127.0.0.1:{_free_port()}", hooks=hooks) as client:
        timer.start()
        try:
            client.consume(lambda d: True, ["q"], stop=stop, backoff=_fast_backoff)
        finally:
            timer.cancel()
    warnings = _okq_records(okq_debug, logging.WARNING)
    assert hooks.reconnects >= 20  # every attempt still reaches the hooks
    assert 1 <= len(warnings) <= 3, [r.getMessage() for r in warnings]
    first, *later = warnings
    assert "failed (connect to" in first.getMessage()
    assert getattr(first, "okq_failures", None) == 1
    for record in later:
        failed = getattr(record, "okq_failures", 0)
        assert f"still failing: {failed} attempts failed" in record.getMessage()
        assert failed > 1
    debug = [r for r in okq_debug.records if r.name == "okq" and r.levelno == logging.DEBUG]
    assert len(debug) + len(warnings) == hooks.reconnects  # the others are at DEBUG


def test_a_consumer_logs_its_recovery_once_the_server_is_up(
    okq_debug: pytest.LogCaptureFixture,
) -> None:
    port = _free_port()
    stop = threading.Event()
    server = ThreadedServer("127.0.0.1", port)

    class StopOnRecovery(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "recovered after" in record.getMessage():
                stop.set()

    def start_later() -> None:
        time.sleep(1.0)
        server.start()

    watcher = StopOnRecovery()
    logging.getLogger("okq").addHandler(watcher)
    starter = threading.Thread(target=start_later, daemon=True)
    timer = threading.Timer(20.0, stop.set)  # bounded, whatever happens
    try:
        with okq_sync.Client(f"127.0.0.1:{port}") as client:
            starter.start()
            timer.start()
            client.consume(lambda d: True, ["q"], stop=stop, backoff=_fast_backoff)
    finally:
        timer.cancel()
        logging.getLogger("okq").removeHandler(watcher)
        starter.join(10)
        server.stop()
    warnings = _okq_records(okq_debug, logging.WARNING)
    recovered = [r for r in warnings if "recovered after" in r.getMessage()]
    assert len(recovered) == 1, [r.getMessage() for r in warnings]
    failures = getattr(recovered[0], "okq_failures", 0)
    assert failures > 1
    assert f"recovered after {failures} failed attempts (" in recovered[0].getMessage()
    assert getattr(recovered[0], "okq_failing_s", 0.0) >= 0.5
    assert len(warnings) <= 4  # the first failure, one or two more, the recovery
