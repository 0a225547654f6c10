"""Replaying transcripts (and running defect probes) against a live okq server.

This module owns the replay rules of ``conformance/transcripts/README.md``: the
per-scenario set-up and clean-up (``FLUSHALL`` on the server's Redis when it is
reachable, otherwise ``QFLUSH`` of every queue the scenario names), running the
steps in order over raw sockets, checking every ``expect*`` field, and the
scheduler that runs independent checks concurrently. It uses only the standard
library (sockets, clocks, threads) and never the project's client library.

Scheduling rules (see ``run_scenarios``):

* a check that needs an empty server (or, with ``--redis`` and ``jobs > 1``, one
  that talks to Redis) runs alone, before the concurrent phase;
* the other checks run ``jobs`` at a time, never two with a queue in common;
* ``final`` checks (the D1 crash probe) run last, alone.

Semantic checks (``SemanticCheck``) are scheduled like transcripts: alone when they need
an empty server, otherwise concurrently with whatever shares no queue with them.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from ._check import SemanticCheck
from ._net import Connection, ReadFailure, connect
from ._report import Outcome, Report, Result
from ._resp import encode_command
from ._transcripts import Scenario, Step
from .defects import DefectProbe

__all__ = [
    "DEFAULT_PAUSE_S",
    "Check",
    "RedisAddress",
    "parse_address",
    "replay_scenario",
    "run_probe",
    "run_scenarios",
]

#: A scenario from a transcript, a built-in defect probe or a built-in semantic check.
Check: TypeAlias = Scenario | DefectProbe | SemanticCheck
#: A (host, port) pair.
RedisAddress: TypeAlias = tuple[str, int]

#: Pause after a check's connections are closed, so the server notices the closes
#: and drops registrations before the next check (README, "Replaying" step 3).
DEFAULT_PAUSE_S: Final = 0.3
#: How long ``expect_close`` waits for EOF when the step gives no ``timeout``.
CLOSE_TIMEOUT_S: Final = 5.0
#: How long the final check waits for stray bytes on each still-open connection.
_STRAY_WAIT_S: Final = 0.1
#: Reprs longer than this are shortened around the first difference.
_MAX_REPR: Final = 240


def parse_address(text: str) -> RedisAddress:
    """Parse ``HOST:PORT`` (``[v6addr]:PORT`` also accepted).

    Raises:
        ValueError: not of that form, or the port is not 1-65535.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port_text)


# -- rendering -------------------------------------------------------------------


def _short(data: bytes, around: int = 0) -> str:
    """``repr(data)``, shortened to a window around offset ``around`` if long."""
    text = repr(data)
    if len(text) <= _MAX_REPR:
        return text
    start = max(0, around - 40)
    window = data[start : start + 100]
    return f"{len(data)} bytes, [{start}:{start + len(window)}] = {window!r}"


def _mismatch(expected: bytes, got: bytes) -> list[str]:
    """Lines showing expected vs got, with the first differing offset when long."""
    offset = next(
        (i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b),
        min(len(expected), len(got)),
    )
    lines = [f"expected: {_short(expected, offset)}", f"got:      {_short(got, offset)}"]
    if len(repr(expected)) > _MAX_REPR or len(repr(got)) > _MAX_REPR:
        lines.append(f"first difference at byte {offset}")
    return lines


