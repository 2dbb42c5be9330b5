"""Continued pre-training, adapter merging and the memory/time planner, on the tiny-test model."""

import json
import math
import os
import subprocess
import sys
import time

import pytest

from agentft.errors import UserError

torch = pytest.importorskip("torch")


@pytest.fixture
def one_thread(monkeypatch):
    """prepare_model gives torch every core; for a width-64 model on a shared 2-core machine one thread is
    faster (two spin on OpenMP barriers whenever another process holds a core)."""
    threads = torch.get_num_threads()
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    yield
    torch.set_num_threads(threads)


def _write_docs(root, count=3):
    words = (
        "claim policy customer approved denied escalate verify identity ticket access manager password "
        "amount covered date"
    ).split()
    root.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        body = " ".join(words[(n * 5 + k * 3) % len(words)] for k in range(120))
        (root / f"doc{n}.md").write_text(f"# Handbook section {n}\n\n{body}.\n", encoding="utf-8")
    (root / "notes").mkdir(exist_ok=True)
    (root / "notes" / "extra.txt").write_text("Claims above the covered amount need a manager.\n", encoding="utf-8")
    (root / "ignored.json").write_text("{}", encoding="utf-8")
    return sorted([*root.glob("*.md"), root / "notes" / "extra.txt"])


# --- continued pre-training -------------------------------------------------------------------------------


def test_token_blocks_join_documents_with_eos_and_keep_the_last_partial_block(tiny):
    from agentft.train.cpt import token_blocks

    _, tokenizer = tiny
    texts = ["the claim is approved", "the customer asks for a password reset"]
    blocks = token_blocks(texts, tokenizer, 4)
    stream = [t for block in blocks for t in block]
    first = tokenizer(texts[0], add_special_tokens=False)["input_ids"]
    second = tokenizer(texts[1], add_special_tokens=False)["input_ids"]
    assert stream == [*first, tokenizer.eos_token_id, *second, tokenizer.eos_token_id]
    assert all(len(block) == 4 for block in blocks[:-1]) and 2 <= len(blocks[-1]) <= 4


def test_cpt_rejects_missing_empty_and_unreadable_documents(tmp_path):
    from agentft.train.cpt import document_files, read_documents

    with pytest.raises(UserError, match="does not exist"):
        document_files(tmp_path / "nowhere")
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(UserError, match="no documents"):
        document_files(tmp_path)
    (tmp_path / "empty.md").write_text("  \n")
    with pytest.raises(UserError, match="empty"):
        read_documents(document_files(tmp_path))
    (tmp_path / "latin1.txt").write_bytes("r\xe9clamation".encode("latin-1"))
    with pytest.raises(UserError, match="latin1.txt is not UTF-8"):
        read_documents(document_files(tmp_path))


def test_cpt_trains_a_lora_adapter_on_raw_documents(tmp_path, monkeypatch, one_thread):
    import agentft.train.cpt as cpt
    from agentft.manifest import read_manifest
    from agentft.train.config import CPTTrainConfig

    files = _write_docs(tmp_path / "docs")
    captured = {}
    prepare = cpt.prepare_model

    def spy(config, device):
        model, tokenizer = prepare(config, device)
        captured["model"] = model
        captured["before"] = {k: v.detach().clone() for k, v in model.named_parameters()}
        return model, tokenizer

    monkeypatch.setattr(cpt, "prepare_model", spy)
    out = tmp_path / "adapter"
    config = CPTTrainConfig(
        model="tiny-test",
        docs=str(tmp_path / "docs"),
        out=str(out),
        block_size=64,
        batch_size=2,
        max_steps=3,
        lr=1e-2,
        logging_steps=1,
        save_steps=100,
        device="cpu",
    )
    metrics = cpt.train_cpt(config)

    assert metrics["steps"] == 3 and metrics["documents"] == 4 and metrics["blocks"] >= 6
    assert math.isfinite(metrics["train_loss"]) and metrics["train_loss"] > 0
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in logged if "loss" in r)

    after = dict(captured["model"].named_parameters())
    lora = [k for k in after if "lora_" in k]
    base = [k for k in after if "lora_" not in k]
    assert lora and base
    assert any(not torch.equal(after[k].detach(), captured["before"][k]) for k in lora if "lora_B" in k)
    assert all(not after[k].requires_grad for k in base)
    assert all(torch.equal(after[k].detach(), captured["before"][k]) for k in base)

    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "chat_template.jinja",
        "loss.png",
        "metrics.jsonl",
        "manifest.json",
    ):
        assert (out / name).exists(), name
    assert not list(out.glob("checkpoint-*"))
    manifest = read_manifest(out)
    assert manifest["kind"] == "cpt" and manifest["config"]["block_size"] == 64
    assert sorted(entry["path"] for entry in manifest["inputs"]) == sorted(map(str, files))
    assert manifest["metrics"]["last_block"] == "padded"


