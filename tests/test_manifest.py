"""manifest.yml is a manifest Slack accepts, and declares exactly what the code uses."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from bot.sandbox import scopes
from bot.sandbox.scopes import (
    METADATA_READ_SCOPES,
    METHOD_SCOPES,
    PRIVATE,
    PUBLIC,
    manifest_bot_scopes,
)
from pipelines.config import Settings
from tests.conftest import REPO_ROOT

SCHEMA = REPO_ROOT.parent / "shared" / "slack" / "manifest.schema.1.0.0.json"


def _manifest() -> dict[str, Any]:
    loaded = yaml.safe_load((REPO_ROOT / "manifest.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _schema() -> dict[str, Any]:
    path = SCHEMA if SCHEMA.exists() else Path("/work/shared/slack/manifest.schema.1.0.0.json")
    loaded = json.loads(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_manifest_validates_against_slacks_own_schema() -> None:
    jsonschema.validate(_manifest(), _schema())


def test_manifest_declares_the_slash_command_the_bot_listens_to() -> None:
    commands = [c["command"] for c in _manifest()["features"]["slash_commands"]]
    assert commands == [Settings.model_fields["slash_command"].default]


def test_manifest_asks_for_the_minimal_scopes_the_code_calls() -> None:
    scopes = set(_manifest()["oauth_config"]["scopes"]["bot"])
    # chat.postMessage/update/postEphemeral; the slash command; usergroups.list/users.list;
    # the stats chart; the lost-card lookup in a public or a private channel.
    assert scopes == {
        "chat:write",
        "commands",
        "usergroups:read",
        "files:write",
        "channels:history",
        "groups:history",
    }


def test_manifest_subscribes_to_the_events_the_bot_handles_and_enables_what_it_uses() -> None:
    manifest = _manifest()
    assert manifest["settings"]["event_subscriptions"]["bot_events"] == [
        "app_home_opened",
        "app_uninstalled",
        "tokens_revoked",
    ]
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    # The bot DMs people (run notices, the private stats chart): its Messages tab shows them.
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True
    assert manifest["features"]["app_home"]["messages_tab_read_only_enabled"] is True


# slack_sdk's method names → the Web API methods they call (bot/sandbox/scopes.py has the
# scopes each needs, from Slack's method pages; the sandbox refuses a call without them).
WEB_API_METHODS = {
    "chat_postMessage": ["chat.postMessage"],
    "chat_update": ["chat.update"],
    "chat_postEphemeral": ["chat.postEphemeral"],
    "chat_getPermalink": ["chat.getPermalink"],
    "views_open": ["views.open"],
    "views_update": ["views.update"],
    "views_push": ["views.push"],
    "views_publish": ["views.publish"],
    "usergroups_list": ["usergroups.list"],
    "usergroups_users_list": ["usergroups.users.list"],
    "users_info": ["users.info"],
    "conversations_replies": ["conversations.replies"],
    "conversations_history": ["conversations.history"],
    "conversations_info": ["conversations.info"],
    "files_getUploadURLExternal": ["files.getUploadURLExternal"],
    "files_completeUploadExternal": ["files.completeUploadExternal"],
    "files_upload_v2": ["files.getUploadURLExternal", "files.completeUploadExternal"],
    "auth_test": ["auth.test"],
}
CALL = re.compile(
    r"\.(auth_\w+|chat_\w+|views_\w+|usergroups_\w+|users_\w+|files_\w+|conversations_\w+)\("
)
API_CALL = re.compile(r"\.api_call\(\s*[\"']([\w.]+)[\"']")


def _methods_the_bot_calls() -> set[str]:
    called: set[str] = set()
    for source in (REPO_ROOT / "bot").rglob("*.py"):
        if "sandbox" in source.parts:
            continue  # the sandbox serves these methods; it does not call them
        text = source.read_text()
        sdk = set(CALL.findall(text))
        unknown = sdk - WEB_API_METHODS.keys()
        assert not unknown, f"add these slack_sdk methods to WEB_API_METHODS: {sorted(unknown)}"
        called |= {m for name in sdk for m in WEB_API_METHODS[name]}
        called |= set(API_CALL.findall(text))
    return called


def _scopes_needed(methods: set[str]) -> set[str]:
    """A method's own scope, or, where it depends on the conversation, those of a public and a
    private channel (the configured channels may be either; the bot reads no DM history)."""
    needed: set[str] = set()
    for method in methods:
        assert method in METHOD_SCOPES, f"{method}: add its scopes to bot/sandbox/scopes.py"
        needs = METHOD_SCOPES[method]
        if needs.scope:
            needed.add(needs.scope)
        if needs.by_kind:
            needed |= {needs.by_kind[PUBLIC], needs.by_kind[PRIVATE]}
    return needed


def test_the_scopes_are_exactly_those_of_the_web_api_methods_the_bot_calls() -> None:
    called = _methods_the_bot_calls()
    assert {"chat.postMessage", "conversations.history", "files.completeUploadExternal"} <= called
    needed = _scopes_needed(called) | {"commands"}
    assert set(_manifest()["oauth_config"]["scopes"]["bot"]) == needed


def test_the_lost_card_lookup_in_a_private_channel_is_covered_by_the_manifest() -> None:
    scopes = set(_manifest()["oauth_config"]["scopes"]["bot"])
    assert METHOD_SCOPES["conversations.history"].by_kind[PRIVATE] == "groups:history"
    assert "groups:history" in scopes
    # Slack's docs name no extra scope for include_all_metadata (see bot/sandbox/scopes.py).
    assert scopes >= METADATA_READ_SCOPES


def test_the_sandbox_token_carries_exactly_the_manifests_bot_scopes() -> None:
    from tests.fakes.slack import FakeSlack

    declared = _manifest()["oauth_config"]["scopes"]["bot"]
    assert list(manifest_bot_scopes()) == declared
    assert FakeSlack().scopes == frozenset(declared)


def test_the_sandbox_packages_the_repositorys_manifest() -> None:
    """An installed Gatehouse has no checkout: the sandbox reads the manifest packaged beside it,
    a link to the one Slack apps are created from."""
    packaged = Path(scopes.__file__).parent / "manifest.yml"
    root = REPO_ROOT / "manifest.yml"
    assert packaged.is_symlink() and packaged.resolve() == root.resolve()
    assert packaged == scopes.MANIFEST
