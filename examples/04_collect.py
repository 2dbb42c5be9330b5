"""Record trajectories in batch: run a policy in an environment and write resumable JSONL.

Run: python examples/04_collect.py [--policy oracle] [--out trajectories/example-orders]
Any policy spec works (oracle, noop, hf:smollm2-135m, openai:URL#MODEL); the same as `agentft collect`.
"""

import argparse
import tempfile

from agentft.collect import CollectConfig, collect
from agentft.runner import RunConfig
from agentft.trajectory import read_trajectories

parser = argparse.ArgumentParser()
parser.add_argument("--policy", default="oracle")
parser.add_argument("--out", default=None)
args = parser.parse_args()
out = args.out or tempfile.mkdtemp(prefix="agentft-orders-")

config = CollectConfig(
    env="agentft.toy_env:OrdersEnvironment",
    policy=args.policy,
    out=out,
    split="train",
    n=20,
    run=RunConfig(batch_size=16, max_steps=8),
)
result = collect(config)
print(f"planned {result.planned}, already on disk {result.skipped}, ran {result.ran}: {result.summary}")

trajectory = next(iter(read_trajectories(f"{out}/trajectories.jsonl")))
print(f"one record: task {trajectory.task_id}, status {trajectory.status}, success {trajectory.score.success}")
for message in trajectory.messages[1:]:
    calls = [f"{c.function.name}({c.function.arguments})" for c in getattr(message, "tool_calls", [])]
    print(f"  {message.role}: {message.content or ''} {' '.join(calls)}")
again = collect(config)
assert again.ran == 0, "a rerun skips every finished episode"
