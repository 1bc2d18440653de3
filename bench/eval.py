"""Benchmark: `gatehouse eval` throughput against a zero-latency model.

    python bench/eval.py [--cases 1000] [--concurrency 8]

The pipeline is the catalog's `ticket_triage`, whole: one model call (the fake OpenAI server from
the tests, answering at once, in its own process so that it does not share this one's GIL), a
step, a read tool on the read-only database (the demo order book), the refund tool's would-call
with its `simulate`, scoring against `expected` and `expect_calls`, and the eval stored. In the
same run, the floor: the same number of bare SDK `create` calls + pydantic validation at the same
concurrency, and a tighter floor: the same requests through `client.post`, the path
`pipelines.llm` takes. Reported: cases/s, CPU per case, and the framework's share of the time (a
case's time outside the model call, summed over cases). Target: >= 90 % of the bare SDK calls/s measured in the same
run, printed as a share, with "MISSED" when it falls short. Not a test.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import openai
from openai.types.chat import ChatCompletion

from pipelines import Gatehouse, LLMConfig, discover
from pipelines.catalog.connectors import demo_orders
from pipelines.catalog.ticket_triage import CLASSIFY_SYSTEM, TicketLabel
from pipelines.evaluation import evaluate, parse_dataset
from pipelines.llm import LLMCaller, system_prompt
from pipelines.logs import configure_logging
from pipelines.pipeline import CATALOG
from pipelines.runtime import running_in
from storage.db import Database

FLOOR_SHARE_TARGET = 0.9  # issue 19: eval cases/s >= 90 % of bare SDK calls/s, same concurrency

ANSWER = {
    "kind": "refund",
    "confidence": 0.95,
    "order_id": "ord_1002",
    "amount": "150.00",
}


def serve_model(ready: Any, stop: Any) -> None:
    from tests.fakes.openai import FakeOpenAI, reply_json

    with FakeOpenAI() as fake:
        fake.always(reply_json(ANSWER, prompt_tokens=120, completion_tokens=20))
        ready.put(fake.base_url)
        stop.wait()


def dataset_text(cases: int) -> str:
    lines = []
    for number in range(cases):
        case = {
            "input": {
                "ticket_id": f"T-{number}",
                "customer_email": "grace@example.com",
                "subject": "Refund ord_1002",
                "body": f"Please refund 150.00 EUR on order ord_1002 ({number}).",
            },
            "expected": {"kind": "refund", "route": "refunded"},
            "expect_calls": [{"tool": "issue_refund", "args": {"amount_cents": 15000}}],
        }
        lines.append(json.dumps(case))
    return "\n".join(lines)


def bench_floor(base_url: str, cases: int, concurrency: int, *, posted: bool = False) -> float:
    """Seconds for `cases` bare create + validate calls at `concurrency`. `posted`: the same
    request through `client.post` (the path `pipelines.llm` takes, without `create`'s parameter
    transform), the tighter floor."""
    client = openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0)
    fmt = LLMCaller(LLMConfig(model="gpt-4o-mini")).response_format(TicketLabel)
    messages = [
        {
            "role": "system",
            "content": system_prompt("classify", TicketLabel, CLASSIFY_SYSTEM, "json_schema"),
        },
        {"role": "user", "content": "Please refund 150.00 EUR on order ord_1002."},
    ]

    def one(_: int) -> None:
        if posted:
            completion = client.post(
                "/chat/completions",
                body={"model": "gpt-4o-mini", "messages": messages, "response_format": fmt},
                cast_to=ChatCompletion,
            )
        else:
            completion = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=messages,  # type: ignore[arg-type]
                response_format=fmt,  # type: ignore[arg-type]
            )
        TicketLabel.model_validate_json(completion.choices[0].message.content or "")

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(min(cases, 50))))  # warm-up
        start = time.perf_counter()
        list(pool.map(one, range(cases)))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    configure_logging("console", "warning")
    discover([CATALOG])
    ready: Any = multiprocessing.Queue()
    stop: Any = multiprocessing.Event()
    server = multiprocessing.Process(target=serve_model, args=(ready, stop), daemon=True)
    server.start()
    base_url = ready.get(timeout=30)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = Database(f"sqlite:///{tmp}/eval.db")
            db.upgrade()
            gatehouse = Gatehouse(
                db, llm=LLMConfig(model="gpt-4o-mini", base_url=base_url, max_retries=0)
            )
            with running_in(gatehouse.rt):
                demo_orders.seed_orders()  # the order book the read tool looks in
            dataset = parse_dataset(dataset_text(args.cases), name="bench.jsonl")
            warm = parse_dataset(dataset_text(50), name="warm.jsonl")
            evaluate(gatehouse.rt, "ticket_triage", warm, concurrency=args.concurrency)
            load_before = os.getloadavg()[0]
            cpu_before = time.process_time()
            start = time.perf_counter()
            report = evaluate(gatehouse.rt, "ticket_triage", dataset, concurrency=args.concurrency)
            wall = time.perf_counter() - start
            cpu = time.process_time() - cpu_before
            floor_cpu_before = time.process_time()
            floor = bench_floor(base_url, args.cases, args.concurrency)
            floor_cpu = time.process_time() - floor_cpu_before  # includes its 50 warm-up calls
            posted_cpu_before = time.process_time()
            posted = bench_floor(base_url, args.cases, args.concurrency, posted=True)
            posted_cpu = time.process_time() - posted_cpu_before
            db.dispose()
    finally:
        stop.set()
        server.join(timeout=10)
    assert report.count("passed") == args.cases, report.to_json()["failures"][:2]
    case_ms = sum(r.latency_ms for r in report.results)
    model_ms = sum(r.llm_ms for r in report.results)
    print(
        f"eval of {args.cases} cases at concurrency {args.concurrency}: {wall:.2f} s, "
        f"{args.cases / wall:.0f} cases/s; process CPU {cpu:.2f} s; "
        f"load average before {load_before:.2f}"
    )
    print(
        f"  per case: p50 {report.summary()['latency_ms']['p50']:.2f} ms, the model call "
        f"{model_ms / args.cases:.2f} ms of it; framework share {1 - model_ms / case_ms:.0%} of "
        "the cases' time"
    )
    share = floor / wall  # cases/s over bare calls/s
    print(
        f"floor: {args.cases} bare SDK create + validate at concurrency {args.concurrency}: "
        f"{floor:.2f} s, {args.cases / floor:.0f} calls/s; the eval's {args.cases / wall:.0f} "
        f"cases/s are {share:.0%} of it (target >= {FLOOR_SHARE_TARGET:.0%}: "
        + ("met" if share >= FLOOR_SHARE_TARGET else "MISSED")
        + ")"
    )
    print(
        f"tighter floor: the same requests through client.post (no parameter transform, as "
        f"pipelines.llm sends them): {args.cases / posted:.0f} calls/s; the eval's share "
        f"{posted / wall:.0%}"
    )
    floor_calls = args.cases + min(args.cases, 50)
    print(
        f"CPU per case (steadier than wall on a loaded machine): eval {cpu / args.cases * 1000:.2f}"
        f" ms, bare SDK create {floor_cpu / floor_calls * 1000:.2f} ms, bare SDK post "
        f"{posted_cpu / floor_calls * 1000:.2f} ms"
    )


if __name__ == "__main__":
    main()
