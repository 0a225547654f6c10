"""The fuzz targets hold on a bounded mutation run and on hypothesis-generated garbage."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.fuzz import __main__ as fuzz_main
from conformance.fuzz.targets import TARGETS


@pytest.mark.parametrize("name", sorted(TARGETS))
@settings(max_examples=300)
@given(data=st.binary(max_size=300))
def test_targets_survive_garbage(name: str, data: bytes) -> None:
    TARGETS[name](data)


def test_mutation_loop_over_the_transcript_corpus() -> None:
    count = fuzz_main.run(sorted(TARGETS), iterations=1500, seconds=30.0, seed=1)
    assert count > 100


def test_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert fuzz_main.main(["--iterations", "50", "decoder"]) == 0
    assert "no crash" in capsys.readouterr().out
