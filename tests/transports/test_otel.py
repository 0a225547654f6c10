"""OpenTelemetry spans through `OpenTelemetryHooks`, read back with the SDK's in-memory
exporter, on the sync, asyncio and trio doors against an embedded server over TCP; and the
per-command hook `Hooks.command` with its latency, its error replies and its lost
connections."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from okq_proto import (
    Command,
    Delivery,
    DuplicateEventError,
    Event,
    Hooks,
    ReplyError,
    TransportError,
)
from okq_transports import trio as okq_trio
from okq_transports.asyncio import Client as AsyncioClient
from okq_transports.otel import OpenTelemetryHooks
from okq_transports.server import ThreadedServer
from okq_transports.sync import Client


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer("127.0.0.1", 0) as srv:
        yield srv


@pytest.fixture
def traced() -> Iterator[tuple[OpenTelemetryHooks, InMemorySpanExporter, TracerProvider]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield OpenTelemetryHooks(tracer_provider=provider), exporter, provider
    provider.shutdown()


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_a_push_is_a_publish_span(
    server: ThreadedServer, traced: tuple[OpenTelemetryHooks, InMemorySpanExporter, Any]
) -> None:
    hooks, exporter, _ = traced
    with Client(server.address, hooks=hooks) as client:
        event_id = client.push("otel-a", b"hello")
        client.peek_next("otel-a")  # not a push: no span
        client.flush("otel-a")
    [span] = exporter.get_finished_spans()
    assert span.name == "publish otel-a"
    assert span.kind == SpanKind.PRODUCER
    assert attributes(span) == {
        "messaging.system": "okq",
        "messaging.destination.name": "otel-a",
        "messaging.message.id": event_id,
        "messaging.operation.name": "publish",
        "messaging.operation.type": "send",
        "messaging.message.body.size": 5,
    }
    assert span.status.status_code == StatusCode.UNSET
    assert span.start_time is not None
    assert span.end_time is not None
    assert 0 < span.end_time - span.start_time < 5_000_000_000


def test_a_failed_push_ends_in_error_and_a_batch_is_a_span_per_event(
    server: ThreadedServer, traced: tuple[OpenTelemetryHooks, InMemorySpanExporter, Any]
) -> None:
    hooks, exporter, _ = traced
    with Client(server.address, hooks=hooks) as client:
        client.push_event(Event("otel-b", "fixed", b"x"))
        with pytest.raises(DuplicateEventError):
            client.push_event(Event("otel-b", "fixed", b"y"))
        outcomes = client.push_many("otel-b", [b"1", b"22", b"333"])
        client.flush("otel-b")
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["publish otel-b"] * 5
    first, dup, *batch = spans
    assert first.status.status_code == StatusCode.UNSET
    assert dup.status.status_code == StatusCode.ERROR
    assert [e.name for e in dup.events] == ["exception"]
    assert [attributes(s)["messaging.message.id"] for s in batch] == [o.id for o in outcomes]
    assert [attributes(s)["messaging.message.body.size"] for s in batch] == [1, 2, 3]


def test_each_handler_call_is_a_process_span_current_while_it_runs(
    server: ThreadedServer, traced: tuple[OpenTelemetryHooks, InMemorySpanExporter, Any]
) -> None:
    hooks, exporter, provider = traced
    tracer = provider.get_tracer("the application")
    stop = threading.Event()
    seen: list[str] = []

    def handler(delivery: Delivery) -> bool:
        with tracer.start_as_current_span("work"):  # the handler's own span
            seen.append(delivery.id)
        if delivery.contents == b"boom":
            raise RuntimeError("boom")
        if len(seen) == 3:
            stop.set()
        return delivery.contents != b"refuse"

    with Client(server.address, hooks=hooks) as client:
        ids = [client.push("otel-c", contents) for contents in (b"ok", b"boom", b"refuse")]
        exporter.clear()
        client.consume(handler, ["otel-c"], stop=stop, expire_seconds=1)
        client.flush("otel-c")
    spans = exporter.get_finished_spans()
    process = {attributes(s)["messaging.message.id"]: s for s in spans if s.name.startswith("pro")}
    work = [s for s in spans if s.name == "work"]
    assert sorted(process) == sorted(ids)
    assert all(s.kind == SpanKind.CONSUMER for s in process.values())
    assert all(s.name == "process otel-c" for s in process.values())
    assert attributes(process[ids[0]])["messaging.operation.type"] == "process"
    assert process[ids[0]].status.status_code == StatusCode.UNSET
    assert process[ids[1]].status.status_code == StatusCode.ERROR  # raised
    assert [e.name for e in process[ids[1]].events] == ["exception"]
    assert process[ids[2]].status.status_code == StatusCode.ERROR  # returned false
    parents = {s.parent.span_id for s in work if s.parent is not None}
    assert parents == {s.context.span_id for s in process.values()}  # nested in them


def test_asyncio_and_trio_doors_trace_too(
    server: ThreadedServer, traced: tuple[OpenTelemetryHooks, InMemorySpanExporter, Any]
) -> None:
    hooks, exporter, _ = traced

    async def on_asyncio() -> None:
        async with AsyncioClient(server.address, hooks=hooks) as client:
            await client.push("otel-d", b"a")
            stop = asyncio.Event()

            async def handler(delivery: Delivery) -> bool:
                stop.set()
                return True

            await client.consume(handler, ["otel-d"], stop=stop)

    async def on_trio() -> None:
        async with okq_trio.open_client(server.address, hooks=hooks) as client:
            await client.push("otel-e", b"b")
            stop = trio.Event()

            async def handler(delivery: Delivery) -> bool:
                stop.set()
                return True

            await client.consume(handler, ["otel-e"], stop=stop)

    asyncio.run(on_asyncio())
    trio.run(on_trio)
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == ["process otel-d", "process otel-e", "publish otel-d", "publish otel-e"]


class Recorder(Hooks):
    def __init__(self) -> None:
        self.seen: list[tuple[bytes, bytes | None, float, type[BaseException] | None]] = []

    def command(
        self, command: Command[Any], duration_s: float, error: BaseException | None
    ) -> None:
        queue = getattr(command, "queue", None)
        self.seen.append((command.name, queue, duration_s, None if error is None else type(error)))


def test_the_per_command_hook_reports_every_request_with_its_latency(
    server: ThreadedServer,
) -> None:
    recorder = Recorder()
    with Client(server.address, hooks=recorder, retries=0) as client:
        client.push_event(Event("cmd", "e1", b"x"))
        with pytest.raises(DuplicateEventError):
            client.push_event(Event("cmd", "e1", b"x"))
        client.peek_last("cmd")
        client.status("cmd")
        client.ping()
        client.flush("cmd")
    assert [(name, queue, error) for name, queue, _, error in recorder.seen] == [
        (b"QLPUSH", b"cmd", None),
        (b"QLPUSH", b"cmd", DuplicateEventError),
        (b"QLPEEK", b"cmd", None),
        (b"QSTATUS", None, None),
        (b"PING", None, None),
        (b"QFLUSH", b"cmd", None),
    ]
    assert all(0 < duration < 5 for _, _, duration, _ in recorder.seen)
    assert issubclass(DuplicateEventError, ReplyError)


def hang_up_after_one_request(listener: socket.socket) -> None:
    conn, _ = listener.accept()
    with conn:
        conn.recv(65536)


def test_a_request_whose_connection_dies_is_reported_with_the_failure() -> None:
    recorder = Recorder()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        peer = threading.Thread(target=hang_up_after_one_request, args=(listener,))
        peer.start()
        with (
            Client(f"127.0.0.1:{port}", hooks=recorder, retries=0) as client,
            pytest.raises(TransportError),
        ):
            client.ping()
        peer.join(10)
    [(name, _, duration, error)] = recorder.seen
    assert name == b"PING"
    assert error is not None
    assert issubclass(error, TransportError)
    assert duration > 0


def test_a_hook_that_raises_is_logged_and_ignored(
    server: ThreadedServer, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Hooks):
        def command(self, command: Command[Any], duration_s: float, error: object) -> None:
            raise ValueError("broken hook")

    with Client(server.address, hooks=Broken()) as client:
        client.ping()
    assert any("hook command raised" in r.getMessage() for r in caplog.records)


def test_without_opentelemetry_the_import_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"
        "try:\n"
        "    import okq_transports.otel\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "pip install 'okq[otel]'" in out
