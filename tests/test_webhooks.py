"""`POST /hooks/PIPELINE` served for real over HTTP (uvicorn on loopback, stdlib http.client):
every status code, timestamped signatures and bearer tokens, replays, idempotency keys, and runs
that wait for a worker instead of executing on the request path."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

import tests.schedule_pipelines  # noqa: F401  (registers the s_ pipelines)
from bot.http.server import BackgroundServer
from bot.http.webhooks import sign_delivery, webhook_routes
from pipelines import Gatehouse, Settings
from pipelines.ports import Clock
from pipelines.webhooks import accept_delivery
from storage.models import RunStatus
from tests.fakes.clock import FakeClock

SECRET = "s3cret-for-s_hook"
TOKEN = "tok-for-s_tokened"
README_SECRET = "the-readme's-secret"
MAX_BYTES = 16 * 1024
ORDER = {"order": "A-1", "amount": 12.5}


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


class Hooks:
    """A client for one server: signs bodies with the s_hook secret unless told otherwise, each
    delivery at its own second of the engine's clock (a sender signs every delivery anew; two
    deliveries signed at the same second with the same body are one delivery sent twice)."""

    def __init__(self, server: BackgroundServer, clock: Clock) -> None:
        self.server = server
        self.clock = clock
        self.sent = 0
        self.lock = threading.Lock()

    def now(self) -> int:
        return int(self.clock.now().timestamp())

    def signed(self, body: bytes, secret: str = SECRET, *, at: int | None = None) -> dict[str, str]:
        """The headers of a fresh delivery of `body` (seconds in the past, all within the
        window), or of one signed `at` a given time."""
        if at is None:
            with self.lock:
                self.sent += 1
                at = self.now() - self.sent % 250
        return sign_delivery(secret, body, at)

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
            sent = {**self.signed(body, sign), **sent}
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
        # s_no_hook has a secret but no webhook() trigger: its path must not be told apart.
        webhook_secrets={
            "s_hook": SECRET,
            "s_report": "report-secret",
            "s_no_hook": SECRET,
            "refund_request": README_SECRET,
            "s_unsecured": "",  # empty: as good as unset
        },
        webhook_tokens={"s_tokened": TOKEN, "s_unsecured": ""},
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
    return Hooks(server, gatehouse.rt.clock)


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
    headers = hooks.signed(body)
    headers["X-Gatehouse-Signature"] = headers["X-Gatehouse-Signature"].upper()
    reply = hooks.post("s_hook", body, sign=None, headers=headers)
    assert reply.status == 202


def test_several_v1_signatures_are_tried_in_turn_for_secret_rotation(
    gatehouse: Gatehouse, hooks: Hooks
) -> None:
    body = json.dumps(ORDER).encode()
    at = hooks.now() - 1
    old = sign_delivery("the-previous-secret", body, at)["X-Gatehouse-Signature"]
    new = sign_delivery(SECRET, body, at)["X-Gatehouse-Signature"]
    headers = {"X-Gatehouse-Timestamp": str(at), "X-Gatehouse-Signature": f"{old}, {new}"}
    first = hooks.post("s_hook", body, sign=None, headers=headers)
    # The same delivery with the matching value alone, or with junk added, is still a replay.
    alone = hooks.post("s_hook", body, sign=None, headers={**headers, "X-Gatehouse-Signature": new})
    padded = {**headers, "X-Gatehouse-Signature": f"{new},v1={'0' * 64},v2=x"}
    junk = hooks.post("s_hook", body, sign=None, headers=padded)

    assert (first.status, alone.status, junk.status) == (202, 200, 200)
    assert alone.body["duplicate"] is True and junk.body["duplicate"] is True
    assert len(webhook_runs(gatehouse)) == 1


def test_a_signature_is_valid_up_to_300_seconds_either_side_of_the_clock(hooks: Hooks) -> None:
    for skew, amount in ((-300, 1), (300, 2)):
        body = json.dumps({**ORDER, "amount": amount}).encode()
        headers = hooks.signed(body, at=hooks.now() + skew)
        assert hooks.post("s_hook", body, sign=None, headers=headers).status == 202, skew


@pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("openssl")), reason="needs curl and openssl"
)
def test_the_readme_sender_example_in_curl_and_openssl_is_accepted(
    sqlite_url: str, served: tuple[BackgroundServer, Gatehouse]
) -> None:
    """The README's shell recipe, run as written (real time: `date +%s`) against the server."""
    server, engine = served
    gh = Gatehouse(sqlite_url)
    engine.rt = gh.rt
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    [script] = [b for b in re.findall(r"```sh\n(.*?)```", readme, re.S) if "openssl dgst" in b]
    script = script.replace("localhost:3000", f"{server.host}:{server.port}")
    try:
        sent = subprocess.run(
            ["bash", "-c", script.replace("curl ", "curl -s ")],
            env={"SECRET": README_SECRET, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        answer = json.loads(sent.stdout)
        assert answer["status"] == "queued", sent.stdout
        assert [r.id for r in webhook_runs(gh)] == [answer["run_id"]]
    finally:
        gh.db.dispose()


# -- replays -------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["none", "same", "fresh"])
def test_a_captured_signed_delivery_sent_again_makes_one_run_on_both_databases(
    any_db_url: str, served: tuple[BackgroundServer, Gatehouse], key: str
) -> None:
    server, engine = served
    clock = FakeClock()
    gh = Gatehouse(any_db_url, clock=clock)
    engine.rt = gh.rt
    try:
        hooks = Hooks(server, clock)
        body = json.dumps(ORDER).encode()
        captured = {**hooks.signed(body), "Idempotency-Key": "refund-A-1"}
        first = hooks.post("s_hook", body, sign=None, headers=captured)
        replies = []
        for n in range(8):
            clock.advance(10)  # still within the signature's window
            again = dict(captured)
            if key == "none":
                del again["Idempotency-Key"]
            elif key == "fresh":
                again["Idempotency-Key"] = f"attacker-{n}"
            replies.append(hooks.post("s_hook", body, sign=None, headers=again))

        assert first.status == 202
        assert {r.status for r in replies} == {200}
        assert all(r.body["duplicate"] is True for r in replies)
        # The run is named only when the replay's key leads to it; never a new one.
        expected_run = first.body["run_id"] if key == "same" else None
        assert {r.body.get("run_id") for r in replies} == {expected_run}
        assert [r.id for r in webhook_runs(gh)] == [first.body["run_id"]]
        assert gh.worker().run_until_idle() == 1
    finally:
        gh.db.dispose()


def test_concurrent_replays_of_one_signed_delivery_make_one_run_on_both_databases(
    any_db_url: str, served: tuple[BackgroundServer, Gatehouse]
) -> None:
    server, engine = served
    gh = Gatehouse(any_db_url, clock=FakeClock())
    engine.rt = gh.rt
    hooks = Hooks(server, gh.rt.clock)
    body = json.dumps(ORDER).encode()
    captured = hooks.signed(body)
    replies: list[Reply] = []
    lock = threading.Lock()
    go = threading.Barrier(8)

    def send(n: int) -> None:
        go.wait()
        reply = hooks.post(
            "s_hook", body, sign=None, headers={**captured, "Idempotency-Key": f"k{n}"}
        )
        with lock:
            replies.append(reply)

    try:
        threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)

        assert sorted(r.status for r in replies) == [200] * 7 + [202]
        assert len(webhook_runs(gh)) == 1
    finally:
        gh.db.dispose()


def test_a_replay_after_the_window_is_401_too_old(gatehouse: Gatehouse, hooks: Hooks) -> None:
    body = json.dumps(ORDER).encode()
    captured = hooks.signed(body, at=hooks.now())
    assert hooks.post("s_hook", body, sign=None, headers=captured).status == 202
    assert isinstance(gatehouse.rt.clock, FakeClock)
    gatehouse.rt.clock.advance(301)
    late = hooks.post("s_hook", body, sign=None, headers=captured)
    assert late.status == 401
    assert late.body["error"].startswith("X-Gatehouse-Timestamp is 301 s old")
    assert len(webhook_runs(gatehouse)) == 1


def test_a_bearer_token_delivery_has_no_replay_protection_but_its_key_does(
    gatehouse: Gatehouse, hooks: Hooks
) -> None:
    """What the README says of tokens: a captured request is a new delivery each time it is
    sent, unless the sender gave it an Idempotency-Key."""
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    replies = [hooks.post_json("s_tokened", ORDER, sign=None, headers=bearer) for _ in range(2)]
    keyed = {**bearer, "Idempotency-Key": "once"}
    keyed_replies = [
        hooks.post_json("s_tokened", ORDER, sign=None, headers=keyed) for _ in range(2)
    ]
    assert [r.status for r in replies + keyed_replies] == [202] * 4
    assert len(webhook_runs(gatehouse)) == 3


# -- 401 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pipeline", "sign", "headers"),
    [
        ("s_hook", None, {}),  # nothing
        ("s_hook", "not-the-secret", {}),  # signed with another key
        ("s_hook", None, {"X-Gatehouse-Signature": "sha256=" + "0" * 64}),
        ("s_hook", None, {"X-Gatehouse-Signature": "deadbeef"}),  # no scheme
        ("s_hook", None, {"X-Gatehouse-Signature": "v1=" + "0" * 64}),  # no timestamp
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
    assert "X-Gatehouse-Timestamp" in reply.body["error"]
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert webhook_runs(gatehouse) == []


def test_a_signature_over_another_body_is_401(gatehouse: Gatehouse, hooks: Hooks) -> None:
    signed = hooks.signed(json.dumps(ORDER).encode())
    tampered = json.dumps({**ORDER, "amount": 9999}).encode()
    reply = hooks.post("s_hook", tampered, sign=None, headers=signed)
    assert reply.status == 401
    assert webhook_runs(gatehouse) == []


def test_a_signature_with_another_timestamp_is_401(gatehouse: Gatehouse, hooks: Hooks) -> None:
    body = json.dumps(ORDER).encode()
    signed = hooks.signed(body)
    signed["X-Gatehouse-Timestamp"] = str(int(signed["X-Gatehouse-Timestamp"]) + 1)
    assert hooks.post("s_hook", body, sign=None, headers=signed).status == 401
    assert webhook_runs(gatehouse) == []


@pytest.mark.parametrize(
    ("skew", "says"),
    [
        (-301, "X-Gatehouse-Timestamp is 301 s old, over the 300 s allowed: sign each delivery"),
        (-86400, "X-Gatehouse-Timestamp is 86400 s old"),
        (301, "X-Gatehouse-Timestamp is 301 s in the future, over the 300 s allowed"),
        (10**9, "s in the future"),
    ],
)
def test_a_correctly_signed_delivery_outside_the_window_is_401_saying_which(
    gatehouse: Gatehouse, hooks: Hooks, skew: int, says: str
) -> None:
    body = json.dumps(ORDER).encode()
    reply = hooks.post("s_hook", body, sign=None, headers=hooks.signed(body, at=hooks.now() + skew))
    assert reply.status == 401
    assert says in reply.body["error"]
    assert webhook_runs(gatehouse) == []


def test_a_timestamp_past_the_year_9999_is_401_in_the_future_not_500(hooks: Hooks) -> None:
    body = json.dumps(ORDER).encode()
    reply = hooks.post("s_hook", body, sign=None, headers=hooks.signed(body, at=10**12 - 1))
    assert reply.status == 401
    assert "s in the future" in reply.body["error"]


@pytest.mark.parametrize("stamp", ["", "soon", "-5", "1.5", "17\u00b2", "9" * 13])
def test_a_v1_signature_without_a_usable_timestamp_is_401(
    gatehouse: Gatehouse, hooks: Hooks, stamp: str
) -> None:
    body = json.dumps(ORDER).encode()
    headers = {**hooks.signed(body), "X-Gatehouse-Timestamp": stamp}
    reply = hooks.post("s_hook", body, sign=None, headers=headers)
    assert reply.status == 401
    assert "needs X-Gatehouse-Timestamp: <unix seconds>" in reply.body["error"]
    assert webhook_runs(gatehouse) == []


def test_the_old_body_only_sha256_signature_is_401_naming_the_new_headers(
    gatehouse: Gatehouse, hooks: Hooks
) -> None:
    body = json.dumps(ORDER).encode()
    old = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    for headers in (
        {"X-Gatehouse-Signature": old},
        {"X-Gatehouse-Signature": old, "X-Gatehouse-Timestamp": str(hooks.now())},
    ):
        reply = hooks.post("s_hook", body, sign=None, headers=headers)
        assert reply.status == 401
        assert reply.body["error"].startswith(
            "X-Gatehouse-Signature: sha256=… (an HMAC of the body alone"
        )
        assert "X-Gatehouse-Timestamp: <unix seconds>" in reply.body["error"]
        assert "v1=<hex HMAC-SHA256" in reply.body["error"]
    assert webhook_runs(gatehouse) == []


def test_authentication_comes_before_parsing(gatehouse: Gatehouse, hooks: Hooks) -> None:
    reply = hooks.post("s_hook", b"{not json", sign=None)
    assert reply.status == 401
    assert gatehouse.runs() == []


# -- one 401 for every path an unauthenticated caller tries ----------------------------------------


@pytest.mark.parametrize(
    ("pipeline", "sign", "headers"),
    [
        ("nope", None, {}),  # no such pipeline
        ("nope", SECRET, {}),
        ("s_no_hook", SECRET, {}),  # no webhook() trigger, though a secret is configured
        ("s_hourly", None, {"Authorization": f"Bearer {TOKEN}"}),
        ("s_unsecured", "anything", {}),  # a webhook pipeline nobody configured
        ("s_unsecured", None, {"Authorization": "Bearer anything"}),
        ("s_unsecured", None, {"Authorization": "Bearer "}),  # its token is empty
        ("s_unsecured", "", {}),  # so is its secret
        ("s_hook", "wrong-secret", {}),  # a wrong signature
        ("s_hook", None, {}),  # no credentials sent
        ("s_tokened", None, {"Authorization": "Bearer wrong"}),
    ],
)
def test_unknown_unconfigured_and_wrongly_signed_pipelines_get_the_same_401(
    gatehouse: Gatehouse,
    hooks: Hooks,
    pipeline: str,
    sign: str | None,
    headers: dict[str, str],
) -> None:
    reference = hooks.post_json("s_hook", ORDER, sign="wrong-secret")
    reply = hooks.post_json(pipeline, ORDER, sign=sign, headers=headers)
    assert (reply.status, reply.body) == (reference.status, reference.body)
    assert reply.status == 401
    assert reply.headers["www-authenticate"] == reference.headers["www-authenticate"]
    assert reply.headers["content-length"] == reference.headers["content-length"]
    assert "an unknown pipeline" in reply.body["error"]
    assert webhook_runs(gatehouse) == []


def test_the_timestamp_checks_answer_alike_on_every_path(hooks: Hooks) -> None:
    """What needs no secret is checked the same for every name, so it tells nothing either."""
    body = json.dumps(ORDER).encode()
    stale = hooks.signed(body, "whatever", at=hooks.now() - 1000)
    old = {"X-Gatehouse-Signature": "sha256=" + "0" * 64}
    for headers in (stale, old):
        answers = {
            json.dumps(hooks.post(name, body, sign=None, headers=headers).body)
            for name in ("s_hook", "nope", "s_no_hook", "s_unsecured", "s_tokened")
        }
        assert len(answers) == 1, answers


def test_only_post_is_served(hooks: Hooks) -> None:
    assert hooks.post("s_hook", b"", method="GET").status == 405


# -- 413 ---------------------------------------------------------------------------------------


def test_a_body_over_the_limit_by_content_length_is_413(gatehouse: Gatehouse, hooks: Hooks) -> None:
    big = json.dumps({**ORDER, "note": "x" * MAX_BYTES}).encode()
    reply = hooks.post("s_hook", big)
    assert reply.status == 413
    assert reply.body["error"] == f"the body is over the {MAX_BYTES}-byte limit"
    assert webhook_runs(gatehouse) == []


@pytest.mark.parametrize("pipeline", ["s_hook", "nope", "s_no_hook", "s_unsecured"])
@pytest.mark.parametrize("chunked", [False, True])
def test_the_size_limit_is_the_same_on_every_path(
    hooks: Hooks, pipeline: str, chunked: bool
) -> None:
    big = b"x" * (MAX_BYTES + 1)
    reply = hooks.post(pipeline, iter([big[:100], big[100:]]) if chunked else big, sign=None)
    assert (reply.status, reply.body) == (
        413,
        {"error": f"the body is over the {MAX_BYTES}-byte limit"},
    )


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
        hooks = Hooks(server, gh.rt.clock)
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
