"""JUnit XML rendering of a conformance `Report`, for CI systems that read test reports.

Owns: `report_to_junit`, the mapping of results onto JUnit's vocabulary: one ``<testsuite>``
named after the server, one ``<testcase>`` per check (``classname`` is the check's kind:
``transcript``, ``semantic`` or ``defect``), ``<failure>`` for a failed check (a reproduced okq
defect is a failure whose ``type`` is ``okq-defect-Dn``), ``<skipped>`` for a check that was not
applicable, and the check's details as the failure text.  No I/O.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ._report import Outcome, Report

__all__ = ["report_to_junit"]


def report_to_junit(report: Report, *, suite: str = "okq-conformance") -> str:
    """The report as a JUnit XML document (UTF-8 text with an XML declaration).

    Args:
        report: the results of `run_scenarios`.
        suite: the ``<testsuite>`` name (the CLI passes ``okq-conformance HOST:PORT``).
    """
    root = ET.Element(
        "testsuites",
        name="okq-conformance",
        tests=str(len(report.results)),
        failures=str(report.failed),
        errors="0",
        skipped=str(report.not_applicable),
        time=f"{report.duration_s:.3f}",
    )
    node = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(report.results)),
        failures=str(report.failed),
        errors="0",
        skipped=str(report.not_applicable),
        time=f"{report.duration_s:.3f}",
    )
    for result in report.results:
        case = ET.SubElement(
            node,
            "testcase",
            classname=result.kind,
            name=result.name,
            time=f"{result.duration_s:.3f}",
        )
        labels = {"section": result.section, "defect": result.defect}
        present = {k: v for k, v in labels.items() if v is not None}
        if present:
            props = ET.SubElement(case, "properties")
            for key, value in present.items():
                ET.SubElement(props, "property", name=key, value=value)
        text = "\n".join(result.details)
        if result.outcome is Outcome.NOT_APPLICABLE:
            ET.SubElement(case, "skipped", message=_first_line(text) or "not applicable")
        elif result.outcome is Outcome.DEFECT_REPRODUCED:
            failure = ET.SubElement(
                case,
                "failure",
                type=f"okq-defect-{result.defect}",
                message=f"okq defect {result.defect} reproduced (a known defect of the real"
                " okq server)",
            )
            failure.text = _xml_safe(text)
        elif result.failed:
            failure = ET.SubElement(
                case, "failure", type="conformance", message=_xml_safe(_first_line(text))
            )
            failure.text = _xml_safe(text)
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


def _first_line(text: str) -> str:
    return text.split("\n", 1)[0][:500]


def _xml_safe(text: str) -> str:
    """Drop the characters XML 1.0 cannot carry at all (details quote raw server bytes)."""
    return "".join(
        ch
        if ch in "\t\n\r" or "\x20" <= ch <= "\ud7ff" or "\ue000" <= ch <= "\ufffd" or ch > "\uffff"
        else f"\\x{ord(ch):02x}"
        for ch in text
    )
