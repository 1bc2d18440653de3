"""Editable approvals (`@tool(editable=["amount", "recipient"])`), both ends: the edit an
approver proposes (checked against the tool's `editable` list and validated by its argument
model), its record in the deciding transaction, and the arguments a resumed run calls the tool
with.

The rules, as `pipelines.approvals.decide` applies them:
- only an approval (never a rejection) carries edits, only of the tool's `editable` fields;
- the editor is an approver like any other: the approver list and four-eyes apply to them, and
  the edit is the same compare-and-set as Approve (two clicks decide once);
- the approval covers the edited call: an `approval=when(...)` rule is not evaluated again (were
  the edit to fall under the threshold the call is approved anyway; over it, it is being
  approved now). The rate limit is checked when the call starts, after the decision, so it
  counts the edited call like any other; budgets gate model calls and new runs, never a tool call,
  so an edit leaves them as they are;
- the gated call's recorded input becomes the edited arguments and the original ones are kept
  (the approval's `edited`, the call's `meta`), so a replay of the run, a crash-recovery retry
  of an idempotent tool, the card and the audit all see what ran and what was asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection

from pipelines.errors import InvalidEdit, UnknownApproval
from pipelines.tools import Tool
from storage import approvals as approval_rows
from storage import calls as call_rows
from storage.calls import CallRecord

EDITED_META = "edited"


@dataclass(frozen=True)
class Edit:
    """An approver's change of a gated call's arguments, validated, not yet recorded."""

    by: str
    original: dict[str, Any]
    args: dict[str, Any]  # the whole edited arguments, as the call will get them
    changes: list[dict[str, Any]]  # [{"field", "old", "new"}], in the model's field order

    def to_json(self, at: datetime) -> dict[str, Any]:
        return {
            "by": self.by,
            "at": at.isoformat(),
            "original": self.original,
            "changes": self.changes,
        }


def editable_schema(tool: Tool) -> dict[str, Any]:
    """The JSON schema of the tool's editable arguments only (for the Edit & approve form)."""
    schema = tool.args_model.model_json_schema()
    properties = schema.get("properties") or {}
    kept = {name: properties[name] for name in tool.editable if name in properties}
    required = [name for name in schema.get("required") or [] if name in kept]
    shaped: dict[str, Any] = {
        "type": "object",
        "title": schema.get("title", tool.args_model.__name__),
        "properties": kept,
        "required": required,
    }
    if "$defs" in schema:
        shaped["$defs"] = schema["$defs"]
    return shaped


def _field_errors(exc: ValidationError) -> dict[str, str]:
    found: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error.get("loc", ())]
        name = loc[0] if loc else ""
        where = ".".join(loc[1:])
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        found.setdefault(name, []).append(f"{where}: {message}" if where else message)
    return {name: "; ".join(messages) for name, messages in found.items()}


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


def prepare(tool: Tool | None, approval: Any, edits: Mapping[str, Any], *, by: str) -> Edit:
    """Validate `edits` (field -> new value) on `approval`'s current arguments. Raises
    `InvalidEdit` naming each refused field: a field the tool does not let people edit, a value
    its argument model refuses. A field sent with its current value is no change."""
    if tool is None:
        raise UnknownApproval(
            f"approval {approval.id}: tool {approval.tool!r} is not registered in this process, "
            "so its arguments cannot be checked; approve without edits or run where it is loaded"
        )
    if not tool.editable:
        raise InvalidEdit(
            f"{tool.name} does not allow editing its arguments (no @tool(editable=...)); "
            "approve or reject it as it is",
            {},
        )
    if not isinstance(edits, Mapping):
        raise InvalidEdit("edited arguments must be a JSON object of field: value", {})
    original_json: dict[str, Any] = dict(approval.args or {})
    original = tool.args_model.model_validate(original_json)
    current = _dump(original)
    fields = tool.args_model.model_fields
    refused = {
        str(name): (
            "not an argument of " + tool.name
            if name not in fields
            else f"not editable (editable: {', '.join(tool.editable)})"
        )
        for name, value in edits.items()
        if name not in tool.editable and (name not in fields or value != current.get(name))
    }
    if refused:
        raise InvalidEdit(_summary(tool, refused), refused)
    proposed = {**original_json, **{k: v for k, v in edits.items() if k in tool.editable}}
    try:
        edited = tool.args_model.model_validate(proposed)
    except ValidationError as exc:
        errors = _field_errors(exc)
        raise InvalidEdit(_summary(tool, errors), errors) from exc
    edited_json = _dump(edited)
    args = dict(original_json)
    changes: list[dict[str, Any]] = []
    for name in fields:
        if getattr(edited, name) == getattr(original, name):
            continue  # unchanged: keep the recorded value (a sealed one is not sealed again)
        args[name] = edited_json.get(name)
        changes.append({"field": name, "old": original_json.get(name), "new": args[name]})
    return Edit(by=by, original=original_json, args=args, changes=changes)


def _summary(tool: Tool, errors: Mapping[str, str]) -> str:
    listed = "; ".join(f"{name or 'arguments'}: {message}" for name, message in errors.items())
    return f"the edited arguments of {tool.name} are refused ({listed}); nothing was decided"


def record(conn: Connection, approval: Any, edit: Edit, at: datetime) -> dict[str, Any]:
    """In the deciding transaction, once the decision won: the approval and its gated call now
    hold the edited arguments; the original ones and the changes are kept beside them."""
    edited = edit.to_json(at)
    approval_rows.record_edit(conn, approval.id, args=edit.args, edited=edited)
    call = call_rows.fetch_call(conn, approval.call_id)
    meta = dict(call.meta or {}) if call is not None and isinstance(call.meta, dict) else {}
    meta[EDITED_META] = {"by": edit.by, "approval_id": approval.id, "original": edit.original}
    call_rows.update_call(conn, approval.call_id, input=edit.args, meta=meta)
    return edited


def effective_args(
    tool: Tool, recorded: CallRecord | None, args: BaseModel, args_json: Any
) -> tuple[BaseModel, Any]:
    """The arguments a resumed call runs with: the edited ones when an approver changed them
    (the recorded input), else what the pipeline's code passed."""
    meta = recorded.meta if recorded is not None else None
    if recorded is None or not isinstance(meta, dict) or EDITED_META not in meta:
        return args, args_json
    return tool.coerce_args(recorded.input), recorded.input
