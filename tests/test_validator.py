"""`approval=validator(...)`: a second model judges a gated call before it runs, against the fake
OpenAI server with the real `openai` client. Approve (the call runs), reject (`ActionRejected`),
and everything else (unsure, under the bar, no verdict, no model) to a person — or rejected with
`then="reject"`; the verdict is a recorded call of the run, replayed and never asked twice, and
its tokens and cost count in the run."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from bot.cli.render import approval_detail
from bot.slack import cards
from pipelines import (
    ActionRejected,
    Context,
    Gatehouse,
    LLMConfig,
    Price,
    StaticDirectory,
    pipeline,
    tool,
    validator,
)
from pipelines.catalog.lead_qualify import send_intro_email
from pipelines.validator import Validator
from storage.audit import list_entries
from storage.db import Database
from storage.stats import window_stats
from tests.conftest import GROUPS
from tests.fakes.clock import FakeClock
from tests.fakes.notifier import RecordingNotifier
from tests.fakes.openai import FakeOpenAI, reply_json, reply_status

MODEL = "gpt-4o-mini"
sent: list[str] = []


class Email(BaseModel):
    to: str
    body: str


class Sent(BaseModel):
    to: str


class Outreach(BaseModel):
    to: str
    body: str = "Hello"


RULES = "Approve emails to customers that promise nothing; reject any that promise a discount."


@tool(kind="send", approval=validator(RULES), approvers=["@ops"], rate_limit="10/hour")
def v_send_email(args: Email, *, idempotency_key: str) -> Sent:
    """Send an email to a customer."""
    sent.append(args.to)
    return Sent(to=args.to)


@tool(
    kind="send",
    approval=validator(RULES, model="gpt-4o", min_confidence=0.9, then="reject"),
    rate_limit="10/hour",
)
def v_send_strict(args: Email, *, idempotency_key: str) -> Sent:
    """Send an email, or nothing: no person to ask."""
    sent.append(args.to)
    return Sent(to=args.to)


@pipeline("v_outreach", input=Outreach)
def v_outreach(ctx: Context, o: Outreach) -> dict[str, Any]:
    result = ctx.tool(v_send_email, Email(to=o.to, body=o.body))
    return {"sent_to": result.to}


@pipeline("v_strict", input=Outreach)
def v_strict(ctx: Context, o: Outreach) -> dict[str, Any]:
    try:
        result = ctx.tool(v_send_strict, Email(to=o.to, body=o.body))
    except ActionRejected as rejected:
        return {"not_sent": rejected.reason, "by": rejected.by}
    return {"sent_to": result.to}


MakeGatehouse = Callable[..., Gatehouse]
APPROVE = {"verdict": "approve", "reason": "A plain hello.", "confidence": 0.95}
REJECT = {"verdict": "reject", "reason": "It promises a 50% discount.", "confidence": 0.97}
UNSURE = {
    "verdict": "unsure",
    "reason": "Can't tell <!channel> what *this* means.",
    "confidence": 0.9,
}


@pytest.fixture(autouse=True)
def _clear_sent() -> None:
    sent.clear()


@pytest.fixture
def make_gatehouse(
    db: Database, clock: FakeClock, notifier: RecordingNotifier, fake_openai: FakeOpenAI
) -> MakeGatehouse:
    def make(**overrides: Any) -> Gatehouse:
        config: dict[str, Any] = {
            "model": MODEL,
            "base_url": fake_openai.base_url,
            "api_key": "sk-test",
            "timeout_seconds": 5.0,
            "max_retries": 0,
            "prices": {MODEL: Price(1.0, 2.0), "gpt-4o": Price(2.5, 10.0)},
            **overrides,
        }
        return Gatehouse(
            db,
            clock=clock,
            notifier=notifier,
            directory=StaticDirectory(GROUPS),
            llm=LLMConfig(**config),
        )

    return make


@pytest.fixture
def gh(make_gatehouse: MakeGatehouse) -> Gatehouse:
    return make_gatehouse()


def _audit(gatehouse: Gatehouse, run_id: str) -> list[Any]:
    with gatehouse.rt.db.transaction() as conn:
        return list(reversed(list_entries(conn, run_id=run_id, limit=100)))


def _calls(gatehouse: Gatehouse, run_id: str) -> list[tuple[str, str, str]]:
    return [(c.kind, c.key, c.status) for c in gatehouse.run(run_id).calls]


# -- the three paths ---------------------------------------------------------------------


def test_confident_approval_runs_the_call_audited_as_approved_by_the_validator(
    gh: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(reply_json(APPROVE, prompt_tokens=300, completion_tokens=20))

    run = gh.trigger("v_outreach", {"to": "dana@example.com"}, user="carol")

    assert run.status == "succeeded", run.error
    assert sent == ["dana@example.com"]
    assert _calls(gh, run.id) == [
        ("llm", "validator:v_send_email#1", "succeeded"),
        ("tool", "v_send_email#1", "succeeded"),
    ]
    assert gh.run(run.id).approvals == [], "no person was asked"
    [approved] = [e for e in _audit(gh, run.id) if e.event == "validator.approved"]
    assert approved.actor == f"validator ({MODEL})"
    assert approved.detail["decision"] == f"approved by validator ({MODEL})"
    assert (approved.detail["verdict"], approved.detail["confidence"]) == ("approve", 0.95)
    assert approved.detail["reason"] == "A plain hello."
    # What the validator saw: the rules, the tool, its arguments and the run's input.
    [request] = fake_openai.requests
    system, user = request["messages"][0]["content"], request["messages"][1]["content"]
    assert RULES in system
    assert "v_send_email" in user and "dana@example.com" in user and "Workflow: v_outreach" in user


def test_confident_rejection_ends_the_run_rejected_with_the_validators_reason(
    gh: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(reply_json(REJECT))

    run = gh.trigger("v_outreach", {"to": "dana@example.com", "body": "50% off!"})

    assert run.status == "rejected"
    assert "It promises a 50% discount." in (run.error or "")
    assert sent == []
    calls = gh.run(run.id).calls
    assert [(c.kind, c.status) for c in calls] == [("llm", "succeeded"), ("tool", "rejected")]
    assert calls[1].error == f"rejected by validator ({MODEL}): It promises a 50% discount."
    [rejected] = [e for e in _audit(gh, run.id) if e.event == "validator.rejected"]
    assert rejected.actor == f"validator ({MODEL})"
    assert rejected.detail["verdict"] == "reject"


def test_unsure_verdict_posts_the_approval_card_with_the_verdict_and_reason(
    gh: Gatehouse, fake_openai: FakeOpenAI, notifier: RecordingNotifier
) -> None:
    fake_openai.script(reply_json(UNSURE))

    run = gh.trigger("v_outreach", {"to": "dana@example.com"}, user="carol")

    assert run.status == "waiting"
    [approval] = gh.run(run.id).approvals
    assert (approval.status, approval.approvers) == ("pending", ["@ops"])
    assert approval.validator["verdict"] == "unsure"
    assert approval.validator["outcome"] == "human"
    assert approval.to_json()["validator"]["reason"] == UNSURE["reason"]
    blocks = cards.approval_card(approval, cards.ApprovalContext())
    text = str(blocks)
    assert "The validator" in text and "Verdict: *unsure*" in text and "confidence 0.90" in text
    assert "&lt;!channel&gt;" in text and "<!channel>" not in text, "the reason is escaped"
    assert "validator:v_send_email" not in text, "not repeated under what the model said"
    assert f"validator ({MODEL}) said unsure (confidence 0.90)" in approval_detail(approval)
    requested = [e for e in _audit(gh, run.id) if e.event == "approval.requested"]
    assert requested[0].detail["validator"]["verdict"] == "unsure"


def test_approval_under_the_bar_goes_to_a_person(gh: Gatehouse, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(reply_json({**APPROVE, "confidence": 0.6}))

    run = gh.trigger("v_outreach", {"to": "dana@example.com"})

    assert run.status == "waiting"
    [approval] = gh.run(run.id).approvals
    assert approval.validator["verdict"] == "approve"
    assert "under the bar of 0.8" in approval.validator["summary"]
    assert "under the bar of 0.8" in str(cards.approval_card(approval, cards.ApprovalContext()))
    assert sent == []


def test_unsure_rejection_goes_to_a_person_who_may_still_approve(
    gh: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(reply_json({**REJECT, "confidence": 0.5}))

    run = gh.trigger("v_outreach", {"to": "dana@example.com"})

    assert run.status == "waiting"
    [approval] = gh.run(run.id).approvals
    gh.approve(approval.id, user="olga")
    assert gh.resume(run.id).status == "succeeded"  # type: ignore[union-attr]
    assert sent == ["dana@example.com"]


def test_model_error_goes_to_a_person_with_no_verdict(
    gh: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.always(reply_status(503))

    run = gh.trigger("v_outreach", {"to": "dana@example.com"})

    assert run.status == "waiting"
    [approval] = gh.run(run.id).approvals
    assert approval.validator["verdict"] is None
    assert approval.validator["failure"] == "model_error"
    assert "Verdict: none" in str(cards.approval_card(approval, cards.ApprovalContext()))
    [validator_call] = [c for c in gh.run(run.id).calls if c.kind == "llm"]
    assert validator_call.status == "failed"


def test_misconfigured_model_goes_to_a_person_too(gh: Gatehouse, fake_openai: FakeOpenAI) -> None:
    fake_openai.always(reply_status(404, message="The model `gpt-4o-mini` does not exist"))

    run = gh.trigger("v_outreach", {"to": "dana@example.com"})

    assert run.status == "waiting"
    [approval] = gh.run(run.id).approvals
    assert "HTTP 404" in approval.validator["reason"]


def test_no_model_configured_goes_to_a_person(
    make_gatehouse: MakeGatehouse, fake_openai: FakeOpenAI
) -> None:
    gatehouse = make_gatehouse(model=None)

    run = gatehouse.trigger("v_outreach", {"to": "dana@example.com"})

    assert run.status == "waiting"
    [approval] = gatehouse.run(run.id).approvals
    assert approval.validator["failure"] == "no_model"
    assert approval.validator["model"] is None
    assert "(no model)" in str(cards.approval_card(approval, cards.ApprovalContext()))
    assert fake_openai.calls == 0


@pytest.mark.parametrize(
    "reply",
    [reply_json(UNSURE), reply_json({**APPROVE, "confidence": 0.85}), reply_status(503)],
    ids=["unsure", "under-the-bar", "model-error"],
)
def test_then_reject_rejects_whatever_the_validator_could_not_approve(
    gh: Gatehouse, fake_openai: FakeOpenAI, reply: Any
) -> None:
    fake_openai.script(reply)

    run = gh.trigger("v_strict", {"to": "dana@example.com"})

    assert run.status == "succeeded", run.error
    assert run.output["by"] == "validator (gpt-4o)"
    assert "the validator's fallback is to reject" in run.output["not_sent"]
    assert sent == []
    assert gh.run(run.id).approvals == []
    assert fake_openai.requests[0]["model"] == "gpt-4o", "model= overrides the configured one"


# -- durable and counted --------------------------------------------------------------------


def test_the_verdict_is_replayed_on_resume_not_asked_again(
    gh: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(reply_json(UNSURE))
    run = gh.trigger("v_outreach", {"to": "dana@example.com"}, user="carol")
    [approval] = gh.run(run.id).approvals

    gh.approve(approval.id, user="olga")
    done = gh.resume(run.id)

    assert done is not None and done.status == "succeeded", done
    assert fake_openai.calls == 1
    assert sent == ["dana@example.com"]
    assert _calls(gh, run.id) == [
        ("llm", "validator:v_send_email#1", "succeeded"),
        ("tool", "v_send_email#1", "succeeded"),
    ]
    report = gh.replay(run.id)
    assert report.divergence is None and report.output_matches, report.to_json()
    assert [line.outcome for line in report.lines] == ["reused", "reused"]
    assert fake_openai.calls == 1


def test_the_validators_tokens_and_cost_count_in_the_run(
    gh: Gatehouse, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(reply_json(APPROVE, prompt_tokens=1000, completion_tokens=500))

    run = gh.trigger("v_outreach", {"to": "dana@example.com"})

    [call] = [c for c in gh.run(run.id).calls if c.kind == "llm"]
    assert (call.meta["prompt_tokens"], call.meta["completion_tokens"]) == (1000, 500)
    assert call.meta["cost_usd"] == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1_000_000)
    assert call.meta["validator"] is True
    now = gh.rt.clock.now()
    with gh.rt.db.transaction() as conn:  # the totals `gatehouse stats` and App Home show
        stats = window_stats(
            conn,
            since=now - timedelta(days=1),
            until=now + timedelta(minutes=1),
            pipelines=["v_outreach"],
            use_rollups=False,
        )["v_outreach"]
    assert (stats.llm_calls, stats.prompt_tokens) == (1, 1000)
    assert stats.llm_cost_usd == pytest.approx(0.002)


# -- declaration ------------------------------------------------------------------------------


def test_validator_declaration_is_checked() -> None:
    with pytest.raises(ValueError, match="then="):
        validator("x", then="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_confidence"):
        validator("x", min_confidence=1.5)
    with pytest.raises(ValueError, match="instructions"):
        validator("  ")


def test_lead_qualify_intro_email_is_validated_then_handed_to_a_sales_lead() -> None:
    rule = send_intro_email.approval
    assert isinstance(rule, Validator)
    assert rule.then == "human"
    assert send_intro_email.approvers == ("@sales-leads",)
