"""The semantic checks (``conformance.semantic``): they pass against our embedded server and
each one fails against a server with a small deliberate fault.

The faults are `Fault`s of ``fakeserver.faulty_server``: the embedded server behind a tiny
request/reply rewriting proxy.  The unaltered proxy must pass every check, so a failure is
the fault's doing, not the proxy's.  A few faults of the storage come from the mutation
test's ``mutants`` (checked against its control first).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import conformance
from conformance import Outcome, Report, SemanticCheck, format_result, run_scenarios
from conformance import _semantic_sweep as sweep
from conformance.semantic import (
    QNOTIFY_EARLY_S,
    QNOTIFY_LATE_S,
    QNOTIFY_WAKE_MAX_S,
    semantic_checks,
)
from okq_transports.server import ThreadedServer, run_in_thread

from . import mutants as storage_mutants
from .fakeserver import Argv, Fault, faulty_server

#: A short restore sweep, so the slow checks take seconds (they must not assume okq's 10 s).
FAST_SWEEP_S = 0.5


def _failures(report: Report) -> str:
    return "\n".join(format_result(r) for r in report.results if r.failed)


def _run(host: str, port: int, checks: list[SemanticCheck], jobs: int = 4) -> Report:
    return run_scenarios(host, port, checks, jobs=jobs)


def _only(*names: str, slow: bool = True) -> list[SemanticCheck]:
    checks = [c for c in semantic_checks(slow=slow) if c.name in names]
    assert sorted(c.name for c in checks) == sorted(names)
    return checks


# -- the catalogue ----------------------------------------------------------------------


def test_catalogue() -> None:
    slow = semantic_checks()
    quick = semantic_checks(slow=False)
    names = [c.name for c in slow]
    assert len(set(names)) == len(names)
    assert {c.name for c in quick} < set(names)
    assert {c.name for c in slow if c.slow} == set(names) - {c.name for c in quick}
    assert not any(c.slow for c in quick)
    for check in slow:
        assert check.name.startswith("semantic_")
        assert check.section.startswith("§"), check.name
        assert check.description
        assert check.estimated_duration_s > 0
        assert check.queues, check.name
        for queue in check.queues:
            assert queue.startswith(b"conformance-sem-"), (check.name, queue)
            assert b":" not in queue  # D3: such names are not listed or redelivered by okq
    listing = [c.name for c in slow if c.needs_empty_server]
    assert listing == ["semantic_listing_sorted"]
    assert conformance.semantic_checks is semantic_checks


def test_tolerances_are_tight() -> None:
    # okq measured 1.000-1.001 s for QNOTIFY 1 and sub-millisecond wake-ups (§13).
    assert 0 < QNOTIFY_EARLY_S <= 0.05
    assert 0 < QNOTIFY_LATE_S <= 0.25
    assert 0 < QNOTIFY_WAKE_MAX_S <= 0.25


def test_timing_and_heavy_checks_never_overlap() -> None:
    checks = {c.name: c for c in semantic_checks()}
    heavy = ("semantic_large_payloads", "semantic_pipelining_depth")
    timing = ("semantic_qnotify_timeout", "semantic_qnotify_wake", "semantic_noblock")
    for h in heavy:
        for t in timing:
            assert set(checks[h].queues) & set(checks[t].queues), (h, t)
    assert not set(checks[timing[0]].queues) & set(checks[timing[1]].queues)
    assert not set(checks[heavy[0]].queues) & set(checks[heavy[1]].queues)


# -- against the embedded server ---------------------------------------------------------


@pytest.fixture(scope="module")
def fast_sweep_server() -> Iterator[ThreadedServer]:
    with run_in_thread(sweep_interval_s=FAST_SWEEP_S) as srv:
        yield srv


@pytest.mark.timeout(120)
def test_every_check_passes_against_the_embedded_server(fast_sweep_server: ThreadedServer) -> None:
    checks = semantic_checks()
    for round_no in (1, 2):
        report = _run(fast_sweep_server.host, fast_sweep_server.port, checks)
        assert report.failed == 0, f"round {round_no}:\n{_failures(report)}"
        assert [r.name for r in report.results] == [c.name for c in checks]
        assert all(r.kind == "semantic" and r.section for r in report.results)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_one_at_a_time_too(fast_sweep_server: ThreadedServer) -> None:
    report = _run(fast_sweep_server.host, fast_sweep_server.port, semantic_checks(slow=False), 1)
    assert report.failed == 0, _failures(report)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_okq_timings(okq_server: ThreadedServer) -> None:
    """With okq's own 10 s sweep the slow checks still pass (the window is EX to EX + 12 s)."""
    report = _run(okq_server.host, okq_server.port, semantic_checks(), jobs=8)
    assert report.failed == 0, _failures(report)


# -- a rewriting proxy ---------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_the_unaltered_proxy_passes_everything() -> None:
    with faulty_server(Fault()) as proxy:
        report = _run(proxy.host, proxy.port, semantic_checks())
    assert report.failed == 0, _failures(report)


