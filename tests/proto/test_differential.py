"""The differential run (conformance/fuzz/differential.py) runs, and classifies what it finds.

The decoder stubs here test the tool, not the decoders: one raises KeyError (a crash), one
drops replies (an undocumented disagreement), one forgets its protocol error (not sticky), one
is slow (a hang).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from conformance.fuzz import differential as diff
from okq_proto import NEED_DATA, Decoder, Limits, RemoteProtocolError, Reply
from okq_proto._resp import DEFAULT_LIMITS, NeedData

PURE_TWICE = [("python", Decoder), ("python-again", Decoder)]


class KeyErrorDecoder(Decoder):
    """Crashes the way a decoder bug would."""

    def next_reply(self) -> Reply | NeedData:
        raise KeyError("boom")


class LossyDecoder(Decoder):
    """Drops every second reply."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(limits)
        self._count = 0

    def next_reply(self) -> Reply | NeedData:
        reply = super().next_reply()
        while reply is not NEED_DATA:
            self._count += 1
            if self._count % 2:
                return reply
            reply = super().next_reply()
        return reply


class ForgetfulDecoder(Decoder):
    """Raises its protocol error once, then carries on as if nothing happened."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(limits)
        self.told = False

    def next_reply(self) -> Reply | NeedData:
        if self.told:
            return NEED_DATA
        try:
            return super().next_reply()
        except RemoteProtocolError:
            self.told = True
            raise


class SlowDecoder(Decoder):
    """Takes longer to make than the budgets below allow."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        time.sleep(0.12)
        super().__init__(limits)


DOOMED = diff.generate(11, 5).data


