"""Slack's real payload shapes, sent to the bot: every file in tests/fixtures/slack/ (shapes from
Slack's documentation and its SDKs' test fixtures, see the README there) is delivered signed, as
Slack POSTs it, through `world.slack.send`. None may get a 5xx or log an error; where the bot
should act (an approval decided, a form's answer read back, the Home published) it does.

Only `slack_world` and `world.slack.send` are used, so the same tests run over HTTP and over
Socket Mode once `slack_world` takes a mode.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import pytest
from pydantic import BaseModel, Field
from structlog.testing import capture_logs

from bot.sandbox.sender import NOT_ACKED, BotResponse, NotOverSocketMode
from pipelines import Context, pipeline
from pipelines.inspect import run_history
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.slack_harness import SlackWorld, slack_world

FIXTURES = Path(__file__).parent / "fixtures" / "slack"
ALL_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.json"))
REFUND = {"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_EVENT_IDS = itertools.count(1)


class PlAllInputs(BaseModel):
    """One field for each input element Slack has (the block and action ids in the fixture)."""

    summary: str
    count: int = Field(ge=1)
    contact: str
    link: str
    kind: Literal["refund", "question"]
    tags: list[Literal["vip", "late"]] = []
    reviewer: str | None = None
    where: str | None = None
    channel: str | None = None
    urgent: bool
    checks: list[Literal["vip", "late"]] = []
    due: date
    at: str | None = None
    when: int | None = None
    notes: str | None = None


ALL_INPUTS_ANSWER = {
    "summary": "Refund the scratched order",
    "count": 3,
    "contact": "ada@example.com",
    "link": "https://example.com/orders/1001",
    "kind": "refund",
    "tags": ["vip", "late"],
    "reviewer": "U_ALICE",
    "where": "C_GENERAL",
    "channel": "C_REVIEW",
    "urgent": True,
    "checks": ["late"],
    "due": "2026-12-24",
    "at": "09:30",
    "when": 1766568600,
    "notes": "Checked with finance",
}


class PlInput(BaseModel):
    text: str


@pipeline("pl_all_inputs", input=PlInput)
def pl_all_inputs(ctx: Context, given: PlInput) -> dict[str, Any]:
    answer = ctx.ask_human("fill", f"Fill in {given.text}", output=PlAllInputs)
    return answer.model_dump(mode="json")


# -- delivering a fixture ----------------------------------------------------------------------


def _fill(node: Any, values: dict[str, str]) -> Any:
    """The fixture with its `{placeholder}`s replaced by ids this test created."""
    if isinstance(node, dict):
        return {key: _fill(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_fill(value, values) for value in node]
    if isinstance(node, str):
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), node)
    return node


def _actor(body: dict[str, Any]) -> tuple[str, str, str | None]:
    """(user, channel, message ts placeholder present) of a fixture, for its trigger_id and
    response_url."""
    user = body.get("user")
    if isinstance(user, dict):
        user_id = str(user["id"])
    elif "user_id" in body:
        user_id = str(body["user_id"])
    else:
        user_id = str((body.get("event") or {}).get("user", "U_ALICE"))
    channel = (body.get("channel") or {}).get("id") or body.get("channel_id") or "C_APPROVALS"
    container = body.get("container") or {}
    return user_id, str(channel), container.get("message_ts")


def deliver(world: SlackWorld, name: str, **values: str) -> BotResponse:
    """Send the fixture `name`, signed, in the encoding Slack uses for its kind: a slash command
    as its form fields, an interaction as `payload=<json>`, anything else as JSON."""
    raw = json.loads((FIXTURES / name).read_text())
    user, channel, message_ts = _actor(raw)
    filled: dict[str, str] = {
        "verification_token": world.fake.verification_token,
        "trigger_id": world.fake.issue_trigger_id(user),
        "event_id": f"Ev_PAYLOADS_{next(_EVENT_IDS):06d}",
        "view_id": "V_PAYLOADS",
        **values,
    }
    ts = filled.get("message_ts") if message_ts else None
    filled["response_url"] = world.fake.issue_response_url(user, channel, ts)
    body = _fill(raw, filled)
    leftover = _PLACEHOLDER.findall(json.dumps(body))
    assert not leftover, f"{name}: no value given for {sorted(set(leftover))}"
    if name.startswith("command."):
        return world.slack.send(urlencode(body), "application/x-www-form-urlencoded")
    if body.get("type") in ("block_actions", "view_submission", "view_closed"):
        form = urlencode({"payload": json.dumps(body)})
        return world.slack.send(form, "application/x-www-form-urlencoded")
    return world.slack.send(json.dumps(body), "application/json")


@pytest.fixture
def world(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock, slack_mode: str
) -> Iterator[SlackWorld]:
    """Every payload goes both ways Slack reaches the bot: HTTP and Socket Mode."""
    with slack_world(fake_slack, sqlite_url, clock, mode=slack_mode) as built:
        yield built


@pytest.fixture
def http_world(fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock) -> Iterator[SlackWorld]:
    """What Slack sends over HTTP only (url_verification)."""
    with slack_world(fake_slack, sqlite_url, clock) as built:
        yield built


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture) -> Iterator[list[dict[str, Any]]]:
    """The structlog entries logged meanwhile; on exit, none may be an error or carry a
    traceback, and no stdlib logger (slack_bolt's) may have logged an error either."""
    caplog.set_level(logging.WARNING)
    with capture_logs() as logs:
        yield logs
    failures = [
        entry
        for entry in logs
        if entry.get("log_level") in ("error", "critical", "exception") or entry.get("exc_info")
    ]
    assert failures == []
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert [r.getMessage() for r in errors] == []


def _refund_card(world: SlackWorld) -> tuple[str, str, str]:
    """A run waiting for an approval: (run id, approval id, the card's ts)."""
    run = world.gatehouse.trigger("refund_request", REFUND, user="U_CAROL", source="slack")
    assert run.status == "waiting", run.error
    [card] = world.approval_cards()
    return run.id, run.waiting_for[0], str(card["ts"])


def _task_card(world: SlackWorld) -> tuple[str, str, str]:
    """A run waiting for a person's answer: (run id, task id, the card's ts)."""
    run = world.gatehouse.trigger("pl_all_inputs", {"text": "the form"}, user="U_CAROL")
    assert run.status == "waiting", run.error
    task_id = run.waiting_for[0]
    [card] = [c for c in world.approval_cards() if task_id in json.dumps(c["blocks"])]
    return run.id, task_id, str(card["ts"])


def _ok(response: BotResponse) -> None:
    assert response.status < 500, response.text
    assert response.status == 200, (response.status, response.text)


# -- every file: no 5xx, nothing logged as an error --------------------------------------------


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_fixture_is_acked_without_an_error(
    world: SlackWorld, quiet: list[dict[str, Any]], name: str
) -> None:
    _run_id, approval_id, card_ts = _refund_card(world)
    _task_run, task_id, _task_ts = _task_card(world)
    values = {"approval_id": approval_id, "task_id": task_id, "message_ts": card_ts}
    if world.mode == "socket" and name == "url_verification.json":
        # Slack verifies a Request URL over HTTP only; no such envelope exists in Socket Mode.
        with pytest.raises(NotOverSocketMode):
            deliver(world, name, **values)
        return
    response = deliver(world, name, **values)
    world.settle()
    assert response.status != NOT_ACKED, f"{name}: no ack within Slack's 3 s"
    assert response.status < 500, (response.status, response.text)
    assert world.fake.rejected == []  # whatever the bot sent Slack in answer, Slack takes


def test_the_readme_names_the_source_of_every_fixture() -> None:
    readme = (FIXTURES / "README.md").read_text()
    assert [name for name in ALL_FIXTURES if f"`{name}`" not in readme] == []


# -- block_actions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "block_actions.message.approve.json",
        "block_actions.message.approve.no_user_name.json",
        "block_actions.message.approve.grid.json",
        "block_actions.modal.approve.json",
        "block_actions.home.approve.json",
    ],
)
def test_an_approve_click_decides_the_approval_wherever_the_button_is(
    world: SlackWorld, quiet: list[dict[str, Any]], name: str
) -> None:
    run_id, approval_id, card_ts = _refund_card(world)
    _ok(deliver(world, name, approval_id=approval_id, message_ts=card_ts))
    world.settle()
    assert world.gatehouse.approval(approval_id).status == "approved"
    assert world.gatehouse.run(run_id).status == "succeeded"
    assert world.fake.rejected == []


