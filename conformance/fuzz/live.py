"""The live fuzzer: mutated requests against a running okq server, over raw sockets.

``python -m conformance.fuzz --server HOST:PORT`` (CLI in ``__main__``). This module owns the
run: the lanes, the bounds, confirming, minimising and saving findings, restarts, the
report. The inputs come from ``_live_mutate``, what the server must do with each from
``_live_model``, judging one exchange from ``_live_oracle``, shrinking from
``_live_minimise`` and the saved transcript from ``_live_transcript``.

Several *lanes* (threads, ``lanes``) fuzz at once, each on its own persistent connection
with its own seeded generator (``random.Random(f"{seed}-{lane}-{round}")``: a lane's inputs
repeat with the seed, their interleaving does not) and its own sentinel. A lane writes a
batch of inputs in one go: each input that ends at a value boundary is followed by a marker
command, so its replies are counted exactly; an input that ends otherwise (cut off, closing,
absurd size) ends the batch and its connection. Every ``sentinel_every`` batches the lane's
sentinel runs its round. The oracles (``_live_oracle``):

* ``crash``: the server stops accepting connections;
* ``hang``: an input's replies do not come within ``timeout_s`` (plus the ``QNOTIFY``
  timeouts it may wait; such inputs are budgeted to ``block_share`` of the run, each at most
  ``max_block_s``), twice, while the sentinel still answers; cut-off inputs and silent closes
  are never waited for;
* ``framing``: a reply that is not valid RESP;
* ``desync``: more or fewer replies than requests, a close where the connection must stay
  open, or no close where okq closes;
* ``damage``: a sentinel sees wrong replies or loses its connection while the server is up.

When a lane sees one, every lane stops; the finding is confirmed alone on a fresh connection
(then with the inputs batched before it), minimised (each candidate runs the same oracle
after its queues are flushed; a crashed server is brought back by ``restart``; without it a
crash is saved unminimised and the run ends) and saved as a transcript in ``out``; then the
lanes start again, until ``max_findings``. Standard library only.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TextIO

from . import _live_transcript
from ._live_minimise import MinimiseStats, StopMinimising, minimise
from ._live_model import Ending, Expectation, expect
from ._live_mutate import build_corpus, mutate
from ._live_oracle import Item, Problem, Sentinel, UsageError, Wire, classify, exchange

__all__ = [
    "ORACLES",
    "Finding",
    "LiveOptions",
    "LiveReport",
    "ServerDown",
    "UsageError",
    "run_live",
    "shell_restarter",
]

#: Every oracle.
ORACLES: Final = ("crash", "hang", "framing", "desync", "damage")
#: Flush the queues the inputs named once this many are known.
_FLUSH_AT: Final = 2000
#: Batches each lane remembers (candidates when a crash or damage shows up later).
_RECENT: Final = 4


class ServerDown(Exception):
    """The server is down and cannot be restarted."""


@dataclass(slots=True, kw_only=True)
class LiveOptions:
    """Bounds and knobs of one live run (see ``python -m conformance.fuzz --help``)."""

    host: str
    port: int
    seconds: float = 60.0
    iterations: int = 10**12
    seed: int = 0
    out: Path | None = None
    restart: Callable[[], None] | None = None
    timeout_s: float = 2.0
    max_block_s: float = 1.0
    block_share: float = 0.02
    batch: int = 16
    lanes: int = 8
    sentinel_every: int = 4
    max_findings: int = 1
    skip_known: bool = False
    oracles: frozenset[str] = frozenset(ORACLES)
    minimise_runs: int = 1500
    minimise_seconds: float = 120.0
    log: TextIO | None = sys.stderr


@dataclass(slots=True)
class Finding:
    """One finding: the input that fired, its minimised form, the saved transcript."""

    kind: str
    detail: str
    input: bytes
    minimised: bytes
    found_after_s: float
    inputs_before: int
    known: str | None = None
    reproduced: bool = True
    minimise: MinimiseStats | None = None
    path: Path | None = None

    def summary(self) -> str:
        """One line: kind, known defect, sizes, detail, file."""
        known = f" (known okq defect {self.known})" if self.known else ""
        shrunk = "" if self.reproduced else " (not minimised)"
        where = f" -> {self.path}" if self.path else ""
        return (
            f"{self.kind}{known}: {len(self.input)} -> {len(self.minimised)} bytes{shrunk}"
            f" {self.minimised[:120]!r}: {self.detail[:300]}{where}"
        )


@dataclass(slots=True)
class LiveReport:
    """What a run did."""

    inputs: int = 0
    skipped: int = 0
    batches: int = 0
    slow: int = 0
    unconfirmed: int = 0
    restarts: int = 0
    elapsed_s: float = 0.0
    fuzz_s: float = 0.0
    first_finding_s: float | None = None
    sentinel: str = "full"
    findings: list[Finding] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Inputs per second of fuzzing (confirming and minimising findings left out)."""
        return self.inputs / self.fuzz_s if self.fuzz_s > 0 else 0.0

    def format_text(self) -> str:
        """The closing summary."""
        lines = [
            f"{self.inputs} inputs in {self.elapsed_s:.1f} s ({self.rate:.0f} inputs/s over"
            f" {self.fuzz_s:.1f} s of fuzzing),"
            f" {self.batches} batches, {self.skipped} skipped (QNOTIFY budget or --skip-known),"
            f" {self.slow} slow, {self.unconfirmed} unconfirmed, {self.restarts} restarts,"
            f" sentinel: {self.sentinel}"
        ]
        if self.first_finding_s is not None:
            lines.append(f"first finding after {self.first_finding_s:.2f} s")
        lines += [f"finding: {f.summary()}" for f in self.findings]
        lines.append(f"{len(self.findings)} finding(s)")
        return "\n".join(lines)


