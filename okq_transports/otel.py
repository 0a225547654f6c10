"""OpenTelemetry tracing for every door: `OpenTelemetryHooks`, passed as ``hooks=``.

Owns: turning the driver's `okq_proto.Hooks` calls into spans that follow the OpenTelemetry
messaging conventions: ``publish <queue>`` (kind PRODUCER) for each push, timed from the
request's write to its reply, and ``process <queue>`` (kind CONSUMER) around each handler
call, current while the handler runs (so the handler's own spans are its children).
Must not know: sockets, consumers, retries (the driver calls the hooks; each attempt of a
retried push is a span of its own).

okq events are opaque bytes, so no trace context travels with them: a ``process`` span
starts a trace of its own (or joins the one current where the consumer runs).  Needs the
``otel`` extra (``opentelemetry-api``); an SDK and an exporter are the application's::

    from okq_transports.otel import OpenTelemetryHooks
    from okq_transports.sync import Client

    client = Client("okq://127.0.0.1:4777", hooks=OpenTelemetryHooks())
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

try:
    from opentelemetry import context, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ModuleNotFoundError(
        "okq_transports.otel needs OpenTelemetry: pip install 'okq[otel]'", name=exc.name
    ) from exc

import okq_proto
from okq_proto import Command, Delivery, Hooks

if TYPE_CHECKING:
    from opentelemetry.trace import Span, TracerProvider

__all__ = ["MESSAGING_SYSTEM", "OpenTelemetryHooks"]

#: The ``messaging.system`` of every span.
MESSAGING_SYSTEM: Final = "okq"
_PUSHES: Final = frozenset({b"QLPUSH", b"QRPUSH"})


def _text(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


class OpenTelemetryHooks(Hooks):
    """`Hooks` that trace pushes and handler calls with OpenTelemetry.

    Attributes on every span: ``messaging.system`` (``"okq"``), ``messaging.destination.name``
    (the queue), ``messaging.message.id`` (the event id), ``messaging.operation.name``
    (``publish`` / ``process``) and ``messaging.operation.type`` (``send`` / ``process``),
    ``messaging.message.body.size``.  A push that failed (an error reply or a lost
    connection) and a handler that raised or returned false end with status ERROR, the
    exception recorded.

    Args:
        tracer_provider: where the spans go (None: the global one, as set by
            ``opentelemetry.trace.set_tracer_provider``).
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer(
            "okq_transports", okq_proto.__version__, tracer_provider=tracer_provider
        )

    def command(
        self, command: Command[Any], duration_s: float, error: BaseException | None
    ) -> None:
        if command.name not in _PUSHES:
            return
        end = time.time_ns()
        queue = _text(command.queue)  # type: ignore[attr-defined]  # a push has one
        span = self.tracer.start_span(
            f"publish {queue}",
            kind=SpanKind.PRODUCER,
            start_time=end - int(duration_s * 1e9),
            attributes={
                "messaging.system": MESSAGING_SYSTEM,
                "messaging.destination.name": queue,
                "messaging.message.id": _text(command.id),  # type: ignore[attr-defined]
                "messaging.operation.name": "publish",
                "messaging.operation.type": "send",
                "messaging.message.body.size": len(command.contents),  # type: ignore[attr-defined]
            },
        )
        if error is not None:
            _failed(span, error)
        span.end(end_time=end)

    def handler_started(self, delivery: Delivery) -> object:
        span = self.tracer.start_span(
            f"process {delivery.queue}",
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": MESSAGING_SYSTEM,
                "messaging.destination.name": delivery.queue,
                "messaging.message.id": delivery.id,
                "messaging.operation.name": "process",
                "messaging.operation.type": "process",
                "messaging.message.body.size": len(delivery.contents),
            },
        )
        token = context.attach(trace.set_span_in_context(span))
        return span, token

    def handler_finished(
        self, delivery: Delivery, started: object, ok: bool, error: BaseException | None
    ) -> None:
        if not isinstance(started, tuple):
            return  # handler_started failed
        span, token = started
        context.detach(token)
        if error is not None:
            _failed(span, error)
        elif not ok:
            span.set_status(Status(StatusCode.ERROR, "the handler did not ask for the ack"))
        span.end()


def _failed(span: Span, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
