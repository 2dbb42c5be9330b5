"""How the quickstart's SFT and DPO settings were chosen: runs scored on the ``claims`` validation split.

The validation split (90 tasks, 10 per kind) has its own customers and its own phrasings, none of which
appear in train; SFT demonstrations come from train tasks 0 to N-1 (N = 216 by default), optionally
with augmented variants (``{"augment": 1}``), and DPO pairs are mined on train tasks from 216 (54 by
default). Nothing here looks at test. Generation runs in bf16 where the CPU has native bf16, as in the
quickstart. Each run appends one JSON line to ``ROOT/results.jsonl`` (BENCHMARKS.md has the table).

    .venv/bin/python benchmarks/quickstart_settings.py sft NAME N_TASKS EPOCHS LR ['{"augment": 1}']
    .venv/bin/python benchmarks/quickstart_settings.py dpo SFT_NAME NAME '{"max_steps": 12, "mine_tasks": 54,
                                                                        "perturbations": false}'

    .venv/bin/python benchmarks/quickstart_settings.py validate NAME ADAPTER_DIR   # score an existing adapter

ROOT is ``$AGENTFT_SETTINGS_DIR`` (default ``/tmp/agentft-settings``). A run takes 8-15 minutes on 2 cores.
"""

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(os.environ.get("AGENTFT_SETTINGS_DIR", "/tmp/agentft-settings"))
VALIDATION_TASKS = 90
MINE_START, MINE_TASKS = 216, 54
MODEL = "smollm2-135m"
GENERATION = {"max_new_tokens": 96, "batch_size": 64, "dtype": "auto"}


def episodes(policy: str, out: Path, n: int, start: int, *, split: str = "train", augment: int = 0) -> dict:
    from agentft.collect import CollectConfig, collect
    from agentft.evaluate import evaluate
    from agentft.runner import RunConfig

    config = CollectConfig(
        env="claims",
        policy=policy,
        out=str(out),
        split=split,
        n=n,
        start=start,
        augment=augment,
        policy_kwargs=GENERATION if policy.startswith("hf:") else {},
        run=RunConfig(max_steps=12, batch_size=64),
    )
    return evaluate(config) if split != "train" else collect(config).summary


def validate(adapter: Path, out: Path) -> dict:
    summary = episodes(f"hf:{MODEL}@{adapter}", out, VALIDATION_TASKS, 0, split="validation")
    return {
        "success": summary.success_rate,
        "success_ci": summary.success_ci,
        "compliance": summary.compliance_rate,
        "compliance_ci": summary.compliance_ci,
        "violations": summary.violations_by_rule,
        "by_kind": {k: v.success_rate for k, v in summary.by_task_kind.items()},
    }


def sft(name: str, n: int, epochs: float, lr: float, extra: dict) -> dict:
    from transformers import AutoTokenizer

    from agentft.datasets import build_sft_dataset, save_sft_dataset
    from agentft.models import resolve_model_path
    from agentft.train import SFTTrainConfig, build_config, train_sft

    augment = extra.pop("augment", 0)
    oracle = ROOT / f"oracle-{n}-augment{augment}"
    episodes("oracle", oracle, n, 0, augment=augment)
    out = ROOT / name
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(MODEL))
    save_sft_dataset(
        build_sft_dataset([oracle], tokenizer=tokenizer, validation_fraction=0.1),
        out / "data",
        title=f"settings run {name}",
    )
    started = time.perf_counter()
    metrics = train_sft(
        build_config(
            SFTTrainConfig,
            "cpu-small",
            model=MODEL,
            data=str(out / "data"),
            out=str(out / "adapter"),
            epochs=epochs,
            lr=lr,
            save_steps=10_000,
            device="cpu",
            **extra,
        )
    )
    return {
        "name": name,
        "tasks": n,
        "augment": augment,
        "epochs": epochs,
        "lr": lr,
        **extra,
        "train_seconds": round(time.perf_counter() - started),
        "eval_loss": metrics.get("eval_loss"),
        **validate(out / "adapter", out / "validation"),
    }


def dpo(sft_name: str, name: str, extra: dict) -> dict:
    from agentft.preferences import PreferenceConfig, build_dpo_dataset, save_dpo_dataset
    from agentft.train import DPOTrainConfig, build_config, train_dpo

    root = ROOT / sft_name
    mine = extra.pop("mine_tasks", MINE_TASKS)
    episodes("oracle", root / f"mine-oracle-{mine}", mine, MINE_START)
    episodes(f"hf:{MODEL}@{root / 'adapter'}", root / f"mine-sft-{mine}", mine, MINE_START)
    perturbations = extra.pop("perturbations", False)
    step_mirrors = extra.pop("step_mirrors", True)
    pairs = build_dpo_dataset(
        [root / f"mine-oracle-{mine}", root / f"mine-sft-{mine}"],
        PreferenceConfig(perturbations=perturbations, step_mirrors=step_mirrors),
    )
    save_dpo_dataset(pairs, root / name / "data")
    started = time.perf_counter()
    metrics = train_dpo(
        build_config(
            DPOTrainConfig,
            "cpu-small",
            model=MODEL,
            adapter=str(root / "adapter"),
            data=str(root / name / "data"),
            out=str(root / name / "adapter"),
            save_steps=10_000,
            device="cpu",
            **extra,
        )
    )
    return {
        "name": f"{sft_name}/{name}",
        "mine_tasks": mine,
        "perturbations": perturbations,
        "step_mirrors": step_mirrors,
        **extra,
        "pairs": pairs.stats["by_kind"],
        "train_seconds": round(time.perf_counter() - started),
        "margin": [metrics["reward_margin_first"], metrics["reward_margin_last"]],
        **validate(root / name / "adapter", root / name / "validation"),
    }


def main() -> None:
    command, *args = sys.argv[1:] or ["help"]
    if command == "sft" and len(args) in (4, 5):
        result = sft(args[0], int(args[1]), float(args[2]), float(args[3]), json.loads(args[4]) if args[4:] else {})
    elif command == "dpo" and len(args) == 3:
        result = dpo(args[0], args[1], json.loads(args[2]))
    elif command == "validate" and len(args) == 2:
        result = {"name": args[0], "adapter": args[1], **validate(Path(args[1]), ROOT / args[0] / "validation")}
    else:
        raise SystemExit(__doc__)
    ROOT.mkdir(parents=True, exist_ok=True)
    with (ROOT / "results.jsonl").open("a") as handle:
        handle.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
