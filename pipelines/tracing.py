"""OpenTelemetry traces of runs (the optional `gatehouse[otel]` extra), off unless configured.

One trace per run: each execution slice (a claim until the run waits or ends) is a span, every
slice of a run shares one trace id (derived from the run id, or the webhook caller's when its
delivery carried a `traceparent`) and links to the slice before it; the wait between them is
an event (`run.waiting` on the slice that stopped, `run.resumed` with the seconds waited on the
next), never a span that lasts days. Under a slice, each `ctx` call is a span (`traced_call`)
made current while it runs, so a tool's own instrumented httpx/requests calls join the trace.
Model calls follow the GenAI semantic conventions (`model_call`).

Configured by the standard OTEL_* variables, read by the SDK itself (`build_tracer_provider`);
with no OTLP endpoint, `OTEL_TRACES_EXPORTER=none` or `OTEL_SDK_DISABLED=true`, nothing is
imported and every hook here is one contextvar read. Replays and evals open no slice, so they
export nothing. Values go out scrubbed (`pipelines.sensitive`): no sensitive plain text, no
configured secret; prompts and answers only with
OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from pipelines import sensitive
from pipelines.errors import ActionRejected, CancelRun, GatehouseError, Suspend

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer
    from sqlalchemy import Connection

    from pipelines.context import ModelRequest
    from pipelines.llm import LLMResult
    from pipelines.runtime import Runtime
    from storage.rows import RunEventRow

log = structlog.get_logger()

F = TypeVar("F", bound=Callable[..., Any])
CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
TRACEPARENT_DETAIL = "traceparent "  # the queued event's detail of a run a traced request made
DEFAULT_SERVICE_NAME = "gatehouse"
INSTRUMENTATION = "gatehouse"


class TracingConfigError(GatehouseError):
    """OTEL_* asks for something this build cannot export."""


@dataclass(frozen=True)
class Tracing:
    """An installed tracer provider and what the hooks need from the configuration."""

    provider: TracerProvider
    tracer: Tracer
    capture_content: bool
    api: _Api

    def flush(self) -> None:
        self.provider.force_flush()

    def shutdown(self) -> None:
        self.provider.shutdown()


@dataclass(frozen=True)
class _Api:
    """What the hooks call per span, imported once when tracing is installed (an import
    statement in a hook costs more than the call it serves)."""

    attach: Callable[[Any], Any]
    detach: Callable[[Any], None]
    in_context: Callable[..., Any]
    invalid_parent: Any  # a context with no span: a run's first slice starts a trace
    status_error: Callable[[str], Any]


def _api() -> _Api:
    from opentelemetry import context, trace
    from opentelemetry.trace import Status, StatusCode

    return _Api(
        attach=context.attach,
        detach=context.detach,
        in_context=trace.set_span_in_context,
        invalid_parent=trace.set_span_in_context(trace.INVALID_SPAN),
        status_error=lambda message: Status(StatusCode.ERROR, message),
    )


@dataclass
class _Slice:
    tracing: Tracing
    span: Span


_installed: Tracing | None = None
_slice: contextvars.ContextVar[_Slice | None] = contextvars.ContextVar("gh_slice", default=None)
_call: contextvars.ContextVar[Span | None] = contextvars.ContextVar("gh_call", default=None)
_fixed_ids: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "gh_ids", default=None
)
_trigger_parent: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "gh_parent", default=None
)
_env_lock = threading.Lock()


# -- configuration ------------------------------------------------------------------------


def tracing_configured(env: Mapping[str, str]) -> bool:
    """Whether OTEL_* turns tracing on: an OTLP endpoint, and neither the SDK nor the traces
    exporter switched off."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")}
    if exporters <= {"none", ""}:
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


