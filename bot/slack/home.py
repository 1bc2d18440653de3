"""The App Home dashboard, and the stats table and pending-item lines `/gatehouse` shares with it.

Pure functions from engine views to Block Kit: nothing here calls Slack or the database. The
view always fits Slack's limits (100 blocks, 3,000 characters a text): with many pipelines the
busiest get a table each, the rest are packed together or listed by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.formatting import DASH, ago, count, duration, money, rate, window_label
from bot.slack.blocks import DIVIDER, TEXT_LIMIT, VIEW_BLOCKS, context, header, section
from bot.slack.cards import approval_block_id, edit_button
from bot.slack.mrkdwn import SLASH_COMMAND, code, escape, mention, mentions, slack_len, truncate
from bot.slack.quorum_lines import progress_line
from bot.slack.shown_fields import call_args_line
from pipelines.budgets import BudgetStatus
from pipelines.operations.drift import DriftFigures
from pipelines.operations.readiness import Readiness
from pipelines.operations.stats import ALL_PIPELINES, PipelineStats, StatsReport, WindowStats
from pipelines.views import ApprovalView, TaskView

PENDING_SHOWN = 15
TABLES_SHOWN = 60  # pipelines with a table of their own; the rest are named in one line
ALERTS_SHOWN = 5

DEFINITIONS = (
    "runs: created in the window · err: failed or needs_attention, of the runs that finished in "
    "the window · p50/p95: created → finished (waiting for people included; ±6% once rolled up) "
    "· $/run: LLM cost of the runs created in the window ÷ runs (≥: some calls had no price) · "
    "tokens: LLM prompt + completion · appr/rej/exp: approvals asked in the window, by decision "
    "· decide: median time to a decision · tasks: share of runs that asked a person"
)


@dataclass(frozen=True)
class AlertNote:
    """One alert as the dashboard lists it (the alert job's records map onto this)."""

    pipeline: str
    at: datetime
    text: str
    recovered: bool = False


# -- the stats table -------------------------------------------------------------------------


def _row(w: WindowStats) -> list[str]:
    partial = w.priced_llm_calls < w.llm_calls
    return [
        window_label(w.window),
        str(w.runs),
        rate(w.error_rate),
        duration(w.p50_seconds),
        duration(w.p95_seconds),
        money(w.cost_per_run, partial=partial),
    ]


def _people_row(w: WindowStats) -> list[str]:
    return [
        window_label(w.window),
        count(w.tokens),
        f"{w.approvals_approved}/{w.approvals_rejected}/{w.approvals_expired}",
        duration(w.median_decision_seconds),
        rate(w.human_task_rate),
    ]


def _aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(r)
        )
        for r in rows
    ]


def stats_table(p: PipelineStats) -> str:
    """The pipeline's windows as a monospace table (about 50 characters wide), escaped: volume,
    errors, latency and cost, then tokens, approvals and human tasks under their own header."""
    numbers = [["", "runs", "err", "p50", "p95", "$/run"], *(_row(w) for w in p.windows)]
    people = [
        ["", "tokens", "appr/rej/exp", "decide", "tasks"],
        *(_people_row(w) for w in p.windows),
    ]
    return "```" + escape("\n".join([*_aligned(numbers), *_aligned(people)])) + "```"


def pending_note(p: PipelineStats) -> str:
    parts = []
    if p.pending.approvals:
        parts.append(f"{p.pending.approvals} approval{'s' if p.pending.approvals != 1 else ''}")
    if p.pending.tasks:
        parts.append(f"{p.pending.tasks} human task{'s' if p.pending.tasks != 1 else ''}")
    return " and ".join(parts) + " waiting" if parts else ""


def pipeline_text(p: PipelineStats) -> str:
    note = pending_note(p)
    name = "All pipelines" if p.pipeline == ALL_PIPELINES else p.pipeline
    title = f"*{escape(name)}*" + (f"  ·  :hourglass_flowing_sand: {note}" if note else "")
    return f"{title}\n{stats_table(p)}"


