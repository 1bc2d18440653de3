"""Benchmark: the HTTP ack of a signed slash command under load, beside its floor in one run.

    python bench/ack_load.py [--connections 50] [--seconds 10] [--bot-env NAME=VALUE ...]

Two servers, back to back, under the same load: the floor, a bare Bolt listener that only acks
(bench/bare_bolt.py: sync `App`, `process_before_response=True`, Starlette on uvicorn), then
`gatehouse serve` in HTTP mode against the fake Slack. The load is wrk with `--connections`
keep-alive connections for `--seconds` (bench/ack_load.wrk.lua), each request a `/gatehouse help`
signed now with its own signature (none is a replay) and its own response_url, served by a
counting receiver here. For the bot the real work after each ack is checked: every command acked
with an empty 200 must get exactly one reply at its response_url. Prints req/s, p50, p99 for both,
the process's CPU per request (user + system, all threads, from /proc: what a request costs, which
a loaded machine disturbs less than req/s), the ratios to the floor, and whether the targets are
met (p99 <= 1.5x the floor, >= 2,000 req/s).
Run by hand, not a test; on a loaded machine the figures are noisy, the ratio less so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the test fakes

from served_bot import (  # noqa: E402
    SECRET,
    free_port,
    help_command_request,
    serve_env,
    wait_healthy,
)

from tests.fakes.slack import FakeSlack  # noqa: E402

SEPARATOR = b"\n--8<--\n"
THREADS = 2
P99_RATIO_TARGET = 1.5
RATE_TARGET = 2000.0


class ReplyReceiver:
    """A loopback HTTP server that counts POSTs per path: where the bot's response_url replies go."""

    def __init__(self) -> None:
        self.port = free_port()
        self.counts: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ReplyReceiver:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port, backlog=1024)
        )
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                path = line.split()[1].decode()
                length, close = 0, False
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                    elif name.lower() == b"connection" and value.strip().lower() == b"close":
                        close = True
                await reader.readexactly(length)
                self.counts[path] += 1
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
                )
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, IndexError):
            return
        finally:
            writer.close()


