"""``agentft retrain``: served conversations and their feedback back into the model, behind the gate.

Stages, each resumable (rerun the command after an interruption: finished stages are skipped, training resumes
from its last checkpoint) and each leaving a manifest:

1. **dataset**: the served logs (``--logs``, one or more ``serve --log-dir``) as SFT rows, PII-scrubbed: runs
   labelled bad dropped, runs that broke a rule dropped, ``--feedback good`` for labelled-good runs only;
2. **pairs**: runs labelled bad with a correction as DPO pairs (the correction chosen over the reply);
3. **sft**: LoRA SFT continued from the current adapter (``--adapter``, else the registry's current version,
   else the base model);
4. **dpo** (when there are pairs): DPO from the new SFT adapter;
5. **gate**: the new adapter against the current one, paired on the same tasks (``agentft.gate``); promoted in
   the registry only if it is not worse on success and not lower on compliance.

``OUT/summary.json`` holds each stage's figures; the registry holds the decision and the lineage (adapter ->
dataset -> served logs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from agentft.errors import UserError
from agentft.progress import resumable_stage

__all__ = ["RetrainConfig", "run_retrain", "current_adapter"]


@dataclass
class RetrainConfig:
    logs: list[str]
    """Served log directories (``agentft serve --log-dir``), feedback folders included."""
    out: str = "runs/retrain"
    model: str = "smollm2-135m"
    adapter: str | None = None
    """The adapter serving now (training continues from it; the gate's baseline); default: the registry's current."""
    registry: str = "runs/registry"
    feedback: str = "any"
    """``good``: only runs labelled good become SFT rows (runs labelled bad never do)."""
    recipe: str = "cpu-small"
    sft_max_steps: int = -1
    sft_lr: float | None = None
    dpo_max_steps: int = -1
    env: str = "claims"
    split: str = "test"
    n: int | None = None
    """Gate tasks (the first n of the split); all when omitted."""
    name: str | None = None
    """The new version's registry name (default: the output directory's name)."""
    max_new_tokens: int = 256
    """Tokens per model turn in the gate's evaluations."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)


def current_adapter(registry: str | Path) -> str | None:
    """The adapter directory of the registry's current version, if it is one."""
    from agentft.registry import Registry

    data = Registry(registry).read()
    current = data.get("current")
    policy = (data["versions"].get(current) or {}).get("model", "") if current else ""
    return policy.split("@", 1)[1] if policy.startswith("hf:") and "@" in policy else None


def run_retrain(config: RetrainConfig, console: Console | None = None) -> dict[str, Any]:
    """Run (or resume) every stage under ``config.out``; returns the summary also written to ``summary.json``."""
    from agentft.datasets import FilterConfig, build_sft_dataset, save_sft_dataset
    from agentft.gate import GateConfig, run_gate
    from agentft.manifest import write_json_atomic, write_manifest
    from agentft.models import resolve_model_path
    from agentft.preferences import PreferenceConfig, build_dpo_dataset, save_dpo_dataset
    from agentft.train import DPOTrainConfig, SFTTrainConfig, build_config, train_dpo, train_sft

    console = console or Console()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if config.feedback not in ("any", "good"):
        raise UserError(f"feedback is any or good, not {config.feedback!r}")
    current = config.adapter or current_adapter(config.registry)
    if current is not None and not Path(current).is_dir():
        raise UserError(f"the current adapter {current} is not a directory")
    timings: dict[str, float] = {}

    def stage(name: str, title: str):
        return resumable_stage(out, name, timings, console, title)

    def dataset() -> dict[str, Any]:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(config.model))
        filters = FilterConfig(feedback=config.feedback)  # type: ignore[arg-type]
        built = build_sft_dataset(config.logs, filters=filters, scrub=True, tokenizer=tokenizer)
        if not built.train:
            drops = ", ".join(f"{k} {v}" for k, v in sorted(built.drops.items())) or "none"
            raise UserError(f"no served conversation became a training row (dropped: {drops})")
        save_sft_dataset(built, out / "data-sft", title="retrain SFT dataset (served logs)")
        return {**built.stats, "drops": dict(built.drops)}

    def pairs() -> dict[str, Any]:
        only_feedback = PreferenceConfig(step_pairs=False, feedback_pairs=True)
        built = build_dpo_dataset(config.logs, only_feedback)
        if built.pairs:
            save_dpo_dataset(built, out / "data-dpo")
        return built.stats

    data = stage("dataset", "1/5 served logs -> SFT rows (scrubbed, bad feedback dropped)")(dataset)
    pair_stats = stage("pairs", "2/5 corrections -> DPO pairs")(pairs)
    sft = stage("sft", f"3/5 LoRA SFT from {current or 'the base model'}")(
        lambda: train_sft(
            build_config(
                SFTTrainConfig,
                config.recipe,
                model=config.model,
                adapter=current,
                data=str(out / "data-sft"),
                out=str(out / "adapter-sft"),
                max_steps=config.sft_max_steps,
                lr=config.sft_lr,
                resume=True,
                device="auto",
            )
        )
    )
    final = out / "adapter-sft"
    dpo = None
    if pair_stats.get("pairs"):
        dpo = stage("dpo", "4/5 DPO on the corrections")(
            lambda: train_dpo(
                build_config(
                    DPOTrainConfig,
                    config.recipe,
                    model=config.model,
                    adapter=str(out / "adapter-sft"),
                    data=str(out / "data-dpo"),
                    out=str(out / "adapter-dpo"),
                    max_steps=config.dpo_max_steps,
                    resume=True,
                    device="auto",
                )
            )
        )
        final = out / "adapter-dpo"
    decision = stage("gate", "5/5 gate: the new adapter against the current one")(
        lambda: run_gate(
            GateConfig(
                candidate=str(final),
                baseline=current or "base",
                model=config.model,
                env=config.env,
                split=config.split,
                n=config.n,
                out=str(out / "gate"),
                registry=config.registry,
                name=config.name or out.resolve().name,
                max_new_tokens=config.max_new_tokens,
                env_kwargs=config.env_kwargs,
            )
        )
    )
    summary = {
        "config": asdict(config),
        "current": current,
        "dataset": data,
        "pairs": pair_stats,
        "sft": sft,
        "dpo": dpo,
        "candidate": str(final),
        "promoted": decision["promote"],
        "gate": {k: decision[k] for k in ("reasons", "tasks", "decided_at")},
        "timings": timings,
    }
    write_json_atomic(out / "summary.json", summary)
    write_manifest(out, kind="retrain", config=asdict(config), outputs=[out / "summary.json"], metrics=summary)
    return summary