def test_cpt_resumes_from_the_newest_complete_checkpoint(tmp_path, monkeypatch, one_thread):
    import agentft.train.cpt as cpt
    from agentft.train.common import COMPLETE
    from agentft.train.config import CPTTrainConfig

    _write_docs(tmp_path / "docs", count=2)
    out = tmp_path / "run"
    settings = {
        "model": "tiny-test",
        "docs": str(tmp_path / "docs"),
        "out": str(out),
        "block_size": 32,
        "batch_size": 2,
        "lr": 1e-2,
        "logging_steps": 1,
        "save_steps": 1,
        "device": "cpu",
    }
    with monkeypatch.context() as patch:  # "crash" after two steps: checkpoints stay, nothing is finished
        patch.setattr(cpt, "finish_run", lambda trainer, tokenizer, config, **kwargs: kwargs["metrics"])
        cpt.train_cpt(CPTTrainConfig(**settings, max_steps=2))
    (out / "checkpoint-2" / COMPLETE).unlink()  # half-written: must be skipped
    metrics = cpt.train_cpt(CPTTrainConfig(**settings, max_steps=3, resume=True))
    assert metrics["resumed_from"] == str(out / "checkpoint-1") and metrics["steps"] == 3
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged[0] == 1 and logged.count(3) >= 1
    assert (out / "adapter_model.safetensors").exists() and not list(out.glob("checkpoint-*"))


def test_cpt_full_fine_tuning_saves_the_whole_model(tmp_path, one_thread):
    from safetensors.torch import load_file

    from agentft.models import model_dir
    from agentft.train.config import CPTTrainConfig
    from agentft.train.cpt import train_cpt

    _write_docs(tmp_path / "docs", count=2)
    out = tmp_path / "full"
    train_cpt(
        CPTTrainConfig(
            model="tiny-test",
            docs=str(tmp_path / "docs"),
            out=str(out),
            block_size=64,
            batch_size=2,
            max_steps=2,
            lr=1e-2,
            full=True,
            logging_steps=1,
            save_steps=100,
            device="cpu",
        )
    )
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    trained, original = load_file(out / "model.safetensors"), load_file(model_dir("tiny-test") / "model.safetensors")
    assert any(not torch.equal(trained[k], original[k]) for k in original)


# --- merging an adapter -----------------------------------------------------------------------------------


def _perturbed_adapter(path):
    from peft import LoraConfig, get_peft_model

    from agentft.manifest import write_manifest
    from agentft.models import load_model

    base, tokenizer = load_model("tiny-test")
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:  # B starts at zero: make the adapter do something
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    write_manifest(path, kind="sft", config={"model": "tiny-test"}, outputs=[path / "adapter_model.safetensors"])
    return model.eval(), tokenizer


def test_merged_model_gives_the_adapters_logits(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentft.export import merge_adapter
    from agentft.lineage import trace
    from agentft.manifest import read_manifest, sha256_file
    from agentft.models import load_model

    adapter = tmp_path / "adapter"
    peft_model, tokenizer = _perturbed_adapter(adapter)
    ids = tokenizer("the claim policy customer status approved", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
        base_logits = load_model("tiny-test")[0](input_ids=ids).logits
    assert not torch.allclose(expected, base_logits, atol=1e-3)  # the adapter is not a no-op

    out = merge_adapter(adapter, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    with torch.no_grad():
        got = merged(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert AutoTokenizer.from_pretrained(out).chat_template == tokenizer.chat_template

    manifest = read_manifest(out)
    assert manifest["kind"] == "export" and manifest["config"]["model"] == "tiny-test"
    weights = str((adapter / "adapter_model.safetensors").resolve())
    assert {"path": weights, "sha256": sha256_file(weights)} in manifest["inputs"]
    tree = trace(out)
    assert tree["kind"] == "export" and [node["kind"] for node in tree["upstream"]] == ["sft"]
    assert all(item["status"] == "ok" for item in tree["inputs"])


def test_bf16_load_merges_in_fp32_then_casts(tmp_path, monkeypatch):
    """A bf16 policy with a merged adapter: the adapter is folded into fp32 weights before the cast, so the
    result is the fp32 merge rounded once (not bf16 weights plus a rounded delta)."""
    from agentft import models

    adapter = tmp_path / "adapter"
    _perturbed_adapter(adapter)
    fp32, _ = models.load_model("tiny-test", adapter=adapter, merge=True)
    bf16, _ = models.load_model("tiny-test", adapter=adapter, merge=True, dtype="bfloat16")
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    for (name, a), (_, b) in zip(fp32.state_dict().items(), bf16.state_dict().items(), strict=True):
        assert torch.equal(a.to(torch.bfloat16), b), name
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: False)
    assert models.resolve_dtype("auto", "cpu") == "float32" and models.resolve_dtype("auto", "cuda") == "bfloat16"
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: True)
    assert models.resolve_dtype("auto", "cpu") == "bfloat16"
    with pytest.raises(UserError, match="dtype must be"):
        models.resolve_dtype("int4", "cpu")


def test_merge_rejects_what_is_not_an_adapter(tmp_path):
    from agentft.export import adapter_base_model, merge_adapter
    from agentft.models import model_dir

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a LoRA adapter"):
        merge_adapter(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(UserError, match="full model"):
        merge_adapter(model_dir("tiny-test"), tmp_path / "out")
    with pytest.raises(UserError, match="does not exist"):
        adapter_base_model(tmp_path / "missing")
    # without a manifest the base comes from peft's adapter_config.json; an unknown one asks for --model
    adapter = tmp_path / "bare"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(model_dir("tiny-test"))}))
    assert adapter_base_model(adapter) == str(model_dir("tiny-test"))
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/not-here"}))
    with pytest.raises(UserError, match="--model"):
        adapter_base_model(adapter)


