"""Benchmark: the resident memory of an idle `gatehouse serve`, with the sandbox off and on.

    python bench/rss.py [--settle 5]

Sandbox off: a local Slack sandbox runs in this process and plays the workspace, and `gatehouse
serve` runs in HTTP mode against it (SLACK_API_URL, its token and signing secret), as against a
real Slack. Sandbox on: `gatehouse serve` with no Slack token, the sandbox in its own process.
Each is read from /proc/PID/status (VmRSS) once it answers and has idled `--settle` seconds.
Beside them, in the same run: `python -c pass`, and the imports of the stack serve is built on
(Bolt, SQLAlchemy, pydantic-settings, structlog, uvicorn, APScheduler, psycopg, cryptography;
openai too, as the issue's 91 MB floor had it). Target: <= 110 MB with the sandbox off. Not a test.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GATEHOUSE = Path(sys.executable).with_name("gatehouse")
TARGET_MB = 110.0
STACK = (
    "import slack_bolt, slack_sdk, sqlalchemy.orm, pydantic_settings, structlog, uvicorn, "
    "starlette, apscheduler.schedulers.background, psycopg, cryptography.fernet"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def imports_mb(code: str) -> float:
    """The RSS of a python that has run `code` and waits (VmRSS, as for serve)."""
    probe = f"{code}\nimport sys\nprint('ready', flush=True)\nsys.stdin.read()"
    process = subprocess.Popen(
        [sys.executable, "-c", probe], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdin is not None
    try:
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"python -c {code!r} failed")
        return rss_mb(process.pid)
    finally:
        process.stdin.close()
        process.wait(timeout=30)


def wait_for_port(port: int, process: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gatehouse serve exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"gatehouse serve did not listen on {port} in {timeout:g}s")


def serve_rss(env: dict[str, str], port: int, settle: float, cwd: Path) -> float:
    errors = (cwd / "serve.err").open("w+")
    process = subprocess.Popen(
        [str(GATEHOUSE), "serve"],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=errors,
        text=True,
    )
    try:
        try:
            wait_for_port(port, process)
        except RuntimeError as exc:
            errors.seek(0)
            raise RuntimeError(f"{exc}: {errors.read()[-2000:]}") from None
        time.sleep(settle)
        return rss_mb(process.pid)
    finally:
        errors.close()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def base_env(cwd: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEHOUSE_", "SLACK_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["GATEHOUSE_DATABASE_URL"] = f"sqlite:///{cwd / 'rss.db'}"
    env["GATEHOUSE_PIPELINES"] = "pipelines.catalog"
    env["GATEHOUSE_LOG_LEVEL"] = "error"
    return env


def measure(settle: float) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    from bot.sandbox import Sandbox

    figures = {"python -c pass": imports_mb("pass"), "the stack's imports": imports_mb(STACK)}
    figures["the stack + openai"] = imports_mb(STACK + ", openai")
    with tempfile.TemporaryDirectory(prefix="gatehouse-bench-rss-") as tmp:
        cwd = Path(tmp)
        with Sandbox(port=0) as sandbox:
            env = base_env(cwd)
            port = free_port()
            env.update(
                SLACK_BOT_TOKEN=sandbox.token,
                SLACK_SIGNING_SECRET=sandbox.signing_secret,
                SLACK_API_URL=sandbox.api_url,
                GATEHOUSE_HTTP_HOST="127.0.0.1",
                GATEHOUSE_HTTP_PORT=str(port),
                GATEHOUSE_TRIGGERERS='{"*": ["*"]}',
                GATEHOUSE_OPERATORS='["*"]',
                GATEHOUSE_APPROVALS_CHANNEL="C_APPROVALS",  # the sandbox's channels
            )
            figures["serve, sandbox off"] = serve_rss(env, port, settle, cwd)
        env = base_env(cwd)
        port = free_port()
        env.update(GATEHOUSE_SANDBOX_PORT=str(port), GATEHOUSE_HTTP_PORT=str(free_port()))
        figures["serve, sandbox on"] = serve_rss(env, port, settle, cwd)
    return figures


def report(settle: float = 5.0) -> None:
    figures = measure(settle)
    print(f"idle RSS after {settle:g}s (MB)")
    for name, value in figures.items():
        verdict = ""
        if name == "serve, sandbox off":
            verdict = f"  target <= {TARGET_MB:g} MB: {'met' if value <= TARGET_MB else 'MISSED'}"
        print(f"{name:<22} {value:7.1f}{verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before reading")
    report(parser.parse_args().settle)


if __name__ == "__main__":
    main()
