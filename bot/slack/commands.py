"""The `/gatehouse` slash command: read the text, ask the engine, answer in ephemeral Block Kit.

Nothing here talks to Slack: `handle_command` returns a `CommandReply` (blocks and fallback
text) and the app sends it. `trigger` runs a pipeline, which may take a while, so it is also
`trigger_command` on its own: the app can run it on a worker thread and post the reply through
`response_url`. Bad input gets what was wrong and the usage line, an engine error its own
message, never a stack trace; whatever a person, a pipeline or a model wrote is escaped.

Who may do what is the engine's to check (`pipelines.authorization`), so Slack and the CLI share
one rule and every refusal is audited: anyone may inspect (`runs`, `run`, `pending`, `stats`);
`trigger` follows GATEHOUSE_TRIGGERERS, `replay` GATEHOUSE_OPERATORS, `undo` the tool's approvers
and the operators, `cancel`/`retry`/`resolve` the run's tools' approvers and the operators (each
open to anyone while unset). Every gated tool a run reaches still waits
for its approvers.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from bot.formatting import duration, money, window_label
from bot.slack.blocks import MESSAGE_BLOCKS, context, header, section
from bot.slack.home import busiest_first, pending_blocks, stats_blocks
from bot.slack.mrkdwn import SLASH_COMMAND, code, code_block, escape, mention, mentions, truncate
from bot.slack.quorum_lines import approved_by, decided_note, progress_line
from bot.slack.refusal_text import slack_text
from bot.slack.shown_fields import editable_note
from pipelines import Gatehouse, GatehouseError, Run, registered_pipelines
from pipelines.durations import parse_duration
from pipelines.errors import NotAuthorized
from pipelines.operations.stats import DEFAULT_WINDOWS, pipeline_stats
from pipelines.pauses import is_held_by_pause
from pipelines.replay import ReplayLine
from pipelines.run_totals import run_totals, totals_line
from pipelines.views import ApprovalView, CallView, TaskView
from storage.models import RunStatus

log = structlog.get_logger()

RUNS_SHOWN = 20
CALLS_SHOWN = 40
LINE_LIMIT = 300
VALUE_LIMIT = 700
STATS_BLOCKS = 45
STATS_TABLES = 20  # a phone screen or two; `stats PIPELINE` shows any other

# `/gatehouse stats … public`: the chart is shared in the channel, not sent to the asker's DM.
PUBLIC = "public"

USAGE = {
    "help": "help",
    "runs": "runs [pipeline] [status] [since]",
    "run": "run RUN_ID",
    "pending": "pending",
    "stats": "stats [pipeline] [duration] [public]",
    "trigger": "trigger PIPELINE {json} | trigger PIPELINE key=value …",
    "replay": "replay RUN_ID",
    "undo": "undo CALL_ID",
    "eval": "eval PIPELINE [reviewed]",
    "pause": "pause PIPELINE reason…",
    "resume": "resume PIPELINE [reason…]",
    "cancel": "cancel RUN_ID REASON…",
    "retry": "retry RUN_ID",
    "resolve": "resolve CALL_ID happened [{result json}] REASON… | resolve CALL_ID did-not-happen REASON…",
}
EXPLAIN = {
    "help": "this list",
    "runs": "recent runs, newest first; e.g. `runs refund_request failed 24h` (any order)",
    "run": "one run: input, output, every call, approvals",
    "pending": "approvals and human tasks waiting for a person",
    "stats": "volume, errors, p50/p95 latency, cost, tokens, approvals and human tasks "
    "(24 h and 7 d, or `7d`, `3h`…); the 7-day chart comes to you in your DM with Gatehouse, "
    "or with `public` is shared in the channel",
    "trigger": "run a pipeline; values are read as JSON when they parse, else as text "
    "(quote to keep text: `id='\"42\"'`)",
    "replay": "re-run a run's record with today's code, no side effects; shows where it diverges",
    "undo": "reverse a tool call (its approvers and the operators only)",
    "eval": "run the pipeline on its test set (or the runs `reviewed` in 30 days) with no side "
    "effects, in the background; the summary is posted in the channel, or sent to you privately "
    "where Gatehouse cannot post (operators only)",
    "pause": "stop a pipeline: no new runs from any trigger, its running runs wait before their "
    "next tool or model call (operators only)",
    "resume": "start a paused pipeline again; the runs it held carry on (operators only)",
    "cancel": "end a queued, waiting, running or stuck run; its approvals and tasks are closed "
    "(operators and the approvers of its tools)",
    "retry": "a new attempt of a failed, stuck or cancelled run: succeeded calls are reused",
    "resolve": "say whether a call whose outcome is unknown happened; the run carries on",
}
STATUS_ICONS = {
    "queued": ":inbox_tray:",
    "running": ":arrows_counterclockwise:",
    "waiting": ":hourglass_flowing_sand:",
    "succeeded": ":white_check_mark:",
    "failed": ":x:",
    "rejected": ":no_entry_sign:",
    "invalid_input": ":warning:",
    "needs_attention": ":rotating_light:",
    "cancelled": ":heavy_minus_sign:",
}
# Slack sends `&`, `<` and `>` in a command's text as entities; phones type curly quotes.
_ENTITIES = (("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&"))
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'"})
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class CommandReply:
    """An ephemeral answer: Block Kit `blocks` and the `text` notifications and old clients show."""

    blocks: list[dict[str, Any]]
    text: str
    response_type: str = "ephemeral"

    def to_payload(self) -> dict[str, Any]:
        """The body for `respond()` / `response_url`."""
        return {"response_type": self.response_type, "text": self.text, "blocks": self.blocks}


class UsageError(Exception):
    """The command text is wrong; the message says how, the usage line says what is expected."""

    def __init__(self, subcommand: str | None, message: str) -> None:
        super().__init__(message)
        self.subcommand = subcommand
        self.message = message


@dataclass(frozen=True)
class Invocation:
    """Who asked, with which engine, at what time (the end of every window and age)."""

    user_id: str
    gatehouse: Gatehouse
    now: datetime
    command: str = SLASH_COMMAND


# -- entry points ----------------------------------------------------------------------------


def handle_command(
    text: str,
    *,
    user_id: str,
    gatehouse: Gatehouse,
    now: datetime | None = None,
    command: str = SLASH_COMMAND,
) -> CommandReply:
    """Answer one `/gatehouse …` (the `text` Slack sent, entities and all)."""
    inv = _invocation(user_id, gatehouse, now, command)
    subcommand, rest = split_command(text)
    handler = _HANDLERS.get(subcommand)
    if handler is None:
        return usage_reply(
            inv, None, f"`{escape(truncate(subcommand, 60))}` is not a {escape(command)} command"
        )
    return _answer(inv, subcommand, lambda: handler(inv, rest))


def trigger_command(
    args: str,
    *,
    user_id: str,
    gatehouse: Gatehouse,
    now: datetime | None = None,
    command: str = SLASH_COMMAND,
) -> CommandReply:
    """`trigger PIPELINE …` with `args` = the text after `trigger` (see `split_command`): run the
    pipeline here, as `user_id`, until it finishes or waits, and report where it stands."""
    inv = _invocation(user_id, gatehouse, now, command)
    return _answer(inv, "trigger", lambda: _trigger(inv, args))


def split_command(text: str) -> tuple[str, str]:
    """(subcommand, the rest), with Slack's entities and curly quotes undone; `help` if empty."""
    for entity, char in _ENTITIES:
        text = text.replace(entity, char)
    parts = text.translate(_QUOTES).strip().split(None, 1)
    if not parts:
        return "help", ""
    return parts[0].lower(), parts[1] if len(parts) > 1 else ""


