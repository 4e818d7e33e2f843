"""Tracing: with OTEL_EXPORTER_OTLP_ENDPOINT set, one trace runs from the web request
into the miner's task, exported over OTLP/HTTP (to a receiver this test runs); the
standard variables choose OTLP/gRPC instead, and the sampler."""

from __future__ import annotations

import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from scripts.launch import free_port
from scripts.processes import spawn, stop, wait_for
from tasks import tracing
from tests.commands import stack_env
from tests.conftest import ROOT


def test_one_trace_spans_the_web_tier_and_the_miner(tmp_path):
    spans: list[tuple[str, str, bytes, bytes]] = []  # service, span name, trace id, parent

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest.FromString(body)
            for resource in request.resource_spans:
                service = next(
                    a.value.string_value
                    for a in resource.resource.attributes
                    if a.key == "service.name"
                )
                for scope in resource.scope_spans:
                    for s in scope.spans:
                        spans.append((service, s.name, s.trace_id, s.parent_span_id))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    collector_port, web_port, redis_port = free_port(), free_port(), free_port()
    server = HTTPServer(("127.0.0.1", collector_port), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = stack_env(
        tmp_path,
        web_port,
        redis_port,
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector_port}",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    log = tmp_path / "stack.log"
    stack = spawn([sys.executable, "-m", "scripts.stack"], env, log=log, cwd=ROOT)
    try:
        wait_for(lambda: "MIA is up" in log.read_text() or stack.poll() is not None, 120, "up")
        assert stack.poll() is None, log.read_text()
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        answer = requests.post(
            f"http://127.0.0.1:{web_port}/chat/direct",
            json={"message": "trace me"},
            headers={"traceparent": parent},
            timeout=30,
        )
        assert answer.ok, answer.text
        trace_id = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")

        expected = {
            ("mia-web", "POST /chat/direct"),  # ends after the answer is sent: wait for it
            ("mia-web", "mia.dispatch"),
            ("mia-miner", "mia.generate"),
        }

        def names() -> set[tuple[str, str]]:
            return {(service, name) for service, name, tid, _ in spans if tid == trace_id}

        try:
            wait_for(lambda: expected <= names(), 20, "spans from the web tier and the miner")
        except TimeoutError:
            raise AssertionError(spans) from None
        stack.send_signal(signal.SIGINT)
        stack.wait(60)
    finally:
        if stack.poll() is None:
            stop(stack)
        server.shutdown()
        server.server_close()


# -- the exporter and the sampler, chosen by the standard variables ----------------------


@pytest.fixture
def otel_env(monkeypatch):
    for name in (
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_protocol_is_http_unless_the_variables_say_grpc(otel_env):
    assert tracing.protocol() == "http/protobuf"
    otel_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert tracing.protocol() == "grpc"
    otel_env.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")  # traces' own wins
    assert tracing.protocol() == "http/protobuf"
    otel_env.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="http/json"):
        tracing.protocol()


def test_http_protobuf_gives_the_http_exporter(otel_env):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    otel_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    assert isinstance(tracing.exporter(), OTLPSpanExporter)


def test_the_sampler_comes_from_otel_traces_sampler(otel_env):
    from opentelemetry.sdk.trace import TracerProvider

    assert "ParentBased" in TracerProvider().sampler.get_description()  # the default
    otel_env.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    otel_env.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    assert TracerProvider().sampler.get_description() == "TraceIdRatioBased{0.25}"


def test_grpc_exports_to_an_otlp_grpc_receiver(otel_env):
    """``grpc`` sends spans to a real OTLP/gRPC receiver (this test runs one)."""
    grpc = pytest.importorskip("grpc")
    from concurrent import futures

    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcExporter,
    )
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    received: list[str] = []

    class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):  # noqa: N802 - the service's name
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    received.extend(s.name for s in scope.spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        otel_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        exporter = tracing.exporter()
        assert isinstance(exporter, GrpcExporter)
        provider = TracerProvider(resource=Resource.create({"service.name": "t"}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("t").start_as_current_span("over grpc"):
            pass
        provider.shutdown()
        assert received == ["over grpc"]
    finally:
        server.stop(None)
