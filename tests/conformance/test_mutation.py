"""Mutation score of the conformance suite: every injected fault must fail at least one check.

Each mutant of ``mutants`` is our embedded server with one fault (a storage wrapper or a
rewriting proxy in front of it).  The suite (``all_checks(quick=True)``, or its parts while
that does not exist) runs against each one with ``fail_fast`` and several jobs; a mutant is
*caught* when the report holds a failed check.  The control runs through the same machinery
with no fault and must pass every check, so a caught mutant is caught for its fault.

Running the suite is the slow part, so one module fixture runs it for every mutant the session
selected, a few mutants at a time (each has its own server and proxy), after the control has
run alone; the tests only read those reports.  Checks slower than `_SLOW_CHECK_S` run in a
second pass, only for mutants the fast ones did not catch.  The score is printed and written
as JSON to the pytest temporary folder (and to ``$OKQ_MUTATION_REPORT`` when set).
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

import conformance
from conformance import Check, Report, format_result, run_scenarios

from .mutants import CONTROL, MUTANTS, Mutant

#: Checks run at once against one mutant.
_JOBS: Final = 6
#: Mutants tested at once (each has its own server, proxy and check threads).
_PARALLEL_MUTANTS: Final = 8
#: Checks estimated slower than this run in a second pass, for mutants not caught yet.
_SLOW_CHECK_S: Final = 5.0


def suite_checks() -> list[Check]:
    """The whole quick suite: ``all_checks(quick=True)`` plus any group it does not hold yet."""
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
    extra = [c for c in semantic.semantic_checks(slow=False) if c.name not in names]
    return checks + extra


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the suite said about one mutant."""

    mutant: Mutant
    caught_by: tuple[str, ...]
    details: tuple[str, ...]
    ran: int
    duration_s: float

    @property
    def caught(self) -> bool:
        return bool(self.caught_by)


def _judge(mutant: Mutant, checks: Sequence[Check]) -> Verdict:
    started = time.monotonic()
    fast = [c for c in checks if c.estimated_duration_s < _SLOW_CHECK_S]
    slow = [c for c in checks if c.estimated_duration_s >= _SLOW_CHECK_S]
    ran = 0
    failed: list[str] = []
    details: list[str] = []
    with mutant.serve() as (host, port):
        for group in (fast, slow):  # bounded: two passes
            if failed or not group:
                continue
            report: Report = run_scenarios(host, port, group, jobs=_JOBS, fail_fast=True)
            ran += len(report.results)
            for result in report.results:
                if result.failed:
                    failed.append(result.name)
                    details.append(format_result(result))
    return Verdict(mutant, tuple(failed), tuple(details), ran, time.monotonic() - started)


@dataclass(frozen=True, slots=True)
class Results:
    """The control's report and every selected mutant's verdict."""

    checks: int
    control: Report
    verdicts: dict[str, Verdict]
    duration_s: float


def _selected(session: pytest.Session) -> list[Mutant]:
    wanted: set[str] = set()
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and isinstance(callspec.params.get("mutant"), Mutant):
            wanted.add(callspec.params["mutant"].name)
    if any(item.name.startswith("test_mutation_score") for item in session.items):
        wanted.update(m.name for m in MUTANTS)
    return [m for m in MUTANTS if m.name in wanted]


@pytest.fixture(scope="module")
def results(request: pytest.FixtureRequest) -> Results:
    started = time.monotonic()
    checks = suite_checks()
    with CONTROL.serve() as (host, port):
        control = run_scenarios(host, port, checks, jobs=_JOBS)
    chosen = _selected(request.session)
    with ThreadPoolExecutor(_PARALLEL_MUTANTS, thread_name_prefix="mutant") as pool:
        verdicts = list(pool.map(lambda m: _judge(m, checks), chosen))
    return Results(
        len(checks), control, {v.mutant.name: v for v in verdicts}, time.monotonic() - started
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_control_passes_the_whole_suite(results: Results) -> None:
    failures = [format_result(r) for r in results.control.results if r.failed]
    assert not failures, "the unaltered server (same machinery, no fault) failed:\n" + "\n".join(
        failures
    )
    assert len(results.control.results) == results.checks


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
def test_mutant_is_caught(mutant: Mutant, results: Results) -> None:
    verdict = results.verdicts[mutant.name]
    print(f"{mutant.name}: caught by {', '.join(verdict.caught_by) or 'nothing'}")
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
            f"  {'caught ' if v.caught else 'MISSED '} {v.mutant.name:36} {v.mutant.area:12}"
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
                "name": v.mutant.name,
                "area": v.mutant.area,
                "description": v.mutant.description,
                "caught_by": list(v.caught_by),
                "checks_run": v.ran,
                "duration_s": round(v.duration_s, 1),
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
