"""Batched lockstep runner vs the per-episode sequential loop: same HF model, same 32 episodes.

Run: .venv/bin/python benchmarks/rollouts.py [--model smollm2-135m] [--episodes 32] [--max-new-tokens 64]
The sequential loop is the same runner with batch_size=1 (one episode at a time, to its end).
"""

import argparse
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agentft.models import load_model  # noqa: E402
from agentft.policies.hf import HFPolicy  # noqa: E402
from agentft.runner import RunConfig, plan_episodes, run_episodes  # noqa: E402
from agentft.toy_env import OrdersEnvironment  # noqa: E402


def measure(env, policy, specs, batch_size):
    started = time.perf_counter()
    trajectories = run_episodes(env, policy, specs, RunConfig(batch_size=batch_size, max_steps=6))
    seconds = time.perf_counter() - started
    tokens = sum(t.usage.completion_tokens for t in trajectories)
    turns = sum(t.usage.model_calls for t in trajectories)
    return seconds, tokens, turns


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    env = OrdersEnvironment(n_train=args.episodes)
    specs = plan_episodes(env.tasks("train"))
    policy = HFPolicy(args.model, loaded=load_model(args.model), max_new_tokens=args.max_new_tokens, batch_size=64)
    policy.generate(["warm-up"], max_new_tokens=2)

    print(
        f"# {args.model}, {len(specs)} episodes of the orders environment, <= {args.max_new_tokens} new tokens "
        f"per turn; {platform.machine()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
    )
    print("| runner | seconds | model turns | generated tokens | episodes/s | tokens/s |")
    print("|---|---|---|---|---|---|")
    rows = {}
    for label, batch in (("sequential (batch 1)", 1), (f"lockstep (batch {len(specs)})", len(specs))):
        seconds, tokens, turns = measure(env, policy, specs, batch)
        rows[batch] = seconds
        print(f"| {label} | {seconds:.1f} | {turns} | {tokens} | {len(specs) / seconds:.2f} | {tokens / seconds:.1f} |")
    print(f"throughput ratio (episodes/s, lockstep / sequential): {rows[1] / rows[len(specs)]:.1f}x")


if __name__ == "__main__":
    main()
