"""Model-based random command sequences: okq servers checked against the project's engine.

Random sequences of okq commands over several connections (pushes with NOBLOCK and
duplicates, pops with ``EX 0``, large ``EX`` and none, right and wrong acks, peeks, QSTATUS
and QINFO of named queues, QFLUSH, QREGISTER, QNOTIFY 0/1, a QNOTIFY woken by another
connection's push, pipelines, refused requests, disconnects and reconnects) run against a
server over raw TCP (or several on one Redis) and against the pure engine of
``okq_proto.server`` as the reference model.  Every
reply must be one the model allows (byte for byte, or one of a set where okq shuffles), and the
at-least-once invariants must hold on what the server said (``_model_ledger``).  A failing
sequence is shrunk (delta debugging over steps, then connections) and written out as a
transcript that ``python -m conformance --transcripts FILE`` replays.

Owns: the public API (`model_checks`, `run_model`, `ModelReport`, `ModelFinding`) and the
naming of each run's queues.  The parts: ``_model_gen`` (generator), ``_model_ref`` (the
reference model), ``_model_exec`` (the live executor), ``_model_ledger`` (the invariants),
``_model_shrink`` (shrinker, transcript writer).  The command line is ``model_main``
(``python -m conformance.model_main --server HOST:PORT``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ._check import ProbeFinding, SemanticCheck
from ._model_exec import SETTLE_S, WAKE_DELAY_S, RunResult, execute
from ._model_gen import PROFILES, SECTIONS, ModelStep, describe, generate
from ._model_shrink import ddmin, shrink, to_transcript, write_transcript
from ._report import Outcome

__all__ = [
    "PROFILES",
    "SETTLE_S",
    "SHRINK_BUDGET_S",
    "WAKE_DELAY_S",
    "ModelFinding",
    "ModelReport",
    "ModelStep",
    "ddmin",
    "describe",
    "generate",
    "model_checks",
    "run_model",
    "run_queues",
    "shrink",
    "to_transcript",
    "write_transcript",
]

#: Queues of one sequence; a two-byte character in one name exercises QINFO's padding.
_LETTERS = (b"a", b"b", "\u00e9".encode())


def run_queues(profile: str, seed: int, run: int) -> tuple[tuple[bytes, ...], bytes]:
    """The queues one sequence works on, and its spare queue (only asked about).

    Unique per profile, seed and run, without ``:``: ``mdl-ev-7-r3-a``, ``-b``, ``-é``, and the
    spare ``-z``.
    """
    stem = b"mdl-%s-%d-r%d-" % (profile[:2].encode("ascii"), seed, run)
    return tuple(stem + letter for letter in _LETTERS), stem + b"z"


@dataclass(frozen=True, slots=True)
class ModelFinding:
    """A sequence the server failed, shrunk.

    Attributes:
        profile, seed, run: which sequence (``generate`` draws it again from these).
        original_length: its length before shrinking.
        steps: the shrunk sequence.
        queues: its queues.
        lines: how the shrunk sequence fails.
        transcript: the transcript written for it, if an output folder was given.
        shrink_runs: how many candidate sequences the shrinker ran.
        reproduced: the sequence failed again when re-run (so it was shrunk); False for a
            failure that depends on timing (``steps`` is then the whole sequence).
    """

    profile: str
    seed: int
    run: int
    original_length: int
    steps: tuple[ModelStep, ...]
    queues: tuple[bytes, ...]
    lines: tuple[str, ...]
    transcript: Path | None
    shrink_runs: int
    reproduced: bool = True

    @property
    def name(self) -> str:
        """The transcript name: ``model_<profile>_s<seed>_r<run>``."""
        return f"model_{self.profile}_s{self.seed}_r{self.run}"

    def format(self) -> list[str]:
        """Lines for a report: the failure, then the shrunk sequence."""
        if self.reproduced:
            head = (
                f"{self.name}: failed; shrunk from {self.original_length} to {len(self.steps)}"
                f" steps ({self.shrink_runs} runs)"
            )
        else:
            head = (
                f"{self.name}: failed once, not again in {self.shrink_runs} re-runs (timing?);"
                f" not shrunk ({self.original_length} steps)"
            )
        lines = [head, *("  " + line for line in self.lines), "  sequence:"]
        lines += [f"    {i}. {describe(s)}" for i, s in enumerate(self.steps)]
        if self.transcript is not None:
            lines.append(f"  transcript: {self.transcript}")
        return lines


@dataclass(frozen=True, slots=True)
class ModelReport:
    """What a `run_model` call did.

    Attributes:
        sequences: sequences run (shrinking not counted).
        steps: steps of those sequences.
        duration_s: seconds spent running them (shrinking not counted).
        findings: the failures found, shrunk.
        errors: runs that could not start (server unreachable, ...).
    """

    sequences: int
    steps: int
    duration_s: float
    findings: tuple[ModelFinding, ...]
    errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Nothing failed and every run started."""
        return not self.findings and not self.errors

    @property
    def sequences_per_s(self) -> float:
        """Sequences per second (0 when nothing ran)."""
        return self.sequences / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def steps_per_s(self) -> float:
        """Steps per second (0 when nothing ran)."""
        return self.steps / self.duration_s if self.duration_s > 0 else 0.0

    def format(self) -> list[str]:
        """Lines for a report."""
        lines = [
            f"{self.sequences} sequences, {self.steps} steps in {self.duration_s:.2f} s:"
            f" {self.sequences_per_s:.1f} sequences/s, {self.steps_per_s:.0f} steps/s"
        ]
        lines += self.errors
        for finding in self.findings:
            lines += finding.format()
        return lines


