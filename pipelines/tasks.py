"""Human tasks, both ends: a run opens one (`ctx.ask_human`, or a model call's human exit) and
waits, a person answers it (validated by the same model the pipeline asked with), and the
resumed run collects the answer as the call's result.
"""

from __future__ import annotations

import importlib
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import structlog
from pydantic import BaseModel, ValidationError

from pipelines import sensitive, task_outcomes
from pipelines.authorization import groups_checked, may_act, refuse
from pipelines.errors import AlreadyAnswered, InvalidAnswer, NotAnAssignee, Suspend, UnknownTask
from pipelines.journal import CallRecord, Journal, NextCall
from pipelines.llm import has_confidence
from pipelines.runtime import Runtime
from pipelines.validation import format_validation_errors
from pipelines.views import TaskView
from storage import approvals as task_rows
from storage import calls as call_rows
from storage import runs as run_rows
from storage.audit import append_audit
from storage.ids import new_id
from storage.models import CallStatus, TaskStatus
from storage.rows import HumanTaskRow

log = structlog.get_logger()
M = TypeVar("M", bound=BaseModel)


# -- the run's end: open, collect -----------------------------------------------------------


def model_path(model: type[BaseModel]) -> str:
    if "<locals>" in model.__qualname__:
        raise TypeError(
            f"{model.__qualname__} is defined inside a function; define human-task output "
            "models at module level so an answer can be validated by another process"
        )
    return f"{model.__module__}:{model.__qualname__}"


def open_task(
    journal: Journal,
    call: NextCall,
    question: str,
    output: type[BaseModel],
    *,
    context: Any,
    assignees: list[str] | None,
    call_input: Any,
    meta: dict[str, Any] | None = None,
) -> NoReturn:
    """Record the call as waiting for a person, open the task, suspend the run."""
    question, context, call_input, meta = sensitive.scrub((question, context, call_input, meta))
    path = model_path(output)
    now = journal.rt.clock.now()
    record = call.record(CallStatus.AWAITING_HUMAN, input=call_input, started_at=now, meta=meta)
    task_id = new_id("task")
    values = {
        "id": task_id,
        "run_id": journal.run_id,
        "call_id": record.id,
        "call_key": call.key,
        "name": call.name,
        "question": question,
        "output_model": path,
        "output_schema": output.model_json_schema(),
        "context": context,
        "assignees": list(assignees or []),
        "status": TaskStatus.OPEN,
        "opened_at": now,
    }
    with journal.transaction() as conn:
        call_rows.insert_call(conn, record)
        task_rows.insert_task(conn, **values)
        journal.audit(conn, record, "task.opened", at=now, detail={"task_id": task_id})
        journal.suspend(conn, now, f"human task {task_id}")
        journal.rt.enqueue(conn, "task_opened", task_id, now)
        task_cards = journal.owe_task_cards(conn, now)
    log.info("task.opened", run_id=journal.run_id, task_id=task_id, name=call.name)
    task_outcomes.nudge_task_cards(journal.rt, task_cards)
    journal.rt.notify(
        "task_opened",
        TaskView.of(
            HumanTaskRow(**values, answered_by=None, answered_at=None, answer=None),
            pipeline=journal.pipeline,
            authorization=journal.rt.authorization,
        ),
    )
    raise Suspend(f"waiting for human task {task_id}", waiting_for=task_id)


def collect(journal: Journal, output: type[M], recorded: CallRecord) -> M:
    """A resumed run's call that waited for a person: the answer, or wait again."""
    now = journal.rt.clock.now()
    with journal.transaction() as conn:
        task = task_rows.task_for_call(conn, recorded.id)
        if task is None or task.status != TaskStatus.ANSWERED:
            journal.suspend(conn, now, f"human task {task.id if task else '?'}")
            waiting = task.id if task is not None else None
        else:
            answer = output.model_validate(with_person_confidence(output, task.answer))
            values: dict[str, Any] = {
                "status": CallStatus.SUCCEEDED,
                "output": answer.model_dump(mode="json"),
                "finished_at": now,
                "error": None,
            }
            values["meta"] = answered_meta(recorded, task.answered_by, task.answered_at)
            call_rows.update_call(conn, recorded.id, **values)
            return answer
    raise Suspend(f"waiting for human task {waiting}", waiting_for=waiting)


def answered_meta(recorded: CallRecord, user: str | None, at: datetime | None) -> dict[str, Any]:
    """The call's meta once a person answered: who and when, and no confidence. The answer is
    the person's, so it counts in no confidence figure (mean confidence, the confidence-drop
    rule, the review's "model confidence"); what the model said of its own attempt before the
    human exit stays on the record as `model_confidence`."""
    meta = dict(recorded.meta or {})
    if "confidence" in meta:
        meta["model_confidence"] = meta.pop("confidence")
    meta["confidence"] = None
    meta["answered_by"] = "human"
    meta["answered_by_user"] = user
    meta["answered_at"] = at.isoformat() if at is not None else None
    return meta


