"""The generation engine against transformers' generate, side by side: the quickstart's evaluation.

Run: .venv/bin/python benchmarks/engine.py --adapter runs/quickstart/adapter-sft [--tasks 27 90]
     [--dtype bfloat16 float32] [--batch 64 96]

For each dtype and task count, the same claims test tasks are evaluated twice with the same model (merged LoRA
adapter), the quickstart's settings (<= 96 new tokens per turn, 64 episodes at once, greedy):
- ``generate``: ``HFPolicy(engine=False)``, transformers' ``generate`` in lockstep batches with the shared
  opening's cache (the engine before this one);
- ``engine-v1``: the engine as first built: continuous batching with each episode's cache kept across turns,
  transformers' sdpa attention (keys and values copied per query head beyond one query), one token a step;
- ``engine-packed``: the same with grouped-query attention packed (``engine._packed_sdpa``);
- ``engine-strided-head``: the engine before 4422a49, whose forward passes handed transformers a count of
  positions to keep (an int ``logits_to_keep``), so the vocabulary projection got a strided view and torch's
  matmul copied its weight once per row of every prefill pass;
- ``engine``: ``HFPolicy()`` as shipped: packed attention and drafts from the context (prompt lookup).
Prints episodes/min, generated tokens/s, mean own model time per turn, success and compliance with 95% intervals,
and how many episodes came out identical (every message the same) to the first engine's. With several
``--batch`` values every engine runs at each (episodes at once and the engine's batch), labelled ``engine@96``.
"""

import argparse
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agentft.engine import Engine  # noqa: E402
from agentft.envs import load_environment  # noqa: E402
from agentft.models import cpu_has_native_bf16, load_model  # noqa: E402
from agentft.policies.hf import HFPolicy  # noqa: E402
from agentft.runner import RunConfig, plan_episodes, run_episodes  # noqa: E402
from agentft.stats import format_rate  # noqa: E402
from agentft.summary import summarize_run  # noqa: E402


class StridedHead:
    """The model as the engine before 4422a49 called it: ``logits_to_keep`` a count (a strided slice), and logits
    computed for one position even when none were wanted."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, *args, logits_to_keep, **kwargs):
        return self.model(*args, logits_to_keep=max(1, len(logits_to_keep)), **kwargs)


def measure(env, policy, tasks, batch):
    started = time.perf_counter()
    trajectories = run_episodes(env, policy, plan_episodes(tasks), RunConfig(batch_size=batch))
    seconds = time.perf_counter() - started
    summary = summarize_run(trajectories)
    tokens = sum(t.usage.completion_tokens for t in trajectories)
    return seconds, tokens, summary, {t.task_id: [m.model_dump() for m in t.messages] for t in trajectories}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--adapter", required=True, help="the quickstart's SFT adapter (runs/quickstart/adapter-sft)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--tasks", type=int, nargs="+", default=[27, 90])
    parser.add_argument("--dtype", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--batch", type=int, nargs="+", default=[64])
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument(
        "--engines",
        nargs="+",
        default=["generate", "engine"],
        help="generate, engine-v1, engine-packed, engine-strided-head, engine",
    )
    parser.add_argument("--draft-budget", type=int, default=None, help="the engine's draft_budget (default its own)")
    args = parser.parse_args()

    env = load_environment("claims")
    print(
        f"# claims {args.split}, SFT adapter {args.adapter}, <= {args.max_new_tokens} new tokens per turn, "
        f"{'/'.join(map(str, args.batch))} episodes at once; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, "
        f"native bf16: {cpu_has_native_bf16()}, {time.strftime('%Y-%m-%d')}"
    )
    print("| dtype | tasks | engine | seconds | episodes/min | tokens/s | s/turn | success | compliance | identical |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for dtype in args.dtype:
        loaded = load_model(args.model, adapter=args.adapter, dtype=dtype, merge=True)
        policies, attention, batches = {}, {}, {}
        for engine in args.engines:
            for batch in args.batch:
                label = engine if len(args.batch) == 1 else f"{engine}@{batch}"
                options = {"batch_size": batch, "max_new_tokens": args.max_new_tokens}
                policy = HFPolicy(args.model, loaded=loaded, engine=engine != "generate", **options)
                attention[label] = "sdpa" if engine in ("generate", "engine-v1") else "agentft_engine"
                if engine != "generate":
                    drafts = {"draft_tokens": 4 if engine in ("engine", "engine-strided-head") else 0}
                    if args.draft_budget is not None:
                        drafts["draft_budget"] = args.draft_budget
                    policy.engine = Engine(loaded[0], policy._stop_ids, max_batch=batch, slots=batch, **drafts)
                    if engine == "engine-strided-head":
                        policy.engine.model = StridedHead(loaded[0])
                policies[label], batches[label] = policy, batch
        for label, policy in policies.items():
            loaded[0].set_attn_implementation(attention[label])
            policy.generate(["warm-up"], max_new_tokens=2)
        for n in args.tasks:
            tasks = env.tasks(args.split)[:n]
            rows, messages, speed = {}, {}, {}
            for label, policy in policies.items():
                loaded[0].set_attn_implementation(attention[label])
                seconds, tokens, summary, messages[label] = measure(env, policy, tasks, batches[label])
                speed[label] = len(tasks) / seconds * 60
                rows[label] = (
                    f"| {dtype} | {len(tasks)} | {label} | {seconds:.0f} | {speed[label]:.1f} | {tokens / seconds:.0f} "
                    f"| {summary.mean_turn_latency_s:.2f} "
                    f"| {format_rate(summary.success_rate, summary.success_ci)} "
                    f"| {format_rate(summary.compliance_rate, summary.compliance_ci)} |"
                )
            reference = messages[next(iter(policies))]
            for label in policies:
                same = sum(messages[label][task] == reference.get(task) for task in messages[label])
                print(rows[label] + f" {same}/{len(tasks)} |", flush=True)
            first = next(iter(policies))
            for label in list(policies)[1:]:
                ratio = speed[label] / speed[first]
                print(f"<!-- {dtype}, {len(tasks)} tasks: {label} / {first} = {ratio:.2f}x episodes/min -->")


if __name__ == "__main__":
    main()
