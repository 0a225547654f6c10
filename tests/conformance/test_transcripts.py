"""Replay every okq transcript, and the D1-D3 defect probes, against our embedded server.

The server runs in a background thread on a free loopback port with its default
(real okq) timings, including the 10 s restore sweep: transcripts must replay
with the timings they were recorded with. Everything is replayed twice in a
row so that nothing depends on luck; independent checks run concurrently
(``jobs``), which keeps the three ~13 s redelivery checks from adding up.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conformance import (
    Check,
    Outcome,
    Report,
    defect_probes,
    format_result,
    load_transcripts,
    run_scenarios,
)
from conformance.__main__ import main
from okq_transports.server import ThreadedServer, run_in_thread

JOBS = 8


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with run_in_thread(host="127.0.0.1", port=0) as srv:
        yield srv


def _failures(report: Report) -> str:
    return "\n".join(format_result(r) for r in report.results if r.failed)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_every_transcript_and_probe_passes_twice_in_a_row(server: ThreadedServer) -> None:
    scenarios = load_transcripts()
    probes = defect_probes()
    checks: list[Check] = [*scenarios, *probes]
    needs_redis = {s.name for s in scenarios if s.requires_redis}
    for round_no in (1, 2):
        report = run_scenarios(server.host, server.port, checks, jobs=JOBS)
        assert report.failed == 0, f"round {round_no}:\n{_failures(report)}"
        assert [r.name for r in report.results] == [c.name for c in checks]
        not_applicable = {r.name for r in report.results if r.outcome is Outcome.NOT_APPLICABLE}
        assert not_applicable == needs_redis
        assert report.passed == len(scenarios) - len(needs_redis) + len(probes)
        for probe in probes:
            result = report.by_name(probe.name)
            assert result.kind == "defect"
            assert result.outcome is Outcome.PASS, f"okq defect {probe.defect} reproduced"
        summary = report.summary_line()
        assert summary == f"{report.passed} passed, 0 failed, {len(needs_redis)} skipped"


def test_cli_against_the_embedded_server(
    server: ThreadedServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--host", server.host, "--port", str(server.port), "--jobs", "4", "--quick"]
    code = main([*argv, "-k", "ping", "-k", "qstatus", "-k", "defect_d2", "-k", "redis_key"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0, "\n".join(lines)
    assert lines[-1] == "7 passed, 0 failed, 1 skipped"
