"""/metrics' histograms and counters (prometheus-client) over real HTTP: they move after runs,
model calls, tool calls and approvals; labels stay bounded; OpenMetrics is negotiated; a
worker's observations reach the scrape through PROMETHEUS_MULTIPROC_DIR; and every metric the
Grafana dashboard queries is exposed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from bot.http.metrics import metrics_routes
from bot.http.observed import MULTIPROC_ENV, install_observer
from bot.http.server import BackgroundServer
from pipelines import Gatehouse, LLMConfig, StaticDirectory, observations
from pipelines.config import ConfigurationError
from storage.db import Database
from tests import llm_pipelines as lp
from tests.conftest import GROUPS
from tests.fakes.clock import FakeClock
from tests.fakes.openai import FakeOpenAI, reply_json
from tests.test_metrics import LARGE

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "gatehouse.json"
Labels = frozenset[tuple[str, str]]


@pytest.fixture(autouse=True)
def observer(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    previous = observations.install(install_observer())
    yield
    observations.install(previous)


@pytest.fixture
def engine(db: Database, clock: FakeClock) -> Gatehouse:
    return Gatehouse(db, clock=clock, directory=StaticDirectory(GROUPS))


def serve(engine: Gatehouse) -> BackgroundServer:
    return BackgroundServer(Starlette(routes=metrics_routes(engine))).start()


def scrape(engine: Gatehouse, accept: str | None = None) -> tuple[str, str]:
    running = serve(engine)
    try:
        headers = {"Accept": accept} if accept else {}
        request = urllib.request.Request(f"{running.url}/metrics", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.headers["Content-Type"], response.read().decode()
    finally:
        running.stop()


def values(text: str) -> dict[tuple[str, Labels], float]:
    """Every sample, parsed by prometheus-client's own parser."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(found: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_a_run_its_tools_and_its_approval_move_the_histograms(
    engine: Gatehouse, clock: FakeClock
) -> None:
    before = values(scrape(engine)[1])
    waiting = engine.trigger("refund_request", LARGE, user="carol")
    clock.advance(timedelta(minutes=10))
    [approval] = engine.run(waiting.id).approvals
    engine.approve(approval.id, user="bob")
    engine.resume(waiting.id)
    assert engine.run(waiting.id).status == "succeeded"

    after = values(scrape(engine)[1])

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    run = {"pipeline": "refund_request", "status": "succeeded"}
    assert moved("gatehouse_run_duration_seconds_count", **run) == 1
    assert moved("gatehouse_run_duration_seconds_sum", **run) == pytest.approx(600)
    assert moved("gatehouse_run_duration_seconds_bucket", **run, le="300.0") == 0
    assert moved("gatehouse_run_duration_seconds_bucket", **run, le="900.0") == 1
    assert moved("gatehouse_runs_finished_total", **run) == 1
    decision = {"pipeline": "refund_request", "decision": "approved"}
    assert moved("gatehouse_approval_decision_seconds_count", **decision) == 1
    assert moved("gatehouse_approval_decision_seconds_sum", **decision) == pytest.approx(600)
    assert moved("gatehouse_tool_calls_total", tool="issue_refund", outcome="succeeded") == 1
    # the read ran once: the replay after the approval took its recorded result
    assert moved("gatehouse_tool_calls_total", tool="find_order", outcome="succeeded") == 1
    refused = engine.trigger("refund_request", {"order_id": "ord_1"}, user="carol")
    assert refused.status == "invalid_input"
    last = values(scrape(engine)[1])
    invalid = {"pipeline": "refund_request", "status": "invalid_input"}
    assert sample(last, "gatehouse_runs_finished_total", **invalid) == (
        sample(after, "gatehouse_runs_finished_total", **invalid) + 1
    )
    # the database's gauges are still there beside them, names unchanged
    assert sample(after, "gatehouse_runs_24h", pipeline="refund_request") == 1


