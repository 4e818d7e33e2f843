"""Tracing with OpenTelemetry: one trace from the web request, through dispatch, into
the Celery task on the miner.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is
set: then every process exports its spans over OTLP, and the trace context travels in
the task message's headers (W3C ``traceparent`` and ``tracestate``, the only fields the
miner reads: the W3C propagator is called directly, not the global composite one, which
would read and write baggage for no one on every request). Off, nothing is set up and
every call here returns at once. The standard OpenTelemetry variables choose the rest:
``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf``,
the default, or ``grpc``: port 4317), and ``OTEL_TRACES_SAMPLER`` /
``OTEL_TRACES_SAMPLER_ARG``, which the SDK's ``TracerProvider`` reads itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from opentelemetry import context, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

# Set by setup(); None: tracing is off. (Not taken at import: getting a tracer makes
# OpenTelemetry read the environment.)
_tracer: trace.Tracer | None = None
_W3C = TraceContextTextMapPropagator()
FIELDS = ("traceparent", "tracestate")  # what a carrier needs: what inject() writes


def enabled() -> bool:
    return _tracer is not None


PROTOCOLS = ("http/protobuf", "grpc")


def protocol() -> str:
    """The OTLP protocol the standard variables ask for (traces' own first)."""
    chosen = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if chosen not in PROTOCOLS:
        raise ValueError(f"OTLP protocol {chosen!r} is not supported here: use one of {PROTOCOLS}")
    return chosen


def exporter() -> SpanExporter:
    """The span exporter for ``protocol()``; each reads its endpoint, headers, timeout
    and TLS settings from the standard variables. Only the chosen one is imported."""
    if protocol() == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        chosen: SpanExporter = GrpcExporter()  # typed: mypy may not see grpcio's package
        return chosen
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def setup(service: str) -> None:
    """Export this process's spans over OTLP when an OTLP endpoint is set."""
    global _tracer
    if _tracer is not None or not (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME", service)
    # No sampler given: the provider takes OTEL_TRACES_SAMPLER(_ARG) (parent-based
    # always-on when unset).
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(exporter()))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("mia")


def shutdown() -> None:
    """Send what is buffered (a process about to exit)."""
    provider = trace.get_tracer_provider()
    if _tracer is not None and hasattr(provider, "shutdown"):
        provider.shutdown()


def inject(headers: MutableMapping[str, Any]) -> None:
    """Put the current trace context into a message's headers."""
    if _tracer is not None:
        _W3C.inject(headers)


def span(
    name: str, carrier: Mapping[str, Any] | None = None, **attributes: Any
) -> AbstractContextManager[object]:
    """A span around the block, a child of ``carrier``'s context when given; an
    exception leaving the block is recorded on it (``use_span``'s own handling)."""
    if _tracer is None:
        return nullcontext()
    parent = _W3C.extract(carrier) if carrier is not None else None
    # use_span alone, not start_as_current_span: one generator around the block, not two
    current = _tracer.start_span(name, parent, attributes=attributes)
    return trace.use_span(current, end_on_exit=True)


Started = tuple[trace.Span, object]


def start(name: str, carrier: Mapping[str, Any] | None = None, **attributes: Any) -> Started | None:
    """Start a span and make it current until ``end(token)`` (for begin/end hooks)."""
    if _tracer is None:
        return None
    parent = _W3C.extract(carrier) if carrier is not None else None
    current = _tracer.start_span(name, parent, attributes=attributes)
    return current, context.attach(trace.set_span_in_context(current))


def end(token: Started | None) -> None:
    if token is None:
        return
    current, attached = token
    context.detach(attached)  # type: ignore[arg-type]
    current.end()
