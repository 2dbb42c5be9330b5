"""What every training method shares: the model with its adapter, trainer arguments, callbacks that write
``metrics.jsonl`` and mark checkpoints complete, resume, and the output directory (adapter or model,
tokenizer with its chat template, ``manifest.json``, ``loss.png``)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agentft.errors import UserError
from agentft.jsonl import ReadReport, read_jsonl, write_jsonl_atomic
from agentft.manifest import write_manifest
from agentft.train.config import TrainConfig

__all__ = [
    "prepare_model",
    "trainer_arguments",
    "callbacks",
    "newest_complete_checkpoint",
    "resume_point",
    "finish_run",
    "resolve_device",
    "use_bf16",
    "data_files",
    "train_timed",
    "assistant_tokens",
]

COMPLETE = ".agentft-complete"


def assistant_tokens(tokenizer: Any, messages: list[dict[str, Any]]) -> int:
    """How many tokens of ``messages`` the tokenizer's chat template marks as the assistant's (its
    ``{% generation %}`` blocks): what an assistant-only loss trains on."""
    encoded = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    return sum(encoded["assistant_masks"])


def resolve_device(config: TrainConfig) -> str:
    import torch

    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if config.device == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda asked for, but torch sees no GPU: use --device cpu (or the cpu-small recipe)")
    return config.device


def use_bf16(config: TrainConfig, device: str) -> bool:
    """Whether to train in bf16 mixed precision: ``bf16: true/false`` as given; ``auto`` on a GPU, and on a CPU
    that multiplies bf16 natively (AVX512-BF16 or AMX: matmuls ~4x faster, an SFT step ~2x); a CPU without it
    emulates bf16, slower than fp32."""
    if isinstance(config.bf16, bool):
        return config.bf16
    if str(config.bf16).lower() != "auto":
        raise UserError(f"bf16 must be true, false or auto, not {config.bf16!r}")
    from agentft.models import resolve_dtype

    return resolve_dtype("auto", device) == "bfloat16"


def prepare_model(config: TrainConfig, device: str) -> tuple[Any, Any]:
    """The model ready to train: a new LoRA adapter, the given adapter made trainable, or every weight (full)."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    from agentft.models import load_model

    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    # a CPU keeps the weights fp32 and autocasts the matmuls to bf16
    dtype = "bfloat16" if device == "cuda" and use_bf16(config, device) else "float32"
    model, tokenizer = load_model(config.model, dtype=dtype, device=device)
    model.train()
    model.config.use_cache = False
    if config.full:
        if config.adapter:
            raise UserError("--full trains every weight; merge the adapter first (agentft export --merge)")
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model, tokenizer
    if config.adapter:
        adapter = Path(config.adapter)
        if not (adapter / "adapter_config.json").exists():
            raise UserError(f"{adapter} is not a LoRA adapter directory (no adapter_config.json)")
        return PeftModel.from_pretrained(model, adapter, is_trainable=True), tokenizer
    layers, targets = None, config.target_modules
    if config.lora_top_layers:
        total = model.config.num_hidden_layers
        layers = list(range(max(0, total - config.lora_top_layers), total))
        if targets == "all-linear":  # peft needs names to combine with layers_to_transform
            targets = sorted(
                {
                    name.rsplit(".", 1)[-1]
                    for name, module in model.named_modules()
                    if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}"
                }
            )
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora), tokenizer


def trainer_arguments(config: TrainConfig, device: str) -> dict[str, Any]:
    """Arguments shared by every TRL config: explicit about precision, checkpointing and reporting."""
    return {
        "output_dir": config.out,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps,
        "learning_rate": config.lr,
        "warmup_steps": config.warmup_steps,
        "per_device_train_batch_size": config.batch_size,
        "per_device_eval_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "bf16": use_bf16(config, device),
        "use_cpu": device == "cpu",
        "activation_checkpointing": config.gradient_checkpointing,
        "seed": config.seed,
        "logging_steps": config.logging_steps,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "report_to": config.report_to or "none",
        "dataloader_num_workers": 0,  # collation is cheap; both cores go to the matmuls
        "include_num_input_tokens_seen": "non_padding",
        "disable_tqdm": False,
    }


