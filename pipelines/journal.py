"""The run's journal under `ctx`: the cursor over its recorded calls, how a call is written,
audited and suspended on, and what happens when today's code no longer matches the record.

Every `ctx` call asks the journal for its place first (`next`): its position, its stable key
(name and ordinal) and, when the run has been here before, its `CallRecord`. A live run writes
through the journal (`transaction`, `record`, `audit`, `suspend`); a replay reads the same
cursor and cannot write (`ReadOnlyJournal`), and an eval has no record at all and cannot write
either (`MemoryJournal`): what each mode does instead of writing is its executor's business.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any, NamedTuple, NoReturn

from pydantic_core import PydanticSerializationError, to_jsonable_python
from sqlalchemy import Connection

from pipelines import run_notices, sensitive, task_outcomes
from pipelines.errors import JournalWriteRefused, LostClaim, PipelineChanged
from pipelines.runtime import Runtime
from storage import calls as call_rows
from storage import runs as run_rows
from storage.audit import append_audit
from storage.calls import CallRecord
from storage.db import Database
from storage.fastsql import driver_transaction, is_integrity_error
from storage.ids import new_id
from storage.models import CallKind, CallStatus, RunStatus

__all__ = [
    "CallRecord",
    "Divergence",
    "Journal",
    "MemoryJournal",
    "NextCall",
    "ReadOnlyJournal",
    "describe_args",
    "fail_the_run",
    "record_value",
]


def describe_args(value: Any) -> Any:
    """Best-effort JSON for display (call inputs); never fails."""
    return to_jsonable_python(value, fallback=repr)


def record_value(value: Any, what: str) -> Any:
    """JSON for a value a replay must get back exactly; refuses what cannot round-trip."""
    try:
        return to_jsonable_python(value)
    except PydanticSerializationError as exc:
        raise TypeError(
            f"{what} returned a {type(value).__name__}, which cannot be recorded; "
            "return JSON-compatible values or pydantic models"
        ) from exc


class NextCall(NamedTuple):
    """A `ctx` call's place in the run: position, key and, if the run got here before, its
    record."""

    run_id: str
    seq: int
    kind: CallKind
    name: str
    key: str
    recorded: CallRecord | None

    @property
    def position(self) -> int:
        """1-based, as reports show it."""
        return self.seq + 1

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.key}"

    def record(
        self,
        status: CallStatus,
        *,
        input: Any,
        started_at: datetime,
        finished_at: datetime | None = None,
        output: Any = None,
        error: str | None = None,
        meta: Any = None,
        call_id: str | None = None,
        idempotency_key: str | None = None,
        wake_at: datetime | None = None,
    ) -> CallRecord:
        """This call's record, with what happened to it."""
        return CallRecord(
            id=call_id or new_id("call"),
            run_id=self.run_id,
            seq=self.seq,
            key=self.key,
            kind=self.kind,
            name=self.name,
            status=status,
            input=input,
            started_at=started_at,
            finished_at=finished_at,
            output=output,
            error=error,
            idempotency_key=idempotency_key,
            wake_at=wake_at,
            meta=meta,
        )


Divergence = Callable[[NextCall, CallRecord], NoReturn]
"""What to do when today's code makes a different call than the record at this position."""


def fail_the_run(call: NextCall, recorded: CallRecord) -> NoReturn:
    """A live run's policy: it cannot go on guessing, so it fails with what to do."""
    raise PipelineChanged(
        f"pipeline changed under a running run: call {call.position} of run {call.run_id} was "
        f"recorded as {recorded.kind} {recorded.key!r} but today's code calls {call.kind} "
        f"{call.key!r}; finish or cancel runs started with the old code before changing a "
        "pipeline's call sequence (`gatehouse replay RUN_ID` shows the difference)"
    )