@contextmanager
def _otel_environ(env: Mapping[str, str]) -> Iterator[None]:
    """The SDK reads OTEL_* from `os.environ` as it builds each part: for a given mapping,
    `os.environ` holds exactly its OTEL_* keys while the provider is built, then what it had."""
    if env is os.environ:
        yield
        return
    with _env_lock:
        saved = {k: v for k, v in os.environ.items() if k.startswith("OTEL_")}
        for key in saved:
            del os.environ[key]
        os.environ.update({k: v for k, v in env.items() if k.startswith("OTEL_")})
        try:
            yield
        finally:
            for key in [k for k in os.environ if k.startswith("OTEL_")]:
                del os.environ[key]
            os.environ.update(saved)


def build_tracer_provider(
    env: Mapping[str, str], *, service_name: str | None = None
) -> TracerProvider | None:
    """A TracerProvider exporting OTLP/HTTP protobuf through a BatchSpanProcessor, configured by
    the OTEL_* keys of `env` (endpoint, headers, sampler, resource, batch sizes: the SDK's own
    handling); None when `env` does not turn tracing on. `service_name` replaces the default
    ("gatehouse") when OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES name none."""
    if not tracing_configured(env):
        return None
    exporters = {e.strip() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")} - {""}
    if not exporters <= {"otlp", "none"}:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={env['OTEL_TRACES_EXPORTER']!r}: Gatehouse exports traces "
            "with OTLP over HTTP only; set it to otlp (or none)"
        )
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol != "http/protobuf":
        raise TracingConfigError(
            f"OTLP protocol {protocol!r}: Gatehouse exports over http/protobuf; "
            "point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's HTTP port (4318)"
        )
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TracingConfigError(
            f"OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed ({exc}); "
            "install gatehouse[otel], or unset the OTEL_* variables"
        ) from exc
    with _otel_environ(env):
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(
                Resource({SERVICE_NAME: service_name or DEFAULT_SERVICE_NAME})
            )
        provider = TracerProvider(
            resource=resource, id_generator=_run_id_generator(), shutdown_on_exit=False
        )
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def install(provider: TracerProvider | None, *, capture_content: bool = False) -> None:
    """Trace runs through `provider` from now on (None: stop tracing). Whoever built the
    provider shuts it down (`provider.shutdown()` sends what is still batched)."""
    global _installed
    _installed = (
        None
        if provider is None
        else Tracing(provider, provider.get_tracer(INSTRUMENTATION), capture_content, _api())
    )


def install_from_environment(env: Mapping[str, str] | None = None) -> bool:
    """At a process's start: install tracing if OTEL_* asks for it and nothing is installed
    yet (so a provider a test or an application installed stays). Also makes it OpenTelemetry's
    global provider, for the tools' own instrumented clients. True when tracing is on."""
    env = os.environ if env is None else env
    if _installed is not None:
        return True
    if not tracing_configured(env):
        return False
    provider = build_tracer_provider(env)
    assert provider is not None
    from opentelemetry import trace

    trace.set_tracer_provider(provider)
    install(provider, capture_content=env.get(CAPTURE_CONTENT, "").lower() == "true")
    import atexit

    atexit.register(provider.shutdown)  # spans still batched are sent as the process ends
    log.info("tracing.on", endpoint=_endpoint(env))
    return True


def installed() -> Tracing | None:
    return _installed


def _endpoint(env: Mapping[str, str]) -> str:
    return env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT", ""
    )


def _run_id_generator() -> Any:
    from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

    class RunIds(IdGenerator):
        """Random ids, except for a slice span: the run's trace id and the slice's own id."""

        _random = RandomIdGenerator()

        def generate_span_id(self) -> int:
            fixed = _fixed_ids.get()
            return fixed[1] if fixed else self._random.generate_span_id()

        def generate_trace_id(self) -> int:
            fixed = _fixed_ids.get()
            return fixed[0] if fixed else self._random.generate_trace_id()

    return RunIds()


def run_trace_id(run_id: str) -> int:
    """The trace id of a run with no caller's trace: the same in every process, every slice."""
    return int.from_bytes(hashlib.sha256(f"gatehouse-run:{run_id}".encode()).digest()[:16]) or 1


