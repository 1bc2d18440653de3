"""Webhook deliveries: the engine side of `webhook()` triggers (the HTTP route is in the bot).

A delivery's JSON body is validated by the pipeline's input model; valid input becomes a run
queued for a worker (never executed on the request path), invalid input an `invalid_input` run
like any trigger's. A signed delivery is accepted once: its signature goes through the
pipeline's `ReplayGuard` first, so a captured delivery sent again makes no run whatever else it
carries. With an Idempotency-Key, the key is claimed in the run's transaction: a retry with the
same body gets the same run, the same key with a different body is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import structlog
from pydantic import ValidationError

from pipelines import pauses, runner, tracing
from pipelines.errors import UnknownPipeline
from pipelines.pipeline import Pipeline, get_pipeline, registered_pipelines
from pipelines.replays import ReplayGuard
from pipelines.runtime import Runtime
from pipelines.triggers import Webhook
from pipelines.validation import field_messages
from storage import runs as run_rows
from storage import webhooks as delivery_rows
from storage.ids import new_id
from storage.models import RunStatus

log = structlog.get_logger()

WEBHOOK_SOURCE = "webhook"
DeliveryOutcome = Literal["queued", "duplicate", "replayed", "invalid", "conflict", "paused"]


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


@dataclass(frozen=True)
class Delivery:
    """What became of a delivery. `duplicate`: this key and body were seen, `run_id` is the
    first delivery's run; `replayed`: this signature was seen, nothing was done (`run_id` is
    known only when the delivery's Idempotency-Key names the first one's run: the replay guard
    keeps a hash of the signature, not the run); `conflict`: this key came with another body
    before; `paused`: the pipeline is paused and nothing was recorded (the sender retries)."""

    outcome: DeliveryOutcome
    run_id: str | None = None
    message: str = ""
    errors: list[FieldError] = field(default_factory=list)


@dataclass(frozen=True)
class SignedDelivery:
    """A delivery authenticated by a signature: what the replay guard is asked about."""

    guard: ReplayGuard
    signature: str
    signed_at: datetime


def replay_guard(rt: Runtime, name: str) -> ReplayGuard:
    """The guard for pipeline `name`'s signatures (one per pipeline: a signature is only valid
    for the pipeline whose secret made it)."""
    return ReplayGuard(rt, f"webhook:{name}")


def webhook_pipelines() -> dict[str, Pipeline]:
    """The registered pipelines that declare a `webhook()` trigger."""
    return {
        name: p
        for name, p in registered_pipelines().items()
        if any(isinstance(t, Webhook) for t in p.triggers)
    }


def webhook_pipeline(name: str) -> Pipeline:
    """The pipeline behind `POST /hooks/NAME`; UnknownPipeline when it has no webhook trigger."""
    pipeline = get_pipeline(name)
    if not any(isinstance(t, Webhook) for t in pipeline.triggers):
        raise UnknownPipeline(f"pipeline {name!r} has no webhook() trigger")
    return pipeline


def field_errors(exc: ValidationError) -> list[FieldError]:
    return [
        FieldError(location, message) for location, message in field_messages(exc, whole="(body)")
    ]


def accept_delivery(
    rt: Runtime,
    name: str,
    payload: Any,
    *,
    body_sha256: str,
    idempotency_key: str | None = None,
    signed: SignedDelivery | None = None,
) -> Delivery:
    """Queue a run of pipeline `name` for this delivery (or find the one a retry refers to).

    The signature is recorded before the run is made, in its own transaction: two replicas
    handed one replay make one run. A delivery whose run then could not be written (the
    database failed) cannot be sent again as it was: the sender signs it again with the current
    time, as it would for any retry, and an Idempotency-Key makes that retry safe."""
    pipeline = webhook_pipeline(name)
    # Before the replay guard and the key: a refused delivery leaves no trace, so the sender's
    # retry (the same bytes, or the same key) is accepted once the pipeline is resumed.
    if (pause := pauses.pipeline_pause(rt, name)) is not None:
        return _paused(name, pauses.PipelinePaused("", pause))
    if signed is not None and not signed.guard.first_time(signed.signature, signed.signed_at):
        return _replayed(rt, name, idempotency_key, body_sha256)
    if idempotency_key is not None:
        seen = _seen(rt, name, idempotency_key, body_sha256)
        if seen is not None:
            return seen
    try:
        model = pipeline.input_model.model_validate(payload)
    except ValidationError as exc:
        try:
            run = runner.trigger(rt, name, payload, source=WEBHOOK_SOURCE, run_here=False)
        except pauses.PipelinePaused as paused:  # paused since the look above
            return _paused(name, paused)
        return Delivery("invalid", run.id, run.error or "invalid input", field_errors(exc))
    if idempotency_key is None:
        try:
            run = runner.trigger(rt, name, model, source=WEBHOOK_SOURCE, run_here=False)
        except pauses.PipelinePaused as paused:
            return _paused(name, paused)
        log.info("webhook.accepted", pipeline=name, run_id=run.id)
        return Delivery("queued", run.id)

    run_id = new_id("run")
    now = rt.clock.now()
    with rt.db.transaction() as conn:
        claimed = delivery_rows.claim_delivery(
            conn,
            pipeline=name,
            idempotency_key=idempotency_key,
            body_sha256=body_sha256,
            run_id=run_id,
            now=now,
        )
        if claimed:
            run_rows.insert_run(
                conn,
                run_id=run_id,
                pipeline=name,
                status=RunStatus.QUEUED,
                input=model.model_dump(mode="json"),
                now=now,
                trigger=WEBHOOK_SOURCE,
                detail=tracing.trigger_detail(),
            )
    if not claimed:  # a concurrent retry claimed the key between our look and our insert
        seen = _seen(rt, name, idempotency_key, body_sha256)
        assert seen is not None, "a delivery key that could not be claimed must exist"
        return seen
    log.info("webhook.accepted", pipeline=name, run_id=run_id, idempotency_key=idempotency_key)
    return Delivery("queued", run_id)


def _paused(name: str, paused: pauses.PipelinePaused) -> Delivery:
    """503: a paused pipeline records nothing of the delivery (the sender retries it)."""
    pause = paused.pause
    log.info("webhook.paused", pipeline=name, paused_by=pause.by if pause else None)
    what = "this delivery was not recorded as a run; send it again after the resume"
    if pause is None:  # resumed as the refusal was read: the sender's retry is taken
        return Delivery("paused", None, f"{name} was paused; {what}")
    return Delivery("paused", None, pauses.refusal_message(pause, what))


def _replayed(rt: Runtime, name: str, key: str | None, body_sha256: str) -> Delivery:
    seen = None if key is None else _seen(rt, name, key, body_sha256)
    run_id = seen.run_id if seen is not None and seen.outcome == "duplicate" else None
    log.info("webhook.replayed", pipeline=name, run_id=run_id)
    return Delivery(
        "replayed",
        run_id,
        "this signed delivery was received before and is ignored; sign a new delivery "
        "with the current time",
    )


def _seen(rt: Runtime, name: str, key: str, body_sha256: str) -> Delivery | None:
    with rt.db.transaction() as conn:
        row = delivery_rows.find_delivery(conn, name, key)
    if row is None:
        return None
    if row.body_sha256 != body_sha256:
        log.info("webhook.key_conflict", pipeline=name, idempotency_key=key)
        return Delivery(
            "conflict",
            row.run_id,
            f"Idempotency-Key {key!r} was already used for {name} with a different body "
            f"(run {row.run_id}); use a new key for a new delivery",
        )
    log.info("webhook.duplicate", pipeline=name, run_id=row.run_id, idempotency_key=key)
    return Delivery("duplicate", row.run_id)
