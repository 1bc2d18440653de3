"""`/gatehouse eval PIPELINE [reviewed]`: run an eval in the background on the bot's work pool and
post its summary in the channel the command came from.

Where the bot cannot post there (not a member, a DM between other people, an archived channel),
the summary goes to the person privately instead, saying why: through the command's
response_url, else as a DM from the app. The start message promises only that.

The test set is the pipeline's own (`PIPELINE.jsonl` in GATEHOUSE_EVAL_DATASETS_DIR, else the
example set in `pipelines/catalog/datasets/`), or with `reviewed` the runs reviewed in the last
30 days (flags with what they should have been, and runs marked "looks right"). Only operators
may run one (GATEHOUSE_OPERATORS, like replay): it calls the model once per case and costs money.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import PurePath
from typing import Any

import structlog
from slack_sdk.errors import SlackApiError

from bot.formatting import rate, usd
from bot.slack.blocks import MESSAGE_BLOCKS, context, section
from bot.slack.bot import Bot
from bot.slack.mrkdwn import code, escape, truncate
from bot.slack.private_replies import ResponseUrl
from bot.slack.refusal_text import slack_text
from bot.slack.refusals import log_refusal, sentence
from pipelines import GatehouseError
from pipelines.authorization import authorize_operator
from pipelines.errors import NotAuthorized
from pipelines.evaluation import (
    Dataset,
    EvalReport,
    dataset_path,
    evaluate,
    load_dataset,
    parse_dataset,
)
from pipelines.operations.review import reviewed_cases
from pipelines.pipeline import get_pipeline

log = structlog.get_logger()

USAGE = "eval PIPELINE [reviewed]"
REVIEWED_DAYS = 30
FAILURES_POSTED = 8
SLACK_CONCURRENCY = 4


class EvalUsage(GatehouseError):
    """The command text is wrong."""


def plan(bot: Bot, user: str, rest: str) -> tuple[str, Dataset]:
    """(pipeline, test set) for `rest`, or an error that says what to type."""
    words = rest.split()
    if not words or len(words) > 2 or (len(words) == 2 and words[1].lower() != "reviewed"):
        raise EvalUsage(f"usage: `{escape(bot.settings.slash_command)} {USAGE}`")
    name = words[0]
    get_pipeline(name)  # UnknownPipeline names the registered ones
    authorize_operator(bot.gatehouse.rt, user, "evaluate", name)
    if len(words) == 2:
        since = bot.gatehouse.rt.clock.now() - timedelta(days=REVIEWED_DAYS)
        cases = reviewed_cases(bot.gatehouse.rt, since=since, flagged_only=False)
        text = "\n".join(json.dumps(case, default=str) for case in cases)
        label = f"runs reviewed in the last {REVIEWED_DAYS} days"
        return name, parse_dataset(text, name=label, pipeline=name)
    return name, load_dataset(dataset_path(name, bot.settings.eval_datasets_dir), pipeline=name)


def shown_name(dataset: str) -> str:
    """A test set as Slack shows it: a file by its name (`ev_route.jsonl`), never the server's
    path to it; any other name (`runs reviewed in the last 30 days`) as it is."""
    if "/" in dataset or "\\" in dataset:
        return PurePath(dataset.replace("\\", "/")).name or dataset
    return dataset


def summary_blocks(report: EvalReport, user: str) -> tuple[list[dict[str, Any]], str]:
    """The message posted in the channel (pure): the rates, cost and latency, the enum fields'
    confusion, and the first failing cases with their diffs."""
    s = report.summary()
    icon = ":white_check_mark:" if s["failure_rate"] in (0, None) else ":warning:"
    title = (
        f"{icon} *Eval of {escape(report.pipeline)}* asked by <@{escape(user)}>: "
        f"{s['passed']}/{s['cases']} passed ({rate(s['pass_rate'])}), "
        f"{s['failed'] + s['errors']} failed ({rate(s['failure_rate'])}), "
        f"{s['human']} need a human ({rate(s['human_rate'])})"
    )
    cost = usd(s["cost_usd"])
    p50 = s["latency_ms"]["p50"]
    facts = (
        f"model `{escape(report.model or 'none: LLM steps take the human exit')}` · test set "
        f"{escape(truncate(shown_name(report.dataset), 200))} · cost {cost} · p50 "
        f"{'-' if p50 is None else f'{p50:.0f} ms'} a case · `{escape(report.eval_id)}` · "
        "no side effects; kept out of stats, alerts and the review"
    )
    blocks = [section(title), context(facts)]
    for name, matrix in s["confusion"].items():
        lines = [
            f"{escape(want)} → "
            + ", ".join(f"{escape(got)}: {n}" for got, n in sorted(row.items()))
            for want, row in matrix["matrix"].items()
        ]
        blocks.append(section(f"*{escape(name)}* (expected → actual)\n" + "\n".join(lines)))
    for result in report.failures[:FAILURES_POSTED]:
        what = f"*line {result.position}*" + (
            f" ({escape(truncate(result.note, 100))})" if result.note else ""
        )
        line = f"{what}: {escape(truncate(result.why, 600))}"
        if result.would_calls:
            calls = "; ".join(
                f"{escape(c['tool'])} {code(c['args'], 200)}" for c in result.would_calls
            )
            line += f"\nwould call {calls}"
        blocks.append(section(line))
    more = len(report.failures) - FAILURES_POSTED
    if more > 0:
        blocks.append(context(f"…and {more} more failing case(s): `gatehouse evals`"))
    text = f"Eval of {report.pipeline}: {s['passed']}/{s['cases']} passed ({rate(s['pass_rate'])})"
    return blocks, escape(text)


def run_in_channel(bot: Bot, channel: str, user: str, rest: str, respond: ResponseUrl) -> None:
    """On the work pool: check, tell the person it started, run, post the summary."""
    try:
        name, dataset = plan(bot, user, rest)
    except NotAuthorized as exc:
        respond(response_type="ephemeral", text=f":no_entry: {slack_text(exc)}")
        return
    except GatehouseError as exc:
        respond(response_type="ephemeral", text=f":warning: {escape(str(exc))}")
        return
    respond(
        response_type="ephemeral",
        text=(
            f":hourglass_flowing_sand: Evaluating *{escape(name)}* on {len(dataset.cases)} "
            f"case(s) from {escape(truncate(shown_name(dataset.name), 200))}, with no side "
            "effects; the summary will be posted here, or sent to you privately if Gatehouse "
            "cannot post here."
        ),
    )
    try:
        report = evaluate(
            bot.gatehouse.rt,
            name,
            dataset,
            concurrency=SLACK_CONCURRENCY,
            user=user,
            source="slack",
        )
    except Exception as exc:
        log.exception("eval.failed", pipeline=name, user=user)
        respond(
            response_type="ephemeral",
            text=f":boom: the eval of {escape(name)} failed: {escape(truncate(str(exc), 300))}",
        )
        return
    blocks, text = summary_blocks(report, user)
    post_summary(bot, channel, user, blocks, text, respond)


def post_summary(
    bot: Bot,
    channel: str,
    user: str,
    blocks: list[dict[str, Any]],
    text: str,
    respond: ResponseUrl,
) -> bool:
    """The summary in `channel`; where Slack refuses that, to `user` privately (the command's
    response_url, else a DM from the app), led by why it is not in the channel. False when it
    reached nobody (each refusal logged)."""
    try:
        bot.client.chat_postMessage(channel=channel, text=text, blocks=blocks)
        return True
    except SlackApiError as exc:
        error = log_refusal("eval.summary_refused", exc, channel=channel, user=user)
    why = context(
        ":information_source: Gatehouse could not post this summary where you asked for it: "
        + sentence(error, "the summary")
    )
    private = [why, *blocks][:MESSAGE_BLOCKS]
    if respond(response_type="ephemeral", text=text, blocks=private, replace_original=False):
        return True
    try:
        bot.client.chat_postMessage(channel=user, text=text, blocks=private)
        return True
    except SlackApiError as exc:
        log_refusal("eval.summary_refused", exc, channel="dm", user=user)
    return False