def _rng(profile: str, seed: int, run: int) -> random.Random:
    return random.Random(f"okq-model:{profile}:{seed}:{run}")


#: Rough seconds per step of each profile against real okq (the consumers' wake-ups wait).
_SECONDS_PER_STEP = {"events": 0.002, "consumers": 0.006}

#: Re-runs of a failed sequence before shrinking it: none failing means it depends on timing.
_REPRODUCE_TRIES = 2

#: Seconds a finding may spend being re-run and shrunk; once they are spent every further
#: candidate counts as passing, so the shrinker returns the smallest failing sequence so far
#: (a sequence whose failure comes back only now and then can otherwise take minutes).
SHRINK_BUDGET_S: Final = 30.0


def _summary(lines: Sequence[str], limit: int = 240) -> str:
    """`` Failed at step 3 (...): expected ...`` from a run's failure lines, shortened."""
    if not lines:
        return ""
    text = " Failed at " + lines[0].rstrip(":")
    if len(lines) > 1:
        text += ": " + lines[1].strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _ServerGone(Exception):
    """A candidate run could not start: the server stopped answering while shrinking."""


def _finding(
    host: str,
    port: int,
    profile: str,
    seed: int,
    run: int,
    steps: list[ModelStep],
    first: RunResult,
    queues: tuple[bytes, ...],
    out_dir: str | Path | None,
    max_tests: int,
    settle_s: float,
    wake_delay_s: float,
    others: Sequence[tuple[str, int]],
    shrink_budget_s: float = SHRINK_BUDGET_S,
) -> tuple[ModelFinding, str | None]:
    """Shrink a failed sequence (whose run was ``first``); the finding and an error, if any.

    At most ``shrink_budget_s`` seconds go to re-running and shrinking it.
    """
    runs = [0]
    deadline = time.monotonic() + shrink_budget_s

    def attempt(candidate: Sequence[ModelStep]) -> RunResult:
        result = execute(
            host,
            port,
            queues,
            candidate,
            settle_s=settle_s,
            wake_delay_s=wake_delay_s,
            others=others,
        )
        if result.setup_failed:
            raise _ServerGone(" ".join(line.strip() for line in result.lines))
        return result

    def fails(candidate: list[ModelStep]) -> bool:
        if time.monotonic() > deadline:
            return False  # out of time: the shrinker keeps what it has
        runs[0] += 1
        return attempt(candidate).failed

    error = None
    try:
        # A failure that does not come back on the same sequence depends on timing: say so
        # rather than spend the shrink budget on runs that pass.
        reproduced = any(fails(list(steps)) for _ in range(_REPRODUCE_TRIES))
        small, result = steps, first
        if reproduced:
            small = shrink(steps, fails, max_tests=max_tests)
            result = attempt(small)
            if not result.failed:  # flaky after all: keep the original, which did fail
                small, result, reproduced = steps, first, False
    except _ServerGone as exc:
        small, result, reproduced = steps, first, False
        error = f"model_{profile}_s{seed}_r{run}: not shrunk, the server stopped answering: {exc}"
    name = f"model_{profile}_s{seed}_r{run}"
    transcript = None
    if out_dir is not None:
        notes: dict[int, str] = {}
        if result.failed_at is not None:
            notes[result.failed_at] = " / ".join(line.strip() for line in result.lines[1:])
        description = (
            f"A random okq command sequence (profile {profile}, seed {seed}, run {run}),"
            f" shrunk from {len(steps)} to {len(small)} steps; the expected replies are the"
            " reference model's." + _summary(result.lines)
        )
        transcript = write_transcript(out_dir, name, description, queues, small, notes=notes)
    finding = ModelFinding(
        profile=profile,
        seed=seed,
        run=run,
        original_length=len(steps),
        steps=tuple(small),
        queues=queues,
        lines=result.lines,
        transcript=transcript,
        shrink_runs=runs[0],
        reproduced=reproduced,
    )
    return finding, error


