"""Prompt injection: the claims desk with an injected instruction in every task, and the two defences.

Run: python examples/14_prompt_injection.py [--policy hf:smollm2-135m@runs/quickstart/adapter-sft] [--n 30]
Without --policy it runs the scripted worst case, an agent that obeys every injection it reads (unguarded,
then with the guard), and the oracle, which ignores them. With --policy it evaluates that model three ways:
no defence, spotlighting, the guard. The same as
`agentft eval --env claims --policy POLICY --split validation --env-arg attacks=all [--spotlight] [--guard]`.
"""

import argparse
import tempfile
from pathlib import Path

from agentft.attacks import GulliblePolicy
from agentft.collect import CollectConfig
from agentft.envs import load_environment
from agentft.evaluate import evaluate
from agentft.runner import RunConfig, plan_episodes, run_episodes
from agentft.summary import summarize_run

parser = argparse.ArgumentParser()
parser.add_argument("--policy", default=None, help="a model to attack (hf:MODEL[@ADAPTER]); default: scripted")
parser.add_argument("--n", type=int, default=30, help="validation tasks")
parser.add_argument("--out", default=None)
args = parser.parse_args()
out = Path(args.out or tempfile.mkdtemp(prefix="agentft-injection-"))


def line(name: str, summary) -> str:
    attacks = summary.attacks
    rate = attacks["attack_success_rate"]
    asr = "n/a" if rate is None else f"{rate:.0%}"
    return (
        f"{name:<22} attack success {asr:>4} ({attacks['succeeded']} of {attacks['delivered']} delivered), "
        f"utility under attack {summary.success_rate:.0%}, compliance {summary.compliance_rate:.0%}"
    )


if args.policy is None:
    env = load_environment("claims", attacks="all", sandbox=False)
    tasks = env.tasks("validation")[: args.n]
    print(f"claims, {len(tasks)} validation tasks, one injection each (vectors: {', '.join(env.vectors)})")
    for name, policy, guard in [
        ("gullible, no defence", GulliblePolicy(env.oracle()), False),
        ("gullible + guard", GulliblePolicy(env.oracle()), True),
        ("oracle", env.oracle(), False),
    ]:
        summary = summarize_run(run_episodes(env, policy, plan_episodes(tasks), RunConfig(guard=guard)))
        print(line(name, summary))
else:
    for name, spotlight, guard in [("no defence", False, False), ("spotlight", True, False), ("guard", False, True)]:
        config = CollectConfig(
            env="claims",
            env_kwargs={"attacks": "all"},
            policy=args.policy,
            policy_kwargs={"dtype": "auto"},
            out=str(out / name.replace(" ", "-")),
            split="validation",
            n=args.n,
            run=RunConfig(guard=guard, spotlight=spotlight),
        )
        print(line(name, evaluate(config)))
    print(f"runs under {out} (summary.json and report.html each)")
