"""`gatehouse ready`: is a pipeline fit for production? Four questions (five with a budget), each green, amber or red with
the reason, answered from the code and from the data.

1. **Gates**: every `ctx.llm` has a human exit (the default `on_fail="human"`) or its
   `CannotAnswer` is handled, and every write/send/spend tool has a rate limit and either an
   approval or a reverse. The gaps are listed by name.
2. **Approvers**: the gated tools and who may approve them (red when a call can reach a person
   and anyone may approve it, `approvers="*"`).
3. **Records**: the share of the last 7 days' runs with a complete record
   (`storage.readiness`), red under 99% or with no runs.
4. **Eval**: the last `gatehouse eval`'s pass rate and age, red when there is none in 30 days or
   it is under the pipeline's bar (`@pipeline(eval_min_pass=...)`, else the bar the eval ran
   with, else 90%).
5. **Budget** (only for a pipeline with one, `pipelines.budgets`): red when its day budget or
   run rate is reached, amber from 80% of either, green under.

The code is read statically (`ast`) from the pipeline function's source and from the functions
it passes `ctx` to (followed through names in their modules, recursively): `X.llm(...)` calls
with their `on_fail=` and whether a `try` (or `contextlib.suppress`) around them catches
`CannotAnswer` (or a base of it), and the tools named in `X.tool(...)` or referenced by name. What this cannot see: calls made
through `getattr`, through objects' methods, or with a tool chosen from a container at run
time; such a pipeline may list fewer tools than it calls. `on_fail=` given as an expression
counts as handled only inside such a `try`.
"""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
import textwrap
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pipelines.operations.approver_groups import check_groups
from pipelines.pipeline import Pipeline, get_pipeline, registered_pipelines
from pipelines.ports import ApproverDirectory
from pipelines.runtime import Runtime
from pipelines.tools import Tool
from pipelines.validator import Validator
from storage import evals as eval_rows
from storage.readiness import record_counts

RECORD_WINDOW = timedelta(days=7)
RECORD_BAR = 0.99
EVAL_MAX_AGE = timedelta(days=30)
DEFAULT_EVAL_BAR = 0.9
GATED_KINDS = ("write", "send", "spend")
# What an `except` must name to handle CannotAnswer (bare `except:` handles it too).
_HANDLES_CANNOT_ANSWER = frozenset({"CannotAnswer", "GatehouseError", "Exception", "BaseException"})


# -- the code -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LlmSite:
    """One `ctx.llm(...)` in the source."""

    name: str
    where: str  # function:line
    on_fail: str  # "human", "raise", or "expression"
    handled: bool  # inside a try that catches CannotAnswer

    @property
    def has_exit(self) -> bool:
        return self.on_fail == "human" or self.handled


@dataclass
class PipelineCode:
    llm_calls: list[LlmSite] = field(default_factory=list)
    tools: dict[str, Tool] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)


