"""The fake Slack speaks the protocol: the real slack_sdk WebClient gets Slack's answers from it
(errors, 429s it retries, Block Kit it refuses), and a real Bolt app accepts what SlackSender
sends, signature and all."""

from __future__ import annotations

import json
import re
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from slack_bolt import Ack, App, BoltRequest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier

from tests.fakes.slack import FakeSlack, SlackSender

SECRET = "fake-signing-secret"


def client_for(fake: FakeSlack, **kwargs: Any) -> WebClient:
    return WebClient(token=fake.token, base_url=fake.api_url, **kwargs)


def section(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}, **extra}


def button(text: str, action_id: str, value: str = "v", **extra: Any) -> dict[str, Any]:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action_id,
        "value": value,
        **extra,
    }


APPROVAL_CARD: list[dict[str, Any]] = [
    {"type": "header", "text": {"type": "plain_text", "text": "Approval needed: issue_refund"}},
    {
        "type": "section",
        "fields": [
            {"type": "mrkdwn", "text": "*Order*\n42"},
            {"type": "mrkdwn", "text": "*Amount*\n$150.00"},
        ],
    },
    {"type": "context", "elements": [{"type": "mrkdwn", "text": "run `r_1` · expires in 24h"}]},
    {"type": "divider"},
    {
        "type": "actions",
        "block_id": "approval:a_1",
        "elements": [
            button(
                "Approve",
                "approve",
                "a_1",
                style="primary",
                confirm={
                    "title": {"type": "plain_text", "text": "Spend $150?"},
                    "text": {"type": "mrkdwn", "text": "This issues a refund."},
                    "confirm": {"type": "plain_text", "text": "Approve"},
                    "deny": {"type": "plain_text", "text": "Cancel"},
                },
            ),
            button("Reject", "reject", "a_1", style="danger"),
        ],
    },
]

REASON_MODAL = {
    "type": "modal",
    "callback_id": "reject_reason",
    "private_metadata": "a_1",
    "title": {"type": "plain_text", "text": "Reject"},
    "submit": {"type": "plain_text", "text": "Reject"},
    "blocks": [
        {
            "type": "input",
            "block_id": "reason",
            "label": {"type": "plain_text", "text": "Why?"},
            "element": {"type": "plain_text_input", "action_id": "text", "multiline": True},
        },
        {
            "type": "input",
            "block_id": "category",
            "label": {"type": "plain_text", "text": "Category"},
            "element": {
                "type": "static_select",
                "action_id": "pick",
                "options": [
                    {"text": {"type": "plain_text", "text": "Wrong amount"}, "value": "amount"},
                    {"text": {"type": "plain_text", "text": "Fraud"}, "value": "fraud"},
                ],
            },
        },
    ],
}


# -- messages ------------------------------------------------------------------------------


def test_post_then_update_changes_the_stored_message(fake_slack: FakeSlack) -> None:
    client = client_for(fake_slack)

    posted = client.chat_postMessage(channel="#approvals", text="Approve?", blocks=APPROVAL_CARD)
    updated = client.chat_update(
        channel=posted["channel"], ts=posted["ts"], text="Approved", blocks=[section("Approved")]
    )

    assert posted["channel"] == "C_APPROVALS"
    assert re.fullmatch(r"\d{10}\.\d{6}", posted["ts"])  # Slack's shape; its value: the clock
    assert posted["message"]["blocks"] == APPROVAL_CARD
    assert updated["ts"] == posted["ts"]
    [message] = fake_slack.messages("C_APPROVALS")
    assert message["text"] == "Approved"
    assert message["blocks"] == [section("Approved")]
    assert "edited" in message
    assert [m for m, _ in fake_slack.calls] == ["chat.postMessage", "chat.update"]
    assert fake_slack.rejected == []


def test_ts_increases_and_update_of_unknown_message_is_message_not_found(
    fake_slack: FakeSlack,
) -> None:
    client = client_for(fake_slack)
    first = client.chat_postMessage(channel="C_REVIEW", text="one")["ts"]
    second = client.chat_postMessage(channel="C_REVIEW", text="two")["ts"]

    with pytest.raises(SlackApiError) as raised:
        client.chat_update(channel="C_REVIEW", ts="1600000000.000100", text="x")

    assert float(second) > float(first)
    assert raised.value.response["error"] == "message_not_found"
    assert fake_slack.rejected == []