class DyingDecoder(Decoder):
    """Ends its process (as a segfault would) when fed stream 5 of seed 11."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(limits)
        self.seen = b""

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self.seen += bytes(data)
        if self.seen == DOOMED:
            os._exit(7)
        super().feed(data)


def pure(stream: bytes, limits: Limits = DEFAULT_LIMITS) -> diff.Outcome:
    return diff.run_decoder(Decoder, limits, [stream])[0]


# -- the table of documented differences --------------------------------------------------------


def test_every_documented_difference_recognises_its_example() -> None:
    # A loop, not parametrize: the table may become empty once a backend has no differences.
    for difference in diff.DOCUMENTED:
        stream, other = difference.example
        reference = pure(stream)
        assert not other.same(reference), difference.name
        deviation = diff.Deviation(stream, DEFAULT_LIMITS, reference, other)
        assert diff.classify(deviation) == difference.name


ACCEPTED_BAD_END = diff.Outcome.of(diff.NEED, [b"abc", b"ok"])


@pytest.mark.parametrize(
    ("stream", "other", "bounds"),
    [
        # Another reply than the reference's.
        (b"+x\r\n+y\r\n", diff.Outcome.of(diff.NEED, [b"x", b"z"]), (0,)),
        # Types matter: True, 1.0 and 1 differ.
        (b":1\r\n", diff.Outcome.of(diff.NEED, [True]), (0,)),
        (b":1\r\n", diff.Outcome.of(diff.NEED, [1.0]), (0,)),
        # RESP3 scalars and nesting deeper than max_depth are refused by both backends.
        (b"+x\r\n_\r\n", diff.Outcome.of(diff.NEED, [b"x", None]), (0,)),
        (b"*2\r\n:1\r\n" * 8 + b":1\r\n", diff.Outcome.of(diff.NEED, [[1, [1]]]), (0,)),
        # A bad payload end read as hiredis reads it, but not in a run hiredis is trusted
        # with: the payload is cut, or its reply starts in an earlier chunk.
        (b"$3\r\nabcXY+ok\r\n", ACCEPTED_BAD_END, (0, 6)),
        (b"*2\r\n:1\r\n$3\r\nabcXY+ok\r\n", diff.Outcome.of(diff.NEED, [[1, b"abc"]]), (0, 8)),
        # A reply before the refusal missing.
        (b"+a\r\n$1\r\nbXY", diff.Outcome.of(diff.NEED, [b"b"]), (0,)),
        # has_partial() other than the reference's after a drain.
        (b"+a\r\n", diff.Outcome.of(diff.NEED, [b"a"], partial=True), (0,)),
        (b"*2\r\n:1\r\n", diff.Outcome.of(diff.NEED, [], partial=False), (0,)),
        # A refusal where the reference accepts.
        (b"*2\r\n:1\r\n:2\r\n", diff.Outcome.of(diff.ERROR, [], detail="no"), (0,)),
    ],
)
def test_deviations_no_entry_covers_are_undocumented(
    stream: bytes, other: diff.Outcome, bounds: tuple[int, ...]
) -> None:
    deviation = diff.Deviation(stream, DEFAULT_LIMITS, pure(stream), other, bounds)
    assert not other.same(deviation.reference)
    assert diff.classify(deviation) == diff.UNDOCUMENTED


@pytest.mark.parametrize(
    ("stream", "bounds"),
    [
        (b"$3\r\nabcXY+ok\r\n" + b"+o\r\n" * 1100, (0,)),  # a long run
        (b"+a\r\n$3\r\nabcXY+ok\r\n", (0, 2)),  # a run from a reply start inside a chunk
        (b"*2\r\n:1\r\n:2\r\n$3\r\nabcXY+ok\r\n", (0, 6)),
    ],
)
def test_bad_payload_ends_in_trusted_runs_are_documented(
    stream: bytes, bounds: tuple[int, ...]
) -> None:
    # Pins the entry's boundaries while it exists (the cases it must not cover are above).
    name = "bad-payload-end-in-trusted-run"
    if name not in {d.name for d in diff.DOCUMENTED}:
        return
    reference = pure(stream)
    other = diff.Outcome.of(diff.NEED, [*reference.replies, b"abc", b"ok"])
    deviation = diff.Deviation(stream, DEFAULT_LIMITS, reference, other, bounds)
    assert diff.classify(deviation) == name


def test_framing() -> None:
    framing = diff.frame(b"*2\r\n:1\r\n$3\r\nabcXY+ok\r\n*1\r\n")
    assert framing.first_bad_payload_end(b"*2\r\n:1\r\n$3\r\nabcXY+ok\r\n*1\r\n") == (8, 17)
    assert [framing.between_replies(at) for at in (0, 4, 8, 17, 22, 26)] == [
        *(True, False, False, True, True, False),
    ]
    assert (framing.stop, framing.open_arrays) == (26, 1)
    # A payload that looks like headers is passed over by its length.
    assert len(diff.frame(b"$8\r\n*1\r\n*1\r\n\r\n:1\r\n").elements) == 2
    assert diff.frame(b"$1\r\nab\r\n").first_bad_payload_end(b"$1\r\nab\r\n") == (0, 7)


def test_fingerprints_are_type_exact_and_iterative() -> None:
    fp = diff.fingerprint
    assert fp(1) != fp(True) != fp(1.0)
    assert fp(float("nan")) == fp(float("nan"))
    assert fp([b"a", None]) != fp([[b"a"], None])
    assert fp({b"a": 1}) != fp([b"a", 1])
    deep: list[object] = [1]
    for _ in range(5000):
        deep = [deep]
    assert fp(deep).startswith(b"*1;")
    assert diff.short_repr(deep).startswith("[[[")


# -- running decoders ---------------------------------------------------------------------------


def test_run_decoder_outcomes() -> None:
    ok, _ = diff.run_decoder(Decoder, DEFAULT_LIMITS, [b"+a\r\n*2\r\n", b":1\r\n"])
    assert (ok.end, len(ok.prints), ok.partial) == (diff.NEED, 1, True)
    bad, _ = diff.run_decoder(Decoder, DEFAULT_LIMITS, [b"+a\r\n?\r\n"])
    assert (bad.end, len(bad.prints)) == (diff.ERROR, 1)
    crash, _ = diff.run_decoder(KeyErrorDecoder, DEFAULT_LIMITS, [b"+a\r\n"])
    assert crash.end == diff.CRASH
    assert "KeyError" in crash.detail
    assert "next_reply()" in crash.detail
    forgot, _ = diff.run_decoder(ForgetfulDecoder, DEFAULT_LIMITS, [b"?\r\n"])
    assert forgot.end == diff.NOT_STICKY
    slow, _ = diff.run_decoder(SlowDecoder, DEFAULT_LIMITS, [b"+a\r\n"], budget_s=0.1)
    assert slow.end == diff.HANG


def test_the_pure_decoder_against_itself_finds_nothing() -> None:
    # The whole pipeline on a few thousand streams: the reference agrees with itself across
    # chunkings, never crashes, and stays under the memory target on hostile streams.
    tally = diff.Checker(PURE_TWICE).check_range(1, 0, 3000)
    assert tally.streams == 3000
    assert set(tally.by_kind) == set(diff.KINDS)
    assert tally.runs > 2 * 2 * 3000
    assert tally.counts == {}
    assert 0 < tally.peaks["python"][0] < diff.MEMORY_TARGET


def test_streams_are_deterministic_and_ranges_merge() -> None:
    assert diff.generate(3, 17) == diff.generate(3, 17)
    assert diff.generate(3, 17) != diff.generate(4, 17)
    checker = diff.Checker([("python", Decoder), ("lossy", LossyDecoder)], max_examples=3)
    whole = checker.check_range(5, 0, 120)
    parts = checker.check_range(5, 60, 120)
    parts.merge(checker.check_range(5, 0, 60))
    assert (parts.counts, parts.examples, parts.by_kind) == (
        whole.counts,
        whole.examples,
        whole.by_kind,
    )


def test_stub_crash_and_disagreements_are_reported() -> None:
    checker = diff.Checker(
        [("python", Decoder), ("keyerror", KeyErrorDecoder), ("lossy", LossyDecoder)]
    )
    tally = checker.check_range(2, 0, 200)
    assert tally.counts["crash|keyerror|KeyError"] == 200
    assert "next_reply()" in tally.examples["crash|keyerror|KeyError"][0]["detail"]
    assert tally.counts["backends|lossy|undocumented"] > 20
    assert set(tally.bad()) >= {"crash|keyerror|KeyError", "backends|lossy|undocumented"}
    hung = diff.Checker([("python", Decoder), ("slow", SlowDecoder)], budget_s=0.1)
    assert hung.check_range(2, 0, 1).counts == {"hang|slow|over budget": 1}
    # A documented difference is not a failure; an undocumented one is.
    for difference in diff.DOCUMENTED:
        assert not diff.Finding("backends", "x", difference.name, "whole", "").bad
    assert diff.Finding("chunkings", "x", diff.UNDOCUMENTED, "cuts", "").bad


def test_hiredis_smoke_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Through the command line: its worker runs under an address-space limit, so a decoder bug
    # that asks for gigabytes is a MemoryError there, not in this process.
    pytest.importorskip("hiredis")
    report = tmp_path / "report.json"
    code = diff.main(["--streams", "150", "--seed", "7", "--jobs", "1", "--json", str(report)])
    capsys.readouterr()
    data = json.loads(report.read_text())
    assert (data["streams"], data["complete"], data["backends"]) == (
        150,
        True,
        ["python", "hiredis"],
    )
    assert code == (0 if data["ok"] else 1)
    names = {d.name for d in diff.DOCUMENTED} | {diff.UNDOCUMENTED}
    for finding in data["findings"]:
        assert finding["kind"] in ("crash", "hang", "memory", "backends", "chunkings")
        assert finding["backend"] in ("python", "hiredis")
        if finding["kind"] in ("backends", "chunkings"):
            assert finding["class"] in names
            assert finding["documented"] == (finding["class"] != diff.UNDOCUMENTED)


# -- the command line ---------------------------------------------------------------------------

STUB = "stub=tests.proto.test_differential:KeyErrorDecoder"


def test_cli_run_save_and_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.json"
    saved = tmp_path / "saved"
    args = ["--streams", "40", "--jobs", "1", "--batch", "15", "--max-saved", "2"]
    backends = ["--backend", "python=okq_proto:Decoder", "--backend", STUB]
    code = diff.main([*args, *backends, "--json", str(report), "--save", str(saved)])
    out = capsys.readouterr().out
    assert code == 1
    assert "crash" in out
    assert "result: FAIL" in out
    data = json.loads(report.read_text())
    assert (data["streams"], data["complete"], data["ok"]) == (40, True, False)
    crash = next(f for f in data["findings"] if f["kind"] == "crash")
    assert (crash["backend"], crash["class"], crash["streams"]) == ("stub", "KeyError", 40)
    files = sorted(saved.iterdir())
    assert len(files) == 2
    reproducer = json.loads(files[0].read_text())
    assert reproducer["finding"]["class"] == "KeyError"
    assert diff.main(["--replay", str(files[0]), *backends]) == 1
    assert "FAILS: crash stub KeyError" in capsys.readouterr().out


def test_cli_reports_a_worker_that_dies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.json"
    dying = "die=tests.proto.test_differential:DyingDecoder"
    args = ["--streams", "12", "--seed", "11", "--jobs", "1", "--batch", "4", "--json"]
    assert (
        diff.main([*args, str(report), "--backend", "python=okq_proto:Decoder", "--backend", dying])
        == 1
    )
    capsys.readouterr()
    data = json.loads(report.read_text())
    assert (data["streams"], data["complete"]) == (12, True)  # the others were checked too
    (crash,) = data["findings"]
    assert (crash["kind"], crash["backend"], crash["class"]) == (
        "crash",
        "die",
        "worker died (exit code 7)",
    )
    assert [(e["index"], e["chunking"]) for e in crash["examples"]] == [(5, "whole")]


def test_cli_passes_when_nothing_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backends = ["--backend", "python=okq_proto:Decoder", "--backend", "again=okq_proto:Decoder"]
    args = ["--streams", "60", "--jobs", "2", "--batch", "10", "--recycle", "15", "--json"]
    report = tmp_path / "report.json"
    assert diff.main([*args, str(report), *backends]) == 0  # workers recycled on the way
    assert "result: PASS" in capsys.readouterr().out
    data = json.loads(report.read_text())
    assert (data["streams"], data["complete"], data["ok"]) == (60, True, True)
    assert len(data["memory"]["maxrss_growth_bytes"]) >= 3  # one entry per worker process


def test_cli_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert diff.main(["--streams", "5", "--backend", "nonsense"]) == 2
    assert diff.main(["--streams", "5", "--backend", "a=no.such.module:X", "--backend", STUB]) == 2
    capsys.readouterr()