class _StepFailed(Exception):
    """A step's expectation was not met; ``lines`` explain how."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


# -- one scenario ------------------------------------------------------------------


def _command_reply(conn: Connection, args: tuple[bytes, ...], expected: bytes) -> None:
    """Send one command and insist on ``expected`` as its reply (used by set-up)."""
    conn.send(encode_command(*args), CLOSE_TIMEOUT_S)
    reply, _ = conn.read_reply(time.monotonic() + CLOSE_TIMEOUT_S)
    if reply != expected:
        raise _StepFailed([f"{args[0].decode()} replied {reply!r}, expected {expected!r}"])


def _flushall(redis: RedisAddress) -> None:
    conn = connect(redis[0], redis[1], "redis")
    try:
        _command_reply(conn, (b"FLUSHALL",), b"+OK\r\n")
    finally:
        conn.close()


def _qflush(host: str, port: int, queues: Sequence[bytes]) -> None:
    if not queues:
        return
    conn = connect(host, port, "cleanup")
    try:
        for queue in queues:
            _command_reply(conn, (b"QFLUSH", queue), b"+OK\r\n")
    finally:
        conn.close()


def _prepare(
    host: str, port: int, queues: Sequence[bytes], redis: RedisAddress | None
) -> str | None:
    """Empty the server for a check; return an error message or None."""
    try:
        if redis is not None:
            _flushall(redis)
        else:
            _qflush(host, port, queues)
    except (OSError, ReadFailure, _StepFailed) as exc:
        return f"set-up failed: {exc}"
    return None


def _clean_up(host: str, port: int, queues: Sequence[bytes]) -> str | None:
    try:
        _qflush(host, port, queues)
    except (OSError, ReadFailure, _StepFailed) as exc:
        return f"clean-up (QFLUSH of the scenario's queues) failed: {exc}"
    return None


class _Replay:
    """The state of one scenario replay: its connections, opened lazily."""

    def __init__(self, host: str, port: int, redis: RedisAddress | None) -> None:
        self.host = host
        self.port = port
        self.redis = redis
        self.conns: dict[int, Connection] = {}
        self.redis_conn: Connection | None = None

    def connection(self, step: Step) -> Connection:
        try:
            if step.redis:
                if self.redis_conn is None:
                    assert self.redis is not None
                    self.redis_conn = connect(self.redis[0], self.redis[1], "redis")
                return self.redis_conn
            assert step.conn is not None
            if step.conn not in self.conns:
                self.conns[step.conn] = connect(self.host, self.port, f"conn {step.conn}")
            return self.conns[step.conn]
        except OSError as exc:
            where = f"redis {self.redis}" if step.redis else f"{self.host}:{self.port}"
            raise _StepFailed([f"cannot open {step.target} to {where}: {exc}"]) from exc

    def run_step(self, step: Step) -> None:
        if step.sleep_before:
            time.sleep(step.sleep_before)
        conn = self.connection(step)
        if step.close:
            conn.close()
            if step.conn is not None:
                del self.conns[step.conn]
            return
        if step.send is not None:
            try:
                conn.send(step.send, step.timeout)
            except OSError as exc:
                raise _StepFailed([f"write failed: {exc!r}"]) from exc
        if not step.reads:
            return
        deadline = time.monotonic() + step.timeout
        try:
            if step.expect is not None:
                got, arrived = conn.read_exact(len(step.expect), deadline)
            else:
                got, arrived = conn.read_reply(deadline)
        except ReadFailure as exc:
            raise _StepFailed(
                [*self._expectation(step), f"got:      {_short(exc.got)}", exc.detail]
            ) from None
        elapsed = arrived - conn.last_write
        if step.expect is not None and got != step.expect:
            lines = _mismatch(step.expect, got)
            more = conn.pending(_STRAY_WAIT_S)
            if more:
                lines.append(f"          (then {_short(more)})")
            raise _StepFailed([*lines, _elapsed(elapsed)])
        if step.expect_any_of is not None and got not in step.expect_any_of:
            raise _StepFailed([*self._expectation(step), f"got:      {_short(got)}"])
        if step.expect_pattern is not None and not step.expect_pattern.fullmatch(
            got.decode("latin-1")
        ):
            raise _StepFailed([*self._expectation(step), f"got:      {_short(got)}"])
        if step.elapsed_min is not None and elapsed < step.elapsed_min:
            raise _StepFailed(
                [f"reply arrived too early: {_elapsed(elapsed)}, minimum {step.elapsed_min} s"]
            )
        if step.elapsed_max is not None and elapsed > step.elapsed_max:
            raise _StepFailed(
                [f"reply arrived too late: {_elapsed(elapsed)}, maximum {step.elapsed_max} s"]
            )
        if step.expect_silence is not None:
            problem = conn.expect_silence(step.expect_silence)
            if problem:
                raise _StepFailed([f"expected {step.expect_silence} s of silence: {problem}"])
        if step.expect_close:
            wait = step.timeout if step.timeout_given else CLOSE_TIMEOUT_S
            problem = conn.expect_eof(time.monotonic() + wait)
            if problem:
                raise _StepFailed([f"expected the server to close the connection: {problem}"])

    @staticmethod
    def _expectation(step: Step) -> list[str]:
        if step.expect is not None:
            return [f"expected: {_short(step.expect)}"]
        if step.expect_any_of is not None:
            return ["expected one of: " + ", ".join(_short(b) for b in step.expect_any_of)]
        assert step.expect_pattern is not None
        return [f"expected a reply matching: {step.expect_pattern.pattern!r}"]

    def stray_bytes(self) -> list[str]:
        """Lines naming every open connection that still has unread bytes."""
        open_conns = [c for c in self.conns.values() if not c.closed]
        if self.redis_conn is not None:
            open_conns.append(self.redis_conn)
        if not open_conns:
            return []
        time.sleep(_STRAY_WAIT_S)
        problems = []
        for conn in open_conns:
            left = conn.pending(0.005)
            if left:
                problems.append(
                    f"{conn.label} has unread bytes after the last step: {_short(left)}"
                )
        return problems

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()
        if self.redis_conn is not None:
            self.redis_conn.close()


def _elapsed(elapsed: float) -> str:
    return f"elapsed {elapsed:.3f} s since the latest write on this connection"


def replay_scenario(
    host: str,
    port: int,
    scenario: Scenario,
    *,
    redis: RedisAddress | None = None,
    flushall: bool | None = None,
    pause_s: float = DEFAULT_PAUSE_S,
) -> Result:
    """Replay one scenario against the okq server at ``host:port``.

    Args:
        host: the server's address.
        port: the server's TCP port.
        scenario: the scenario to replay.
        redis: the address of the Redis the server uses, if reachable; without it
            a ``requires_redis`` scenario is ``NOT_APPLICABLE``.
        flushall: empty the server with ``FLUSHALL`` on ``redis`` before the
            scenario (default: whenever ``redis`` is given); otherwise ``QFLUSH``
            every queue the scenario names. Queues are ``QFLUSH``ed afterwards too.
        pause_s: seconds to wait after closing the connections.

    Returns:
        The result; a failure names the step, the expected and received bytes
        and the elapsed time.
    """
    started = time.monotonic()

    def result(outcome: Outcome, details: list[str], failed_step: int | None = None) -> Result:
        return Result(
            name=scenario.name,
            kind="transcript",
            outcome=outcome,
            details=tuple(details),
            duration_s=time.monotonic() - started,
            needs_empty_server=scenario.needs_empty_server,
            failed_step=failed_step,
        )

    if scenario.requires_redis and redis is None:
        return result(
            Outcome.NOT_APPLICABLE,
            ["requires_redis: talks to the server's Redis directly; give --redis HOST:PORT"],
        )
    use_flushall = redis is not None if flushall is None else flushall
    problem = _prepare(host, port, scenario.queues, redis if use_flushall else None)
    if problem:
        return result(Outcome.FAIL, [problem])
    replay = _Replay(host, port, redis)
    details: list[str] = []
    failed_step: int | None = None
    try:
        for step in scenario.steps:
            try:
                replay.run_step(step)
            except _StepFailed as exc:
                failed_step = step.index
                head = f"step {step.index} ({step.target})"
                if step.send is not None:
                    head += f", after sending {_short(step.send)}"
                details = [head + ":", *("  " + line for line in exc.lines)]
                if step.note:
                    details.append(f"  note: {step.note}")
                break
        else:
            details = replay.stray_bytes()
    finally:
        replay.close()
    time.sleep(pause_s)
    cleanup = _clean_up(host, port, scenario.queues)
    if cleanup:
        details.append(cleanup)
    return result(Outcome.FAIL if details else Outcome.PASS, details, failed_step)


def run_probe(
    host: str,
    port: int,
    probe: DefectProbe | SemanticCheck,
    *,
    pause_s: float = DEFAULT_PAUSE_S,
) -> Result:
    """Run one defect probe or semantic check (its queues are ``QFLUSH``ed before and after).

    Returns:
        ``PASS`` ("fixed", for a probe), ``DEFECT_REPRODUCED`` or ``FAIL``, with the findings.
    """
    started = time.monotonic()
    details: tuple[str, ...]
    problem = _prepare(host, port, probe.queues, None)
    if problem:
        outcome, details = Outcome.FAIL, (problem,)
    else:
        finding = probe.run(host, port)
        outcome, details = finding.outcome, finding.details
        time.sleep(pause_s)
        if not (isinstance(probe, DefectProbe) and probe.final):
            cleanup = _clean_up(host, port, probe.queues)
            if cleanup:
                details += (cleanup,)
                if outcome is Outcome.PASS:
                    outcome = Outcome.FAIL
    if isinstance(probe, DefectProbe):
        return Result(
            name=probe.name,
            kind="defect",
            outcome=outcome,
            details=details,
            duration_s=time.monotonic() - started,
            defect=probe.defect,
        )
    return Result(
        name=probe.name,
        kind="semantic",
        outcome=outcome,
        details=details,
        duration_s=time.monotonic() - started,
        needs_empty_server=probe.needs_empty_server,
        section=probe.section,
    )


# -- many checks -------------------------------------------------------------------


def _run_check(
    host: str,
    port: int,
    check: Check,
    redis: RedisAddress | None,
    flushall: bool,
    pause_s: float,
) -> Result:
    """Run any check; an unexpected exception becomes a FAIL instead of escaping."""
    try:
        if isinstance(check, Scenario):
            return replay_scenario(
                host, port, check, redis=redis, flushall=flushall, pause_s=pause_s
            )
        return run_probe(host, port, check, pause_s=pause_s)
    except Exception as exc:  # the runner must report, never crash half-way
        lines = traceback.format_exception_only(type(exc), exc)
        return Result(
            name=check.name,
            kind=_kind(check),
            outcome=Outcome.FAIL,
            details=("internal error in the runner: " + "".join(lines).strip(),),
            section=check.section if isinstance(check, SemanticCheck) else None,
        )


def _kind(check: Check) -> str:
    if isinstance(check, DefectProbe):
        return "defect"
    return "semantic" if isinstance(check, SemanticCheck) else "transcript"


@dataclass(frozen=True, slots=True)
class _Planned:
    index: int
    check: Check
    queues: frozenset[bytes]
    estimate: float


def run_scenarios(
    host: str,
    port: int,
    scenarios: Sequence[Check],
    *,
    redis: RedisAddress | str | None = None,
    jobs: int = 1,
    pause_s: float = DEFAULT_PAUSE_S,
    on_result: Callable[[Result], None] | None = None,
    fail_fast: bool = False,
) -> Report:
    """Replay scenarios and run defect probes against the okq server at ``host:port``.

    Args:
        host: the server's address.
        port: the server's TCP port.
        scenarios: transcripts (``load_transcripts()``) and/or probes
            (``defect_probes()``), in the order the report should list them.
        redis: ``(host, port)`` or ``"HOST:PORT"`` of the server's Redis, if
            reachable: ``FLUSHALL`` set-up, and ``requires_redis`` scenarios run
            (otherwise they are ``NOT_APPLICABLE``).
        jobs: how many independent checks may run at the same time. Checks that
            need an empty server always run alone; with ``jobs > 1`` and a Redis,
            the concurrent checks are isolated with ``QFLUSH`` instead of ``FLUSHALL``.
        pause_s: pause after each check.
        on_result: called with each result as soon as it is known (from worker
            threads, but never twice at the same time).
        fail_fast: start no further check once one has failed (the report then holds
            only the checks that ran).

    Returns:
        The report, with results in the order of ``scenarios``.

    Raises:
        ValueError: ``jobs`` is below 1 or ``redis`` is malformed.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    redis_addr = parse_address(redis) if isinstance(redis, str) else redis
    started = time.monotonic()
    results: dict[int, Result] = {}
    report_lock = threading.Lock()

    failed = threading.Event()  # set once a result failed: fail_fast starts nothing more

    def execute(item: _Planned, flushall: bool) -> None:
        if fail_fast and failed.is_set():
            return
        res = _run_check(host, port, item.check, redis_addr, flushall, pause_s)
        with report_lock:
            results[item.index] = res
            if res.failed:
                failed.set()
            if on_result is not None:
                on_result(res)

    alone: list[_Planned] = []
    together: list[_Planned] = []
    last: list[_Planned] = []
    for index, check in enumerate(scenarios):
        item = _Planned(index, check, frozenset(check.queues), check.estimated_duration_s)
        if isinstance(check, DefectProbe):
            (last if check.final else together).append(item)
            continue
        runs_alone = check.needs_empty_server or (
            isinstance(check, Scenario)
            and redis_addr is not None
            and check.requires_redis
            and jobs > 1
        )
        (alone if runs_alone else together).append(item)

    if jobs == 1:
        for item in sorted(alone + together, key=lambda i: i.index) + last:
            execute(item, flushall=redis_addr is not None)
    else:
        for item in alone:
            execute(item, flushall=redis_addr is not None)
        _run_concurrently(together, jobs, lambda item: execute(item, flushall=False))
        for item in last:
            execute(item, flushall=redis_addr is not None)
    ordered = tuple(results[i] for i in sorted(results))
    return Report(ordered, duration_s=time.monotonic() - started)


def _run_concurrently(
    items: list[_Planned], jobs: int, execute: Callable[[_Planned], None]
) -> None:
    """Run ``items`` on ``jobs`` threads, longest first, never two sharing a queue."""
    pending = sorted(items, key=lambda i: (-i.estimate, i.index))
    busy: set[bytes] = set()
    cond = threading.Condition()

    def worker() -> None:
        while True:
            with cond:
                while True:
                    if not pending:
                        return
                    pick = next((i for i in pending if not (i.queues & busy)), None)
                    if pick is not None:
                        pending.remove(pick)
                        busy.update(pick.queues)
                        break
                    # Some running check holds a queue every pending one needs; it
                    # finishes in bounded time and notifies us.
                    cond.wait(timeout=1.0)
            try:
                execute(pick)
            finally:
                with cond:
                    busy.difference_update(pick.queues)
                    cond.notify_all()

    threads = [
        threading.Thread(target=worker, name=f"conformance-{n}", daemon=True)
        for n in range(min(jobs, len(items)))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
