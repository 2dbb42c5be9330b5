"""Held-out means unseen: disjoint phrasing pools, augmented user turns, recovery demonstrations, intervals
and a paired comparison.

Run: python examples/10_held_out.py [--out DIR]
The CLI equivalents: `agentft collect --env claims --policy oracle --n 3 --augment 2 --recovery 0.25`,
`agentft eval --env claims --split validation --policy ...` (summary.json carries success_ci and compliance_ci), and
`agentft report RUN_A RUN_B` (paired on the tasks both ran: exact McNemar test, bootstrap interval).
"""

import argparse
import tempfile
from pathlib import Path

from agentft.augment import AugmentConfig, AugmentedEnvironment
from agentft.collect import CollectConfig, collect
from agentft.envs import load_environment
from agentft.evaluate import evaluate
from agentft.report import compare_runs, load_run
from agentft.runner import RunConfig
from agentft.stats import format_rate

parser = argparse.ArgumentParser()
parser.add_argument("--out", default=None)
args = parser.parse_args()
out = Path(args.out or tempfile.mkdtemp(prefix="agentft-held-out-"))

# 1. Each split has its own customers and its own words; own_words (and own_words_validation) were written by hand.
env = load_environment("claims", sandbox=False)
for split in ("train", "validation", "test", "own_words", "own_words_validation"):
    task = next(t for t in env.tasks(split) if t.kind == "approve")
    print(f"{split:>20}: {task.facts['opening']}")

# 2. Augmented variants rewrite what the user says; the oracle still solves every one (checked on creation).
augmented = AugmentedEnvironment(env, AugmentConfig(n=2, seed=7))
original = env.tasks("train")[1]
for variant in augmented.expand([original], "train")[1:]:
    print(f"   variant: {variant.facts['opening']}  (consent: {variant.facts['consent_reply']!r})")

# 3. Recovery demonstrations: in a share of episodes the expert first makes a wrong call the tools refuse, then
#    the right one; the slip is stored with weight 0, so SFT learns the recovery and never the slip.
recovering = collect(
    CollectConfig(
        env="claims",
        policy="oracle",
        out=str(out / "recovery"),
        n=4,
        recovery=1.0,
        env_kwargs={"sandbox": False},
    )
)
for trajectory in recovering.trajectories[:2]:
    at = next(i for i, m in enumerate(trajectory.messages) if getattr(m, "weight", None) == 0)
    slip, error, fix = trajectory.messages[at : at + 3]
    print(f"   slip: {slip.tool_calls[0].function.name}({slip.tool_calls[0].function.arguments})")
    print(f"   tool: {error.content[:100]}")
    print(f"    fix: {fix.tool_calls[0].function.name}({fix.tool_calls[0].function.arguments})")
print(f"recovered: success {recovering.summary.success_rate:.0%}, compliance {recovering.summary.compliance_rate:.0%}")

# 4. Two policies on the same validation tasks: rates with 95% intervals, then the paired comparison.
for policy in ("noop", "oracle"):
    summary = evaluate(
        CollectConfig(
            env="claims",
            policy=policy,
            out=str(out / policy),
            split="validation",
            n=18,
            env_kwargs={"sandbox": False},
            run=RunConfig(batch_size=18),
        )
    )
    print(
        f"{policy:>6}: success {format_rate(summary.success_rate, summary.success_ci)}, "
        f"compliance {format_rate(summary.compliance_rate, summary.compliance_ci)}"
    )
for comparison in compare_runs(load_run(out / "noop", "noop"), load_run(out / "oracle", "oracle")):
    print(f"oracle vs noop, {comparison.metric}: {comparison.verdict}")