def _before(checkpoint: Path | None) -> dict[str, Any]:
    """What the parts of the run before ``checkpoint`` did: steps, the summed loss of the steps whose loss was
    logged, training seconds, tokens, and the planned number of steps."""
    if checkpoint is None:
        return {"step": 0, "loss_sum": 0.0, "loss_steps": 0, "seconds": 0.0, "tokens": 0, "max_steps": 0}
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    marker = json.loads((checkpoint / COMPLETE).read_text() or "{}")
    loss_sum, last = 0.0, 0
    for entry in state.get("log_history", []):
        # each logged loss is the mean over the steps since the previous log
        if "loss" in entry and last < entry["step"] <= state["global_step"]:
            loss_sum += entry["loss"] * (entry["step"] - last)
            last = entry["step"]
    return {
        "step": state["global_step"],
        "loss_sum": loss_sum,
        "loss_steps": last,
        "seconds": marker.get("train_seconds", 0.0),
        "tokens": state.get("num_input_tokens_seen", 0),
        "max_steps": state.get("max_steps", 0),
    }


def train_timed(trainer: Any, checkpoint: Path | None) -> dict[str, Any]:
    """Train (resuming from ``checkpoint`` when given); the loss, steps, time and real tokens/s.

    Loss, steps, seconds and tokens are totals over every part of the run, not just this one (the loss of steps
    between a checkpoint and the log before it is unknown: with ``save_steps`` a multiple of ``logging_steps``
    there are none). A checkpoint that already reached the last step (a run killed during its final save) is
    loaded, not trained further: resuming it would run one step past ``max_steps``."""
    before = _before(checkpoint)
    target = trainer.args.max_steps if trainer.args.max_steps > 0 else before["max_steps"]
    started = time.perf_counter()
    if checkpoint is not None and before["step"] >= target:
        from transformers import TrainerState

        trainer._load_from_checkpoint(str(checkpoint))  # the weights trainer.train would have resumed with
        trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
        part_loss = 0.0
    else:
        part_loss = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None).training_loss
    seconds = time.perf_counter() - started
    part_steps = trainer.state.global_step - before["step"]
    loss_steps = before["loss_steps"] + part_steps
    tokens = trainer.state.num_input_tokens_seen
    return {
        "train_loss": (before["loss_sum"] + part_loss * part_steps) / loss_steps if loss_steps else None,
        "steps": trainer.state.global_step,
        "train_seconds": round(before["seconds"] + seconds, 1),
        "tokens": tokens,
        "tokens_per_second": round((tokens - before["tokens"]) / seconds, 1) if seconds and part_steps else None,
        "resumed_from": str(checkpoint) if checkpoint else None,
        "resumed_at_step": before["step"] if checkpoint else None,
    }


def callbacks(out: Path) -> list[Any]:
    from transformers import TrainerCallback

    class MetricsFile(TrainerCallback):
        """Appends every log line to ``metrics.jsonl`` as it happens."""

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if state.is_world_process_zero and logs:
                with (out / "metrics.jsonl").open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"step": state.global_step, "time": round(time.time(), 3), **logs}) + "\n")

    class MarkComplete(TrainerCallback):
        """A checkpoint counts only once it is fully written: the marker is the last file in it. It also holds
        the training seconds so far, every part of a resumed run included, for the manifest's totals."""

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self.started = time.perf_counter()
            marker = out / f"checkpoint-{state.global_step}" / COMPLETE  # the checkpoint resumed from, if any
            self.before = json.loads(marker.read_text() or "{}").get("train_seconds", 0.0) if marker.exists() else 0.0

        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
            checkpoint = out / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and checkpoint.is_dir():
                seconds = round(self.before + time.perf_counter() - self.started, 1)
                (checkpoint / COMPLETE).write_text(json.dumps({"step": state.global_step, "train_seconds": seconds}))

    return [MetricsFile(), MarkComplete()]


def newest_complete_checkpoint(out: Path) -> Path | None:
    """The latest checkpoint that was completely written; half-written ones are ignored."""
    complete = [p for p in out.glob("checkpoint-*") if (p / COMPLETE).exists() and p.name.split("-")[-1].isdigit()]
    return max(complete, key=lambda p: int(p.name.split("-")[-1]), default=None)


def resume_point(config: TrainConfig) -> Path | None:
    """The checkpoint ``--resume`` continues from (None: train from the start), with ``metrics.jsonl`` cut back
    to that checkpoint's step so that no step is logged twice. Creates the output directory."""
    out = Path(config.out)
    checkpoint = newest_complete_checkpoint(out) if config.resume else None
    if config.resume and checkpoint is None and (out / "manifest.json").exists():
        raise UserError(
            f"{out} holds a finished run (manifest.json, no checkpoint left): nothing to resume; "
            "drop --resume to train it again from the start, or train into another --out"
        )
    if config.resume and checkpoint is None and out.exists() and any(out.glob("checkpoint-*")):
        raise UserError(f"{out} has no complete checkpoint to resume from")
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.jsonl"
    if checkpoint is None:
        metrics.unlink(missing_ok=True)
    elif metrics.exists():
        step = int(checkpoint.name.split("-")[-1])
        kept = []
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line torn by the kill
                continue
            if entry.get("step", 0) <= step:
                kept.append(entry)
        write_jsonl_atomic(metrics, kept)
    return checkpoint