# -- each check fails against a fault it is meant to catch -------------------------------


def _strip_noblock(argv: Argv) -> Argv:
    if argv[0] in (b"QLPUSH", b"QRPUSH") and len(argv) >= 5 and argv[4].upper() == b"NOBLOCK":
        return argv[:4]
    return argv


def _swap_peeks(argv: Argv) -> Argv:
    swap = {b"QLPEEK": b"QRPEEK", b"QRPEEK": b"QLPEEK"}
    return [swap.get(argv[0], argv[0]), *argv[1:]]


def _ex_becomes_1(argv: Argv) -> Argv:
    if (
        argv[0] == b"QRPOP"
        and len(argv) >= 4
        and argv[2].upper() == b"EX"
        and argv[3]
        not in (
            b"0",
            b"-0",
        )
    ):
        return [*argv[:3], b"1", *argv[4:]]
    return argv


def _pop_is_peek(argv: Argv) -> Argv:
    return [b"QRPEEK", argv[1]] if argv[0] == b"QRPOP" and len(argv) > 1 else argv


def _ex_anywhere(argv: Argv) -> Argv:
    # "QRPOP q foo EX 0" wrongly taken as EX 0.
    if argv[0] == b"QRPOP" and len(argv) == 5 and argv[3].upper() == b"EX":
        return [argv[0], argv[1], argv[3], argv[4]]
    return argv


def _ack_zero(argv: Argv, reply: bytes) -> bytes:
    return b":0\r\n" if argv[0] == b"QACK" else reply


def _nil_array(argv: Argv, reply: bytes) -> bytes:
    return (
        b"*-1\r\n" if reply == b"$-1\r\n" and argv[0] in (b"QRPOP", b"QLPEEK", b"QRPEEK") else reply
    )


def _dup_ok(argv: Argv, reply: bytes) -> bytes:
    return b"+OK\r\n" if reply.startswith(b"-ERR duplicate event") else reply


def _flip_big(argv: Argv, reply: bytes) -> bytes:
    if len(reply) > 2_000_000:
        middle = len(reply) // 2
        return reply[:middle] + bytes([reply[middle] ^ 1]) + reply[middle + 1 :]
    return reply


def _reverse_listing(argv: Argv, reply: bytes) -> bytes:
    if argv != [b"QSTATUS"] or not reply.startswith(b"*"):
        return reply
    # Cut the reply into its entries (each "*4" ... up to the next) and reverse them.
    head, _, body = reply.partition(b"\r\n")
    entries = body.split(b"*4\r\n")[1:]
    return head + b"\r\n" + b"".join(b"*4\r\n" + e for e in reversed(entries))


def _consumers_plus_one(argv: Argv, reply: bytes) -> bytes:
    if argv[0] == b"QSTATUS" and len(argv) == 4 and b"consumers" in argv[1]:
        return reply.replace(b":1\r\n", b":2\r\n")
    return reply


def _notify_nil_late(argv: Argv, reply: bytes) -> float:
    return 1.0 if argv[0] == b"QNOTIFY" and reply == b"$-1\r\n" and argv[1] != b"0" else 0.0


def _notify_name_late(argv: Argv, reply: bytes) -> float:
    return 0.5 if argv[0] == b"QNOTIFY" and reply.startswith(b"$") and reply != b"$-1\r\n" else 0.0


def _notify_nil_early(argv: Argv) -> Argv:
    # A server whose timer runs fast: QNOTIFY 2 waits only 1 s.
    return [argv[0], b"1"] if argv[0] == b"QNOTIFY" and argv[1:] == [b"2"] else argv


def _hex_upper(argv: Argv, reply: bytes) -> bytes:
    return reply.replace(b"\\xff\\xfe", b"\\xFF\\xFE")


def _ascii_case_only(argv: Argv) -> Argv:
    # The proxy upper-cases ASCII only: a dotless i stays, so this name is not PING.
    return [b"PXNG", *argv[1:]] if "\u0131".encode() in argv[0] else argv


def _huge_ex_clamped(argv: Argv) -> Argv:
    if argv[0] == b"QRPOP" and argv[2:4] == [b"EX", b"9223372036854775"]:
        return [*argv[:3], b"30"]
    return argv


