"""The shape of a built-in check: what a probe concludes, and a semantic check's record.

Owns: `ProbeFinding` (an outcome and the lines that explain it), which every built-in check
returns, and `SemanticCheck`, a check of documented okq behaviour that no single transcript
pins down (timing, redelivery windows, concurrency, ...), labelled with the section of the
protocol notes it checks.  The checks themselves live in ``semantic`` and ``model``; the
runner (``replay``) schedules them like the defect probes.  No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ._report import Outcome

__all__ = ["ProbeFinding", "SemanticCheck"]


@dataclass(frozen=True, slots=True)
class ProbeFinding:
    """What a probe concluded: an outcome and the lines that explain it."""

    outcome: Outcome
    details: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SemanticCheck:
    """A built-in check of okq's documented behaviour beyond the recorded transcripts.

    Attributes:
        name: the check's name (``semantic_noblock_duplicates_hidden``, ...).
        section: the protocol-notes section it checks (``"§13"``, ``"§4.2"``, ...).
        description: one sentence on what is checked.
        queues: queue names the check uses (flushed before and after it runs); checks
            sharing none may run at the same time.
        run: the check itself: ``run(host, port)`` returns a `ProbeFinding`
            (``PASS`` or ``FAIL``).
        needs_empty_server: it lists every queue (``QSTATUS`` without arguments) and so
            runs alone, before the concurrent phase.
        slow: waits for a restore sweep or similar (seconds).
        estimated_duration_s: rough running time, used to start slow checks first.
    """

    name: str
    section: str
    description: str
    queues: tuple[bytes, ...]
    run: Callable[[str, int], ProbeFinding]
    needs_empty_server: bool = False
    slow: bool = False
    estimated_duration_s: float = 0.0