def data_files(directory: str | Path, names: tuple[str, ...] = ("train.jsonl", "validation.jsonl")) -> list[Path]:
    directory = Path(directory)
    if not (directory / "train.jsonl").exists():
        raise UserError(f"{directory} is not an agentft dataset (no train.jsonl): build one with `agentft dataset`")
    files = [directory / n for n in names if (directory / n).exists()]
    for path in files:
        _check_jsonl(path)
    return files


def _json_object(line: bytes) -> dict[str, Any]:
    row = json.loads(line)
    if not isinstance(row, dict):
        raise ValueError(f"a JSON {type(row).__name__}, not an object")
    return row


def _check_jsonl(path: Path) -> None:
    """Every line of a dataset file is a JSON object, or a ``UserError`` names the file and line (the dataset
    loader would otherwise fail deep inside ``datasets`` with no file name). A dataset file is written whole,
    so a torn last line is an error here too, not a record to skip."""
    report = ReadReport()
    for _ in read_jsonl(path, _json_object, report=report, what="JSON object"):
        pass
    if report.torn_tail:
        number = path.read_bytes().rstrip(b"\x00").count(b"\n") + 1
        raise UserError(
            f"{path}:{number}: not valid JSON (the file ends in a cut-short line); rebuild it with `agentft dataset`"
        )


_PANELS = (
    ("loss", (("loss", "train loss"), ("eval_loss", "validation loss"))),
    ("reward (mean, ±1 sd)", (("reward", "reward"),)),
    ("rate", (("success", "success"), ("compliance", "compliance"))),
    ("KL to reference", (("kl", "KL"),)),
    ("rollout tokens/s", (("rollout/tokens_per_s", "sampled tokens/s"),)),
)
"""The training curves: one panel per group of logged metrics, drawn when the run logged any of them."""


def _plot(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    panels = [(title, series) for title, series in _PANELS if any(key in r for r in rows for key, _ in series)]
    panels = panels or [_PANELS[0]]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for axis, (title, series) in zip(axes[0], panels, strict=True):
        for key, label in series:
            points = [(r["step"], r[key]) for r in rows if key in r]
            if not points:
                continue
            steps, values = zip(*points, strict=True)
            axis.plot(steps, values, "o-" if key == "eval_loss" or len(points) < 30 else "-", label=label)
            if key == "reward":
                spread = [r.get("reward_std", 0.0) for r in rows if key in r]
                low = [v - d for v, d in zip(values, spread, strict=True)]
                high = [v + d for v, d in zip(values, spread, strict=True)]
                axis.fill_between(steps, low, high, alpha=0.2)
        axis.set_xlabel("step")
        axis.set_title(title)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    figure.suptitle(out.name)
    figure.tight_layout()
    figure.savefig(out / "loss.png", dpi=100)
    plt.close(figure)


def finish_run(
    trainer: Any,
    tokenizer: Any,
    config: TrainConfig,
    *,
    kind: str,
    inputs: list[Path],
    metrics: dict[str, Any],
    outputs: Sequence[Path] = (),
) -> dict[str, Any]:
    """Save the adapter (or model) and tokenizer, the training curves and the manifest (with the method's own
    ``outputs`` beside the adapter's files); drop finished checkpoints."""
    out = Path(config.out)
    metrics["precision"] = "bf16 mixed" if trainer.args.bf16 else "fp32"
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    if (out / "metrics.jsonl").exists():
        _plot(out)
    standard = (out / "adapter_model.safetensors", out / "model.safetensors", out / "metrics.jsonl", out / "loss.png")
    outputs = [p for p in (*standard, *outputs) if p.exists()]
    write_manifest(
        out, kind=kind, config={**asdict(config), "method": kind}, inputs=inputs, outputs=outputs, metrics=metrics
    )
    # Markers first: a kill halfway through the removal must not leave a half-deleted checkpoint that looks complete.
    for checkpoint in out.glob("checkpoint-*"):
        (checkpoint / COMPLETE).unlink(missing_ok=True)
    for checkpoint in out.glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)
    return metrics