def test_thread_replies_permalink_and_ephemerals(fake_slack: FakeSlack) -> None:
    client = client_for(fake_slack)
    parent = client.chat_postMessage(channel="C_REVIEW", text="Weekly review")["ts"]
    client.chat_postMessage(channel="C_REVIEW", text="run 1", thread_ts=parent)
    client.chat_postMessage(channel="C_REVIEW", text="run 2", thread_ts=parent)
    client.chat_postMessage(channel="C_REVIEW", text="elsewhere")

    replies = client.conversations_replies(channel="C_REVIEW", ts=parent)["messages"]
    link = client.chat_getPermalink(channel="C_REVIEW", message_ts=parent)["permalink"]
    ephemeral = client.chat_postEphemeral(channel="C_APPROVALS", user="U_CAROL", text="No.")

    assert [m["text"] for m in replies] == ["Weekly review", "run 1", "run 2"]
    assert replies[0]["reply_count"] == 2
    assert fake_slack.messages("C_REVIEW", thread_ts=parent) == replies
    assert link == f"https://gatehouse-test.slack.com/archives/C_REVIEW/p{parent.replace('.', '')}"
    assert fake_slack.ephemerals("U_CAROL")[0]["ts"] == ephemeral["message_ts"]
    assert fake_slack.ephemerals("U_CAROL")[0]["text"] == "No."
    assert fake_slack.ephemerals("U_ALICE") == []


# -- Block Kit limits ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("blocks", "complaint"),
    [
        pytest.param([section(f"row {i}") for i in range(51)], "at most 50 blocks", id="51-blocks"),
        pytest.param([section("x" * 3001)], "3001", id="3001-char-text"),
        pytest.param(
            [{"type": "actions", "elements": [button("B" * 76, "approve")]}], "76", id="76-button"
        ),
        pytest.param(
            [{"type": "actions", "elements": [button("Ok", "ok", "v" * 2001)]}],
            "2001",
            id="2001-button-value",
        ),
        pytest.param(
            [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}],
            "at most 10",
            id="11-fields",
        ),
        pytest.param(
            [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2001}]}],
            "2001",
            id="2001-char-field",
        ),
        pytest.param(
            [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
            "151",
            id="151-char-header",
        ),
        pytest.param([{"type": "section", "text": "bare string"}], "text object", id="bare-text"),
        pytest.param([section("")], "more than 0", id="empty-text"),
        pytest.param(
            [section("a", block_id="x"), section("b", block_id="x")], "duplicate", id="dup"
        ),
        pytest.param([{"type": "carousel_of_dreams"}], "block", id="unknown-type"),
        pytest.param([section("a", block_id="b" * 256)], "256", id="256-block-id"),
    ],
)
def test_blocks_real_slack_would_refuse_are_rejected_and_recorded(
    fake_slack: FakeSlack, blocks: list[dict[str, Any]], complaint: str
) -> None:
    with pytest.raises(SlackApiError) as raised:
        client_for(fake_slack).chat_postMessage(channel="C_APPROVALS", text="t", blocks=blocks)

    assert raised.value.response["error"] == "invalid_blocks"
    assert any(complaint in e for e in raised.value.response["errors"])
    [rejection] = fake_slack.rejected
    assert rejection.method == "chat.postMessage"
    assert rejection.error == "invalid_blocks"
    assert fake_slack.messages("C_APPROVALS") == []


def test_update_with_refused_blocks_leaves_the_message_as_it_was(fake_slack: FakeSlack) -> None:
    client = client_for(fake_slack)
    ts = client.chat_postMessage(channel="C_APPROVALS", text="t", blocks=APPROVAL_CARD)["ts"]

    with pytest.raises(SlackApiError):
        client.chat_update(channel="C_APPROVALS", ts=ts, text="t", blocks=[section("x" * 3001)])

    assert fake_slack.messages("C_APPROVALS")[0]["blocks"] == APPROVAL_CARD
    assert [r.method for r in fake_slack.rejected] == ["chat.update"]


