"""Hostile text never pings anyone or forges a link: strings like `<!channel>`, `<@U123>` or
`<https://evil.example|click>` put into pipeline inputs, model answers, tool arguments and
results, human-task questions, answers, rejection reasons, errors, alerts, review notes and slash
commands; every mrkdwn text the bot sent to the fake Slack is walked, and no `<…>` token in it
may come from them (the only ones left are those the bot builds: `<!date^…>`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from bot.slack import review as slack_review
from bot.slack.alerts import check_alerts
from bot.slack.review_cards import item_blocks
from pipelines import Context, pipeline, tool
from pipelines.operations.review import flag
from tests.fakes.clock import FakeClock
from tests.fakes.openai import FakeOpenAI, reply_json
from tests.fakes.slack import FakeSlack
from tests.slack_harness import SlackWorld, slack_world
from tests.test_alerts import add_runs

HOSTILE_STRINGS = [
    "<!channel>",
    "<!everyone>",
    "<!here>",
    "<!subteam^S123|@ops>",
    "<@U123>",
    "<#C123>",
    "<https://evil.example|click>",
    "&lt;!channel&gt;",
    "*bold* _it_ ~x~ `code` ```block```",
    "a\u200db\u200dc <\u200d!channel>",
    "> quoted\n>>> all of it",
]
HOSTILE = " ".join(HOSTILE_STRINGS)
LONG = "<!channel> " * 800
ALERTS, REVIEW = "C_ALERTS", "C_REVIEW"
# The bot's own tokens: dates, and mentions of the people who really acted in the test (never the
# hostile `<@U123>`).
ALLOWED_TOKEN = re.compile(
    r"^(<!date\^\d+\^[^|<>]*\|[^<>]*>|<@U_(ALICE|BOB|CAROL)>"
    # App Home's link to a card, and an answered task's to the approval it waits on: Slack's
    # own permalink for it (chat.getPermalink)
    r"|<https://gatehouse-test\.slack\.com/archives/C_[A-Z]+/p\d+\|(open the card|its card)>)$"
)


class HostileInput(BaseModel):
    text: str


class Label(BaseModel):
    kind: str
    note: str
    confidence: float


class SendArgs(BaseModel):
    message: str
    note: str


class SendResult(BaseModel):
    echo: str


class Confirm(BaseModel):
    ok: bool
    comment: str


@tool(kind="send", approval="always", approvers=["U_BOB"])
def hx_send(args: SendArgs, *, idempotency_key: str) -> SendResult:
    return SendResult(echo=args.message)


@pipeline("hx_hostile", input=HostileInput)
def hx_hostile(ctx: Context, given: HostileInput) -> dict[str, str]:
    label = ctx.llm(
        "classify", task="classify", prompt=given.text, output=Label, min_confidence=0.9
    )
    sent = ctx.tool(hx_send, SendArgs(message=given.text, note=label.note))
    confirm = ctx.ask_human(
        "confirm", f"Does this look right? {given.text}", Confirm, context={"text": given.text}
    )
    if not confirm.ok:
        raise ValueError(f"refused: {confirm.comment} {given.text}")
    return {"echo": sent.echo, "note": label.note}


# -- the walk ----------------------------------------------------------------------------------


def texts_in(node: Any, *, mrkdwn_only: bool) -> Iterator[str]:
    """Every text in a call (JSON strings inside it too): only mrkdwn text objects' and
    messages' `text`, or with `mrkdwn_only=False` every `text` (plain_text as well)."""
    if isinstance(node, str) and node[:1] in "[{":
        try:
            node = json.loads(node)
        except ValueError:
            return
    if isinstance(node, dict):
        text = node.get("text")
        if isinstance(text, str) and (not mrkdwn_only or node.get("type") == "mrkdwn"):
            yield text
        for value in node.values():
            if isinstance(value, dict | list) or (isinstance(value, str) and value[:1] in "[{"):
                yield from texts_in(value, mrkdwn_only=mrkdwn_only)
    elif isinstance(node, list):
        for value in node:
            yield from texts_in(value, mrkdwn_only=mrkdwn_only)


def mrkdwn_texts(node: Any) -> Iterator[str]:
    """Every text Slack parses as mrkdwn: mrkdwn text objects, and a message's `text`."""
    return texts_in(node, mrkdwn_only=True)


def sent_texts(world: SlackWorld, acks: list[Any]) -> list[str]:
    texts: list[str] = []
    for method, params in world.fake.calls:
        if method in (
            "chat.postMessage",
            "chat.update",
            "chat.postEphemeral",
            "response_url",
        ) and isinstance(params.get("text"), str):
            texts.append(params["text"])
        texts.extend(mrkdwn_texts(params))
    for ack in acks:
        if isinstance(ack, dict):
            if isinstance(ack.get("text"), str):
                texts.append(ack["text"])
            texts.extend(mrkdwn_texts(ack))
    return texts


def unescaped_tokens(texts: list[str]) -> list[str]:
    bad = []
    for text in texts:
        for token in re.findall(r"<[^<>]*>", text):
            if not ALLOWED_TOKEN.match(token):
                bad.append(token)
        for raw in ("<!", "<@", "<#", "<http"):
            stray = text.count(raw) - sum(
                1 for t in re.findall(r"<[^<>]*>", text) if t.startswith(raw)
            )
            if stray > 0:
                bad.append(f"unclosed {raw!r} in {text[:80]!r}")
    return bad