def slice_span_id(run_id: str, ordinal: int) -> int:
    """The span id of a run's `ordinal`-th slice (1-based), so the next one can link to it."""
    digest = hashlib.sha256(f"gatehouse-slice:{run_id}:{ordinal}".encode()).digest()
    return int.from_bytes(digest[:8]) or 1


# -- ingress ------------------------------------------------------------------------------


@contextmanager
def incoming(headers: Mapping[str, str]) -> Iterator[None]:
    """Around a request that may create runs (a webhook delivery): a valid W3C `traceparent`
    it carries becomes the parent of the runs it makes (`trigger_detail`)."""
    parent = None
    if _installed is not None and headers.get("traceparent"):
        from opentelemetry.trace import format_span_id, format_trace_id, get_current_span
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        context = TraceContextTextMapPropagator().extract({"traceparent": headers["traceparent"]})
        remote = get_current_span(context).get_span_context()
        if remote.is_valid:
            flags = f"{int(remote.trace_flags):02x}"
            parent = (
                f"00-{format_trace_id(remote.trace_id)}-{format_span_id(remote.span_id)}-{flags}"
            )
    token = _trigger_parent.set(parent)
    try:
        yield
    finally:
        _trigger_parent.reset(token)


def trigger_detail() -> str | None:
    """The detail of a new run's `queued` event: the caller's traceparent, kept with the run so
    a slice in another process, days later, still parents to it."""
    parent = _trigger_parent.get()
    return None if parent is None else TRACEPARENT_DETAIL + parent


# -- slices -------------------------------------------------------------------------------


