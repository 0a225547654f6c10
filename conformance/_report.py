"""Results of a conformance run and how they are printed.

This module owns the ``Outcome``/``Result``/``Report`` records, the text
rendering of a result (PASS/FAIL/N/A lines with indented details), the closing
summary line (``N passed, M failed`` optionally followed by ``, K skipped``) and
the JSON rendering. It performs no I/O.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field

__all__ = ["Outcome", "Report", "Result", "format_result"]


class Outcome(enum.Enum):
    """How one check ended."""

    #: Transcript replayed exactly / defect probe: the server does not have the defect.
    PASS = "PASS"
    #: The server deviates from the recording or from the documented behaviour.
    FAIL = "FAIL"
    #: A defect probe found the server behaving like the real, buggy okq (counts as failed).
    DEFECT_REPRODUCED = "DEFECT_REPRODUCED"
    #: The check cannot run here (``requires_redis`` without ``--redis``); counts as skipped.
    NOT_APPLICABLE = "N/A"


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """The result of one check (a transcript replay or a defect probe).

    Attributes:
        name: scenario or probe name.
        kind: ``"transcript"``, ``"defect"`` or ``"semantic"``.
        outcome: how it ended.
        details: human-readable lines: the failure diff, the probe's findings, or
            why it was not applicable.
        duration_s: wall-clock seconds the check took (set-up and clean-up included).
        needs_empty_server: the check lists all queues and needs an otherwise empty server.
        defect: for a defect probe, the okq defect it looks for (``"D1"``, ...).
        failed_step: for a failed transcript, the index of the failing step.
        section: for a semantic check, the protocol-notes section it checks (``"§13"``).
    """

    name: str
    kind: str
    outcome: Outcome
    details: tuple[str, ...] = ()
    duration_s: float = 0.0
    needs_empty_server: bool = False
    defect: str | None = None
    failed_step: int | None = None
    section: str | None = None

    @property
    def passed(self) -> bool:
        """True for ``Outcome.PASS``."""
        return self.outcome is Outcome.PASS

    @property
    def failed(self) -> bool:
        """True for ``Outcome.FAIL`` and ``Outcome.DEFECT_REPRODUCED``."""
        return self.outcome in (Outcome.FAIL, Outcome.DEFECT_REPRODUCED)

    @property
    def label(self) -> str:
        """The short verdict printed in front of the name (``PASS``, ``FAIL``, ``N/A``)."""
        if self.outcome is Outcome.NOT_APPLICABLE:
            return "N/A"
        return "PASS" if self.passed else "FAIL"

    def to_dict(self) -> dict[str, object]:
        """A JSON-serialisable dictionary of every field."""
        return {
            "name": self.name,
            "kind": self.kind,
            "outcome": self.outcome.value,
            "label": self.label,
            "details": list(self.details),
            "duration_s": round(self.duration_s, 3),
            "needs_empty_server": self.needs_empty_server,
            "defect": self.defect,
            "failed_step": self.failed_step,
            "section": self.section,
        }


def format_result(result: Result) -> str:
    """Render one result as text: a verdict line, then indented detail lines."""
    head = f"{result.label:<4}  {result.name}  ({result.duration_s:.2f} s)"
    if result.kind == "defect" and result.defect is not None:
        if result.outcome is Outcome.PASS:
            head += f"  okq defect {result.defect} fixed"
        elif result.outcome is Outcome.DEFECT_REPRODUCED:
            head += (
                f"  okq defect {result.defect} reproduced"
                " (a known defect of the real okq server, not a standard violation)"
            )
        else:
            head += f"  defect probe {result.defect}: neither fixed nor okq's known behaviour"
    if result.section is not None:
        head += f"  [{result.section}]"
    if result.needs_empty_server:
        head += "  [needs an empty server]"
    lines = [head]
    lines.extend("      " + line for detail in result.details for line in detail.splitlines())
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Report:
    """Every result of one run, in the order the checks were given."""

    results: tuple[Result, ...]
    duration_s: float = 0.0
    _by_name: dict[str, Result] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def passed(self) -> int:
        """Number of passed checks."""
        return sum(1 for r in self.results if r.passed)

    @property
    def failed(self) -> int:
        """Number of failed checks (defects reproduced included)."""
        return sum(1 for r in self.results if r.failed)

    @property
    def not_applicable(self) -> int:
        """Number of checks that were not applicable (reported as ``skipped``)."""
        return sum(1 for r in self.results if r.outcome is Outcome.NOT_APPLICABLE)

    @property
    def ok(self) -> bool:
        """True when nothing failed (the CLI then exits with status 0)."""
        return self.failed == 0

    def by_name(self, name: str) -> Result:
        """The result of the check called ``name``.

        Raises:
            KeyError: no such check in this report.
        """
        if not self._by_name:
            self._by_name.update((r.name, r) for r in self.results)
        return self._by_name[name]

    def summary_line(self) -> str:
        """The closing line: ``N passed, M failed``, plus ``, K skipped`` if K > 0."""
        line = f"{self.passed} passed, {self.failed} failed"
        if self.not_applicable:
            line += f", {self.not_applicable} skipped"
        return line

    def format_text(self) -> str:
        """Every result as text followed by the summary line."""
        parts = [format_result(r) for r in self.results]
        parts.append(self.summary_line())
        return "\n".join(parts)

    def to_json(self) -> str:
        """The report as a JSON document (results, counts and the summary line)."""
        return json.dumps(
            {
                "results": [r.to_dict() for r in self.results],
                "passed": self.passed,
                "failed": self.failed,
                "skipped": self.not_applicable,
                "duration_s": round(self.duration_s, 3),
                "summary": self.summary_line(),
            },
            indent=2,
        )
