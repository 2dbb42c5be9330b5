"""fp32 against bf16 on this CPU, side by side in one process: cpu-small SFT steps and greedy evaluation.

bf16 only pays where the CPU multiplies it natively (AVX512-BF16 or AMX); the ``auto`` setting that the
cpu-small recipe and the quickstart use picks it there and fp32 elsewhere. This prints what each costs
and what it changes: SFT tokens/s and training loss after the same steps on the same rows; evaluation
wall time, success and compliance of one adapter on the quickstart's validation block (train tasks
300-326, never trained on).

Run: .venv/bin/python benchmarks/precision.py [--steps 6] [--adapter runs/quickstart/adapter-sft]
"""

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def sft_steps(data: Path, out: Path, steps: int, bf16: bool) -> tuple[float, float]:
    from agentft.train import SFTTrainConfig, build_config, train_sft

    metrics = train_sft(
        build_config(
            SFTTrainConfig,
            "cpu-small",
            model="smollm2-135m",
            data=str(data),
            out=str(out),
            max_steps=steps,
            save_steps=10_000,
            logging_steps=1,
            bf16=bf16,
            device="cpu",
        )
    )
    return metrics["tokens_per_second"], metrics["train_loss"]


def evaluation(adapter: Path, out: Path, dtype: str) -> tuple[float, float, float]:
    from agentft.collect import CollectConfig
    from agentft.evaluate import evaluate
    from agentft.runner import RunConfig

    started = time.perf_counter()
    summary = evaluate(
        CollectConfig(
            env="claims",
            policy=f"hf:smollm2-135m@{adapter}",
            out=str(out),
            split="train",
            n=27,
            start=300,
            run=RunConfig(max_steps=12, batch_size=64),
            policy_kwargs={"max_new_tokens": 96, "batch_size": 64, "dtype": dtype},
        )
    )
    return time.perf_counter() - started, summary.success_rate, summary.compliance_rate


def main() -> None:
    from agentft.models import cpu_has_native_bf16

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--data", type=Path, default=Path("runs/quickstart/data-sft"))
    parser.add_argument("--adapter", type=Path, default=Path("runs/quickstart/adapter-sft"))
    args = parser.parse_args()
    for path in (args.data / "train.jsonl", args.adapter / "adapter_config.json"):
        if not path.exists():
            raise SystemExit(f"{path} is missing: run `make demo` first (or pass --data / --adapter)")
    root = Path(tempfile.mkdtemp(prefix="agentft-precision-"))
    train = {name: sft_steps(args.data, root / f"sft-{name}", args.steps, name == "bf16") for name in ("fp32", "bf16")}
    evals = {
        name: evaluation(args.adapter, root / f"eval-{name}", dtype)
        for name, dtype in (("fp32", "float32"), ("bf16", "bfloat16"))
    }
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs, native bf16: {cpu_has_native_bf16()}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print(
        f"| precision | SFT tokens/s ({args.steps} steps) | SFT loss | eval seconds (27 tasks) | success | compliance |"
    )
    print("|---|---|---|---|---|---|")
    for name in ("fp32", "bf16"):
        (speed, loss), (seconds, success, compliance) = train[name], evals[name]
        print(
            f"| {name} | {speed:.0f} ({speed / train['fp32'][0]:.2f}x) | {loss:.4f} | {seconds:.0f} "
            f"({evals['fp32'][0] / seconds:.2f}x) | {success:.0%} | {compliance:.0%} |"
        )


if __name__ == "__main__":
    main()