def test_text_over_40000_chars_is_msg_too_long_and_no_content_is_no_text(
    fake_slack: FakeSlack,
) -> None:
    client = client_for(fake_slack)
    with pytest.raises(SlackApiError) as too_long:
        client.chat_postMessage(channel="C_APPROVALS", text="x" * 40_001)
    with pytest.raises(SlackApiError) as empty:
        client.api_call("chat.postMessage", json={"channel": "C_APPROVALS"})

    assert too_long.value.response["error"] == "msg_too_long"
    assert empty.value.response["error"] == "no_text"
    assert [r.error for r in fake_slack.rejected] == ["msg_too_long", "no_text"]


def test_form_encoded_blocks_are_parsed_and_validated_too(fake_slack: FakeSlack) -> None:
    client = client_for(fake_slack)
    ok = client.api_call(
        "chat.postMessage",
        params={"channel": "C_ALERTS", "text": "t", "blocks": json.dumps([section("hi")])},
    )
    with pytest.raises(SlackApiError) as refused:
        client.api_call(
            "chat.postMessage",
            params={"channel": "C_ALERTS", "text": "t", "blocks": json.dumps([section("")])},
        )

    assert ok["message"]["blocks"] == [section("hi")]
    assert refused.value.response["error"] == "invalid_blocks"
    assert fake_slack.calls_to("chat.postMessage")[0]["blocks"] == [section("hi")]


# -- errors, auth, rate limits -------------------------------------------------------------


def test_rate_limited_post_is_retried_by_the_sdk_and_posted_once(fake_slack: FakeSlack) -> None:
    # Retry-After: 0 keeps the test fast (the handler sleeps retry_after + up to 1 s of jitter).
    fake_slack.rate_limit_next("chat.postMessage", retry_after=0)
    client = client_for(fake_slack, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)])

    response = client.chat_postMessage(channel="C_APPROVALS", text="hello")

    assert response["ok"] is True
    assert len(fake_slack.calls_to("chat.postMessage")) == 2
    assert [m["text"] for m in fake_slack.messages("C_APPROVALS")] == ["hello"]


def test_rate_limit_is_a_429_with_retry_after_and_ratelimited(fake_slack: FakeSlack) -> None:
    fake_slack.rate_limit_next("chat.postMessage", retry_after=7)

    with pytest.raises(SlackApiError) as raised:
        client_for(fake_slack).chat_postMessage(channel="C_APPROVALS", text="hello")

    assert raised.value.response.status_code == 429
    assert raised.value.response.headers["Retry-After"] == "7"
    assert raised.value.response["error"] == "ratelimited"
    assert fake_slack.messages("C_APPROVALS") == []


def test_fail_next_answers_ok_false_once(fake_slack: FakeSlack) -> None:
    fake_slack.fail_next("chat.postMessage", error="channel_not_found")
    client = client_for(fake_slack)

    with pytest.raises(SlackApiError) as raised:
        client.chat_postMessage(channel="C_APPROVALS", text="first")
    client.chat_postMessage(channel="C_APPROVALS", text="second")

    assert raised.value.response["error"] == "channel_not_found"
    assert [m["text"] for m in fake_slack.messages("C_APPROVALS")] == ["second"]
    assert fake_slack.rejected == []


def test_unknown_method_unknown_channel_and_bad_tokens(fake_slack: FakeSlack) -> None:
    def error(call: Any) -> str:
        with pytest.raises(SlackApiError) as raised:
            call()
        return str(raised.value.response["error"])

    client = client_for(fake_slack)
    assert error(lambda: client.api_call("chat.teleport")) == "unknown_method"
    assert (
        error(lambda: client.chat_postMessage(channel="#nowhere", text="x")) == "channel_not_found"
    )
    assert error(lambda: WebClient(base_url=fake_slack.api_url).auth_test()) == "not_authed"
    assert error(lambda: WebClient("xoxb-wrong", base_url=fake_slack.api_url).auth_test()) == (
        "invalid_auth"
    )
    auth = client.auth_test()
    assert (auth["user_id"], auth["bot_id"], auth["team_id"]) == (
        "U_GATEHOUSE",
        "B_GATEHOUSE",
        "T_GATEHOUSE",
    )


# -- views ---------------------------------------------------------------------------------


