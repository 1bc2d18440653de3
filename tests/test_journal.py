"""The journal under `ctx`: keys and positions, divergence as the mode's policy, and the
journals of a replay and an eval refusing every write by construction."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NoReturn

import pytest

from pipelines import Gatehouse
from pipelines.errors import JournalWriteRefused, PipelineChanged
from pipelines.journal import CallRecord, Journal, MemoryJournal, NextCall, ReadOnlyJournal
from storage.models import CallKind, CallStatus

AT = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _recorded(seq: int, kind: CallKind, key: str) -> CallRecord:
    return CallRecord(
        id=f"call_{seq}",
        run_id="run_1",
        seq=seq,
        key=key,
        kind=kind,
        name=key.partition("#")[0],
        status=CallStatus.SUCCEEDED,
        input=None,
        started_at=AT,
    )


def test_next_numbers_each_name_and_hands_back_the_record_at_its_position(
    gatehouse: Gatehouse,
) -> None:
    record = [_recorded(0, CallKind.STEP, "load#1"), _recorded(1, CallKind.STEP, "load#2")]
    journal = Journal(
        gatehouse.rt, run_id="run_1", pipeline="p", trigger_user=None, recorded=record
    )
    first, second, third = (journal.next(CallKind.STEP, "load") for _ in range(3))
    assert (first.key, second.key, third.key) == ("load#1", "load#2", "load#3")
    assert first.recorded == record[0] and second.recorded == record[1]
    assert third.recorded is None
    assert third.idempotency_key == "run_1:load#3" and third.position == 3
    assert journal.calls_made == 3 and journal.recorded_count == 2


def test_a_live_journal_fails_the_run_when_the_code_calls_something_else_there(
    gatehouse: Gatehouse,
) -> None:
    journal = Journal(
        gatehouse.rt,
        run_id="run_1",
        pipeline="p",
        trigger_user=None,
        recorded=[_recorded(0, CallKind.STEP, "load#1")],
    )
    with pytest.raises(PipelineChanged, match="recorded as step 'load#1' but today's code calls"):
        journal.next(CallKind.TOOL, "send")


def test_divergence_is_the_policy_the_journal_was_given(gatehouse: Gatehouse) -> None:
    seen: list[tuple[NextCall, CallRecord]] = []

    class Stop(BaseException):
        pass

    def note_and_stop(call: NextCall, recorded: CallRecord) -> NoReturn:
        seen.append((call, recorded))
        raise Stop

    record = [_recorded(0, CallKind.STEP, "load#1")]
    journal = ReadOnlyJournal(
        gatehouse.rt,
        run_id="run_1",
        pipeline="p",
        trigger_user=None,
        recorded=record,
        on_divergence=note_and_stop,
    )
    with pytest.raises(Stop):
        journal.next(CallKind.LLM, "classify")
    [(call, recorded)] = seen
    assert (call.kind, call.key, recorded) == (CallKind.LLM, "classify#1", record[0])


def test_the_journals_of_a_replay_and_an_eval_open_no_transaction(gatehouse: Gatehouse) -> None:
    journals = [
        ReadOnlyJournal(gatehouse.rt, run_id="run_1", pipeline="p", trigger_user=None, recorded=[]),
        MemoryJournal(gatehouse.rt, run_id="case_1", pipeline="p"),
    ]
    for journal in journals:
        call = journal.next(CallKind.STEP, "load")
        with pytest.raises(JournalWriteRefused, match="never writes"):
            journal.transaction()
        with pytest.raises(JournalWriteRefused, match="never writes"):
            journal.fast_transaction()
        with pytest.raises(JournalWriteRefused, match="never writes"):
            journal.record(call.record(CallStatus.SUCCEEDED, input=None, started_at=AT))
