"""A loopback OTLP/HTTP trace receiver: `POST /v1/traces` bodies decoded as the real protobuf
`ExportTraceServiceRequest` (opentelemetry-proto), kept whole (raw bytes too, to search them);
any other path answers 200 and records its headers (a tool's own HTTP call, its `traceparent`).

    with FakeOTLP() as otlp:
        provider = tracing.build_tracer_provider({"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url})
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from bot.sandbox.http import LoopbackHttpServer


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items}


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, flattened from the protobuf for assertions."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    links: list[tuple[str, str, dict[str, Any]]]
    status_code: int
    status_message: str
    resource: dict[str, Any]
    start_ns: int
    end_ns: int

    def event(self, name: str) -> dict[str, Any]:
        found = [attrs for event, attrs in self.events if event == name]
        assert found, f"span {self.name!r} has no event {name!r}: {self.events}"
        return found[0]


@dataclass
class FakeOTLP:
    requests: list[ExportTraceServiceRequest] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    other_requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: _Server | None = None
    _thread: threading.Thread | None = None

    def __enter__(self) -> FakeOTLP:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = server.serve_in_thread()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.stop_serving(self._thread)

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            requests = list(self.requests)
        out = []
        for request in requests:
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for s in scope_spans.spans:
                        out.append(
                            ReceivedSpan(
                                name=s.name,
                                trace_id=s.trace_id.hex(),
                                span_id=s.span_id.hex(),
                                parent_span_id=s.parent_span_id.hex(),
                                kind=s.kind,
                                attributes=_attributes(s.attributes),
                                events=[(e.name, _attributes(e.attributes)) for e in s.events],
                                links=[
                                    (
                                        link.trace_id.hex(),
                                        link.span_id.hex(),
                                        _attributes(link.attributes),
                                    )
                                    for link in s.links
                                ],
                                status_code=s.status.code,
                                status_message=s.status.message,
                                resource=resource,
                                start_ns=s.start_time_unix_nano,
                                end_ns=s.end_time_unix_nano,
                            )
                        )
        return sorted(out, key=lambda span: span.start_ns)

    def named(self, name: str) -> list[ReceivedSpan]:
        return [s for s in self.spans() if s.name == name]

    def all_bytes(self) -> bytes:
        with self._lock:
            return b"".join(self.raw)


class _Server(LoopbackHttpServer):
    fake: FakeOTLP


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.fake.other_requests.append((self.path, dict(self.headers.items())))
        self._answer(200, b"{}", "application/json")

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fake = self.server.fake
        if self.path != "/v1/traces":
            with fake._lock:
                fake.other_requests.append((self.path, dict(self.headers.items())))
            self._answer(200, b"{}", "application/json")
            return
        if self.headers.get("Content-Type") != "application/x-protobuf":
            self._answer(415, b"OTLP/HTTP wants application/x-protobuf", "text/plain")
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(raw)
        with fake._lock:
            fake.raw.append(raw)
            fake.requests.append(request)
        self._answer(
            200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf"
        )
