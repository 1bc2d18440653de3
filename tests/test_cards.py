"""Approval and task cards: parsed by slack_sdk's models, inside Block Kit's limits whatever the
data, and nothing a model or a person wrote can ping a channel or forge a link."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from bot.slack import cards
from bot.slack.cards import ApprovalContext
from bot.slack.mrkdwn import code_block, escape, fmt_value, mention, mentions, truncate
from pipelines.views import ApprovalView, CallView, TaskView

T0 = datetime(2024, 5, 1, 13, 30, tzinfo=UTC)
HOSTILE = ["<!channel>", "<!everyone>", "<!here>", "<@U123>", "<https://evil.example|x>", "&"]
HOSTILE_TEXT = "hi " + " ".join(HOSTILE) + " bye"

# -- the limits checker ------------------------------------------------------------------------

# Block Kit's documented limits, beyond what slack_sdk's own validators check.
TEXT_LIMIT = 3000
LIMITS_BY_KEY = {"block_id": 255, "action_id": 255, "callback_id": 255, "private_metadata": 3000}


def _walk(node: Any, path: str = "") -> Any:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")


def _text_of(obj: Any) -> str:
    assert isinstance(obj, dict) and obj.get("type") in ("plain_text", "mrkdwn"), obj
    text = obj["text"]
    assert isinstance(text, str) and text, f"empty text object {obj}"
    return text


def check_limits(blocks: list[dict[str, Any]], *, max_blocks: int = 50) -> None:
    """Every Block Kit limit the cards could break, checked on the raw dicts."""
    assert 0 < len(blocks) <= max_blocks
    for path, node in _walk(blocks):
        kind = node.get("type")
        if kind in ("plain_text", "mrkdwn"):
            assert len(_text_of(node)) <= TEXT_LIMIT, path
        for key, limit in LIMITS_BY_KEY.items():
            if key in node:
                assert len(node[key]) <= limit, f"{path}.{key}"
        if kind == "section":
            assert "text" in node or "fields" in node, path
            assert len(node.get("fields", [])) <= 10, path
            for item in node.get("fields", []):
                assert len(_text_of(item)) <= 2000, path
        elif kind == "header":
            assert len(_text_of(node["text"])) <= 150, path
        elif kind == "context":
            assert 0 < len(node["elements"]) <= 10, path
        elif kind == "actions":
            assert 0 < len(node["elements"]) <= 25, path
        elif kind == "button":
            assert len(_text_of(node["text"])) <= 75, path
            assert len(node.get("value", "")) <= 2000, path
            if "confirm" in node:
                dialog = node["confirm"]
                assert len(_text_of(dialog["title"])) <= 100, path
                assert len(_text_of(dialog["text"])) <= 300, path
                assert len(_text_of(dialog["confirm"])) <= 30, path
                assert len(_text_of(dialog["deny"])) <= 30, path
        elif kind == "input":
            assert len(_text_of(node["label"])) <= 2000, path
            if "hint" in node:
                assert len(_text_of(node["hint"])) <= 2000, path
        elif kind in ("static_select", "multi_static_select", "radio_buttons", "checkboxes"):
            options = node["options"]
            assert 0 < len(options) <= (100 if "select" in kind else 10), path
            for option in options:
                assert len(_text_of(option["text"])) <= 75, path
                assert 0 < len(option["value"]) <= 150, path
        elif kind == "plain_text_input":
            if "max_length" in node:
                assert 1 <= node["max_length"] <= 3000, path
            if "initial_value" in node:
                assert len(node["initial_value"]) <= node.get("max_length", 3000), path
        if "placeholder" in node:
            assert len(_text_of(node["placeholder"])) <= 150, path


def check_blocks(blocks: list[dict[str, Any]], *, max_blocks: int = 50) -> None:
    """slack_sdk parses every block, keeps every key we sent, and finds it valid; and the limits."""
    for block in blocks:
        parsed = Block.parse(block)
        assert parsed is not None, block
        parsed.validate_json()
        assert parsed.to_dict() == block, "slack_sdk dropped or changed a key"
    check_limits(blocks, max_blocks=max_blocks)


def check_view(view: dict[str, Any]) -> None:
    View(**view).validate_json()
    assert View(**view).to_dict() == view
    assert view["type"] == "modal"
    for key in ("title", "submit", "close"):
        if key in view:
            assert 1 <= len(_text_of(view[key])) <= 24
    check_blocks(view["blocks"], max_blocks=100)
    check_limits([view], max_blocks=1)


# Mentions and dates we build on purpose; everything else in angle brackets is a leak.
_OUR_TOKENS = re.compile(r"<@[UW][A-Z0-9]+>|<!date\^\d+\^[^|<>]*\|[^<>]*>")


def mrkdwn_texts(blocks: Any) -> list[str]:
    return [node["text"] for _, node in _walk(blocks) if node.get("type") == "mrkdwn"]


def check_escaped(blocks: Any, *, allowed_users: set[str]) -> None:
    """No raw `<`, `>` or `&` from the data in any mrkdwn text; only the mentions we meant."""
    for text in mrkdwn_texts(blocks):
        for user in re.findall(r"<@([A-Z0-9]+)>", text):
            assert user in allowed_users, f"unexpected mention of {user} in {text!r}"
        rest = _OUR_TOKENS.sub("", text)
        assert "<" not in rest and ">" not in rest, text
        assert not re.search(r"&(?!amp;|lt;|gt;)", rest), text
        for bad in ("<!channel>", "<!everyone>", "<!here>", "<https://evil"):
            assert bad not in text


# -- test data ---------------------------------------------------------------------------------


def approval(**overrides: Any) -> ApprovalView:
    base = ApprovalView(
        id="apr_0123456789abcdef",
        run_id="run_0123456789abcdef",
        call_id="call_0123456789abcdef",
        call_key="issue_refund#1",
        tool="issue_refund",
        tool_kind="spend",
        args={"order_id": "A-1001", "amount": 120.5, "currency": "EUR"},
        approvers=["U0FINANCE1", "@finance-leads"],
        four_eyes=True,
        trigger_user="U0TRIGGER1",
        status="pending",
        requested_at=T0,
        expires_at=T0 + timedelta(hours=24),
        decided_by=None,
        decided_at=None,
        reason=None,
        pipeline="refunds",
    )
    return replace(base, **overrides)


def llm_call(output: Any, confidence: float | None = 0.91, name: str = "classify") -> CallView:
    return CallView(
        id="call_llm",
        key=f"{name}#1",
        kind="llm",
        name=name,
        status="succeeded",
        input={"prompt": "..."},
        output=output,
        error=None,
        started_at=T0,
        finished_at=T0,
        run_id="run_0123456789abcdef",
        meta={"model": "gpt-4o-mini", "confidence": confidence, "cost_usd": 0.0002},
    )


def task(**overrides: Any) -> TaskView:
    base = TaskView(
        id="task_0123456789abcdef",
        run_id="run_0123456789abcdef",
        call_id="call_0123456789abcdef",
        call_key="triage#1",
        name="triage",
        question="The model could not classify this (low confidence). Please answer in its place.",
        output_schema={"type": "object", "properties": {}, "required": []},
        context={
            "task": "classify",
            "input": "Customer says: my invoice is wrong",
            "model": "gpt-4o-mini",
            "model_said": '{"label": "billing", "confidence": 0.4}',
            "suggestion": {"label": "billing", "confidence": 0.4},
            "reason": "the model's confidence 0.4 is below the bar of 0.8",
        },
        assignees=["U0SUPPORT1", "@support"],
        status="open",
        opened_at=T0,
        answered_by=None,
        answered_at=None,
        answer=None,
        pipeline="ticket_triage",
    )
    return replace(base, **overrides)


CTX = ApprovalContext(
    trigger="slash command",
    run_input={"ticket": 42},
    llm_calls=[llm_call({"refund": True, "amount": 120.5})],
    rate_limit="20/hour, 3 used",
    tool_description="Refund an order through the payment provider.",
)
USERS = {"U0FINANCE1", "U0TRIGGER1", "U0APPROVER", "U0SUPPORT1"}


def all_approval_variants(a: ApprovalView, ctx: ApprovalContext) -> list[list[dict[str, Any]]]:
    decided = [
        replace(
            a, status="approved", decided_by="U0APPROVER", decided_at=T0 + timedelta(minutes=32)
        ),
        replace(
            a,
            status="rejected",
            decided_by="U0APPROVER",
            decided_at=T0 + timedelta(minutes=40),
            reason=a.reason or "amount does not match the invoice",
        ),
        replace(a, status="expired", decided_at=a.expires_at),
    ]
    return [cards.approval_card(a, ctx), *(cards.approval_decided_card(d, ctx) for d in decided)]


# -- approval cards ----------------------------------------------------------------------------


def test_approval_card_says_what_why_who_and_until_when() -> None:
    blocks = cards.approval_card(approval(), CTX)
    check_blocks(blocks)
    text = "\n".join(mrkdwn_texts(blocks))
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Approval needed: issue_refund", "emoji": True},
    }
    assert "*issue_refund*, a `spend` tool that spends money" in text
    assert "Refund an order through the payment provider." in text
    assert "*order_id*\n`A-1001`" in text and "*amount*\n`120.5`" in text
    assert "Pipeline *refunds*, run `run_0123456789abcdef`" in text
    assert "Triggered by <@U0TRIGGER1> via slash command" in text
    assert 'Input: `{"ticket": 42}`' in text
    assert '*classify* (gpt-4o-mini, confidence 0.91): `{"refund": true, "amount": 120.5}`' in text
    assert "Rate limit: 20/hour, 3 used" in text
    assert "Approvers: <@U0FINANCE1>, @finance-leads" in text
    assert "four-eyes" in text
    assert "Expires <!date^1714656600^{date_short_pretty} at {time}|2024-05-02 13:30 UTC>" in text


def test_approval_buttons_carry_the_approval_id_and_spend_asks_to_confirm() -> None:
    actions = cards.approval_card(approval(), CTX)[-1]
    assert actions["type"] == "actions"
    assert actions["block_id"] == "approval.apr_0123456789abcdef"
    assert cards.approval_id_from_block_id(actions["block_id"]) == "apr_0123456789abcdef"
    approve, reject = actions["elements"]
    assert (approve["action_id"], approve["style"], approve["value"]) == (
        "approval.approve",
        "primary",
        "apr_0123456789abcdef",
    )
    assert (reject["action_id"], reject["style"], reject["value"]) == (
        "approval.reject",
        "danger",
        "apr_0123456789abcdef",
    )
    assert "confirm" not in reject
    dialog = approve["confirm"]
    assert dialog["title"]["text"] == "Approve this spend?"
    assert "issue_refund spends money" in dialog["text"]["text"]
    assert '"amount": 120.5' in dialog["text"]["text"]
    assert (dialog["confirm"]["text"], dialog["deny"]["text"]) == ("Approve", "Cancel")


@pytest.mark.parametrize("kind", ["read", "write", "send"])
def test_only_spend_asks_to_confirm(kind: str) -> None:
    approve = cards.approval_card(approval(tool_kind=kind), CTX)[-1]["elements"][0]
    assert "confirm" not in approve


def test_decided_cards_lose_their_buttons_and_say_who_decided_when() -> None:
    a = approval()
    approved = replace(
        a, status="approved", decided_by="U0APPROVER", decided_at=T0 + timedelta(minutes=32)
    )
    rejected = replace(
        a,
        status="rejected",
        decided_by="U0APPROVER",
        decided_at=T0 + timedelta(minutes=40),
        reason="amount does not match the invoice",
    )
    expired = replace(a, status="expired", decided_at=a.expires_at)
    for decided, header, line in [
        (approved, "Approved: issue_refund", "Approved by <@U0APPROVER> at 14:02 UTC"),
        (rejected, "Rejected: issue_refund", "Rejected by <@U0APPROVER>: amount does not match"),
        (expired, "Expired: issue_refund", "Expired — rejected automatically"),
    ]:
        blocks = cards.approval_decided_card(decided, CTX)
        check_blocks(blocks)
        assert all(b["type"] != "actions" for b in blocks)
        assert blocks[0]["text"]["text"] == header
        assert blocks[-1]["type"] == "context"
        assert line in blocks[-1]["elements"][0]["text"]
        assert not any("Expires" in t for t in mrkdwn_texts(blocks))
    # a decision on another day than the request names the date
    late = replace(approved, decided_at=T0 + timedelta(days=1, minutes=32))
    assert "at 14:02 UTC on 2024-05-02" in mrkdwn_texts(cards.approval_decided_card(late, CTX))[-1]


def test_fallback_text_names_the_tool_and_the_outcome() -> None:
    a = approval()
    assert (
        cards.approval_fallback_text(a)
        == "Approval needed: issue_refund (spend) in refunds, run run_0123456789abcdef"
    )
    rejected = replace(a, status="rejected", decided_by="U0APPROVER", reason="<!channel> no")
    text = cards.approval_fallback_text(rejected)
    assert text.startswith("Rejected by <@U0APPROVER>: issue_refund")
    assert "&lt;!channel&gt; no" in text and "<!channel>" not in text
    assert cards.approval_fallback_text(replace(a, status="expired")).startswith(
        "Expired — rejected automatically"
    )


def test_hostile_strings_are_escaped_everywhere_and_only_intended_users_are_mentioned() -> None:
    a = approval(
        tool=HOSTILE_TEXT,
        tool_kind=HOSTILE_TEXT,
        call_key=HOSTILE_TEXT,
        pipeline=HOSTILE_TEXT,
        args={HOSTILE_TEXT: HOSTILE_TEXT, "nested": {"x": HOSTILE, "`code`": "```"}},
        approvers=["U0FINANCE1", "@finance-leads", "<!channel>", "alice", "<@U123>"],
        trigger_user="<!everyone>",
        reason=HOSTILE_TEXT,
    )
    ctx = ApprovalContext(
        trigger=HOSTILE_TEXT,
        run_input=HOSTILE_TEXT,
        llm_calls=[llm_call(HOSTILE_TEXT, name=HOSTILE_TEXT), llm_call(None, confidence=None)],
        rate_limit=HOSTILE_TEXT,
        tool_description=HOSTILE_TEXT,
    )
    for blocks in all_approval_variants(a, ctx):
        check_blocks(blocks)
        check_escaped(blocks, allowed_users=USERS)
        text = "\n".join(mrkdwn_texts(blocks))
        assert "&lt;!channel&gt;" in text and "&lt;@U123&gt;" in text
    for status in ("pending", "approved", "rejected", "expired"):
        text = cards.approval_fallback_text(replace(a, status=status, decided_by="<@U123>"))
        check_escaped([{"type": "mrkdwn", "text": text}], allowed_users=USERS)


def test_huge_and_many_arguments_stay_within_limits_with_the_full_value_one_command_away() -> None:
    huge = "x" * 10_000
    many = {f"key_{i}_" + "k" * 300: huge for i in range(200)}
    a = approval(args=many, approvers=[f"U0{i:08d}" for i in range(500)], reason=huge)
    ctx = ApprovalContext(
        trigger=huge,
        run_input={"blob": huge},
        llm_calls=[llm_call({"text": huge}) for _ in range(30)],
        rate_limit=huge,
        tool_description=huge,
    )
    for blocks in all_approval_variants(a, ctx):
        check_blocks(blocks)
        texts = mrkdwn_texts(blocks)
        assert any("full value: `/gatehouse run run_0123456789abcdef`" in t for t in texts)
        assert any("and 4" in t and "more" in t for t in texts)  # approvers counted, not listed
        assert any("Showing 20 of 200 arguments" in t for t in texts)
    # one huge string argument
    for args in ({"body": huge}, [huge] * 50, huge, {"deep": [{"a": [huge]}]}):
        for blocks in all_approval_variants(approval(args=args), CTX):
            check_blocks(blocks)
            assert any("/gatehouse run run_0123456789abcdef" in t for t in mrkdwn_texts(blocks))


def test_multibyte_and_emoji_text_is_cut_within_limits_in_utf16_units() -> None:
    emoji = "🔥" * 5000
    a = approval(args={"note": emoji}, reason=emoji, tool="🔥" * 200)
    for blocks in all_approval_variants(a, ApprovalContext(tool_description=emoji)):
        check_blocks(blocks)
        for text in mrkdwn_texts(blocks):
            assert len(text.encode("utf-16-le")) // 2 <= 3000


def test_no_arguments_and_no_context_still_make_a_valid_card() -> None:
    a = approval(args={}, approvers=[], trigger_user=None, pipeline=None, expires_at=None)
    for blocks in all_approval_variants(a, ApprovalContext()):
        check_blocks(blocks)
        text = "\n".join(mrkdwn_texts(blocks))
        assert "No arguments." in text
        assert "Approvers: anyone in the workspace" in text
    assert "Does not expire" in "\n".join(mrkdwn_texts(cards.approval_card(a, ApprovalContext())))


def test_trigger_equal_to_trigger_user_is_not_repeated() -> None:
    text = "\n".join(
        mrkdwn_texts(cards.approval_card(approval(), ApprovalContext(trigger="U0TRIGGER1")))
    )
    assert "Triggered by <@U0TRIGGER1>\n" in text + "\n"


def test_reject_modal_asks_for_a_required_reason() -> None:
    view = cards.reject_modal("apr_0123456789abcdef", "issue_refund")
    check_view(view)
    assert view["callback_id"] == "approval.reject_reason"
    assert view["private_metadata"] == "apr_0123456789abcdef"
    reason = view["blocks"][-1]
    assert (reason["type"], reason["block_id"], reason["element"]["action_id"]) == (
        "input",
        "reason",
        "reason",
    )
    assert reason["element"]["multiline"] is True
    assert reason.get("optional", False) is False
    check_view(cards.reject_modal("apr_1"))
    hostile = cards.reject_modal("apr_1", HOSTILE_TEXT * 100)
    check_view(hostile)
    check_escaped(hostile, allowed_users=set())
    state = {"reason": {"reason": {"type": "plain_text_input", "value": "  too much \n"}}}
    assert cards.reject_reason(state) == "too much"
    assert cards.reject_reason({}) == ""


# -- task cards --------------------------------------------------------------------------------


def test_task_card_shows_the_question_the_input_and_the_models_attempt() -> None:
    blocks = cards.task_card(task())
    check_blocks(blocks)
    text = "\n".join(mrkdwn_texts(blocks))
    assert blocks[0]["text"]["text"] == "Your answer is needed: triage"
    assert "Please answer in its place." in text
    assert "```Customer says: my invoice is wrong```" in text
    assert "*The model (gpt-4o-mini) said*" in text
    assert "below the bar of 0.8" in text
    assert "*label*\n`billing`" in text
    assert "Who may answer: <@U0SUPPORT1>, @support" in text
    actions = blocks[-1]
    assert actions["block_id"] == "task.task_0123456789abcdef"
    (answer,) = actions["elements"]
    assert (answer["action_id"], answer["value"], answer["text"]["text"]) == (
        "task.answer",
        "task_0123456789abcdef",
        "Answer",
    )


def test_ask_human_task_shows_its_context() -> None:
    t = task(context={"order": "A-1", "lines": [1, 2]}, question="Is this order a duplicate?")
    blocks = cards.task_card(t)
    check_blocks(blocks)
    text = "\n".join(mrkdwn_texts(blocks))
    assert "*Context*" in text and "*order*\n`A-1`" in text
    check_blocks(cards.task_card(task(context="just a note")))
    check_blocks(cards.task_card(task(context=None)))


def test_answered_and_cancelled_task_cards() -> None:
    answered = task(
        status="answered",
        answered_by="U0SUPPORT1",
        answered_at=T0 + timedelta(minutes=5),
        answer={"label": "refund", "confidence": 1.0},
    )
    blocks = cards.task_answered_card(answered)
    check_blocks(blocks)
    assert all(b["type"] != "actions" for b in blocks)
    assert blocks[0]["text"]["text"] == "Answered: triage"
    text = "\n".join(mrkdwn_texts(blocks))
    assert "*Answer*" in text and "*label*\n`refund`" in text
    assert "Answered by <@U0SUPPORT1> at 13:35 UTC" in text
    cancelled = cards.task_answered_card(task(status="cancelled"))
    check_blocks(cancelled)
    assert "Cancelled" in cancelled[-1]["elements"][0]["text"]
    assert cards.task_fallback_text(answered) == (
        "Answered by <@U0SUPPORT1>: triage (run run_0123456789abcdef)"
    )
    assert cards.task_fallback_text(task()).startswith("Your answer is needed: triage")


def test_hostile_and_huge_task_data_stays_escaped_and_within_limits() -> None:
    huge = HOSTILE_TEXT * 1000
    t = task(
        name=huge,
        question=huge,
        context={
            "task": "classify",
            "input": huge,
            "model": huge,
            "model_said": huge,
            "suggestion": {f"k{i}{HOSTILE_TEXT}": huge for i in range(200)},
            "reason": huge,
        },
        assignees=[huge, "<!channel>", "U0SUPPORT1"],
        answered_by="<@U123>",
        answer={huge: huge},
        pipeline=huge,
    )
    for blocks in (
        cards.task_card(t),
        cards.task_answered_card(replace(t, status="answered", answered_at=T0)),
        cards.task_card(replace(t, context=[huge] * 100)),
    ):
        check_blocks(blocks)
        check_escaped(blocks, allowed_users=USERS)
        assert any("/gatehouse run run_0123456789abcdef" in x for x in mrkdwn_texts(blocks))
    check_escaped([{"type": "mrkdwn", "text": cards.task_fallback_text(t)}], allowed_users=USERS)


# -- mrkdwn helpers ----------------------------------------------------------------------------


def test_escape_neutralises_slack_control_sequences() -> None:
    assert escape("<!channel> & <@U1> <http://e|x>") == (
        "&lt;!channel&gt; &amp; &lt;@U1&gt; &lt;http://e|x&gt;"
    )


def test_truncate_keeps_within_the_limit_and_never_splits_an_entity_or_a_token() -> None:
    hint = "full value: `/gatehouse run run_1`"
    assert truncate("short", 10, hint) == "short"
    cut = truncate("a" * 500, 100, hint)
    assert len(cut) <= 100 and cut.endswith(hint) and "…" in cut
    escaped = escape("&" * 100)
    for limit in range(5, 60):
        cut = truncate(escaped, limit)
        assert len(cut) <= limit
        assert re.fullmatch(r"(&amp;)*…", cut), cut
    assert truncate("ab <@U0ABCDEF1> cd", 14) == "ab …"
    assert truncate("x" * 50, 10, "a hint much too long to fit") == "x" * 9 + "…"


def test_fmt_value_is_one_compact_line() -> None:
    assert fmt_value("a\nb") == "a b"
    assert fmt_value(None) == "null"
    assert fmt_value(True) == "true"
    assert fmt_value(1.5) == "1.5"
    assert fmt_value({"a": [1, "é"]}) == '{"a": [1, "é"]}'
    assert fmt_value({"a": "x\ny"}) == '{"a": "x\\ny"}'


def test_mentions_only_for_slack_user_ids() -> None:
    assert mention("U0ABC123") == "<@U0ABC123>"
    assert mention("W0ABC123") == "<@W0ABC123>"
    assert mention("alice") == "alice"
    assert mention("@finance-leads") == "@finance-leads"
    assert mention("<!channel>") == "&lt;!channel&gt;"
    assert mention("U0ABC123>") == "U0ABC123&gt;"
    assert mention(None) == "nobody"
    assert mentions(["U0A1", "U0B2", "U0C3"], 20) == "3 people or groups"
    assert mentions(["U0A1", "U0B2", "U0C3"], 40) == "<@U0A1>, <@U0B2>, and 1 more"
    assert mentions([], 40) == "anyone in the workspace"
    assert mentions([f"U0{i:06d}" for i in range(100)], 100).endswith("more")


def test_code_block_keeps_lines_and_cannot_be_closed_from_inside() -> None:
    block = code_block("line 1\n```\n<!here>", 100)
    assert block.startswith("```") and block.endswith("```")
    assert block.count("```") == 2
    assert "&lt;!here&gt;" in block and "\nline" not in block[:3]
    long = code_block("y" * 5000, 200, "full value: `/gatehouse run r`")
    assert len(long) <= 200 and long.endswith("full value: `/gatehouse run r`")


def test_the_checkers_themselves_catch_leaks_and_oversize_text() -> None:
    leak = [{"type": "section", "text": {"type": "mrkdwn", "text": "hey <!channel>"}}]
    with pytest.raises(AssertionError):
        check_escaped(leak, allowed_users=USERS)
    stranger = [{"type": "section", "text": {"type": "mrkdwn", "text": "hey <@U0STRANGER>"}}]
    with pytest.raises(AssertionError):
        check_escaped(stranger, allowed_users=USERS)
    too_long = [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]
    with pytest.raises(AssertionError):
        check_limits(too_long)
    with pytest.raises(AssertionError):
        check_limits([{"type": "divider"}] * 51)