def is_idle(p: PipelineStats) -> bool:
    return p.pending.total == 0 and all(w.runs == 0 and w.finished == 0 for w in p.windows)


def busiest_first(pipelines: Sequence[PipelineStats]) -> list[PipelineStats]:
    """Most waiting work first, then the most runs in the longest window, then by name."""

    def activity(p: PipelineStats) -> tuple[int, int, str]:
        longest = max(p.windows, key=lambda w: w.window)
        return (-p.pending.total, -longest.runs, p.pipeline)

    return sorted(pipelines, key=activity)


def stats_blocks(
    report: StatsReport,
    max_blocks: int,
    *,
    max_tables: int = TABLES_SHOWN,
    command: str = SLASH_COMMAND,
) -> list[dict[str, Any]]:
    """A table for each of the `max_tables` busiest pipelines, a section each (several to a
    section when there is not room for one each), then one context block naming the pipelines
    not shown. At most `max_blocks` (at least 2) blocks."""
    active = busiest_first([p for p in report.pipelines if not is_idle(p)])
    idle = [p.pipeline for p in report.pipelines if is_idle(p)]
    if not active and not idle:
        return [section("No pipelines are registered.")]
    # With several pipelines, every one together comes first (its own percentiles, not sums).
    shown = [report.overall_stats(), *active] if len(active) > 1 else active
    texts = [pipeline_text(p) for p in shown[: max_tables + len(shown) - len(active)]]
    hidden = [p.pipeline for p in shown[len(texts) :]]
    if len(texts) + (1 if idle or hidden else 0) <= max_blocks:
        blocks = [section(t) for t in texts]
    else:
        packed = _pack(texts, max(max_blocks - 1, 1))
        blocks = [section(t) for t in packed.texts]
        hidden = [p.pipeline for p in shown[packed.used :]]
    notes = []
    if hidden:
        notes.append(
            f"Less busy, not shown: {_names(hidden)} · `{escape(command)} stats PIPELINE` shows one"
        )
    if idle:
        notes.append(f"No runs and nothing waiting: {_names(idle)}")
    if notes:
        blocks.append(context(*notes))
    return blocks


def _names(names: Sequence[str]) -> str:
    return truncate(", ".join(f"`{escape(n)}`" for n in names), TEXT_LIMIT - 100)


@dataclass(frozen=True)
class _Packed:
    texts: list[str]
    used: int


def _pack(texts: Sequence[str], sections: int) -> _Packed:
    """Greedily join texts into at most `sections` texts of at most TEXT_LIMIT characters."""
    packed: list[str] = []
    used = 0
    for text in texts:
        if packed and slack_len(packed[-1]) + 1 + slack_len(text) <= TEXT_LIMIT:
            packed[-1] += "\n" + text
        elif len(packed) < sections:
            packed.append(text)
        else:
            break
        used += 1
    return _Packed(packed, used)


# -- what waits for people -------------------------------------------------------------------


def pending_text(item: ApprovalView | TaskView, now: datetime, *, link: str | None = None) -> str:
    """One approval or human task: what, for which run, who may act, how long it has waited."""
    where = f"`{escape(item.pipeline or '?')}` run `{escape(item.run_id)}`"
    if link:
        where += f" · <{link}|open the card>"
    if isinstance(item, ApprovalView):
        who = mentions(item.approvers, 600)
        if item.four_eyes and item.trigger_user:
            who += f" (four-eyes: not {mention(item.trigger_user)})"
        if item.quorum is not None:
            who += f" · {progress_line(item.quorum)}"
        timing = f"waiting {ago(item.requested_at, now)}"
        if item.expires_at is not None:
            left = (item.expires_at - now).total_seconds()
            timing += f" · expires in {duration(left)}" if left > 0 else " · expiring now"
        return (
            f":lock: *Approval* `{escape(item.id)}` · {where}\n"
            f"`{escape(item.tool)}` ({escape(item.tool_kind)}) "
            f"{call_args_line(item.tool, item.args, 400)}\n"
            f"Who may decide: {who} · {timing}"
        )
    question = truncate(escape(item.question), 600)
    return (
        f":raising_hand: *Human task* `{escape(item.id)}` · {where}\n"
        f"“{question}”\n"
        f"Who may answer: {mentions(item.answerers, 600, empty='nobody')} · open {ago(item.opened_at, now)}"
    )