def test_a_click_from_a_shared_channel_user_of_another_team_decides_nothing(
    world: SlackWorld, quiet: list[dict[str, Any]]
) -> None:
    """Not an approver: refused and audited (telling them is the refusals' work: the bot is not
    in a channel with them, so only the payload's response_url would reach them)."""
    run_id, approval_id, card_ts = _refund_card(world)
    name = "block_actions.message.approve.shared_channel.json"
    _ok(deliver(world, name, approval_id=approval_id, message_ts=card_ts))
    world.settle()
    assert world.gatehouse.approval(approval_id).status == "pending"
    refused = [
        e for e in run_history(world.gatehouse.rt, run_id)["audit"] if e["event"] == "refused"
    ]
    assert [e["actor"] for e in refused] == ["U_PARTNER1"]


def test_reject_from_the_card_opens_the_reason_modal(
    world: SlackWorld, quiet: list[dict[str, Any]]
) -> None:
    _run_id, approval_id, card_ts = _refund_card(world)
    name = "block_actions.message.reject.json"
    _ok(deliver(world, name, approval_id=approval_id, message_ts=card_ts))
    world.settle()
    [modal] = world.fake.views
    assert modal["callback_id"] == "approval.reject_reason"
    assert modal["private_metadata"] == approval_id


def test_answer_from_the_task_card_opens_the_form(
    world: SlackWorld, quiet: list[dict[str, Any]]
) -> None:
    _run_id, task_id, card_ts = _task_card(world)
    _ok(deliver(world, "block_actions.message.answer.json", task_id=task_id, message_ts=card_ts))
    world.settle()
    [opened] = world.fake.views
    form = world.fake.view(opened["id"])
    assert form["callback_id"] == "task.answer" and form["private_metadata"] == task_id
    assert world.fake.rejected == []