def test_model_calls_are_timed_and_costed_by_the_price_tables_model_else_other(
    db: Database, clock: FakeClock, fake_openai: FakeOpenAI
) -> None:
    lp.reset()

    def engine_for(model: str) -> Gatehouse:
        llm = LLMConfig(model=model, base_url=fake_openai.base_url, api_key="sk-test")
        return Gatehouse(db, clock=clock, directory=StaticDirectory(GROUPS), llm=llm)

    priced, unpriced = engine_for("gpt-4o-mini-2024-07-18"), engine_for("acme-large-v9")
    before = values(scrape(priced)[1])
    reply = {"kind": "refund", "confidence": 0.93}
    ticket = {"text": "Order 42 arrived broken.", "system": "You triage support tickets."}
    fake_openai.script(reply_json(reply, prompt_tokens=1000, completion_tokens=1000))
    assert priced.trigger("l_classify", ticket).status == "succeeded"
    fake_openai.script(reply_json(reply))
    assert unpriced.trigger("l_classify", ticket).status == "succeeded"

    after = values(scrape(priced)[1])

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("gatehouse_llm_call_duration_seconds_count", model="gpt-4o-mini") == 1
    assert moved("gatehouse_llm_call_duration_seconds_count", model="other") == 1
    assert moved("gatehouse_llm_calls_total", model="gpt-4o-mini", outcome="answered") == 1
    cost = moved("gatehouse_llm_cost_usd_total", pipeline="l_classify", model="gpt-4o-mini")
    assert cost == pytest.approx((1000 * 0.15 + 1000 * 0.60) / 1_000_000)
    # no price, no cost: the unpriced model adds nothing rather than a made-up zero-cost line
    assert moved("gatehouse_llm_cost_usd_total", pipeline="l_classify", model="other") == 0
    models = {
        dict(labels).get("model")
        for name, labels in after
        if name.startswith("gatehouse_llm_") and dict(labels).get("model")
    }
    assert "acme-large-v9" not in models and "gpt-4o-mini-2024-07-18" not in models


def test_labels_are_bounded_by_the_codes_registries() -> None:
    assert observations.pipeline_label("refund_request") == "refund_request"
    assert observations.pipeline_label('free "text"\n') == "other"
    assert observations.tool_label("issue_refund") == "issue_refund"
    assert observations.tool_label("rm -rf") == "other"
    prices = {"gpt-4o": 1, "gpt-4o-mini": 2}
    assert observations.model_label(prices, "gpt-4o-mini-2024-07-18") == "gpt-4o-mini"
    assert observations.model_label(prices, "llama") == "other"
    assert observations.model_label(prices, None) == "other"


def test_openmetrics_is_served_when_asked_for(engine: Gatehouse) -> None:
    engine.trigger("refund_request", {**LARGE, "order_id": "ord_1004"}, user="carol")

    plain_type, _ = scrape(engine)
    content_type, text = scrape(engine, "application/openmetrics-text; version=1.0.0")

    assert plain_type == "text/plain; version=0.0.4; charset=utf-8"
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics_families(text)}
    assert families["gatehouse_runs_finished"].type == "counter"
    assert families["gatehouse_run_duration_seconds"].type == "histogram"
    assert families["gatehouse_runs_24h"].type == "gauge"


def test_a_workers_observations_reach_the_scrape_through_the_multiprocess_dir(
    engine: Gatehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = (
        "from bot.http.observed import install_observer\n"
        "install_observer().run_finished('refund_request', 'failed', 42.0)\n"
    )
    shared = tmp_path / "prometheus"  # its own directory: the collector reads every *.db in it
    shared.mkdir()
    env = {**os.environ, MULTIPROC_ENV: str(shared)}
    for _ in range(2):  # two worker processes, each with its own file
        subprocess.run([sys.executable, "-c", worker], env=env, check=True, cwd=ROOT)

    monkeypatch.setenv(MULTIPROC_ENV, str(shared))
    found = values(scrape(engine)[1])

    run = {"pipeline": "refund_request", "status": "failed"}
    assert found[("gatehouse_run_duration_seconds_count", frozenset(run.items()))] == 2
    assert found[("gatehouse_run_duration_seconds_sum", frozenset(run.items()))] == 84
    assert found[("gatehouse_runs_finished_total", frozenset(run.items()))] == 2


def test_a_multiprocess_dir_that_is_not_there_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match=r"PROMETHEUS_MULTIPROC_DIR=.*missing.*create it"):
        install_observer()


def test_every_metric_the_dashboard_queries_is_exposed(engine: Gatehouse) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) >= 8
    referenced = {m for expr in exprs for m in re.findall(r"\bgatehouse_[a-z0-9_]+", expr)}
    families = text_string_to_metric_families(scrape(engine)[1])
    exposed = set()
    for family in families:
        exposed.add(family.name)
        exposed.update(s.name for s in family.samples)
        if family.type == "histogram":
            exposed.update(f"{family.name}_{part}" for part in ("bucket", "count", "sum"))
        if family.type == "counter":
            exposed.add(f"{family.name}_total")
    missing = referenced - exposed
    assert not missing, f"the dashboard queries metrics /metrics does not expose: {missing}"
    for needed in (
        "gatehouse_runs_finished_total",
        "gatehouse_run_duration_seconds_bucket",
        "gatehouse_llm_call_duration_seconds_bucket",
        "gatehouse_approval_decision_seconds_bucket",
        "gatehouse_slack_ack_seconds_bucket",
        "gatehouse_outbox_delivery_lag_seconds_bucket",
        "gatehouse_llm_cost_usd_total",
    ):
        assert needed in referenced, needed
