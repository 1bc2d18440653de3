"""`/gatehouse eval PIPELINE`: the eval runs on the bot's work pool and its summary is posted in the
channel the command came from; operators only; nothing of it reaches production tables."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.slack.commands import handle_command
from pipelines import Gatehouse
from storage import evals as eval_rows
from tests.fakes.clock import FakeClock
from tests.fakes.slack import FakeSlack
from tests.slack_harness import SlackWorld, slack_world
from tests.test_eval import ROUTE_SET, executed, table_counts


@pytest.fixture
def world(
    fake_slack: FakeSlack, sqlite_url: str, clock: FakeClock, tmp_path: Path
) -> Iterator[SlackWorld]:
    (tmp_path / "ev_route.jsonl").write_text(ROUTE_SET, encoding="utf-8")
    with slack_world(
        fake_slack, sqlite_url, clock, eval_datasets_dir=str(tmp_path), operators=["U_OLGA"]
    ) as built:
        yield built


def _texts(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks") or message.get("text"), ensure_ascii=False)


def test_slash_eval_posts_the_summary_in_the_channel(world: SlackWorld) -> None:
    executed.clear()
    before = table_counts(world.gatehouse.db)
    world.fake.invite("C_GENERAL")  # the summary is posted where the bot was invited
    world.slack.command("eval ev_route", user_id="U_OLGA", channel_id="C_GENERAL")
    world.settle()

    [started] = [e for e in world.fake.ephemerals("U_OLGA") if "Evaluating" in e["text"]]
    assert "on 6 case(s)" in started["text"]
    [posted] = world.fake.messages("C_GENERAL")
    shown = _texts(posted)
    assert "Eval of ev_route" in shown and "2/6 passed" in shown
    assert "would call" in shown and "ev_write_note" in shown
    assert executed["ev_write_note"] == executed["ev_send"] == 0
    assert table_counts(world.gatehouse.db) == before
    with world.gatehouse.db.transaction() as conn:
        latest = eval_rows.latest(conn, "ev_route")
    assert latest is not None and (latest.source, latest.triggered_by) == ("slack", "U_OLGA")
    assert world.fake.rejected == []


def test_slash_eval_is_for_operators_and_names_a_known_pipeline(world: SlackWorld) -> None:
    world.slack.command("eval ev_route", user_id="U_CAROL", channel_id="C_GENERAL")
    world.slack.command("eval no_such", user_id="U_OLGA", channel_id="C_GENERAL")
    world.settle()
    [refused] = world.fake.ephemerals("U_CAROL")
    assert ":no_entry:" in refused["text"] and "may not evaluate ev_route" in refused["text"]
    [unknown] = world.fake.ephemerals("U_OLGA")
    assert "no pipeline named" in unknown["text"]
    assert world.fake.messages("C_GENERAL") == []


def test_eval_outside_the_slack_listener_says_where_evals_run(gatehouse: Gatehouse) -> None:
    reply = handle_command("eval ev_route", user_id="U_OLGA", gatehouse=gatehouse)
    assert "gatehouse eval PIPELINE" in reply.text or "background" in json.dumps(reply.blocks)
    help_text = json.dumps(handle_command("help", user_id="U", gatehouse=gatehouse).blocks)
    assert "eval PIPELINE [reviewed]" in help_text
