"""`agentft serve` under load: 1, 16 and 32 concurrent clients, on the embedded SmolLM2.

Run: .venv/bin/python benchmarks/serve.py [--model smollm2-135m] [--requests 64] [--max-tokens 48]
The server runs in this process (real uvicorn on loopback, continuous batching, max_batch 32); clients are the
unmodified `openai` client in threads. Every request is a tool-call turn: a claims question with two tools
offered. Prints turns/s, p50/p95 latency, the mean rows per generation step and how many replies were tool
calls, per concurrency, and throughput and p95 against one client.
"""

import argparse
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import openai  # noqa: E402

from agentft.models import pull  # noqa: E402
from agentft.serve import ServeConfig, create_app  # noqa: E402
from agentft.testing import serve_in_thread  # noqa: E402

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_claim",
            "description": "Look up an insurance claim by id.",
            "parameters": {
                "type": "object",
                "properties": {"claim_id": {"type": "string", "description": "e.g. CLM-1001"}},
                "required": ["claim_id"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_customer",
            "description": "A customer's record.",
            "parameters": {
                "type": "object",
                "properties": {"customer_id": {"type": "string"}},
                "required": ["customer_id"],
            },
        },
    },
]
QUESTIONS = [
    "What is the status of claim CLM-{n}?",
    "Can you look up claim CLM-{n} for me?",
    "Please check my claim CLM-{n}.",
    "Has claim CLM-{n} been approved?",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(client: openai.OpenAI, model: str, requests: int, concurrency: int, max_tokens: int) -> dict:
    def one(i: int) -> tuple[float, bool]:
        started = time.perf_counter()
        reply = client.chat.completions.create(
            model=model,
            tools=TOOLS,
            max_tokens=max_tokens,
            temperature=0,
            messages=[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)].format(n=1000 + i)}],
        )
        return time.perf_counter() - started, bool(reply.choices[0].message.tool_calls)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    latencies = [r[0] for r in results]
    return {
        "wall": wall,
        "turns_per_s": requests / wall,
        "p50": statistics.median(latencies),
        "p95": percentile(latencies, 0.95),
        "tool_calls": sum(r[1] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--concurrency", default="1,16,32")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or auto")
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=10.0,
        help="how long the batcher waits for company once a turn is pending",
    )
    args = parser.parse_args()

    pull(args.model)
    with tempfile.TemporaryDirectory() as logs:
        config = ServeConfig(
            model=args.model,
            dtype=args.dtype,
            max_batch=args.max_batch,
            batch_wait_ms=args.batch_wait_ms,
            log_dir=logs,
        )
        app = create_app(config)
        engine = app.state.serve.engine
        with serve_in_thread(app) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="local", max_retries=0, timeout=600)
            run(client, args.model, 2, 2, 8)  # warm-up
            print(
                f"# agentft serve, {args.model} ({args.dtype}), {args.requests} tool-call turns, "
                f"max_tokens {args.max_tokens}, "
                f"greedy; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                f"{time.strftime('%Y-%m-%d')}"
            )
            print("| concurrency | wall s | turns/s | p50 s | p95 s | mean rows per step | tool-call replies |")
            print("|---|---|---|---|---|---|---|")
            rows = {}
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                steps, rows_stepped = engine.stats.batches, engine.stats.rows
                row = run(client, args.model, args.requests, concurrency, args.max_tokens)
                mean_rows = (engine.stats.rows - rows_stepped) / max(1, engine.stats.batches - steps)
                rows[concurrency] = row
                print(
                    f"| {concurrency} | {row['wall']:.1f} | {row['turns_per_s']:.2f} | {row['p50']:.2f} | "
                    f"{row['p95']:.2f} | {mean_rows:.1f} | {row['tool_calls']}/{args.requests} |"
                )
            low = min(rows)
            for high in sorted(rows)[1:]:
                speedup = rows[high]["turns_per_s"] / rows[low]["turns_per_s"]
                print(
                    f"{high} vs {low} clients: {speedup:.2f}x turns/s, p95 {rows[high]['p95'] / rows[low]['p95']:.2f}x"
                )


if __name__ == "__main__":
    main()