# --- planning ---------------------------------------------------------------------------------------------


def test_plan_counts_smollm2_parameters_without_loading_it():
    from agentft.train.plan import estimate

    started = time.perf_counter()
    plan = estimate("smollm2-135m", "lora", 2, 1024, "cpu")  # includes the ~0.3 s matmul probe
    assert time.perf_counter() - started < 2.0
    assert abs(plan.params - 134.5e6) <= 0.01 * 134.5e6
    assert plan.trainable_params == 30 * 16 * (2 * (576 + 576) + 2 * (576 + 192) + 3 * (576 + 1536))
    assert plan.device_flops > 1e9 and plan.tokens_per_second > 0
    assert set(plan.memory) >= {"weights", "adapter", "gradients", "optimizer", "activations", "logits"}


def test_plan_lora_parameters_match_peft_and_the_meta_device_count(tiny):
    from peft import LoraConfig, get_peft_model

    from agentft.models import load_model
    from agentft.train.plan import _meta_params, architecture

    model, _ = load_model("tiny-test")
    arch = architecture(model.config)
    assert arch.params == sum(p.numel() for p in model.parameters())
    assert _meta_params(model.config.to_dict(), {})[0] == arch.params
    for targets in ("all-linear", ["q_proj", "v_proj"]):
        peft_model = get_peft_model(
            load_model("tiny-test")[0], LoraConfig(r=16, target_modules=targets, task_type="CAUSAL_LM")
        )
        assert arch.lora_params(16, targets) == peft_model.get_nb_trainable_parameters()[0]
    names = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # lora_top_layers
    top = get_peft_model(
        load_model("tiny-test")[0],
        LoraConfig(r=16, target_modules=names, layers_to_transform=[1], task_type="CAUSAL_LM"),
    )
    assert arch.lora_params(16, "all-linear", top_layers=1) == top.get_nb_trainable_parameters()[0]


