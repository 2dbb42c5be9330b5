"""Verbatim arguments on and off, side by side: one adapter evaluated both ways on the claims validation splits.

The quickstart's evaluation settings (episodes at once, generation limit, max steps), greedy, one dtype. Prints,
per split, success and compliance with their 95% intervals and the wall time of each run, and the paired
comparison (the tasks one way solved and the other did not, exact McNemar). Settings are chosen here, on
validation splits, never on test.

Run: .venv/bin/python benchmarks/verbatim.py --adapter runs/quickstart/adapter-sft [--dtype float32]
     [--splits validation own_words_validation] [--out runs/verbatim]
"""

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agentft.collect import CollectConfig  # noqa: E402
from agentft.evaluate import evaluate  # noqa: E402
from agentft.quickstart import EPISODES_AT_ONCE  # noqa: E402
from agentft.runner import RunConfig  # noqa: E402
from agentft.stats import compare_paired, format_rate  # noqa: E402
from agentft.trajectory import load_trajectories  # noqa: E402


def run(adapter: str, split: str, dtype: str, verbatim: bool, out: Path) -> tuple[float, dict[str, bool], str, str]:
    config = CollectConfig(
        env="claims",
        policy=f"hf:smollm2-135m@{adapter}",
        out=str(out),
        split=split,
        policy_kwargs={
            "max_new_tokens": 128,
            "batch_size": EPISODES_AT_ONCE,
            "max_resident": EPISODES_AT_ONCE,
            "dtype": dtype,
            "verbatim": verbatim,
        },
        run=RunConfig(max_steps=12, batch_size=EPISODES_AT_ONCE),
    )
    clock = time.perf_counter()
    summary = evaluate(config)
    seconds = time.perf_counter() - clock
    outcomes = {t.task_id: bool(t.score and t.score.success) for t in load_trajectories(out / "trajectories.jsonl")}
    return (
        seconds,
        outcomes,
        format_rate(summary.success_rate, summary.success_ci),
        format_rate(summary.compliance_rate, summary.compliance_ci),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adapter", default="runs/quickstart/adapter-sft")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"])
    parser.add_argument("--splits", nargs="+", default=["validation", "own_words_validation"])
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary directory)")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; dtype {args.dtype}")
    print("| split | verbatim | success (95% CI) | compliance | wall s |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="agentft-verbatim-") as scratch:
        scratch = args.out or scratch
        for split in args.splits:
            outcomes = {}
            for verbatim in (False, True):
                label = "on" if verbatim else "off"
                seconds, outcomes[label], success, compliance = run(
                    args.adapter, split, args.dtype, verbatim, Path(scratch) / f"{split}-{label}"
                )
                print(f"| {split} | {label} | {success} | {compliance} | {seconds:.0f} |", flush=True)
            paired = compare_paired(outcomes["off"], outcomes["on"], metric="success")
            print(
                f"|   | on vs off | {paired.b_only} gained, {paired.a_only} lost | p = {paired.p_value:.2f} "
                f"| {paired.verdict} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
