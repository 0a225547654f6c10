"""The anyio door (``okq_transports.anyio``) over real TCP against the embedded server, under
``anyio.run`` on both of anyio's backends: the driver's asyncio backend under asyncio, its
trio backend under trio.

Requests, ``TaskGroup.start`` of a consumer with an ``anyio.Event`` as its stop (one and two
consumer connections: anyio's asyncio backend takes ``started()`` only from the task it
started), anyio cancel scopes ending a consumer blocked in ``QNOTIFY`` and a request whose
reply never comes, a custom ``stream_factory``, and the message of a missing anyio.
"""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from okq_proto import ConnectionClosed, Delivery, Event, LocalProtocolError, Ping, QNotify
from okq_proto import TimeoutError as OkqTimeoutError
from okq_transports.server import ThreadedServer

from .scenarios import qname, require

anyio = require("anyio")

from okq_transports.anyio import (  # noqa: E402  (after the optional import)
    AnyioStream,
    Client,
    connection_over,
    current_backend,
    open_client,
)

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent.parent
BACKENDS = ("asyncio", "trio")
DEADLINE_S = 15.0


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer("127.0.0.1", 0, sweep_interval_s=0.2) as srv:
        yield srv


def run(backend: str, main: Callable[[], Awaitable[None]]) -> None:
    """``anyio.run(main, backend=backend)``, bounded by `DEADLINE_S`."""

    async def bounded() -> None:
        with anyio.fail_after(DEADLINE_S):
            await main()

    anyio.run(bounded, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_runs_on_the_running_library(backend: str, server: ThreadedServer) -> None:
    async def main() -> None:
        assert current_backend().name == backend  # type: ignore[attr-defined]
        async with open_client(server.address) as client:
            assert isinstance(client, Client)
            assert client.backend is current_backend()
            await client.ping()

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_push_peek_status_flush(backend: str, server: ThreadedServer) -> None:
    q = qname(f"anyio-req-{backend}")

    async def main() -> None:
        async with open_client(server.url) as client:
            first = await client.push(q, b"one")
            last = await client.push(q, b"two")
            assert await client.peek_next(q) == Event(q, first, b"one")
            assert await client.peek_last(q) == Event(q, last, b"two")
            (status,) = await client.status(q)
            assert (status.name, status.total, status.processing) == (q, 2, 0)
            await client.flush(q)
            (status,) = await client.status(q)
            assert status.total == 0
            assert await client.peek_next(q) is None

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_push_many(backend: str, server: ThreadedServer) -> None:
    q = qname(f"anyio-many-{backend}")

    async def main() -> None:
        async with open_client(server.address, pool_size=2) as client:
            outcomes = await client.push_many(q, [b"a", b"b", b"c"])
            assert [outcome.error for outcome in outcomes] == [None, None, None]
            (status,) = await client.status(q)
            assert status.total == 3
            assert await client.peek_next(q) == Event(q, outcomes[0].id, b"a")
            assert await client.peek_last(q) == Event(q, outcomes[2].id, b"c")

    run(backend, main)


@pytest.mark.parametrize("concurrency", [1, 2])
@pytest.mark.parametrize("backend", BACKENDS)
def test_consumer_started_with_task_group_start(
    backend: str, concurrency: int, server: ThreadedServer
) -> None:
    """``await tg.start(client.consume, ...)`` returns once registered; events pushed after
    that are handled, and ``stop.set()`` (an ``anyio.Event``) ends the consumer with every
    ack sent."""
    q = qname(f"anyio-consume-{backend}")

    async def main() -> None:
        async with open_client(server.address, notify_timeout_s=2) as client:
            stop = anyio.Event()
            handled: list[bytes] = []

            async def handle(delivery: Delivery) -> bool:
                await anyio.sleep(0.01)
                handled.append(delivery.contents)
                if len(handled) == 3:
                    stop.set()
                return True

            async with anyio.create_task_group() as tg:
                await tg.start(
                    functools.partial(
                        client.consume, handle, [q], concurrency=concurrency, stop=stop
                    )
                )
                (status,) = await client.status(q)
                assert status.consumers == concurrency  # registered before start() returned
                for name in (b"a", b"b", b"c"):
                    await client.push(q, name)
            assert sorted(handled) == [b"a", b"b", b"c"]
            (status,) = await client.status(q)
            assert (status.total, status.processing) == (0, 0)

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_task_group_cancel_keeps_the_ack(backend: str, server: ThreadedServer) -> None:
    """A handler that cancels the task group and returns true keeps its ack; the other
    event stays, unclaimed."""
    q = qname(f"anyio-cancel-{backend}")

    async def main() -> None:
        async with open_client(server.address) as client:
            await client.push_many(q, [b"first", b"second"])
            seen: list[bytes] = []
            async with anyio.create_task_group() as tg:

                def handle(delivery: Delivery) -> bool:
                    seen.append(delivery.contents)
                    tg.cancel_scope.cancel()
                    return True

                await tg.start(client.consume, handle, [q])
            assert seen in ([b"first"], [b"second"])
            (status,) = await client.status(q)
            assert (status.total, status.processing) == (1, 0)

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_start_raises_the_consumers_error(backend: str, server: ThreadedServer) -> None:
    """A consumer that fails before it registered fails ``tg.start`` with its own error."""

    async def main() -> None:
        async with open_client(server.address) as client, anyio.create_task_group() as tg:
            with pytest.raises(LocalProtocolError):
                await tg.start(client.consume, lambda delivery: True, [])

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_consume_without_task_status(backend: str, server: ThreadedServer) -> None:
    """``tg.start_soon(client.consume, ...)`` (no ``task_status``), stopped by its event."""
    q = qname(f"anyio-soon-{backend}")

    async def main() -> None:
        async with open_client(server.address, notify_timeout_s=1) as client:
            await client.push(q, b"x")
            stop = anyio.Event()

            def handle(delivery: Delivery) -> bool:
                stop.set()
                return True

            async with anyio.create_task_group() as tg:
                tg.start_soon(functools.partial(client.consume, handle, [q], stop=stop))
            (status,) = await client.status(q)
            assert status.total == 0

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fail_after_ends_a_consumer_waiting_in_qnotify(
    backend: str, server: ThreadedServer
) -> None:
    q = qname(f"anyio-notify-{backend}")

    async def main() -> None:
        # the server notices the closed connection when its 2 s QNOTIFY wait ends
        async with open_client(server.address, notify_timeout_s=2) as client:

            def handle(delivery: Delivery) -> bool:
                raise AssertionError("nothing was pushed")

            async def consuming() -> None:
                async with anyio.create_task_group() as tg:
                    await tg.start(client.consume, handle, [q])

            started = anyio.current_time()
            with pytest.raises(TimeoutError), anyio.fail_after(0.5):
                await consuming()
            assert anyio.current_time() - started < 3
            for _ in range(100):  # bounded: 5 s
                (status,) = await client.status(q)
                if status.consumers == 0:
                    break
                await anyio.sleep(0.05)
            assert status.consumers == 0
            event_id = await client.push(q, b"after")
            assert await client.peek_next(q) == Event(q, event_id, b"after")

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_move_on_after_ends_a_slow_request(backend: str, server: ThreadedServer) -> None:
    """A cancel scope expiring while a request waits for its reply closes that connection
    for good (never pooled again); the next request gets a fresh one and the right reply."""

    async def main() -> None:
        async with open_client(server.address) as client:
            async with client.connection() as conn:
                with anyio.move_on_after(0.3) as scope:
                    await conn.request(QNotify(5))  # the server stays silent for 5 s
                assert scope.cancelled_caught
                assert not conn.usable
                with pytest.raises(ConnectionClosed):
                    await conn.request(QNotify(0))
            assert client.open_connections == 0
            q = qname(f"anyio-after-{backend}")
            event_id = await client.push(q, b"x")
            assert await client.peek_next(q) == Event(q, event_id, b"x")

    run(backend, main)


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """A TCP server that accepts and reads but never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    done = threading.Event()
    accepted: list[socket.socket] = []

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[:2]
    finally:
        done.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_fail_after_ends_a_request_never_answered(
    backend: str, silent_server: tuple[str, int]
) -> None:
    host, port = silent_server

    async def main() -> None:
        async with open_client(f"{host}:{port}", retries=0) as client:
            started = anyio.current_time()
            with pytest.raises(TimeoutError), anyio.fail_after(0.3):
                await client.status("q")
            assert anyio.current_time() - started < 2
            assert client.open_connections == 0  # the cancelled request's connection closed

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_anyio_stream_read_deadline(backend: str, silent_server: tuple[str, int]) -> None:
    """`AnyioStream`'s own read deadline (the one the consumer uses) is okq's TimeoutError."""

    async def main() -> None:
        stream = AnyioStream(await anyio.connect_tcp(*silent_server))
        try:
            assert not stream.has_unread()
            with pytest.raises(OkqTimeoutError):
                await stream.receive_some(100, 0.2)
        finally:
            await stream.aclose()

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stream_factory(backend: str, server: ThreadedServer) -> None:
    """Any ``anyio.abc.ByteStream`` as transport, pooled or alone (`connection_over`)."""
    q = qname(f"anyio-stream-{backend}")
    opened: list[tuple[str, int]] = []

    async def factory(address: tuple[str, int]) -> Any:
        opened.append(address)
        return await anyio.connect_tcp(*address)

    async def main() -> None:
        async with open_client(
            server.address, stream_factory=factory, notify_timeout_s=1
        ) as client:
            event_id = await client.push(q, b"via anyio")
            assert await client.peek_next(q) == Event(q, event_id, b"via anyio")
            stop = anyio.Event()
            seen: list[bytes] = []

            def handle(delivery: Delivery) -> bool:
                seen.append(delivery.contents)
                stop.set()
                return True

            async with anyio.create_task_group() as tg:  # a consumer's timed reads too
                await tg.start(functools.partial(client.consume, handle, [q], stop=stop))
            assert seen == [b"via anyio"]
            (status,) = await client.status(q)
            assert status.total == 0
        assert set(opened) == {(server.host, server.port)}
        assert len(opened) == 2  # the pooled connection and the consumer's
        stream = await anyio.connect_tcp(server.host, server.port)
        conn = connection_over(stream)
        try:
            assert (await conn.request(Ping())).unwrap() is None
            assert conn.usable
        finally:
            await conn.aclose()

    run(backend, main)


def test_ssl_and_stream_factory_refused() -> None:
    import ssl

    async def main() -> None:
        async def factory(address: tuple[str, int]) -> Any:
            raise AssertionError("not called")

        with pytest.raises(LocalProtocolError, match="not both"):
            async with open_client(ssl=ssl.create_default_context(), stream_factory=factory):
                pass

    anyio.run(main, backend="asyncio")


def test_import_without_anyio_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['anyio'] = None  # as if anyio were not installed\n"
        "try:\n"
        "    import okq_transports.anyio\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(type(exc).__name__, exc.name)\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('imported without anyio')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    kind, message = done.stdout.split("\n", 1)
    assert kind == "ModuleNotFoundError anyio"
    assert "okq_transports.anyio needs anyio: pip install 'okq[anyio]'" in message
