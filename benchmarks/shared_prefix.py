"""Running a batch's shared opening once: SFT and DPO steps with and without it, side by side.

SmolLM2-135M-Instruct with a LoRA adapter on the top 15 layers (the cpu-small recipe), oracle claims
trajectories; every conversation opens with the same system prompt and tool list (~590 tokens).

- SFT: one optimizer step's forward + backward over 8 conversations packed in one row, the loss at
  trained positions only; without sharing the row's attention spans all 8 conversations.
- DPO: forward + backward of the policy and the reference log-probs for 4 pairs (one pair per batch, as
  in cpu-small): TRL's DPOTrainer as shipped, then agentft's (shared opening, completion-only LM head).
- Rests (``--rests``): SFT steps of 8 with the shared opening, the conversations' rests padded to the
  longest and attending to the opening's cache repeated once per row (agentft before 2026-12-01), against
  the rests packed end to end (as shipped); in fp32 and, on a CPU with native bf16, under bf16 autocast as
  the trainer runs there; interleaved rounds.

Prints seconds, tokens/s, the ratio and the loss difference (it must be ~0: the same computation).

Run: .venv/bin/python benchmarks/shared_prefix.py [--rests]
"""

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_data(root: Path, n: int = 27) -> tuple[Path, Path]:
    from agentft.collect import CollectConfig, collect
    from agentft.datasets import build_sft_dataset, save_sft_dataset
    from agentft.preferences import PreferenceConfig, build_dpo_dataset, save_dpo_dataset

    trajectories = collect(
        CollectConfig(env="claims", policy="oracle", out=str(root / "oracle"), n=n, env_kwargs={"sandbox": False})
    ).out
    sft = save_sft_dataset(build_sft_dataset([trajectories]), root / "sft")
    pairs = build_dpo_dataset([trajectories], PreferenceConfig(step_pairs=False, perturbations=True))
    return sft, save_dpo_dataset(pairs, root / "dpo")


def timed(work) -> tuple[float, float]:
    started = time.perf_counter()
    value = work()
    return time.perf_counter() - started, value


def sft_batches(data: Path, out: Path, examples: int) -> tuple[object, list[dict]]:
    """The cpu-small SFT model and its first packed batches of 8 over ``examples`` rows."""
    from datasets import load_dataset
    from trl import SFTConfig

    from agentft.train import SFTTrainConfig, build_config
    from agentft.train.common import prepare_model, trainer_arguments
    from agentft.train.sft import _trainer_class

    config = build_config(SFTTrainConfig, "cpu-small", model="smollm2-135m", data=str(data), out=str(out))
    rows = load_dataset("json", data_files=str(data / "train.jsonl"))["train"].select(range(examples))
    rows = rows.remove_columns(["trajectory_id"])
    model, tokenizer = prepare_model(config, "cpu")
    trainer = _trainer_class(True, True)(
        model=model,
        processing_class=tokenizer,
        train_dataset=rows,
        args=SFTConfig(
            **trainer_arguments(config, "cpu"), assistant_only_loss=True, padding_free=True, max_length=None
        ),
    )
    return model, list(trainer.get_train_dataloader())


def sft_step(data: Path, out: Path) -> None:
    from agentft.train.sft import label_positions_loss

    model, (batch,) = sft_batches(data, out, 8)
    tokens = batch["input_ids"].shape[1]

    def step(share: bool):
        model.zero_grad()
        loss, _ = label_positions_loss(model, batch, share_prefix=share)
        loss.backward()
        return loss.item()

    print(f"\n## SFT step: 8 conversations, {tokens} tokens")
    print("| | seconds | tokens/s | loss |\n|---|---|---|---|")
    step(True)  # warm-up: kernels, thread pools, lazy imports
    results = {}
    for share in (False, True):
        seconds, loss = timed(lambda share=share: step(share))
        results[share] = (seconds, loss)
        name = "shared opening" if share else "packed row"
        print(f"| {name} | {seconds:.1f} | {tokens / seconds:.0f} | {loss:.6f} |")
    print(
        f"speed ratio {results[False][0] / results[True][0]:.2f}x; "
        f"loss difference {abs(results[True][1] - results[False][1]):.1e}"
    )