def pending_block(
    item: ApprovalView | TaskView, now: datetime, *, link: str | None = None
) -> dict[str, Any]:
    """`pending_text` as a section; an approval of an editable tool carries Edit & approve
    beside it, the card's own button (the form checks who may decide, as on the card)."""
    block = section(pending_text(item, now, link=link))
    if isinstance(item, ApprovalView) and item.editable:
        block["block_id"] = approval_block_id(item.id)
        block["accessory"] = edit_button(item.id)
    return block


def safe_link(url: str | None) -> str | None:
    """A card permalink usable inside `<…|…>`, or None."""
    if not url or not url.startswith("https://") or any(c in url for c in "<>| \n"):
        return None
    return url.replace("&", "&amp;")


def pending_blocks(
    pending: Sequence[ApprovalView | TaskView],
    now: datetime,
    *,
    shown: int = PENDING_SHOWN,
    links: Mapping[str, str] | None = None,
    command: str = SLASH_COMMAND,
) -> list[dict[str, Any]]:
    """A section per item, oldest first, at most `shown` of them and a line counting the rest."""
    if not pending:
        return [section("Nothing is waiting for a person. :sparkles:")]
    links = links or {}
    blocks = [
        pending_block(item, now, link=safe_link(links.get(item.id))) for item in pending[:shown]
    ]
    if len(pending) > shown:
        blocks.append(
            context(f"…and {len(pending) - shown} more: `{escape(command)} pending` lists them")
        )
    return blocks


# -- the home tab ----------------------------------------------------------------------------


def alert_text(alert: AlertNote, now: datetime) -> str:
    icon = ":white_check_mark:" if alert.recovered else ":rotating_light:"
    return (
        f"{icon} *{escape(alert.pipeline)}* · {ago(alert.at, now)} ago\n"
        f"{truncate(escape(alert.text), 1500)}"
    )


def drift_line(f: DriftFigures) -> str:
    """One pipeline's quiet-failure figures: `name` · human exits · mean confidence · max PSI."""
    parts = [f"`{escape(truncate(f.pipeline, 100))}`"]
    if f.llm_calls:
        parts.append(f"human exits {rate(f.human_exit_rate)} of {count(f.llm_calls)} LLM calls")
        confidence = DASH if f.mean_confidence is None else f"{f.mean_confidence:.2f}"
        parts.append(f"mean confidence {confidence}")
    if f.max_psi is not None:
        parts.append(f"max PSI {f.max_psi:.2f} ({code(f.max_psi_field or '?', 200)})")
    elif f.max_psi_reason:
        parts.append(f"PSI: {escape(f.max_psi_reason)}")
    return " · ".join(parts)


def drift_blocks(figures: Mapping[str, DriftFigures]) -> list[dict[str, Any]]:
    """The quiet failures: one section of lines, cut to Slack's text limit."""
    if not figures:
        return []
    lines = [drift_line(f) for _name, f in sorted(figures.items())]
    return [
        header("Quiet failures"),
        section(truncate("\n".join(lines), TEXT_LIMIT - 10)),
        context(
            "human exits and mean confidence: the LLM calls of the last 24 h · max PSI: the "
            "categorical field that moved most, last 7 days against the 28 before (drift "
            "alerts above 0.2), from the hourly check"
        ),
    ]


def readiness_line(r: Readiness) -> str:
    """ ":red_circle: *name* not ready — records: …; eval: …" (each red answer's reason, cut)."""
    name = escape(truncate(r.pipeline, 100))
    if r.ready:
        return f":large_green_circle: *{name}* ready"
    reds = "; ".join(f"{a.title.lower()}: {escape(truncate(a.reason, 300))}" for a in r.red)
    return f":red_circle: *{name}* not ready — {reds}"