def _catches_cannot_answer(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    for name in names:
        ident = name.id if isinstance(name, ast.Name) else getattr(name, "attr", None)
        if ident in _HANDLES_CANNOT_ANSWER:
            return True
    return False


def _suppresses_cannot_answer(node: ast.expr) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    ident = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    if ident != "suppress":
        return False
    for arg in node.args:
        name = arg.id if isinstance(arg, ast.Name) else getattr(arg, "attr", None)
        if name in _HANDLES_CANNOT_ANSWER:
            return True
    return False


def _resolve(node: ast.expr, scope: Mapping[str, Any]) -> Any:
    """The object a name or dotted name refers to in the function's globals, or None."""
    if isinstance(node, ast.Name):
        if node.id in scope:
            return scope[node.id]
        return getattr(builtins, node.id, None)
    if isinstance(node, ast.Attribute):
        owner = _resolve(node.value, scope)
        return getattr(owner, node.attr, None) if owner is not None else None
    return None


class _Scanner(ast.NodeVisitor):
    def __init__(
        self, fn_name: str, scope: Mapping[str, Any], ctx_name: str | None, line_offset: int
    ) -> None:
        self.fn_name = fn_name
        self.line_offset = line_offset
        self.scope = scope
        self.ctx_name = ctx_name
        self.guarded = 0  # depth of try bodies that catch CannotAnswer
        self.llm_calls: list[LlmSite] = []
        self.tools: list[Tool] = []
        self.helpers: list[Callable[..., Any]] = []

    def visit_Try(self, node: ast.Try) -> None:
        catches = any(_catches_cannot_answer(h) for h in node.handlers)
        self.guarded += catches
        for child in node.body:
            self.visit(child)
        self.guarded -= catches
        for handler in node.handlers:
            self.visit(handler)
        for child in [*node.orelse, *node.finalbody]:
            self.visit(child)

    def visit_With(self, node: ast.With) -> None:
        """`with contextlib.suppress(CannotAnswer):` handles it like a try."""
        catches = any(_suppresses_cannot_answer(item.context_expr) for item in node.items)
        self.guarded += catches
        self.generic_visit(node)
        self.guarded -= catches

    def visit_Name(self, node: ast.Name) -> None:
        value = self.scope.get(node.id)
        if isinstance(value, Tool):
            self.tools.append(value)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        value = _resolve(node, self.scope)
        if isinstance(value, Tool):
            self.tools.append(value)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.attr == "llm"
        ):
            self.llm_calls.append(self._llm_site(node))
        if self.ctx_name and any(
            isinstance(a, ast.Name) and a.id == self.ctx_name for a in node.args
        ):
            target = _resolve(func, self.scope)
            if isinstance(target, types.FunctionType):
                self.helpers.append(target)
        self.generic_visit(node)

    def _llm_site(self, node: ast.Call) -> LlmSite:
        first = node.args[0] if node.args else None
        name = first.value if isinstance(first, ast.Constant) else None
        on_fail = "human"
        for keyword in node.keywords:
            if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                name = keyword.value.value
            if keyword.arg == "on_fail":
                value = keyword.value
                on_fail = (
                    str(value.value)
                    if isinstance(value, ast.Constant) and value.value in ("human", "raise")
                    else "expression"
                )
        return LlmSite(
            name=str(name) if name is not None else "?",
            where=f"{self.fn_name}:{node.lineno + self.line_offset}",
            on_fail=on_fail,
            handled=self.guarded > 0,
        )


def _ctx_name(fn: types.FunctionType) -> str | None:
    params = list(inspect.signature(fn).parameters)
    return params[0] if params else None


@functools.lru_cache(maxsize=256)
def scan_pipeline(fn: Callable[..., Any]) -> PipelineCode:
    """The pipeline's LLM call sites and tools, read from its source (see the module docstring)."""
    code = PipelineCode()
    seen: set[Any] = set()
    todo: list[Any] = [fn]
    while todo:
        current = inspect.unwrap(todo.pop())
        if current in seen or not isinstance(current, types.FunctionType):
            continue
        seen.add(current)
        label = current.__qualname__
        try:
            source = textwrap.dedent(inspect.getsource(current))
            tree = ast.parse(source)
        except (OSError, TypeError, SyntaxError) as exc:
            code.unreadable.append(f"{label}: {exc}")
            continue
        scope: dict[str, Any] = dict(current.__globals__)
        if current.__closure__:
            scope.update(
                {
                    name: cell.cell_contents
                    for name, cell in zip(
                        current.__code__.co_freevars, current.__closure__, strict=True
                    )
                    if _has_contents(cell)
                }
            )
        scanner = _Scanner(label, scope, _ctx_name(current), current.__code__.co_firstlineno - 1)
        scanner.visit(tree)
        code.llm_calls += scanner.llm_calls
        for found in scanner.tools:
            code.tools.setdefault(found.name, found)
        todo += scanner.helpers
    return code


def _has_contents(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


# -- the answers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    question: str  # gates | approvers | records | eval
    title: str
    ok: bool
    reason: str
    details: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    near: bool = False  # green, but close to red (amber): a budget nearly spent

    @property
    def status(self) -> str:
        return "red" if not self.ok else "amber" if self.near else "green"

    def to_json(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "title": self.title,
            "status": self.status,
            "reason": self.reason,
            "details": self.details,
            "data": self.data,
        }


@dataclass(frozen=True)
class Readiness:
    pipeline: str
    answers: list[Answer]

    @property
    def ready(self) -> bool:
        return all(a.ok for a in self.answers)

    @property
    def red(self) -> list[Answer]:
        return [a for a in self.answers if not a.ok]

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "ready": self.ready,
            "answers": [a.to_json() for a in self.answers],
        }