def dpo_steps(data: Path, out: Path) -> None:
    from datasets import load_dataset
    from trl import DPOConfig

    from agentft.train import DPOTrainConfig, build_config
    from agentft.train.common import prepare_model
    from agentft.train.dpo import _trainer_class

    config = build_config(DPOTrainConfig, "cpu-small", model="smollm2-135m", data=str(data), out=str(out))
    config.lora_top_layers = 15  # as an adapter from cpu-small SFT has it
    rows = load_dataset("json", data_files=str(data / "train.jsonl"))["train"].select(range(4))
    rows = rows.remove_columns([c for c in rows.column_names if c not in ("prompt", "chosen", "rejected", "tools")])
    model, tokenizer = prepare_model(config, "cpu")
    trainer = _trainer_class(True)(
        model=model,
        processing_class=tokenizer,
        train_dataset=rows,
        args=DPOConfig(
            output_dir=str(out),
            report_to=[],
            use_cpu=True,
            per_device_train_batch_size=1,
            precompute_ref_log_probs=False,
        ),
    )
    batches = list(trainer.get_train_dataloader())
    tokens = sum(b["input_ids"].numel() for b in batches)

    def steps(cls):
        total = 0.0
        for batch in batches:
            model.zero_grad()
            loss = cls.compute_loss(trainer, model, batch)
            loss.backward()
            total += loss.item()
        return total

    print(f"\n## DPO: 4 pairs (policy forward + backward, reference forward), {tokens} tokens")
    print("| trainer | seconds | tokens/s | summed loss |\n|---|---|---|---|")
    steps(type(trainer))  # warm-up
    results = {}
    for name, cls in (("TRL DPOTrainer", _trainer_class(False)), ("agentft", type(trainer))):
        seconds, loss = timed(lambda cls=cls: steps(cls))
        results[name] = (seconds, loss)
        print(f"| {name} | {seconds:.1f} | {tokens / seconds:.0f} | {loss:.6f} |")
    (trl_s, trl_loss), (ours_s, ours_loss) = results.values()
    print(f"speed ratio {trl_s / ours_s:.2f}x; loss difference {abs(trl_loss - ours_loss):.1e}")


def padded_rests_hidden(backbone, input_ids, attention_mask):
    """``shared_prefix_hidden`` before 2026-12-01: every row's rest padded to the longest, attending to the
    opening's cache repeated once per row."""
    import torch

    from agentft.train.prefix import shared_prefix_length

    rows, width = input_ids.shape
    length = shared_prefix_length(input_ids, attention_mask)
    prefix = backbone(input_ids=input_ids[:1, :length], use_cache=True)
    cache = prefix.past_key_values
    cache.batch_repeat_interleave(rows)
    positions = torch.arange(length, width, device=input_ids.device).expand(rows, -1)
    rest = backbone(
        input_ids=input_ids[:, length:],
        attention_mask=attention_mask,
        position_ids=positions,
        cache=cache,
        use_cache=True,
    ).last_hidden_state
    return torch.cat([prefix.last_hidden_state.expand(rows, -1, -1), rest], dim=1)


def sft_rests(data: Path, out: Path, batches: int = 4, rounds: int = 2) -> None:
    import contextlib

    import torch

    import agentft.train.sft as sft
    from agentft.models import resolve_dtype
    from agentft.train.prefix import shared_prefix_hidden

    model, loader = sft_batches(data, out, 8 * batches)
    tokens = sum(b["input_ids"].numel() for b in loader)  # packed rows: real tokens only
    variants = {"padded rests (before)": padded_rests_hidden, "packed rests (as shipped)": shared_prefix_hidden}
    precisions = ["fp32"] + (["bf16"] if resolve_dtype("auto", "cpu") == "bfloat16" else [])

    def steps(hidden, precision: str) -> float:
        sft.shared_prefix_hidden = hidden
        total = 0.0
        for batch in loader:
            model.zero_grad()
            autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
            with autocast:
                loss, _ = sft.label_positions_loss(model, batch, share_prefix=True)
            loss.backward()
            total += loss.item()
        return total

    print(f"\n## SFT, shared opening: {len(loader)} steps of 8 conversations, {tokens} tokens, {rounds} rounds")
    print("| precision | rests | round | seconds | tokens/s | summed loss |\n|---|---|---|---|---|---|")
    for precision in precisions:
        steps(shared_prefix_hidden, precision)  # warm-up
        seconds = {name: [] for name in variants}
        losses = {}
        for round_ in range(1, rounds + 1):
            for name, hidden in variants.items():
                elapsed, losses[name] = timed(lambda hidden=hidden, precision=precision: steps(hidden, precision))
                seconds[name].append(elapsed)
                row = f"{elapsed:.1f} | {tokens / elapsed:.0f} | {losses[name]:.6f}"
                print(f"| {precision} | {name} | {round_} | {row} |")
        before, after = (sum(seconds[name]) for name in variants)
        first, second = losses.values()
        print(f"{precision}: speed ratio {before / after:.2f}x; loss difference {abs(first - second):.1e}")
    sft.shared_prefix_hidden = shared_prefix_hidden


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rests", action="store_true", help="only the padded-vs-packed rests comparison")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    root = Path(tempfile.mkdtemp(prefix="agentft-prefix-bench-"))
    sft, dpo = make_data(root, n=48 if args.rests else 27)  # 48: 32 train rows after validation
    print(f"# shared opening, SmolLM2-135M; {platform.machine()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")
    if args.rests:
        sft_rests(sft, root / "rests-out")
        return
    sft_step(sft, root / "sft-out")
    dpo_steps(dpo, root / "dpo-out")


if __name__ == "__main__":
    main()
