"""A tool's context block: a few facts for its approval card, computed from what the run already
read, so the approver sees what the call is measured against (the order's total and what was
refunded of it, beside the refund).

    def refund_context(args: RefundArgs, reads: RecordedReads) -> OrderFacts | None:
        order = reads.last(find_order)
        ...

    @tool(kind="spend", ..., context=refund_context)

The function gets the call's arguments and the run's recorded results before the gated call,
read-only; it returns a pydantic model (its display marks are honoured: `pipelines.display`), a
mapping of label to value, a few lines of text, or None for nothing to add. It runs when the
card is drawn, never in the run: it cannot change what the run does. One that raises leaves the
card whole, saying "context unavailable", and is logged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from pydantic import BaseModel

from pipelines.display import Mark, display_marks, field_titles
from pipelines.tools import Tool, lookup_tool
from pipelines.views import CallView

log = structlog.get_logger()

LINES_KEPT = 5  # "a short context block": more is cut


@dataclass(frozen=True)
class RecordedReads:
    """The run's recorded calls before the gated one, oldest first (values as views show them:
    sealed fields masked)."""

    calls: tuple[CallView, ...]

    def results(self, tool: Tool | str) -> list[Any]:
        """The results of the run's succeeded calls of `tool`, oldest first: validated into the
        tool's result type when `tool` is the tool itself, the recorded JSON for a name."""
        name = tool if isinstance(tool, str) else tool.name
        outputs = [
            c.output
            for c in self.calls
            if c.kind == "tool" and c.name == name and c.status == "succeeded"
        ]
        if isinstance(tool, Tool):
            return [tool.result_adapter.validate_python(o) for o in outputs]
        return outputs

    def last(self, tool: Tool | str) -> Any:
        """The latest result of `tool` in the run, or None when it has none."""
        found = self.results(tool)
        return found[-1] if found else None


@dataclass(frozen=True)
class ToolContext:
    """What the card shows: `values` (with their marks and titles) or `lines`; `unavailable` when
    the function failed (the card says so)."""

    values: Mapping[str, Any] = field(default_factory=dict)
    marks: Mapping[str, Mark] = field(default_factory=dict)
    titles: Mapping[str, str] = field(default_factory=dict)
    lines: tuple[str, ...] = ()
    unavailable: bool = False


UNAVAILABLE = ToolContext(unavailable=True)


def context_for(tool_name: str, args: Any, earlier: Sequence[CallView]) -> ToolContext | None:
    """The tool's context block for a call with `args`, after the run's `earlier` calls; None
    when the tool has no context function or it had nothing to add."""
    tool = lookup_tool(tool_name)
    if tool is None or tool.context is None:
        return None
    try:
        made = tool.context(tool.coerce_args(args), RecordedReads(tuple(earlier)))
        return _context(made)
    except Exception as exc:  # the author's code: a card is drawn whatever it does
        log.warning(
            "tool_context.failed",
            tool=tool_name,
            error_type=type(exc).__name__,
            error=str(exc)[:300],
        )
        return UNAVAILABLE


def _context(made: Any) -> ToolContext | None:
    if made is None:
        return None
    if isinstance(made, BaseModel):
        model = type(made)
        values = made.model_dump(mode="json")
        return ToolContext(values=values, marks=display_marks(model), titles=field_titles(model))
    if isinstance(made, Mapping):
        return ToolContext(values={str(k): v for k, v in made.items()}) if made else None
    if isinstance(made, str):
        made = [made]
    if isinstance(made, Sequence):
        lines = tuple(str(line) for line in made if str(line).strip())[:LINES_KEPT]
        return ToolContext(lines=lines) if lines else None
    raise TypeError(
        f"a tool's context function returned {type(made).__name__}: return a pydantic model, "
        "a mapping, a few lines of text or None"
    )
