"""Benchmark: Slack's slash-command ack latency while another address floods `/slack/events`.

    python bench/ingress.py [--commands 200] [--rate 20] [--flood-rate 15]

Starts `gatehouse serve` (HTTP mode) against the fake Slack Web API and sends signed
`/gatehouse help` commands at `--rate` a second, each on a new connection as Slack opens them,
timing each from connecting to reading the whole response. Three phases: no flood; one address
(127.0.0.2) POSTing unsigned ~1 MB bodies at `--flood-rate` a second (under the default rate
limit, so none is 429'd); the same with unsigned bodies just under the Slack body cap, which the
bot reads and HMACs before refusing. Prints p50/p99/max per phase (target p99 < 1 s; Slack's
limit 3 s) and the flood's statuses. Run by hand; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the test fakes

from served_bot import (  # noqa: E402
    free_port,
    help_command_request,
    serve_env,
    wait_healthy,
)

from tests.fakes.slack import FakeSlack  # noqa: E402

FLOOD_FROM = "127.0.0.2"  # Linux answers all of 127/8 on loopback: another client address
WARM_UP = 10
ONE_MB = 1_000_000
UNDER_CAP = 262_144 - 1024


def signed_command(fake: FakeSlack, port: int) -> bytes:
    """`/gatehouse help` as Slack sends it: form-encoded, signed now, as raw HTTP/1.1."""
    return help_command_request(
        fake,
        port,
        response_url=fake.issue_response_url("U_CAROL", "C_APPROVALS"),
        trigger_id=fake.issue_trigger_id("U_CAROL"),
        timestamp=str(int(time.time())),
        close=True,
    )


def unsigned_request(port: int, size: int) -> bytes:
    """A form of `size` bytes in 4-byte fields (what is slowest to parse: ~250,000 of them in
    a megabyte), with a signature that is not Slack's."""
    body = (b"a=1&" * (size // 4 + 1))[:size]
    head = (
        f"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"X-Slack-Request-Timestamp: {int(time.time())}\r\nX-Slack-Signature: v0={'0' * 64}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def timed(port: int, request: bytes) -> tuple[float, int]:
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        status_line = await reader.readline()
        await reader.read()  # Connection: close: the rest of the response
    finally:
        writer.close()
    return (time.perf_counter() - start) * 1000, int(status_line.split()[1])


async def paced_commands(
    fake: FakeSlack, port: int, count: int, rate: float
) -> list[tuple[float, int]]:
    tasks = []
    for _ in range(count):
        tasks.append(asyncio.create_task(timed(port, signed_command(fake, port))))
        await asyncio.sleep(1 / rate)
    return list(await asyncio.gather(*tasks))


class Flood:
    """One address POSTing `size`-byte unsigned bodies at `rate` a second, each on its own
    connection and thread (a slow answer does not slow the pace)."""

    def __init__(self, port: int, size: int, rate: float) -> None:
        self.port, self.size, self.rate = port, size, rate
        self.statuses: Counter[int | str] = Counter()
        self._stop = threading.Event()
        self._pacer = threading.Thread(target=self._pace, daemon=True)
        self._senders: list[threading.Thread] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Flood:
        self._pacer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._pacer.join()
        for sender in self._senders:
            sender.join(timeout=30)

    def _pace(self) -> None:
        while not self._stop.wait(1 / self.rate):
            sender = threading.Thread(target=self._send, daemon=True)
            sender.start()
            self._senders.append(sender)

    def _send(self) -> None:
        request = unsigned_request(self.port, self.size)
        try:
            with socket.create_connection(
                ("127.0.0.1", self.port), timeout=30, source_address=(FLOOD_FROM, 0)
            ) as sock:
                # The bot may answer 413 and close before the whole body is in.
                with contextlib.suppress(OSError):
                    sock.sendall(request)
                status: int | str = int(sock.makefile("rb").readline().split()[1])
        except (OSError, IndexError, ValueError) as exc:
            status = type(exc).__name__
        with self._lock:
            self.statuses[status] += 1


def report(name: str, results: list[tuple[float, int]]) -> float:
    latencies = sorted(ms for ms, _ in results)
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    statuses = Counter(status for _, status in results)
    print(
        f"{name}: p50 {statistics.median(latencies):.1f} ms, p99 {p99:.1f} ms, "
        f"max {latencies[-1]:.1f} ms; statuses {dict(statuses)}"
    )
    return p99


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="signed commands a second")
    parser.add_argument("--flood-rate", type=float, default=15.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeSlack() as fake:
        port = free_port()
        env = serve_env(fake, f"sqlite:///{tmp}/bench.db", port, PYTHONPATH=str(HERE.parent))
        subprocess.run(
            [sys.executable, "-m", "bot.cli", "db", "upgrade"], env=env, cwd=HERE.parent, check=True
        )
        bot = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve"],
            env=env,
            cwd=HERE.parent,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_healthy(f"http://127.0.0.1:{port}", time.monotonic() + 30)
            asyncio.run(paced_commands(fake, port, WARM_UP, args.rate))
            print(
                f"{args.commands} signed /gatehouse help commands at {args.rate:g}/s, "
                "bot in its own process (gatehouse serve, HTTP mode)"
            )
            quiet = asyncio.run(paced_commands(fake, port, args.commands, args.rate))
            worst = report("no flood", quiet)
            for size, what in ((ONE_MB, "~1 MB"), (UNDER_CAP, f"{UNDER_CAP // 1024} KB")):
                with Flood(port, size, args.flood_rate) as flood:
                    results = asyncio.run(paced_commands(fake, port, args.commands, args.rate))
                name = f"{FLOOD_FROM} flooding unsigned {what} bodies at {args.flood_rate:g}/s"
                worst = max(worst, report(name, results))
                print(f"  the flood's statuses: {dict(flood.statuses)}")
        finally:
            bot.send_signal(signal.SIGTERM)
            try:
                bot.wait(timeout=60)
            except subprocess.TimeoutExpired:  # still draining a backlog: not what is measured
                bot.kill()
                bot.wait()
        print(f"worst p99 {worst:.1f} ms (target < 1,000 ms; Slack's limit 3,000 ms)")


if __name__ == "__main__":
    main()