def run_model(
    host: str,
    port: int,
    *,
    seed: int = 0,
    runs: int = 20,
    steps: int = 60,
    out_dir: str | Path | None = None,
    profiles: Sequence[str] = tuple(PROFILES),
    max_findings: int = 1,
    max_tests: int = 300,
    settle_s: float = SETTLE_S,
    wake_delay_s: float = WAKE_DELAY_S,
    others: Sequence[tuple[str, int]] = (),
    on_sequence: Callable[[int], None] | None = None,
    shrink_budget_s: float = SHRINK_BUDGET_S,
) -> ModelReport:
    """Run random sequences against the okq server at ``host:port`` and shrink failures.

    Args:
        seed: with the profile and the run number, picks each sequence.
        runs: sequences per profile.
        steps: random steps per sequence (the closing audit adds a few).
        out_dir: write a transcript per finding into this folder.
        profiles: which kinds of sequence (keys of `PROFILES`).
        max_findings: stop after this many findings.
        max_tests: shrink budget: candidate runs per pass (three passes).
        settle_s: how long the server may take to agree with the model after a NOBLOCK push
            or a consumer's close.
        wake_delay_s: pause between a QNOTIFY that waits and the push that wakes it, and at
            least three times that after the waiting connection's latest QREGISTER (real okq
            subscribes a queue a moment after it is registered, §6); transcripts wait 0.25 s
            before such a push.
        others: more okq servers sharing the first one's Redis; connections are spread over
            all of them.  A transcript replays on one server only, so a finding that needs
            two instances will not reproduce from its transcript.
        on_sequence: called with the count of sequences run so far, after each.
        shrink_budget_s: seconds each finding may spend being re-run and shrunk.

    Returns:
        The report: sequences run, how fast, the shrunk findings.

    Raises:
        KeyError: an unknown profile.
    """
    findings: list[ModelFinding] = []
    errors: list[str] = []
    count = total_steps = 0
    spent = 0.0
    for profile in profiles:
        for run in range(runs):
            queues, spare = run_queues(profile, seed, run)
            sequence = generate(_rng(profile, seed, run), queues, spare, steps, profile)
            started = time.monotonic()
            result = execute(
                host,
                port,
                (*queues, spare),
                sequence,
                settle_s=settle_s,
                wake_delay_s=wake_delay_s,
                others=others,
            )
            spent += time.monotonic() - started
            count += 1
            total_steps += len(sequence)
            if on_sequence is not None:
                on_sequence(count)
            if result.setup_failed:
                errors.append(f"model_{profile}_s{seed}_r{run}: " + " ".join(result.lines))
                return ModelReport(count, total_steps, spent, tuple(findings), tuple(errors))
            if result.failed:
                finding, error = _finding(
                    host,
                    port,
                    profile,
                    seed,
                    run,
                    sequence,
                    result,
                    (*queues, spare),
                    out_dir,
                    max_tests,
                    settle_s,
                    wake_delay_s,
                    others,
                    shrink_budget_s,
                )
                findings.append(finding)
                if error is not None:
                    errors.append(error)
                    return ModelReport(count, total_steps, spent, tuple(findings), tuple(errors))
                if len(findings) >= max_findings:
                    return ModelReport(count, total_steps, spent, tuple(findings), tuple(errors))
    return ModelReport(count, total_steps, spent, tuple(findings), tuple(errors))


def _declared(profile: str, seed: int, runs: int) -> tuple[bytes, ...]:
    """Every queue of ``runs`` sequences of one profile, spare queues included."""
    names: list[bytes] = []
    for run in range(runs):
        queues, spare = run_queues(profile, seed, run)
        names += (*queues, spare)
    return tuple(names)


def model_checks(
    *, seed: int = 0, runs: int = 20, steps: int = 60, out_dir: str | Path | None = None
) -> list[SemanticCheck]:
    """One `SemanticCheck` per profile: ``runs`` random sequences of ``steps`` steps each.

    Each check has its own queues (``run_queues``), lists none (no ``needs_empty_server``) and
    fails with the first sequence the server fails, shrunk; with ``out_dir`` its transcript
    is written there (``python -m conformance --transcripts FILE`` replays it).
    """
    checks = []
    for profile in PROFILES:
        queues = _declared(profile, seed, runs)

        def check(host: str, port: int, profile: str = profile) -> ProbeFinding:
            report = run_model(
                host, port, seed=seed, runs=runs, steps=steps, profiles=(profile,), out_dir=out_dir
            )
            outcome = Outcome.PASS if report.ok else Outcome.FAIL
            return ProbeFinding(outcome, tuple(report.format()))

        checks.append(
            SemanticCheck(
                name=f"model_{profile}",
                section=SECTIONS[profile],
                description=f"{runs} random {profile} sequences of {steps} steps over several"
                " connections agree with the reference engine and keep the at-least-once"
                " invariants",
                queues=queues,
                run=check,
                estimated_duration_s=runs * steps * _SECONDS_PER_STEP[profile],
            )
        )
    return checks


if __name__ == "__main__":  # python -m conformance.model
    import sys

    from .model_main import main

    sys.exit(main())
