"""The controls of the D1-D3 defect probes: "okq defect reproduced" is said only when the
control part behaves correctly and the defect part behaves exactly like the real okq.

D1 and D2 run against ``FakeServer`` variants (okq-like, fixed, and broken in ways that are
not okq's); D3 against our embedded server behind ``faulty_server`` (its colon and empty
names made never to come back, or nothing redelivered at all).
"""

from __future__ import annotations

import pytest

from conformance import DefectProbe, Outcome, Result, defect_probes, run_probe
from conformance import defects as defects_module

from .fakeserver import Argv, FakeServer, Fault, faulty_server


def _probe(defect: str, *, slow: bool = True) -> DefectProbe:
    return next(p for p in defect_probes(slow=slow) if p.defect == defect)


def _run(host: str, port: int, defect: str, *, slow: bool = True) -> Result:
    return run_probe(host, port, _probe(defect, slow=slow), pause_s=0)


def _text(result: Result) -> str:
    return "\n".join(result.details)


# -- D1 -------------------------------------------------------------------------------


def test_d1_fixed_server_passes_its_controls_and_inputs() -> None:
    with FakeServer() as srv:
        result = _run(srv.host, srv.port, "D1")
    assert result.outcome is Outcome.PASS, _text(result)
    assert "control" not in _text(result)


def test_d1_reproduced_only_with_the_control_passing() -> None:
    with FakeServer(crash_on_bad_header=True) as srv:
        result = _run(srv.host, srv.port, "D1")
    assert result.outcome is Outcome.DEFECT_REPRODUCED, _text(result)
    text = _text(result)
    assert "the whole server went down" in text
    assert "control: two connections answered PING" in text


def test_d1_control_failing_is_a_plain_failure_and_no_crash_input_is_sent() -> None:
    # A 3-byte header line such as "+\r\n" is valid for okq; this server treats it as bad.
    with FakeServer(crash_on_bad_header=True, short_line_limit=3) as srv:
        result = _run(srv.host, srv.port, "D1")
    assert result.outcome is Outcome.FAIL, _text(result)
    text = _text(result)
    assert "control: 3-byte header" in text
    assert "crash inputs not tried: the control failed" in text
    assert "went down" not in text


def test_d1_a_server_that_hangs_is_not_okqs_defect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defects_module, "_REPLY_TIMEOUT_S", 0.5)
    with FakeServer(hang_on_bad_header=True) as srv:
        result = _run(srv.host, srv.port, "D1")
    assert result.outcome is Outcome.FAIL, _text(result)
    text = _text(result)
    assert "bystander PING: timed out" in text
    assert "not tried" in text  # it stops at the first misbehaviour


# -- D2 -------------------------------------------------------------------------------


def test_d2_fixed_and_reproduced_with_the_control() -> None:
    with FakeServer(escape_ids=True) as srv:
        fixed = _run(srv.host, srv.port, "D2")
    assert fixed.outcome is Outcome.PASS, _text(fixed)
    with FakeServer(escape_ids=False) as srv:
        okq_like = _run(srv.host, srv.port, "D2")
    assert okq_like.outcome is Outcome.DEFECT_REPRODUCED, _text(okq_like)
    for result in (fixed, okq_like):
        assert "control: id b'plain': b'-ERR duplicate event plain\\r\\n'" in _text(result)


def test_d2_control_failing_overrides_a_fixed_looking_defect_part() -> None:
    # Escaping every non-printable byte turns x\r\ny into the fixed form, but also changes
    # the error for an id with a tab and a NUL, which must stay okq's raw bytes.
    with FakeServer(escape_all_ids=True) as srv:
        result = _run(srv.host, srv.port, "D2")
    assert result.outcome is Outcome.FAIL, _text(result)
    assert "control: id b'tab\\t" in result.details[0]
    assert "(no CR/LF): expected" in result.details[0]


# -- D3 -------------------------------------------------------------------------------


def _odd_name(queue: bytes) -> bool:
    return queue == b"" or b":" in queue


def _odd_claims_never_expire(argv: Argv) -> Argv:
    if argv[0] == b"QRPOP" and len(argv) >= 4 and _odd_name(argv[1]):
        return [*argv[:3], b"100000"]
    return argv


def _no_claim_expires(argv: Argv) -> Argv:
    if argv[0] == b"QRPOP" and len(argv) >= 4 and argv[3] == b"1":
        return [*argv[:3], b"100000"]
    return argv


@pytest.mark.timeout(60)
def test_d3_fixed_with_its_controls() -> None:
    with faulty_server(Fault()) as proxy:
        result = _run(proxy.host, proxy.port, "D3")
    assert result.outcome is Outcome.PASS, _text(result)
    text = _text(result)
    assert "control queue b'defect-d3-redeliver-control': claim redelivered" in text
    assert "queue b'defect-d3-control': listed by the no-argument QSTATUS" in text


@pytest.mark.timeout(60)
def test_d3_redelivery_reproduced_when_only_odd_names_keep_their_claims() -> None:
    with faulty_server(Fault(request=_odd_claims_never_expire)) as proxy:
        result = _run(proxy.host, proxy.port, "D3")
    assert result.outcome is Outcome.DEFECT_REPRODUCED, _text(result)
    reproduced = [d for d in result.details if "never redelivered" in d]
    assert len(reproduced) == 2, _text(result)
    assert any("control queue" in d and "redelivered" in d for d in result.details)


@pytest.mark.timeout(60)
def test_d3_a_server_that_never_redelivers_fails() -> None:
    with faulty_server(Fault(request=_no_claim_expires)) as proxy:
        result = _run(proxy.host, proxy.port, "D3")
    assert result.outcome is Outcome.FAIL, _text(result)
    text = _text(result)
    assert "server does not redeliver expired claims at all" in text
    assert "never redelivered" not in text


@pytest.mark.timeout(60)
def test_d3_quick_has_no_redelivery_part() -> None:
    with faulty_server(Fault(request=_no_claim_expires)) as proxy:
        result = _run(proxy.host, proxy.port, "D3", slow=False)
    assert result.outcome is Outcome.PASS, _text(result)
    assert "redeliver" not in _text(result)
