"""Block Kit for the weekly review: pure functions from review and run views to blocks.

The listeners in `bot.slack.review` find their way back through these ids:

- a reply's buttons: `review.looks_right` (value: the item id) and `review.flag` (value:
  `ITEM_ID:RUN_ID:PIPELINE`; older replies `ITEM_ID:RUN_ID`), in an actions block
  `review.<item id>`;
- the flag modal: callback `review.flag`, `private_metadata` = `ITEM_ID:PIPELINE`, inputs
  `category` (static select, required), `note`, the "what it should have been" form generated
  from the pipeline's output schema like a human task's (`bot.slack.forms`; blocks `expected.FIELD`,
  each optional) and `expected` (the same as JSON); all but the category optional. What is
  filled becomes the item's `expected`, the test case's expectation in the export.

Everything a run, a model or a reviewer wrote is escaped; values are cut to a few hundred
characters with the full run one command away (`/gatehouse run RUN_ID`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bot.formatting import clock, share, usd
from bot.slack import forms, shown_fields
from bot.slack.blocks import actions, button, context, plain_text, section
from bot.slack.mrkdwn import code, escape, mention, truncate
from pipelines import Run
from pipelines.display import display_marks
from pipelines.operations.review import FLAG_CATEGORIES, ReviewItemView, ReviewWeekView, zone
from pipelines.tools import lookup_tool
from pipelines.views import CallView
from storage.review import FLAGGED, LOOKS_RIGHT, SUMMARIZED, WeekCounts

LOOKS_RIGHT_ACTION = "review.looks_right"
FLAG_ACTION = "review.flag"
FLAG_CALLBACK = "review.flag"
CATEGORY_BLOCK = CATEGORY_ACTION = "category"
NOTE_BLOCK = NOTE_ACTION = "note"
EXPECTED_BLOCK = EXPECTED_ACTION = "expected"
EXPECTED_FIELD_PREFIX = "expected."  # + a field of the output schema
EXPECTED_FIELDS_LIMIT = 90  # a modal holds 100 blocks
ITEM_BLOCK_PREFIX = "review."

DEFAULT_PACE_SECONDS = 1.1  # between posts: Slack allows about one message a second a channel
VALUE_LIMIT = 500
NOTE_LIMIT = 1500
EXPECTED_LIMIT = 3000
FLAGS_LISTED = 20
TOOLS_LISTED = 8


def item_block_id(item_id: int) -> str:
    return f"{ITEM_BLOCK_PREFIX}{item_id}"


def _day(value: datetime, timezone: str) -> str:
    local = value.astimezone(zone(timezone))
    return f"{local.day} {local:%b %Y}"


def progress_line(week: ReviewWeekView) -> str:
    line = f"{week.reviewed}/{week.total} reviewed, {week.flagged} flagged"
    if week.status == SUMMARIZED:
        line += " · summary in the thread"
    return line


def parent_text(week: ReviewWeekView, timezone: str) -> str:
    """The parent's `text` (notifications, screen readers)."""
    head = f"Weekly review: {week.total} runs, week of {_day(week.week_start, timezone)}"
    return f"{head} — {progress_line(week)}" if week.total else head


def parent_blocks(week: ReviewWeekView, timezone: str) -> list[dict[str, Any]]:
    since, until = _day(week.window_since, timezone), _day(week.picked_at, timezone)
    head = f"*Weekly review: {week.total} runs, week of {_day(week.week_start, timezone)}*"
    if not week.total:
        return [
            section(f"{head}\nNo runs finished between {since} and {until}: nothing to review.")
        ]
    about = (
        f"{head}\nA random sample of the runs that finished between {since} and {until}. "
        "Open each reply in the thread and mark it *Looks right* or *Flag* it."
    )
    return [section(about), context(f"*{progress_line(week)}*")]


def _confidences(run: Run) -> str:
    parts = []
    for call in run.calls:
        if call.kind != "llm":
            continue
        meta = call.meta if isinstance(call.meta, Mapping) else {}
        value = meta.get("confidence")
        name = escape(truncate(call.name, 60))
        if isinstance(value, int | float) and not isinstance(value, bool):
            parts.append(f"{name} {value:.2f}")
        elif meta.get("answered_by") == "human":
            parts.append(f"{name} answered by a person")
        elif call.status != "succeeded":
            parts.append(f"{name} no answer ({escape(truncate(call.status, 30))})")
        else:
            parts.append(f"{name} (no confidence)")
    return ", ".join(parts)