def test_views_open_needs_a_fresh_unused_trigger_id(fake_slack: FakeSlack) -> None:
    client = client_for(fake_slack)
    fresh = fake_slack.issue_trigger_id("U_ALICE")
    stale = fake_slack.issue_trigger_id("U_ALICE")

    opened = client.views_open(trigger_id=fresh, view=REASON_MODAL)["view"]
    fake_slack.advance(3.1)

    def error(trigger_id: str) -> str:
        with pytest.raises(SlackApiError) as raised:
            client.views_open(trigger_id=trigger_id, view=REASON_MODAL)
        return str(raised.value.response["error"])

    assert opened["id"].startswith("V")
    assert opened["callback_id"] == "reject_reason"
    assert fake_slack.views == [opened]
    assert error(stale) == "expired_trigger_id"
    assert error("12345.98765.abcdef") == "invalid_trigger_id"
    assert error(fresh) == "trigger_exchanged"


def test_views_update_replaces_the_view_and_checks_the_hash(fake_slack: FakeSlack) -> None:
    client = client_for(fake_slack)
    view = client.views_open(trigger_id=fake_slack.issue_trigger_id("U_BOB"), view=REASON_MODAL)
    changed = {**REASON_MODAL, "title": {"type": "plain_text", "text": "Reject (2)"}}

    updated = client.views_update(view_id=view["view"]["id"], view=changed)["view"]
    with pytest.raises(SlackApiError) as conflict:
        client.views_update(view_id=updated["id"], view=changed, hash=view["view"]["hash"])
    with pytest.raises(SlackApiError) as missing:
        client.views_update(view_id="V_NOPE", view=changed)

    assert fake_slack.view(updated["id"])["title"]["text"] == "Reject (2)"
    assert conflict.value.response["error"] == "hash_conflict"
    assert missing.value.response["error"] == "not_found"


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param({"title": {"type": "plain_text", "text": "T" * 25}}, id="25-char-title"),
        pytest.param({"submit": {"type": "plain_text", "text": "S" * 25}}, id="25-char-submit"),
        pytest.param({"blocks": [section(f"{i}") for i in range(101)]}, id="101-blocks"),
        pytest.param({"title": {"type": "mrkdwn", "text": "*T*"}}, id="mrkdwn-title"),
    ],
)
def test_views_real_slack_would_refuse_are_rejected(
    fake_slack: FakeSlack, broken: dict[str, Any]
) -> None:
    with pytest.raises(SlackApiError) as raised:
        client_for(fake_slack).views_open(
            trigger_id=fake_slack.issue_trigger_id("U_ALICE"), view={**REASON_MODAL, **broken}
        )

    assert raised.value.response["error"] == "invalid_arguments"
    assert [r.method for r in fake_slack.rejected] == ["views.open"]
    assert fake_slack.views == []


def test_views_publish_sets_each_users_home(fake_slack: FakeSlack) -> None:
    client = client_for(fake_slack)
    home = {"type": "home", "blocks": [section("*Dashboard*")]}

    first = client.views_publish(user_id="U_ALICE", view=home)["view"]
    again = client.views_publish(user_id="U_ALICE", view={**home, "blocks": [section("v2")]})[
        "view"
    ]

    assert again["id"] == first["id"]
    assert fake_slack.home("U_ALICE") == again
    assert fake_slack.home("U_BOB") is None
    assert fake_slack.views == []  # modals only


# -- directory -----------------------------------------------------------------------------


def test_usergroups_and_users_round_trip() -> None:
    users = {"U_ANA": "ana", "U_BEN": "ben"}
    # users.info needs users:read, which the bot's manifest does not ask for (it never calls it).
    scopes = ["usergroups:read", "users:read"]
    with FakeSlack(users=users, groups={"finance-leads": ["U_ANA"]}, scopes=scopes) as fake:
        client = client_for(fake)

        groups = client.usergroups_list(include_users=True)["usergroups"]
        by_handle = {g["handle"]: g for g in groups}
        members = client.usergroups_users_list(usergroup=by_handle["finance-leads"]["id"])
        ana = client.users_info(user="U_ANA")["user"]
        with pytest.raises(SlackApiError) as no_group:
            client.usergroups_users_list(usergroup="S_NOPE")
        with pytest.raises(SlackApiError) as no_user:
            client.users_info(user="U_NOBODY")

    assert list(by_handle) == ["finance-leads"]
    assert by_handle["finance-leads"]["id"] == fake.group_id("finance-leads")
    assert by_handle["finance-leads"]["users"] == ["U_ANA"]
    assert members["users"] == ["U_ANA"]
    assert (ana["name"], ana["is_bot"], ana["profile"]["display_name"]) == ("ana", False, "ana")
    assert no_group.value.response["error"] == "no_such_subteam"
    assert no_user.value.response["error"] == "user_not_found"


