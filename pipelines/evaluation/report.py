"""An eval's results: one `CaseResult` per case, the `EvalReport` over them (rates, cost, latency,
a confusion matrix per enum output field, the failing cases with their diffs), and the report as
JSON and as JUnit XML for CI.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal
from xml.etree import ElementTree

from pydantic import BaseModel

CaseStatus = Literal["passed", "failed", "error", "human"]


@dataclass
class CaseResult:
    position: int  # the case's line in the test set
    status: CaseStatus
    input: Any
    expected: Any = None
    output: Any = None
    finished: bool = False  # the pipeline returned (not stopped at a would-call or a human)
    would_calls: list[dict[str, Any]] = field(default_factory=list)
    diff: dict[str, dict[str, Any]] = field(default_factory=dict)
    call_problems: list[str] = field(default_factory=list)
    stopped: str | None = None  # why the case ended before the pipeline returned
    error: str | None = None
    note: str = ""
    cost_usd: float | None = None
    latency_ms: float = 0.0
    llm_ms: float = 0.0
    calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def why(self) -> str:
        """One line: why the case did not pass."""
        if self.status == "human":
            return f"needs a human: {self.stopped}"
        if self.status == "error":
            return f"error: {self.error}"
        parts = [
            f"{name}: expected {d['expected']!r}, got {d['actual']!r}"
            for name, d in self.diff.items()
        ]
        parts += self.call_problems
        return "; ".join(parts) or "passed"

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "status": self.status,
            "note": self.note,
            "input": self.input,
            "expected": self.expected,
            "output": self.output,
            "finished": self.finished,
            "would_calls": self.would_calls,
            "diff": self.diff,
            "call_problems": self.call_problems,
            "stopped": self.stopped,
            "error": self.error,
            "cost_usd": self.cost_usd,
            "latency_ms": round(self.latency_ms, 3),
        }

    def row(self) -> dict[str, Any]:
        """The `eval_cases` columns."""
        return {
            "position": self.position,
            "status": self.status,
            "input": self.input,
            "expected": self.expected,
            "output": self.output,
            "would_calls": self.would_calls,
            "diff": {"fields": self.diff, "calls": self.call_problems}
            if self.status == "failed"
            else None,
            "error": self.error or self.stopped,
            "note": self.note or None,
            "cost_usd": self.cost_usd,
            "latency_ms": round(self.latency_ms, 3),
        }


def _percentile(values: Sequence[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def enum_fields(output_type: Any) -> dict[str, list[Any]]:
    """The output model's fields that take one of a fixed set of values (Literal, Enum, either
    optional), with those values: the fields a confusion matrix is drawn for."""
    if not (isinstance(output_type, type) and issubclass(output_type, BaseModel)):
        return {}
    found: dict[str, list[Any]] = {}
    for name, info in output_type.model_fields.items():
        choices = _choices(info.annotation)
        if choices:
            found[name] = choices
    return found


def _choices(annotation: Any) -> list[Any] | None:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return list(typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return [member.value for member in annotation]
    if origin is not None and origin is not list:  # Optional[...] / Union / Annotated
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if origin is typing.Annotated:
            args = args[:1]
        if len(args) == 1:
            return _choices(args[0])
    return None


def confusion(
    results: Sequence[CaseResult], fields: dict[str, list[Any]]
) -> dict[str, dict[str, Any]]:
    """Per enum field: `{"labels": [...], "matrix": {expected: {actual: count}}}` over the cases
    that name the field in `expected` and produced an output."""
    matrices: dict[str, dict[str, Any]] = {}
    for name, labels in fields.items():
        matrix: dict[str, dict[str, int]] = {}
        for result in results:
            if not (result.finished and isinstance(result.expected, dict)):
                continue
            if name not in result.expected or not isinstance(result.output, dict):
                continue
            want, got = str(result.expected[name]), str(result.output.get(name))
            row = matrix.setdefault(want, {})
            row[got] = row.get(got, 0) + 1
        if matrix:
            matrices[name] = {"labels": [str(label) for label in labels], "matrix": matrix}
    return matrices


@dataclass
class EvalReport:
    eval_id: str
    pipeline: str
    dataset: str
    dataset_sha256: str
    model: str | None
    started_at: str
    finished_at: str | None = None
    results: list[CaseResult] = field(default_factory=list)
    min_pass: float | None = None
    skipped: int = 0
    wall_seconds: float = 0.0
    confusion: dict[str, dict[str, Any]] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def total(self) -> int:
        return len(self.results)

    def _rate(self, count: int) -> float | None:
        return count / self.total if self.total else None

    @property
    def pass_rate(self) -> float | None:
        return self._rate(self.count("passed"))

    @property
    def gate_passed(self) -> bool:
        """Whether CI may go on: the pass rate reaches `--min-pass` (an empty set never does)."""
        if self.min_pass is None:
            return True
        rate = self.pass_rate
        return rate is not None and rate + 1e-12 >= self.min_pass

    @property
    def cost_usd(self) -> float | None:
        costs = [r.cost_usd for r in self.results if r.cost_usd is not None]
        return round(sum(costs), 8) if costs else None

    @property
    def failures(self) -> list[CaseResult]:
        return [r for r in self.results if r.status in ("failed", "error")]

    def summary(self) -> dict[str, Any]:
        """Everything but the cases (what the `evals` row keeps as its report)."""
        latencies = [r.latency_ms for r in self.results]
        failed = self.count("failed") + self.count("error")
        cost = self.cost_usd
        return {
            "eval_id": self.eval_id,
            "pipeline": self.pipeline,
            "dataset": self.dataset,
            "dataset_sha256": self.dataset_sha256,
            "model": self.model,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "cases": self.total,
            "skipped": self.skipped,
            "passed": self.count("passed"),
            "failed": self.count("failed"),
            "errors": self.count("error"),
            "human": self.count("human"),
            "pass_rate": self.pass_rate,
            "failure_rate": self._rate(failed),
            "human_rate": self._rate(self.count("human")),
            "min_pass": self.min_pass,
            "gate": None if self.min_pass is None else ("passed" if self.gate_passed else "failed"),
            "cost_usd": cost,
            "cost_per_case_usd": round(cost / self.total, 8)
            if cost is not None and self.total
            else None,
            "latency_ms": {
                "mean": round(sum(latencies) / len(latencies), 3) if latencies else None,
                "p50": _percentile(latencies, 0.5),
                "p95": _percentile(latencies, 0.95),
                "max": max(latencies) if latencies else None,
            },
            "wall_seconds": round(self.wall_seconds, 3),
            "confusion": self.confusion,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.summary(), "failures": [r.to_json() for r in self.failures]}


def _text(value: Any) -> str:
    return str(value).replace("\x00", "")


def junit_xml(report: EvalReport) -> str:
    """JUnit XML: one testsuite, a testcase per case; a failing case has `<failure>` with its
    diff, a pipeline error `<error>`, a human exit `<skipped>` (it counts against the pass rate
    in the report, but it is neither the model's fault nor a pass)."""
    suites = ElementTree.Element("testsuites", name=f"gatehouse eval {report.pipeline}")
    suite = ElementTree.SubElement(
        suites,
        "testsuite",
        name=f"gatehouse.eval.{report.pipeline}",
        tests=str(report.total),
        failures=str(report.count("failed")),
        errors=str(report.count("error")),
        skipped=str(report.count("human")),
        time=f"{report.wall_seconds:.3f}",
        timestamp=report.started_at,
    )
    properties = ElementTree.SubElement(suite, "properties")
    for name, value in (
        ("eval_id", report.eval_id),
        ("dataset", report.dataset),
        ("dataset_sha256", report.dataset_sha256),
        ("model", report.model or ""),
        ("pass_rate", "" if report.pass_rate is None else f"{report.pass_rate:.4f}"),
        ("min_pass", "" if report.min_pass is None else str(report.min_pass)),
    ):
        ElementTree.SubElement(properties, "property", name=name, value=_text(value))
    for result in report.results:
        label = f"line {result.position}" + (f": {result.note}" if result.note else "")
        case = ElementTree.SubElement(
            suite,
            "testcase",
            classname=f"gatehouse.eval.{report.pipeline}",
            name=_text(label[:200]),
            time=f"{result.latency_ms / 1000:.3f}",
        )
        if result.status == "failed":
            failure = ElementTree.SubElement(case, "failure", message=_text(result.why[:500]))
            failure.text = _text(result.why)
        elif result.status == "error":
            error = ElementTree.SubElement(case, "error", message=_text((result.error or "")[:500]))
            error.text = _text(result.error)
        elif result.status == "human":
            ElementTree.SubElement(case, "skipped", message=_text(result.why[:500]))
    ElementTree.indent(suites)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        + ElementTree.tostring(suites, encoding="unicode")
        + "\n"
    )
