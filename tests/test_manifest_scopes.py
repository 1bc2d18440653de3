"""The sandbox reads its bot token's scopes from manifest.yml without a YAML library (a
development dependency): its small reader agrees with a YAML parser on every layout of the list."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bot.sandbox.scopes import MANIFEST, ManifestNotFound, manifest_bot_scopes
from tests.fakes.slack import FakeSlack

LAYOUTS = {
    "indented, with comments": """
oauth_config:
  scopes:
    bot:
      - chat:write        # cards
      # a comment line between items
      - "groups:history"
    user:
      - search:read
settings:
  socket_mode_enabled: true
""",
    "items level with the key, user scopes first": """
display_information:
  name: x
oauth_config:
  scopes:
    user:
    - identify
    bot:
    - 'commands'
    - files:write
""",
    "no bot scopes": """
oauth_config:
  scopes:
    user:
      - identify
""",
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_reader_agrees_with_a_yaml_parser(layout: str, tmp_path: Path) -> None:
    path = tmp_path / "manifest.yml"
    path.write_text(LAYOUTS[layout])
    parsed = yaml.safe_load(LAYOUTS[layout])["oauth_config"]["scopes"].get("bot") or []
    assert list(manifest_bot_scopes(path)) == parsed


def test_the_repositorys_manifest_is_the_one_read() -> None:
    parsed = yaml.safe_load(MANIFEST.read_text())["oauth_config"]["scopes"]["bot"]
    assert list(manifest_bot_scopes()) == parsed and "groups:history" in parsed


def test_without_a_manifest_the_sandbox_says_how_to_give_it_scopes(tmp_path: Path) -> None:
    with pytest.raises(ManifestNotFound, match="pass scopes="):
        manifest_bot_scopes(tmp_path / "manifest.yml")
    assert FakeSlack(scopes=["chat:write"]).scopes == frozenset({"chat:write"})