def write_requests(
    directory: Path, fake: FakeSlack, port: int, reply_port: int, per_thread: int, tag: str
) -> str:
    """One file per wrk thread of `/gatehouse help` commands, each signed now with a body of its
    own (its own response_url and trigger_id); returns the files' common prefix."""
    prefix = directory / f"requests-{tag}"
    timestamp = str(int(time.time()))
    for thread in range(THREADS):
        chunks = []
        for n in range(per_thread):
            key = f"{tag}-{thread}-{n}"
            chunks.append(
                help_command_request(
                    fake,
                    port,
                    response_url=f"http://127.0.0.1:{reply_port}/r/{key}",
                    trigger_id=f"bench.{key}",
                    timestamp=timestamp,
                )
            )
        Path(f"{prefix}.{thread}").write_bytes(SEPARATOR.join(chunks) + SEPARATOR)
    return str(prefix)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, every thread) `pid` has used, from /proc: a figure a loaded
    machine disturbs less than req/s, since it counts what each request costs, not how often
    the process got a core."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(port: int, prefix: str, connections: int, seconds: int) -> dict[str, Any]:
    script = HERE / "ack_load.wrk.lua"
    out = subprocess.run(
        [
            "wrk",
            f"-t{THREADS}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/slack/events",
            "--",
            prefix,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    result["rate"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def measure(
    name: str,
    command: list[str],
    env: dict[str, str],
    port: int,
    prefix: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    server = subprocess.Popen(command, env=env, cwd=HERE.parent)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", time.monotonic() + 60)
        result = run_wrk(port, prefix + "-warm", 10, 2)  # Bolt's first auth.test, warm caches
        spy = None
        if args.py_spy and name.startswith("gatehouse"):
            spy = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "-p",
                    str(server.pid),
                    "-d",
                    str(args.seconds),
                    "-r",
                    "200",
                    "-f",
                    "raw",
                    "-o",
                    args.py_spy,
                    *(["--gil"] if args.gil else []),
                    "--threads",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        cpu_before = process_cpu(server.pid)
        result = run_wrk(port, prefix, args.connections, args.seconds)
        used = process_cpu(server.pid) - cpu_before
        result["cpu_ms"] = 1000 * used / max(result["requests"], 1)
        if spy is not None:
            spy.wait(timeout=60)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    print(
        f"{name}: {result['rate']:,.0f} req/s, p50 {result['p50_us'] / 1000:.1f} ms, "
        f"p99 {result['p99_us'] / 1000:.1f} ms, max {result['max_us'] / 1000:.1f} ms, "
        f"CPU {result['cpu_ms']:.2f} ms a request; "
        f"acked empty {result['ok_empty']}, acked with a body {result['ok_body']}, "
        f"other statuses {result['other']}, socket errors {result['errors']}, "
        f"timeouts {result['timeouts']}"
    )
    if result["exhausted"]:
        print(f"  WARNING: {result['exhausted']} requests re-sent (more than generated)")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--per-thread", type=int, default=30_000)
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument("--py-spy", help="write py-spy's collapsed stacks of the bot here")
    parser.add_argument("--gil", action="store_true", help="py-spy: only the GIL holder")
    parser.add_argument("--switch-interval", type=float, help="the bot's GIL switch interval")
    parser.add_argument("--bot-env", action="append", default=[], help="NAME=VALUE for serve")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    with tempfile.TemporaryDirectory() as tmp, FakeSlack() as fake, ReplyReceiver() as replies:
        directory = Path(tmp)
        env = {
            **os.environ,
            "SLACK_API_URL": fake.api_url,
            "SLACK_BOT_TOKEN": fake.token,
            "SLACK_SIGNING_SECRET": SECRET,
        }
        print(
            f"/gatehouse help, signed, one signature each; wrk {THREADS} threads, "
            f"{args.connections} connections, {args.seconds} s; loopback, 2 cores"
        )
        floor: dict[str, Any] | None = None
        if not args.skip_floor:
            port = free_port()
            write_requests(directory, fake, port, replies.port, 500, "floor-warm")
            prefix = write_requests(directory, fake, port, replies.port, args.per_thread, "floor")
            floor = measure(
                "floor (bare Bolt listener)",
                [sys.executable, str(HERE / "bare_bolt.py"), str(port)],
                env,
                port,
                prefix,
                args,
            )
        port = free_port()
        url = f"sqlite:///{tmp}/bench.db"
        bot_env = serve_env(fake, url, port, PYTHONPATH=str(HERE.parent))
        bot_env.update(dict(item.split("=", 1) for item in args.bot_env))
        subprocess.run(
            [sys.executable, "-m", "bot.cli", "db", "upgrade"],
            env=bot_env,
            cwd=HERE.parent,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        write_requests(directory, fake, port, replies.port, 500, "bot-warm")
        prefix = write_requests(directory, fake, port, replies.port, args.per_thread, "bot")
        before = time.monotonic()
        command = [sys.executable, "-m", "bot.cli", "serve"]
        if args.switch_interval is not None:
            # An experiment: `serve` sets its own interval; this one holds instead.
            command = [
                sys.executable,
                "-c",
                f"import sys; sys.setswitchinterval({args.switch_interval}); "
                "sys.setswitchinterval = lambda _v: None; sys.argv = ['gatehouse', 'serve']; "
                "from bot.cli.main import main; main()",
            ]
        bot = measure("gatehouse serve", command, bot_env, port, prefix, args)
        drained = time.monotonic() - before
        done = {
            path: n
            for path, n in replies.counts.items()
            if path.startswith(("/r/bot-0", "/r/bot-1"))
        }
        twice = sum(1 for n in done.values() if n > 1)
        print(
            f"  real work after the ack: {len(done)} replies at their response_url "
            f"(acked empty: {bot['ok_empty']}), {twice} replied more than once; "
            f"all done {drained:.1f} s after the load began"
        )
        work_ok = len(done) >= bot["ok_empty"] and twice == 0
        if floor is not None:
            ratio = bot["p99_us"] / max(floor["p99_us"], 1)
            print(
                f"ratios to the floor: req/s {bot['rate'] / floor['rate']:.2f}x, "
                f"p50 {bot['p50_us'] / max(floor['p50_us'], 1):.2f}x, p99 {ratio:.2f}x, "
                f"CPU a request {bot['cpu_ms'] / max(floor['cpu_ms'], 1e-9):.2f}x"
            )
            verdicts = [
                ("p99 <= 1.5x the floor", ratio <= P99_RATIO_TARGET),
                (">= 2,000 req/s", bot["rate"] >= RATE_TARGET),
                ("every acked command's work done once", work_ok),
            ]
            for what, met in verdicts:
                print(f"  target {what}: {'met' if met else 'MISSED'}")


if __name__ == "__main__":
    main()