# -- view_submission / view_closed -------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "view_submission.answer.all_inputs.json",
        "view_submission.answer.org_install.no_user_name.json",
    ],
)
def test_a_submission_with_every_input_element_is_read_back_onto_the_answer(
    world: SlackWorld, quiet: list[dict[str, Any]], name: str
) -> None:
    run_id, task_id, _card_ts = _task_card(world)
    response = deliver(world, name, task_id=task_id)
    _ok(response)
    assert not response.text  # accepted: the modal closes
    world.settle()
    finished = world.gatehouse.run(run_id)
    assert finished.status == "succeeded", finished.error
    assert finished.output == ALL_INPUTS_ANSWER


def test_a_reject_reason_submitted_by_a_user_without_a_name_rejects_the_run(
    world: SlackWorld, quiet: list[dict[str, Any]]
) -> None:
    run_id, approval_id, _card_ts = _refund_card(world)
    _ok(deliver(world, "view_submission.reject_reason.json", approval_id=approval_id))
    world.settle()
    run = world.gatehouse.run(run_id)
    assert run.status == "rejected" and "duplicate of an earlier refund" in (run.error or "")


def test_a_closed_reject_modal_decides_nothing(
    world: SlackWorld, quiet: list[dict[str, Any]]
) -> None:
    _run_id, approval_id, _card_ts = _refund_card(world)
    response = deliver(world, "view_closed.reject_reason.json", approval_id=approval_id)
    assert response.status < 500
    world.settle()
    assert world.gatehouse.approval(approval_id).status == "pending"


# -- slash commands ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "user", "says"),
    [
        ("command.help.json", "U_ALICE", "/gatehouse"),
        ("command.help.grid.json", "U_ALICE", "/gatehouse"),
        ("command.pending.no_user_name.json", "U_ALICE", "issue_refund"),
    ],
)
def test_a_slash_command_is_answered_through_its_response_url(
    world: SlackWorld, quiet: list[dict[str, Any]], name: str, user: str, says: str
) -> None:
    _refund_card(world)  # something pending, for `pending`
    _ok(deliver(world, name))
    world.settle()
    replies = world.fake.ephemerals(user)
    assert replies, "no reply reached the person"
    assert says in json.dumps(replies)