def readiness_blocks(found: Sequence[Readiness]) -> list[dict[str, Any]]:
    """`gatehouse ready` in App Home: a line per pipeline, packed into at most two sections."""
    if not found:
        return []
    ready = sum(1 for r in found if r.ready)
    packed = _pack([readiness_line(r) for r in found], 2)
    blocks = [header(f"Readiness ({ready} of {len(found)} ready)")]
    blocks += [section(t) for t in packed.texts]
    left = [r.pipeline for r in found[packed.used :]]
    note = (
        "gates (human exits, rate limits, approval or reverse) · approvers · complete records "
        "over 7 days · the last eval within 30 days at its bar · `gatehouse ready PIPELINE` "
        "gives every answer"
    )
    if left:
        note = f"Not shown: {_names(left)} · {note}"
    blocks.append(context(note))
    return blocks


BUDGET_ICONS = {
    "ok": ":large_green_circle:",
    "near": ":large_orange_circle:",
    "over": ":red_circle:",
}


def budget_line(status: BudgetStatus) -> str:
    """ ":large_orange_circle: *triage* day 17.10 of 20.00 USD (2.90 left) · runs 3 of 60 …" """
    name = escape(truncate(status.pipeline, 100))
    return f"{BUDGET_ICONS[status.state]} *{name}* {escape(status.summary())}"


def budget_blocks(statuses: Sequence[BudgetStatus]) -> list[dict[str, Any]]:
    """The budgets and what is left of them today: one section of lines, cut to Slack's limit."""
    if not statuses:
        return []
    lines = [budget_line(s) for s in statuses]
    return [
        header("Budgets"),
        section(truncate("\n".join(lines), TEXT_LIMIT - 10)),
        context(
            "USD, spent and reserved by calls in flight since UTC midnight · amber from 80% of "
            "a limit, red when reached (the pipeline is paused until someone resumes it) · a "
            "model without a price: spend unknown"
        ),
    ]


def home_view(
    stats: StatsReport,
    pending: Sequence[ApprovalView | TaskView],
    alerts: Sequence[AlertNote] = (),
    *,
    card_links: Mapping[str, str] | None = None,
    command: str = SLASH_COMMAND,
    drift: Mapping[str, DriftFigures] | None = None,
    readiness: Sequence[Readiness] = (),
    budgets: Sequence[BudgetStatus] = (),
) -> dict[str, Any]:
    """The App Home tab (`views.publish` body's `view`): per pipeline the numbers of each window
    in `stats`, then what waits for people, then the last alerts. Ages are counted to
    `stats.now`. `card_links` maps an approval or task id to its card's permalink."""
    now = stats.now
    windows = " and ".join(window_label(w) for w in stats.windows)
    top: list[dict[str, Any]] = [
        header("Gatehouse"),
        context(f"Last {windows} up to {now:%Y-%m-%d %H:%M} UTC · {DEFINITIONS}"),
        DIVIDER,
        header("Pipelines"),
    ]
    waiting = [header(f"Waiting for people ({len(pending)})")]
    waiting += pending_blocks(pending, now, links=card_links, command=command)
    last = [header("Last alerts")]
    if alerts:
        # Open ones first (an open alert is never pushed out by recovered ones), newest first.
        recent = sorted(alerts, key=lambda a: (a.recovered, -a.at.timestamp()))[:ALERTS_SHOWN]
        last += [section(alert_text(a, now)) for a in recent]
    else:
        last.append(
            context(
                "No alerts. When a pipeline's error rate spikes, the alert posted in the alerts "
                "channel shows up here too."
            )
        )
    quiet = drift_blocks(drift or {}) + readiness_blocks(readiness) + budget_blocks(budgets)
    room = VIEW_BLOCKS - len(top) - len(quiet) - len(waiting) - len(last) - 2  # two dividers
    blocks = [
        *top,
        *stats_blocks(stats, room, command=command),
        *quiet,
        DIVIDER,
        *waiting,
        DIVIDER,
        *last,
    ]
    return {"type": "home", "blocks": blocks[:VIEW_BLOCKS]}
