"""Tracing with OpenTelemetry: one trace from the web request, through dispatch, into
the Celery task on the miner.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set: then every process exports its
spans over OTLP/HTTP, and the trace context travels in the task message's headers
(W3C ``traceparent``). Off, nothing is set up and every call here returns at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context, propagate, trace

# Set by setup(); None: tracing is off. (Not taken at import: getting a tracer makes
# OpenTelemetry read the environment.)
_tracer: trace.Tracer | None = None


def enabled() -> bool:
    return _tracer is not None


def setup(service: str) -> None:
    """Export this process's spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set."""
    global _tracer
    if _tracer is not None or not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME", service)
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
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
        propagate.inject(headers)


@contextmanager
def span(name: str, carrier: Mapping[str, Any] | None = None, **attributes: Any) -> Iterator[None]:
    """A span around the block, a child of ``carrier``'s context when given."""
    if _tracer is None:
        yield
        return
    parent = propagate.extract(carrier) if carrier is not None else None
    with _tracer.start_as_current_span(name, context=parent, attributes=attributes):
        yield


Started = tuple[trace.Span, object]


def start(name: str, carrier: Mapping[str, Any] | None = None, **attributes: Any) -> Started | None:
    """Start a span and make it current until ``end(token)`` (for begin/end hooks)."""
    if _tracer is None:
        return None
    parent = propagate.extract(carrier) if carrier is not None else None
    current = _tracer.start_span(name, context=parent, attributes=attributes)
    return current, context.attach(trace.set_span_in_context(current))


def end(token: Started | None) -> None:
    if token is None:
        return
    current, attached = token
    context.detach(attached)  # type: ignore[arg-type]
    current.end()
