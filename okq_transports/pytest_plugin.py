"""The pytest plugin of okq (entry point ``okq`` in the ``pytest11`` group): server fixtures.

Owns: the fixtures ``okq_server`` (an embedded server, emptied after every test, shared by the
whole session), ``okq_server_factory`` (servers of a test's own, with options) and the
session server behind ``okq_server``.
Must not know: the server itself (`okq_transports.server`, imported when a fixture first runs,
so that loading the plugin in every pytest run costs nothing).

The fixtures are synchronous and the servers run in a thread, so sync tests and async tests
(pytest-asyncio, anyio's plugin, pytest-trio) use them alike::

    def test_push(okq_server):
        with Client(okq_server.address) as client:
            client.push("jobs", b"hello")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from okq_transports.server import ThreadedServer

__all__ = ["okq_server", "okq_server_factory", "okq_session_server"]

ServerFactory = Callable[..., "ThreadedServer"]
"""``okq_server_factory(**options)``: a started `ThreadedServer` with the `ServerOptions`."""


@pytest.fixture(scope="session")
def okq_session_server() -> Iterator[ThreadedServer]:
    """The embedded server ``okq_server`` hands out, started once per session."""
    from okq_transports.server import ThreadedServer

    server = ThreadedServer("127.0.0.1", 0, seed=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def okq_server(okq_session_server: ThreadedServer) -> Iterator[ThreadedServer]:
    """An empty embedded okq server on a loopback port: ``.address`` (``"127.0.0.1:PORT"``),
    ``.url`` (``"okq://127.0.0.1:PORT"``), ``.host``, ``.port``.

    One server serves the whole session; after each test it is emptied (`ThreadedServer.reset`:
    its connections close, so claims and registered consumers do not leak into the next
    test).  Options such as a short restore sweep need ``okq_server_factory``.
    """
    server = okq_session_server
    if not server.running:  # a test before this one stopped it
        server.reset()
    try:
        yield server
    finally:
        server.reset()


@pytest.fixture
def okq_server_factory() -> Iterator[ServerFactory]:
    """Start servers of the test's own: ``okq_server_factory(sweep_interval_s=0.5)`` returns
    a started `ThreadedServer` with those `ServerOptions` (``seed``, ``default_expire_s``,
    limits...); each is stopped when the test ends."""
    from okq_transports.server import ThreadedServer

    started: list[ThreadedServer] = []

    def factory(**options: Any) -> ThreadedServer:
        server = ThreadedServer("127.0.0.1", 0, **options)
        server.start()
        started.append(server)
        return server

    try:
        yield factory
    finally:
        for server in reversed(started):
            server.stop()
