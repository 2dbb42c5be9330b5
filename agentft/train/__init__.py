"""Fine-tuning: LoRA (or full) SFT, DPO, continued pre-training, GRPO in an environment and reward models over
TRL, plus memory/time planning.

Each method is one straight-line function over its TRL trainer; ``train_sft(config)`` etc. take the
config dataclasses of ``agentft.train.config``. Heavy imports happen inside the functions. Each is
registered below under its name: ``agentft train NAME`` and the recipe section ``NAME`` come from that.
"""

from agentft.train.config import (
    CPTTrainConfig,
    DPOTrainConfig,
    GRPOTrainConfig,
    RMTrainConfig,
    SFTTrainConfig,
    build_config,
    load_recipe,
)
from agentft.train.methods import METHODS, Method, register_method

__all__ = [
    "SFTTrainConfig",
    "DPOTrainConfig",
    "CPTTrainConfig",
    "GRPOTrainConfig",
    "RMTrainConfig",
    "build_config",
    "load_recipe",
    "train_sft",
    "train_dpo",
    "train_cpt",
    "train_grpo",
    "train_rm",
    "METHODS",
    "Method",
    "register_method",
]


def train_sft(config: SFTTrainConfig) -> dict:
    from agentft.train.sft import train_sft as run

    return run(config)


def train_dpo(config: DPOTrainConfig) -> dict:
    from agentft.train.dpo import train_dpo as run

    return run(config)


def train_cpt(config: CPTTrainConfig) -> dict:
    from agentft.train.cpt import train_cpt as run

    return run(config)


def train_grpo(config: GRPOTrainConfig) -> dict:
    from agentft.train.grpo import train_grpo as run

    return run(config)


def train_rm(config: RMTrainConfig) -> dict:
    from agentft.train.rm import train_rm as run

    return run(config)


register_method("sft", SFTTrainConfig, train_sft, help="Supervised fine-tuning on assistant turns (LoRA by default).")
register_method(
    "dpo", DPOTrainConfig, train_dpo, help="Direct preference optimization, usually from an SFT adapter (--adapter)."
)
register_method(
    "cpt",
    CPTTrainConfig,
    train_cpt,
    help="Domain adaptation: continued pre-training on raw documents (LoRA by default).",
)
register_method(
    "grpo",
    GRPOTrainConfig,
    train_grpo,
    help="Online GRPO in an environment: sampled episodes scored by the task's checks and the rules, "
    "usually from an SFT adapter (--adapter).",
)
register_method(
    "rm",
    RMTrainConfig,
    train_rm,
    help="A reward model on preference pairs (a DPO dataset): scores turns for best-of-N (--scorer rm:DIR).",
)
