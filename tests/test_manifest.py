"""manifest.yml is a manifest Slack accepts, and declares exactly what the code uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import yaml

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
    # chat.postMessage/update/postEphemeral; the slash command; usergroups.list/users.list.
    assert scopes == {
        "chat:write",
        "commands",
        "usergroups:read",
        "files:write",
        "channels:history",
    }


def test_manifest_subscribes_to_the_events_the_bot_handles_and_enables_what_it_uses() -> None:
    manifest = _manifest()
    assert manifest["settings"]["event_subscriptions"]["bot_events"] == ["app_home_opened"]
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True


SCOPE_OF_METHOD = {
    "chat_postMessage": "chat:write",
    "chat_update": "chat:write",
    "chat_postEphemeral": "chat:write",
    "chat_getPermalink": None,
    "views_open": None,
    "views_update": None,
    "views_push": None,
    "views_publish": None,
    "usergroups_list": "usergroups:read",
    "usergroups_users_list": "usergroups:read",
    "users_info": "users:read",
    "conversations_replies": "channels:history",
    "conversations_history": "channels:history",
    "files_getUploadURLExternal": "files:write",
    "files_completeUploadExternal": "files:write",
    "files_upload_v2": "files:write",
}


def test_the_scopes_are_exactly_those_of_the_web_api_methods_the_bot_calls() -> None:
    import re

    called: set[str] = set()
    for source in (REPO_ROOT / "bot").rglob("*.py"):
        called |= set(
            re.findall(
                r"\.(chat_\w+|views_\w+|usergroups_\w+|users_\w+|files_\w+|conversations_\w+)\(",
                source.read_text(),
            )
        )
    unknown = called - SCOPE_OF_METHOD.keys()
    assert not unknown, f"add these Web API methods to SCOPE_OF_METHOD: {sorted(unknown)}"
    needed = {SCOPE_OF_METHOD[m] for m in called} - {None} | {"commands"}
    assert set(_manifest()["oauth_config"]["scopes"]["bot"]) == needed
