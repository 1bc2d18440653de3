"""`POST /hooks/PIPELINE` served for real over HTTP (uvicorn on loopback, stdlib http.client):
every status code, signatures and bearer tokens, idempotency keys, and runs that wait for a
worker instead of executing on the request path."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.applications import Starlette

import tests.schedule_pipelines  # noqa: F401  (registers the s_ pipelines)
from bot.http.server import BackgroundServer
from bot.http.webhooks import signature, webhook_routes
from pipelines import Gatehouse, Settings
from pipelines.webhooks import accept_delivery
from storage.models import RunStatus

SECRET = "s3cret-for-s_hook"
TOKEN = "tok-for-s_tokened"
MAX_BYTES = 16 * 1024
ORDER = {"order": "A-1", "amount": 12.5}


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


class Hooks:
    """A client for one server: signs bodies with the s_hook secret unless told otherwise."""

    def __init__(self, server: BackgroundServer) -> None:
        self.server = server

    def post(
        self,
        pipeline: str,
        body: bytes | Iterable[bytes],
        *,
        sign: str | None = SECRET,
        headers: dict[str, str] | None = None,
        method: str = "POST",
    ) -> Reply:
        sent = dict(headers or {})
        chunked = not isinstance(body, bytes)
        if sign is not None and isinstance(body, bytes):
            sent.setdefault("X-Gatehouse-Signature", signature(sign, body))
        sent.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=10)
        try:
            conn.request(
                method, f"/hooks/{pipeline}", body=body, headers=sent, encode_chunked=chunked
            )
            response = conn.getresponse()
            raw = response.read()
            return Reply(
                response.status,
                json.loads(raw) if raw.startswith(b"{") else {"raw": raw.decode()},
                {k.lower(): v for k, v in response.getheaders()},
            )
        finally:
            conn.close()

    def post_json(self, pipeline: str, payload: Any, **kwargs: Any) -> Reply:
        return self.post(pipeline, json.dumps(payload).encode(), **kwargs)


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[BackgroundServer, Gatehouse]]:
    """One server for the module (a uvicorn stop costs 0.2 s); each test swaps in its own
    engine runtime, which the route reads per request."""
    settings = Settings(
        database_url="sqlite://",
        webhook_secrets={"s_hook": SECRET, "s_report": "report-secret"},
        webhook_tokens={"s_tokened": TOKEN},
        webhook_max_bytes=MAX_BYTES,
    )
    engine = Gatehouse("sqlite://")
    server = BackgroundServer(Starlette(routes=webhook_routes(engine, settings))).start()
    yield server, engine
    server.stop()
    engine.db.dispose()


@pytest.fixture
def hooks(served: tuple[BackgroundServer, Gatehouse], gatehouse: Gatehouse) -> Hooks:
    server, engine = served
    engine.rt = gatehouse.rt
    return Hooks(server)


def webhook_runs(gatehouse: Gatehouse) -> list[Any]:
    return [r for r in gatehouse.runs(limit=1000) if r.trigger == "webhook"]


# -- 202 ---------------------------------------------------------------------------------------


def test_a_signed_delivery_is_accepted_and_queued_for_a_worker(
    gatehouse: Gatehouse, hooks: Hooks
) -> None:
    reply = hooks.post_json("s_hook", ORDER)

    assert reply.status == 202
    assert reply.body == {"run_id": reply.body["run_id"], "status": "queued"}
    run = gatehouse.run(reply.body["run_id"])
    assert (run.pipeline, run.status, run.input, run.trigger) == (
        "s_hook",
        RunStatus.QUEUED,
        ORDER,
        "webhook",
    )
    assert gatehouse.worker().run_until_idle() == 1
    assert gatehouse.run(run.id).output == {"amount": 12.5}


def test_a_bearer_token_authenticates_instead_of_a_signature(
    gatehouse: Gatehouse, hooks: Hooks
) -> None:
    reply = hooks.post_json(
        "s_tokened", ORDER, sign=None, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert reply.status == 202
    assert gatehouse.run(reply.body["run_id"]).pipeline == "s_tokened"


def test_the_signature_header_is_case_insensitive_in_its_hex(hooks: Hooks) -> None:
    body = json.dumps(ORDER).encode()
    upper = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest().upper()
    reply = hooks.post("s_hook", body, headers={"X-Gatehouse-Signature": upper})
    assert reply.status == 202


# -- 401 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pipeline", "sign", "headers"),
    [
        ("s_hook", None, {}),  # nothing
        ("s_hook", "not-the-secret", {}),  # signed with another key
        ("s_hook", None, {"X-Gatehouse-Signature": "sha256=" + "0" * 64}),
        ("s_hook", None, {"X-Gatehouse-Signature": "deadbeef"}),  # no sha256= prefix
        ("s_hook", None, {"Authorization": f"Bearer {SECRET}"}),  # the secret is not a token
        ("s_report", SECRET, {}),  # another pipeline's secret
        ("s_tokened", None, {"Authorization": "Bearer nope"}),
        ("s_tokened", None, {"Authorization": f"Basic {TOKEN}"}),
        ("s_tokened", TOKEN, {}),  # the token is not an HMAC secret
    ],
)
def test_a_delivery_without_a_valid_signature_or_token_is_401_and_creates_nothing(
    gatehouse: Gatehouse,
    hooks: Hooks,
    pipeline: str,
    sign: str | None,
    headers: dict[str, str],
) -> None:
    reply = hooks.post_json(pipeline, ORDER, sign=sign, headers=headers)
    assert reply.status == 401
    assert "X-Gatehouse-Signature" in reply.body["error"]
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert webhook_runs(gatehouse) == []


def test_a_signature_over_another_body_is_401(gatehouse: Gatehouse, hooks: Hooks) -> None:
    signed = signature(SECRET, json.dumps(ORDER).encode())
    tampered = json.dumps({**ORDER, "amount": 9999}).encode()
    reply = hooks.post("s_hook", tampered, headers={"X-Gatehouse-Signature": signed})
    assert reply.status == 401
    assert webhook_runs(gatehouse) == []


def test_a_webhook_pipeline_with_no_secret_configured_refuses_everything(hooks: Hooks) -> None:
    reply = hooks.post_json("s_unsecured", ORDER, sign="anything")
    assert reply.status == 401
    assert reply.body["error"] == "no webhook secret or token is configured for s_unsecured"


def test_authentication_comes_before_parsing(gatehouse: Gatehouse, hooks: Hooks) -> None:
    reply = hooks.post("s_hook", b"{not json", sign=None)
    assert reply.status == 401
    assert gatehouse.runs() == []


# -- 404 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("pipeline", ["nope", "s_no_hook", "s_hourly"])
def test_an_unknown_pipeline_or_one_without_a_webhook_trigger_is_404(
    hooks: Hooks, pipeline: str
) -> None:
    reply = hooks.post_json(pipeline, ORDER)
    assert reply.status == 404
    assert reply.body == {"error": f"no pipeline {pipeline!r} with a webhook() trigger"}


def test_only_post_is_served(hooks: Hooks) -> None:
    assert hooks.post("s_hook", b"", method="GET").status == 405


# -- 413 ---------------------------------------------------------------------------------------


def test_a_body_over_the_limit_by_content_length_is_413(gatehouse: Gatehouse, hooks: Hooks) -> None:
    big = json.dumps({**ORDER, "note": "x" * MAX_BYTES}).encode()
    reply = hooks.post("s_hook", big)
    assert reply.status == 413
    assert reply.body["error"] == f"the body is over the {MAX_BYTES}-byte limit"
    assert webhook_runs(gatehouse) == []


def test_a_chunked_body_over_the_limit_is_413_without_a_content_length(hooks: Hooks) -> None:
    chunks = [b'{"order": "A-1", "note": "', b"x" * 9000, b"x" * 9000, b'"}']
    reply = hooks.post("s_hook", iter(chunks), sign=None)
    assert reply.status == 413


def test_a_body_exactly_at_the_limit_is_read(hooks: Hooks) -> None:
    payload = {**ORDER, "note": ""}
    padding = MAX_BYTES - len(json.dumps(payload).encode())
    body = json.dumps({**ORDER, "note": "x" * padding}).encode()
    assert len(body) == MAX_BYTES
    assert hooks.post("s_hook", body).status == 202


# -- 400 ---------------------------------------------------------------------------------------


def test_input_the_model_refuses_is_400_with_field_errors_and_recorded(
    gatehouse: Gatehouse, hooks: Hooks
) -> None:
    reply = hooks.post_json("s_hook", {"order": "", "amount": -3})

    assert reply.status == 400
    fields = {e["field"]: e["message"] for e in reply.body["errors"]}
    assert set(fields) == {"order", "amount"}
    assert "greater than 0" in fields["amount"]
    assert reply.body["error"].startswith("invalid input for s_hook: ")
    run = gatehouse.run(reply.body["run_id"])
    assert (run.status, run.input, run.trigger) == (
        RunStatus.INVALID_INPUT,
        {"order": "", "amount": -3},
        "webhook",
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "(body)"),
        (b"", "(body)"),
        (b"\xff\xfe", "(body)"),
        (b'["a", "list"]', "(body)"),
        (b'"a string"', "(body)"),
        (b'{"order": "A-1"}', "amount"),
        (b'{"order": "A-1", "amount": NaN}', "(body)"),
        (b'{"order": "A-1", "amount": Infinity}', "(body)"),
        (b'{"order": "A\\u0000", "amount": 1}', "(body)"),  # jsonb refuses NUL
        (b'{"order": "A", "amount": 1, "x": [' + b"[" * 3000 + b"]" * 3000 + b"]}", "(body)"),
        (b'{"order": "A", "amount": 1' + b"9" * 5000 + b"}", "(body)"),  # int digit limit
    ],
)
def test_bad_bodies_are_400_never_500(hooks: Hooks, body: bytes, field: str) -> None:
    reply = hooks.post("s_hook", body)
    assert reply.status == 400
    assert [e["field"] for e in reply.body["errors"]] == [field]


def test_an_empty_idempotency_key_is_400(hooks: Hooks) -> None:
    reply = hooks.post_json("s_hook", ORDER, headers={"Idempotency-Key": "  "})
    assert reply.status == 400


# -- idempotency and 409 -------------------------------------------------------------------------


def test_a_retry_with_the_same_key_and_body_gets_the_same_run(
    gatehouse: Gatehouse, hooks: Hooks
) -> None:
    key = {"Idempotency-Key": "delivery-1"}
    first = hooks.post_json("s_hook", ORDER, headers=key)
    retry = hooks.post_json("s_hook", ORDER, headers=key)

    assert (first.status, retry.status) == (202, 202)
    assert retry.body == {"run_id": first.body["run_id"], "status": "queued", "duplicate": True}
    assert [r.id for r in webhook_runs(gatehouse)] == [first.body["run_id"]]


def test_the_same_key_with_another_body_is_409(gatehouse: Gatehouse, hooks: Hooks) -> None:
    key = {"Idempotency-Key": "delivery-2"}
    first = hooks.post_json("s_hook", ORDER, headers=key)
    other = hooks.post_json("s_hook", {**ORDER, "amount": 99}, headers=key)

    assert (first.status, other.status) == (202, 409)
    assert "already used for s_hook with a different body" in other.body["error"]
    assert len(webhook_runs(gatehouse)) == 1


def test_keys_are_per_pipeline_and_new_keys_make_new_runs(
    gatehouse: Gatehouse, hooks: Hooks
) -> None:
    a = hooks.post_json("s_hook", ORDER, headers={"Idempotency-Key": "k"})
    b = hooks.post_json(
        "s_tokened",
        ORDER,
        sign=None,
        headers={"Idempotency-Key": "k", "Authorization": f"Bearer {TOKEN}"},
    )
    c = hooks.post_json("s_hook", ORDER, headers={"Idempotency-Key": "k2"})
    d = hooks.post_json("s_hook", ORDER)  # no key: every delivery is new
    e = hooks.post_json("s_hook", ORDER)
    run_ids = {r.body["run_id"] for r in (a, b, c, d, e)}
    assert len(run_ids) == 5
    assert len(webhook_runs(gatehouse)) == 5


def test_an_invalid_body_does_not_use_up_its_key(gatehouse: Gatehouse, hooks: Hooks) -> None:
    key = {"Idempotency-Key": "fix-and-retry"}
    assert hooks.post_json("s_hook", {"order": "A-1"}, headers=key).status == 400
    assert hooks.post_json("s_hook", ORDER, headers=key).status == 202


def test_concurrent_retries_of_one_delivery_create_one_run(
    gatehouse: Gatehouse, hooks: Hooks
) -> None:
    key = {"Idempotency-Key": "burst"}
    replies: list[Reply] = []
    lock = threading.Lock()
    go = threading.Barrier(8)

    def send() -> None:
        go.wait()
        reply = hooks.post_json("s_hook", ORDER, headers=key)
        with lock:
            replies.append(reply)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert [r.status for r in replies] == [202] * 8
    assert len({r.body["run_id"] for r in replies}) == 1
    assert sum(1 for r in replies if "duplicate" not in r.body) == 1
    assert len(webhook_runs(gatehouse)) == 1


def test_accept_delivery_refuses_a_pipeline_without_a_webhook_trigger(
    gatehouse: Gatehouse,
) -> None:
    from pipelines.errors import UnknownPipeline

    with pytest.raises(UnknownPipeline, match="has no webhook"):
        accept_delivery(gatehouse.rt, "s_no_hook", ORDER, body_sha256="0" * 64)


def test_delivery_keys_behave_the_same_on_both_databases(any_db_url: str) -> None:
    gh = Gatehouse(any_db_url)
    try:
        sha = hashlib.sha256(b"one").hexdigest()
        first = accept_delivery(gh.rt, "s_hook", ORDER, body_sha256=sha, idempotency_key="k")
        again = accept_delivery(gh.rt, "s_hook", ORDER, body_sha256=sha, idempotency_key="k")
        other = accept_delivery(gh.rt, "s_hook", ORDER, body_sha256="0" * 64, idempotency_key="k")
        invalid = accept_delivery(gh.rt, "s_hook", {"order": "A"}, body_sha256=sha)
        assert (first.outcome, again.outcome, other.outcome) == ("queued", "duplicate", "conflict")
        assert again.run_id == first.run_id
        assert invalid.outcome == "invalid" and [e.field for e in invalid.errors] == ["amount"]
        statuses = sorted(str(r.status) for r in webhook_runs(gh))
        assert statuses == ["invalid_input", "queued"]
    finally:
        gh.db.dispose()


def test_bodies_postgresql_would_refuse_are_400_on_both_databases(
    any_db_url: str, served: tuple[BackgroundServer, Gatehouse]
) -> None:
    server, engine = served
    gh = Gatehouse(any_db_url)
    engine.rt = gh.rt
    try:
        hooks = Hooks(server)
        for body in (
            b'{"order": "A\\u0000", "amount": 1}',
            b'{"order": "A", "amount": NaN}',
            b'{"order": "A", "amount": -Infinity}',
            b'{"order": "A", "amount": 1, "\\u0000": 1}',
        ):
            assert hooks.post("s_hook", body).status == 400, body
        assert webhook_runs(gh) == []
        assert hooks.post_json("s_hook", {"order": "Ä ✓", "amount": 1e308}).status == 202
    finally:
        gh.db.dispose()
