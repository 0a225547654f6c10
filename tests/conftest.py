"""Shared pytest fixtures.  Keep edits append-only: several people add fixtures here."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import warnings
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from okq_transports.server import ThreadedServer


@pytest.fixture
def okq_server() -> Iterator[ThreadedServer]:
    """A fresh embedded okq server on a free loopback port, in a background thread.

    ``okq_server.host``, ``.port``, ``.address``; ``.stop()`` / ``.start()`` restart it on the
    same port with the same (in-memory) storage.  The restore sweep runs every 10 s as in okq.
    """
    server = ThreadedServer("127.0.0.1", 0, seed=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- the test matrix (noxfile.py) -----------------------------------------------------------------
#
# Every cell of the matrix (each CPython, without hiredis, on uvloop, at the oldest dependency
# versions) runs the tests marked ``matrix``; the main run (scripts/test) runs everything.  The
# subset is chosen here, by path, in one place: a test file joins it by matching a pattern below
# (`PurePath.match`, anchored at the right: ``"test_x*.py"`` matches in any folder).
# ``pytest -m matrix`` runs the subset anywhere; ``--matrix`` also leaves every other file
# uncollected (so cells never import them), as the cells do.

MATRIX_TESTS = (
    # the codec
    "tests/proto/test_resp.py",
    "tests/proto/test_hiredis.py",
    "tests/proto/test_vectors.py",
    "tests/proto/test_commands.py",
    "test_opaque*.py",
    "test_differential*.py",
    # the front doors
    "tests/transports/test_scenarios.py",
    "tests/transports/test_sync.py",
    "test_uvloop*.py",
    "test_redis_compat*.py",
    # the docs' examples
    "tests/test_docs_examples.py",
    "tests/test_docs_sync.py",
    "tests/test_readme.py",
    # the cell is what it says it is
    "tests/test_environment.py",
)


def in_matrix(path: Path) -> bool:
    """Whether the test file at `path` runs on every cell of the matrix."""
    return any(path.match(pattern) for pattern in MATRIX_TESTS)


#: Optional dependencies a cell leaves out on purpose (``OKQ_TEST_WITHOUT=hiredis``): the tests
#: that need one say so by name, and are not collected (a file named after it) or deselected (a
#: test or parameter named after it) instead of failing or skipping.  Only a cell declares this;
#: tests/test_environment.py checks the dependency really is absent there.
WITHOUT = frozenset(name for name in os.environ.get("OKQ_TEST_WITHOUT", "").split(",") if name)

#: The asyncio event loop every `asyncio.run` in the tests uses: ``asyncio`` (the default) or
#: ``uvloop`` (the uvloop cell).  tests/test_environment.py checks the running loop's type.
ASYNCIO_LOOP = os.environ.get("OKQ_TEST_ASYNCIO_LOOP", "asyncio")

#: ``OKQ_TEST_NO_SKIPS=1`` (every cell sets it): a skipped test or module fails instead, since a
#: cell installs everything its tests need.
NO_SKIPS = os.environ.get("OKQ_TEST_NO_SKIPS") == "1"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--matrix",
        action="store_true",
        help="collect only the test files of the matrix subset (MATRIX_TESTS in tests/conftest.py)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if ASYNCIO_LOOP == "uvloop":
        import uvloop

        with warnings.catch_warnings():
            if sys.version_info >= (3, 14):  # loop policies are deprecated from 3.14 on
                warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    elif ASYNCIO_LOOP != "asyncio":
        raise pytest.UsageError(
            f"OKQ_TEST_ASYNCIO_LOOP={ASYNCIO_LOOP!r}: expected 'asyncio' or 'uvloop'"
        )


def pytest_unconfigure(config: pytest.Config) -> None:
    if ASYNCIO_LOOP == "uvloop":
        with warnings.catch_warnings():
            if sys.version_info >= (3, 14):
                warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(None)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    if any(name in collection_path.name for name in WITHOUT):
        return True
    if config.getoption("matrix") and not in_matrix(collection_path):
        return True
    return None


def _names_a_missing_dependency(item: pytest.Item) -> bool:
    """Whether the test's name (``test_hiredis_smoke_run``) or a parameter of it (an id or a
    str value, ``[hiredis]``) names a dependency the cell leaves out."""
    names = set(getattr(item, "originalname", item.name).split("_"))
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        names |= set(re.split(r"[-\[\]]", callspec.id))
        names |= {value for value in callspec.params.values() if isinstance(value, str)}
    return not names.isdisjoint(WITHOUT)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if in_matrix(item.path):
            item.add_marker(pytest.mark.matrix)
    if WITHOUT:
        deselected = [item for item in items if _names_a_missing_dependency(item)]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item in items if not _names_a_missing_dependency(item)]


def _no_skips(report: pytest.TestReport | pytest.CollectReport) -> None:
    if NO_SKIPS and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in a matrix cell, which has every dependency: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _no_skips(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    _no_skips(report)
    return report