def _invocation(
    user_id: str,
    gatehouse: Gatehouse,
    now: datetime | None,
    command: str,
) -> Invocation:
    return Invocation(
        user_id=user_id,
        gatehouse=gatehouse,
        now=now if now is not None else gatehouse.rt.clock.now(),
        command=command,
    )


def _answer(inv: Invocation, subcommand: str, work: Callable[[], CommandReply]) -> CommandReply:
    try:
        return work()
    except UsageError as exc:
        return usage_reply(inv, exc.subcommand, exc.message)
    except NotAuthorized as exc:
        return error_reply(f":no_entry: {slack_text(exc)}")
    except GatehouseError as exc:
        return error_reply(f":warning: {escape(str(exc))}")
    except Exception:
        # A bug or an outage: the person gets one line, the log gets the traceback.
        log.exception("command.failed", subcommand=subcommand, user=inv.user_id)
        return error_reply(
            f":boom: `{escape(subcommand)}` failed unexpectedly; the error is in Gatehouse's log."
        )


# -- replies ---------------------------------------------------------------------------------


def reply(blocks: list[dict[str, Any]], text: str) -> CommandReply:
    """`text` is the fallback (mrkdwn too: escaped). At most 50 blocks (the last one says so when
    some were left out)."""
    if len(blocks) > MESSAGE_BLOCKS:
        blocks = [*blocks[: MESSAGE_BLOCKS - 1], context("…cut short to fit one Slack message")]
    return CommandReply(blocks=blocks, text=truncate(text, 3000))


