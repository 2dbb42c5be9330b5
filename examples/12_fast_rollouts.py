"""Fast rollouts: the generation engine under a policy, the runner and RL-style sampling.

Run: python examples/12_fast_rollouts.py [--model smollm2-135m] [--adapter runs/quickstart/adapter-sft] [--tasks 8]
1. A conversation's second turn prefills only what was added since its first (its keys and values stayed).
2. Sampled completions: each row has its own seeded generator, and records its tokens' log-probabilities.
3. The claims evaluation with the engine (continuous batching) and with transformers' generate (lockstep):
   episodes per minute, and whether the greedy episodes came out the same.
"""

import argparse
import time

from agentft.engine import Engine, Request
from agentft.envs import load_environment
from agentft.models import load_model
from agentft.policies.hf import HFPolicy
from agentft.runner import RunConfig, plan_episodes, run_episodes

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="smollm2-135m", help="embedded model name or local model directory")
parser.add_argument("--adapter", default=None, help="a LoRA adapter directory (e.g. the quickstart's SFT adapter)")
parser.add_argument("--tasks", type=int, default=8)
args = parser.parse_args()

model, tokenizer = load_model(args.model, adapter=args.adapter, merge=True)
stops = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id]
engine = Engine(model, stops, max_batch=8)


def encode(messages: list[dict]) -> list[int]:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# 1. Two turns of one conversation: the second reuses the first's cache.
messages = [{"role": "user", "content": "Which documents do I need to file a claim?"}]
first = engine.run([Request(encode(messages), 32)])[0]
messages += [
    {"role": "assistant", "content": tokenizer.decode(first.tokens, skip_special_tokens=True)},
    {"role": "user", "content": "And how long does a decision take?"},
]
second = engine.run([Request(encode(messages), 32)])[0]
print(f"turn 1: {first.prompt_tokens} prompt tokens, {first.cached_tokens} from cache")
print(f"turn 2: {second.prompt_tokens} prompt tokens, {second.cached_tokens} from cache")

# 2. Four sampled completions of one prompt, with log-probabilities (what RL needs).
prompt = encode([{"role": "user", "content": "Name a reason a claim is denied."}])
samples = engine.run([Request(prompt, 16, temperature=1.0, seed=i, logprobs=True) for i in range(4)])
for i, sample in enumerate(samples):
    text = tokenizer.decode(sample.tokens, skip_special_tokens=True).strip().replace("\n", " ")
    print(f"sample {i}: {text[:60]!r}, log-prob {sum(sample.logprobs):.1f} over {len(sample.tokens)} tokens")

# 3. The same evaluation with both engines.
env = load_environment("claims")
tasks = env.tasks("test")[: args.tasks]
runs = {}
for label, use_engine in (("engine", True), ("generate", False)):
    policy = HFPolicy(args.model, loaded=(model, tokenizer), engine=use_engine, batch_size=32, max_new_tokens=96)
    started = time.perf_counter()
    trajectories = run_episodes(env, policy, plan_episodes(tasks), RunConfig(batch_size=32))
    seconds = time.perf_counter() - started
    runs[label] = {t.task_id: [m.model_dump() for m in t.messages] for t in trajectories}
    successes = sum(bool(t.score and t.score.success) for t in trajectories)
    print(
        f"{label}: {len(tasks)} episodes in {seconds:.1f} s ({len(tasks) / seconds * 60:.1f}/min), success {successes}"
    )
same = sum(runs["engine"][task] == runs["generate"][task] for task in runs["engine"])
print(f"identical episodes: {same}/{len(tasks)}")
