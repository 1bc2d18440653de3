"""Terminal formatting for the CLI: pure functions from engine views to lines of text.

Nothing here prints or touches the database; `bot.cli` and the terminal notifier print what
these return. The JSON shapes are not built here: `--json` prints the views' own `to_json()`.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.cli.tables import table  # with the list of runs, which needs no engine
from bot.formatting import (
    changes_line,
    shown_changes,
    shown_line,
    shown_values,
    time_of_day,
    took,
    when,
)
from pipelines import ApprovalView, Pipeline, ReplayReport, Run, TaskView
from pipelines.display import display_marks, field_titles
from pipelines.pauses import is_held_by_pause
from pipelines.quorum import progress as quorum_progress
from pipelines.run_operations import REPLACED_BY
from pipelines.tasks import NOT_ASKED_OF_PEOPLE
from pipelines.tools import lookup_tool
from pipelines.views import CallView

USER = "USER"  # the placeholder in suggested commands


def compact(value: Any) -> str:
    """One-line JSON, as a user would type it back."""
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)


def pretty_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)


# -- commands to suggest -------------------------------------------------------------------


def approve_command(approval_id: str) -> str:
    return f"gatehouse approve {approval_id} --as {USER}"


def edit_command(a: ApprovalView) -> str | None:
    """`gatehouse approve ID --as USER --args '{"amount_cents": 20000, ...}'`: approve with edits,
    the editable fields filled with what the call would run with now (as the Slack form is);
    None when the tool lets nobody edit its arguments."""
    if not a.editable:
        return None
    args = a.args if isinstance(a.args, dict) else {}
    current = {name: args.get(name) for name in a.editable}
    return f"{approve_command(a.id)} --args {shlex.quote(compact(current))}"


def reject_command(approval_id: str) -> str:
    return f'gatehouse reject {approval_id} --as {USER} --reason "..."'


def answer_command(task: TaskView) -> str:
    """The command to answer `task`, with its fields to fill; never a `confidence` (a person
    is not asked how sure a model would be)."""
    example = {
        name: "..."
        for name in schema_properties(task.output_schema)
        if name not in NOT_ASKED_OF_PEOPLE
    }
    return f"gatehouse answer {task.id} --as {USER} --answer {shlex.quote(compact(example))}"


# -- pipelines -------------------------------------------------------------------------------


def schema_properties(schema: Any) -> dict[str, Any]:
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties")
    return props if isinstance(props, dict) else {}


def schema_type(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return " | ".join(compact(v) for v in prop["enum"])
    if "const" in prop:
        return compact(prop["const"])
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in prop:
        return " | ".join(schema_type(p) for p in prop["anyOf"] if isinstance(p, dict))
    kind = prop.get("type", "any")
    if kind == "array" and isinstance(prop.get("items"), dict):
        return f"list of {schema_type(prop['items'])}"
    return str(kind)


_CONSTRAINTS = {
    "exclusiveMinimum": "> {}",
    "minimum": ">= {}",
    "exclusiveMaximum": "< {}",
    "maximum": "<= {}",
    "minLength": "length >= {}",
    "maxLength": "length <= {}",
    "pattern": "matches {}",
}


def schema_constraints(prop: dict[str, Any]) -> list[str]:
    found = [text.format(prop[key]) for key, text in _CONSTRAINTS.items() if key in prop]
    for option in prop.get("anyOf", []):
        if isinstance(option, dict) and option.get("type") == "number":
            found += schema_constraints(option)
    if "default" in prop:
        found.append(f"default {compact(prop['default'])}")
    return found


def field_lines(
    schema: Any, indent: str = "    ", *, skip: frozenset[str] = frozenset()
) -> list[str]:
    required = set(schema.get("required", [])) if isinstance(schema, dict) else set()
    rows = []
    for name, prop in schema_properties(schema).items():
        if name in skip:
            continue
        prop = prop if isinstance(prop, dict) else {}
        notes = ["required" if name in required else "optional", *schema_constraints(prop)]
        description = prop.get("description", "")
        rows.append(
            [
                name,
                schema_type(prop),
                ", ".join(notes) + (f" — {description}" if description else ""),
            ]
        )
    if not rows:
        return [f"{indent}(no fields)"]
    return [indent + line for line in table(["field", "type", "notes"], rows)]


def pipeline_json(p: Pipeline) -> dict[str, Any]:
    return {
        "name": p.name,
        "description": p.description,
        "input_schema": p.input_model.model_json_schema(),
        "triggers": [t.describe() for t in p.triggers],
    }


def pipeline_lines(p: Pipeline) -> list[str]:
    schema = p.input_model.model_json_schema()
    triggers = ", ".join(t.describe() for t in p.triggers) or "none (trigger from the CLI)"
    return [
        f"{p.name}" + (f" — {p.description}" if p.description else ""),
        f"  input ({p.input_model.__name__}):",
        *field_lines(schema),
        f"  triggers: {triggers}",
        f"  run it:   gatehouse trigger {p.name} --input '{{...}}'",
    ]


# -- runs --------------------------------------------------------------------------------------


def args_text(a: ApprovalView) -> str:
    """The call's arguments as people read them (`amount 180.00 EUR`, not `amount_cents
    18000`): the tool's display types (`pipelines.display`), when the tool is registered here."""
    tool = lookup_tool(a.tool)
    if tool is None or not isinstance(a.args, dict):
        return compact(a.args)
    marks = display_marks(tool.args_model)
    return shown_line(shown_values(a.args, marks, field_titles(tool.args_model)), separator=", ")


def edit_changes(a: ApprovalView) -> str | None:
    """`amount 200.00 EUR -> 150.00 EUR` for an approval given with edits
    (pipelines/approval_edits.py), in the tool's display types; None otherwise."""
    edited = a.edited
    if not isinstance(edited, dict) or not isinstance(a.args, dict):
        return None
    original = edited.get("original")
    if not isinstance(original, dict):
        return None
    tool = lookup_tool(a.tool)
    marks = display_marks(tool.args_model) if tool is not None else {}
    titles = field_titles(tool.args_model) if tool is not None else {}
    return changes_line(shown_changes(original, a.args, marks, titles))


def edited_text(a: ApprovalView) -> str | None:
    """`edited by bob at …: amount 200.00 EUR -> 150.00 EUR`, or None."""
    changes = edit_changes(a)
    if changes is None:
        return None
    at = a.edited.get("at")
    moment = f" at {when(datetime.fromisoformat(at))}" if isinstance(at, str) else ""
    return f"edited by {a.edited.get('by') or '-'}{moment}: {changes}"


def approval_detail(a: ApprovalView) -> str:
    parts = [f"approvers {', '.join(a.approvers) or 'anyone'}"]
    if a.four_eyes and a.trigger_user:
        parts.append(f"four-eyes: not {a.trigger_user}")
    if a.expires_at is not None:
        parts.append(f"expires {when(a.expires_at)}")
    if isinstance(a.validator, dict) and a.validator.get("summary"):
        parts.append(str(a.validator["summary"]))  # why the validator handed it to a person
    parts += nudge_parts(a)
    if a.quorum is not None:
        parts.append(quorum_progress(a.quorum))  # "1 of 2 approvals (alice); waiting for 1 more"
    return "; ".join(parts)


def decide_lines(a: ApprovalView, indent: str) -> list[str]:
    """The commands that decide a pending approval: approve, approve with edits (an editable
    tool's), reject."""
    lines = [f"{indent}approve: {approve_command(a.id)}"]
    if (edit := edit_command(a)) is not None:
        lines.append(f"{indent}edit:    {edit}")
    return [*lines, f"{indent}reject:  {reject_command(a.id)}"]


def nudge_parts(a: ApprovalView) -> list[str]:
    """ "reminded at …", "escalated to @leads at …" (or when they are due, while pending)."""
    n = a.nudges
    if n is None:
        return []
    parts = []
    if n.reminded_at is not None:
        parts.append(f"reminded at {when(n.reminded_at)}")
    elif n.remind_at is not None and a.status == "pending":
        parts.append(f"reminder due {when(n.remind_at)}")
    to = ", ".join(n.escalate_to)
    if n.escalated_at is not None:
        parts.append(f"escalated to {to} at {when(n.escalated_at)}")
    elif n.escalate_at is not None and a.status == "pending":
        parts.append(f"escalates to {to} at {when(n.escalate_at)}")
    return parts


def waiting_lines(run: Run) -> list[str]:
    """What a waiting run waits for, and the exact commands that move it on."""
    lines = []
    for a in run.approvals:
        if a.status != "pending":
            continue
        lines += [
            f"  waiting for approval {a.id} to call {a.tool}: {args_text(a)}",
            f"    {approval_detail(a)}",
            *decide_lines(a, "    "),
        ]
    for t in run.tasks:
        if t.status != "open":
            continue
        lines += [
            f"  waiting for human task {t.id}: {t.question}",
            f"    answer: {answer_command(t)}",
        ]
    if run.status == "waiting" and not lines and is_held_by_pause(run):
        lines.append(
            f"  waiting: {run.waiting_reason}; `gatehouse resume {run.pipeline} --as USER` "
            "carries it on"
        )
    if run.status == "waiting" and not lines:
        lines.append("  waiting for a timer (a rate-limit window); `gatehouse worker` wakes it")
    return lines


def run_summary(run: Run) -> list[str]:
    """A few lines after trigger/approve/answer: where the run stands now."""
    lines = [f"run {run.id} ({run.pipeline}): {run.status}"]
    if run.status == "queued":
        lines.append("  queued: `gatehouse worker` will carry it on")
    if run.output is not None:
        lines.append(f"  output: {compact(run.output)}")
    if run.error:
        lines.append(f"  error:  {run.error}")
    lines += waiting_lines(run)
    if run.status not in ("queued", "waiting"):
        lines.append(f"  details: gatehouse run {run.id}")
    return lines


def call_lines(number: str, c: CallView, key_width: int = 0) -> list[str]:
    head = f"{number:>3}  {c.kind:<8}  {c.key:<{key_width}}  {c.status:<17}"
    lines = [f"{head}  {took(c.started_at, c.finished_at):>9}  {c.id}"]
    lines.append(f"       input:  {compact(c.input)}")
    if c.output is not None or c.status == "succeeded":
        lines.append(f"       output: {compact(c.output)}")
    if c.error:
        lines.append(f"       error:  {c.error}")
    if c.reversed_by:
        lines.append(f"       undone by call {c.reversed_by}")
    if c.kind == "llm" and isinstance(c.meta, dict):
        lines += llm_meta_lines(c.meta)
    return lines


def _answered_by(meta: dict[str, Any]) -> str | None:
    """`answered by model`, or `answered by human: bob at 14:02:03.120` (who, when)."""
    if not meta.get("answered_by"):
        return None
    said = f"answered by {meta['answered_by']}"
    if meta.get("answered_by_user"):
        said += f": {meta['answered_by_user']}"
        if isinstance(meta.get("answered_at"), str):
            said += f" at {_iso_clock(meta['answered_at'])}"
    return said


def llm_meta_lines(meta: dict[str, Any]) -> list[str]:
    """Model, attempts, confidence, tokens, cost, latency and who answered an LLM call."""
    attempts = meta.get("attempts") or []
    cost = meta.get("cost_usd")
    parts = [
        f"model {meta.get('model') or '(none)'}",
        f"{len(attempts)} attempt{'s' if len(attempts) != 1 else ''}",
        f"confidence {meta['confidence']}" if meta.get("confidence") is not None else None,
        f"{meta.get('prompt_tokens', 0)}+{meta.get('completion_tokens', 0)} tokens",
        f"${cost:.6f}" if cost is not None else "cost unknown (no price for this model)",
        f"{meta.get('latency_ms', 0):.1f} ms",
        _answered_by(meta),
    ]
    lines = ["       llm:    " + " · ".join(p for p in parts if p)]
    if meta.get("reason"):
        lines.append(f"       why a human: {meta['reason']}")
    for number, attempt in enumerate(attempts, 1):
        if attempt.get("error"):
            lines.append(
                f"       attempt {number}: {attempt['error']} (said: {compact(attempt.get('raw'))})"
            )
    return lines


def run_detail(run: Run, history: dict[str, Any]) -> list[str]:
    lines = [
        f"run {run.id}",
        f"  pipeline:  {run.pipeline}",
        f"  status:    {run.status}",
        f"  triggered: {when(run.created_at)} by {run.trigger_user or '-'}",
        f"  finished:  {when(run.finished_at)} (took {took(run.created_at, run.finished_at)})",
        f"  input:     {compact(run.input)}",
        f"  output:    {compact(run.output)}",
    ]
    if run.error:
        lines.append(f"  error:     {run.error}")
    lines += waiting_lines(run)
    lines += ["", f"calls ({len(run.calls)})"]
    position = 0
    width = max((len(c.key) for c in run.calls), default=3)
    if run.calls:
        lines.append(
            f"{'#':>3}  {'kind':<8}  {'key':<{width}}  {'status':<17}  {'took':>9}  call id"
        )
    for c in run.calls:
        if c.kind == "reversal":  # out of band: it has no place in the pipeline's sequence
            lines += call_lines("-", c, width)
        elif isinstance(c.meta, dict) and REPLACED_BY in c.meta:  # an earlier attempt's
            lines += call_lines("-", c, width)
            lines.append(f"       replaced by attempt {c.meta[REPLACED_BY]} (gatehouse retry)")
        else:
            position += 1
            lines += call_lines(str(position), c, width)
    if run.approvals:
        lines += ["", "approvals"]
        for a in run.approvals:
            decided = (
                f"{a.status} by {a.decided_by or '-'} at {when(a.decided_at)}"
                if a.status != "pending"
                else "pending"
            )
            reason = f" — {a.reason}" if a.reason else ""
            lines.append(f"  {a.id}  {a.call_key}  {decided}{reason}")
            lines.append(f"    {a.tool}: {args_text(a)}")
            if (edited := edited_text(a)) is not None:
                lines.append(f"    {edited}")
            lines.append(f"    requested {when(a.requested_at)}; {approval_detail(a)}")
    if run.tasks:
        lines += ["", "human tasks"]
        for t in run.tasks:
            by = f" by {t.answered_by} at {when(t.answered_at)}" if t.answered_by else ""
            lines.append(f"  {t.id}  {t.call_key}  {t.status}{by}: {t.question}")
            if t.answer is not None:
                lines.append(f"    answer: {compact(t.answer)}")
    lines += ["", "transitions"]
    for e in history["transitions"]:
        detail = f"  ({e['detail']})" if e["detail"] else ""
        lines.append(f"  {_iso_clock(e['at'])}  {e['from'] or '-'} → {e['to']}{detail}")
    lines += ["", "audit trail"]
    if not history["audit"]:
        lines.append("  (no audited actions)")
    for entry in history["audit"]:
        lines.append("  " + audit_line(entry))
    return lines


def _iso_clock(text: str | None) -> str:
    return "-" if text is None else time_of_day(datetime.fromisoformat(text))


def audit_line(entry: dict[str, Any]) -> str:
    parts = [_iso_clock(entry["at"]), entry["event"]]
    if entry.get("tool"):
        parts.append(entry["tool"])
    parts.append(f"by {entry['actor']}" if entry.get("actor") else "by -")
    if entry.get("approval_id"):
        parts.append(entry["approval_id"])
    if entry.get("call_id"):
        parts.append(f"call {entry['call_id']}")
    if (edit := audit_edit_text(entry)) is not None:
        parts.append(edit)
    if entry.get("detail"):
        parts.append(compact(entry["detail"]))
    return "  ".join(parts)


def audit_edit_text(entry: dict[str, Any]) -> str | None:
    """`edited: amount 200.00 EUR -> 150.00 EUR` for an approval given with edits, from the audit
    entry alone (its original arguments and changes), in the tool's display types."""
    detail = entry.get("detail")
    edited = detail.get("edited") if isinstance(detail, dict) else None
    if not isinstance(edited, dict) or not isinstance(edited.get("original"), dict):
        return None
    original: dict[str, Any] = edited["original"]
    changed = {
        str(c["field"]): c.get("new")
        for c in edited.get("changes") or []
        if isinstance(c, dict) and "field" in c
    }
    tool = lookup_tool(str(entry.get("tool") or ""))
    marks = display_marks(tool.args_model) if tool is not None else {}
    titles = field_titles(tool.args_model) if tool is not None else {}
    changes = shown_changes(original, {**original, **changed}, marks, titles)
    return f"edited: {changes_line(changes)}"


# -- pending -----------------------------------------------------------------------------------


def pending_lines(items: Sequence[ApprovalView | TaskView]) -> list[str]:
    if not items:
        return ["nothing waits for a person"]
    lines = []
    for item in items:
        if isinstance(item, ApprovalView):
            lines += [
                f"approval {item.id}  {when(item.requested_at)}  run {item.run_id} "
                f"({item.pipeline or '?'})",
                f"  {item.tool} ({item.tool_kind}): {args_text(item)}",
                f"  {approval_detail(item)}",
                *decide_lines(item, "  "),
            ]
        else:
            who = ", ".join(item.answerers) or "nobody"
            assignees = "anyone" if "*" in item.answerers else who
            lines += [
                f"human task {item.id}  {when(item.opened_at)}  run {item.run_id} "
                f"({item.pipeline or '?'})",
                f"  {item.question}",
                f"  assignees {assignees}; answer fields:",
                *field_lines(item.output_schema, skip=NOT_ASKED_OF_PEOPLE),
                f"  answer: {answer_command(item)}",
            ]
    return lines


# -- the notifier's one-liners -------------------------------------------------------------------


def approval_requested_line(a: ApprovalView) -> str:
    n = a.nudges
    if a.quorum is not None and a.quorum.votes:
        return f"⏸ approval {a.id}: {quorum_progress(a.quorum)} — {approve_with(a)}"
    if n is not None and n.escalated_at is not None:
        return (
            f"⏫ approval {a.id} escalated to {', '.join(n.escalate_to)}: {a.tool} still waits — "
            f"{approve_with(a)}"
        )
    if n is not None and n.reminded_at is not None:
        return (
            f"🔔 approval {a.id} reminder: {a.tool} still waits for {', '.join(a.approvers)} — "
            f"{approve_with(a)}"
        )
    needs = f", needs {a.quorum.required} approvers" if a.quorum is not None else ""
    return f"⏸ approval {a.id} requested: {a.tool} ({args_text(a)}){needs} — {approve_with(a)}"


def approve_with(a: ApprovalView) -> str:
    """ "approve with: gatehouse approve …", and the command with edits for an editable tool."""
    edit = edit_command(a)
    return f"approve with: {approve_command(a.id)}" + (f" — or with edits: {edit}" if edit else "")


def approval_decided_line(a: ApprovalView) -> str:
    if a.status == "approved" and (changes := edit_changes(a)) is not None:
        return (
            f"✔ approval {a.id} approved by {a.decided_by} with edits ({changes}): {a.tool} "
            "may go ahead"
        )
    if a.status == "approved":
        by = ", ".join(a.quorum.voters) if a.quorum is not None and a.quorum.votes else a.decided_by
        return f"✔ approval {a.id} approved by {by}: {a.tool} may go ahead"
    if a.status == "expired":
        return f"⌛ approval {a.id} expired without a decision: {a.tool} will not run"
    if a.status == "cancelled":
        return f"✖ approval {a.id} closed: its run was cancelled by {a.decided_by}: {a.reason}"
    return f"✘ approval {a.id} rejected by {a.decided_by}: {a.reason or 'no reason given'}"


def task_opened_line(t: TaskView) -> str:
    return f"⏸ human task {t.id} opened: {t.question} — answer with: {answer_command(t)}"


def task_answered_line(t: TaskView) -> str:
    if t.status == "cancelled":
        why = t.answer.get("cancelled") if isinstance(t.answer, dict) else None
        return f"✖ human task {t.id} closed: its run was cancelled by {t.answered_by}: {why}"
    return f"✔ human task {t.id} answered by {t.answered_by}: {compact(t.answer)}"


# -- replay ------------------------------------------------------------------------------------


def replay_lines(report: ReplayReport) -> list[str]:
    lines = [
        f"replay of run {report.run_id} ({report.pipeline}, recorded {report.recorded_status}) "
        "with today's code — nothing is written, no tool runs"
    ]
    rows = [
        [str(line.position), line.kind, line.key, line.outcome, compact(line.detail)]
        for line in report.lines
    ]
    if rows:
        lines += ["  " + row for row in table(["#", "kind", "key", "outcome", "detail"], rows)]
    else:
        lines.append("  (no calls)")
    for call in report.would_call:
        lines.append(f"  would call {call['tool']} ({call['kind']}) with {compact(call['args'])}")
    lines.append(f"  divergence: {report.divergence or 'none'}")
    if report.error:
        lines.append(f"  error: {report.error}")
    if report.finished:
        verdict = "matches" if report.output_matches else "DIFFERS from"
        lines.append(f"  finished; its output {verdict} the record")
        if not report.output_matches:
            lines.append(f"    recorded: {compact(report.recorded_output)}")
            lines.append(f"    today:    {compact(report.output)}")
    else:
        lines.append("  did not finish (it stops at the first call it may not make or reuse)")
    return lines