def error_reply(message: str) -> CommandReply:
    """`message` is mrkdwn, already escaped."""
    return reply([section(message)], _plain(message))


def usage_line(inv: Invocation, subcommand: str | None) -> str:
    if subcommand is None:
        return f"Commands: {', '.join(f'`{s}`' for s in USAGE)} · `{escape(inv.command)} help`"
    return f"Usage: `{escape(inv.command)} {escape(USAGE[subcommand])}`"


def usage_reply(inv: Invocation, subcommand: str | None, message: str) -> CommandReply:
    """What was wrong (`message`, mrkdwn, escaped) and the usage line."""
    return reply(
        [section(f":warning: {message}"), context(usage_line(inv, subcommand))], _plain(message)
    )


def _plain(mrkdwn_text: str) -> str:
    """Fallback text: the first line without emoji codes (still escaped)."""
    first = mrkdwn_text.splitlines()[0] if mrkdwn_text else ""
    return re.sub(r":[a-z_]+: ?", "", first).strip() or "Gatehouse"


def status_text(status: str) -> str:
    return f"{STATUS_ICONS.get(status, ':grey_question:')} {escape(status)}"


# -- help --------------------------------------------------------------------------------------


def _help(inv: Invocation, rest: str) -> CommandReply:
    cmd = escape(inv.command)
    lines = [f"`{cmd} {escape(USAGE[name])}` — {EXPLAIN[name]}" for name in USAGE]
    examples = [
        f"`{cmd} runs refund_request waiting`",
        f"`{cmd} stats 7d`",
        f'`{cmd} trigger refund_request order_id=ord_1001 amount=12.50 reason="arrived late"`',
    ]
    return reply(
        [
            section("*Gatehouse commands* (only you see the answers)\n" + "\n".join(lines)),
            context("Examples: " + " · ".join(examples)),
        ],
        "Gatehouse commands",
    )


# -- runs --------------------------------------------------------------------------------------


def _known_pipeline(inv: Invocation, name: str) -> bool:
    """Registered, or with runs recorded (a pipeline removed from the code keeps its history)."""
    return name in registered_pipelines() or bool(inv.gatehouse.runs(pipeline=name, limit=1))


def _duration_or_none(token: str) -> timedelta | None:
    try:
        length = parse_duration(token)
    except ValueError:
        return None
    return length if length > timedelta(0) else None


def parse_runs_filters(inv: Invocation, tokens: Sequence[str]) -> dict[str, Any]:
    """`[pipeline] [status] [since]` in any order → `Gatehouse.runs` filters."""
    filters: dict[str, Any] = {}
    statuses = {s.value for s in RunStatus}
    for token in tokens:
        value: Any
        if token.lower() in statuses:
            kind, value = "status", token.lower()
        elif (length := _duration_or_none(token)) is not None:
            kind, value = "since", inv.now - length
        elif _known_pipeline(inv, token):
            kind, value = "pipeline", token
        else:
            known = ", ".join(f"`{escape(p)}`" for p in registered_pipelines()) or "none"
            raise UsageError(
                "runs",
                f"`{escape(token)}` is not a pipeline, a run status or a duration. "
                f"Pipelines: {known}. Statuses: {', '.join(sorted(statuses))}. "
                "Durations: 90s, 15m, 24h, 7d.",
            )
        if kind in filters:
            raise UsageError("runs", f"give one {kind} at most (`{escape(token)}` is a second one)")
        filters[kind] = value
    return filters


def run_line(run: Run, now: datetime) -> str:
    took = (
        duration((run.finished_at - run.created_at).total_seconds())
        if run.finished_at
        else "not finished"
    )
    by = f" · by {mention(run.trigger_user)}" if run.trigger_user else ""
    return (
        f"{STATUS_ICONS.get(run.status, ':grey_question:')} `{escape(run.id)}` "
        f"*{escape(run.pipeline)}* · {escape(run.status)} · "
        f"{duration(max((now - run.created_at).total_seconds(), 0.0))} ago · {took}{by}"
    )


