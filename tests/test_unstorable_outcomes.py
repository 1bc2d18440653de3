"""A tool's outcome is never lost to the database: text PostgreSQL refuses (NUL) and strings no
UTF-8 database can hold (lone surrogates) are recorded and read back equal on both databases; a
write the database refuses leaves the call `outcome_unknown` and the run `needs_attention`
(never `failed` with the call `started`, which invites a retry that pays twice); and a database
blip after the effect keeps the outcome the process knows (PostgreSQL: the blip is
`pg_terminate_backend` on this test's connections, as in tests/test_db_restart.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from pydantic import BaseModel
from sqlalchemy import create_engine, select, text

from pipelines import Context, Gatehouse, StaticDirectory, Worker, pipeline, tool
from pipelines.live import DB_BLIP
from storage.audit import audit_table
from tests.conftest import GROUPS
from tests.fakes.clock import FakeClock
from tests.test_db_restart import run_worker_until, tagged_url

__all__ = ["tagged_url"]  # the fixture, used by the blip tests below

WEIRD = "nul\x00 lone\ud800 low\udfff pair\U0001f600 slash\\u0000 gh-escaped:looks-escaped"
effects: Counter[str] = Counter()
blip: dict[str, Callable[[], None] | None] = {"after_effect": None}


class Ask(BaseModel):
    text: str


class Echo(BaseModel):
    text: str


@tool(kind="write", approval="never")
def uo_echo(args: Ask, *, idempotency_key: str) -> Echo:
    effects[idempotency_key] += 1
    if args.text.startswith("fail:"):
        raise ValueError(args.text)
    cut = blip["after_effect"]
    if cut is not None:  # the effect happened; the database goes before it is recorded
        blip["after_effect"] = None
        cut()
    return Echo(text=args.text)


@tool(kind="send", approval="always", approvers=["U_BOB"])
def uo_gated(args: Ask, *, idempotency_key: str) -> Echo:
    return Echo(text=args.text)


@pipeline("uo_weird", input=Ask)
def uo_weird(ctx: Context, given: Ask) -> dict[str, str]:
    echoed = ctx.tool(uo_echo, given)
    ctx.tool(uo_gated, Ask(text="go"))  # waits: the resume reads the first result back
    return {"echo": echoed.text, "step": ctx.step("same", lambda t: t, echoed.text)}


@pipeline("uo_once", input=Ask)
def uo_once(ctx: Context, given: Ask) -> dict[str, str]:
    return {"echo": ctx.tool(uo_echo, given).text}


def engine(url: str) -> Gatehouse:
    return Gatehouse(url, clock=FakeClock(), directory=StaticDirectory(GROUPS))


@pytest.fixture(autouse=True)
def _reset() -> None:
    effects.clear()
    blip["after_effect"] = None


def test_nul_and_lone_surrogates_in_a_tool_result_are_recorded_and_read_back_equal(
    any_db_url: str,
) -> None:
    gh = engine(any_db_url)
    run = gh.trigger("uo_weird", {"text": WEIRD}, user="U_ALICE")
    assert run.status == "waiting", run.error
    [approval_id] = run.waiting_for
    gh.approve(approval_id, user="U_BOB")
    gh.worker().run_until_idle()
    done = gh.run(run.id)
    assert done.status == "succeeded", done.error
    assert done.output == {"echo": WEIRD, "step": WEIRD}
    assert done.input == {"text": WEIRD}
    assert [c.output for c in done.calls if c.name == "uo_echo"] == [{"text": WEIRD}]
    assert sum(effects.values()) == 1

    failed = gh.trigger("uo_once", {"text": f"fail:{WEIRD}"}, user="U_ALICE")
    assert failed.status == "failed"
    assert failed.error is not None and failed.error.endswith(f"ValueError: fail:{WEIRD}")
    assert gh.run(failed.id).error == failed.error
    [call] = gh.run(failed.id).calls
    assert call.status == "failed" and call.error == f"ValueError: fail:{WEIRD}"
    gh.db.dispose()


def _refuse_outcomes_marked(url: str, marker: str) -> None:
    """A trigger in the test's database that refuses to record a call output holding `marker`:
    a real database refusing a write (a constraint, a size limit) after the effect happened."""
    admin = create_engine(url)
    with admin.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER uo_refuse BEFORE UPDATE OF output ON calls "
                    f"WHEN CAST(NEW.output AS TEXT) LIKE '%{marker}%' "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION uo_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    f"IF NEW.output::text LIKE '%{marker}%' THEN "
                    "RAISE EXCEPTION 'refused by the test trigger'; END IF; RETURN NEW; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER uo_refuse BEFORE UPDATE ON calls "
                    "FOR EACH ROW EXECUTE FUNCTION uo_refuse()"
                )
            )
    admin.dispose()


def test_an_outcome_the_database_refuses_leaves_the_call_outcome_unknown_and_the_run_needing_attention(
    any_db_url: str,
) -> None:
    _refuse_outcomes_marked(any_db_url, "refuse-me")
    gh = engine(any_db_url)
    run = gh.trigger("uo_once", {"text": "refuse-me"}, user="U_ALICE")
    assert run.status == "needs_attention", run.error
    [call] = gh.run(run.id).calls
    assert call.status == "outcome_unknown"
    assert call.error is not None and "refused to record its outcome" in call.error
    assert call.idempotency_key is not None and call.idempotency_key in call.error
    assert gh.run(run.id).error == call.error
    assert gh.worker().run_until_idle() == 0  # nothing runs it again
    assert sum(effects.values()) == 1
    gh.db.dispose()


@pytest.mark.postgres
def test_a_database_blip_after_a_tool_that_is_not_idempotent_keeps_its_outcome(
    tagged_url: tuple[str, Callable[[], None]],
) -> None:
    url, restart = tagged_url
    gh = engine(url)
    queued = gh.trigger("uo_once", {"text": "kept"}, run_here=False)
    blip["after_effect"] = restart
    worker = Worker(gh.rt, poll_seconds=0.01, max_backoff=0.2)
    run_worker_until(worker, lambda: gh.run(queued.id).status not in ("queued", "running"))
    run = gh.run(queued.id)
    assert run.status == "succeeded", run.error
    assert run.output == {"echo": "kept"}
    [call] = run.calls
    assert call.status == "succeeded" and call.output == {"text": "kept"}
    assert list(effects.values()) == [1]
    with gh.db.transaction() as conn:
        recorded = conn.execute(
            select(audit_table.c.detail).where(
                audit_table.c.run_id == run.id, audit_table.c.event == "tool.succeeded"
            )
        ).scalars()
        assert [detail.get("recorded_late") for detail in recorded] == [DB_BLIP]
    gh.db.dispose()


@pytest.mark.postgres
def test_an_outcome_kept_past_the_retries_is_written_when_the_run_is_replayed(
    tagged_url: tuple[str, Callable[[], None]],
) -> None:
    url, restart = tagged_url
    gh = engine(url)
    gh.rt.outcome_retry_delays = ()  # the database stays away longer than the retries last
    queued = gh.trigger("uo_once", {"text": "kept"}, run_here=False)
    blip["after_effect"] = restart
    worker = Worker(gh.rt, poll_seconds=0.01, max_backoff=0.2)
    run_worker_until(worker, lambda: gh.run(queued.id).status not in ("queued", "running"))
    run = gh.run(queued.id)
    assert run.status == "succeeded", run.error
    assert [c.status for c in run.calls] == ["succeeded"]
    assert list(effects.values()) == [1]
    assert gh.rt.unrecorded_outcomes == {}
    gh.db.dispose()
