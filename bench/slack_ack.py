"""Benchmark: time to Slack's HTTP response for button clicks, with the bot in its own process.

    python bench/slack_ack.py [--clicks 200] [--concurrency 50]

Creates N pending approvals, starts `gatehouse serve` (HTTP mode) against the fake Slack Web
API, sends N signed Approve clicks (one per approval) from C concurrent clients, and reports
p50/p99 time to the HTTP response (Slack's limit is 3 s; target p99 < 100 ms). Then it waits
until the bot has decided every approval and resumed every run, and checks that each was
decided exactly once and each tool ran exactly once. Run by hand; not a test.
The slash-command ack under wrk, beside a bare Bolt listener as its floor: bench/ack_load.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier
from sqlalchemy import func, select

from pipelines import Gatehouse, discover
from pipelines.logs import configure_logging
from pipelines.pipeline import CATALOG
from storage.audit import audit_table
from storage.db import Database

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the test fakes
sys.path.insert(0, str(HERE))  # the bench pipeline, also imported by the bot process

import slack_bench_pipelines  # noqa: E402, F401  (registers the pipeline)
from served_bot import SECRET, free_port, serve_env, wait_healthy  # noqa: E402

from tests.fakes.slack import FakeSlack  # noqa: E402

WARM_UP = 10


def signed_click(fake: FakeSlack, approval_id: str, port: int) -> bytes:
    """One Approve click as Slack sends it: form-encoded `payload=`, signed, as raw HTTP/1.1."""
    payload = {
        "type": "block_actions",
        "user": {"id": "U_BOB", "username": "bob", "name": "bob", "team_id": fake.team_id},
        "api_app_id": fake.app_id,
        "token": fake.verification_token,
        "trigger_id": fake.issue_trigger_id("U_BOB"),
        "team": {"id": fake.team_id, "domain": fake.team_domain},
        "container": {"type": "message", "channel_id": "C_APPROVALS", "is_ephemeral": False},
        "channel": {"id": "C_APPROVALS", "name": "approvals"},
        "response_url": fake.issue_response_url("U_BOB", "C_APPROVALS"),
        "actions": [
            {
                "action_id": "approval.approve",
                "block_id": f"approval.{approval_id}",
                "type": "button",
                "value": approval_id,
                "text": {"type": "plain_text", "text": "Approve"},
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    body = urlencode({"payload": json.dumps(payload)})
    timestamp = str(int(time.time()))
    signature = SignatureVerifier(SECRET).generate_signature(timestamp=timestamp, body=body)
    head = (
        f"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"X-Slack-Request-Timestamp: {timestamp}\r\nX-Slack-Signature: {signature}\r\n"
        f"Content-Length: {len(body.encode())}\r\n\r\n"
    )
    return head.encode() + body.encode()


async def send_all(port: int, requests: list[bytes], concurrency: int) -> list[tuple[float, int]]:
    """Like wrk: `concurrency` keep-alive connections, each sending its share back to back;
    the time is from writing a request to reading its whole response."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    results: list[tuple[float, int]] = []
    first_wave: list[bool] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not queue.empty():
                request = queue.get_nowait()
                start = time.perf_counter()
                writer.write(request)
                await writer.drain()
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                results.append(((time.perf_counter() - start) * 1000, int(status_line.split()[1])))
                first_wave.append(len(results) <= concurrency)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    waves = sorted(zip(first_wave, (ms for ms, _ in results), strict=True))
    later = [ms for wave, ms in waves if not wave]
    if later:
        print(
            f"  (after the first {concurrency} responses: p99 {sorted(later)[int(len(later) * 0.99) - 1]:.1f} ms)"
        )
    return results


def count_events(db: Database, event: str) -> int:
    with db.transaction() as conn:
        query = select(func.count()).where(audit_table.c.event == event)
        return int(conn.execute(query).scalar_one())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clicks", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    configure_logging("console", "error")
    discover([CATALOG])
    with tempfile.TemporaryDirectory() as tmp, FakeSlack() as fake:
        url = f"sqlite:///{tmp}/bench.db"
        db = Database(url)
        db.upgrade()
        engine = Gatehouse(db)
        approvals = []
        for n in range(args.clicks + WARM_UP):
            run = engine.trigger("bench_slack_gate", {"n": n}, user="U_CAROL")
            approvals.append(run.waiting_for[0])
        port = free_port()
        env = serve_env(
            fake,
            url,
            port,
            GATEHOUSE_PIPELINES="slack_bench_pipelines",
            PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent)]),
        )
        bot = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve"], env=env, cwd=HERE.parent)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_healthy(base, time.monotonic() + 30)
            requests = [signed_click(fake, approval_id, port) for approval_id in approvals]
            # A few clicks first, as a running bot has had them: Bolt's first request does its
            # one-time set-up (auth.test), which no later click pays.
            asyncio.run(send_all(port, requests[:WARM_UP], 5))
            requests = requests[WARM_UP:]
            began = time.perf_counter()
            results = asyncio.run(send_all(port, requests, args.concurrency))
            wall = time.perf_counter() - began
            deadline = time.monotonic() + 120
            total = args.clicks + WARM_UP
            while time.monotonic() < deadline and count_events(db, "tool.succeeded") < total:
                time.sleep(0.1)
            processed = time.perf_counter() - began
        finally:
            bot.send_signal(signal.SIGTERM)
            bot.wait(timeout=60)
        latencies = sorted(ms for ms, _ in results)
        statuses = {status for _, status in results}
        decided = count_events(db, "approval.approved") - WARM_UP
        executed = count_events(db, "tool.succeeded") - WARM_UP
        print(
            f"{args.clicks} Approve clicks, {args.concurrency} concurrent, bot in its own process"
        )
        print(f"HTTP statuses: {sorted(statuses)}; sent in {wall:.2f} s")
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print(
            f"time to response: p50 {statistics.median(latencies):.1f} ms, p99 {p99:.1f} ms, "
            f"max {latencies[-1]:.1f} ms (target p99 < 100 ms; Slack's limit 3,000 ms)"
        )
        print(
            f"decided once each: {decided}/{args.clicks}; tool ran once each: {executed}/{args.clicks}"
        )
        print(f"all decided and resumed {processed:.2f} s after the first click")


if __name__ == "__main__":
    main()