# -- the person's end: answer ---------------------------------------------------------------

# Output fields a person is never asked for (the answer form, the CLI's answer template).
NOT_ASKED_OF_PEOPLE = frozenset({"confidence"})
# What a person's answer stands for in an output model's `confidence` field: the form never asks
# a person for one, and the pipeline's code gets a value that passes any bar it sets.
PERSON_CONFIDENCE = 1.0


def with_person_confidence(model: type[BaseModel], answer: Any) -> Any:
    """`answer` with the output model's `confidence` filled in (`PERSON_CONFIDENCE`) when it has
    that field and the person gave none: a person is never asked how sure a model would be."""
    if has_confidence(model) and isinstance(answer, dict) and answer.get("confidence") is None:
        return {**answer, "confidence": PERSON_CONFIDENCE}
    return answer


def load_model(path: str) -> type[BaseModel]:
    module_name, _, qualname = path.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    if not (isinstance(target, type) and issubclass(target, BaseModel)):
        raise TypeError(f"{path} is not a pydantic model")
    return target


def who_may_answer(rt: Runtime, task: Any) -> tuple[list[str], str]:
    """The task's assignees, and the words that name them. A task that lists none is open to
    anyone under the open policy; in production it falls to the people trusted with the run's
    pipeline anyway, its triggerers and the operators, not to whoever can click."""
    assignees = list(task.assignees or [])
    if assignees or rt.authorization.open_by_default:
        return assignees, f"assignees: {', '.join(assignees) or 'anyone'}"
    with rt.db.transaction() as conn:
        run = run_rows.fetch_run(conn, task.run_id)
    pipeline = str(run.pipeline) if run is not None else ""
    trusted = rt.authorization.answerers(assignees, pipeline)
    return trusted, (
        f"it names no assignees, so its pipeline's triggerers and the operators may: "
        f"{', '.join(trusted) or 'nobody'}"
    )


def authorize_answer(rt: Runtime, task: Any, user: str) -> None:
    """Only who may answer the task (`who_may_answer`) does; a refusal is audited and raised.
    Slack also asks before it shows the form."""
    allowed, named = who_may_answer(rt, task)
    if may_act(rt, user, allowed):
        return
    refuse(
        rt,
        NotAnAssignee(
            "{user} " + f"may not answer task {task.id}; {named}" + groups_checked(rt, allowed),
            people={"user": user},
        ),
        actor=user,
        action="answer",
        target=task.id,
        run_id=task.run_id,
        call_id=task.call_id,
    )


def answer(rt: Runtime, task_id: str, *, user: str, answer: Any) -> TaskView:
    with rt.db.transaction() as conn:
        task = task_rows.fetch_task(conn, task_id)
    if task is None:
        raise UnknownTask(f"no human task {task_id}; `gatehouse pending` lists the open ones")
    if task.status != TaskStatus.OPEN:
        raise AlreadyAnswered(f"task {task_id} was already answered by {task.answered_by}")
    authorize_answer(rt, task, user)
    model = load_model(task.output_model)
    try:
        validated = model.model_validate(with_person_confidence(model, answer))
    except ValidationError as exc:
        raise InvalidAnswer(
            f"answer to {task_id} does not fit {model.__name__}: {format_validation_errors(exc)}"
        ) from exc
    answer_json = validated.model_dump(mode="json")
    if isinstance(answer, dict) and answer.get("confidence") is None and has_confidence(model):
        # Kept as the person gave it (the task, its card, the audit): the filler is the run's.
        answer_json.pop("confidence", None)
    now = rt.clock.now()
    with rt.db.transaction() as conn:
        if not task_rows.answer_task(conn, task_id, answer=answer_json, by=user, at=now):
            raise AlreadyAnswered(f"task {task_id} was answered by someone else a moment ago")
        append_audit(
            conn,
            event="task.answered",
            at=now,
            actor=user,
            run_id=task.run_id,
            call_id=task.call_id,
            detail={"task_id": task_id, "answer": answer_json},
        )
        run_rows.requeue_waiting(conn, task.run_id, now=now, detail=f"task {task_id} answered")
        rt.enqueue(conn, "task_answered", task_id, now)
        updated = task_rows.fetch_task(conn, task_id)
        assert updated is not None  # answered in this transaction
        run = run_rows.fetch_run(conn, task.run_id)
    view = TaskView.of(
        updated,
        pipeline=None if run is None else str(run.pipeline),
        authorization=rt.authorization,
    )
    log.info("task.answered", task_id=task_id, user=user)
    rt.notify("task_answered", view)
    return view
