"""The demo tells its story: live cases through the scripted model (most flow through, the
unsure ones become tasks that say why), the cards #approvals opens with (carol's refund, alice's
own, an expired one), the spike's time, and port hints that keep the arguments given."""

from __future__ import annotations

import socket
from collections import Counter
from datetime import UTC, datetime, timedelta

import openai
import pytest
from sqlalchemy import select

from bot.demo.history import seed_history, spike_time
from bot.demo.launch import busy_port_problem, demo_settings, parse_args, prompt_of, with_flag
from bot.demo.live_model import MODEL, LiveModel
from bot.demo.samples import TICKETS_PER_APPROVAL, demo_case, demo_schedule
from pipelines import Gatehouse, Settings
from pipelines.llm import LLMConfig
from pipelines.operations.schedules import fire
from storage.db import Database
from storage.outbox import outbox_table
from tests.fakes.clock import FakeClock

END = datetime(2026, 11, 25, 10, 30, tzinfo=UTC)  # a Wednesday morning


def test_spike_is_seeded_on_an_afternoon() -> None:
    start = END - timedelta(days=5)
    assert spike_time(start, END) == datetime(2026, 11, 24, 15, tzinfo=UTC)  # yesterday
    evening = END.replace(hour=19)
    assert spike_time(start, evening) == datetime(2026, 11, 25, 15, tzinfo=UTC)  # today


def test_the_cards_the_demo_opens_with(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    try:
        seed_history(db, days=5, end=END)
    finally:
        db.dispose()
    gatehouse = Gatehouse(sqlite_url)
    try:
        waiting = [item for item in gatehouse.pending() if getattr(item, "tool", None)]
        refunds = {a.trigger_user for a in waiting if a.tool == "issue_refund"}  # type: ignore[attr-defined]
        assert {"U_CAROL", "U_ALICE"} <= refunds
        expired = [gatehouse.approval(subject) for subject in _owed(gatehouse, "approval_decided")]
        assert expired and {a.status for a in expired} == {"expired"}  # shown, first
    finally:
        gatehouse.db.dispose()


def _owed(gatehouse: Gatehouse, event: str) -> list[str]:
    """What the bot posts as it starts: the outbox rows the history owes."""
    with gatehouse.db.transaction() as conn:
        rows = conn.execute(
            select(outbox_table.c.subject_id)
            .where(outbox_table.c.event == event)
            .order_by(outbox_table.c.id)
        )
        return [str(row.subject_id) for row in rows]


def test_live_cases_flow_through_and_the_unsure_ones_say_why(
    gatehouse: Gatehouse, clock: FakeClock
) -> None:
    """Ten ticket fires and ten lead fires against the live model, over the real client."""
    with LiveModel() as model:
        gatehouse.rt.llm_config = LLMConfig(model=MODEL, base_url=model.base_url, max_retries=0)
        gatehouse.rt._llm_caller = None
        statuses: Counter[str] = Counter()
        reasons: list[str] = []
        for pipeline, minutes in (("ticket_triage", 2), ("lead_qualify", 5)):
            for index in range(10):
                fire_time = datetime(2026, 11, 2, 9, tzinfo=UTC) + timedelta(
                    minutes=minutes * index
                )
                case = demo_case(pipeline, fire_time)
                model.expect(prompt_of(pipeline, case.input), case.answer)
                clock.advance(timedelta(seconds=1))
                result = fire(gatehouse.rt, demo_schedule(pipeline, fire_time), fire_time)
                gatehouse.worker().run_until_idle()
                run = gatehouse.run(str(result.run_id))
                statuses[f"{pipeline}:{run.status}"] += 1
                reasons += [str((t.context or {}).get("reason")) for t in run.tasks]
    tickets_waiting = statuses["ticket_triage:waiting"]
    # Per cycle of five tickets: a 120.00 refund waits for approval, a vague one for a person.
    assert tickets_waiting == 2 * (10 // TICKETS_PER_APPROVAL)
    assert statuses["ticket_triage:succeeded"] == 10 - tickets_waiting
    assert statuses["lead_qualify:succeeded"] >= 6
    assert reasons and all("no model is configured" not in r for r in reasons)
    assert "the model's confidence 0.62 is below the bar of 0.8" in reasons


def test_the_live_model_does_not_pretend_to_know_what_it_was_not_told() -> None:
    with LiveModel() as model:
        client = openai.OpenAI(base_url=model.base_url, api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "a ticket nobody scripted"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "TicketLabel", "schema": {}},
            },
        )
    content = reply.choices[0].message.content or ""
    assert '"confidence": 0.3' in content and '"kind": "other"' in content


def _busy() -> tuple[socket.socket, int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder, int(holder.getsockname()[1])


def test_a_port_clash_hint_keeps_the_other_arguments_and_names_a_free_port() -> None:
    holder, port = _busy()
    try:
        argv = ["--port", str(port), "--bot-port", "3001", "--socket-mode", "--days", "2"]
        settings = demo_settings(Settings(), "sqlite://", parse_args(argv))
        problem = busy_port_problem(settings, argv)
    finally:
        holder.close()
    assert problem is not None and f"port {port} (--port) is in use" in problem
    suggested = problem.split("(or python -m bot.demo ", 1)[1].rstrip(")").split()
    assert suggested[suggested.index("--bot-port") + 1] == "3001"
    assert "--socket-mode" in suggested and suggested[suggested.index("--days") + 1] == "2"
    new_port = int(suggested[suggested.index("--port") + 1])
    assert new_port != port and new_port != 3001


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--days", "2"], ["--days", "2", "--port", "9"]),
        (["--port", "8766"], ["--port", "9"]),
        (["--port=8766", "--reuse"], ["--port=9", "--reuse"]),
    ],
)
def test_with_flag_replaces_or_appends(argv: list[str], expected: list[str]) -> None:
    assert with_flag(argv, "--port", "9") == expected
