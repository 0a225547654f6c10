"""Each codec benchmark runs once at a tiny size, so that bench_codec.py cannot rot."""

from __future__ import annotations

import os

import pytest

if os.environ.get("CI"):  # CI installs both: there a missing one fails, never skips
    import hiredis  # noqa: F401
    import redis  # noqa: F401
else:
    pytest.importorskip("hiredis")
    pytest.importorskip("redis")

from tests.bench import bench_codec


def test_every_bench_runs_tiny(capsys: pytest.CaptureFixture[str]) -> None:
    rows = bench_codec.run(scale=0.001, repeats=1)
    assert len(rows) == 16
    assert all(time >= 0 for row in rows for time in row.times.values())
    text = bench_codec.report(rows, bench_codec.linearity(1, small=50))
    assert "encode QLPUSH 100 B" in text
    assert "decode 10k array, 1 B" in text
    assert "decode QRPOP x100k, 1 per feed" in text
    assert "decode QRPOP x100k, 3 per reply" in text


def test_main_parses_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_codec.main(["--scale", "0.0005", "--repeats", "1"]) == 0
    assert "pure/redis-py" in capsys.readouterr().out
