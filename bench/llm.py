"""Benchmark: Gatehouse's own overhead per `ctx.llm` call against a zero-latency server.

    python bench/llm.py [--calls 500]

The fake OpenAI-compatible server from the tests answers on loopback at once. In the same run:
(1) a bare `openai` client `create` with the same messages and `response_format`, plus
`model_validate_json` of the answer; (2) the SDK's `parse()`, for reference; (3) `ctx.llm`
inside a run (recording, validation, cost, one write), per call, in a pipeline making 10 calls
per run. Target: (3) <= 1.5x (1). Run by hand; not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import openai
from pydantic import BaseModel

from pipelines import Context, Gatehouse, LLMConfig, pipeline
from pipelines.llm import LLMCaller, system_prompt
from pipelines.logs import configure_logging
from storage.db import Database
from tests.fakes.openai import FakeOpenAI, reply_json

CALLS_PER_RUN = 10


class Ticket(BaseModel):
    text: str


class Label(BaseModel):
    kind: str
    confidence: float


@pipeline("bench_llm_ten_calls", input=Ticket)
def ten_calls(ctx: Context, ticket: Ticket) -> str:
    kinds = [
        ctx.llm(f"classify_{i}", task="classify", prompt=ticket.text, output=Label).kind
        for i in range(CALLS_PER_RUN)
    ]
    return kinds[-1]


def bench_bare(client: openai.OpenAI, calls: int) -> list[float]:
    fmt = LLMCaller(LLMConfig(model="gpt-4o-mini")).response_format(Label)
    messages = [
        {"role": "system", "content": system_prompt("classify", Label, None, "json_schema")},
        {"role": "user", "content": "My parcel never arrived, I want my money back."},
    ]
    timings = []
    for _ in range(calls):
        start = time.perf_counter()
        completion = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,  # type: ignore[arg-type]
            response_format=fmt,  # type: ignore[arg-type]
        )
        Label.model_validate_json(completion.choices[0].message.content or "")
        timings.append((time.perf_counter() - start) * 1000)
    return timings


def bench_parse(client: openai.OpenAI, calls: int) -> list[float]:
    timings = []
    for _ in range(calls):
        start = time.perf_counter()
        client.chat.completions.parse(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "My parcel never arrived."}],
            response_format=Label,
        )
        timings.append((time.perf_counter() - start) * 1000)
    return timings


def bench_ctx_llm(fake: FakeOpenAI, runs: int, workdir: Path) -> list[float]:
    db = Database(f"sqlite:///{workdir}/llm.db")
    db.upgrade()
    gatehouse = Gatehouse(
        db, llm=LLMConfig(model="gpt-4o-mini", base_url=fake.base_url, max_retries=0)
    )
    per_call = []
    for i in range(runs):
        start = time.perf_counter()
        run = gatehouse.trigger("bench_llm_ten_calls", {"text": f"My parcel {i} never arrived."})
        per_call.append((time.perf_counter() - start) * 1000 / CALLS_PER_RUN)
        assert run.status == "succeeded", run.error
    db.dispose()
    return per_call


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    configure_logging("console", "warning")
    with FakeOpenAI() as fake, tempfile.TemporaryDirectory() as tmp:
        fake.always(
            reply_json(
                {"kind": "refund", "confidence": 0.93}, prompt_tokens=80, completion_tokens=12
            )
        )
        client = openai.OpenAI(base_url=fake.base_url, api_key="bench", max_retries=0)
        bench_bare(client, 50)  # warm-up: connection pool, imports
        bare = bench_bare(client, args.calls)
        parse = bench_parse(client, args.calls)
        framework = bench_ctx_llm(fake, max(args.calls // CALLS_PER_RUN, 10), Path(tmp))
        bare_again = bench_bare(client, args.calls)
    bare_ms = statistics.median(bare + bare_again)
    print(f"bare create + validate:  median {bare_ms:.3f} ms/call")
    print(
        f"SDK parse():             median {statistics.median(parse):.3f} ms/call ({statistics.median(parse) / bare_ms:.2f}x)"
    )
    framework_ms = statistics.median(framework)
    print(
        f"ctx.llm in a run:        median {framework_ms:.3f} ms/call ({framework_ms / bare_ms:.2f}x; target <= 1.5x),"
        f" {framework_ms - bare_ms:.3f} ms of Gatehouse overhead a call"
    )


if __name__ == "__main__":
    main()