def _runs(inv: Invocation, rest: str) -> CommandReply:
    filters = parse_runs_filters(inv, rest.split())
    found = inv.gatehouse.runs(**filters, limit=RUNS_SHOWN)
    described = [f"`{escape(filters['pipeline'])}`"] if "pipeline" in filters else []
    if "status" in filters:
        described.append(escape(filters["status"]))
    if "since" in filters:
        described.append(f"since {filters['since']:%Y-%m-%d %H:%M} UTC")
    what = "Runs" + (f" ({', '.join(described)})" if described else "")
    if not found:
        return reply([section(f"*{what}*: none match.")], f"{what}: none match")
    title = f"*{what}*, newest first" + (
        f" (the latest {RUNS_SHOWN})" if len(found) == RUNS_SHOWN else ""
    )
    blocks = [section(title), *_line_sections([run_line(r, inv.now) for r in found])]
    blocks.append(context(f"`{escape(inv.command)} run RUN_ID` shows one run"))
    return reply(blocks, f"{what}: {len(found)} shown")


def _line_sections(lines: Sequence[str], max_sections: int = 10) -> list[dict[str, Any]]:
    """Lines packed into as few sections as fit 3,000 characters each."""
    texts: list[str] = []
    for line in lines:
        line = truncate(line, LINE_LIMIT)
        if texts and len(texts[-1]) + 1 + len(line) <= 3000:
            texts[-1] += "\n" + line
        elif len(texts) < max_sections:
            texts.append(line)
        else:
            break
    return [section(t) for t in texts]


# -- run -------------------------------------------------------------------------------------


def _one_id(subcommand: str, rest: str, what: str) -> str:
    tokens = rest.split()
    if len(tokens) != 1:
        problem = "is missing" if not tokens else f"must be one word, got {len(tokens)}"
        raise UsageError(subcommand, f"the {what} {problem}")
    return tokens[0]


def call_line(number: int | None, c: CallView) -> str:
    took = (
        duration((c.finished_at - c.started_at).total_seconds())
        if c.finished_at
        else "not finished"
    )
    parts = [
        f"`{number if number is not None else '↶'}` {escape(c.kind)} `{escape(c.key)}`",
        f"{escape(c.status)} · {took} · `{escape(c.id)}`",
    ]
    if c.kind == "llm" and isinstance(c.meta, dict):
        if c.meta.get("confidence") is not None:
            parts.append(f"confidence {escape(str(c.meta['confidence']))}")
        if isinstance(c.meta.get("cost_usd"), int | float):
            parts.append(money(float(c.meta["cost_usd"])))
    if c.reversed_by:
        parts.append(f"undone by `{escape(c.reversed_by)}`")
    if c.error:
        parts.append(f"error: {truncate(escape(c.error), 120)}")
    return " · ".join(parts)


def _run(inv: Invocation, rest: str) -> CommandReply:
    run_id = _one_id("run", rest, "run id")
    run = inv.gatehouse.run(run_id)
    cmd = escape(inv.command)
    took = (
        f"took {duration((run.finished_at - run.created_at).total_seconds())}"
        if run.finished_at
        else "not finished"
    )
    who = f" by {mention(run.trigger_user)}" if run.trigger_user else ""
    how = f" via {escape(run.trigger)}" if run.trigger else ""
    by = f"triggered{who}{how} · " if who or how else ""
    blocks = [
        header(f"Run {run.id}"),
        section(
            f"*{escape(run.pipeline)}* · {status_text(run.status)}\n{by}created "
            f"{run.created_at:%Y-%m-%d %H:%M:%S} UTC · {took}"
        ),
        section("*Input*\n" + code_block(run.input, VALUE_LIMIT)),
    ]
    if is_held_by_pause(run):
        blocks.append(section(f":double_vertical_bar: Waiting: {escape(run.waiting_reason or '')}"))
    if run.error:
        blocks.append(section("*Error*\n" + code_block(run.error, VALUE_LIMIT)))
    if run.output is not None:
        blocks.append(section("*Output*\n" + code_block(run.output, VALUE_LIMIT)))
    numbered = [c for c in run.calls if c.kind != "reversal"]
    lines = [call_line(i, c) for i, c in enumerate(numbered, 1)]
    lines += [call_line(None, c) for c in run.calls if c.kind == "reversal"]
    if lines:
        shown = lines[:CALLS_SHOWN]
        blocks.append(section(f"*Calls* ({len(lines)})"))
        blocks += _line_sections(shown)
        if len(lines) > len(shown):
            blocks.append(context(f"…and {len(lines) - len(shown)} more calls"))
    blocks.append(section(f"*Totals* · {escape(totals_line(run_totals(run)))}"))
    decisions = [approval_line(a, inv.now) for a in run.approvals]
    decisions += [task_line(t) for t in run.tasks]
    if decisions:
        blocks.append(section("*Approvals and human tasks*"))
        blocks += _line_sections(decisions, max_sections=5)
    blocks.append(
        context(
            f"`{cmd} replay {escape(run.id)}` re-runs it dry · `{cmd} undo CALL_ID` reverses a tool call"
        )
    )
    return reply(blocks, escape(f"Run {run.id} ({run.pipeline}): {run.status}"))


