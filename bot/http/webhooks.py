"""`POST /hooks/PIPELINE`: webhook deliveries over HTTP, on the bot's Starlette server.

Checks in order, each with its own status: 404 (no such pipeline, or no `webhook()` trigger),
413 (Content-Length or the body itself over GATEHOUSE_WEBHOOK_MAX_BYTES), 401 (neither
`X-Gatehouse-Signature: sha256=<hex HMAC-SHA256 of the raw body>` with the pipeline's secret nor
`Authorization: Bearer <token>` matches), 400 (not JSON, or input the pipeline's model refuses:
field errors, recorded as an `invalid_input` run), 409 (Idempotency-Key reused with another
body). Otherwise 202 `{"run_id": …, "status": "queued"}`: the run waits for a worker.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from pipelines import Gatehouse, Settings
from pipelines.errors import UnknownPipeline
from pipelines.webhooks import Delivery, accept_delivery, webhook_pipeline, webhook_pipelines

log = structlog.get_logger()

SIGNATURE_HEADER = "X-Gatehouse-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 300  # webhook_deliveries.idempotency_key


def signature(secret: str, body: bytes) -> str:
    """The X-Gatehouse-Signature value a sender computes for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _problem(status: int, message: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="gatehouse"'} if status == 401 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _authenticated(request: Request, body: bytes, secret: str | None, token: str | None) -> bool:
    sent_signature = request.headers.get(SIGNATURE_HEADER, "")
    if secret and sent_signature:
        expected = signature(secret, body).encode()
        if hmac.compare_digest(expected, sent_signature.strip().lower().encode()):
            return True
    scheme, _, sent_token = request.headers.get("Authorization", "").partition(" ")
    return bool(
        token
        and scheme.lower() == "bearer"
        and hmac.compare_digest(token.encode(), sent_token.strip().encode())
    )


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


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it passes `limit` bytes (whatever Content-Length said)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def webhook_routes(gatehouse: Gatehouse, settings: Settings) -> list[Route]:
    """The webhook route, to mount on the bot's Starlette app beside `/slack/events`."""
    limit = settings.webhook_max_bytes
    for name in webhook_pipelines():
        if name not in settings.webhook_secrets and name not in settings.webhook_tokens:
            log.warning(
                "webhook.no_credentials",
                pipeline=name,
                fix="set GATEHOUSE_WEBHOOK_SECRETS or GATEHOUSE_WEBHOOK_TOKENS for it",
            )

    async def receive(request: Request) -> JSONResponse:
        name = request.path_params["pipeline"]
        try:
            webhook_pipeline(name)
        except UnknownPipeline:
            # Not the engine's message: it lists every pipeline to an unauthenticated caller.
            return _problem(404, f"no pipeline {name!r} with a webhook() trigger")
        length = request.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            return _problem(413, f"the body is over the {limit}-byte limit")
        body = await _read_body(request, limit)
        if body is None:
            return _problem(413, f"the body is over the {limit}-byte limit")
        secret = settings.webhook_secrets.get(name)
        token = settings.webhook_tokens.get(name)
        if not _authenticated(request, body, secret, token):
            log.info("webhook.unauthorized", pipeline=name)
            if not secret and not token:
                return _problem(401, f"no webhook secret or token is configured for {name}")
            return _problem(
                401,
                f"missing or wrong {SIGNATURE_HEADER} (sha256=<hex HMAC-SHA256 of the body>) "
                "or Authorization: Bearer token",
            )
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
            accept_delivery,
            gatehouse.rt,
            name,
            payload,
            body_sha256=hashlib.sha256(body).hexdigest(),
            idempotency_key=key.strip() if key is not None else None,
        )
        return _answer(delivery)

    return [Route("/hooks/{pipeline}", receive, methods=["POST"])]


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
    body: dict[str, Any] = {"run_id": delivery.run_id, "status": "queued"}
    if delivery.outcome == "duplicate":
        body["duplicate"] = True
    return JSONResponse(body, status_code=202)
