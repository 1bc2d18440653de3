"""`POST /hooks/PIPELINE`: webhook deliveries over HTTP, on the bot's Starlette server.

Checks in order, each with its own status: 413 (Content-Length or the body itself over
GATEHOUSE_WEBHOOK_MAX_BYTES, for every path alike), 401 (no valid signature or token: see
`bot.http.webhook_signatures`; an unknown pipeline, one without a `webhook()` trigger and one
without credentials get the same 401 as a wrong signature, so the pipelines cannot be listed),
400 (not JSON, or input the pipeline's model refuses: field errors, recorded as an
`invalid_input` run), 200 `{"duplicate": true}` (this signature was accepted before: nothing
is done), 409 (Idempotency-Key reused with another body). Otherwise 202
`{"run_id": …, "status": "queued"}`: the run waits for a worker.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bot.http.limits import read_capped_body
from bot.http.webhook_signatures import Authenticated, Refused, authenticate, sign_delivery
from pipelines import Gatehouse, Settings, tracing
from pipelines.errors import UnknownPipeline
from pipelines.replays import ReplayGuard
from pipelines.webhooks import (
    Delivery,
    SignedDelivery,
    accept_delivery,
    replay_guard,
    webhook_pipeline,
    webhook_pipelines,
)

__all__ = ["sign_delivery", "webhook_routes"]

log = structlog.get_logger()

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 300  # webhook_deliveries.idempotency_key
MAX_LOGGED_NAME = 100  # the path's pipeline name is the caller's text


def _problem(status: int, message: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="gatehouse"'} if status == 401 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _is_webhook_pipeline(name: str) -> bool:
    try:
        webhook_pipeline(name)
    except UnknownPipeline:
        return False
    return True


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse(body: bytes) -> Any:
    """The JSON body; ValueError for anything the database or the model should never see:
    not JSON, NaN/Infinity, nesting too deep for the parser, NUL characters in strings (which
    PostgreSQL's jsonb refuses)."""
    try:
        payload = json.loads(body, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    pending = [payload]
    while pending:
        value = pending.pop()
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("strings may not contain NUL (\\u0000)")
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return payload


def webhook_routes(
    gatehouse: Gatehouse, settings: Settings, *, warn_unconfigured: bool = True
) -> list[Route]:
    """The webhook route, to mount on the bot's Starlette app beside `/slack/events`. A webhook
    pipeline with no credentials refuses every request; that is a warning (`warn_unconfigured`)
    or, where nobody asked for it (the sandbox, the demo), an info line."""
    limit = settings.webhook_max_bytes
    note = log.warning if warn_unconfigured else log.info
    for name in webhook_pipelines():
        if not (settings.webhook_secrets.get(name) or settings.webhook_tokens.get(name)):
            note(
                "webhook.no_credentials",
                pipeline=name,
                fix="set GATEHOUSE_WEBHOOK_SECRETS or GATEHOUSE_WEBHOOK_TOKENS for it",
            )

    guards: dict[str, ReplayGuard] = {}

    def guard_for(name: str) -> ReplayGuard:
        # Per pipeline, and anew when the engine's runtime is swapped (tests do).
        guard = guards.get(name)
        if guard is None or guard.rt is not gatehouse.rt:
            guard = guards[name] = replay_guard(gatehouse.rt, name)
        return guard

    async def receive(request: Request) -> JSONResponse:
        name = request.path_params["pipeline"]
        body = await read_capped_body(request, limit)
        if body is None:
            return _problem(413, f"the body is over the {limit}-byte limit")
        known = _is_webhook_pipeline(name)
        secret = settings.webhook_secrets.get(name) if known else None
        token = settings.webhook_tokens.get(name) if known else None
        verdict = authenticate(
            request.headers, body, secret=secret, token=token, now=gatehouse.rt.clock.now()
        )
        if isinstance(verdict, Refused):
            reason = verdict.reason
            if not known:
                reason = "not_a_webhook_pipeline"
            elif not (secret or token):
                reason = "no_credentials_configured"
            log.info("webhook.unauthorized", pipeline=name[:MAX_LOGGED_NAME], reason=reason)
            return _problem(401, verdict.message)
        try:
            payload = _parse(body)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            return _problem(
                400,
                f"the body is not JSON: {exc}",
                errors=[{"field": "(body)", "message": str(exc)}],
            )
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None and not (0 < len(key.strip()) <= MAX_KEY_LENGTH):
            return _problem(400, f"{IDEMPOTENCY_HEADER} must be 1 to {MAX_KEY_LENGTH} characters")
        delivery = await run_in_threadpool(
            _accept_traced,
            request.headers,
            gatehouse.rt,
            name,
            payload,
            body_sha256=hashlib.sha256(body).hexdigest(),
            idempotency_key=key.strip() if key is not None else None,
            signed=_signed(verdict, guard_for(name)),
        )
        return _answer(delivery)

    return [Route("/hooks/{pipeline}", receive, methods=["POST"])]


def _accept_traced(headers: Mapping[str, str], *args: Any, **kwargs: Any) -> Delivery:
    """A delivery whose `traceparent` (tracing on) becomes its run's parent."""
    with tracing.incoming(headers):
        return accept_delivery(*args, **kwargs)


def _signed(verdict: Authenticated, guard: ReplayGuard) -> SignedDelivery | None:
    if verdict.signature is None or verdict.signed_at is None:
        return None  # a bearer token: nothing to tell a replay by
    return SignedDelivery(guard, verdict.signature, verdict.signed_at)


def _answer(delivery: Delivery) -> JSONResponse:
    if delivery.outcome == "invalid":
        return _problem(
            400,
            delivery.message,
            errors=[e.to_json() for e in delivery.errors],
            run_id=delivery.run_id,
        )
    if delivery.outcome == "conflict":
        return _problem(409, delivery.message)
    if delivery.outcome == "paused":
        return _problem(503, delivery.message, paused=True, recorded=False)
    if delivery.outcome == "replayed":
        replayed: dict[str, Any] = {"duplicate": True, "message": delivery.message}
        if delivery.run_id is not None:
            replayed["run_id"] = delivery.run_id
        return JSONResponse(replayed, status_code=200)
    body: dict[str, Any] = {"run_id": delivery.run_id, "status": "queued"}
    if delivery.outcome == "duplicate":
        body["duplicate"] = True
    return JSONResponse(body, status_code=202)