# -- SlackSender on the wire ----------------------------------------------------------------


class _Capture(BaseHTTPRequestHandler):
    """Remembers what the sender sent and answers 200 with an empty body."""

    protocol_version = "HTTP/1.1"
    received: list[tuple[str, dict[str, str], str]]

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.received.append((self.path, dict(self.headers.items()), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def capture() -> Iterator[tuple[str, list[tuple[str, dict[str, str], str]]]]:
    received: list[tuple[str, dict[str, str], str]] = []
    handler = type("Capture", (_Capture,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()
    thread.join()


def _payload(body: str) -> dict[str, Any]:
    return dict(json.loads(parse_qs(body)["payload"][0]))


def test_sender_signs_every_request_as_slack_does(
    capture: tuple[str, list[Any]], fake_slack: FakeSlack
) -> None:
    url, received = capture
    sender = SlackSender(url, SECRET, fake_slack)
    verifier = SignatureVerifier(SECRET)

    sender.command("pending")
    sender.block_action("approve", "a_1", "U_BOB")
    sender.view_submission("reject_reason", {"reason": {"text": "too much"}})
    sender.app_home_opened("U_ALICE", retry_num=1)
    sender.command("help", timestamp=1_600_000_000)

    assert len(received) == 5
    for path, headers, body in received[:4]:
        assert path == "/slack/events"
        timestamp = headers["X-Slack-Request-Timestamp"]
        assert verifier.is_valid(body, timestamp, headers["X-Slack-Signature"])
    assert received[3][1]["X-Slack-Retry-Num"] == "1"
    assert received[3][1]["X-Slack-Retry-Reason"] == "http_timeout"
    _, stale_headers, stale_body = received[4]
    assert stale_headers["X-Slack-Request-Timestamp"] == "1600000000"
    assert stale_headers["X-Slack-Signature"] == verifier.generate_signature(
        timestamp="1600000000", body=stale_body
    )  # correctly signed, and still refused: older than 5 minutes
    assert not verifier.is_valid(stale_body, "1600000000", stale_headers["X-Slack-Signature"])


def test_sender_forged_signature_does_not_verify(capture: tuple[str, list[Any]]) -> None:
    url, received = capture

    response = SlackSender(url, SECRET).command("runs", signature="v0=" + "0" * 64)

    _, headers, body = received[0]
    assert response.status == 200
    assert not SignatureVerifier(SECRET).is_valid_request(body, headers)
    assert SignatureVerifier("other-secret").is_valid_request(body, headers) is False


def test_sender_payload_shapes(capture: tuple[str, list[Any]], fake_slack: FakeSlack) -> None:
    url, received = capture
    sender = SlackSender(url, SECRET, fake_slack)
    client = client_for(fake_slack)
    posted = client.chat_postMessage(channel="C_APPROVALS", text="Approve?", blocks=APPROVAL_CARD)
    modal = client.views_open(trigger_id=fake_slack.issue_trigger_id("U_ALICE"), view=REASON_MODAL)

    sender.command("trigger refund order=42", user_id="U_CAROL", channel_id="C_GENERAL")
    sender.block_action("reject", user_id="U_BOB", message=posted["ts"])
    sender.view_submission(
        None,
        {"reason": {"text": "wrong amount"}, "category": {"pick": "amount"}},
        user_id="U_BOB",
        view_id=modal["view"]["id"],
    )
    sender.app_home_opened("U_ALICE")

    command = {k: v[0] for k, v in parse_qs(received[0][2], keep_blank_values=True).items()}
    assert received[0][1]["Content-Type"] == "application/x-www-form-urlencoded"
    assert command["command"] == "/gatehouse"
    assert command["text"] == "trigger refund order=42"
    assert (command["user_id"], command["user_name"]) == ("U_CAROL", "carol")
    assert (command["channel_id"], command["channel_name"]) == ("C_GENERAL", "general")
    assert command["team_id"] == "T_GATEHOUSE"
    assert command["response_url"].startswith(fake_slack.base_url + "/response_url/")
    assert set(command) >= {"token", "team_domain", "api_app_id", "trigger_id"}

    click = _payload(received[1][2])
    assert click["type"] == "block_actions"
    assert click["user"] == {
        "id": "U_BOB",
        "username": "bob",
        "name": "bob",
        "team_id": "T_GATEHOUSE",
    }
    assert click["container"] == {
        "type": "message",
        "message_ts": posted["ts"],
        "channel_id": "C_APPROVALS",
        "is_ephemeral": False,
    }
    assert click["channel"]["id"] == "C_APPROVALS"
    assert click["message"]["blocks"] == APPROVAL_CARD
    [action] = click["actions"]
    assert (action["action_id"], action["block_id"], action["value"]) == (
        "reject",
        "approval:a_1",
        "a_1",
    )
    assert (action["type"], action["style"], action["text"]["text"]) == (
        "button",
        "danger",
        "Reject",
    )

    submission = _payload(received[2][2])
    assert submission["type"] == "view_submission"
    view = submission["view"]
    assert (view["id"], view["callback_id"], view["private_metadata"]) == (
        modal["view"]["id"],
        "reject_reason",
        "a_1",
    )
    assert view["state"]["values"] == {
        "reason": {"text": {"type": "plain_text_input", "value": "wrong amount"}},
        "category": {
            "pick": {
                "type": "static_select",
                "selected_option": {
                    "text": {"type": "plain_text", "text": "Wrong amount"},
                    "value": "amount",
                },
            }
        },
    }
    assert not fake_slack.is_open(modal["view"]["id"])  # an empty 200 closes the modal

    event = json.loads(received[3][2])
    assert received[3][1]["Content-Type"] == "application/json"
    assert event["type"] == "event_callback"
    assert event["event"]["type"] == "app_home_opened"
    assert (event["event"]["user"], event["event"]["tab"]) == ("U_ALICE", "home")


def test_resend_is_the_same_body_newly_signed_with_retry_headers(
    capture: tuple[str, list[Any]], fake_slack: FakeSlack
) -> None:
    url, received = capture
    sender = SlackSender(url, SECRET, fake_slack)

    first = sender.app_home_opened("U_ALICE")
    sender.resend(first.request, retry_num=2, retry_reason="http_error")

    (_, headers1, body1), (_, headers2, body2) = received
    assert body2 == body1  # same event_id: a bot must not act twice
    assert "X-Slack-Retry-Num" not in headers1
    assert (headers2["X-Slack-Retry-Num"], headers2["X-Slack-Retry-Reason"]) == ("2", "http_error")
    assert SignatureVerifier(SECRET).is_valid_request(body2, headers2)


def test_click_in_an_ephemeral_has_no_message_and_says_so(
    capture: tuple[str, list[Any]], fake_slack: FakeSlack
) -> None:
    url, received = capture
    client_for(fake_slack).chat_postEphemeral(
        channel="C_APPROVALS",
        user="U_CAROL",
        text="Run r_1",
        blocks=[{"type": "actions", "elements": [button("Undo", "undo", "c_9")]}],
    )
    [ephemeral] = fake_slack.ephemerals("U_CAROL")

    SlackSender(url, SECRET, fake_slack).block_action("undo", user_id="U_CAROL", message=ephemeral)

    click = _payload(received[0][2])
    assert click["container"]["is_ephemeral"] is True
    assert click["container"]["channel_id"] == "C_APPROVALS"
    assert "message" not in click
    assert click["actions"][0]["value"] == "c_9"


def test_response_url_replaces_the_original_or_answers_ephemerally(
    fake_slack: FakeSlack, capture: tuple[str, list[Any]]
) -> None:
    url, received = capture
    sender = SlackSender(url, SECRET, fake_slack)
    posted = client_for(fake_slack).chat_postMessage(
        channel="C_APPROVALS", text="Approve?", blocks=APPROVAL_CARD
    )
    sender.block_action("approve", user_id="U_ALICE", message=posted["ts"])
    response_url = _payload(received[0][2])["response_url"]

    def post(body: dict[str, Any]) -> str:
        request = urllib.request.Request(
            response_url, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request) as reply:
            return str(reply.read().decode())

    assert post({"text": "Only approvers may decide."}) == "ok"
    assert post({"replace_original": True, "text": "Approved", "blocks": [section("Approved")]})

    assert fake_slack.ephemerals("U_ALICE")[0]["text"] == "Only approvers may decide."
    assert fake_slack.messages("C_APPROVALS")[0]["blocks"] == [section("Approved")]
    assert fake_slack.rejected == []


# -- a real Bolt app accepts what the sender sends ------------------------------------------


@pytest.fixture
def bolt_bot(fake_slack: FakeSlack) -> Iterator[tuple[str, list[str]]]:
    """A minimal Bolt app (real signature verification) behind a stdlib HTTP server."""
    seen: list[str] = []
    app = App(
        token=fake_slack.token,
        signing_secret=SECRET,
        client=client_for(fake_slack),
        process_before_response=True,  # listeners finish before the HTTP answer: deterministic
    )

    @app.command("/gatehouse")
    def on_command(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        client.views_open(trigger_id=body["trigger_id"], view=REASON_MODAL)
        ack(text=f"You said: {body['text']}")
        seen.append(f"command:{body['text']}")

    @app.action("approve")
    def on_approve(ack: Ack, body: dict[str, Any]) -> None:
        ack()
        seen.append(f"approve:{body['actions'][0]['value']}:{body['user']['id']}")

    @app.view("reject_reason")
    def on_reason(ack: Ack, view: dict[str, Any]) -> None:
        reason = view["state"]["values"]["reason"]["text"]["value"] or ""
        if len(reason) < 5:
            ack(response_action="errors", errors={"reason": "Say a little more."})
        else:
            ack()
        seen.append(f"reason:{reason}")

    @app.event("app_home_opened")
    def on_home(event: dict[str, Any], client: WebClient) -> None:
        client.views_publish(
            user_id=event["user"], view={"type": "home", "blocks": [section("hi")]}
        )
        seen.append(f"home:{event['user']}")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            headers: dict[str, str | Sequence[str]] = dict(self.headers.items())
            response = app.dispatch(BoltRequest(body=body, headers=headers))
            data = response.body.encode()
            self.send_response(response.status)
            for name, values in response.headers.items():
                for value in values:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()
    thread.join()


def test_bolt_app_accepts_signed_requests_and_refuses_forged_and_stale_ones(
    fake_slack: FakeSlack, bolt_bot: tuple[str, list[str]]
) -> None:
    url, seen = bolt_bot
    sender = SlackSender(url, SECRET, fake_slack)

    forged = sender.command("pending", signature="v0=" + "0" * 64)
    stale = sender.command("pending", timestamp=1_600_000_000)
    wrong_secret = SlackSender(url, "not-the-secret", fake_slack).command("pending")
    assert (forged.status, stale.status, wrong_secret.status) == (401, 401, 401)
    assert seen == []

    command = sender.command("pending", user_id="U_BOB")
    [modal] = fake_slack.views  # opened with the command's trigger_id
    too_short = sender.view_submission(
        None, {"reason": {"text": "no"}}, "U_BOB", view_id=modal["id"]
    )
    still_open = fake_slack.is_open(modal["id"])
    accepted = sender.view_submission(
        None, {"reason": {"text": "wrong amount"}}, "U_BOB", view_id=modal["id"]
    )
    click = sender.block_action("approve", "a_1", "U_ALICE")
    home = sender.app_home_opened("U_CAROL")

    assert command.status == 200
    assert fake_slack.ephemerals("U_BOB")[0]["text"] == "You said: pending"
    assert too_short.json == {
        "response_action": "errors",
        "errors": {"reason": "Say a little more."},
    }
    assert still_open and not fake_slack.is_open(modal["id"])
    assert (accepted.status, click.status, home.status) == (200, 200, 200)
    assert seen == [
        "command:pending",
        "reason:no",
        "reason:wrong amount",
        "approve:a_1:U_ALICE",
        "home:U_CAROL",
    ]
    assert fake_slack.home("U_CAROL") is not None
    assert fake_slack.rejected == []
