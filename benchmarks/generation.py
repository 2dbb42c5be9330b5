"""HF-backend generation throughput of the embedded SmolLM2 at batch 1, 4 and 16 (greedy, 64 new tokens).

Run: .venv/bin/python benchmarks/generation.py [--model smollm2-135m] [--new-tokens 64]
Every row is forced to generate exactly --new-tokens tokens, so tokens/s compares like with like.
Also prints the time of a second (cached) model load.
"""

import argparse
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agentft.models import load_model, pull  # noqa: E402
from agentft.policies.hf import HFPolicy  # noqa: E402

QUESTIONS = [
    "What is the status of claim CLM-1001?",
    "Explain what a deductible is.",
    "Write a haiku about rain.",
    "How do I reset my password?",
    "List three uses of copper.",
    "What is the capital of France?",
    "Summarize the water cycle.",
    "Why is the sky blue?",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batches", default="1,4,16")
    args = parser.parse_args()

    pull(args.model)
    started = time.perf_counter()
    loaded = load_model(args.model)
    load_s = time.perf_counter() - started
    policy = HFPolicy(args.model, loaded=loaded, batch_size=64)
    prompt = lambda i: policy.prompt_text([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}], None)  # noqa: E731
    policy.generate([prompt(0)], max_new_tokens=4)  # warm-up

    print(
        f"# {args.model}, {args.new_tokens} new tokens, greedy; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
    )
    print(f"cached model load: {load_s:.2f} s")
    print("| batch | seconds | generated tokens | tokens/s |")
    print("|---|---|---|---|")
    for batch in (int(b) for b in args.batches.split(",")):
        prompts = [prompt(i) for i in range(batch)]
        started = time.perf_counter()
        generations = policy.generate(prompts, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
        seconds = time.perf_counter() - started
        tokens = sum(g.completion_tokens for g in generations)
        print(f"| {batch} | {seconds:.2f} | {tokens} | {tokens / seconds:.1f} |")


if __name__ == "__main__":
    main()