MUTANTS: dict[str, tuple[Fault, tuple[str, ...]]] = {
    "unknown_name_hex_upper_case": (Fault(reply=_hex_upper), ("semantic_command_names",)),
    "command_names_ascii_upper_only": (
        Fault(request=_ascii_case_only),
        ("semantic_command_names",),
    ),
    "huge_ex_clamped": (Fault(request=_huge_ex_clamped), ("semantic_quirks",)),
    "strip_noblock": (Fault(request=_strip_noblock), ("semantic_noblock",)),
    "qnotify_nil_one_second_late": (
        Fault(delay=_notify_nil_late),
        ("semantic_qnotify_timeout", "semantic_qnotify_immediate"),
    ),
    "qnotify_timer_fast": (Fault(request=_notify_nil_early), ("semantic_qnotify_timeout",)),
    "qnotify_wakeup_half_a_second_late": (
        Fault(delay=_notify_name_late),
        ("semantic_qnotify_wake", "semantic_qnotify_immediate"),
    ),
    "qack_always_zero": (
        Fault(reply=_ack_zero),
        ("semantic_reply_shapes", "semantic_ack_flush", "semantic_concurrent_consumers"),
    ),
    "nil_array_instead_of_nil_bulk": (Fault(reply=_nil_array), ("semantic_reply_shapes",)),
    "peeks_swapped": (Fault(request=_swap_peeks), ("semantic_fifo_priority_many",)),
    "duplicates_accepted": (
        Fault(reply=_dup_ok),
        ("semantic_reply_shapes", "semantic_concurrent_duplicates", "semantic_noblock"),
    ),
    "claims_expire_after_1s": (
        Fault(request=_ex_becomes_1),
        ("semantic_claim_hidden", "semantic_redelivery_window"),
    ),
    "pop_does_not_claim": (
        Fault(request=_pop_is_peek),
        ("semantic_concurrent_consumers", "semantic_fifo_priority_many"),
    ),
    "ex_read_anywhere": (Fault(request=_ex_anywhere), ("semantic_qrpop_arguments",)),
    "large_reply_corrupted": (Fault(reply=_flip_big), ("semantic_large_payloads",)),
    "pipelined_replies_swapped": (Fault(swap_pipelined=True), ("semantic_pipelining_depth",)),
    "listing_reversed": (Fault(reply=_reverse_listing), ("semantic_listing_sorted",)),
    "close_not_noticed": (Fault(keep_upstream_open=True), ("semantic_consumer_counts",)),
    "consumer_count_off_by_one": (Fault(reply=_consumers_plus_one), ("semantic_consumer_counts",)),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_a_broken_server_fails_the_check(mutant: str) -> None:
    fault, names = MUTANTS[mutant]
    with faulty_server(fault) as proxy:
        report = _run(proxy.host, proxy.port, _only(*names))
    for name in names:
        result = report.by_name(name)
        assert result.outcome is Outcome.FAIL, (
            f"{mutant}: {name} did not fail:\n{format_result(result)}"
        )
        assert result.details, name
        # A failure says what was expected and what came back (or how long it took).
        text = "\n".join(result.details)
        assert any(word in text for word in ("expected", "within", "after")), text


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_server_that_never_redelivers_fails_the_window() -> None:
    with faulty_server(Fault(), sweep_interval_s=1000.0) as proxy:
        report = _run(proxy.host, proxy.port, _only("semantic_redelivery_window"))
    result = report.by_name("semantic_redelivery_window")
    assert result.outcome is Outcome.FAIL
    assert "not redelivered within" in result.details[0]


def test_failure_details_name_the_command_and_both_replies() -> None:
    with faulty_server(Fault(reply=_nil_array)) as proxy:
        report = _run(proxy.host, proxy.port, _only("semantic_reply_shapes"))
    details = report.by_name("semantic_reply_shapes").details
    assert details[0].endswith("(nothing there: nil bulk $-1, never *-1):")
    assert "QRPOP conformance-sem-shape-unknown" in details[0]
    assert details[1].strip() == "expected: b'$-1\\r\\n'"
    assert details[2].strip() == "got:      b'*-1\\r\\n'"


# -- faults of the storage (the mutants of the mutation test) ----------------------------

#: Mutant of ``mutants`` -> the check that must fail against it (each one's only catcher).
STORAGE_FAULTS = {
    "qnotify_choice_not_random": "semantic_qnotify_shuffle",
    "sweep_batch_unlimited": "semantic_sweep_batch",
    "redelivery_wakes_qnotify": "semantic_redelivery_quick",
    "redelivered_order_reversed": "semantic_redelivery_window",
}


def test_a_fair_shuffle_fails_the_shuffle_check_seldom() -> None:
    work = len(sweep.Q_SHUFFLE_WORK)
    assert work >= 3
    # Every call names one of `work` queues, each with probability 1 / work.
    assert work * (1 / work) ** sweep.SHUFFLE_TRIES < 1e-6


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("mutant", sorted(STORAGE_FAULTS))
def test_a_broken_storage_fails_the_check(mutant: str) -> None:
    name = STORAGE_FAULTS[mutant]
    served_mutant = {m.name: m for m in storage_mutants.MUTANTS}[mutant]
    with storage_mutants.CONTROL.serve() as control:
        passed = _run(control.host, control.port, _only(name)).by_name(name)
    assert passed.outcome is Outcome.PASS, format_result(passed)
    with served_mutant.serve() as served:
        result = _run(served.host, served.port, _only(name)).by_name(name)
    assert result.outcome is Outcome.FAIL, (
        f"{mutant}: {name} did not fail:\n{format_result(result)}"
    )
    assert any("expected" in line for line in result.details), result.details
