"""What this process observes, as Prometheus histograms and counters (prometheus-client).

`PrometheusObserver` is the engine's metrics port (`pipelines.observations`) on a
prometheus-client registry; `gatehouse serve` and `gatehouse worker` install it at start
(`install_observer`). Each process counts what it sees: the runs it finished, the model and tool
calls it made, the approvals it recorded, the outbox rows it delivered, and (serve only) how long
Slack waited for its ack.

Workers are processes of their own. With PROMETHEUS_MULTIPROC_DIR set (the same empty
directory for `serve` and the workers of one host, before they start) prometheus-client keeps
every process's values in files there and `/metrics` sums them (`MultiProcessCollector`);
without it `/metrics` shows the serving process's own observations only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from pipelines import observations
from pipelines.config import ConfigurationError

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Seconds. A run may wait days for a person, so its buckets reach a week.
RUN_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400, 3 * 86400, 604800)
LLM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
DECISION_BUCKETS = (5, 15, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600, 86400, 3 * 86400, 604800)
ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5)
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class PrometheusObserver:
    """The engine's observations on `registry`, with the labels the engine already bounded."""

    active = True

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.run_duration = Histogram(
            "gatehouse_run_duration_seconds",
            "Time from a run's creation to its finish, by pipeline and final status.",
            ["pipeline", "status"],
            buckets=RUN_BUCKETS,
            registry=registry,
        )
        self.runs = Counter(
            "gatehouse_runs_finished",
            "Runs this process finished, by pipeline and final status.",
            ["pipeline", "status"],
            registry=registry,
        )
        self.llm_duration = Histogram(
            "gatehouse_llm_call_duration_seconds",
            "Time of one ctx.llm call (every attempt), by model (the price table's name, else "
            '"other").',
            ["model"],
            buckets=LLM_BUCKETS,
            registry=registry,
        )
        self.llm_calls = Counter(
            "gatehouse_llm_calls",
            'Model calls by model and outcome ("answered" or the failure: invalid, refused, ...).',
            ["model", "outcome"],
            registry=registry,
        )
        self.cost = Counter(
            "gatehouse_llm_cost_usd",
            "Model spend in US dollars, by pipeline and model (priced calls only).",
            ["pipeline", "model"],
            registry=registry,
        )
        self.tool_calls = Counter(
            "gatehouse_tool_calls",
            "Tool calls that ran, by tool and outcome (succeeded or failed).",
            ["tool", "outcome"],
            registry=registry,
        )
        self.decision = Histogram(
            "gatehouse_approval_decision_seconds",
            "Time from an approval's request to its decision, by pipeline and decision.",
            ["pipeline", "decision"],
            buckets=DECISION_BUCKETS,
            registry=registry,
        )
        self.ack = Histogram(
            "gatehouse_slack_ack_seconds",
            "Time from a Slack request reaching the bot to its ack, by mode (http or socket).",
            ["mode"],
            buckets=ACK_BUCKETS,
            registry=registry,
        )
        self.outbox_lag = Histogram(
            "gatehouse_outbox_delivery_lag_seconds",
            "Time from an outbox row being owed to its delivery to Slack.",
            buckets=LAG_BUCKETS,
            registry=registry,
        )

    def run_finished(self, pipeline: str, status: str, seconds: float) -> None:
        self.run_duration.labels(pipeline, status).observe(seconds)
        self.runs.labels(pipeline, status).inc()

    def model_called(
        self, pipeline: str, model: str, outcome: str, seconds: float, cost_usd: float | None
    ) -> None:
        self.llm_duration.labels(model).observe(seconds)
        self.llm_calls.labels(model, outcome).inc()
        if cost_usd:
            self.cost.labels(pipeline, model).inc(cost_usd)

    def tool_called(self, tool: str, outcome: str) -> None:
        self.tool_calls.labels(tool, outcome).inc()

    def approval_decided(self, pipeline: str, decision: str, seconds: float) -> None:
        self.decision.labels(pipeline, decision).observe(seconds)

    def outbox_delivered(self, lag_seconds: float) -> None:
        self.outbox_lag.observe(lag_seconds)

    def slack_acked(self, mode: str, seconds: float) -> None:
        self.ack.labels(mode).observe(seconds)


_process: PrometheusObserver | None = None


def install_observer() -> PrometheusObserver:
    """This process's observer, made and installed in the engine once."""
    global _process
    path = multiproc_dir()
    if path is not None and not os.path.isdir(path):
        raise ConfigurationError(
            f"{MULTIPROC_ENV}={path} is not a directory: create it (empty, shared by serve and "
            "the workers of this host) before they start, or unset it"
        )
    if _process is None:
        _process = PrometheusObserver(CollectorRegistry(auto_describe=True))
    observations.install(_process)
    return _process


def multiproc_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class ProcessCollector:
    """What the processes observed: every process's files with PROMETHEUS_MULTIPROC_DIR set,
    else this process's observer (nothing when none is installed)."""

    def collect(self) -> Iterator[Metric]:
        path = multiproc_dir()
        if path is not None:
            collector = MultiProcessCollector(None, path=path)  # type: ignore[no-untyped-call]
            yield from collector.collect()  # type: ignore[no-untyped-call]
        elif _process is not None:
            yield from _process.registry.collect()


def time_ack(mode: str, began: float) -> None:
    """Record an ack that took from `began` (a `time.perf_counter()` reading) until now."""
    if _process is not None:
        _process.slack_acked(mode, time.perf_counter() - began)
