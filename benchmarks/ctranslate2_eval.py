"""Would an int8 CTranslate2 backend evaluate faster than the HF policy? Side by side on the same prompts.

Every model turn of recorded episodes (system prompt, tools, conversation so far) is generated greedily,
up to 96 new tokens, by the HF policy (bf16 where the CPU has it natively, the shared opening's cache
reused: what the quickstart's evaluations do) and by CTranslate2 int8 on the same adapter merged into
the model, with and without its static-prompt cache for the shared opening. Prints wall time, tokens/s
and how many completions match the HF text.

CTranslate2 is not an agentft dependency: `pip install ctranslate2==4.8.5` first.

Run: .venv/bin/python benchmarks/ctranslate2_eval.py [--adapter runs/quickstart/adapter-sft]
     [--trajectories runs/quickstart/mine-sft/trajectories.jsonl] [--limit N]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    from agentft.messages import AssistantMessage
    from agentft.policies.hf import HFPolicy
    from agentft.trajectory import read_trajectories

    parser = argparse.ArgumentParser()
    parser.add_argument("--adapter", type=Path, default=Path("runs/quickstart/adapter-sft"))
    parser.add_argument("--trajectories", type=Path, default=Path("runs/quickstart/mine-sft/trajectories.jsonl"))
    parser.add_argument("--limit", type=int, default=None, help="at most this many prompts")
    args = parser.parse_args()
    try:
        import ctranslate2
    except ImportError:
        raise SystemExit("needs CTranslate2: pip install ctranslate2==4.8.5") from None
    for path in (args.adapter / "adapter_config.json", args.trajectories):
        if not path.exists():
            raise SystemExit(f"{path} is missing: run `make demo` first (or pass --adapter / --trajectories)")

    policy = HFPolicy("smollm2-135m", args.adapter, dtype="auto", batch_size=64, max_new_tokens=96)
    prompts = [
        policy.prompt_text(t.messages[:i], t.tools)
        for t in read_trajectories(args.trajectories)
        for i, m in enumerate(t.messages)
        if isinstance(m, AssistantMessage)
    ][: args.limit]
    policy.generate(prompts[:2])  # warm-up
    started = time.perf_counter()
    reference = [g.text.strip() for g in policy.generate(prompts)]
    hf_seconds = time.perf_counter() - started

    work = Path(tempfile.mkdtemp(prefix="agentft-ct2-"))
    subprocess.run(
        [sys.executable, "-m", "agentft.cli", "export", str(args.adapter), "--merge", "--out", str(work / "merged")],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ctranslate2.converters.transformers",
            "--model",
            str(work / "merged"),
            "--output_dir",
            str(work / "int8"),
            "--quantization",
            "int8",
        ],
        check=True,
        capture_output=True,
    )
    tokenizer = policy.tokenizer
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    shared = 0
    while all(len(row) > shared and row[shared] == ids[0][shared] for row in ids):
        shared += 1
    generator = ctranslate2.Generator(
        str(work / "int8"), device="cpu", compute_type="int8", intra_threads=os.cpu_count() or 1
    )
    options = {
        "max_length": 96,
        "include_prompt_in_result": False,
        "max_batch_size": 64,
        "end_token": ["<|im_end|>", tokenizer.eos_token],
    }
    print(
        f"# {len(prompts)} prompts (shared opening {shared} tokens), {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
    )
    print("| engine | seconds | speed vs HF | same text as HF |")
    print("|---|---|---|---|")
    print(f"| HF policy ({policy.model.dtype}, shared-opening cache) | {hf_seconds:.1f} | 1.00x | - |")
    for name, batch, extra in (
        (
            "CTranslate2 int8, static-prompt cache",
            [tokenizer.convert_ids_to_tokens(r[shared:]) for r in ids],
            {"static_prompt": tokenizer.convert_ids_to_tokens(ids[0][:shared]), "cache_static_prompt": True},
        ),
        ("CTranslate2 int8, full prompts", [tokenizer.convert_ids_to_tokens(r) for r in ids], {}),
    ):
        started = time.perf_counter()
        results = generator.generate_batch(batch, **options, **extra)
        seconds = time.perf_counter() - started
        texts = [tokenizer.decode(r.sequences_ids[0], skip_special_tokens=True).strip() for r in results]
        same = sum(a == b for a, b in zip(texts, reference, strict=True))
        print(f"| {name} | {seconds:.1f} | {hf_seconds / seconds:.2f}x | {same}/{len(texts)} |")


if __name__ == "__main__":
    main()
