"""The engine's metrics port: what a process saw (a run finished, a model answered, a tool ran,
an approval was decided, an outbox row was delivered), told to whoever listens.

`pipelines` never imports a metrics library. The engine calls `observer()` at a handful of
points; by default nobody listens (`NullObserver`, one attribute read per call site, as
`active` is False), and `gatehouse serve` / `gatehouse worker` install the Prometheus one
(`bot.http.observed`). Labels are bounded here, before they leave the engine: a pipeline or a
tool the code's registry does not know, or a model the price table does not name, is "other",
so a label set never grows with free text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from pipelines.pipeline import registered_pipelines
from pipelines.tools import lookup_tool

OTHER = "other"


class Observer(Protocol):
    """Every figure a process observes; label values are already bounded."""

    active: bool

    def run_finished(self, pipeline: str, status: str, seconds: float) -> None: ...

    def model_called(
        self, pipeline: str, model: str, outcome: str, seconds: float, cost_usd: float | None
    ) -> None: ...

    def tool_called(self, tool: str, outcome: str) -> None: ...

    def approval_decided(self, pipeline: str, decision: str, seconds: float) -> None: ...

    def outbox_delivered(self, lag_seconds: float) -> None: ...


class NullObserver:
    """Nobody listens: every call is a no-op (and call sites skip the label work)."""

    active = False

    def run_finished(self, pipeline: str, status: str, seconds: float) -> None:
        return None

    def model_called(
        self, pipeline: str, model: str, outcome: str, seconds: float, cost_usd: float | None
    ) -> None:
        return None

    def tool_called(self, tool: str, outcome: str) -> None:
        return None

    def approval_decided(self, pipeline: str, decision: str, seconds: float) -> None:
        return None

    def outbox_delivered(self, lag_seconds: float) -> None:
        return None


_observer: Observer = NullObserver()


def observer() -> Observer:
    """This process's observer (a `NullObserver` until one is installed)."""
    return _observer


def install(new: Observer | None) -> Observer:
    """Make `new` this process's observer (None: nobody listens); returns the previous one."""
    global _observer
    previous = _observer
    _observer = new if new is not None else NullObserver()
    return previous


def pipeline_label(name: str) -> str:
    """The pipeline's name if the code registers it, else "other"."""
    return name if name in registered_pipelines() else OTHER


def tool_label(name: str) -> str:
    """The tool's name if the code declares it, else "other"."""
    return name if lookup_tool(name) is not None else OTHER


def model_label(prices: Mapping[str, object], model: str | None) -> str:
    """The price table's name for `model` (exact, else the longest known prefix, as
    `pipelines.llm.price_for` prices it), else "other"."""
    if not model:
        return OTHER
    if model in prices:
        return model
    matches = [name for name in prices if model.startswith(name)]
    return max(matches, key=len) if matches else OTHER