def _shown_input(call: CallView) -> str:
    """`\n    order_id `ord_1002` · amount 180.00 EUR …`: a tool call's arguments by the tool's
    display types (`pipelines.display`), or nothing when the tool marks none."""
    tool = lookup_tool(call.name)
    if tool is None or not display_marks(tool.args_model) or not isinstance(call.input, Mapping):
        return ""
    return f"\n    {shown_fields.call_args_line(call.name, call.input, 400)}"


def _tools(run: Run) -> str:
    approvals = {a.call_id: a for a in run.approvals}
    lines = []
    tools = [c for c in run.calls if c.kind in ("tool", "reversal")]
    for call in tools[:TOOLS_LISTED]:
        line = f"• {escape(truncate(call.name, 80))} — {escape(truncate(call.status, 30))}"
        approval = approvals.get(call.id)
        if approval is not None and approval.status != "pending":
            who = mention(truncate(approval.decided_by, 100) if approval.decided_by else None)
            line += f", {escape(approval.status)} by {who}"
        line += _shown_input(call)
        lines.append(line)
    if len(tools) > TOOLS_LISTED:
        lines.append(f"_and {len(tools) - TOOLS_LISTED} more_")
    return "\n".join(lines)


def _cost(run: Run) -> str:
    costs = [
        c.meta.get("cost_usd") for c in run.calls if c.kind == "llm" and isinstance(c.meta, Mapping)
    ]
    if not costs:
        return "no model calls"
    known = [c for c in costs if isinstance(c, int | float) and not isinstance(c, bool)]
    text = usd(sum(known)) if known else "cost unknown"
    return text + (" (some calls unpriced)" if known and len(known) < len(costs) else "")


def verdict_line(item: ReviewItemView) -> str:
    who = mention(truncate(item.reviewer, 100) if item.reviewer else None)
    if item.verdict == LOOKS_RIGHT:
        return f"✅ Looks right — {who}"
    if item.verdict == FLAGGED:
        category = FLAG_CATEGORIES.get(item.category or "", item.category or "flagged")
        line = f"🚩 Flagged by {who}: *{escape(category)}*"
        if item.note:
            line += f" — {escape(truncate(item.note, 600))}"
        if item.expected is not None:
            line += f"\nShould have been: {code(item.expected, 600)}"
        return line
    return ""


def item_blocks(
    item: ReviewItemView, run: Run | None, total: int, *, command: str
) -> list[dict[str, Any]]:
    """One run of the review: what it did, what it cost, how to open it, and the buttons."""
    run_id = escape(truncate(item.run_id, 100))
    opener = f"`{escape(command)} run {run_id}`"
    if run is None:
        return [section(f"*{item.position}/{total}* · run `{run_id}` no longer exists.")]
    lines = [
        f"*{item.position}/{total} · {escape(truncate(run.pipeline, 100))}* · "
        f"`{escape(truncate(run.status, 30))}` · run `{run_id}`",
        f"*Input* {code(run.input, VALUE_LIMIT)}",
    ]
    if run.error:
        lines.append(f"*Error* {code(run.error, VALUE_LIMIT)}")
    lines.append(f"*Output* {code(run.output, VALUE_LIMIT)}")
    blocks = [section("\n".join(lines))]
    confidences, tools = _confidences(run), _tools(run)
    if confidences:
        blocks.append(section(f"*Model confidence* {confidences}"))
    if tools:
        blocks.append(section(f"*Tools*\n{tools}"))
    facts = [_cost(run)]
    if run.finished_at is not None:
        facts.append(f"finished {clock(run.finished_at)}")
    facts.append(f"open it: {opener}")
    blocks.append(context(" · ".join(facts)))
    if item.verdict:
        blocks.append(context(verdict_line(item)))
    blocks.append(
        actions(
            item_block_id(item.id),
            button("Looks right", LOOKS_RIGHT_ACTION, str(item.id), style="primary"),
            button("Flag", FLAG_ACTION, f"{item.id}:{item.run_id}:{run.pipeline}", style="danger"),
        )
    )
    return blocks