@contextmanager
def run_slice(
    rt: Runtime, held: Connection, run_id: str, pipeline: str, *, fresh: bool = False
) -> Iterator[None]:
    """One execution slice of a run, as a span (nothing at all when tracing is off). `held`:
    the run's idle connection, for one read of its events, unless the run is `fresh` (created
    in this call with no caller's traceparent: its first slice, with nothing to read)."""
    current = _installed
    if current is None:
        yield
        return
    if fresh:
        with _slice_span(current, rt, run_id, pipeline, run_trace_id(run_id)):
            yield
        return
    from opentelemetry import trace
    from opentelemetry.trace import Link, SpanContext, TraceFlags
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from storage.run_events import events_on_driver

    events = events_on_driver(held, run_id)
    ordinal = max(1, sum(1 for e in events if e.to_status == "running"))
    first = events[0].detail if events else None
    parent = None
    if first and first.startswith(TRACEPARENT_DETAIL):
        parent = TraceContextTextMapPropagator().extract(
            {"traceparent": first[len(TRACEPARENT_DETAIL) :]}
        )
    remote = trace.get_current_span(parent).get_span_context() if parent else None
    trace_id = remote.trace_id if remote is not None and remote.is_valid else run_trace_id(run_id)
    links = []
    resumed: dict[str, Any] = {}
    if ordinal > 1:
        previous = SpanContext(
            trace_id,
            slice_span_id(run_id, ordinal - 1),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
        links.append(Link(previous, {"gatehouse.link": "previous slice"}))
        waited = _waited_seconds(events)
        if waited is not None:
            resumed = {"gatehouse.waited_seconds": waited}
    with _slice_span(
        current, rt, run_id, pipeline, trace_id, ordinal, parent=parent, links=links
    ) as span:
        if resumed:
            span.add_event("run.resumed", resumed)
        yield


@contextmanager
def _slice_span(
    current: Tracing,
    rt: Runtime,
    run_id: str,
    pipeline: str,
    trace_id: int,
    ordinal: int = 1,
    *,
    parent: Any = None,
    links: list[Any] | None = None,
) -> Iterator[Span]:
    """The slice's span, current (and the slice `_slice`'s) while the slice runs."""
    api = current.api
    token = _fixed_ids.set((trace_id, slice_span_id(run_id, ordinal)))
    try:
        span = current.tracer.start_span(
            f"run {pipeline}",
            context=parent if parent is not None else api.invalid_parent,
            links=links,
            attributes={
                "gatehouse.run_id": run_id,
                "gatehouse.pipeline": pipeline,
                "gatehouse.slice": ordinal,
                "gatehouse.worker": rt.worker_id,
            },
        )
    finally:
        _fixed_ids.reset(token)
    slice_token = _slice.set(_Slice(current, span))
    context_token = api.attach(api.in_context(span))
    try:
        yield span
    except Exception as exc:  # the runner records a run's errors; this is what escapes it
        span.set_status(api.status_error(sensitive.scrub(f"{type(exc).__name__}: {exc}")))
        raise
    finally:
        api.detach(context_token)
        _slice.reset(slice_token)
        span.end()


def _waited_seconds(events: list[RunEventRow]) -> float | None:
    """From the slice before's end (its `waiting` event) to this claim (the last event)."""
    waits = [e.at for e in events if e.to_status == "waiting"]
    if not waits or not events:
        return None
    return round((events[-1].at - waits[-1]).total_seconds(), 3)


def run_ended(status: str, error: str | None) -> None:
    """The run's final status, on the slice that ended it."""
    current = _slice.get()
    if current is None:
        return
    span = current.span
    span.set_attribute("gatehouse.run.status", status)
    if status in ("failed", "needs_attention"):
        span.set_status(current.tracing.api.status_error(sensitive.scrub(error or status)))


# -- ctx calls ----------------------------------------------------------------------------

_SETTLED = frozenset({"succeeded", "failed", "rejected"})


def traced_call(kind: str) -> Callable[[F], F]:
    """A `Context` verb as a span under the slice (a call the record settled, being only read
    back by a resumed run, makes none)."""

    def wrap(verb: F) -> F:
        @functools.wraps(verb)
        def traced(ctx: Any, *args: Any, **kwargs: Any) -> Any:
            current = _slice.get()
            if current is None:
                return verb(ctx, *args, **kwargs)
            upcoming = ctx.journal.upcoming()
            # (A tool gated by a validator model has the verdict's record first: its own span.)
            if (
                upcoming is not None
                and str(upcoming.kind) == kind
                and str(upcoming.status) in _SETTLED
            ):
                return verb(ctx, *args, **kwargs)
            # A tool call the run recorded before (it waited for an approval or a window): the
            # span says how its approval was decided, read once it went on or stopped again.
            decided = kind == "tool" and upcoming is not None and str(upcoming.kind) == kind
            with _call_span(current, kind, _describe(kind, args, kwargs)):
                try:
                    result = verb(ctx, *args, **kwargs)
                except (Suspend, ActionRejected, CancelRun):
                    if decided:
                        _annotate_approval(ctx.journal, upcoming.id)
                    raise
                if decided:
                    _annotate_approval(ctx.journal, upcoming.id)
                return result

        return traced  # type: ignore[return-value]

    return wrap


def _annotate_approval(journal: Any, call_id: str) -> None:
    """A resumed tool call's approval, as its span says it: outcome and who decided."""
    from storage.approvals import approval_for_call

    with journal.fast_read() as conn:
        approval = approval_for_call(conn, call_id)
    if approval is not None:
        annotate(
            {
                "gatehouse.approval.outcome": approval.status,
                "gatehouse.approval.approver": approval.decided_by,
            }
        )


def _describe(kind: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    if kind == "tool":
        tool = args[0]
        approval = tool.approval
        gate = approval if isinstance(approval, str) else type(approval).__name__.lower()
        return {
            "gatehouse.call.name": tool.name,
            "gatehouse.tool.kind": tool.kind,
            "gatehouse.tool.gate": gate,
        }
    name = args[0] if args else kwargs.get("name", "")
    attrs = {"gatehouse.call.name": str(name)}
    if kind == "llm":
        attrs["gatehouse.llm.task"] = str(kwargs.get("task", ""))
    return attrs


@contextmanager
def _call_span(current: _Slice, kind: str, attrs: dict[str, Any]) -> Iterator[None]:
    api = current.tracing.api
    attrs["gatehouse.call.kind"] = kind
    span = current.tracing.tracer.start_span(
        f"{kind} {attrs['gatehouse.call.name']}", attributes=attrs
    )
    token = _call.set(span)
    context_token = api.attach(api.in_context(span))
    try:
        yield
    except Suspend as suspended:
        waits = _attrs(
            {"gatehouse.reason": suspended.reason, "gatehouse.waiting_for": suspended.waiting_for}
        )
        span.add_event("call.suspended", waits)
        # The slice ends here; the wait is this event, not a span as long as the wait.
        current.span.add_event("run.waiting", waits)
        current.span.set_attribute("gatehouse.run.status", "waiting")
        raise
    except BaseException as exc:
        message = sensitive.scrub(f"{type(exc).__name__}: {exc}")
        span.add_event(
            "exception", {"exception.type": type(exc).__name__, "exception.message": message}
        )
        span.set_status(api.status_error(message))
        raise
    finally:
        api.detach(context_token)
        _call.reset(token)
        span.end()


def annotate(attributes: Mapping[str, Any]) -> None:
    """Attributes of the current call's span (a gate's outcome, a tool's key); no-op when off."""
    span = _call.get()
    if span is not None:
        span.set_attributes(_attrs(attributes))


def _attrs(values: Mapping[str, Any]) -> dict[str, Any]:
    """Attribute values as OTLP carries them, scrubbed, None left out."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool | int | float):
            out[key] = value
        else:
            out[key] = sensitive.scrub(str(value))
    return out


# -- model calls --------------------------------------------------------------------------


def model_call(rt: Runtime, request: ModelRequest, send: Callable[[], LLMResult]) -> LLMResult:
    """A model call as a GenAI client span (`chat MODEL`) under its `llm` call span."""
    current = _slice.get()
    if current is None:
        return send()
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    model = request.model or rt.llm_config.model or ""
    span = current.tracing.tracer.start_span(
        f"chat {model}".strip(),
        kind=SpanKind.CLIENT,
        attributes=_attrs(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": model,
                "server.address": _host(rt.llm_config.base_url),
            }
        ),
    )
    # The SDK's own status on an exception would carry its message unscrubbed: ours instead.
    with trace.use_span(
        span, end_on_exit=True, record_exception=False, set_status_on_exception=False
    ):
        try:
            result = send()
        except Exception as exc:
            span.set_status(
                Status(StatusCode.ERROR, sensitive.scrub(f"{type(exc).__name__}: {exc}"))
            )
            raise
        span.set_attributes(
            _attrs(
                {
                    "gen_ai.response.model": next(
                        (a.model for a in reversed(result.attempts) if a.model), None
                    ),
                    "gen_ai.usage.input_tokens": result.prompt_tokens,
                    "gen_ai.usage.output_tokens": result.completion_tokens,
                    "gatehouse.llm.attempts": len(result.attempts),
                    "gatehouse.llm.failure": result.failure,
                    "gatehouse.llm.confidence": result.confidence,
                    "gatehouse.llm.cost_usd": result.cost,
                }
            )
        )
        if result.failure == "model_error":
            span.set_status(Status(StatusCode.ERROR, sensitive.scrub(result.reason or "")))
        if current.tracing.capture_content:
            messages = [
                {"role": "system", "parts": [{"type": "text", "content": result.system}]},
                {"role": "user", "parts": [{"type": "text", "content": result.prompt}]},
            ]
            span.set_attribute(
                "gen_ai.input.messages", sensitive.scrub(json.dumps(messages, ensure_ascii=False))
            )
            if result.last_raw is not None:
                answer = [
                    {"role": "assistant", "parts": [{"type": "text", "content": result.last_raw}]}
                ]
                span.set_attribute(
                    "gen_ai.output.messages",
                    sensitive.scrub(json.dumps(answer, ensure_ascii=False)),
                )
    return result


def _host(url: str | None) -> str | None:
    if not url:
        return None
    from urllib.parse import urlsplit

    return urlsplit(url).hostname


# -- logs ---------------------------------------------------------------------------------


def current_ids() -> tuple[str, str] | None:
    """The current span's (trace_id, span_id) in hex, when tracing is on and a span is open."""
    if _installed is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
