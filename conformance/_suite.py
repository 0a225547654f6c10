"""The whole conformance suite as one list of checks: what ``okq conformance`` runs.

Owns: `SuiteSelection` (which groups of checks, quick or not, the model's seed) and
`all_checks`, the order a report lists them in: transcripts, semantic checks, model-based
sequences, then the defect probes (D1, which may crash a buggy server, runs last anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ._transcripts import load_transcripts
from .defects import defect_probes
from .model import model_checks
from .replay import Check
from .semantic import semantic_checks

__all__ = ["SuiteSelection", "all_checks"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SuiteSelection:
    """Which checks `all_checks` returns.

    Attributes:
        transcripts: the recorded transcripts (of ``transcripts_path``).
        semantic: the semantic checks (`semantic_checks`).
        model: the model-based random sequences (`model_checks`, seeded by ``seed``).
        defects: the D1-D3 probes (D1's inputs crash the real okq server).
        quick: leave out what waits for a restore sweep (about 13 s per check).
        seed: seed of the model-based sequences.
        transcripts_path: a folder or file of transcripts instead of the shipped ones.
    """

    transcripts: bool = True
    semantic: bool = True
    model: bool = True
    defects: bool = True
    quick: bool = False
    seed: int = 0
    transcripts_path: str | Path | None = None


def all_checks(
    selection: SuiteSelection | None = None, *, quick: bool | None = None
) -> list[Check]:
    """Every check of the suite (or of ``selection``), in report order.

    Args:
        selection: which groups; the whole suite if None.
        quick: shorthand overriding ``selection.quick``.

    Raises:
        TranscriptError: a transcript file is unreadable or malformed.
    """
    sel = selection or SuiteSelection()
    fast = sel.quick if quick is None else quick
    checks: list[Check] = []
    if sel.transcripts:
        checks.extend(load_transcripts(sel.transcripts_path))
    if sel.semantic:
        checks.extend(semantic_checks(slow=not fast))
    if sel.model:
        checks.extend(model_checks(seed=sel.seed))
    if sel.defects:
        checks.extend(defect_probes(slow=not fast))
    return checks