# -- events ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "user"),
    [
        ("event_callback.app_home_opened.first_open.json", "U_ALICE"),
        ("event_callback.app_home_opened.with_view.json", "U_ALICE"),
        ("event_callback.app_home_opened.grid_org_install.json", "U_BOB"),
    ],
)
def test_app_home_opened_publishes_the_home(
    world: SlackWorld, quiet: list[dict[str, Any]], name: str, user: str
) -> None:
    _ok(deliver(world, name))
    world.settle()
    home = world.fake.home(user)
    assert home is not None and home["type"] == "home"


def test_app_home_opened_on_the_messages_tab_publishes_nothing(
    world: SlackWorld, quiet: list[dict[str, Any]]
) -> None:
    _ok(deliver(world, "event_callback.app_home_opened.messages_tab.json"))
    world.settle()
    assert world.fake.home("U_ALICE") is None


def test_url_verification_echoes_the_challenge(
    http_world: SlackWorld, quiet: list[dict[str, Any]]
) -> None:
    response = deliver(http_world, "url_verification.json")
    _ok(response)
    assert "gatehouse-challenge-3f9a1c" in response.text


def test_an_app_home_opened_without_a_user_is_acked_and_ignored(
    world: SlackWorld, quiet: list[dict[str, Any]]
) -> None:
    """No documented shape lacks `user`, but a listener that assumes it answers a signed
    delivery with an error (Bolt logs the KeyError; Slack sees a failure and retries)."""
    raw = json.loads((FIXTURES / "event_callback.app_home_opened.first_open.json").read_text())
    del raw["event"]["user"]
    filled = {"verification_token": world.fake.verification_token, "event_id": "Ev_PAYLOADS_NO"}
    body = _fill(raw, filled)
    response = world.slack.send(json.dumps(body), "application/json")
    world.settle()
    _ok(response)
    assert world.fake.calls_to("views.publish") == []


# -- the served workspaces (GATEHOUSE_SLACK_TEAM_IDS) ------------------------------------------


@pytest.fixture
def grid_world(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock, slack_mode: str
) -> Iterator[SlackWorld]:
    """The bot serving the whole Grid org `E_GATEHOUSE`."""
    with slack_world(
        fake_slack, sqlite_url, clock, mode=slack_mode, slack_team_ids=["E_GATEHOUSE"]
    ) as built:
        yield built


@pytest.fixture
def team_world(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock, slack_mode: str
) -> Iterator[SlackWorld]:
    """The bot serving its own workspace `T_GATEHOUSE` only."""
    with slack_world(
        fake_slack, sqlite_url, clock, mode=slack_mode, slack_team_ids=["T_GATEHOUSE"]
    ) as built:
        yield built


def test_a_bot_serving_the_grid_org_acts_on_every_grid_shape(
    grid_world: SlackWorld, quiet: list[dict[str, Any]]
) -> None:
    world = grid_world
    run_id, approval_id, card_ts = _refund_card(world)
    name = "block_actions.message.approve.grid.json"
    _ok(deliver(world, name, approval_id=approval_id, message_ts=card_ts))
    task_run, task_id, _task_ts = _task_card(world)
    name = "view_submission.answer.org_install.no_user_name.json"
    _ok(deliver(world, name, task_id=task_id))
    _ok(deliver(world, "event_callback.app_home_opened.grid_org_install.json"))
    _ok(deliver(world, "command.help.grid.json"))
    world.settle()
    assert world.gatehouse.run(run_id).status == "succeeded"
    assert world.gatehouse.run(task_run).output == ALL_INPUTS_ANSWER
    assert world.fake.home("U_BOB") is not None
    assert "/gatehouse" in json.dumps(world.fake.ephemerals("U_ALICE"))


def test_a_click_from_a_slack_connect_partner_is_refused_and_told(
    team_world: SlackWorld, quiet: list[dict[str, Any]]
) -> None:
    world = team_world
    _run_id, approval_id, card_ts = _refund_card(world)
    name = "block_actions.message.approve.shared_channel.json"
    _ok(deliver(world, name, approval_id=approval_id, message_ts=card_ts))
    response = deliver(world, "event_callback.app_mention.shared_channel.json")
    assert response.status < 500
    world.settle()
    assert world.gatehouse.approval(approval_id).status == "pending"
    [told] = world.fake.ephemerals("U_PARTNER1")
    assert "T_PARTNER" in told["text"] and "refused" in told["text"]
