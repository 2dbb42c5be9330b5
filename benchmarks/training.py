"""agentft SFT (cpu-small recipe) vs a plain TRL SFTTrainer script with its default settings.

Same model (SmolLM2-135M-Instruct), same rows of oracle claims trajectories, same number of optimizer
steps and effective batch, same LoRA rank and learning rate; run one after the other in one process.
Prints real (non-padding) tokens/s of each, the ratio (goal >= 1.5x), and the final training losses
(goal: within 5%), for the cpu-small recipe as shipped (LoRA on the top 15 layers) and with LoRA on
every layer like the plain script, which separates the speed choices from the recipe's depth trade-off.

Run: .venv/bin/python benchmarks/training.py [--steps 12] [--data DIR]
"""

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_data(root: Path) -> Path:
    from agentft.collect import CollectConfig, collect
    from agentft.datasets import build_sft_dataset, save_sft_dataset

    trajectories = collect(
        CollectConfig(env="claims", policy="oracle", out=str(root / "oracle"), n=72, env_kwargs={"sandbox": False})
    ).out
    return save_sft_dataset(build_sft_dataset([trajectories]), root / "sft")


def plain_trl(data: Path, out: Path, steps: int) -> tuple[float, float]:
    """What a user writes from TRL's docs: defaults (8 examples per step, padded), LoRA via peft_config."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from agentft.models import load_model

    torch.set_num_threads(os.cpu_count() or 1)
    model, tokenizer = load_model("smollm2-135m")
    model.train()
    rows = load_dataset("json", data_files=str(data / "train.jsonl"))["train"].remove_columns(["trajectory_id"])
    trainer = SFTTrainer(
        model=model,
        processing_class=tokenizer,
        train_dataset=rows,
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
        args=SFTConfig(
            output_dir=str(out),
            max_steps=steps,
            per_device_train_batch_size=8,
            learning_rate=1e-3,
            assistant_only_loss=True,
            max_length=None,
            use_cpu=True,
            bf16=False,
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            include_num_input_tokens_seen="non_padding",
        ),
    )
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    return trainer.state.num_input_tokens_seen / seconds, result.training_loss


def agentft_sft(data: Path, out: Path, steps: int, **overrides) -> tuple[float, float]:
    from agentft.train import SFTTrainConfig, build_config, train_sft

    config = build_config(
        SFTTrainConfig,
        "cpu-small",
        model="smollm2-135m",
        data=str(data),
        out=str(out),
        max_steps=steps,
        save_steps=10_000,
        logging_steps=1,
    )
    for name, value in overrides.items():
        setattr(config, name, value)
    metrics = train_sft(config)
    return metrics["tokens_per_second"], metrics["train_loss"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="agentft-train-bench-"))
    data = args.data or make_data(root)
    trl_speed, trl_loss = plain_trl(data, root / "trl", args.steps)
    runs = {
        "agentft cpu-small": agentft_sft(data, root / "agentft", args.steps),
        # The recipe with LoRA on every layer, as the plain script has it: what the speed choices alone do.
        "agentft cpu-small, LoRA on every layer": agentft_sft(
            data, root / "agentft-all", args.steps, lora_top_layers=None
        ),
    }
    print(
        f"# SmolLM2-135M LoRA SFT, {args.steps} optimizer steps of 8 examples; {platform.machine()}, "
        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
    )
    print("| trainer | real tokens/s | final training loss | speed ratio | loss difference |")
    print("|---|---|---|---|---|")
    print(f"| plain TRL SFTTrainer (defaults) | {trl_speed:.1f} | {trl_loss:.4f} | 1.00x | - |")
    for name, (speed, loss) in runs.items():
        difference = abs(loss - trl_loss) / trl_loss
        print(f"| {name} | {speed:.1f} | {loss:.4f} | {speed / trl_speed:.2f}x | {difference:.1%} |")


if __name__ == "__main__":
    main()
