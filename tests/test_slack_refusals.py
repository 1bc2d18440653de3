"""Every Web API refusal has an answer for the person: a refused modal, form or Home tab says what
happened and what to do; a modal open is never retried after a 429 and never waits behind other
work; private replies reach people where the bot is not a member; failed replies and Slack's
warnings are logged; an eval's summary reaches its asker when the channel refuses it.

Slack refuses through the sandbox (`fail_next`, `rate_limit_next`, `warn_next`), clicks and
commands are sent signed by `world.slack`, as Slack sends them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from structlog.testing import capture_logs

from bot.slack.private_replies import response_url_error
from bot.slack.refusals import SENTENCES, sentence
from bot.slack.review_cards import FLAG_ACTION
from bot.slack.web_client import answer_warnings
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.slack_harness import SlackWorld, slack_world
from tests.test_eval import ROUTE_SET
from tests.test_review_slack import REVIEW, _post, _replies, _seed

LARGE = {"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}
TICKET = {
    "ticket_id": "T-7",
    "customer_email": "ada@example.com",
    "subject": "Scratched",
    "body": "Order ord_1001 arrived scratched; 5.00 back please.",
}
EXPIRED = "expired before Gatehouse could open"


@pytest.fixture
def world(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock, tmp_path: Path, slack_mode: str
) -> Iterator[SlackWorld]:
    """Each refusal is met both ways Slack reaches the bot: HTTP and Socket Mode."""
    (tmp_path / "ev_route.jsonl").write_text(ROUTE_SET, encoding="utf-8")
    with slack_world(
        fake_slack,
        sqlite_url,
        clock,
        mode=slack_mode,
        eval_datasets_dir=str(tmp_path),
        operators=["U_OLGA"],
        review_channel=REVIEW,
        review_size=5,
    ) as built:
        yield built


def _shown(message: dict[str, Any] | None) -> str:
    """Everything a person reads in a message or view."""
    if message is None:
        return ""
    return json.dumps([message.get("text"), message.get("blocks")], ensure_ascii=False)


def _approval_card(world: SlackWorld) -> dict[str, Any]:
    run = world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
    assert run.status == "waiting", run.error
    [card] = world.approval_cards()
    return card


def _approval_card_beside(world: SlackWorld) -> dict[str, Any]:
    """An approval card posted after other cards (the newest in the approvals channel)."""
    run = world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
    assert run.status == "waiting", run.error
    return world.approval_cards()[-1]


def _task_card(world: SlackWorld) -> dict[str, Any]:
    run = world.gatehouse.trigger("ticket_triage", TICKET, user="U_CAROL", source="slack")
    assert run.status == "waiting", run.error
    [card] = world.approval_cards()
    return card


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll for work on the bot's threads (no fixed sleep: returns as soon as it holds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def _no_tracebacks(logs: list[dict[str, Any]]) -> None:
    assert [e["event"] for e in logs if e.get("exc_info")] == []
    assert [e for e in logs if e["event"] == "slack.work_failed"] == []


def _refusals(logs: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == event]


# -- the mapping ---------------------------------------------------------------------------


def test_each_slack_error_reads_as_a_sentence_saying_what_to_do() -> None:
    for error in ("expired_trigger_id", "invalid_trigger_id", "exchanged_trigger_id"):
        assert sentence(error) == (
            "This button expired before Gatehouse could open the form; click it again."
        )
    assert "too large" in sentence("view_too_large")
    assert "click again in a moment" in sentence("ratelimited")
    assert "closed before" in sentence("not_found")
    assert "changed while" in sentence("hash_conflict")
    assert "invalid_arguments" in sentence("invalid_arguments")
    assert "/invite" in sentence("not_in_channel")
    assert sentence("view_too_large", "the dashboard").startswith("The dashboard is too large")
    unknown = sentence("something_new")
    assert "something_new" in unknown and "try again" in unknown
    for error in SENTENCES:  # every template formats, none leaks a placeholder
        assert "{" not in sentence(error)


# -- modals: views.open ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "error", ["expired_trigger_id", "invalid_trigger_id", "exchanged_trigger_id"]
)
def test_a_modal_slack_will_not_open_for_the_trigger_tells_the_clicker_to_click_again(
    world: SlackWorld, error: str
) -> None:
    card = _approval_card(world)
    world.fake.fail_next("views.open", error)
    with capture_logs() as logs:
        world.slack.block_action("approval.reject", message=card["ts"], user_id="U_BOB")
        world.settle()
    [told] = world.fake.ephemerals("U_BOB")
    assert EXPIRED in told["text"] and "click it again" in told["text"]
    [refused] = _refusals(logs, "slack.modal_refused")
    assert (refused["log_level"], refused["method"], refused["error"]) == (
        "warning",
        "views.open",
        error,
    )
    _no_tracebacks(logs)
    assert world.fake.views == []


def test_a_form_too_large_for_slack_is_said_to_the_clicker(world: SlackWorld) -> None:
    card = _task_card(world)
    world.fake.fail_next("views.open", "view_too_large")
    with capture_logs() as logs:
        world.slack.block_action("task.answer", message=card["ts"], user_id="U_OLGA")
        world.settle()
    [told] = world.fake.ephemerals("U_OLGA")
    assert "too large for Slack" in told["text"]
    _no_tracebacks(logs)


def test_a_flag_modal_slack_will_not_open_tells_the_reviewer_to_click_again(
    world: SlackWorld,
) -> None:
    _seed(world)
    reply = _replies(world, _post(world))[1]
    world.fake.fail_next("views.open", "expired_trigger_id")
    with capture_logs() as logs:
        world.slack.block_action(FLAG_ACTION, message=reply["ts"], user_id="U_ALICE")
        world.settle()
    [told] = world.fake.ephemerals("U_ALICE")
    assert "expired before Gatehouse could open the flag form" in told["text"]
    _no_tracebacks(logs)


# -- modals: views.update ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "said"),
    [("view_too_large", "too large for Slack"), ("invalid_arguments", "refused the form")],
)
def test_a_refused_answer_form_replaces_the_loading_modal_with_what_happened(
    world: SlackWorld, error: str, said: str
) -> None:
    card = _task_card(world)
    world.fake.fail_next("views.update", error)
    with capture_logs() as logs:
        world.slack.block_action("task.answer", message=card["ts"], user_id="U_OLGA")
        world.settle()
    modal = world.fake.open_modal("U_OLGA")
    assert modal is not None
    assert "Loading" not in _shown(modal) and said in _shown(modal)
    [refused] = _refusals(logs, "slack.modal_update_refused")
    assert (refused["method"], refused["error"]) == ("views.update", error)
    _no_tracebacks(logs)


@pytest.mark.parametrize(
    ("error", "said"), [("not_found", "closed before"), ("hash_conflict", "changed while")]
)
def test_an_answer_modal_gone_before_it_was_filled_is_said_beside_the_card(
    world: SlackWorld, error: str, said: str
) -> None:
    card = _task_card(world)
    world.fake.fail_next("views.update", error)
    with capture_logs() as logs:
        world.slack.block_action("task.answer", message=card["ts"], user_id="U_OLGA")
        world.settle()
    [told] = world.fake.ephemerals("U_OLGA")
    assert said in told["text"] and "click the button again" in told["text"]
    assert len(world.fake.calls_to("views.update")) == 1  # nothing written over a changed view
    _no_tracebacks(logs)


# -- rate limits: no blind retry, no queue -------------------------------------------------------


def test_a_rate_limited_modal_open_is_not_retried_and_holds_no_thread_for_retry_after(
    world: SlackWorld,
) -> None:
    card = _approval_card(world)
    refused = ["U_ALICE", "U_BOB", "U_CAROL", "U_OLGA"]  # as many as the old UI pool had threads
    for user in refused:
        world.fake.rate_limit_next("views.open", retry_after=30)
        world.slack.block_action("approval.reject", message=card["ts"], user_id=user)
    assert _wait_until(lambda: len(world.fake.calls_to("views.open")) == len(refused))

    # A fifth click, while the four are being refused: its modal opens without waiting.
    world.slack.block_action("approval.reject", message=card["ts"], user_id="U_ALICE")
    assert _wait_until(lambda: world.fake.open_modal("U_ALICE") is not None)
    world.settle()

    assert len(world.fake.calls_to("views.open")) == 5  # each click once: no retry
    for user in refused:
        [told] = world.fake.ephemerals(user)
        assert "Slack is busy" in told["text"] and "click again in a moment" in told["text"]


def test_a_modal_open_never_waits_behind_other_slack_work(world: SlackWorld) -> None:
    task_card = _task_card(world)
    approval_card = _approval_card_beside(world)
    # Four Answer forms whose filling Slack rate-limits: the shared client waits Retry-After
    # (it may: a view_id does not expire) on the UI pool, every thread of it.
    answerers = ["U_ALICE", "U_BOB", "U_CAROL", "U_OLGA"]
    for user in answerers:
        world.fake.rate_limit_next("views.update", retry_after=5)
        world.slack.block_action("task.answer", message=task_card["ts"], user_id=user)
    assert _wait_until(lambda: len(world.fake.calls_to("views.update")) == len(answerers))

    world.slack.block_action("approval.reject", message=approval_card["ts"], user_id="U_BOB")
    world.settle()

    methods = [method for method, _ in world.fake.calls if method.startswith("views.")]
    reject_open = [i for i, m in enumerate(methods) if m == "views.open"][len(answerers)]
    first_retry = [i for i, m in enumerate(methods) if m == "views.update"][len(answerers)]
    assert reject_open < first_retry  # opened while the fillings were still waiting
    assert any(v["callback_id"] == "approval.reject_reason" for v in world.fake.views)


# -- private replies where the bot is not a member -------------------------------------------


@pytest.mark.parametrize("error", ["not_in_channel", "channel_not_found"])
def test_a_refusal_reaches_the_clicker_through_the_response_url_where_the_bot_is_no_member(
    world: SlackWorld, error: str
) -> None:
    card = _approval_card(world)
    world.fake.fail_next("chat.postEphemeral", error)
    with capture_logs() as logs:
        world.slack.block_action("approval.approve", message=card["ts"], user_id="U_OLGA")
        world.settle()
    [told] = world.fake.ephemerals("U_OLGA")
    assert told["via"] == "response_url" and "may not approve" in told["text"]
    [failed] = _refusals(logs, "slack.ephemeral_failed")
    assert (failed["method"], failed["error"]) == ("chat.postEphemeral", error)


def test_a_modal_refusal_is_told_through_the_response_url_where_the_bot_is_no_member(
    world: SlackWorld,
) -> None:
    card = _approval_card(world)
    world.fake.fail_next("views.open", "expired_trigger_id")
    world.fake.fail_next("chat.postEphemeral", "not_in_channel")
    world.slack.block_action("approval.reject", message=card["ts"], user_id="U_BOB")
    world.settle()
    [told] = world.fake.ephemerals("U_BOB")
    assert told["via"] == "response_url" and EXPIRED in told["text"]


def _command_answered_at(world: SlackWorld, text: str, user: str, response_url: str) -> None:
    """A slash command as Slack sends it, with this response_url (one Slack no longer takes)."""
    fields = {
        "token": world.fake.verification_token,
        "team_id": world.fake.team_id,
        "team_domain": world.fake.team_domain,
        "channel_id": "C_GENERAL",
        "channel_name": "general",
        "user_id": user,
        "user_name": world.fake.users[user],
        "command": "/gatehouse",
        "text": text,
        "api_app_id": world.fake.app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": world.fake.issue_trigger_id(user),
    }
    response = world.slack.send(urlencode(fields), "application/x-www-form-urlencoded")
    assert response.status == 200


def test_a_reply_slack_does_not_take_is_logged_with_its_error(world: SlackWorld) -> None:
    expired = world.fake.issue_response_url("U_CAROL", "C_GENERAL")
    world.fake.advance(31 * 60)  # response_urls live 30 minutes
    with capture_logs() as logs:
        _command_answered_at(world, "help", "U_CAROL", expired)
        world.settle()
    assert world.fake.ephemerals("U_CAROL") == []
    [failed] = _refusals(logs, "slack.reply_failed")
    assert (failed["log_level"], failed["via"], failed["status"], failed["error"]) == (
        "warning",
        "response_url",
        404,
        "expired_url",
    )
    assert failed["purpose"] == "command.help"


def test_a_response_url_answer_is_read_for_slacks_error() -> None:
    assert response_url_error(200, "ok") is None
    assert response_url_error(200, '{"ok": true}') is None
    assert response_url_error(404, "expired_url") == "expired_url"
    assert response_url_error(200, '{"ok": false, "error": "no_text"}') == "no_text"
    assert response_url_error(500, "") == "http_500"


# -- the Home tab --------------------------------------------------------------------------------


def test_a_refused_home_tab_says_what_happened_instead(world: SlackWorld) -> None:
    world.fake.fail_next("views.publish", "invalid_arguments")
    with capture_logs() as logs:
        world.slack.app_home_opened("U_ALICE")
        world.settle()
    home = world.fake.home("U_ALICE")
    assert home is not None and "refused the dashboard as invalid" in _shown(home)
    [refused] = _refusals(logs, "slack.home_refused")
    assert (refused["method"], refused["error"]) == ("views.publish", "invalid_arguments")
    _no_tracebacks(logs)


# -- /gatehouse eval -----------------------------------------------------------------------------


def test_eval_start_names_the_test_set_not_a_server_path_and_promises_only_what_is_true(
    world: SlackWorld, tmp_path: Path
) -> None:
    world.fake.invite("C_GENERAL")  # the summary is posted where the bot is a member
    world.slack.command("eval ev_route", user_id="U_OLGA", channel_id="C_GENERAL")
    world.settle()
    [started] = [e for e in world.fake.ephemerals("U_OLGA") if "Evaluating" in e["text"]]
    assert "from ev_route.jsonl" in started["text"]
    assert str(tmp_path) not in started["text"]
    assert "or sent to you privately if Gatehouse cannot post here" in started["text"]
    [posted] = world.fake.messages("C_GENERAL")
    assert str(tmp_path) not in _shown(posted) and "ev_route.jsonl" in _shown(posted)


@pytest.mark.parametrize("error", ["not_in_channel", "channel_not_found", "is_archived"])
def test_an_eval_summary_the_channel_refuses_reaches_the_asker_privately(
    world: SlackWorld, error: str
) -> None:
    world.fake.fail_next("chat.postMessage", error)
    with capture_logs() as logs:
        world.slack.command("eval ev_route", user_id="U_OLGA", channel_id="C_GENERAL")
        world.settle()
    assert world.fake.messages("C_GENERAL") == []
    [summary] = [e for e in world.fake.ephemerals("U_OLGA") if "2/6 passed" in _shown(e)]
    assert summary["via"] == "response_url"
    assert "could not post this summary" in _shown(summary)
    [refused] = _refusals(logs, "eval.summary_refused")
    assert (refused["method"], refused["error"]) == ("chat.postMessage", error)


def test_an_eval_summary_goes_to_a_dm_when_neither_channel_nor_response_url_takes_it(
    world: SlackWorld,
) -> None:
    world.fake.fail_next("chat.postMessage", "not_in_channel")
    gone = world.fake.issue_response_url("U_OLGA", "C_GENERAL")
    world.fake.advance(31 * 60)
    _command_answered_at(world, "eval ev_route", "U_OLGA", gone)
    world.settle()
    [dm] = [m for m in world.fake.messages("U_OLGA") if "2/6 passed" in _shown(m)]
    assert "could not post this summary" in _shown(dm)


# -- warnings on answers that succeeded -------------------------------------------------------


def test_slacks_warnings_are_logged_once_per_method_and_warning(world: SlackWorld) -> None:
    card = _approval_card(world)
    world.fake.warn_next("views.publish", "missing_charset")
    world.fake.warn_next("views.publish", "missing_charset")
    world.fake.warn_next("views.publish", "superfluous_charset")
    world.fake.warn_next("views.open", "superfluous_charset")  # through the modal client
    with capture_logs() as logs:
        for _ in range(3):
            world.slack.app_home_opened("U_ALICE")
            world.settle()
        world.slack.block_action("approval.reject", message=card["ts"], user_id="U_BOB")
        world.settle()
    warned = [(e["method"], e["warning"]) for e in logs if e["event"] == "slack.api_warning"]
    assert warned == [
        ("views.publish", "missing_charset"),
        ("views.publish", "superfluous_charset"),
        ("views.open", "superfluous_charset"),
    ]
    assert all(e["log_level"] == "warning" for e in logs if e["event"] == "slack.api_warning")
    assert world.fake.home("U_ALICE") is not None and world.fake.open_modal("U_BOB") is not None


def test_warnings_are_read_from_every_place_slack_puts_them() -> None:
    answer = {
        "ok": True,
        "warning": "superfluous_charset,missing_charset",
        "response_metadata": {
            "warnings": ["superfluous_charset"],
            "messages": ["[WARN] A Content-Type HTTP header was presented but did not declare"],
        },
    }
    assert answer_warnings(answer) == [
        "superfluous_charset",
        "[WARN] A Content-Type HTTP header was presented but did not declare",
        "missing_charset",
    ]
    assert answer_warnings({"ok": True}) == []


def test_warnings_on_the_outboxs_calls_are_logged_too(world: SlackWorld) -> None:
    """The outbox posts cards through its own client (no retry handlers): Slack's warnings on
    those answers are logged as on every other call."""
    world.fake.warn_next("chat.postMessage", "message_truncated")
    with capture_logs() as logs:
        _approval_card(world)
        world.settle()
    warned = [(e["method"], e["warning"]) for e in logs if e["event"] == "slack.api_warning"]
    assert warned == [("chat.postMessage", "message_truncated")]
