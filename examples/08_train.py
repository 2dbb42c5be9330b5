"""From trajectories to a tuned adapter: SFT rows and DPO pairs, LoRA SFT, then DPO from the SFT adapter.

Run: python examples/08_train.py [--model smollm2-135m] [--steps 4] [--out DIR]
The same as `agentft collect` (oracle and the untuned model), `agentft dataset sft` / `dataset dpo`,
`agentft train sft` and `agentft train dpo --adapter ...`. A few steps on the claims environment show the
moving parts (loss falling on held-out rows, the DPO reward margin); `make demo` is the full run.
"""

import argparse
import tempfile
from pathlib import Path

from transformers import AutoTokenizer

from agentft.collect import CollectConfig, collect
from agentft.datasets import build_sft_dataset, save_sft_dataset
from agentft.models import resolve_model_path
from agentft.preferences import PreferenceConfig, build_dpo_dataset, save_dpo_dataset
from agentft.runner import RunConfig
from agentft.train import DPOTrainConfig, SFTTrainConfig, build_config, train_dpo, train_sft

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="smollm2-135m", help="embedded model name or local model directory")
parser.add_argument("--steps", type=int, default=4, help="optimizer steps of SFT and of DPO")
parser.add_argument("--out", default=None)
args = parser.parse_args()
out = Path(args.out or tempfile.mkdtemp(prefix="agentft-train-"))
env = {"sandbox": False}  # in-process tools: fine for the oracle and a short demo

# 1. Demonstrations from the oracle, and the untuned model's attempts at the same tasks (for DPO pairs).
oracle = collect(CollectConfig(env="claims", policy="oracle", out=str(out / "oracle"), n=27, env_kwargs=env)).out
attempts = collect(
    CollectConfig(
        env="claims",
        policy=f"hf:{args.model}",
        out=str(out / "base"),
        n=9,
        env_kwargs=env,
        policy_kwargs={"max_new_tokens": 32},
        run=RunConfig(max_steps=3, batch_size=9),
    )
).out

# 2. SFT rows (split by task) and DPO pairs at the turn where an attempt departs from the oracle.
tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(args.model))
sft_data = save_sft_dataset(build_sft_dataset([oracle], tokenizer=tokenizer, validation_fraction=0.2), out / "sft")
pairs = build_dpo_dataset([oracle, attempts], PreferenceConfig())
dpo_data = save_dpo_dataset(pairs, out / "dpo")
print(f"datasets: {sft_data} (SFT rows), {dpo_data} ({pairs.stats['pairs']} pairs {pairs.stats['by_kind']})")

# 3. LoRA SFT with the cpu-small recipe (bf16 where the CPU has it natively), then DPO from that adapter.
sft = train_sft(
    build_config(
        SFTTrainConfig,
        "cpu-small",
        model=args.model,
        data=str(sft_data),
        out=str(out / "adapter-sft"),
        max_steps=args.steps,
        logging_steps=1,
        device="cpu",
    )
)
print(
    f"SFT: {sft['steps']} steps, {sft['precision']}, {sft['tokens_per_second']:.0f} tokens/s; held-out loss "
    f"{sft['eval_loss_before']:.3f} -> {sft['eval_loss']:.3f}"
)
dpo = train_dpo(
    build_config(
        DPOTrainConfig,
        "cpu-small",
        model=args.model,
        adapter=str(out / "adapter-sft"),
        data=str(dpo_data),
        out=str(out / "adapter-dpo"),
        max_steps=args.steps,
        logging_steps=1,
        device="cpu",
    )
)
print(
    f"DPO: {dpo['pairs']} pairs, {dpo['steps']} steps; reward margin {dpo['reward_margin_first']:.3f} -> "
    f"{dpo['reward_margin_last']:.3f}"
)
print(
    f"adapters: {out / 'adapter-sft'}, {out / 'adapter-dpo'} (try: agentft eval --env claims "
    f"--policy hf:{args.model}@{out / 'adapter-dpo'} --n 9)"
)
