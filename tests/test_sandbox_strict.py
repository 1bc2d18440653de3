"""The sandbox refuses what Slack refuses, over its real Web API (slack_sdk's WebClient pointed
at it, as the bot is): missing scopes, channels the bot was not invited to, private channels it
cannot see, DMs that do not exist, ephemerals to people outside the channel; it sends Slack's
warnings; and a private approvals channel works once the bot is invited and has groups:history."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.slack.delivery import find_by_metadata, metadata
from pipelines.ports import DeliveryFailed
from tests.fakes.clock import FakeClock
from tests.fakes.slack import DEFAULT_CHANNELS, FakeSlack
from tests.slack_harness import slack_world

MANIFEST_SCOPES = "chat:write,commands,usergroups:read,files:write,channels:history,groups:history"
LARGE = {"order_id": "ord_1002", "amount": "150.00", "reason": "never delivered"}


def client_for(fake: FakeSlack) -> WebClient:
    return WebClient(token=fake.token, base_url=fake.api_url, retry_handlers=[])


def refusal(call: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(SlackApiError) as refused:
        call(**kwargs)
    data = refused.value.response.data
    assert isinstance(data, dict) and data["ok"] is False
    return data


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as running:
        yield running


# -- scopes ------------------------------------------------------------------------------------


def test_the_token_has_the_manifests_scopes_and_a_method_without_its_scope_is_missing_scope(
    fake: FakeSlack,
) -> None:
    # users.info needs users:read, which the manifest does not ask for.
    refused = refusal(client_for(fake).users_info, user="U_ALICE")
    assert refused == {
        "ok": False,
        "error": "missing_scope",
        "needed": "users:read",
        "provided": MANIFEST_SCOPES,
    }


def test_history_of_a_private_channel_needs_groups_history() -> None:
    channels = {**DEFAULT_CHANNELS, "G_APPROVALS": "approvals-private"}
    scopes = ["chat:write", "channels:history"]
    with FakeSlack(channels=channels, scopes=scopes) as fake:
        client = client_for(fake)
        assert client.conversations_history(channel="C_APPROVALS")["ok"]
        refused = refusal(client.conversations_history, channel="G_APPROVALS")
    assert (refused["error"], refused["needed"], refused["provided"]) == (
        "missing_scope",
        "groups:history",
        "chat:write,channels:history",
    )


@pytest.mark.parametrize(
    ("method", "kwargs", "needed"),
    [
        ("chat_postMessage", {"channel": "C_APPROVALS", "text": "hi"}, "chat:write"),
        (
            "chat_postEphemeral",
            {"channel": "C_APPROVALS", "user": "U_BOB", "text": "hi"},
            "chat:write",
        ),
        ("usergroups_list", {}, "usergroups:read"),
        ("usergroups_users_list", {"usergroup": "SFINANCELEADS"}, "usergroups:read"),
        ("files_getUploadURLExternal", {"filename": "a.png", "length": 3}, "files:write"),
        ("conversations_replies", {"channel": "C_REVIEW", "ts": "1.0"}, "channels:history"),
        ("conversations_info", {"channel": "C_REVIEW"}, "channels:read"),
    ],
)
def test_each_method_names_the_scope_it_needs(
    method: str, kwargs: dict[str, Any], needed: str
) -> None:
    with FakeSlack(scopes=["commands"]) as fake:
        refused = refusal(getattr(client_for(fake), method), **kwargs)
    assert (refused["error"], refused["needed"], refused["provided"]) == (
        "missing_scope",
        needed,
        "commands",
    )


def test_views_and_auth_need_no_scope() -> None:
    with FakeSlack(scopes=[]) as fake:
        client = client_for(fake)
        assert client.auth_test()["ok"]
        home = {
            "type": "home",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}],
        }
        assert client.views_publish(user_id="U_ALICE", view=home)["ok"]


# -- membership and conversation types ---------------------------------------------------------


def test_posting_where_the_bot_was_not_invited_is_not_in_channel(fake: FakeSlack) -> None:
    client = client_for(fake)
    assert not fake.is_member("C_GENERAL") and fake.is_member("C_APPROVALS")
    refused = refusal(client.chat_postMessage, channel="C_GENERAL", text="hello")
    assert refused["error"] == "not_in_channel"
    assert fake.messages("C_GENERAL") == []
    fake.invite("C_GENERAL")
    assert client.chat_postMessage(channel="C_GENERAL", text="hello")["ok"]


def test_chat_write_public_posts_in_a_public_channel_the_bot_is_not_in() -> None:
    with FakeSlack(scopes=["chat:write", "chat:write.public"]) as fake:
        posted = client_for(fake).chat_postMessage(channel="#general", text="hello")
        assert posted["channel"] == "C_GENERAL" and not fake.is_member("C_GENERAL")


def test_a_private_channel_the_bot_is_not_in_is_channel_not_found() -> None:
    # conversations.list of private channels needs groups:read (the bot never lists them).
    with FakeSlack(scopes=["chat:write", "groups:history", "groups:read"]) as fake:
        _refused_until_invited(fake)


def _refused_until_invited(fake: FakeSlack) -> None:
    fake.add_channel("G_SECRET", "secret", private=True)
    client = client_for(fake)
    for call, kwargs in (
        (client.chat_postMessage, {"channel": "G_SECRET", "text": "hi"}),
        (client.conversations_history, {"channel": "G_SECRET"}),
        (client.chat_postEphemeral, {"channel": "G_SECRET", "user": "U_ALICE", "text": "hi"}),
    ):
        assert refusal(call, **kwargs)["error"] == "channel_not_found"
    listed = client.conversations_list(types="private_channel")["channels"]
    assert "G_SECRET" not in [c["id"] for c in listed]
    fake.invite("G_SECRET")
    assert client.chat_postMessage(channel="G_SECRET", text="hi")["ok"]
    [shown] = client.conversations_list(types="private_channel")["channels"]
    assert (shown["id"], shown["is_private"], shown["is_member"]) == ("G_SECRET", True, True)


def test_a_c_id_marked_private_is_private(fake: FakeSlack) -> None:
    fake.add_channel("C_HR", "hr", private=True)
    refused = refusal(client_for(fake).chat_postMessage, channel="C_HR", text="hi")
    assert refused["error"] == "channel_not_found"


def test_history_where_the_bot_is_not_a_member_is_not_in_channel(fake: FakeSlack) -> None:
    refused = refusal(client_for(fake).conversations_history, channel="C_GENERAL")
    assert refused["error"] == "not_in_channel"


def test_ephemeral_to_someone_outside_the_channel_or_where_the_bot_is_not(
    fake: FakeSlack,
) -> None:
    fake.add_channel("C_FINANCE", "finance", members=["U_ALICE", "U_BOB"], invite_bot=True)
    client = client_for(fake)
    refused = refusal(client.chat_postEphemeral, channel="C_FINANCE", user="U_CAROL", text="hi")
    assert refused["error"] == "user_not_in_channel"
    assert client.chat_postEphemeral(channel="C_FINANCE", user="U_BOB", text="hi")["ok"]
    refused = refusal(client.chat_postEphemeral, channel="C_GENERAL", user="U_CAROL", text="hi")
    assert refused["error"] == "not_in_channel"
    assert [e["user"] for e in fake.ephemerals()] == ["U_BOB"]


def test_a_user_id_opens_their_dm_and_only_existing_dms_take_a_d_id(fake: FakeSlack) -> None:
    client = client_for(fake)
    opened = client.chat_postMessage(channel="U_ALICE", text="hello alice")
    assert opened["channel"] == "D_ALICE"
    assert client.chat_postMessage(channel="D_ALICE", text="again")["ok"]
    for nowhere in ("D_NOBODY", "D0123456789"):
        refused = refusal(client.chat_postMessage, channel=nowhere, text="hello")
        assert refused["error"] == "channel_not_found"
    refused = refusal(client.chat_postEphemeral, channel="D_ALICE", user="U_BOB", text="psst")
    assert refused["error"] == "user_not_in_channel"
    assert [m["text"] for m in fake.messages("D_ALICE")] == ["hello alice", "again"]


# -- warnings ----------------------------------------------------------------------------------


def _raw_call(
    fake: FakeSlack, method: str, body: bytes, content_type: str
) -> tuple[dict[str, Any], str | None]:
    request = urllib.request.Request(
        f"{fake.api_url}{method}",
        data=body,
        headers={"Content-Type": content_type, "Authorization": f"Bearer {fake.token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read()), response.headers.get("Warning")


def test_warn_next_answers_with_the_warning_as_slack_sends_it(fake: FakeSlack) -> None:
    fake.warn_next("chat.postMessage", "message_truncated")
    warned = client_for(fake).chat_postMessage(channel="C_APPROVALS", text="hi")
    assert warned["ok"] and warned["warning"] == "message_truncated"
    assert warned["response_metadata"]["warnings"] == ["message_truncated"]
    quiet = client_for(fake).chat_postMessage(channel="C_APPROVALS", text="again")
    assert "warning" not in quiet.data


def test_a_json_body_without_charset_gets_missing_charset_and_a_form_with_one_superfluous(
    fake: FakeSlack,
) -> None:
    body = json.dumps({"channel": "C_APPROVALS", "text": "hi"}).encode()
    answer, header = _raw_call(fake, "chat.postMessage", body, "application/json")
    assert answer["ok"] and answer["response_metadata"]["warnings"] == ["missing_charset"]
    assert header is None  # Slack documents the warning in the body only
    form = b"channel=C_APPROVALS&text=hi"
    answer, header = _raw_call(
        fake, "chat.postMessage", form, "application/x-www-form-urlencoded; charset=utf-8"
    )
    assert answer["warning"] == "superfluous_charset" and header is None


def test_slack_sdk_requests_get_no_charset_warning(fake: FakeSlack) -> None:
    client = client_for(fake)
    by_json = client.chat_postMessage(channel="C_APPROVALS", text="hi")  # JSON, with charset
    by_form = client.conversations_history(channel="C_APPROVALS")  # form, without one
    assert "warning" not in by_json.data and "warning" not in by_form.data


# -- message metadata --------------------------------------------------------------------------


def test_history_and_replies_return_metadata_only_when_asked_and_need_no_metadata_scope() -> None:
    channels = {**DEFAULT_CHANNELS, "G_APPROVALS": "approvals-private"}
    # Only what the manifest asks for: no metadata.message:read (see bot/sandbox/scopes.py).
    with FakeSlack(channels=channels) as fake:
        assert "metadata.message:read" not in fake.scopes
        client = client_for(fake)
        client.chat_postMessage(
            channel="G_APPROVALS", text="card", metadata=metadata("approval", "ap_1")
        )
        [plain] = client.conversations_history(channel="G_APPROVALS")["messages"]
        [full] = client.conversations_history(channel="G_APPROVALS", include_all_metadata=True)[
            "messages"
        ]
        [bare] = client.conversations_replies(channel="G_APPROVALS", ts=full["ts"])["messages"]
        [thread] = client.conversations_replies(
            channel="G_APPROVALS", ts=full["ts"], include_all_metadata=True
        )["messages"]
    assert "metadata" not in plain and "metadata" not in bare
    assert full["metadata"]["event_payload"] == {"kind": "approval", "ref_id": "ap_1"}
    assert thread["metadata"] == full["metadata"]


# -- a private approvals channel, end to end ---------------------------------------------------


def test_a_private_approvals_channel_gets_its_card_and_a_lost_card_is_found_again(
    sqlite_url: str, clock: FakeClock
) -> None:
    channels = {**DEFAULT_CHANNELS, "G_APPROVALS": "approvals-private"}
    with (
        FakeSlack(channels=channels) as fake,
        slack_world(fake, sqlite_url, clock, approvals_channel="G_APPROVALS") as world,
    ):
        run = world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
        assert run.status == "waiting", run.error
        [card] = fake.messages("G_APPROVALS")
        assert fake.messages("C_APPROVALS") == [] and fake.rejected == []
        # The sender died between Slack's answer and recording the ts: the lookup finds it.
        found = find_by_metadata(client_for(fake), "G_APPROVALS", run.waiting_for[0])
        assert found == ("G_APPROVALS", card["ts"])
        [lookup] = fake.calls_to("conversations.history")
        assert lookup["channel"] == "G_APPROVALS"


def test_without_groups_history_the_lost_card_lookup_fails_with_missing_scope() -> None:
    channels = {**DEFAULT_CHANNELS, "G_APPROVALS": "approvals-private"}
    with FakeSlack(channels=channels, scopes=["chat:write", "channels:history"]) as fake:
        client = client_for(fake)
        client.chat_postMessage(
            channel="G_APPROVALS", text="card", metadata=metadata("approval", "ap_1")
        )
        with pytest.raises(DeliveryFailed) as failed:
            find_by_metadata(client, "G_APPROVALS", "ap_1")
    assert failed.value.code == "missing_scope"


def test_a_private_approvals_channel_the_bot_was_not_invited_to_gets_no_card(
    sqlite_url: str, clock: FakeClock
) -> None:
    channels = {**DEFAULT_CHANNELS, "G_APPROVALS": "approvals-private"}
    with (
        FakeSlack(channels=channels, bot_channels=["C_REVIEW", "C_ALERTS"]) as fake,
        slack_world(fake, sqlite_url, clock, approvals_channel="G_APPROVALS") as world,
    ):
        world.gatehouse.trigger("refund_request", LARGE, user="U_CAROL", source="slack")
        assert fake.messages("G_APPROVALS") == []
        posts = [p for name, p in fake.calls if name == "chat.postMessage"]
        assert posts and all(p["channel"] == "G_APPROVALS" for p in posts)
