"""Build SFT + DPO datasets from 10,000 claims trajectories (goal: under 10 s on this machine).

Run: .venv/bin/python benchmarks/datasets.py [--n 10000]
The trajectories are made once (oracle on train tasks, plus a deliberately failing copy of each for DPO
mining) and written to a temp dir; the timed part reads them back and builds both datasets.
"""

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    from agentft.datasets import build_sft_dataset
    from agentft.envs import load_environment
    from agentft.messages import AssistantMessage
    from agentft.preferences import PreferenceConfig, build_dpo_dataset
    from agentft.runner import RunConfig, plan_episodes, run_episodes
    from agentft.trajectory import Score, TrajectoryWriter

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10000)
    args = parser.parse_args()

    env = load_environment("claims", sandbox=False)
    tasks = env.tasks("train")
    base = run_episodes(env, env.oracle(), plan_episodes(tasks), RunConfig(batch_size=256))
    root = Path(tempfile.mkdtemp(prefix="agentft-bench-"))
    good, bad = root / "good.jsonl", root / "bad.jsonl"
    with TrajectoryWriter(good) as g, TrajectoryWriter(bad) as b:
        written = 0
        copy = 0
        while written < args.n:
            for t in base:
                clone = t.model_copy(update={"id": f"{t.id}-{copy}", "seed": copy})
                g.write_batch([clone])
                # A failing twin: the last assistant turn says something else.
                messages = list(clone.messages)
                messages[-1] = AssistantMessage(content="I am not sure, please call back later.")
                b.write_batch(
                    [
                        clone.model_copy(
                            update={
                                "id": f"{t.id}-{copy}-bad",
                                "messages": messages,
                                "score": Score(success=False, compliant=True),
                            }
                        )
                    ]
                )
                written += 2
                if written >= args.n:
                    break
            copy += 1
    started = time.perf_counter()
    sft = build_sft_dataset([good, bad])
    sft_s = time.perf_counter() - started
    started = time.perf_counter()
    dpo = build_dpo_dataset([good, bad], PreferenceConfig())
    dpo_s = time.perf_counter() - started
    print(f"# {written} trajectories; {platform.machine()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")
    print(f"SFT: {len(sft.train) + len(sft.validation)} rows ({dict(sft.drops)}) in {sft_s:.2f} s")
    print(f"DPO: {dpo.stats['pairs']} pairs in {dpo_s:.2f} s")
    print(f"total {sft_s + dpo_s:.2f} s for SFT + DPO from {written} trajectories (goal < 10 s)")


if __name__ == "__main__":
    main()