# Runs in a fresh interpreter: see test_plan_peak_memory_is_within_30_percent_of_a_measured_run.
_MEASURE = r"""
import gc, json, re, sys
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM
from agentft.train.plan import estimate_for_config
from agentft.train.sft import label_positions_loss

torch.set_num_threads(1)
config = LlamaConfig(vocab_size=4096, hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=2048,
                     tie_word_embeddings=True)
BATCH, SEQ = 4, 512

def status(key):
    return int(re.search(key + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

def train(steps, label_positions_only):
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(0, config.vocab_size, (BATCH, SEQ))
    labels = ids.clone()
    if label_positions_only:
        labels[torch.rand(BATCH, SEQ) > 0.35] = -100
    for _ in range(steps):
        if label_positions_only:
            loss, _ = label_positions_loss(model, {"input_ids": ids, "labels": labels})
        else:
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    assert torch.isfinite(loss)

results = {}
for label_positions_only in (False, True):
    train(1, label_positions_only)  # warm-up: kernels, thread pools, autograd engine, lazy imports
    gc.collect()
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
    baseline = status("VmRSS")
    train(2, label_positions_only)  # the second step runs with the optimizer's moments in place
    measured = status("VmHWM") - baseline
    plan = estimate_for_config(config, "lora", BATCH, SEQ, "cpu", label_positions_only=label_positions_only,
                               mask="none", device_flops=1e11)
    results[str(label_positions_only)] = {"measured": measured, "estimated": plan.peak_bytes, "memory": plan.memory}
    gc.collect()
print(json.dumps(results))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc peak-RSS reset")
def test_plan_peak_memory_is_within_30_percent_of_a_measured_run():
    """The estimate against the measured peak memory of real LoRA training steps.

    Method: a fresh interpreter trains a tiny Llama (width 128, 2 layers, vocabulary 4096; batch 4 x 512
    tokens, so activations and logits dominate) once as a warm-up, resets the kernel's peak-RSS mark
    (``/proc/self/clear_refs`` = 5), notes the RSS, builds a fresh model and trains two more steps, and takes
    ``VmHWM`` - that RSS: the training's own allocations (weights, adapter, gradients, AdamW moments,
    activations, loss buffers), without the interpreter and libraries. ``MALLOC_MMAP_THRESHOLD_`` makes
    glibc serve every block over 64 KiB with mmap and unmap it on free, so the RSS follows live tensors
    instead of a heap that keeps freed memory (without it the measurement reads ~15-20% low). Measured
    this way, the estimates land within ~3% for both the plain loss and the label-positions-only loss.
    """
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", _MEASURE], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    for label_positions_only, row in results.items():
        ratio = row["estimated"] / row["measured"]
        print(
            f"label_positions_only={label_positions_only}: measured {row['measured'] / 2**20:.1f} MiB, "
            f"estimated {row['estimated'] / 2**20:.1f} MiB ({ratio:.2f}x)"
        )
        assert 0.7 <= ratio <= 1.3, row


def test_plan_cpu_throughput_matches_the_calibration_runs(monkeypatch):
    """SmolLM2-135M LoRA r16 on one thread, probe 110 GFLOP/s, batch 2 x 512 (see CPU_UTILIZATION)."""
    from agentft.train.plan import estimate

    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    measured = {(15, True): 199, (15, False): 167, (None, True): 146, (None, False): 128}
    for (top, label_positions_only), tokens_per_second in measured.items():
        plan = estimate(
            "smollm2-135m",
            "lora",
            2,
            512,
            "cpu",
            mask="none",
            lora_top_layers=top,
            label_positions_only=label_positions_only,
            device_flops=110e9,
        )
        assert plan.tokens_per_second == pytest.approx(tokens_per_second, rel=0.15)


def test_plan_components_and_rendering():
    from rich.console import Console

    from agentft.train.plan import estimate

    def plan(method, **kwargs):
        return estimate("smollm2-135m", method, 2, 1024, kwargs.pop("device", "cpu"), device_flops=1e11, **kwargs)

    lora, full = plan("lora"), plan("full")
    assert lora.memory["optimizer"] == 8 * lora.trainable_params
    assert full.memory["optimizer"] == 8 * full.params and full.memory["gradients"] == 4 * full.params
    assert full.flops_per_token > lora.flops_per_token
    assert plan("lora", label_positions_only=False).memory["logits"] > 2.5 * lora.memory["logits"]
    checkpointed = plan("lora", gradient_checkpointing=True)
    assert checkpointed.memory["activations"] < lora.memory["activations"] / 10
    assert checkpointed.flops_per_token > lora.flops_per_token
    assert plan("lora", mask="packed").memory["activations"] > plan("lora", mask="none").memory["activations"]
    top = plan("lora", lora_top_layers=15)  # cpu-small: the backward stops halfway down
    assert top.trainable_params * 2 == lora.trainable_params
    assert top.memory["activations"] < 0.51 * lora.memory["activations"]
    assert top.flops_per_token < lora.flops_per_token
    dpo = plan("dpo")
    assert dpo.tokens_per_step == 2 * lora.tokens_per_step and "reference" not in dpo.memory
    assert plan("dpo-full", precompute_ref=False).memory["reference"] == full.memory["weights"]

    gpu = estimate("smollm2-135m", "full", 8, 2048, "cuda", gpu="A100", dataset_tokens=10_000_000)
    assert gpu.dtype == "bfloat16" and gpu.memory["weights"] == 2 * gpu.params
    assert gpu.memory["optimizer"] == 12 * gpu.params  # two fp32 moments + fp32 master weights
    assert gpu.device_flops == 312e12 and gpu.utilization == 0.4 and gpu.capacity_bytes == 80 * 1024**3
    assert gpu.epoch_seconds == pytest.approx(10_000_000 / gpu.tokens_per_second)
    with pytest.raises(UserError, match="unknown GPU"):
        estimate("tiny-test", "lora", 1, 16, "cuda", gpu="Voodoo2")
    with pytest.raises(UserError, match="method"):
        estimate("tiny-test", "qlora", 1, 16, "cpu")

    data = gpu.to_dict()
    json.dumps(data)
    assert data["peak_bytes"] == sum(gpu.memory.values()) and data["epoch_seconds"] > 0
    console = Console(record=True, width=140)
    console.print(gpu.table())
    text = console.export_text()
    assert "optimizer" in text and "tokens/s" in text and "epoch" in text