def approval_line(a: ApprovalView, now: datetime) -> str:
    head = f":lock: `{escape(a.id)}` `{escape(a.tool)}`: {escape(a.status)}"
    if a.status == "pending":
        who = mentions(a.approvers, 300)
        if a.four_eyes and a.trigger_user:
            who += f", not {mention(a.trigger_user)} (four-eyes)"
        expiry = ""
        if a.expires_at is not None:
            expiry = f" · expires in {duration(max((a.expires_at - now).total_seconds(), 0.0))}"
        progress = f" · {progress_line(a.quorum)}" if a.quorum is not None else ""
        edits = f" · {note}" if (note := editable_note(a)) else ""
        return f"{head} · waiting for {who}{progress}{edits}{expiry}"
    detail = f" by {mention(a.decided_by)}" if a.decided_by else ""
    if a.status == "approved" and a.quorum is not None and a.quorum.votes:
        detail = f" by {approved_by(a.quorum)}"  # every approver, in order
    if a.reason:
        detail += f": {truncate(escape(a.reason), 150)}"
    return head + detail + decided_note(a)  # rejected or expired: who had approved before


def task_line(t: TaskView) -> str:
    head = (
        f":raising_hand: `{escape(t.id)}` {truncate(escape(t.question), 150)}: {escape(t.status)}"
    )
    if t.status == "open":
        return f"{head} · for {mentions(t.answerers, 300, empty='nobody')}"
    return head + (f" by {mention(t.answered_by)}" if t.answered_by else "")


# -- pending, stats --------------------------------------------------------------------------


def _no_arguments(subcommand: str, rest: str) -> None:
    if rest.strip():
        raise UsageError(subcommand, f"`{subcommand}` takes no arguments")


def _pending(inv: Invocation, rest: str) -> CommandReply:
    _no_arguments("pending", rest)
    items = inv.gatehouse.pending()
    approvals = sum(1 for i in items if isinstance(i, ApprovalView))
    title = (
        f"*Waiting for people*: {approvals} approval(s), {len(items) - approvals} human task(s), "
        "oldest first"
    )
    blocks = [section(title), *pending_blocks(items, inv.now, command=inv.command)]
    return reply(blocks, f"{len(items)} waiting for people")


def _stats(inv: Invocation, rest: str) -> CommandReply:
    pipeline: str | None = None
    windows: tuple[timedelta, ...] | None = None
    for token in rest.split():
        if token.lower() == PUBLIC:  # where the chart goes (bot/slack/commands_listener.py)
            continue
        length = _duration_or_none(token)
        if length is not None:
            if windows is not None:
                raise UsageError("stats", f"give one duration at most (`{escape(token)}` too)")
            windows = (length,)
        elif pipeline is not None:
            raise UsageError("stats", f"give one pipeline at most (`{escape(token)}` too)")
        elif _known_pipeline(inv, token):
            pipeline = token
        else:
            known = ", ".join(f"`{escape(p)}`" for p in registered_pipelines()) or "none"
            raise UsageError(
                "stats",
                f"`{escape(token)}` is neither a pipeline nor a duration (24h, 7d). "
                f"Pipelines: {known}",
            )
    windows = windows or DEFAULT_WINDOWS
    report = pipeline_stats(inv.gatehouse.rt, now=inv.now, windows=windows, pipeline=pipeline)
    labels = " and ".join(window_label(w) for w in windows)
    title = f"*Stats*, last {labels} up to {inv.now:%Y-%m-%d %H:%M} UTC"
    tables = stats_blocks(report, STATS_BLOCKS, max_tables=STATS_TABLES, command=inv.command)
    blocks = [section(title), *tables]
    blocks.append(
        context(
            "runs: created in the window · err: failed or needs_attention, of the runs that "
            "finished in it · p50/p95: created → finished · $/run: LLM cost ÷ runs · tokens: "
            "prompt + completion · appr/rej/exp: approvals asked in the window, by decision · "
            "decide: median time to a decision · tasks: share of runs that asked a person"
        )
    )
    busiest = busiest_first(report.pipelines)
    fallback = ", ".join(f"{escape(p.pipeline)}: {p.windows[0].runs} runs" for p in busiest[:5])
    return reply(blocks, f"Stats ({labels}): {fallback or 'no pipelines'}")


