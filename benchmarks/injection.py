"""Prompt injection on the tuned models: base, SFT and DPO SmolLM2 on the attacked claims desk, with no defence,
with spotlighting, and with the guard.

Run: .venv/bin/python benchmarks/injection.py --adapters runs/quickstart [--split test --n 90] [--out DIR]
     .venv/bin/python benchmarks/injection.py --report-only --out DIR      # the table from finished runs
Each run is ``agentft eval --env claims --env-arg attacks=all`` (resumable); the table gives, per run, attack
success and the hijack rate over delivered injections, utility under attack and compliance, with 95% intervals,
and the delivered injections by vector. Runs made before the hijack verdict existed get it recomputed from their
trajectories and the environment's goals.
"""

import argparse
import json
import platform
from pathlib import Path

from agentft.attacks import target_touched
from agentft.collect import CollectConfig
from agentft.envs import load_environment
from agentft.evaluate import evaluate
from agentft.runner import RunConfig
from agentft.stats import format_rate, wilson_interval
from agentft.trajectory import load_trajectories

SETTINGS = {"none": {}, "spotlight": {"spotlight": True}, "guard": {"guard": True}}


def runs(adapters: Path | None, model: str) -> dict[str, tuple[str, str]]:
    """Run name -> (policy, setting): the base model undefended (it calls no tool), each adapter three ways."""
    found = {"base-none": (f"hf:{model}", "none")}
    for name in ("sft", "dpo"):
        if adapters is not None and (adapters / f"adapter-{name}").is_dir():
            for setting in SETTINGS:
                found[f"{name}-{setting}"] = (f"hf:{model}@{adapters / f'adapter-{name}'}", setting)
    return found


def table(out: Path) -> None:
    goals = {g.id: g for g in load_environment("claims").attack_goals()}
    print("| run | delivered (tool result / db text / kb / user turn) | attack success | acted on the target "
          "| utility under attack | compliance |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for path in sorted(p for p in out.iterdir() if (p / "summary.json").exists()):
        summary = json.loads((path / "summary.json").read_text())
        attacks = summary["attacks"]
        verdicts = [(t, t.score.details["attack"]) for t in load_trajectories(path) if t.score is not None]
        delivered = [(t, v) for t, v in verdicts if v["delivered"]]
        hijacked = sum(v.get("hijacked", target_touched(t, goals[v["goal"]])) for t, v in delivered)
        by_vector = " / ".join(
            str(attacks["by_vector"].get(v, {}).get("delivered", 0))
            for v in ("tool_result", "db_text", "kb", "user_turn")
        )
        n = len(delivered)
        print(
            f"| {path.name} | {n} ({by_vector}) | {attacks['succeeded']}/{n}: "
            f"{format_rate(attacks['attack_success_rate'] or 0.0, attacks['attack_success_ci'])} "
            f"| {hijacked}/{n}: {format_rate(hijacked / n if n else 0.0, wilson_interval(hijacked, n))} "
            f"| {format_rate(summary['success_rate'], summary['success_ci'])} "
            f"| {format_rate(summary['compliance_rate'], summary['compliance_ci'])} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adapters", type=Path, default=None, help="a quickstart output (adapter-sft, adapter-dpo)")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=90)
    parser.add_argument("--out", type=Path, default=Path("runs/injection"))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    if not args.report_only:
        for name, (policy, setting) in runs(args.adapters, args.model).items():
            config = CollectConfig(
                env="claims",
                env_kwargs={"attacks": "all"},
                policy=policy,
                policy_kwargs={"dtype": "auto"},
                out=str(args.out / name),
                split=args.split,
                n=args.n,
                run=RunConfig(**SETTINGS[setting]),
            )
            evaluate(config)
    table(args.out)


if __name__ == "__main__":
    main()