def shell_restarter(command: str, timeout_s: float = 120.0) -> Callable[[], None]:
    """A restart callback that runs ``command`` with the shell (bounded by ``timeout_s``)."""

    def restart() -> None:
        try:
            subprocess.run(command, shell=True, check=True, timeout=timeout_s)
        except (OSError, subprocess.SubprocessError) as exc:
            raise ServerDown(f"--restart-cmd failed: {exc}") from exc

    return restart


@dataclass(slots=True)
class _Alarm:
    """A lane's problem with the batch it came from and the lane's recent batches."""

    problem: Problem
    items: list[Item]
    recent: list[list[Item]]


class _Run:
    """What the lanes share: options, the wire, counters, the stop signal, the alarms."""

    def __init__(self, options: LiveOptions) -> None:
        self.o = options
        self.wire = Wire(options.host, options.port, options.timeout_s)
        self.report = LiveReport()
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.alarms: list[_Alarm] = []
        self.claimed = 0
        self.blocked = 0.0
        self.touched: set[bytes] = set()
        self.started = time.monotonic()
        self.deadline = self.started + options.seconds
        self.up = True
        self.checker: Sentinel | None = None
        self.checks = 0
        self.error: Exception | None = None

    def log(self, text: str) -> None:
        if self.o.log is not None:
            print(text, file=self.o.log, flush=True)

    def claim(self, exp: Expectation) -> bool | None:
        """May one more input be sent? None: the iteration bound is reached."""
        with self.lock:
            if self.claimed >= self.o.iterations:
                return None
            if self.o.skip_known and exp.d1:
                self.report.skipped += 1
                return False
            if exp.block_s > 0:
                allowed = self.o.block_share * (time.monotonic() - self.started)
                allowed += self.o.max_block_s
                if exp.block_s > self.o.max_block_s or self.blocked + exp.block_s > allowed:
                    self.report.skipped += 1
                    return False
                self.blocked += exp.block_s
            self.claimed += 1
            self.touched |= exp.queues
            return True

    def unclaim(self, n: int) -> None:
        with self.lock:
            self.claimed -= n

    def alarm(self, alarm: _Alarm) -> None:
        with self.lock:
            self.alarms.append(alarm)
        self.halt.set()

    def flush_touched(self) -> None:
        with self.lock:
            names = sorted(self.touched)
            self.touched.clear()
        self.wire.flush(names)

    def ensure_up(self) -> None:
        """Make sure the server answers; restart it if it is down and a restart is known.

        Raises:
            ServerDown: down, and no restart brought it back.
        """
        if self.wire.alive():
            self.up = True
            return
        self.up = False
        if self.checker is not None:  # a new one, on a new queue, after the restart
            self.checker.close()
            self.checker = None
        if self.o.restart is None:
            raise ServerDown(f"{self.o.host}:{self.o.port} is down and there is no restart")
        self.log("restarting the server")
        self.o.restart()
        self.report.restarts += 1
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            if self.wire.alive():
                self.up = True
                return
            time.sleep(0.1)
        raise ServerDown(f"{self.o.host}:{self.o.port} did not come back after a restart")

    def check(self, data: bytes, *, grace: bool = True) -> Problem | None:
        """Run one input alone on a fresh connection: the oracle's verdict (``slow``: None).

        ``grace=False`` (while minimising) skips the second wait before calling a hang.

        Raises:
            ServerDown: the server is down before the run and cannot be restarted.
        """
        if not self.up:
            self.ensure_up()
        if self.checker is None:
            self.checker = Sentinel(self.wire, -1, self.report.sentinel)
        if self.checker.round() is not None:  # connected before the input, as in the lanes
            self.checker.round()
        exp = expect(data)
        self.wire.flush(sorted(exp.queues))
        self.checks += 1
        marker = self.wire.marker(-1, self.checks) if exp.ending is Ending.COMPLETE else None
        item = Item(data, exp, marker)
        try:
            conn = self.wire.connect("check")
        except OSError as exc:
            self.up = False
            return Problem("crash", 0, f"connection refused: {exc}")
        try:
            problem = exchange(conn, [item], self.o.timeout_s)
            problem = classify(
                self.wire, self.checker, conn, problem, [item], run_sentinel=True, grace=grace
            )
        finally:
            conn.close()
        if problem is None and exp.ending is not Ending.COMPLETE and not self.wire.alive():
            problem = Problem("crash", 0, "the server went down after the input")
        if problem is not None and problem.kind == "crash":
            self.up = False
        if problem is not None and problem.kind == "slow":
            return None
        return problem