def gates_answer(code: PipelineCode) -> Answer:
    gaps: list[str] = [f"cannot read the source of {u}" for u in code.unreadable]
    for site in code.llm_calls:
        if site.has_exit:
            continue
        if site.on_fail == "raise":
            gaps.append(
                f'ctx.llm {site.name!r} ({site.where}): on_fail="raise" with no '
                "`except CannotAnswer` around it"
            )
        else:
            gaps.append(
                f"ctx.llm {site.name!r} ({site.where}): on_fail is decided at run time and no "
                "`except CannotAnswer` is around it"
            )
    for t in code.tools.values():
        if t.kind not in GATED_KINDS:
            continue
        if t.rate_limit is None:
            gaps.append(f"{t.name} ({t.kind}): no rate limit")
        if t.approval == "never" and t.reverse is None:
            gaps.append(f"{t.name} ({t.kind}): neither an approval nor a reverse")
    risky = [t for t in code.tools.values() if t.kind in GATED_KINDS]
    data = {
        "llm_calls": [
            {"name": s.name, "where": s.where, "on_fail": s.on_fail, "handled": s.handled}
            for s in code.llm_calls
        ],
        "tools": sorted(code.tools),
        "gaps": gaps,
    }
    if gaps:
        return Answer(
            "gates", "Gates", False, f"{len(gaps)} gap(s): " + "; ".join(gaps), gaps, data
        )
    reason = (
        f"{len(code.llm_calls)} ctx.llm call(s), each with a human exit or a handler; "
        f"{len(risky)} write/send/spend tool(s), each rate-limited with an approval or a reverse"
    )
    return Answer("gates", "Gates", True, reason, [], data)


def _approval_words(t: Tool) -> str:
    rule = t.approval
    words = str(rule) if not isinstance(rule, str) else rule
    who = ", ".join(t.approvers) if t.approvers else "anyone"
    extra = " (four-eyes)" if t.four_eyes else ""
    if isinstance(rule, Validator) and rule.then == "reject" and not t.approvers:
        who = "nobody (the validator decides alone)"
    return f"{t.name} ({t.kind}, {words}): {who}{extra}"


def approvers_answer(code: PipelineCode, directory: ApproverDirectory | None = None) -> Answer:
    """Who may approve each gated tool; red for `approvers="*"` and, given the directory, for
    an `@group` nobody is known to be in (pipelines/operations/approver_groups.py)."""
    gated = [t for t in code.tools.values() if t.gated]
    lines = [_approval_words(t) for t in gated]
    groups = check_groups(directory, gated) if directory is not None else None
    data = {
        "gated_tools": [
            {
                "tool": t.name,
                "kind": t.kind,
                "approval": t.approval if isinstance(t.approval, str) else str(t.approval),
                "approvers": list(t.approvers),
                "four_eyes": t.four_eyes,
            }
            for t in gated
        ]
    }
    if groups is not None:
        data["groups"] = groups.data
    open_to_anyone = [
        t.name
        for t in gated
        if (not t.approvers or "*" in t.approvers)
        and not (isinstance(t.approval, Validator) and t.approval.then == "reject")
    ]
    if open_to_anyone:
        reason = (
            f"anyone may approve {', '.join(open_to_anyone)}: name the approvers on the tool "
            'instead of approvers="*"'
        )
        return Answer("approvers", "Approvers", False, reason, lines, data)
    if not gated:
        return Answer("approvers", "Approvers", True, "no gated tools", lines, data)
    if groups is not None and groups.problems:
        details = [*groups.problems, *lines]
        return Answer("approvers", "Approvers", False, "; ".join(groups.problems), details, data)
    reason = "; ".join(lines)
    if groups is not None:
        lines = [*lines, *groups.lines]
    return Answer("approvers", "Approvers", True, reason, lines, data)


def records_answer(rt: Runtime, pipeline: str, now: datetime) -> Answer:
    with rt.db.transaction() as conn:
        counts = record_counts(conn, pipeline, since=now - RECORD_WINDOW, now=now)
    data = {
        "runs": counts.runs,
        "complete": counts.complete,
        "share": counts.share,
        "bar": RECORD_BAR,
        "incomplete_examples": counts.incomplete_examples,
    }
    if counts.share is None:
        return Answer(
            "records", "Records", False, "no runs in the last 7 days to show a record", [], data
        )
    share = f"{counts.complete} of {counts.runs} runs in the last 7 days ({counts.share:.1%})"
    if counts.share + 1e-12 < RECORD_BAR:
        reason = (
            f"{share} have a complete record, under {RECORD_BAR:.0%}; incomplete: "
            + ", ".join(counts.incomplete_examples)
        )
        return Answer("records", "Records", False, reason, counts.incomplete_examples, data)
    reason = f"{share} have a complete record"
    if counts.incomplete_examples:
        reason += "; incomplete: " + ", ".join(counts.incomplete_examples)
    return Answer("records", "Records", True, reason, counts.incomplete_examples, data)