class Journal:
    """A live run's journal: reads the record, writes the run's calls, audit entries and
    suspensions, on the run's held connection when there is one."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        run_id: str,
        pipeline: str,
        trigger_user: str | None,
        recorded: list[CallRecord],
        conn: Connection | None = None,
        on_divergence: Divergence = fail_the_run,
        tells_triggerer: bool = False,
    ) -> None:
        self.rt = runtime
        self.run_id = run_id
        self.pipeline = pipeline
        self.trigger_user = trigger_user
        # A Slack user triggered the run: waiting on a person owes them a notice (run_notices).
        self.tells_triggerer = tells_triggerer
        self._recorded = recorded
        self._conn = conn
        self._on_divergence = on_divergence
        self._seq = 0
        self._name_counts: dict[str, int] = {}
        # Pure steps' records, written with the next durable boundary (`pending_written`).
        self._pending: list[CallRecord] = []

    # -- the cursor ------------------------------------------------------------------------

    @property
    def calls_made(self) -> int:
        return self._seq

    @property
    def recorded_count(self) -> int:
        return len(self._recorded)

    # False for a live run, whose code may go on past its record; a replay of a finished run
    # says True: its record is the whole run (`ctx.version` past its end takes the old path).
    record_closed = False

    def upcoming(self) -> CallRecord | None:
        """The record at the cursor (the next call's, if the run got there), not consumed."""
        return self._recorded[self._seq] if self._seq < len(self._recorded) else None

    def owe_task_cards(self, conn: Connection, now: datetime) -> list[str]:
        """At the run's next stop after a person's answer, in its transaction: owe the answered
        tasks' cards what the run did next (`pipelines.task_outcomes`); nudge with the ids."""
        if not task_outcomes.person_answered(self._recorded):
            return []
        return task_outcomes.owe_task_cards(self.rt, conn, self.run_id, now)

    def next(self, kind: CallKind, name: str) -> NextCall:
        """The next call's place; a record of a different call there is a divergence."""
        seq = self._seq
        self._seq += 1
        count = self._name_counts.get(name, 0) + 1
        self._name_counts[name] = count
        key = f"{name}#{count}"
        recorded = self._recorded[seq] if seq < len(self._recorded) else None
        call = NextCall(self.run_id, seq, kind, name, key, recorded)
        if recorded is not None and (recorded.kind != kind or recorded.key != key):
            self._on_divergence(call, recorded)
        return call

    # -- writing ---------------------------------------------------------------------------

    def transaction(self) -> AbstractContextManager[Connection]:
        """One transaction, on the run's held connection when there is one; the steps not
        recorded yet are written in it first (it is a durable boundary)."""
        if self._conn is not None:
            return self._with_pending(Database.transaction_on(self._conn))
        return self._with_pending(self.rt.db.transaction())

    def fast_transaction(self) -> AbstractContextManager[Connection]:
        """For writes made only through `storage.fastsql` (tool outcomes, model calls); the
        steps not recorded yet are written in it first."""
        if self._conn is not None:
            return self._with_pending(driver_transaction(self._conn))
        return self._with_pending(self.rt.db.transaction())

    @contextmanager
    def _with_pending(self, opened: AbstractContextManager[Connection]) -> Iterator[Connection]:
        with opened as conn:
            written = self.write_pending(conn)
            yield conn
        self.pending_written(written)

    def write_pending(self, conn: Connection) -> int:
        """Write the pending step records in the caller's transaction; returns how many, for
        `pending_written` once it commits (a rollback leaves them pending)."""
        if not self._pending:
            return 0
        try:
            call_rows.insert_calls(conn, self._pending)
        except Exception as exc:
            if is_integrity_error(exc):  # another worker recorded these positions: it owns the run
                raise LostClaim(self.run_id) from exc
            raise
        return len(self._pending)

    def pending_written(self, count: int) -> None:
        """The transaction that wrote `count` pending records committed."""
        if count:
            del self._pending[:count]

    def fast_read(self) -> AbstractContextManager[Connection]:
        """For reads made only through `storage.fastsql` (the pause check before each call)."""
        if self._conn is not None:
            return driver_transaction(self._conn, read_only=True)
        return self.rt.db.transaction()

    def record(self, record: CallRecord) -> None:
        """One write for a call that is over by the time it is recorded (a model call), in one
        transaction with the steps before it."""
        try:
            with self.fast_transaction() as conn:
                call_rows.insert_call(conn, self._settled(record))
        except Exception as exc:
            if is_integrity_error(exc):  # another worker recorded this position: it owns the run
                raise LostClaim(self.run_id) from exc
            raise

    def defer(self, record: CallRecord) -> None:
        """A pure step's record: not a commit of its own but written with the next durable
        boundary (a tool's start, a model call, a suspension, the run's end). A crash before
        that re-runs only deterministic code, which returns the same results."""
        self._pending.append(self._settled(record))

    def _settled(self, record: CallRecord) -> CallRecord:
        # Free text (a prompt, step arguments, the model's raw answers, an error) and the output
        # may quote a secret or a sensitive value; sealed fields stay whole, so a resume opens them.
        call_input, output, error, meta = sensitive.scrub(
            (record.input, record.output, record.error, record.meta)
        )
        return record._replace(
            input=call_input,
            output=output,
            error=error,
            meta=meta,
            finished_at=self.rt.clock.now(),
        )

    def audit(
        self,
        conn: Connection,
        record: CallRecord,
        event: str,
        *,
        at: datetime,
        actor: str | None = None,
        approval_id: str | None = None,
        detail: Any = None,
    ) -> None:
        """The audit entry for something that happened to this call, in the caller's
        transaction. Its detail is scrubbed (`pipelines.scrub`) like every record."""
        append_audit(
            conn,
            event=event,
            at=at,
            actor=actor,
            run_id=record.run_id,
            call_id=record.id,
            tool=record.name if record.kind == CallKind.TOOL else None,
            approval_id=approval_id,
            idempotency_key=record.idempotency_key,
            detail=sensitive.scrub(detail),
        )

    def suspend(
        self, conn: Connection, now: datetime, reason: str, wake_at: datetime | None = None
    ) -> None:
        """Move the run to `waiting` in the caller's transaction (raise `Suspend` after it)."""
        moved = run_rows.transition(
            conn,
            self.run_id,
            from_statuses=[RunStatus.RUNNING],
            to_status=RunStatus.WAITING,
            now=now,
            claimed_by=self.rt.worker_id,
            detail=sensitive.scrub(reason),
            wake_at=wake_at,
        )
        if not moved:
            raise LostClaim(self.run_id)
        if wake_at is None and self.tells_triggerer:  # a person, not a timer, is awaited
            run_notices.owe_notice(self.rt, conn, self.run_id, now)


class ReadOnlyJournal(Journal):
    """A replay's journal: the run's record, read; no transaction can be opened, so nothing a
    replay reaches can write. Divergence is whatever the replay says (it reports it)."""

    def transaction(self) -> AbstractContextManager[Connection]:
        return _refused(f"a replay of {self.run_id}")

    def fast_transaction(self) -> AbstractContextManager[Connection]:
        return _refused(f"a replay of {self.run_id}")


class MemoryJournal(Journal):
    """An eval case's journal: positions and keys only, no record, and no transaction."""

    def __init__(self, runtime: Runtime, *, run_id: str, pipeline: str) -> None:
        super().__init__(
            runtime,
            run_id=run_id,
            pipeline=pipeline,
            trigger_user=None,
            recorded=[],
            on_divergence=_nothing_to_diverge_from,
        )

    def transaction(self) -> AbstractContextManager[Connection]:
        return _refused(f"an eval of {self.pipeline}")

    def fast_transaction(self) -> AbstractContextManager[Connection]:
        return _refused(f"an eval of {self.pipeline}")


def _nothing_to_diverge_from(call: NextCall, recorded: CallRecord) -> NoReturn:
    raise AssertionError("an eval case has no record to diverge from")


def _refused(who: str) -> NoReturn:
    raise JournalWriteRefused(
        f"{who} never writes, but reached an engine path that records "
        "(report this: its mode's executor should handle that call)"
    )
