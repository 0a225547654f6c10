"""okq conformance suite: replay recorded okq wire transcripts against any okq server.

The suite works like h2spec or Autobahn: point it at a running server and it
replays byte-exact recordings of the real okq server (``conformance/transcripts``)
over raw TCP sockets, then runs probes for the known okq defects D1-D3.

Command line::

    python -m conformance --host 127.0.0.1 --port 4777 [--redis HOST:PORT] [--jobs 8]

Programmatic use::

    from conformance import defect_probes, load_transcripts, run_scenarios

    report = run_scenarios("127.0.0.1", 4777, load_transcripts() + defect_probes(), jobs=8)
    print(report.format_text())
    assert report.ok

The runner depends only on the standard library, never on the project's client
library, so it can judge a server built from that library without trusting it.
"""

from ._check import ProbeFinding, SemanticCheck
from ._junit import report_to_junit
from ._report import Outcome, Report, Result, format_result
from ._resp import FramingError, frame_reply
from ._suite import SuiteSelection, all_checks
from ._transcripts import (
    TRANSCRIPTS_DIR,
    Scenario,
    Step,
    TranscriptError,
    load_transcript,
    load_transcripts,
    parse_scenario,
)
from .defects import DefectProbe, defect_probes
from .replay import Check, parse_address, replay_scenario, run_probe, run_scenarios
from .semantic import semantic_checks

#: The distribution this package comes from: ``okq conformance`` refuses a ``conformance``
#: package without it (another project could install one under this generic name).
__distribution__ = "okq"

__all__ = [
    "TRANSCRIPTS_DIR",
    "Check",
    "DefectProbe",
    "FramingError",
    "Outcome",
    "ProbeFinding",
    "Report",
    "Result",
    "Scenario",
    "SemanticCheck",
    "Step",
    "SuiteSelection",
    "TranscriptError",
    "all_checks",
    "defect_probes",
    "format_result",
    "frame_reply",
    "load_transcript",
    "load_transcripts",
    "parse_address",
    "parse_scenario",
    "replay_scenario",
    "report_to_junit",
    "run_probe",
    "run_scenarios",
    "semantic_checks",
]
