"""One config per training method, each field with its help; YAML recipes fill them, flags override.

The fields are the command line too: ``agentft train sft --lr 1e-4`` sets ``lr`` (``agentft.train.methods``).
Recipes live in ``agentft/recipes/<name>.yaml`` with one section per method (``sft``, ``dpo``, ``cpt``);
``--recipe`` also accepts a path to a YAML file of the same shape.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from agentft.errors import UserError
from agentft.train.methods import method_for

__all__ = [
    "TrainConfig",
    "SFTTrainConfig",
    "DPOTrainConfig",
    "CPTTrainConfig",
    "GRPOTrainConfig",
    "RMTrainConfig",
    "load_recipe",
    "build_config",
    "RECIPES",
]

RECIPES = ("cpu-small", "gpu-single", "gpu-multi")


def _help(
    text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING, required: bool = False
) -> Any:
    # required: the command line must give it; the default serves library calls and tests
    metadata = {"help": text, "required": required}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    model: str = _help("embedded model name (smollm2-135m, tiny-test) or a local model directory", "smollm2-135m")
    out: str = _help(
        "output directory (adapter or full model, manifest, metrics, loss curve)", "adapters/run", required=True
    )
    adapter: str | None = _help("LoRA adapter to start from (continue training it)", None)
    full: bool = _help("full fine-tuning of every weight instead of a LoRA adapter", False)
    epochs: float = _help("passes over the data", 1.0)
    max_steps: int = _help("stop after this many optimizer steps (-1: run the epochs)", -1)
    lr: float = _help("peak learning rate (linear decay)", 1e-3)
    warmup_steps: int = _help("linear warm-up steps", 0)
    batch_size: int = _help("examples per device per step", 2)
    grad_accum: int = _help("gradient accumulation steps", 1)
    lora_r: int = _help("LoRA rank", 16)
    lora_alpha: int = _help("LoRA scaling numerator (scale = alpha / r)", 32)
    lora_dropout: float = _help("LoRA dropout", 0.0)
    target_modules: str | list[str] = _help("LoRA target modules ('all-linear' or a list of names)", "all-linear")
    lora_top_layers: int | None = _help(
        "put LoRA only on the top N transformer layers: backward then stops there "
        "(on a CPU the backward pass is most of the time); None: every layer",
        None,
    )
    max_length: int | None = _help("truncate examples to this many tokens (None: never truncate)", None)
    bf16: bool | str = _help(
        "bf16 mixed precision: true, false or auto (on a GPU; on a CPU only where it multiplies "
        "bf16 natively, AVX512-BF16 or AMX: fp32 weights under autocast, ~2x faster; elsewhere "
        "bf16 is emulated and slower than fp32)",
        False,
    )
    gradient_checkpointing: bool = _help("recompute activations in backward (saves memory, ~25% slower)", False)
    seed: int = _help("random seed", 0)
    logging_steps: int = _help("log the loss every N steps", 5)
    save_steps: int = _help("checkpoint every N steps", 50)
    save_total_limit: int = _help("keep at most N checkpoints", 2)
    resume: bool = _help("resume from the newest complete checkpoint in `out`", False)
    report_to: list[str] = _help("experiment trackers (none by default; e.g. tensorboard, mlflow)", factory=list)
    device: str = _help("cpu, cuda or auto", "auto")


@dataclass
class SFTTrainConfig(TrainConfig):
    data: str = _help("SFT dataset directory from `agentft dataset sft`", "data/sft", required=True)
    padding_free: bool = _help("pack each batch into one row without padding (same loss, no padding work)", True)
    label_positions_only: bool = _help("project through the LM head only where a label is trained", True)
    share_prefix: bool = _help(
        "in a packed batch, run the untrained opening that examples share (system prompt, "
        "tools) once; same loss (needs padding_free and label_positions_only)",
        True,
    )


@dataclass
class DPOTrainConfig(TrainConfig):
    data: str = _help("DPO dataset directory from `agentft dataset dpo`", "data/dpo", required=True)
    lr: float = _help("peak learning rate", 5e-5)
    beta: float = _help("DPO temperature: how far the policy may move from the reference", 0.1)
    precompute_ref: bool = _help(
        "compute the reference log-probs of every pair once before training, where the "
        "run sees some pair twice (else each batch's as it comes: same values, and no "
        "work on pairs max_steps never reaches)",
        True,
    )
    sft_weight: float = _help(
        "add the chosen completions' negative log-likelihood with this weight (RPO): keeps "
        "small-data DPO from lowering the likelihood of what it prefers; 0: plain DPO",
        0.0,
    )
    share_prefix: bool = _help(
        "run the opening a batch's rows share (prompt of a pair, system prompt and tools) once; same log-probs", True
    )


@dataclass
class CPTTrainConfig(TrainConfig):
    docs: str = _help("directory of raw documents (.md, .txt) for continued pre-training", "docs", required=True)
    block_size: int = _help("tokens per training block", 512)
    lr: float = _help("peak learning rate", 2e-4)


@dataclass
class GRPOTrainConfig(TrainConfig):
    env: str = _help(
        "environment the episodes run in: a built-in name (claims) or an import path (pkg.module:factory)",
        "claims",
        required=True,
    )
    split: str = _help("the tasks trained on (their phrasings should not be in the split you report)", "train")
    start: int = _help("skip this many tasks of the split first (e.g. those the SFT data came from)", 0)
    n: int | None = _help("use n tasks of the split from start (None: all the rest)", None)
    augment: int = _help(
        "also train on this many rewritten variants of each task (agentft.augment: typos, small talk, "
        "facts reordered, amounts and dates in words), each verified by the oracle first",
        0,
    )
    augment_seed: int = _help("seed of the rewrites (same seed, same variants)", 0)
    group_size: int = _help("episodes sampled per task in a step: advantages compare them with each other", 4)
    batch_size: int = _help("episodes per forward/backward pass (divides tasks_per_step x group_size)", 8)
    tasks_per_step: int = _help("tasks per optimizer step (a step trains on tasks_per_step x group_size episodes)", 2)
    expert_in_group: bool = _help(
        "make one episode of each group the environment's oracle instead of a sample (off-policy guidance, as in "
        "LUFFY): a group the model fails still holds a solved episode to learn from, weighted by its advantage",
        False,
    )
    temperature: float = _help("sampling temperature of the rollouts (the loss uses the same)", 1.0)
    top_p: float = _help("nucleus sampling of the rollouts", 1.0)
    max_new_tokens: int = _help("most tokens per model turn", 256)
    max_turns: int = _help("most model turns per episode", 12)
    guard: bool = _help("run the rollouts with the guard on (calls that break a rule are blocked)", False)
    reward: str = _help(
        "reward of an episode: 'default' (success within policy 1, a violation -violation_penalty, "
        "else 0), 'partial' (within policy: half for the right end state, half for the right reads and "
        "reply), or an import path pkg.module:function(trajectory) -> float",
        "default",
    )
    violation_penalty: float = _help("reward of an episode that broke a rule is minus this", 0.5)
    beta: float = _help("KL coefficient to the reference: the adapter training starts from, else the base model", 0.04)
    epsilon: float = _help("clipping of the probability ratio (PPO-style)", 0.2)
    loss_type: str = _help("TRL's GRPO loss: dapo (token-level), grpo (per-sequence mean), dr_grpo, bnpo", "dapo")
    rollout_dtype: str = _help(
        "dtype of the rollout copy of the model: float32, bfloat16 or auto (bf16 on a GPU or a bf16 CPU)", "auto"
    )
    share_prefix: bool = _help(
        "run the opening a step's episodes share (system prompt, tools) once per forward pass; same log-probs", True
    )
    lr: float = _help("peak learning rate", 2e-5)
    logging_steps: int = _help("log every N steps", 1)
    save_steps: int = _help("checkpoint every N steps", 10)


@dataclass
class RMTrainConfig(TrainConfig):
    data: str = _help("preference pairs: a DPO dataset directory from `agentft dataset dpo`", "data/dpo", required=True)
    lr: float = _help("peak learning rate", 2e-4)
    epochs: float = _help("passes over the pairs", 2.0)
    validation_fraction: float = _help(
        "share of the pairs held out (whole tasks, a seeded sample) and ranked after training", 0.1
    )


def load_recipe(name_or_path: str, method: str) -> dict[str, Any]:
    """The ``method`` section of a shipped recipe (by name) or of a YAML file."""
    import yaml

    path = Path(name_or_path)
    if name_or_path in RECIPES:
        text = resources.files("agentft").joinpath(f"recipes/{name_or_path}.yaml").read_text("utf-8")
    elif path.is_file():
        text = path.read_text("utf-8")
    else:
        raise UserError(f"unknown recipe {name_or_path!r}: use one of {', '.join(RECIPES)} or a YAML file path")
    try:
        recipe = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"recipe {name_or_path}: not valid YAML ({exc})") from None
    if not isinstance(recipe, dict) or not isinstance(recipe.get(method, {}), dict):
        raise UserError(f"recipe {name_or_path}: expected a mapping with a {method!r} section")
    return dict(recipe.get(method) or {})


Config = TypeVar("Config")


def build_config(kind: type[Config], recipe: str | None = None, **overrides: Any) -> Config:
    """Defaults, then the recipe's section for ``kind``'s method, then explicit overrides (``None``: not given)."""
    method = method_for(kind).name
    values = load_recipe(recipe, method) if recipe else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"unknown {method} setting(s) {unknown}; known: {sorted(names)}")
    return kind(**values)