def _lane(run: _Run, lane: int, rng: random.Random, corpus: list[bytes]) -> None:
    """One lane's loop, until the run halts or a bound is reached."""
    o = run.o
    sentinel = Sentinel(run.wire, lane, run.report.sentinel)
    recent: deque[list[Item]] = deque(maxlen=_RECENT)
    conn = None
    markers = 0
    batches = 0
    try:
        while not run.halt.is_set() and time.monotonic() < run.deadline:
            items: list[Item] = []
            exhausted = False
            for _ in range(4 * o.batch):
                if len(items) >= o.batch:
                    break
                data = mutate(rng, corpus)
                exp = expect(data)
                allowed = run.claim(exp)
                if allowed is None:
                    exhausted = True
                    break
                if not allowed:
                    continue
                complete = exp.ending is Ending.COMPLETE
                markers += 1
                items.append(Item(data, exp, run.wire.marker(lane, markers) if complete else None))
                if not complete:
                    break
            if not items:
                if exhausted:
                    return
                continue
            if conn is None:
                try:
                    conn = run.wire.connect(f"fuzz {lane}")
                except OSError as exc:
                    run.unclaim(len(items))  # never sent: the batch before is a suspect
                    last = recent[-1] if recent else []
                    refused = Problem("crash", len(last) - 1, f"connection refused: {exc}")
                    run.alarm(_Alarm(refused, last, list(recent)))
                    return
            batches += 1
            problem = exchange(conn, items, o.timeout_s)
            found = classify(
                run.wire,
                sentinel,
                conn,
                problem,
                items,
                run_sentinel=batches % o.sentinel_every == 0,
            )
            recent.append(items)
            with run.lock:
                run.report.inputs += len(items)
                run.report.batches += 1
                if found is not None and found.kind == "slow":
                    run.report.slow += 1
                flush = len(run.touched) > _FLUSH_AT
            if found is not None or items[-1].expectation.ending is not Ending.COMPLETE:
                conn.close()
                conn = None
            if found is not None and found.kind != "slow":
                run.alarm(_Alarm(found, items, list(recent)))
                return
            if flush:
                run.flush_touched()
        if run.halt.is_set() and recent:  # another lane's alarm: these are suspects too
            context = Problem("context", len(recent[-1]) - 1, "in flight when another lane stopped")
            run.alarm(_Alarm(context, recent[-1], list(recent)))
    except Exception as exc:  # a fault of the fuzzer itself: stop every lane, re-raised
        with run.lock:
            run.error = exc
        run.halt.set()
    finally:
        if conn is not None:
            conn.close()
        sentinel.close()


