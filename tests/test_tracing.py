"""OpenTelemetry traces of runs, exported for real over OTLP/HTTP to a loopback receiver that
decodes the protobuf (tests/fakes/otlp.py): slices, ctx calls, GenAI attributes, links, the
webhook caller as parent, a tool's own httpx call in the trace, the log lines' ids, and what is
never sent (nothing without OTEL_*, no sensitive value, nothing from a replay)."""

from __future__ import annotations

import http.client
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from starlette.applications import Starlette

from bot.http.server import BackgroundServer
from bot.http.webhooks import sign_delivery, webhook_routes
from pipelines import Gatehouse, LLMConfig, Settings, StaticDirectory, tracing
from pipelines.logs import configure_logging
from storage.db import Database
from tests import otel_pipelines as op
from tests.conftest import GROUPS
from tests.fakes.clock import FakeClock
from tests.fakes.notifier import RecordingNotifier
from tests.fakes.openai import FakeOpenAI, reply_json
from tests.fakes.otlp import FakeOTLP, ReceivedSpan

INPUT = {"order": " a-17 ", "amount": 250.0, "card_number": op.CARD}
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
THREE_DAYS = timedelta(days=3)


@pytest.fixture
def otlp() -> Iterator[FakeOTLP]:
    with FakeOTLP() as receiver:
        yield receiver


def _env(otlp: FakeOTLP, **extra: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.url,
        "OTEL_SERVICE_NAME": "gatehouse-test",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        **extra,
    }


@pytest.fixture
def traced(otlp: FakeOTLP) -> Iterator[Any]:
    """Tracing installed for this test only (built from a mapping, not the process's env), and
    the pipeline's httpx client instrumented with the same provider."""
    provider = tracing.build_tracer_provider(_env(otlp))
    assert provider is not None
    tracing.install(provider, capture_content=True)
    client = httpx.Client()
    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)
    op.http_client, op.CALLBACK_URL = client, otlp.url
    try:
        yield provider
    finally:
        tracing.install(None)
        provider.shutdown()
        client.close()
        op.http_client = None


@pytest.fixture
def gatehouse_llm(
    db: Database, clock: FakeClock, notifier: RecordingNotifier, fake_openai: FakeOpenAI
) -> Gatehouse:
    llm = LLMConfig(model="gpt-4o-mini", base_url=fake_openai.base_url, api_key="sk-test")
    return Gatehouse(db, clock=clock, notifier=notifier, directory=StaticDirectory(GROUPS), llm=llm)


def _approve_after_three_days(gatehouse: Gatehouse, clock: FakeClock, run_id: str) -> None:
    [approval] = gatehouse.run(run_id).approvals
    clock.advance(THREE_DAYS)
    gatehouse.approve(approval.id, user="alice", reason="fine")
    resumed = gatehouse.resume(run_id)
    assert resumed is not None and resumed.status == "succeeded", resumed


