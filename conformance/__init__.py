"""okq conformance suite: check any okq server on the wire, as h2spec and Autobahn check
HTTP/2 and WebSocket servers.

Four kinds of check, all over raw TCP sockets: byte-exact replays of recordings of the real
okq server (``conformance/transcripts``), semantic checks of the protocol notes that no single
recording pins down (`semantic_checks`, each labelled with its section), model-based random
command sequences compared with the project's pure engine (`model_checks`, `run_model`), and
probes, with controls, for the known okq defects D1-D3 (`defect_probes`).  `all_checks` is the
whole suite.  The network fuzzer is `conformance.fuzz`.

Command line::

    okq conformance --server 127.0.0.1:4777 [--redis HOST:PORT] [--junit FILE] [--json FILE]
    python -m conformance --server 127.0.0.1:4777     # the same

Programmatic use::

    from conformance import all_checks, run_scenarios

    report = run_scenarios("127.0.0.1", 4777, all_checks(quick=True), jobs=8)
    print(report.format_text())
    assert report.ok

The suite depends only on the standard library (and, for the model, on ``okq_proto``'s public
pure engine), never on the project's client or server, so it can judge a server built from
them without trusting them.  ``__distribution__`` marks this package as okq's (the import name
``conformance`` is generic: ``okq conformance`` refuses a package of that name without it).
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
from .model import ModelFinding, ModelReport, model_checks, run_model
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
    "ModelFinding",
    "ModelReport",
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
    "model_checks",
    "parse_address",
    "parse_scenario",
    "replay_scenario",
    "report_to_junit",
    "run_model",
    "run_probe",
    "run_scenarios",
    "semantic_checks",
]