# -- trigger ---------------------------------------------------------------------------------


def parse_trigger(args: str) -> tuple[str, dict[str, Any]]:
    """`PIPELINE {json}` or `PIPELINE key=value …` (or just `PIPELINE`) → (name, input)."""
    parts = args.strip().split(None, 1)
    if not parts:
        raise UsageError("trigger", "name the pipeline to run")
    name, rest = parts[0], (parts[1].strip() if len(parts) > 1 else "")
    if not rest:
        return name, {}
    if rest.startswith("{"):
        try:
            value = json.loads(rest)
        except json.JSONDecodeError as exc:
            near = escape(rest[max(exc.pos - 15, 0) : exc.pos + 15])
            raise UsageError(
                "trigger",
                f"the input is not valid JSON: {escape(exc.msg)} at column {exc.colno} "
                f"(near `{near}`); nothing was run",
            ) from None
        if not isinstance(value, dict):
            raise UsageError("trigger", "the JSON input must be an object")
        return name, value
    try:
        tokens = shlex.split(rest)
    except ValueError as exc:
        raise UsageError(
            "trigger", f"cannot read the arguments ({escape(str(exc))}); nothing was run"
        ) from None
    values: dict[str, Any] = {}
    for token in tokens:
        key, sep, raw = token.partition("=")
        if not sep or not _KEY.match(key):
            raise UsageError(
                "trigger",
                f"`{escape(truncate(token, 60))}` is not `key=value`; nothing was run",
            )
        if key in values:
            raise UsageError("trigger", f"`{escape(key)}` is given twice; nothing was run")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return name, values


def _trigger(inv: Invocation, args: str) -> CommandReply:
    name, payload = parse_trigger(args)
    run = inv.gatehouse.trigger(name, payload, user=inv.user_id, source="slack")
    if run.status == RunStatus.WAITING:
        run = inv.gatehouse.run(run.id)
    return run_outcome_reply(inv, run)


def run_outcome_reply(inv: Invocation, run: Run) -> CommandReply:
    """Where a run stands after `trigger`: its output, its error, or what it waits for."""
    cmd = escape(inv.command)
    blocks = [
        section(f"Run `{escape(run.id)}` (*{escape(run.pipeline)}*): {status_text(run.status)}")
    ]
    if run.status == RunStatus.INVALID_INPUT:
        blocks.append(section(f"*Nothing was run.* {truncate(escape(run.error or ''), 2000)}"))
        blocks.append(context(usage_line(inv, "trigger")))
    elif run.error:
        blocks.append(section("*Error*\n" + code_block(run.error, VALUE_LIMIT)))
    if run.output is not None:
        blocks.append(section("*Output*\n" + code_block(run.output, VALUE_LIMIT)))
    waiting = [approval_line(a, inv.now) for a in run.approvals if a.status == "pending"]
    waiting += [task_line(t) for t in run.tasks if t.status == "open"]
    if waiting:
        blocks.append(section("*Waiting for*\n" + "\n".join(waiting)))
    elif run.status == RunStatus.WAITING and is_held_by_pause(run):
        blocks.append(
            section(
                f":double_vertical_bar: Waiting: {escape(run.waiting_reason or '')}. "
                f"`{cmd} resume {escape(run.pipeline)}` carries it on."
            )
        )
    elif run.status == RunStatus.WAITING:
        blocks.append(section("Waiting for a timer (a rate-limit window); a worker wakes it."))
    if run.status == RunStatus.QUEUED:
        blocks.append(section("Queued: a worker will carry it on."))
    blocks.append(context(f"`{cmd} run {escape(run.id)}` shows every call"))
    return reply(blocks, escape(f"Run {run.id} ({run.pipeline}): {run.status}"))


