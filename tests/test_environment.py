"""The environment the tests run in is the one the test matrix says it is.

Each cell of the matrix (noxfile.py) declares what it installed in ``OKQ_TEST_EXPECT``, a
space-separated list of:

- ``python==X.Y``: the interpreter's version;
- ``NAME==VERSION``: that distribution is installed at that version (``redis==5.0`` matches
  ``5.0.0``);
- ``!NAME``: that distribution is not installed and cannot be imported;
- ``okq:wheel``: ``okq_proto``, ``okq_transports`` and ``conformance`` are imported from the
  installed okq distribution (not from a source tree), with their ``py.typed`` markers, and
  the conformance suite's transcripts came with it.

So a cell cannot silently test something else: hiredis left in the cell without it, redis-py
upgraded past the oldest version, the source tree shadowing the wheel.  The asyncio loop
(``OKQ_TEST_ASYNCIO_LOOP``, see tests/conftest.py) is checked by running one.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import os
import sys
import sysconfig
import threading
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import conformance
import okq_proto
import okq_transports
from okq_proto import Decoder, LocalProtocolError, make_decoder
from tests.conftest import ASYNCIO_LOOP, WITHOUT

DECLARED = os.environ.get("OKQ_TEST_EXPECT", "").split()


async def _running_loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def _check_loop_type(loop_type: type[asyncio.AbstractEventLoop]) -> None:
    if ASYNCIO_LOOP == "uvloop":
        import uvloop

        assert issubclass(loop_type, uvloop.Loop), loop_type
    else:
        assert loop_type.__module__.startswith("asyncio."), loop_type


def test_asyncio_run_uses_the_configured_loop() -> None:
    _check_loop_type(asyncio.run(_running_loop_type()))


def test_asyncio_run_in_a_thread_uses_the_configured_loop() -> None:
    """As the embedded server's thread does."""
    seen: list[type[asyncio.AbstractEventLoop]] = []
    thread = threading.Thread(target=lambda: seen.append(asyncio.run(_running_loop_type())))
    thread.start()
    thread.join(30)
    assert len(seen) == 1
    _check_loop_type(seen[0])


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_default_decoder_follows_what_is_installed() -> None:
    """``make_decoder()`` picks hiredis exactly when it is installed, else the pure decoder."""
    if importlib.util.find_spec("hiredis") is None:
        assert type(make_decoder()) is Decoder
        with pytest.raises(LocalProtocolError, match="hiredis"):
            make_decoder("hiredis")
    else:
        from okq_proto.hiredis import HiredisDecoder

        assert type(make_decoder()) is HiredisDecoder
    assert type(make_decoder("python")) is Decoder


def test_left_out_dependencies_are_absent() -> None:
    """``OKQ_TEST_WITHOUT`` (tests/conftest.py) deselects tests only where that holds."""
    for name in WITHOUT:
        assert not _installed(name), f"OKQ_TEST_WITHOUT names {name}, which is installed"
        assert importlib.util.find_spec(name) is None, name
    declared_absent = {token.removeprefix("!") for token in DECLARED if token.startswith("!")}
    assert WITHOUT.issubset(declared_absent)


def _check(token: str) -> None:
    if token == "okq:wheel":
        purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
        for package in (okq_proto, okq_transports, conformance):
            where = Path(package.__file__ or "").resolve().parent
            assert where.parent == purelib, f"{package.__name__} imported from {where}"
            assert (where / "py.typed").is_file(), f"{package.__name__} ships no py.typed"
        files = importlib.metadata.distribution("okq").files or []
        assert any(str(f) == "okq_proto/__init__.py" for f in files)
        shipped = {str(f) for f in files}
        for transcript in conformance.load_transcripts():
            assert transcript.path is not None
            assert f"conformance/transcripts/{transcript.path.name}" in shipped, transcript.name
    elif token.startswith("!"):
        name = token[1:]
        assert not _installed(name), f"{name} is installed"
        assert importlib.util.find_spec(name) is None, f"{name} can be imported"
    elif token.startswith("python=="):
        assert f"{sys.version_info[0]}.{sys.version_info[1]}" == token.removeprefix("python==")
        assert sys.implementation.name == "cpython"
    elif "==" in token:
        name, _, version = token.partition("==")
        assert Version(importlib.metadata.version(name)) == Version(version), token
    else:
        assert _installed(token), f"{token} is not installed"


def test_the_environment_is_the_declared_one() -> None:
    """Everything ``OKQ_TEST_EXPECT`` declares holds; and always, this interpreter is one the
    installed okq distribution accepts (its ``Requires-Python``)."""
    for token in DECLARED:
        _check(token)
    requires = importlib.metadata.metadata("okq")["Requires-Python"]
    assert requires, "okq declares no Requires-Python"
    assert Version(".".join(map(str, sys.version_info[:3]))) in SpecifierSet(requires)


def test_declarations_are_checked() -> None:
    """The checker itself fails on a false declaration."""
    with pytest.raises(AssertionError):
        _check("!pytest")
    with pytest.raises(AssertionError):
        _check("pytest==0.0.1")
    with pytest.raises(AssertionError):
        _check("python==2.7")
    _check("pytest")
