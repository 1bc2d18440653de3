"""Prometheus `/metrics` over real HTTP (uvicorn on a thread): the figures of the last 24 h per
pipeline, and every line valid in the text exposition format."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import insert
from starlette.applications import Starlette

from bot.http.metrics import metrics_routes
from bot.http.server import BackgroundServer
from pipelines import Gatehouse, StaticDirectory
from storage.db import Database
from storage.runs import runs_table
from tests.conftest import GROUPS
from tests.fakes.clock import FakeClock

LARGE = {"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}
ODD_NAME = 'we"ird\\name\nx'

# The text exposition format (version 0.0.4): a metric name, optional labels with quoted and
# escaped values, a float (or NaN/Inf), an optional timestamp.
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
VALUE = r"(?:[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|[+-]?Inf|NaN)"
SAMPLE = re.compile(rf"^({NAME})(?:\{{(?:{LABEL})(?:,{LABEL})*,?\}})? {VALUE}(?: -?\d+)?$")
HELP = re.compile(rf"^# HELP ({NAME}) (?:[^\\\n]|\\\\|\\n)*$")
TYPE = re.compile(rf"^# TYPE ({NAME}) (?:counter|gauge|histogram|summary|untyped)$")


@pytest.fixture
def engine(sqlite_url: str, clock: FakeClock) -> Iterator[Gatehouse]:
    database = Database(sqlite_url)
    yield Gatehouse(database, clock=clock, directory=StaticDirectory(GROUPS))
    database.dispose()


@pytest.fixture
def server(engine: Gatehouse) -> Iterator[BackgroundServer]:
    running = BackgroundServer(Starlette(routes=metrics_routes(engine))).start()
    yield running
    running.stop()


def scrape(server: BackgroundServer, token: str | None = None) -> tuple[str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(f"{server.url}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Content-Type"], response.read().decode()


def samples(text: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            found[key] = float(value)
    return found


SAMPLE_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def assert_valid_exposition(text: str) -> None:
    assert text.endswith("\n")
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP"):
            assert HELP.match(line), line
        elif line.startswith("# TYPE"):
            match = TYPE.match(line)
            assert match, line
            typed.add(match.group(1))
        else:
            match = SAMPLE.match(line)
            assert match, line
            name = match.group(1)
            # A histogram's or counter's samples carry their suffix after the TYPE line's name.
            family = next(
                (name.removesuffix(s) for s in SAMPLE_SUFFIXES if name.removesuffix(s) in typed),
                name,
            )
            assert family in typed, f"{line}: no TYPE line before it"


def test_metrics_serve_the_last_24_hours_per_pipeline_and_pending_work(
    engine: Gatehouse, server: BackgroundServer, clock: FakeClock
) -> None:
    engine.trigger("refund_request", {**LARGE, "order_id": "ord_1004"}, user="carol")
    waiting = engine.trigger("refund_request", LARGE, user="carol")
    clock.advance(timedelta(minutes=10))
    [approval] = engine.run(waiting.id).approvals
    engine.reject(approval.id, user="bob", reason="duplicate")
    engine.resume(waiting.id)

    content_type, text = scrape(server)

    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert_valid_exposition(text)
    found = samples(text)
    assert found['gatehouse_runs_24h{pipeline="refund_request"}'] == 2
    assert found['gatehouse_finished_24h{pipeline="refund_request"}'] == 1
    assert found['gatehouse_errors_24h{pipeline="refund_request"}'] == 0
    assert found['gatehouse_error_rate_24h{pipeline="refund_request"}'] == 0
    assert found['gatehouse_latency_p95_seconds_24h{pipeline="refund_request"}'] == 600
    assert found['gatehouse_pending_approvals{pipeline="refund_request"}'] == 1
    assert "# TYPE gatehouse_cost_per_run_usd_24h gauge" in text
    # approvals requested in the window: one rejected after 10 minutes, one still pending
    assert found['gatehouse_approvals_rejected_24h{pipeline="refund_request"}'] == 1
    assert found['gatehouse_approvals_approved_24h{pipeline="refund_request"}'] == 0
    assert found['gatehouse_approval_decision_median_seconds_24h{pipeline="refund_request"}'] == 600
    assert found['gatehouse_human_task_rate_24h{pipeline="refund_request"}'] == 0
    # every pipeline together: percentiles of all their runs, not a sum of percentiles
    assert found["gatehouse_overall_latency_p95_seconds_24h"] == 600
    assert found["gatehouse_overall_approval_decision_median_seconds_24h"] == 600


def test_label_values_are_escaped_and_missing_figures_left_out(
    engine: Gatehouse, server: BackgroundServer
) -> None:
    now = engine.rt.clock.now()
    with engine.db.transaction() as conn:
        conn.execute(
            insert(runs_table),
            {
                "id": "run_odd",
                "pipeline": ODD_NAME,
                "status": "running",
                "input": {},
                "created_at": now,
                "updated_at": now,
            },
        )

    _, text = scrape(server)

    assert_valid_exposition(text)
    # escaped by prometheus-client: backslash, quote and newline
    label = '{pipeline="we\\"ird\\\\name\\nx"}'
    assert f"gatehouse_runs_24h{label} 1" in text
    # nothing finished: no error rate and no percentiles rather than a misleading 0
    assert f"gatehouse_error_rate_24h{label}" not in text
    assert f"gatehouse_latency_p50_seconds_24h{label}" not in text


def test_with_a_token_set_a_scrape_without_it_gets_401(engine: Gatehouse) -> None:
    routes = metrics_routes(engine, token=SecretStr("s3cret-scrape-token"))
    running = BackgroundServer(Starlette(routes=routes)).start()
    try:
        for wrong in (None, "nope", "s3cret-scrape-token-and-more"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                scrape(running, wrong)
            assert refused.value.code == 401
            assert refused.value.headers["WWW-Authenticate"].startswith("Bearer")
            assert "gatehouse_" not in refused.value.read().decode()
        content_type, text = scrape(running, "s3cret-scrape-token")
    finally:
        running.stop()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert_valid_exposition(text)