@pytest.fixture
def world(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock, fake_openai: FakeOpenAI
) -> Iterator[SlackWorld]:
    with slack_world(
        fake_slack,
        sqlite_url,
        clock,
        alerts_channel=ALERTS,
        review_channel=REVIEW,
        review_size=5,
        llm_model="gpt-fake",
        llm_base_url=fake_openai.base_url,
        alert_min_volume=1,
    ) as built:
        yield built


def test_hostile_text_everywhere_reaches_slack_escaped(
    world: SlackWorld, fake_openai: FakeOpenAI
) -> None:
    fake_openai.always(reply_json({"kind": HOSTILE, "note": HOSTILE, "confidence": 0.2}))
    gh = world.gatehouse
    acks: list[Any] = []

    def proceed() -> None:
        world.settle()
        gh.worker().run_until_idle()

    # A run: the model is unsure (task card), the answer goes on to an approval (card), which
    # is rejected with a hostile reason (card update).
    first = gh.trigger("hx_hostile", {"text": HOSTILE}, user="U_ALICE", source="slack")
    [task_id] = first.waiting_for
    gh.answer(task_id, user="U_ALICE", answer={"kind": HOSTILE, "note": HOSTILE, "confidence": 1})
    proceed()
    [approval_id] = gh.run(first.id).waiting_for
    gh.reject(approval_id, user="U_BOB", reason=HOSTILE)
    proceed()

    # Another, with very long text: approved, asked, answered "no", so it fails with the text.
    second = gh.trigger("hx_hostile", {"text": LONG}, user="U_ALICE", source="slack")
    [task_id] = second.waiting_for
    gh.answer(task_id, user="U_ALICE", answer={"kind": LONG, "note": LONG, "confidence": 1})
    proceed()
    [approval_id] = gh.run(second.id).waiting_for
    gh.approve(approval_id, user="U_BOB")
    proceed()
    [question_id] = gh.run(second.id).waiting_for
    gh.answer(question_id, user="U_BOB", answer={"ok": False, "comment": HOSTILE})
    proceed()
    assert gh.run(second.id).status == "failed"
    world.settle()

    # Slash commands echoing what people typed, and showing the runs.
    for text in (
        f"run {first.id}",
        f"run {second.id}",
        "runs",
        "pending",
        "help",
        HOSTILE,
        f"run {HOSTILE}",
        f"trigger hx_hostile {json.dumps({'text': HOSTILE})}",
        f"trigger {HOSTILE}",
        f"replay {first.id}",
        f"undo {HOSTILE}",
    ):
        response = world.slack.command(text, user_id="U_BOB")
        assert response.status < 500
        acks.append(response.json)
    world.slack.app_home_opened("U_BOB")
    world.settle()

    # An alert quoting hostile errors.
    now = world.clock.now()
    add_runs(gh, "hx_hostile", ["succeeded"] * 20, finished=now - timedelta(hours=2))
    add_runs(gh, "hx_hostile", ["failed"] * 6, finished=now, error=HOSTILE)
    check_alerts(world.bot)

    # The weekly review of these runs, and a flag with a hostile note.
    week = slack_review.post_weekly_review(world.bot, pace_seconds=0)
    item = week.items[0]
    flagged = flag(gh.rt, item.id, reviewer="U_BOB", category="wrong_output", note=HOSTILE)
    acks.append({"blocks": item_blocks(flagged, gh.run(item.run_id), 5, command="/gatehouse")})
    world.settle()

    methods = {method for method, _ in world.fake.calls}
    assert {"chat.postMessage", "chat.update", "views.publish"} <= methods
    assert world.fake.messages(ALERTS) and world.fake.messages(REVIEW)
    texts = sent_texts(world, acks)
    assert len(texts) > 20
    assert any("&lt;!channel&gt;" in t for t in texts), "the hostile text is shown, escaped"
    assert unescaped_tokens(texts) == []
    assert world.fake.rejected == []


# -- bidi and invisible characters -------------------------------------------------------------

# An override that shows "exe.png" for "gnp.exe", isolates, marks, and zero-width characters.
BIDI = "pay \u202egnp.exe\u202c to \u2066acct\u2069 \u200e\u200fX\u200bY\u2060Z\ufeff\u061c"
INVISIBLE = re.compile("[\u061c\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


def slack_texts(node: Any) -> Iterator[str]:
    """Every text object's text (mrkdwn and plain_text) and every message `text` in a call."""
    return texts_in(node, mrkdwn_only=False)


def test_bidi_overrides_and_zero_width_characters_reach_cards_as_visible_escapes(
    world: SlackWorld, fake_openai: FakeOpenAI
) -> None:
    fake_openai.always(reply_json({"kind": BIDI, "note": BIDI, "confidence": 0.2}))
    gh = world.gatehouse
    run = gh.trigger("hx_hostile", {"text": BIDI}, user="U_ALICE", source="slack")
    [task_id] = run.waiting_for
    world.settle()
    gh.answer(task_id, user="U_BOB", answer={"kind": BIDI, "note": BIDI, "confidence": 1})
    world.settle()
    gh.worker().run_until_idle()
    world.settle()
    assert world.approval_cards(), "the run reached its approval card"
    acks = [world.slack.command(f"run {run.id}", user_id="U_BOB").json]
    world.settle()

    texts = [t for _, params in world.fake.calls for t in slack_texts(params)]
    texts += [t for ack in acks for t in slack_texts(ack)]
    assert [t for t in texts if INVISIBLE.search(t)] == []
    shown = "\n".join(texts)
    assert "pay \\u202egnp.exe\\u202c to \\u2066acct\\u2069" in shown
    assert "X\\u200bY\\u2060Z\\ufeff" in shown
