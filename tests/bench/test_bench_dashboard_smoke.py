"""The dashboard benchmark still runs, at a tiny size."""

from __future__ import annotations

import pytest

from tests.bench import bench_dashboard


@pytest.mark.timeout(60)
def test_bench_dashboard_prints_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_dashboard.main(["--queues", "30", "--runs", "2"]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert set(lines) == {
        "queues",
        "bare_status_ms",
        "sample_ms",
        "view_ms",
        "message_bytes",
        "sample_over_bare",
    }
    assert lines["queues"].strip() == "30"
    assert float(lines["sample_over_bare"].replace(",", "")) > 0
