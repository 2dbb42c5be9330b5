"""The cost of a GRPO step on this machine: sampling the episodes and training on them, side by side with and
without the shared-opening training path, from the quickstart's SFT adapter.

Run: .venv/bin/python benchmarks/grpo.py --adapter runs/quickstart/adapter-sft [--steps 3] [--out DIR]

Each variant runs ``--steps`` GRPO steps (cpu-small: 2 claims train tasks x 4 sampled episodes a step, <= 96 new
tokens per turn, bf16 where the CPU has it) from the same adapter on the same tasks (the samples differ: episode
ids carry the output directory's name). Prints per variant: seconds per step, of them sampling (rollout episodes/min and
sampled tokens/s) and training (forward, reference forward, backward; episode tokens/s), and the reward.
"""

import argparse
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agentft.models import cpu_has_native_bf16  # noqa: E402
from agentft.train import GRPOTrainConfig, build_config, train_grpo  # noqa: E402


def run(args: argparse.Namespace, out: Path, share_prefix: bool) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    metrics = train_grpo(
        build_config(
            GRPOTrainConfig,
            "cpu-small",
            model=args.model,
            adapter=args.adapter,
            env="claims",
            start=270,
            out=str(out),
            max_steps=args.steps,
            max_new_tokens=96,
            share_prefix=share_prefix,
            save_steps=1000,
        )
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"reward"' in line]
    steps = [r["step_time"] for r in rows]
    sampling = [r["rollout/seconds"] for r in rows]
    tokens = [r["num_tokens"] - (rows[i - 1]["num_tokens"] if i else 0) for i, r in enumerate(rows)]
    return {
        "share_prefix": share_prefix,
        "seconds_per_step": round(sum(steps) / len(steps), 1),
        "sampling_seconds_per_step": round(sum(sampling) / len(sampling), 1),
        "training_seconds_per_step": round((sum(steps) - sum(sampling)) / len(steps), 1),
        "rollout_episodes_per_min": round(sum(r["rollout/episodes_per_min"] for r in rows) / len(rows), 1),
        "rollout_sampled_tokens_per_s": round(sum(r["rollout/tokens_per_s"] for r in rows) / len(rows), 1),
        "training_episode_tokens_per_s": round(sum(tokens) / (sum(steps) - sum(sampling)), 1),
        "rewards": [round(r["reward"], 3) for r in rows],
        "precision": metrics["precision"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--adapter", required=True, help="the quickstart's SFT adapter (runs/quickstart/adapter-sft)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="agentft-bench-grpo-"))
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, bf16 {cpu_has_native_bf16()}"
    )
    results = [run(args, root / f"share-{share}", share) for share in (True, False)]
    for result in results:
        print(json.dumps(result))
    shared, plain = results
    print(
        f"step {shared['seconds_per_step']} s with the shared opening vs {plain['seconds_per_step']} s without "
        f"({plain['training_seconds_per_step'] / shared['training_seconds_per_step']:.2f}x on the training part)"
    )


if __name__ == "__main__":
    main()
