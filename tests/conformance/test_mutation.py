"""Mutation score of the conformance suite: every injected fault must fail at least one check.

Each mutant of ``mutants`` is our embedded server with one fault (a storage wrapper or a
rewriting proxy in front of it).  The suite (``all_checks(quick=True)``; for a mutant it
misses, the slow semantic checks too) runs against each one with ``fail_fast`` and several
jobs; a mutant is *caught* when the report holds a failed check.  The control runs through
the same machinery with no fault and must pass every check, so a caught mutant is caught for
its fault.

Running the suite is the slow part, so one module fixture runs it for every mutant the session
selected, each in a worker process of its own (its server, proxy and checks together, so no
mutant's threads wait for another's interpreter lock), `_PARALLEL_MUTANTS` at a time, after
the control has run alone.  A mutant is halted at its first failed check, which is the check that
caught it; one not caught within `_MUTANT_BUDGET_S` is halted and counts as missed.  Checks
slower than `_SLOW_CHECK_S` (they sleep through a restore sweep, and a sleep cannot be halted)
run in a second pass, only for mutants the others did not catch.  A mutant caught only by
replies that came too late is judged once more on a fresh server, so a moment of load on a
shared machine does not pass for a catch.  The tests only read the verdicts.  The score is
printed and written as JSON to the pytest temporary folder (and to ``$OKQ_MUTATION_REPORT``
when set).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import multiprocessing
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

import conformance
from conformance import Check, Result, format_result, run_scenarios

from .mutants import CONTROL, MUTANTS, Mutant

#: Checks run at once against one mutant.
_JOBS: Final = 8
#: Mutants tested at once (each has its own server, proxy and check threads).
_PARALLEL_MUTANTS: Final = 8
#: Seconds between the starts of the first mutants (so their heavy checks do not coincide).
_STAGGER_S: Final = 1.0
#: Checks estimated slower than this (they sleep through a restore sweep) run in a second pass,
#: only for mutants the others did not catch.
_SLOW_CHECK_S: Final = 5.0
#: Longest the suite may run against one mutant before it is halted (and counted as missed).
_MUTANT_BUDGET_S: Final = 75.0
#: Longest a single mutant's run may take (a hung one fails the test instead of the session).
_MUTANT_TIMEOUT_S: Final = 240.0

_BY_NAME: Final = {m.name: m for m in MUTANTS}


def suite_checks() -> list[Check]:
    """The whole quick suite: ``all_checks(quick=True)`` plus any group it does not hold yet,
    and the slow semantic checks (``semantic_checks(slow=True)``)."""
    all_checks = getattr(conformance, "all_checks", None)
    if all_checks is not None:
        checks: list[Check] = list(all_checks(quick=True))
    else:
        checks = [*conformance.load_transcripts(), *conformance.defect_probes(slow=False)]
    names = {c.name for c in checks}
    try:
        semantic = importlib.import_module("conformance.semantic")
    except ImportError:
        return checks
    # The slow semantic checks too (they wait for a sweep, the mutants' comes every 0.5 s):
    # they run in the second pass, only for mutants the quick checks did not catch.
    extra = [c for c in semantic.semantic_checks(slow=True) if c.name not in names]
    return checks + extra


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the suite said about one mutant (plain data: it comes back from a worker process)."""

    name: str
    caught_by: tuple[str, ...]
    details: tuple[str, ...]
    ran: int
    duration_s: float
    runner_races: int = 0
    judged_twice: bool = False

    @property
    def caught(self) -> bool:
        return bool(self.caught_by)


@contextlib.contextmanager
def _runner_race_tolerated() -> Iterator[list[str]]:
    """Count, instead of raising, one known race of ``run_scenarios(fail_fast=True, jobs>1)``.

    Its fail-fast test iterates the shared results while another worker inserts one, without
    the lock, which can end a worker thread with ``RuntimeError: dictionary changed size
    during iteration`` (the check that worker had picked is then left out of the report).
    """
    seen: list[str] = []
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        thread = args.thread.name if args.thread is not None else ""
        if (
            args.exc_type is RuntimeError
            and thread.startswith("conformance-")
            and "changed size during iteration" in str(args.exc_value)
        ):
            seen.append(thread)
            return
        previous(args)

    threading.excepthook = hook
    try:
        yield seen
    finally:
        threading.excepthook = previous


_TOO_LATE: Final = re.compile(r"reply arrived too late")
_CAME_AFTER: Final = re.compile(r"after ([0-9.]+) to ([0-9.]+) s\s+it came after ([0-9.]+) s")


def _only_late(details: Sequence[str]) -> bool:
    """Whether every failure in ``details`` is a reply that came too late (what a loaded
    machine can cause on its own), as opposed to a wrong, missing or early reply."""
    if not details:
        return False
    for text in details:
        late = _TOO_LATE.search(text) is not None or any(
            float(m.group(3)) > float(m.group(2)) for m in _CAME_AFTER.finditer(text)
        )
        if not late:
            return False
    return True


def judge(name: str, delay_s: float = 0.0) -> Verdict:
    """Judge one mutant; a catch by late replies only is judged again, once, on a fresh server
    (the control is never judged twice): a fault that makes replies late is caught twice, a
    moment of load on the machine seldom is.  Module-level, so a worker process can run it.
    """
    verdict = _judge_once(name, delay_s)
    if name == CONTROL.name or not _only_late(verdict.details):
        return verdict
    again = _judge_once(name, 0.0)
    return dataclasses.replace(again, judged_twice=True)