# -- replay, undo ----------------------------------------------------------------------------


def replay_line(line: ReplayLine) -> str:
    """One recorded call as the replay met it (mrkdwn), like `call_line` for a run's calls; the
    terminal's whole report is `bot.cli.render.replay_lines`."""
    # A call it would make is shown once, in full, under the lines.
    shown = line.detail is not None and line.outcome != "would call"
    detail = f" {code(line.detail, 160)}" if shown else ""
    return (
        f"`{line.position}` {escape(line.kind)} `{escape(line.key)}` "
        f"*{escape(line.outcome)}*{detail}"
    )


def _replay(inv: Invocation, rest: str) -> CommandReply:
    run_id = _one_id("replay", rest, "run id")
    report = inv.gatehouse.replay(run_id, user=inv.user_id)
    blocks = [
        section(
            f"*Replay of `{escape(report.run_id)}`* ({escape(report.pipeline)}) with today's "
            f"code, no side effects · recorded: {status_text(report.recorded_status)}"
        ),
        *_line_sections([replay_line(line) for line in report.lines[:CALLS_SHOWN]]),
    ]
    for call in report.would_call:
        blocks.append(
            section(
                f":eyes: Would call `{escape(str(call.get('tool')))}` {code(call.get('args'), 600)}"
            )
        )
    if report.divergence:
        blocks.append(section(f":warning: *Diverges:* {truncate(escape(report.divergence), 1500)}"))
    if report.error:
        blocks.append(section(f"*Error:* {truncate(escape(report.error), 1500)}"))
    if report.finished:
        verdict = (
            ":white_check_mark: same output as the record"
            if report.output_matches
            else ":warning: a different output from the record"
        )
        blocks.append(
            section(f"Finished with {verdict}\n" + code_block(report.output, VALUE_LIMIT))
        )
    elif not report.error and not report.divergence and not report.would_call:
        blocks.append(section("Stopped where the record stops (the run had not finished)."))
    summary = "diverges" if report.divergence else "finished" if report.finished else "stopped"
    return reply(blocks, escape(f"Replay of {report.run_id}: {summary}"))


def _undo(inv: Invocation, rest: str) -> CommandReply:
    call_id = _one_id("undo", rest, "call id")
    reversal = inv.gatehouse.undo(call_id, user=inv.user_id)
    return reply(
        [
            section(
                f":leftwards_arrow_with_hook: Undid call `{escape(call_id)}` "
                f"(`{escape(reversal.name)}`): reversal call `{escape(reversal.id)}` "
                f"{status_text(reversal.status)}"
            )
        ],
        escape(f"Undid call {call_id} ({reversal.name})"),
    )


def _eval(inv: Invocation, rest: str) -> CommandReply:
    """Evals run for minutes: the slash listener hands them to `bot.slack.eval`, which posts the
    summary in the channel. A direct call (no channel to post in) is told where they run."""
    raise UsageError(
        "eval",
        "an eval runs in the background from Slack (its summary is posted in the channel), "
        "or in a terminal: `gatehouse eval PIPELINE`",
    )


# -- pause, resume ---------------------------------------------------------------------------


def _pipeline_and_reason(subcommand: str, rest: str) -> tuple[str, str]:
    parts = rest.strip().split(None, 1)
    if not parts:
        raise UsageError(subcommand, "give the pipeline's name")
    name = parts[0]
    if name not in registered_pipelines():
        known = ", ".join(f"`{escape(p)}`" for p in registered_pipelines()) or "none"
        raise UsageError(subcommand, f"`{escape(truncate(name, 60))}` is not a pipeline: {known}")
    return name, parts[1].strip() if len(parts) > 1 else ""


def _pause(inv: Invocation, rest: str) -> CommandReply:
    name, reason = _pipeline_and_reason("pause", rest)
    if not reason:
        raise UsageError("pause", f"say why `{escape(name)}` is paused (it is kept in the audit)")
    changed = inv.gatehouse.pause_pipeline(name, user=inv.user_id, reason=reason)
    pause = inv.gatehouse.pipeline_pause(name)
    cmd = escape(inv.command)
    if not changed and pause is not None:
        text = f":double_vertical_bar: *{escape(name)}* was already {escape(pause.describe())}"
        return reply([section(text)], escape(f"{name} was already paused"))
    return reply(
        [
            section(
                f":double_vertical_bar: Paused *{escape(name)}*: no new runs from any trigger, "
                "and its running runs wait before their next tool or model call."
            ),
            context(f"`{cmd} resume {escape(name)}` starts it again"),
        ],
        escape(f"Paused {name}"),
    )


