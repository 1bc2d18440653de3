"""Human tasks: answering one, validated by the same model the pipeline asked with."""

from __future__ import annotations

import importlib
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

from pipelines.authorization import may_act, refuse
from pipelines.errors import AlreadyAnswered, InvalidAnswer, NotAnAssignee, UnknownTask
from pipelines.runtime import Runtime
from pipelines.validation import format_validation_errors
from pipelines.views import TaskView
from storage import approvals as task_rows
from storage import runs as run_rows
from storage.audit import append_audit
from storage.models import RunStatus, TaskStatus

log = structlog.get_logger()


def load_model(path: str) -> type[BaseModel]:
    module_name, _, qualname = path.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    if not (isinstance(target, type) and issubclass(target, BaseModel)):
        raise TypeError(f"{path} is not a pydantic model")
    return target


def authorize_answer(rt: Runtime, task: Any, user: str) -> None:
    """Only the task's assignees may answer it (anyone when it lists none); a refusal is
    audited and raised. Slack also asks before it shows the form."""
    assignees = list(task.assignees or [])
    if may_act(rt, user, assignees):
        return
    refuse(
        rt,
        NotAnAssignee(f"{user} may not answer task {task.id}; assignees: {', '.join(assignees)}"),
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
        validated = model.model_validate(answer)
    except ValidationError as exc:
        raise InvalidAnswer(
            f"answer to {task_id} does not fit {model.__name__}: {format_validation_errors(exc)}"
        ) from exc
    answer_json = validated.model_dump(mode="json")
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
        run_rows.transition(
            conn,
            task.run_id,
            from_statuses=[RunStatus.WAITING],
            to_status=RunStatus.QUEUED,
            now=now,
            detail=f"task {task_id} answered",
            wake_at=None,
        )
        rt.enqueue(conn, "task_answered", task_id, now)
        updated = task_rows.fetch_task(conn, task_id)
        run = run_rows.fetch_run(conn, task.run_id)
    view = TaskView.of(updated, pipeline=None if run is None else str(run.pipeline))
    log.info("task.answered", task_id=task_id, user=user)
    rt.notify("task_answered", view)
    return view