def _judge_once(name: str, delay_s: float) -> Verdict:
    """Run the suite against one mutant (``control``: all of it, without fail-fast).

    The first failed check catches the mutant: it is then halted (every connection dropped),
    so checks still running end at once; what fails after that is not counted.  A mutant
    still running after `_MUTANT_BUDGET_S` is halted too, and is not caught.  ``delay_s``
    staggers the first mutants' starts.
    """
    time.sleep(delay_s)
    mutant = CONTROL if name == CONTROL.name else _BY_NAME[name]
    checks = suite_checks()
    started = time.monotonic()
    failed: list[str] = []
    details: list[str] = []
    halted = threading.Event()
    with _runner_race_tolerated() as races, mutant.serve() as served:

        def seen(result: Result) -> None:
            if mutant is CONTROL or (result.failed and not halted.is_set()):
                if result.failed:
                    failed.append(result.name)
                    details.append(format_result(result))
                if mutant is not CONTROL:
                    halted.set()
                    served.halt()

        def out_of_time() -> None:
            if not halted.is_set():
                halted.set()
                details.append(f"halted: not caught within {_MUTANT_BUDGET_S:.0f} s")
                served.halt()

        timer = threading.Timer(_MUTANT_BUDGET_S, out_of_time)
        if mutant is not CONTROL:
            timer.start()
        passes = [checks]
        if mutant is not CONTROL:  # a sleeping check cannot be halted: the slow ones go last
            passes = [
                [c for c in checks if c.estimated_duration_s < _SLOW_CHECK_S],
                [c for c in checks if c.estimated_duration_s >= _SLOW_CHECK_S],
            ]
        ran = 0
        try:
            for group in passes:  # bounded: at most two passes
                if halted.is_set() or not group:
                    continue
                report = run_scenarios(
                    served.host,
                    served.port,
                    group,
                    jobs=_JOBS,
                    fail_fast=mutant is not CONTROL,
                    on_result=seen,
                )
                ran += len(report.results)
        finally:
            timer.cancel()
            if timer.is_alive():
                timer.join()
    return Verdict(name, tuple(failed), tuple(details), ran, time.monotonic() - started, len(races))


@dataclass(frozen=True, slots=True)
class Results:
    """The control's verdict and every selected mutant's."""

    checks: int
    control: Verdict
    verdicts: dict[str, Verdict]
    duration_s: float


def _selected(session: pytest.Session) -> list[str]:
    wanted: set[str] = set()
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and isinstance(callspec.params.get("mutant"), Mutant):
            wanted.add(callspec.params["mutant"].name)
    if any(item.name.startswith("test_mutation_score") for item in session.items):
        wanted.update(_BY_NAME)
    return [m.name for m in MUTANTS if m.name in wanted]


@pytest.fixture(scope="module")
def results(request: pytest.FixtureRequest) -> Results:
    """The control, alone, then the selected mutants, `_PARALLEL_MUTANTS` at a time.

    Each runs in a worker process of its own (server, proxy and checks together, as for the
    control), so one mutant's load never slows another's timing checks.
    """
    started = time.monotonic()
    chosen = _selected(request.session)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(_PARALLEL_MUTANTS, mp_context=context) as pool:
        control = pool.submit(judge, CONTROL.name).result(timeout=_MUTANT_TIMEOUT_S)
        futures = [
            pool.submit(judge, name, _STAGGER_S * n if n < _PARALLEL_MUTANTS else 0.0)
            for n, name in enumerate(chosen)
        ]
        verdicts = [f.result(timeout=_MUTANT_TIMEOUT_S) for f in futures]
    return Results(
        len(suite_checks()),
        control,
        {v.name: v for v in verdicts},
        time.monotonic() - started,
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_control_passes_the_whole_suite(results: Results) -> None:
    control = results.control
    assert not control.caught_by, "the unaltered server (same machinery, no fault) failed:\n" + (
        "\n".join(control.details)
    )
    assert control.ran == results.checks


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_mutant_is_caught(mutant: Mutant, results: Results) -> None:
    verdict = results.verdicts[mutant.name]
    print(f"{mutant.name}: caught by {', '.join(verdict.caught_by) or 'nothing'}")
    print("\n".join(verdict.details))
    assert verdict.caught, (
        f"no check failed against mutant {mutant.name} ({mutant.area}): {mutant.description};"
        f" {verdict.ran} checks ran"
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_mutation_score(
    results: Results, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    verdicts = [results.verdicts[m.name] for m in MUTANTS]
    caught = [v for v in verdicts if v.caught]
    lines = [
        f"mutation score: {len(caught)}/{len(verdicts)} mutants caught"
        f" by {results.checks} checks in {results.duration_s:.1f} s",
        *(
            f"  {'caught ' if v.caught else 'MISSED '} {v.name:36} {_BY_NAME[v.name].area:12}"
            f" {', '.join(v.caught_by) or '-'}"
            for v in verdicts
        ),
    ]
    score = {
        "caught": len(caught),
        "total": len(verdicts),
        "checks": results.checks,
        "duration_s": round(results.duration_s, 1),
        "mutants": [
            {
                "name": v.name,
                "area": _BY_NAME[v.name].area,
                "description": _BY_NAME[v.name].description,
                "caught_by": list(v.caught_by),
                "checks_run": v.ran,
                "duration_s": round(v.duration_s, 1),
                "runner_races": v.runner_races,
                "judged_twice": v.judged_twice,
                "details": [d[:2000] for d in v.details],
            }
            for v in verdicts
        ],
    }
    text = json.dumps(score, indent=2) + "\n"
    targets = [tmp_path_factory.getbasetemp() / "mutation-score.json"]
    if os.environ.get("OKQ_MUTATION_REPORT"):
        targets.append(Path(os.environ["OKQ_MUTATION_REPORT"]))
    for target in targets:
        target.write_text(text, encoding="utf-8")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert score["total"] == len(MUTANTS)
    assert len(caught) + sum(1 for v in verdicts if not v.caught) == len(MUTANTS)