def _resume(inv: Invocation, rest: str) -> CommandReply:
    name, reason = _pipeline_and_reason("resume", rest)
    changed = inv.gatehouse.resume_pipeline(name, user=inv.user_id, reason=reason or None)
    if not changed:
        text = f"*{escape(name)}* is not paused; nothing changed"
        return reply([section(text)], escape(f"{name} is not paused"))
    text = f":arrow_forward: Resumed *{escape(name)}*: its waiting runs are queued again."
    return reply([section(text)], escape(f"Resumed {name}"))


# -- run operations (pipelines/run_operations.py) --------------------------------------------


def _id_and_text(subcommand: str, rest: str, what: str) -> tuple[str, str]:
    head, _, tail = rest.strip().partition(" ")
    if not head:
        raise UsageError(subcommand, f"the {what} is missing")
    return head, tail.strip()


def _cancel(inv: Invocation, rest: str) -> CommandReply:
    run_id, reason = _id_and_text("cancel", rest, "run id")
    if not reason:
        raise UsageError("cancel", "say why after the run id; it goes on the run's cards")
    was = inv.gatehouse.run(run_id).status
    run = inv.gatehouse.cancel(run_id, user=inv.user_id, reason=reason)
    note = " It stops before its next tool or model call." if was == RunStatus.RUNNING else ""
    return reply(
        [
            section(
                f":heavy_minus_sign: Cancelled run `{escape(run.id)}` (*{escape(run.pipeline)}*,"
                f" was {escape(was)}): {escape(truncate(reason, 500))}.{note}"
            )
        ],
        escape(f"Cancelled run {run.id}"),
    )


def _retry(inv: Invocation, rest: str) -> CommandReply:
    run_id = _one_id("retry", rest, "run id")
    inv.gatehouse.retry(run_id, user=inv.user_id)
    inv.gatehouse.resume(run_id)
    return run_outcome_reply(inv, inv.gatehouse.run(run_id))


_VERDICTS = {"happened": True, "did-not-happen": False}


def parse_resolve(rest: str) -> tuple[str, bool, Any, str]:
    """`CALL_ID happened [{json}] reason…` or `CALL_ID did-not-happen reason…`."""
    call_id, tail = _id_and_text("resolve", rest, "call id")
    verdict, _, tail = tail.partition(" ")
    if verdict not in _VERDICTS:
        raise UsageError("resolve", "after the call id say `happened` or `did-not-happen`")
    happened, tail, result = _VERDICTS[verdict], tail.strip(), None
    if tail.startswith("{"):
        if not happened:
            raise UsageError("resolve", "a result goes with `happened` only")
        try:
            result, end = json.JSONDecoder().raw_decode(tail)
        except json.JSONDecodeError as exc:
            raise UsageError("resolve", f"the result is not JSON: {escape(exc.msg)}") from exc
        tail = tail[end:].strip()
    if not tail:
        raise UsageError("resolve", "say how you know, after the verdict (and the result)")
    return call_id, happened, result, tail


def _resolve(inv: Invocation, rest: str) -> CommandReply:
    call_id, happened, result, reason = parse_resolve(rest)
    call = inv.gatehouse.resolve(
        call_id, user=inv.user_id, happened=happened, reason=reason, result=result
    )
    run_id = call.run_id or ""
    if inv.gatehouse.run(run_id).status == RunStatus.QUEUED:
        inv.gatehouse.resume(run_id)
    verdict = "it happened" if happened else "it did not happen"
    head = section(
        f":white_check_mark: Resolved call `{escape(call_id)}` (`{escape(call.name)}`): {verdict}"
    )
    outcome = run_outcome_reply(inv, inv.gatehouse.run(run_id))
    return reply([head, *outcome.blocks], escape(f"Resolved call {call_id}: {verdict}"))


_HANDLERS: dict[str, Callable[[Invocation, str], CommandReply]] = {
    "help": _help,
    "runs": _runs,
    "run": _run,
    "pending": _pending,
    "stats": _stats,
    "trigger": _trigger,
    "replay": _replay,
    "pause": _pause,
    "resume": _resume,
    "undo": _undo,
    "eval": _eval,
    "cancel": _cancel,
    "retry": _retry,
    "resolve": _resolve,
}