def _known(kind: str, exp: Expectation) -> str | None:
    """Which known okq defect a minimised finding is, if any."""
    if kind == "crash" and exp.d1:
        return "D1"
    if kind in ("framing", "desync"):
        for argv in exp.commands:
            if (
                len(argv) > 2
                and argv[0].upper() in (b"QLPUSH", b"QRPUSH")
                and (b"\r" in argv[2] or b"\n" in argv[2])
            ):
                return "D2"
    return None


def _candidates(alarm: _Alarm) -> list[bytes]:
    """Inputs to confirm a finding with: the input alone, with the batch before it, the batch,
    then the lane's earlier batches (newest first)."""
    items = alarm.items
    found: list[bytes] = []
    if items:
        index = max(0, min(alarm.problem.index, len(items) - 1))
        found += [
            items[index].data,
            b"".join(i.data for i in items[: index + 1]),
            b"".join(i.data for i in items),
        ]
    found += [b"".join(i.data for i in batch) for batch in reversed(alarm.recent)]
    return found


def _pick(alarms: list[_Alarm]) -> tuple[str, str, list[bytes]] | None:
    """The finding to pursue: a crash first (suspects: every lane's inputs, those a lane saw
    the server close on first), else the first alarm (for damage, with every lane's inputs
    as suspects too); None if only context came."""
    crashes = [a for a in alarms if a.problem.kind == "crash"]
    if crashes:
        crashes.sort(key=lambda a: "refused" in a.problem.detail)
        context = [a for a in alarms if a.problem.kind == "context"]
        order = [c for a in crashes + context for c in _candidates(a)[:1]]
        order += [c for a in crashes + context for c in _candidates(a)]
        return "crash", crashes[0].problem.detail, list(dict.fromkeys(order))
    real = [a for a in alarms if a.problem.kind != "context"]
    if not real:
        return None
    first = real[0]
    candidates = _candidates(first)
    if first.problem.kind == "damage":  # another lane's input may have done it
        candidates += [c for a in alarms if a is not first for c in _candidates(a)]
    return first.problem.kind, first.problem.detail, list(dict.fromkeys(candidates))


def _fires(run: _Run, kind: str, candidate: bytes, *, grace: bool) -> bool:
    """Whether ``candidate`` alone makes the ``kind`` oracle fire.

    A server may die of what earlier inputs left behind (memory), so a crash counts only if
    it happens again on the freshly restarted server.

    Raises:
        ServerDown: the server is down and cannot be restarted.
    """
    verdict = run.check(candidate, grace=grace)
    if kind == "crash" and verdict is not None and verdict.kind == kind:
        run.ensure_up()
        verdict = run.check(candidate, grace=grace)
    return verdict is not None and verdict.kind == kind


def _record(run: _Run, kind: str, detail: str, candidates: list[bytes]) -> None:
    """Confirm, minimise and save one finding (or count it unconfirmed)."""
    o = run.o
    found_after = time.monotonic() - run.started
    run.log(f"{kind} after {found_after:.2f} s ({run.report.inputs} inputs): {detail[:500]}")
    data = candidates[0]
    reproduced = False
    if kind != "crash" or o.restart is not None:
        for candidate in candidates:
            try:
                run.ensure_up()  # probed (and restarted) before each: it may be down already
                fired = _fires(run, kind, candidate, grace=True)
            except ServerDown:
                break
            if fired:
                data, reproduced = candidate, True
                break
        if not reproduced:
            run.report.unconfirmed += 1
            run.log(f"  not reproduced on a fresh connection: {candidates[0][:200]!r}")
            if kind != "crash":
                return
    smallest, stats = data, None
    if reproduced:

        def predicate(candidate: bytes) -> bool:
            if o.skip_known and kind != "crash" and expect(candidate).d1:
                return False  # a known crash input: not sent (it would cost a restart)
            try:
                return _fires(run, kind, candidate, grace=False)
            except ServerDown as exc:
                raise StopMinimising(str(exc)) from exc

        smallest, stats = minimise(
            data, predicate, max_runs=o.minimise_runs, max_seconds=o.minimise_seconds
        )
        run.log(f"  minimised {len(data)} -> {len(smallest)} bytes in {stats.runs} runs")
    if run.report.first_finding_s is None:
        run.report.first_finding_s = found_after
    if any(f.kind == kind and f.minimised == smallest for f in run.report.findings):
        run.log("  same as an earlier finding")
        return
    exp = expect(smallest)
    finding = Finding(
        kind=kind,
        detail=detail,
        input=data,
        minimised=smallest,
        found_after_s=found_after,
        inputs_before=run.report.inputs,
        known=_known(kind, exp),
        reproduced=reproduced,
        minimise=stats,
    )
    if o.out is not None:
        finding.path = _save(run, finding, exp)
    run.report.findings.append(finding)
    run.log(f"  {finding.summary()}")


