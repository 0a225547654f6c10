"""Shared pytest fixtures.  Keep edits append-only: several people add fixtures here."""

from __future__ import annotations

from collections.abc import Iterator

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
