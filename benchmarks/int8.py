"""Cheaper arithmetic for CPUs without native bf16: dynamic int8 linear layers under the engine, judged on the
validation split (never on test), against the same engine in fp32.

Run: .venv/bin/python benchmarks/int8.py --adapter runs/quickstart/adapter-sft [--tasks 18]
Variants (``torch.ao.quantization.quantize_dynamic``, int8 weights, activations quantised per call): every
linear layer per tensor; the decoder layers' linears per tensor (the tied output layer kept); the decoder
layers per output channel; the MLPs per output channel. Prints episodes/min, success and compliance with
95% intervals, and how many episodes match the fp32 engine's exactly.
"""

import argparse
import copy
import os
import platform
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic  # noqa: E402

from agentft.envs import load_environment  # noqa: E402
from agentft.models import cpu_has_native_bf16, load_model  # noqa: E402
from agentft.policies.hf import HFPolicy  # noqa: E402
from agentft.runner import RunConfig, plan_episodes, run_episodes  # noqa: E402
from agentft.stats import format_rate  # noqa: E402
from agentft.summary import summarize_run  # noqa: E402


def variants(layers: int) -> dict:
    return {
        "fp32 (reference)": lambda model: model,
        "int8, every linear layer, per tensor": lambda model: quantize_dynamic(
            model, {torch.nn.Linear}, dtype=torch.qint8
        ),
        "int8, decoder layers, per tensor": lambda model: quantize_dynamic(
            model, {"model.layers": default_dynamic_qconfig}, dtype=torch.qint8
        ),
        "int8, decoder layers, per channel": lambda model: quantize_dynamic(
            model, {"model.layers": per_channel_dynamic_qconfig}, dtype=torch.qint8
        ),
        "int8, MLPs, per channel": lambda model: quantize_dynamic(
            model, {f"model.layers.{i}.mlp": per_channel_dynamic_qconfig for i in range(layers)}, dtype=torch.qint8
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--tasks", type=int, default=18)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # torch deprecates its quantized tensors; the measurement still stands

    env = load_environment("claims")
    tasks = env.tasks("validation")[: args.tasks]
    model, tokenizer = load_model(args.model, adapter=args.adapter, dtype="float32", merge=True)
    print(
        f"# claims validation, {len(tasks)} tasks, SFT adapter, engine, <= 96 new tokens, 64 at once; "
        f"{platform.machine()}, {os.cpu_count()} CPUs, native bf16: {cpu_has_native_bf16()}, "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print("| arithmetic | seconds | episodes/min | success | compliance | same as fp32 |")
    print("|---|---|---|---|---|---|")
    reference = None
    for label, quantise in variants(model.config.num_hidden_layers).items():
        policy = HFPolicy(
            args.model, loaded=(quantise(copy.deepcopy(model)), tokenizer), batch_size=64, max_new_tokens=96
        )
        started = time.perf_counter()
        trajectories = run_episodes(env, policy, plan_episodes(tasks), RunConfig(batch_size=64))
        seconds = time.perf_counter() - started
        messages = {t.task_id: [m.model_dump() for m in t.messages] for t in trajectories}
        reference = reference or messages
        same = sum(messages[task] == reference[task] for task in messages)
        summary = summarize_run(trajectories)
        print(
            f"| {label} | {seconds:.0f} | {len(tasks) / seconds * 60:.1f} "
            f"| {format_rate(summary.success_rate, summary.success_ci)} "
            f"| {format_rate(summary.compliance_rate, summary.compliance_ci)} | {same}/{len(tasks)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
