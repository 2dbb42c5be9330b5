"""LoRA (or full) supervised fine-tuning over TRL's ``SFTTrainer``, loss on assistant tokens only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentft.errors import UserError
from agentft.train.common import (
    assistant_tokens,
    callbacks,
    data_files,
    finish_run,
    prepare_model,
    resolve_device,
    resume_point,
    train_timed,
    trainer_arguments,
)
from agentft.train.config import SFTTrainConfig
from agentft.train.prefix import shared_prefix_hidden, unpack_rows

__all__ = ["train_sft", "label_positions_loss"]


def label_positions_loss(
    model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None, share_prefix: bool = False
) -> tuple[Any, Any]:
    """Next-token loss with the LM head applied only where a label is trained.

    In a tool-use conversation most tokens are prompt (system, tools, user, tool results): projecting
    only the ~30% that carry a label through the (hidden x vocab) head gives the same loss and gradients
    for a fraction of the work. With ``share_prefix`` the examples of a packed batch that open with the
    same untrained tokens (system prompt and tool list, ~600 tokens in ``claims``) run that prefix once
    and attend to its keys and values; the loss and gradients are again the same. Returns the loss and
    the share of top-1 correct trained tokens.
    """
    import torch
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(base, base.base_model_prefix)
    rows = unpack_rows(inputs) if share_prefix else None
    if rows is None:
        forward = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
        hidden = backbone(**forward, use_cache=False).last_hidden_state[:, :-1]
        targets = inputs["labels"][:, 1:]
    else:
        input_ids, attention_mask, labels = rows
        hidden = shared_prefix_hidden(backbone, input_ids, attention_mask)[:, :-1]
        targets = labels[:, 1:]
    mask = targets != -100
    logits = base.get_output_embeddings()(hidden[mask]).float()
    picked = targets[mask]
    count = torch.as_tensor(num_items_in_batch if num_items_in_batch is not None else mask.sum(), device=logits.device)
    loss = F.cross_entropy(logits, picked, reduction="sum") / count.clamp(min=1)
    with torch.no_grad():
        accuracy = (logits.argmax(-1) == picked).float().mean() if picked.numel() else torch.zeros(())
    return loss, accuracy


def _trainer_class(label_positions_only: bool, share_prefix: bool) -> type:
    from trl import SFTTrainer

    if not label_positions_only:
        return SFTTrainer

    class LabelPositionsSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
            with self.accelerator.autocast():  # the loss calls the backbone, not the autocast-wrapped forward
                loss, accuracy = label_positions_loss(model, inputs, num_items_in_batch, share_prefix=share_prefix)
            mode = "train" if model.training else "eval"
            self._metrics[mode]["mean_token_accuracy"].append(accuracy.item())
            return (loss, {"loss": loss}) if return_outputs else loss

    return LabelPositionsSFTTrainer


def _check_weights(rows: Any, tokenizer: Any) -> None:
    """Refuse rows with ``weight: 0`` turns (agentft.recovery) when the chat template would train on them anyway."""
    if not any(m.get("weight") == 0 for messages in rows["messages"] for m in messages if m["role"] == "assistant"):
        return

    def learned(weight: int) -> int:
        probe = [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "One moment.", "weight": weight},
            {"role": "user", "content": "Thanks"},
            {"role": "assistant", "content": "Done.", "weight": 1},
        ]
        return assistant_tokens(tokenizer, probe)

    if learned(0) >= learned(1):
        raise UserError(
            "the data has assistant turns with weight 0 (slips of recovery demonstrations), but this model's chat "
            "template marks them for the loss anyway; use a template whose {% generation %} block skips a message "
            "with weight 0 (agentft's templates do: agentft.chat_format.CHAT_TEMPLATE), or build the data without "
            "--recovery"
        )


def train_sft(config: SFTTrainConfig) -> dict[str, Any]:
    """Train and write the output directory; returns the metrics (also in ``manifest.json``)."""
    from datasets import load_dataset
    from trl import SFTConfig

    device = resolve_device(config)
    out = Path(config.out)
    files = data_files(config.data)
    checkpoint = resume_point(config)
    splits = {"train": str(files[0])}
    if len(files) > 1 and files[1].stat().st_size:
        splits["validation"] = str(files[1])
    data = load_dataset("json", data_files=splits)
    data = data.remove_columns([c for c in data["train"].column_names if c not in ("messages", "tools")])
    model, tokenizer = prepare_model(config, device)
    _check_weights(data["train"], tokenizer)
    arguments = SFTConfig(
        **trainer_arguments(config, device),
        assistant_only_loss=True,
        padding_free=config.padding_free,
        max_length=config.max_length,
        eval_strategy="no",
    )
    trainer = _trainer_class(config.label_positions_only, config.share_prefix)(
        model=model,
        processing_class=tokenizer,
        args=arguments,
        train_dataset=data["train"],
        eval_dataset=data.get("validation"),
        callbacks=callbacks(out),
    )
    metrics: dict[str, Any] = {"device": device, "train_examples": len(data["train"])}
    if "validation" in data and checkpoint is None:
        metrics["eval_loss_before"] = trainer.evaluate()["eval_loss"]
    metrics.update(train_timed(trainer, checkpoint))
    if "validation" in data:
        metrics["eval_loss"] = trainer.evaluate()["eval_loss"]
    return finish_run(trainer, tokenizer, config, kind="sft", inputs=files, metrics=metrics)