def _one(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def test_a_run_that_waits_three_days_for_approval_is_one_trace_of_two_linked_slices(
    traced: Any,
    otlp: FakeOTLP,
    gatehouse_llm: Gatehouse,
    clock: FakeClock,
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(
        reply_json({"kind": "refund", "confidence": 0.93}, prompt_tokens=41, completion_tokens=9)
    )
    run = gatehouse_llm.trigger("otel_refund", INPUT, user="carol")
    assert run.status == "waiting"
    _approve_after_three_days(gatehouse_llm, clock, run.id)
    traced.force_flush()
    spans = otlp.spans()
    trace_id = f"{tracing.run_trace_id(run.id):032x}"
    assert {s.trace_id for s in spans} == {trace_id}

    first, second = otlp.named("run otel_refund")
    assert (first.parent_span_id, second.parent_span_id) == ("", "")
    assert first.span_id == f"{tracing.slice_span_id(run.id, 1):016x}"
    assert second.links == [(trace_id, first.span_id, {"gatehouse.link": "previous slice"})]
    assert first.links == []
    assert first.event("run.waiting")["gatehouse.waiting_for"].startswith("apr")
    assert first.attributes["gatehouse.run.status"] == "waiting"
    assert second.event("run.resumed")["gatehouse.waited_seconds"] >= THREE_DAYS.total_seconds()
    assert second.attributes["gatehouse.run.status"] == "succeeded"
    assert (first.attributes["gatehouse.slice"], second.attributes["gatehouse.slice"]) == (1, 2)
    for piece in (first, second):  # real time, not the wait: no span lasts three days
        assert piece.end_ns - piece.start_ns < 60 * 10**9
    assert first.resource["service.name"] == "gatehouse-test"
    assert first.resource["deployment.environment"] == "test"

    # One span per ctx call, under the slice that ran it; settled calls read back make none.
    step = _one(spans, "step normalize")
    llm = _one(spans, "llm classify")
    lookup = _one(spans, "tool otel_lookup_order")
    asked, paid = otlp.named("tool otel_issue_refund")
    assert {
        step.parent_span_id,
        llm.parent_span_id,
        lookup.parent_span_id,
        asked.parent_span_id,
    } == {first.span_id}
    assert paid.parent_span_id == second.span_id
    assert step.attributes["gatehouse.call.kind"] == "step"

    chat = _one(spans, "chat gpt-4o-mini")
    assert chat.parent_span_id == llm.span_id
    assert chat.kind == 3  # SPAN_KIND_CLIENT
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert chat.attributes["gen_ai.response.model"] == "gpt-4o-mini"
    assert chat.attributes["gen_ai.usage.input_tokens"] == 41
    assert chat.attributes["gen_ai.usage.output_tokens"] == 9
    assert chat.attributes["gatehouse.llm.confidence"] == 0.93

    assert asked.attributes["gatehouse.tool.kind"] == "spend"
    assert asked.attributes["gatehouse.tool.gate"] == "always"
    assert asked.event("call.suspended")["gatehouse.reason"].startswith("waiting for approval")
    assert paid.attributes["gatehouse.approval.outcome"] == "approved"
    assert paid.attributes["gatehouse.approval.approver"] == "alice"
    assert paid.attributes["gatehouse.rate_limit"] == "20/hour"
    assert paid.attributes["gatehouse.rate_limit.used"] == 1
    assert paid.attributes["gatehouse.idempotency_key"] == f"{run.id}:otel_issue_refund#1"
    assert lookup.attributes["gatehouse.tool.kind"] == "read"
    assert lookup.attributes["gatehouse.tool.gate"] == "never"

    # The tool's own instrumented httpx call joined the run's trace, under the tool's span.
    [(path, headers)] = [(p, h) for p, h in otlp.other_requests if p.startswith("/orders/")]
    traceparent = {k.lower(): v for k, v in headers.items()}["traceparent"]
    _version, sent_trace, sent_parent, _flags = traceparent.split("-")
    assert sent_trace == trace_id
    http_span = next(s for s in spans if s.span_id == sent_parent)
    assert http_span.parent_span_id == lookup.span_id

    # Content capture was on: the prompt went out, the sensitive card number never did.
    assert "A-17" in chat.attributes["gen_ai.input.messages"]
    assert "refund" in chat.attributes["gen_ai.output.messages"]
    assert op.CARD.encode() not in otlp.all_bytes()

    # A replay of the run exports nothing.
    before = len(spans)
    gatehouse_llm.replay(run.id)
    traced.force_flush()
    assert len(otlp.spans()) == before


def test_a_sensitive_value_in_a_prompt_is_scrubbed_from_the_captured_content(
    traced: Any, otlp: FakeOTLP, gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(reply_json({"kind": "refund", "confidence": 0.9}))
    run = gatehouse_llm.trigger("otel_quote_card", {**INPUT}, user="carol")
    assert run.status == "waiting"
    traced.force_flush()
    chat = _one(otlp.spans(), "chat gpt-4o-mini")
    assert "[redacted]" in chat.attributes["gen_ai.input.messages"]
    assert op.CARD in json.dumps(fake_openai.requests[0])  # the pipeline did send it to the model
    assert op.CARD.encode() not in otlp.all_bytes()


def test_without_content_capture_no_prompt_or_answer_is_exported(
    otlp: FakeOTLP, gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    provider = tracing.build_tracer_provider(_env(otlp))
    assert provider is not None
    tracing.install(provider)  # capture_content defaults to False
    op.http_client, op.CALLBACK_URL = httpx.Client(), otlp.url
    try:
        fake_openai.script(reply_json({"kind": "refund", "confidence": 0.9}))
        gatehouse_llm.trigger("otel_refund", INPUT, user="carol")
        provider.force_flush()
        chat = _one(otlp.spans(), "chat gpt-4o-mini")
    finally:
        tracing.install(None)
        provider.shutdown()
        op.http_client = None
    assert "gen_ai.input.messages" not in chat.attributes
    assert "gen_ai.output.messages" not in chat.attributes
    assert b"customer asks for their money back" not in otlp.all_bytes()


def test_a_webhook_deliverys_traceparent_parents_every_slice_of_its_run(
    traced: Any,
    otlp: FakeOTLP,
    gatehouse_llm: Gatehouse,
    clock: FakeClock,
    fake_openai: FakeOpenAI,
) -> None:
    secret = "otel-hook-secret"
    settings = Settings(database_url="sqlite://", webhook_secrets={"otel_refund": secret})
    server = BackgroundServer(Starlette(routes=webhook_routes(gatehouse_llm, settings))).start()
    try:
        body = json.dumps(INPUT).encode()
        headers = {
            **sign_delivery(secret, body, int(clock.now().timestamp())),
            "Content-Type": "application/json",
            "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
        }
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        conn.request("POST", "/hooks/otel_refund", body=body, headers=headers)
        reply = conn.getresponse()
        answer = json.loads(reply.read())
        conn.close()
    finally:
        server.stop()
    assert reply.status == 202, answer
    run_id = answer["run_id"]
    events = gatehouse_llm.run(run_id)
    assert events.status == "queued"

    fake_openai.script(reply_json({"kind": "refund", "confidence": 0.9}))
    waiting = gatehouse_llm.resume(run_id)  # a worker's claim: this run was queued, not run here
    assert waiting is not None and waiting.status == "waiting"
    _approve_after_three_days(gatehouse_llm, clock, run_id)
    traced.force_flush()
    first, second = otlp.named("run otel_refund")
    assert {first.trace_id, second.trace_id} == {CALLER_TRACE}
    assert first.parent_span_id == second.parent_span_id == CALLER_SPAN
    assert second.links[0][:2] == (CALLER_TRACE, first.span_id)


def test_log_lines_carry_the_trace_and_span_of_the_slice_they_were_written_in(
    traced: Any, otlp: FakeOTLP, gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    fake_openai.script(reply_json({"kind": "refund", "confidence": 0.9}))
    run = gatehouse_llm.trigger("otel_refund", INPUT, user="carol")
    traced.force_flush()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    [waiting] = [line for line in lines if line["event"] == "run.waiting"]
    [first] = otlp.named("run otel_refund")
    assert waiting["trace_id"] == f"{tracing.run_trace_id(run.id):032x}"
    assert waiting["span_id"] == first.span_id
    [called] = [line for line in lines if line["event"] == "llm.called"]
    assert (
        called["span_id"] == _one(otlp.spans(), "chat gpt-4o-mini").span_id
        or called["span_id"] == _one(otlp.spans(), "llm classify").span_id
    )


def test_nothing_is_configured_or_sent_without_an_otlp_endpoint(
    otlp: FakeOTLP, gatehouse_llm: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    assert tracing.build_tracer_provider({}) is None
    assert tracing.build_tracer_provider({"OTEL_SERVICE_NAME": "x"}) is None
    assert tracing.build_tracer_provider({**_env(otlp), "OTEL_TRACES_EXPORTER": "none"}) is None
    assert tracing.build_tracer_provider({**_env(otlp), "OTEL_SDK_DISABLED": "true"}) is None
    assert tracing.install_from_environment({"OTEL_SERVICE_NAME": "x"}) is False
    assert tracing.installed() is None
    op.http_client, op.CALLBACK_URL = httpx.Client(), otlp.url
    try:
        fake_openai.script(reply_json({"kind": "refund", "confidence": 0.9}))
        assert gatehouse_llm.trigger("otel_refund", INPUT, user="carol").status == "waiting"
    finally:
        op.http_client = None
    assert otlp.requests == []
    [(_path, headers)] = otlp.other_requests
    assert "traceparent" not in {k.lower() for k in headers}


def test_an_exporter_gatehouse_cannot_use_is_refused_with_what_to_set(otlp: FakeOTLP) -> None:
    with pytest.raises(tracing.TracingConfigError, match="OTLP over HTTP only"):
        tracing.build_tracer_provider({**_env(otlp), "OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(tracing.TracingConfigError, match="http/protobuf"):
        tracing.build_tracer_provider({**_env(otlp), "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def test_the_engine_starts_without_importing_opentelemetry_when_otel_is_unset() -> None:
    code = (
        "import os, sys\n"
        "for k in [k for k in os.environ if k.startswith('OTEL_')]: del os.environ[k]\n"
        "from pipelines import Gatehouse\n"
        "Gatehouse('sqlite://')\n"
        "print(any(m.startswith('opentelemetry') for m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False", out.stderr


def test_a_sampler_from_the_environment_is_honoured(otlp: FakeOTLP, gatehouse: Gatehouse) -> None:
    provider = tracing.build_tracer_provider({**_env(otlp), "OTEL_TRACES_SAMPLER": "always_off"})
    assert provider is not None
    tracing.install(provider)
    try:
        run = gatehouse.trigger("otel_steps_only", {"order": "x"})
        assert run.status == "succeeded"
        provider.force_flush()
    finally:
        tracing.install(None)
        provider.shutdown()
    assert otlp.requests == []


def test_a_human_task_is_a_span_of_the_slice_that_asked_and_the_answer_resumes_a_linked_slice(
    traced: Any, otlp: FakeOTLP, gatehouse: Gatehouse, clock: FakeClock
) -> None:
    run = gatehouse.trigger("otel_confirm", {"order": "B-2"})
    assert run.status == "waiting"
    [task] = [p for p in gatehouse.pending() if p.run_id == run.id]
    clock.advance(timedelta(hours=5))
    gatehouse.answer(task.id, user="olga", answer={"ok": True})
    assert gatehouse.resume(run.id) is not None
    traced.force_flush()
    first, second = otlp.named("run otel_confirm")
    asked, answered = otlp.named("human confirm")  # the ask, then the answer taken up
    assert (asked.parent_span_id, answered.parent_span_id) == (first.span_id, second.span_id)
    assert asked.event("call.suspended")["gatehouse.waiting_for"] == task.id
    assert [name for name, _ in answered.events] == []
    assert second.links[0][1] == first.span_id
    assert second.event("run.resumed")["gatehouse.waited_seconds"] >= 5 * 3600
    assert second.attributes["gatehouse.run.status"] == "succeeded"


def test_a_process_configured_by_otel_env_sends_its_runs_traces_before_it_exits(
    otlp: FakeOTLP, tmp_path: Any
) -> None:
    code = (
        "import tests.otel_pipelines\n"
        "from pipelines import Gatehouse\n"
        f"g = Gatehouse('sqlite:///{tmp_path}/g.db')\n"
        "g.db.upgrade()\n"
        "print(g.trigger('otel_steps_only', {'order': 'z'}).id)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    env.update(_env(otlp, OTEL_BSP_SCHEDULE_DELAY="60000"))  # only the exit's flush sends it
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip().splitlines()[-1]
    [piece] = otlp.named("run otel_steps_only")
    assert piece.trace_id == f"{tracing.run_trace_id(run_id):032x}"
    assert piece.resource["service.name"] == "gatehouse-test"
    assert [s.name for s in otlp.spans()] == ["run otel_steps_only", "step normalize"]
