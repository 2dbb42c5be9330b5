"""A reward model over TRL's ``RewardTrainer``: the base model with a one-number head, trained (LoRA by default) to
score the chosen turn of each preference pair above the rejected one (Bradley-Terry).

The pairs are a DPO dataset (``agentft dataset dpo``): a conversation, the tools offered, a chosen and a
rejected assistant turn. The pairs of a seeded sample of tasks (about ``validation_fraction`` of the pairs; all
of a task's pairs on one side, so none of a held-out conversation was trained on) are held out and ranked after
training: ``heldout_accuracy`` in the metrics is the share ranked the right way round, the figure that says
whether the model learned anything beyond its training pairs. The trained model scores turns
for best-of-N (``agentft.bestof``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentft.errors import UserError
from agentft.train.common import (
    callbacks,
    data_files,
    finish_run,
    resolve_device,
    resume_point,
    train_timed,
    trainer_arguments,
    use_bf16,
)
from agentft.train.config import RMTrainConfig

__all__ = ["train_rm", "RewardModel"]


def _classifier(config: RMTrainConfig, device: str) -> tuple[Any, Any]:
    """The base model under a fresh scalar head (``score``), with a new LoRA adapter unless ``full``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

    from agentft.models import resolve_model_path

    if config.adapter:
        raise UserError(
            "a reward model trains a new head on the base model; to start from an SFT model, merge it first "
            "(agentft export ADAPTER --merge) and pass the merged directory as --model"
        )
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    path = resolve_model_path(config.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    dtype = torch.bfloat16 if device == "cuda" and use_bf16(config, device) else torch.float32
    set_seed(config.seed)  # the new head's initial weights
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype).to(device)
    model.config.pad_token_id = tokenizer.pad_token_id
    if config.full:
        return model, tokenizer
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        modules_to_save=["score"],
        task_type="SEQ_CLS",
    )
    return get_peft_model(model, lora), tokenizer


def train_rm(config: RMTrainConfig) -> dict[str, Any]:
    from datasets import load_dataset
    from trl import RewardConfig, RewardTrainer

    device = resolve_device(config)
    out = Path(config.out)
    files = data_files(config.data, names=("train.jsonl",))
    if not 0 <= config.validation_fraction < 1:
        raise UserError(f"validation_fraction must be in [0, 1), not {config.validation_fraction}")
    checkpoint = resume_point(config)
    data = load_dataset("json", data_files={"train": str(files[0])})["train"]
    heldout_rows = _heldout_rows(data, config.validation_fraction, config.seed)
    data = data.remove_columns([c for c in data.column_names if c not in ("prompt", "chosen", "rejected", "tools")])
    held = len(heldout_rows)
    if len(data) - held < 1:
        raise UserError(f"{files[0]} holds {len(data)} preference pair(s): too few to train a reward model")
    train = data.select([i for i in range(len(data)) if i not in heldout_rows])
    heldout = data.select(sorted(heldout_rows))
    model, tokenizer = _classifier(config, device)
    arguments = RewardConfig(**trainer_arguments(config, device), max_length=config.max_length)
    trainer = RewardTrainer(
        model=model, processing_class=tokenizer, args=arguments, train_dataset=train, callbacks=callbacks(out)
    )
    metrics: dict[str, Any] = {"device": device, "pairs": len(train), **train_timed(trainer, checkpoint)}
    if held:
        scorer = RewardModel.from_trained(trainer.model, tokenizer)
        right = [scorer.prefers(row["prompt"], row["chosen"], row["rejected"], row["tools"]) for row in heldout]
        metrics.update(heldout_pairs=held, heldout_accuracy=round(sum(right) / held, 4))
    return finish_run(trainer, tokenizer, config, kind="rm", inputs=files, metrics=metrics)


def _heldout_rows(data: Any, fraction: float, seed: int) -> set[int]:
    """Rows of a seeded sample of tasks holding about ``fraction`` of the pairs (rows without a task: each its own)."""
    import random

    groups: dict[str, list[int]] = {}
    for index, source in enumerate(data["source"] if "source" in data.column_names else [None] * len(data)):
        task = source.get("task_id") if isinstance(source, dict) else None
        groups.setdefault(str(task) if task else f"#{index}", []).append(index)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    wanted, rows = round(len(data) * fraction), set()
    for key in order:
        if len(rows) >= wanted:
            break
        rows.update(groups[key])
    return rows


@dataclass
class RewardModel:
    """A trained reward model: ``score`` gives each conversation (ending in the assistant turn to judge) a number;
    higher is better. Loaded from ``agentft train rm``'s output directory."""

    model: Any
    tokenizer: Any
    batch_size: int = 8

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str = "cpu") -> RewardModel:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from agentft.models import resolve_model_path

        path = Path(path)
        manifest = path / "manifest.json"
        if not manifest.exists() or json.loads(manifest.read_text()).get("kind") != "rm":
            raise UserError(
                f"{path} is not a reward model (no manifest.json of kind rm): train one with agentft train rm"
            )
        base = json.loads(manifest.read_text())["config"]["model"]
        tokenizer = AutoTokenizer.from_pretrained(path)
        if (path / "adapter_config.json").exists():
            model = AutoModelForSequenceClassification.from_pretrained(
                resolve_model_path(base), num_labels=1, dtype=torch.float32
            )
            model.config.pad_token_id = tokenizer.pad_token_id
            model = PeftModel.from_pretrained(model, path).merge_and_unload()
        else:
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
        return cls.from_trained(model.to(device), tokenizer)

    @classmethod
    def from_trained(cls, model: Any, tokenizer: Any) -> RewardModel:
        model.eval()
        model.config.pad_token_id = tokenizer.pad_token_id
        return cls(model, tokenizer)

    def score(self, conversations: list[list[dict[str, Any]]], tools: Any = None) -> list[float]:
        """One score per conversation (Hugging Face message dicts); ``tools`` as OpenAI schemas or their JSON."""
        import torch

        tools = json.loads(tools) if isinstance(tools, str) else tools
        scores: list[float] = []
        for start in range(0, len(conversations), self.batch_size):
            ids = [
                self.tokenizer.apply_chat_template(c, tools=tools or None, tokenize=True, return_dict=True)["input_ids"]
                for c in conversations[start : start + self.batch_size]
            ]
            width = max(len(i) for i in ids)
            pad = self.tokenizer.pad_token_id
            input_ids = torch.tensor([i + [pad] * (width - len(i)) for i in ids], device=self.model.device)
            mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids], device=self.model.device)
            with torch.inference_mode():
                logits = self.model(input_ids=input_ids, attention_mask=mask).logits
            scores.extend(float(x) for x in logits[:, 0])
        return scores

    def prefers(self, prompt: list[dict[str, Any]], chosen: list[dict[str, Any]], rejected: Any, tools: Any) -> bool:
        """Whether the chosen turn scores above the rejected one."""
        good, bad = self.score([prompt + chosen, prompt + rejected], tools)
        return good > bad
