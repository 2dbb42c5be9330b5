"""DPO over TRL's ``DPOTrainer`` with a LoRA adapter.

Starting from an SFT adapter (``config.adapter``), the adapter keeps training and the reference is the
SFT model itself: TRL loads a frozen copy of the adapter as "ref". Without one, a new adapter is trained
and the reference is the base model with the adapter disabled. Either way no second model is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentft.errors import UserError
from agentft.train.common import (
    callbacks,
    data_files,
    finish_run,
    prepare_model,
    resolve_device,
    resume_point,
    train_timed,
    trainer_arguments,
)
from agentft.train.config import DPOTrainConfig
from agentft.train.prefix import score_completions_only, sharing_backbone

__all__ = ["train_dpo"]


def _reward_margins(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["rewards/margins"] for r in rows if "rewards/margins" in r]


def _pairs_seen(config: DPOTrainConfig, pairs: int) -> float:
    """Pairs the run will train on: a precomputed reference pays off only when some are seen twice."""
    if config.max_steps > 0:
        return config.max_steps * config.batch_size * config.grad_accum
    return pairs * config.epochs


def _trainer_class(share_prefix: bool) -> type:
    from trl import DPOTrainer

    if not share_prefix:
        return DPOTrainer

    class SharedPrefixDPOTrainer(DPOTrainer):
        """Chosen and rejected rows share their prompt, and every pair the system prompt and tools: both the
        policy and the reference pass run that common opening once per batch (same log-probs)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
            with sharing_backbone(self.model), score_completions_only():
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        def compute_ref_log_probs(self, model, inputs):  # noqa: ANN001
            with sharing_backbone(self.model), score_completions_only():
                return super().compute_ref_log_probs(model, inputs)

    return SharedPrefixDPOTrainer


def train_dpo(config: DPOTrainConfig) -> dict[str, Any]:
    from datasets import load_dataset
    from trl import DPOConfig

    device = resolve_device(config)
    out = Path(config.out)
    files = data_files(config.data, names=("train.jsonl",))
    checkpoint = resume_point(config)
    data = load_dataset("json", data_files={"train": str(files[0])})["train"]
    keep = ("prompt", "chosen", "rejected", "tools")
    data = data.remove_columns([c for c in data.column_names if c not in keep])
    if len(data) == 0:
        raise UserError(f"{files[0]} holds no preference pairs")
    if config.full:
        raise UserError("DPO trains a LoRA adapter here (the reference is the adapter-disabled model)")
    model, tokenizer = prepare_model(config, device)
    arguments = DPOConfig(
        **trainer_arguments(config, device),
        beta=config.beta,
        loss_type=["sigmoid", "sft"] if config.sft_weight else ["sigmoid"],
        loss_weights=[1.0, config.sft_weight] if config.sft_weight else None,
        precompute_ref_log_probs=config.precompute_ref and _pairs_seen(config, len(data)) > len(data),
        max_length=config.max_length,
    )
    trainer = _trainer_class(config.share_prefix)(
        model=model, processing_class=tokenizer, args=arguments, train_dataset=data, callbacks=callbacks(out)
    )
    metrics: dict[str, Any] = {"device": device, "pairs": len(data), **train_timed(trainer, checkpoint)}
    margins = _reward_margins(out)
    metrics["reward_margin_first"] = margins[0] if margins else None
    metrics["reward_margin_last"] = margins[-1] if margins else None
    return finish_run(trainer, tokenizer, config, kind="dpo", inputs=files, metrics=metrics)