def item_text(item: ReviewItemView, run: Run | None, total: int) -> str:
    what = f"{escape(run.pipeline)} run {escape(item.run_id)} ({escape(run.status)})" if run else ""
    return f"Review {item.position}/{total}: {what or escape(item.run_id)}"


def _expected_fields(output_schema: Any) -> list[forms.FormField]:
    fields = forms.form_fields(output_schema) if output_schema is not None else None
    return fields if fields is not None and len(fields) <= EXPECTED_FIELDS_LIMIT else []


def _expected_blocks(output_schema: Any) -> list[dict[str, Any]]:
    """The output schema as a form, every field optional: a reviewer fills what was wrong."""
    fields = _expected_fields(output_schema)
    if not fields:
        return []
    blocks = [
        section(
            "*What it should have been* (optional): fill the fields the run got wrong; they "
            "become `expected` in the exported test case."
        )
    ]
    for item in fields:
        block = forms._input_block(item, None)  # the human-task form's own inputs
        block["block_id"] = f"{EXPECTED_FIELD_PREFIX}{forms.field_id(item.name)}"
        block["optional"] = True
        blocks.append(block)
    return blocks


def flag_modal(
    item_id: int, run_id: str, pipeline: str | None = None, output_schema: Any = None
) -> dict[str, Any]:
    """Built from the button's value and the pipeline's declared output schema alone: it opens
    before anything is read from the database (3 s trigger)."""
    options = [
        {"text": plain_text(label, 75), "value": value} for value, label in FLAG_CATEGORIES.items()
    ]
    return {
        "type": "modal",
        "callback_id": FLAG_CALLBACK,
        "private_metadata": f"{item_id}:{pipeline}" if pipeline else str(item_id),
        "title": plain_text("Flag a run", 24),
        "submit": plain_text("Flag", 24),
        "close": plain_text("Cancel", 24),
        "blocks": [
            section(
                f"What is wrong with run `{escape(truncate(run_id, 100))}`? "
                "Flags are exported as a regression set (`gatehouse review export --flagged`)."
            ),
            {
                "type": "input",
                "block_id": CATEGORY_BLOCK,
                "label": plain_text("What went wrong", 2000),
                "element": {
                    "type": "static_select",
                    "action_id": CATEGORY_ACTION,
                    "placeholder": plain_text("Pick a category", 150),
                    "options": options,
                },
            },
            {
                "type": "input",
                "block_id": NOTE_BLOCK,
                "optional": True,
                "label": plain_text("Note", 2000),
                "element": {
                    "type": "plain_text_input",
                    "action_id": NOTE_ACTION,
                    "multiline": True,
                    "max_length": NOTE_LIMIT,
                    "placeholder": plain_text("What should have happened, and why", 150),
                },
            },
            *_expected_blocks(output_schema),
            {
                "type": "input",
                "block_id": EXPECTED_BLOCK,
                "optional": True,
                "label": plain_text(
                    "…or the whole output as JSON"
                    if _expected_fields(output_schema)
                    else "What the output should have been (JSON)",
                    2000,
                ),
                "hint": plain_text("Becomes `expected` in the exported test case.", 2000),
                "element": {
                    "type": "plain_text_input",
                    "action_id": EXPECTED_ACTION,
                    "multiline": True,
                    "max_length": EXPECTED_LIMIT,
                    "placeholder": plain_text('e.g. {"route": "refunded"}', 150),
                },
            },
        ],
    }


def _expected_from_fields(values: Mapping[str, Any], output_schema: Any) -> dict[str, Any]:
    """The filled fields of the "what it should have been" form (empty ones left out)."""
    state = {
        block[len(EXPECTED_FIELD_PREFIX) :]: value
        for block, value in values.items()
        if block.startswith(EXPECTED_FIELD_PREFIX)
    }
    if not state or not _expected_fields(output_schema):
        return {}
    answer = forms.answer_from_submission(output_schema, state)
    filled = {
        item.name
        for item in _expected_fields(output_schema)
        if _filled(state.get(forms.field_id(item.name)))
    }
    return {name: value for name, value in answer.items() if name in filled}


def _filled(element_state: Any) -> bool:
    if not isinstance(element_state, Mapping):
        return False
    inner = next(iter(element_state.values()), None) if element_state else None
    if not isinstance(inner, Mapping):
        return False
    return any(
        inner.get(key) not in (None, "", [])
        for key in ("value", "selected_option", "selected_options", "selected_date")
    )