def eval_answer(rt: Runtime, pipeline: Pipeline, now: datetime) -> Answer:
    with rt.db.transaction() as conn:
        last = eval_rows.latest(conn, pipeline.name)
    if last is None:
        return Answer(
            "eval",
            "Eval",
            False,
            f"no eval yet (`gatehouse eval {pipeline.name}`)",
            [],
            {"eval_id": None},
        )
    bar = pipeline.eval_min_pass
    bar = bar if bar is not None else last.min_pass
    bar = bar if bar is not None else DEFAULT_EVAL_BAR
    at = last.finished_at or last.started_at
    age = now - at
    days = age.total_seconds() / 86400
    rate = last.pass_rate
    data = {
        "eval_id": last.id,
        "pass_rate": rate,
        "bar": bar,
        "at": at.isoformat(),
        "age_days": round(days, 2),
        "cases": last.cases,
    }
    said = (
        f"eval {last.id}: {'-' if rate is None else f'{rate:.1%}'} of {last.cases} case(s) "
        f"passed, {_age(age)} ago"
    )
    if age > EVAL_MAX_AGE:
        return Answer("eval", "Eval", False, f"{said}: none in the last 30 days", [], data)
    if rate is None or rate + 1e-12 < bar:
        return Answer("eval", "Eval", False, f"{said}: under the bar of {bar:.0%}", [], data)
    return Answer("eval", "Eval", True, f"{said} (bar {bar:.0%})", [], data)


def _age(age: timedelta) -> str:
    seconds = max(age.total_seconds(), 0)
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 60:.0f} min"


def budget_answer(rt: Runtime, pipeline: Pipeline) -> Answer | None:
    """A fifth answer for a pipeline with a budget (pipelines.budgets): red when its day budget
    or run rate is reached, amber from 80% of either, green under."""
    from pipelines.budgets import budget_statuses, usd

    statuses = budget_statuses(rt, [pipeline.name])
    if not statuses:
        return None
    status = statuses[0]
    summary = status.summary()
    data = status.to_json()
    if status.state == "over":
        reached = []
        if status.budget.max_cost_per_day and status.day.committed_usd >= (
            status.budget.max_cost_per_day
        ):
            reached.append(
                f"day budget {usd(status.budget.max_cost_per_day)} reached "
                f"({usd(status.day.committed_usd)} today)"
            )
        if status.budget.max_runs_per_hour and (
            status.runs_last_hour >= status.budget.max_runs_per_hour
        ):
            reached.append(f"run rate {status.budget.max_runs_per_hour}/hour reached")
        return Answer("budget", "Budget", False, "; ".join(reached) + f": {summary}", [], data)
    if status.state == "near":
        reason = f"{status.share():.0%} of a limit used: {summary}"
        return Answer("budget", "Budget", True, reason, [], data, near=True)
    return Answer("budget", "Budget", True, summary, [], data)


def pipeline_readiness(rt: Runtime, pipeline: Pipeline, now: datetime | None = None) -> Readiness:
    now = now or rt.clock.now()
    code = scan_pipeline(pipeline.fn)
    answers = [
        gates_answer(code),
        approvers_answer(code, rt.directory),
        records_answer(rt, pipeline.name, now),
        eval_answer(rt, pipeline, now),
    ]
    if (budget := budget_answer(rt, pipeline)) is not None:
        answers.append(budget)
    return Readiness(pipeline.name, answers)


def readiness(rt: Runtime, names: Iterable[str] | None = None) -> list[Readiness]:
    """Every registered pipeline's answers (or only `names`'), by name."""
    if names is None:
        chosen = list(registered_pipelines().values())
    else:
        chosen = [get_pipeline(n) for n in names]
    now = rt.clock.now()
    return [pipeline_readiness(rt, p, now) for p in chosen]
