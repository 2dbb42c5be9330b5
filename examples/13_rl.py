"""Learning from the environment: GRPO from an SFT adapter, a reward model, and best-of-N against greedy.

Run: python examples/13_rl.py [--model smollm2-135m] [--adapter DIR] [--steps 3] [--out DIR]
The same as `agentft train grpo --adapter DIR --env claims`, `agentft train rm --data DIR` and
`agentft eval --best-of 4 --scorer rules|rm:DIR`. Without --adapter a short SFT run makes
one first (`make demo` makes a real one: runs/quickstart/adapter-sft).
"""

import argparse
import json
import tempfile
from pathlib import Path

from transformers import AutoTokenizer

from agentft.collect import CollectConfig, collect
from agentft.datasets import build_sft_dataset, save_sft_dataset
from agentft.evaluate import evaluate
from agentft.models import resolve_model_path
from agentft.preferences import PreferenceConfig, build_dpo_dataset, save_dpo_dataset
from agentft.runner import RunConfig
from agentft.train import GRPOTrainConfig, RMTrainConfig, SFTTrainConfig, build_config, train_grpo, train_rm, train_sft

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="smollm2-135m", help="embedded model name or local model directory")
parser.add_argument("--adapter", default=None, help="SFT adapter to start from (default: a short SFT run)")
parser.add_argument("--steps", type=int, default=3, help="GRPO steps (and SFT steps when there is no --adapter)")
parser.add_argument("--out", default=None)
args = parser.parse_args()
out = Path(args.out or tempfile.mkdtemp(prefix="agentft-rl-"))
env = {"sandbox": False}  # in-process tools: fine for a short demo

# 1. Oracle demonstrations: SFT rows (when there is no adapter yet) and, edited to break rules, reward-model pairs.
oracle = collect(CollectConfig(env="claims", policy="oracle", out=str(out / "oracle"), n=36, env_kwargs=env)).out
adapter = args.adapter
if adapter is None:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(args.model))
    rows = save_sft_dataset(build_sft_dataset([oracle], tokenizer=tokenizer, validation_fraction=0.1), out / "sft")
    adapter = str(out / "adapter-sft")
    train_sft(
        build_config(SFTTrainConfig, "cpu-small", model=args.model, data=str(rows), out=adapter, max_steps=args.steps)
    )

# 2. GRPO: each step samples 4 episodes of each of 2 train tasks the SFT data did not use, scores them by the
#    task's checks and the rules, and trains the adapter on its own tokens (tool results and user turns masked).
grpo = train_grpo(
    build_config(
        GRPOTrainConfig,
        "cpu-small",
        model=args.model,
        adapter=adapter,
        env="claims",
        start=36,
        out=str(out / "adapter-grpo"),
        max_steps=args.steps,
        max_new_tokens=96,
        logging_steps=1,
    )
)
print(f"GRPO: reward {grpo['reward_first']} -> {grpo['reward_last']} over {grpo['steps']} steps")
print(f"rollouts at {grpo['rollout_episodes_per_min']} episodes/min, each in {out}/adapter-grpo/rollouts.jsonl")

# 3. A reward model on preference pairs: each demonstration against edits of it that break a rule.
pairs = save_dpo_dataset(
    build_dpo_dataset([oracle], PreferenceConfig(step_pairs=False, perturbations=True)), out / "pairs"
)
rm = train_rm(
    build_config(RMTrainConfig, "cpu-small", model=args.model, data=str(pairs), out=str(out / "rm"), epochs=1)
)
print(f"reward model: held-out pairs ranked right {rm['heldout_accuracy']:.0%} of {rm['heldout_pairs']}")

# 4. Best-of-4 against greedy on validation tasks: each turn the greedy reply and 3 samples at 0.7; the rules, or
#    the reward model, pick one (the greedy reply on a tie).
policy = f"hf:{args.model}@{out / 'adapter-grpo'}"
for name, run in (
    ("greedy", RunConfig(max_steps=8)),
    ("best-of-4 rules", RunConfig(max_steps=8, best_of=4, scorer="rules")),
    ("best-of-4 rm", RunConfig(max_steps=8, best_of=4, scorer=f"rm:{out / 'rm'}")),
):
    summary = evaluate(
        CollectConfig(
            env="claims",
            policy=policy,
            out=str(out / name.replace(" ", "-")),
            split="validation",
            n=9,
            env_kwargs=env,
            policy_kwargs={"max_new_tokens": 96, "dtype": "auto"},
            run=run,
        )
    )
    print(f"{name:16} success {summary.success_rate:.0%}  compliance {summary.compliance_rate:.0%}")
print(json.dumps({"out": str(out)}))