def _save(run: _Run, finding: Finding, exp: Expectation) -> Path:
    assert run.o.out is not None
    digest = hashlib.sha1(finding.minimised).hexdigest()[:10]
    sentinel = Sentinel(run.wire, 0, run.report.sentinel)
    marker = run.wire.marker(0, 1) if exp.ending is Ending.COMPLETE else None
    description = (
        f"live fuzzer finding ({finding.kind}"
        + (f", known okq defect {finding.known}" if finding.known else "")
        + f"; seed {run.o.seed}; "
        + (f"minimised from {len(finding.input)} bytes" if finding.reproduced else "not minimised")
        + f"): {finding.detail}"
    )[:2000]
    document = _live_transcript.build(
        name=f"fuzz_{finding.kind}_{digest}",
        description=description,
        data=finding.minimised,
        expectation=exp,
        marker=marker,
        sentinel=(sentinel.plan(1), sentinel.plan(2)),
        queues=exp.queues | ({sentinel.queue} if sentinel.mode == "full" else set()),
        timeout_s=run.o.timeout_s,
    )
    return _live_transcript.save(run.o.out, document)


def run_live(options: LiveOptions) -> LiveReport:
    """Fuzz the server at ``options.host:options.port`` until a bound is reached.

    Raises:
        UsageError: an option is out of range, or the server cannot be reached or does not
            answer as a RESP server.
    """
    o = options
    if o.batch < 1 or o.lanes < 1 or o.sentinel_every < 1 or o.timeout_s <= 0:
        raise UsageError("batch, lanes and sentinel_every must be at least 1, timeout positive")
    if o.iterations < 0 or o.seconds < 0 or o.max_findings < 0:
        raise UsageError("iterations, seconds and max_findings must not be negative")
    run = _Run(o)
    run.wire.calibrate()
    if run.wire.marker_format is None:
        run.log("marker: unknown commands are not answered as okq does; PING is the marker")
    calibration = Sentinel(run.wire, 0)
    try:
        problem = calibration.calibrate()
    finally:
        calibration.close()
    if problem is not None:
        run.report.sentinel = "ping"
        run.log(f"sentinel: the push/peek/pop/ack round failed ({problem}); PING only")
    corpus = build_corpus()
    report = run.report
    last_log = time.monotonic()
    for round_number in range(10**6):
        if o.max_findings and len(report.findings) >= o.max_findings:
            break
        if time.monotonic() >= run.deadline or run.claimed >= o.iterations:
            break
        run.halt.clear()
        run.alarms.clear()
        lanes = [
            threading.Thread(
                target=_lane,
                args=(run, n, random.Random(f"{o.seed}-{n}-{round_number}"), corpus),
                name=f"fuzz-lane-{n}",
                daemon=True,
            )
            for n in range(o.lanes)
        ]
        round_started = time.monotonic()
        fuzz_before = report.fuzz_s
        for lane in lanes:
            lane.start()
        while any(lane.is_alive() for lane in lanes):
            for lane in lanes:
                lane.join(timeout=0.2)
            now = time.monotonic()
            report.fuzz_s = fuzz_before + now - round_started
            if now - last_log >= 5.0:
                last_log = now
                run.log(
                    f"{report.inputs} inputs, {report.rate:.0f}/s, {len(report.findings)} found"
                )
        if run.error is not None:
            raise run.error
        picked = _pick(list(run.alarms))
        if picked is None:
            break
        kind, detail, candidates = picked
        if not candidates:
            candidates = [b""]
        try:
            if kind in o.oracles:
                _record(run, kind, detail, candidates)
            run.ensure_up()
        except ServerDown as exc:
            run.log(f"stopping: {exc}")
            break
        finally:
            if run.checker is not None:  # an idle connection the lanes' inputs might disturb
                run.checker.close()
                run.checker = None
    report.elapsed_s = time.monotonic() - run.started
    if run.up:
        run.flush_touched()
        run.wire.flush(run.wire.sentinel_queues)
    if run.checker is not None:
        run.checker.close()
    return report