def flag_from_submission(
    values: Mapping[str, Any], output_schema: Any = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """(category, note, expected) from the modal's state, and errors keyed by input block.
    `expected` is the JSON box's object with the form's filled fields over it."""
    selected = values.get(CATEGORY_BLOCK, {}).get(CATEGORY_ACTION, {}).get("selected_option")
    category = selected.get("value") if isinstance(selected, Mapping) else None
    note = values.get(NOTE_BLOCK, {}).get(NOTE_ACTION, {}).get("value") or ""
    expected_text = (
        values.get(EXPECTED_BLOCK, {}).get(EXPECTED_ACTION, {}).get("value") or ""
    ).strip()
    errors: dict[str, str] = {}
    if category not in FLAG_CATEGORIES:
        errors[CATEGORY_BLOCK] = "Pick what went wrong."
    expected: Any = None
    if expected_text:
        try:
            expected = json.loads(expected_text)
        except json.JSONDecodeError as exc:
            errors[EXPECTED_BLOCK] = (
                f"Not JSON ({exc.msg} at column {exc.colno}); leave it empty or fix it."
            )
    fields = _expected_from_fields(values, output_schema)
    if fields:
        if expected is None:
            expected = fields
        elif isinstance(expected, dict):
            expected = {**expected, **fields}
        else:
            errors[EXPECTED_BLOCK] = "The JSON must be an object when fields are filled above."
    return {"category": category, "note": note.strip() or None, "expected": expected}, errors


def summary_blocks(
    week: ReviewWeekView, earlier: list[WeekCounts], timezone: str, runs: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The thread's closing message: how many were flagged, against earlier weeks, and what.
    `runs` maps run ids to their pipelines."""
    rate = week.flag_rate
    done = "All runs reviewed" if week.all_reviewed else "The week is over"
    head = (
        f"*Weekly review summary, week of {_day(week.week_start, timezone)}*\n{done}: "
        f"{week.reviewed}/{week.total} reviewed, *{week.flagged} flagged*"
        + (f" ({share(week.flagged, week.reviewed)} of those reviewed)" if week.reviewed else "")
    )
    blocks = [section(head)]
    compared = [w for w in earlier if w.reviewed]
    if compared:
        lines = [
            f"• week of {_day(w.week_start, timezone)}: {w.flagged} of {w.reviewed} "
            f"({share(w.flagged, w.reviewed)})"
            for w in compared
        ]
        flagged, reviewed = sum(w.flagged for w in compared), sum(w.reviewed for w in compared)
        before = flagged / reviewed
        trend = ""
        if rate is not None:
            points = round(100 * (rate - before))
            trend = (
                f"up {points} points on"
                if points > 0
                else (f"down {-points} points on" if points < 0 else "the same as")
            )
            trend = f"\nThis week is {trend} the {len(compared)} weeks before ({share(flagged, reviewed)})."
        blocks.append(section("*Flag rate in earlier weeks*\n" + "\n".join(lines) + trend))
    else:
        blocks.append(context("No earlier reviews to compare with yet."))
    flags = [i for i in week.items if i.verdict == FLAGGED]
    if flags:
        lines = []
        for item in flags[:FLAGS_LISTED]:
            category = FLAG_CATEGORIES.get(item.category or "", item.category or "")
            pipeline = escape(truncate(runs.get(item.run_id, "?"), 80))
            line = f"• `{escape(item.run_id)}` {pipeline} — *{escape(category)}*"
            if item.note:
                line += f": {escape(truncate(item.note, 150))}"
            lines.append(line)
        blocks.append(section("*Flagged*\n" + "\n".join(lines)))
        counts = Counter(FLAG_CATEGORIES.get(i.category or "", "other") for i in flags)
        by_category = " · ".join(f"{escape(c.lower())} {n}" for c, n in counts.most_common())
        blocks.append(
            context(
                f"By category: {by_category}. As a regression set: "
                "`gatehouse review export --flagged --since 7d > regressions.jsonl`"
            )
        )
    return blocks


def summary_text(week: ReviewWeekView, timezone: str) -> str:
    return (
        f"Weekly review summary, week of {_day(week.week_start, timezone)}: "
        f"{week.reviewed}/{week.total} reviewed, {week.flagged} flagged"
    )
