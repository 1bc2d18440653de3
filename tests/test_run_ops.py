"""Run operations, engine and CLI: `cancel` ends a queued, waiting or running run (closing its
approvals and tasks), `retry` starts a new attempt from the record, `resolve` settles a call
whose outcome is unknown. On SQLite and PostgreSQL (`any_db_url`)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from bot.cli.main import app
from pipelines import Gatehouse, StaticDirectory, runner
from pipelines.authorization import Authorization
from pipelines.errors import (
    AlreadyAnswered,
    AlreadyDecided,
    InvalidResult,
    NotARunOperator,
    NotUnknown,
    OutcomeUnresolved,
    ReasonRequired,
    ResultRequired,
    RunNotCancellable,
    RunNotRetryable,
)
from pipelines.inspect import run_history
from pipelines.llm import LLMConfig
from tests import run_ops_pipelines as rp
from tests.fakes.clock import FakeClock
from tests.fakes.notifier import RecordingNotifier
from tests.fakes.openai import FakeOpenAI, reply_json

GROUPS = {"finance-leads": ["alice", "bob"], "ops": ["olga"]}
LEASE = timedelta(seconds=30)
JOB = {"item": "widget", "amount": 7}


@pytest.fixture(autouse=True)
def _fresh() -> None:
    rp.reset()


@contextmanager
def engines(url: str, clock: FakeClock) -> Iterator[Any]:
    """Gatehouse objects on one database (separate engines, like separate processes)."""
    made: list[Gatehouse] = []

    def make(
        worker_id: str,
        *,
        notifier: RecordingNotifier | None = None,
        operators: tuple[str, ...] = (),
    ) -> Gatehouse:
        gh = Gatehouse(
            url,
            clock=clock,
            notifier=notifier or RecordingNotifier(),
            directory=StaticDirectory(GROUPS),
            worker_id=worker_id,
            lease=LEASE,
            authorization=Authorization(operators=operators),
        )
        made.append(gh)
        return gh

    try:
        yield make
    finally:
        for gh in made:
            gh.db.dispose()


def _audit_events(gh: Gatehouse, run_id: str) -> list[str]:
    return [a["event"] for a in run_history(gh.rt, run_id)["audit"]]


def stuck_charge(make: Any, clock: FakeClock) -> tuple[Gatehouse, str, str]:
    """A run of ro_charge_job killed inside its non-idempotent charge and taken over by another
    worker: `needs_attention`, the charge `outcome_unknown`. (engine, run id, call id)"""
    dead = make("worker-dead")
    rp.flags["crash"] = True
    with pytest.raises(rp.Crash):
        dead.trigger("ro_charge_job", JOB, user="carol")
    [run] = dead.runs(pipeline="ro_charge_job")
    survivor = make("worker-alive")
    clock.advance(LEASE + timedelta(seconds=1))
    outcome = survivor.worker().run_one()
    assert outcome is not None and outcome.status == "needs_attention"
    charge = survivor.run(run.id).calls[1]
    assert charge.status == "outcome_unknown"
    assert len(rp.effects["ro_charge"]) == 1
    return survivor, run.id, charge.id


# -- cancel ----------------------------------------------------------------------------------


def test_cancel_a_waiting_run_closes_its_approval_and_says_who_and_why(
    any_db_url: str, clock: FakeClock
) -> None:
    notifier = RecordingNotifier()
    with engines(any_db_url, clock) as make:
        gh = make("w1", notifier=notifier)
        run = gh.trigger("ro_gated_job", JOB, user="carol")
        assert run.status == "waiting"
        [approval_id] = run.waiting_for

        cancelled = gh.cancel(run.id, user="alice", reason="duplicate of run 12")

        assert cancelled.status == "cancelled"
        assert cancelled.error == "cancelled by alice: duplicate of run 12"
        assert cancelled.finished_at is not None
        approval = gh.approval(approval_id)
        assert (approval.status, approval.decided_by, approval.reason) == (
            "cancelled",
            "alice",
            "duplicate of run 12",
        )
        decided = [v for e, v in notifier.events if e == "approval_decided"]
        assert [(v.id, v.status) for v in decided] == [(approval_id, "cancelled")]
        assert gh.pending() == []
        with pytest.raises(AlreadyDecided, match="cancelled by alice"):
            gh.approve(approval_id, user="bob")
        assert "ro_pay" not in rp.effects
        events = _audit_events(gh, run.id)
        assert "run.cancelled" in events and "approval.cancelled" in events
        assert [r.id for r in gh.runs(status="cancelled")] == [run.id]


def test_cancel_a_run_waiting_for_a_person_closes_the_task(
    any_db_url: str, clock: FakeClock
) -> None:
    notifier = RecordingNotifier()
    with engines(any_db_url, clock) as make:
        gh = make("w1", notifier=notifier)
        run = gh.trigger("ro_ask_job", JOB, user="carol")
        [task_id] = run.waiting_for

        gh.cancel(run.id, user="olga", reason="the customer withdrew")

        task = gh.task(task_id)
        assert (task.status, task.answered_by) == ("cancelled", "olga")
        assert task.answer == {"cancelled": "the customer withdrew"}
        assert [(e, v.status) for e, v in notifier.events if e == "task_answered"] == [
            ("task_answered", "cancelled")
        ]
        with pytest.raises(AlreadyAnswered):
            gh.answer(task_id, user="olga", answer={"cents": 5})
        assert "task.cancelled" in _audit_events(gh, run.id)


def test_a_cancelled_queued_run_is_never_claimed(any_db_url: str, clock: FakeClock) -> None:
    with engines(any_db_url, clock) as make:
        gh = make("w1")
        run = runner.trigger(gh.rt, "ro_charge_job", JOB, user="carol", run_here=False)
        assert run.status == "queued"

        gh.cancel(run.id, user="alice", reason="not needed")

        assert gh.worker().run_one() is None
        assert gh.run(run.id).status == "cancelled"
        assert rp.effects == {}


def test_cancel_of_a_running_run_stops_it_before_its_next_tool_call(
    any_db_url: str, clock: FakeClock
) -> None:
    with engines(any_db_url, clock) as make:
        gh = make("w1")
        operator = make("cli")  # another process, while w1 executes the run
        run_ids: list[str] = []

        def cancel_meanwhile() -> None:
            [running] = operator.runs(pipeline="ro_two_calls_job")
            assert running.status == "running"
            operator.cancel(running.id, user="alice", reason="wrong customer")
            run_ids.append(running.id)

        rp.during_lookup.append(cancel_meanwhile)
        gh.trigger("ro_two_calls_job", JOB, user="carol")

        [run_id] = run_ids
        after = gh.run(run_id)
        assert after.status == "cancelled"
        assert after.error == "cancelled by alice: wrong customer"
        assert [(c.key, c.status) for c in after.calls] == [("ro_lookup#1", "succeeded")]
        assert "ro_charge" not in rp.effects, "the charge after the cancel never ran"


def test_a_finished_run_cannot_be_cancelled(any_db_url: str, clock: FakeClock) -> None:
    with engines(any_db_url, clock) as make:
        gh = make("w1")
        run = gh.trigger("ro_charge_job", JOB, user="carol")
        assert run.status == "succeeded"
        with pytest.raises(RunNotCancellable, match="already finished succeeded"):
            gh.cancel(run.id, user="alice", reason="too late")
        with pytest.raises(ReasonRequired):
            gh.cancel(run.id, user="alice", reason=" ")
        assert gh.run(run.id).status == "succeeded"


# -- retry -----------------------------------------------------------------------------------


def test_retry_reuses_the_succeeded_calls_and_makes_the_failed_one_again(
    any_db_url: str, clock: FakeClock
) -> None:
    with engines(any_db_url, clock) as make:
        gh = make("w1")
        rp.flags["step_fails"] = True
        run = gh.trigger("ro_flaky_job", JOB, user="carol")
        assert run.status == "failed"
        assert "price list" in (run.error or "")
        rp.flags["step_fails"] = False

        queued = gh.retry(run.id, user="alice")
        assert queued.status == "queued"
        assert queued.error is None and queued.finished_at is None
        done = gh.resume(run.id)

        assert done is not None and done.status == "succeeded"
        assert len(rp.effects["ro_lookup"]) == 1, "the read tool's record was reused"
        assert len(rp.effects["ro_check"]) == 2, "the failed step ran again"
        assert len(rp.effects["ro_charge"]) == 1
        history = run_history(gh.rt, run.id)
        assert any(t["detail"] == "retry by alice: attempt 2" for t in history["transitions"])
        [retried] = [a for a in history["audit"] if a["event"] == "run.retried"]
        assert retried["actor"] == "alice"
        assert retried["detail"]["attempt"] == 2
        assert retried["detail"]["made_again"] == "ro_check#1"
        calls = gh.run(run.id).calls
        assert [(c.key, c.status) for c in calls] == [
            ("ro_lookup#1", "succeeded"),
            ("ro_check#1", "succeeded"),
            ("ro_charge#1", "succeeded"),
            ("ro_check#1", "failed"),  # the first attempt's, kept out of the record
        ]
        assert calls[-1].meta == {"replaced_by_attempt": 2}


def test_retry_is_refused_while_a_call_outcome_is_unknown_and_says_resolve_first(
    any_db_url: str, clock: FakeClock
) -> None:
    with engines(any_db_url, clock) as make:
        gh, run_id, call_id = stuck_charge(make, clock)
        with pytest.raises(OutcomeUnresolved, match=f"gatehouse resolve {call_id}"):
            gh.retry(run_id, user="alice")
        assert gh.run(run_id).status == "needs_attention"
        assert len(rp.effects["ro_charge"]) == 1


def test_retry_of_a_running_or_succeeded_run_is_refused(any_db_url: str, clock: FakeClock) -> None:
    with engines(any_db_url, clock) as make:
        gh = make("w1")
        done = gh.trigger("ro_charge_job", JOB, user="carol")
        with pytest.raises(RunNotRetryable, match="finished succeeded"):
            gh.retry(done.id, user="alice")
        waiting = gh.trigger("ro_gated_job", JOB, user="carol")
        with pytest.raises(RunNotRetryable, match="gatehouse cancel"):
            gh.retry(waiting.id, user="alice")


def test_retry_of_a_cancelled_run_asks_for_a_fresh_approval(
    any_db_url: str, clock: FakeClock
) -> None:
    with engines(any_db_url, clock) as make:
        gh = make("w1")
        run = gh.trigger("ro_gated_job", JOB, user="carol")
        [first] = run.waiting_for
        gh.cancel(run.id, user="alice", reason="paused for the audit")

        gh.retry(run.id, user="alice")
        again = gh.resume(run.id)

        assert again is not None and again.status == "waiting"
        [second] = again.waiting_for
        assert second != first
        assert gh.approval(first).status == "cancelled"
        gh.approve(second, user="bob")
        finished = gh.resume(run.id)
        assert finished is not None and finished.status == "succeeded"
        assert len(rp.effects["ro_pay"]) == 1
        assert rp.effects["ro_note"] == ["before"], "the step before the gate was reused"


def test_two_retries_at_once_start_one_attempt(any_db_url: str, clock: FakeClock) -> None:
    with engines(any_db_url, clock) as make:
        gh = make("w1")
        rp.flags["step_fails"] = True
        run = gh.trigger("ro_flaky_job", JOB, user="carol")
        rp.flags["step_fails"] = False
        operators = [make("a"), make("b")]
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def retry(engine: Gatehouse) -> None:
            barrier.wait(timeout=10)
            try:
                engine.retry(run.id, user="alice")
                outcomes.append("retried")
            except RunNotRetryable:
                outcomes.append("refused")

        threads = [threading.Thread(target=retry, args=(e,)) for e in operators]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert sorted(outcomes) == ["refused", "retried"]
        assert _audit_events(gh, run.id).count("run.retried") == 1
        assert gh.worker().run_one() is not None
        assert gh.run(run.id).status == "succeeded"
        assert len(rp.effects["ro_charge"]) == 1


# -- resolve ---------------------------------------------------------------------------------


def test_resolve_happened_records_the_result_and_the_run_carries_on_without_a_second_charge(
    any_db_url: str, clock: FakeClock
) -> None:
    with engines(any_db_url, clock) as make:
        gh, run_id, call_id = stuck_charge(make, clock)
        with pytest.raises(ResultRequired, match="--result"):
            gh.resolve(call_id, user="alice", happened=True, reason="seen in the ledger")
        with pytest.raises(InvalidResult, match="amount"):
            gh.resolve(
                call_id,
                user="alice",
                happened=True,
                reason="seen",
                result={"receipt_id": "r-9", "amount": "lots"},
            )

        call = gh.resolve(
            call_id,
            user="alice",
            happened=True,
            reason="seen in the ledger",
            result={"receipt_id": "r-ledger-9", "amount": 7},
        )

        assert call.status == "succeeded"
        assert call.output == {"receipt_id": "r-ledger-9", "amount": 7}
        assert gh.run(run_id).status == "queued"
        assert gh.worker().run_one() is not None
        after = gh.run(run_id)
        assert (after.status, after.output) == ("succeeded", "r-ledger-9")
        assert len(rp.effects["ro_charge"]) == 1, "no second charge"
        [entry] = [a for a in run_history(gh.rt, run_id)["audit"] if a["event"] == "tool.resolved"]
        assert entry["actor"] == "alice"
        assert entry["detail"]["happened"] is True
        with pytest.raises(NotUnknown):
            gh.resolve(call_id, user="alice", happened=False, reason="again")


def test_resolve_did_not_happen_runs_the_tool_again_under_its_key(
    any_db_url: str, clock: FakeClock
) -> None:
    with engines(any_db_url, clock) as make:
        gh, run_id, call_id = stuck_charge(make, clock)
        call = gh.resolve(call_id, user="bob", happened=False, reason="not in the ledger")
        assert call.status == "did_not_happen"

        assert gh.worker().run_one() is not None

        after = gh.run(run_id)
        assert after.status == "succeeded"
        keys = rp.effects["ro_charge"]
        assert keys == [f"{run_id}:ro_charge#1"] * 2, "charged again, with the same key"
        assert [c.status for c in after.calls] == ["succeeded", "succeeded", "succeeded"]


def test_run_operations_are_for_operators_and_the_tools_approvers_and_refusals_are_audited(
    any_db_url: str, clock: FakeClock
) -> None:
    with engines(any_db_url, clock) as make:
        stuck, run_id, call_id = stuck_charge(make, clock)
        gh = make("ops", operators=("olga",))
        with pytest.raises(NotARunOperator, match="GATEHOUSE_OPERATORS"):
            gh.resolve(call_id, user="mallory", happened=False, reason="guess")
        with pytest.raises(NotARunOperator):
            gh.retry(run_id, user="mallory")
        with pytest.raises(NotARunOperator):
            gh.cancel(run_id, user="mallory", reason="because")
        refused = [a for a in run_history(gh.rt, run_id)["audit"] if a["event"] == "refused"]
        assert [a["detail"]["action"] for a in refused] == ["resolve", "retry", "cancel"]
        assert all(a["actor"] == "mallory" for a in refused)

        gh.resolve(call_id, user="olga", happened=False, reason="operator checked")  # operator
        assert gh.run(run_id).status == "queued"
        gh.cancel(run_id, user="bob", reason="finance lead: not needed")  # the tool's approver
        assert gh.run(run_id).status == "cancelled"


# -- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, any_db_url: str) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEHOUSE_DATABASE_URL", any_db_url)
    monkeypatch.setenv("GATEHOUSE_GROUPS", json.dumps(GROUPS))
    monkeypatch.setenv("GATEHOUSE_PIPELINES", "tests.run_ops_pipelines")
    for name in ("GATEHOUSE_USER", "GATEHOUSE_LOG_LEVEL", "GATEHOUSE_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    return any_db_url


def gh_cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_cli_cancel_retry_and_resolve(cli_env: str, clock: FakeClock) -> None:
    with engines(cli_env, clock) as make:
        engine, run_id, call_id = stuck_charge(make, clock)

        refused = gh_cli("retry", run_id, "--as", "alice")
        assert refused.exit_code == 1
        assert "gatehouse resolve" in refused.stderr and call_id in refused.stderr

        both = gh_cli("resolve", call_id, "--as", "alice", "--reason", "x")
        assert both.exit_code != 0 and "--happened" in both.stderr

        resolved = gh_cli(
            "resolve",
            call_id,
            "--happened",
            "--result",
            '{"receipt_id": "r-cli", "amount": 7}',
            "--as",
            "alice",
            "--reason",
            "the ledger has it",
            "--json",
        )
        assert resolved.exit_code == 0, resolved.stderr
        body = json.loads(resolved.stdout)
        assert body["call"]["status"] == "succeeded"
        assert (body["run"]["status"], body["run"]["output"]) == ("succeeded", "r-cli")

        cancelled = gh_cli("cancel", run_id, "--as", "alice", "--reason", "late")
        assert cancelled.exit_code == 1
        assert "a finished run cannot be cancelled" in cancelled.stderr

        waiting = engine.trigger("ro_gated_job", JOB, user="carol")
        out = gh_cli("cancel", waiting.id, "--as", "alice", "--reason", "duplicate")
        assert out.exit_code == 0, out.stderr
        assert f"run {waiting.id} cancelled by alice (it was waiting): duplicate" in out.stdout
        assert "closed: its run was cancelled by alice: duplicate" in out.stdout + out.stderr
        listed = gh_cli("runs", "--status", "cancelled", "--json")
        assert [r["id"] for r in json.loads(listed.stdout)] == [waiting.id]

        retried = gh_cli("retry", waiting.id, "--as", "alice")
        assert retried.exit_code == 0, retried.stderr
        assert f"run {waiting.id} (ro_gated_job): waiting" in retried.stdout
        shown = gh_cli("run", waiting.id)
        assert "retry by alice: attempt 2" in shown.stdout
        assert "replaced by attempt 2 (gatehouse retry)" in shown.stdout


# -- concurrency: a cancel while a worker thread runs the run; a retry racing the workers ------


def test_a_cancel_while_a_worker_thread_runs_the_run_stops_it_at_the_next_call(
    any_db_url: str, clock: FakeClock
) -> None:
    with engines(any_db_url, clock) as make:
        worker_engine, operator = make("w1"), make("cli")
        in_lookup, cancelled = threading.Event(), threading.Event()

        def hold_the_lookup() -> None:
            in_lookup.set()
            assert cancelled.wait(timeout=20), "the cancel never came"

        rp.during_lookup.append(hold_the_lookup)
        queued = runner.trigger(worker_engine.rt, "ro_two_calls_job", JOB, run_here=False)
        worker = threading.Thread(target=worker_engine.worker().run_one)
        worker.start()
        assert in_lookup.wait(timeout=20), "the worker never reached the lookup"

        operator.cancel(queued.id, user="alice", reason="stop it")  # while the tool runs
        cancelled.set()
        worker.join(timeout=30)

        assert not worker.is_alive()
        after = operator.run(queued.id)
        assert after.status == "cancelled"
        assert [(c.key, c.status) for c in after.calls] == [("ro_lookup#1", "succeeded")]
        assert "ro_charge" not in rp.effects, "the call after the cancel never started"
        assert operator.worker().run_one() is None, "nothing left to claim"


def test_retries_racing_each_other_and_the_workers_run_the_attempt_once(
    any_db_url: str, clock: FakeClock
) -> None:
    with engines(any_db_url, clock) as make:
        gh = make("w0")
        rp.flags["step_fails"] = True
        run = gh.trigger("ro_flaky_job", JOB, user="carol")
        assert run.status == "failed"
        rp.flags["step_fails"] = False
        workers = [make(f"w{i}").worker() for i in (1, 2)]
        operators = [make("op-a"), make("op-b")]
        start = threading.Barrier(4)
        outcomes: list[str] = []

        def poll(worker: Any) -> None:
            start.wait(timeout=10)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and gh.run(run.id).status != "succeeded":
                worker.run_one()
                time.sleep(0.005)  # a real thread to wait for, bounded by the deadline

        def retry(engine: Gatehouse) -> None:
            start.wait(timeout=10)
            try:
                engine.retry(run.id, user="alice")
                outcomes.append("retried")
            except RunNotRetryable:
                outcomes.append("refused")

        threads = [threading.Thread(target=poll, args=(w,)) for w in workers]
        threads += [threading.Thread(target=retry, args=(e,)) for e in operators]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)

        assert gh.run(run.id).status == "succeeded"
        assert sorted(outcomes) == ["refused", "retried"]
        assert _audit_events(gh, run.id).count("run.retried") == 1
        assert len(rp.effects["ro_charge"]) == 1, "the charge ran once"
        assert len(rp.effects["ro_check"]) == 2, "the failed step ran once more, not twice"
        assert len(rp.effects["ro_lookup"]) == 1


def test_cancel_of_a_running_run_stops_it_before_its_next_model_call(
    sqlite_url: str, clock: FakeClock, fake_openai: FakeOpenAI
) -> None:
    fake_openai.always(reply_json({"kind": "refund", "confidence": 0.9}))
    llm = LLMConfig(model="gpt-test", base_url=fake_openai.base_url, api_key="sk-test")
    gh = Gatehouse(sqlite_url, clock=clock, worker_id="w1", llm=llm)
    operator = Gatehouse(sqlite_url, clock=clock, worker_id="cli")
    try:

        def cancel_meanwhile() -> None:
            [running] = operator.runs(pipeline="ro_lookup_then_ask_model")
            operator.cancel(running.id, user="alice", reason="not this one")

        rp.during_lookup.append(cancel_meanwhile)
        gh.trigger("ro_lookup_then_ask_model", JOB, user="carol")

        [run] = operator.runs(pipeline="ro_lookup_then_ask_model")
        assert run.status == "cancelled"
        assert [c.key for c in operator.run(run.id).calls] == ["ro_lookup#1"]
        assert fake_openai.calls == 0, "the model was never asked"
    finally:
        gh.db.dispose()
        operator.db.dispose()
