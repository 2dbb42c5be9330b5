"""Training on the tiny model: real TRL runs of a few steps, checked for what they must change and keep."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from agentft.collect import CollectConfig, collect
from agentft.datasets import build_sft_dataset, save_sft_dataset
from agentft.errors import UserError
from agentft.models import load_model
from agentft.preferences import PreferenceConfig, build_dpo_dataset, save_dpo_dataset
from agentft.train import (
    DPOTrainConfig,
    RMTrainConfig,
    SFTTrainConfig,
    build_config,
    load_recipe,
    train_dpo,
    train_rm,
    train_sft,
)
from agentft.train.config import RECIPES

ENV = "agentft.toy_env:OrdersEnvironment"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-data")
    trajectories = collect(CollectConfig(env=ENV, policy="oracle", out=str(root / "oracle"), n=40)).out
    sft = save_sft_dataset(build_sft_dataset([trajectories], validation_fraction=0.2), root / "sft")
    dpo = save_dpo_dataset(
        build_dpo_dataset([trajectories], PreferenceConfig(step_pairs=False, perturbations=True)), root / "dpo"
    )
    return sft, dpo


def adapter_weights(path):
    return load_file(str(path / "adapter_model.safetensors"))


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_loads_for_every_method(recipe):
    from agentft.train import METHODS

    for method in METHODS.values():
        if recipe == "gpu-multi" and method.name == "grpo":
            continue  # GRPO runs on one device (its rollouts are sampled in-process)
        assert load_recipe(recipe, method.name), method.name
        config = build_config(method.config, recipe, out="x")
        assert config.out == "x" and config.lr > 0


def test_recipe_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown recipe"):
        load_recipe("tpu-huge", "sft")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sft:\n  learning_rat: 1\n")
    with pytest.raises(UserError, match="unknown sft setting"):
        build_config(SFTTrainConfig, str(bad))


@pytest.mark.parametrize(
    "train, config",
    [(train_sft, SFTTrainConfig), (train_dpo, DPOTrainConfig), (train_rm, RMTrainConfig)],
    ids=["sft", "dpo", "rm"],
)
@pytest.mark.parametrize(
    "content, line",
    [
        ('{"messages": []}\n{"messages": []}\n{"messages": [{"role": "us', 3),  # last line cut mid-JSON
        ('{"messages": []}\n{"messa\n{"messages": []}\n', 2),
        ('{"messages": []}\n[1, 2]\n{"messages": []}\n', 2),
    ],
    ids=["torn-last-line", "bad-line", "not-an-object"],
)
def test_a_broken_dataset_file_is_a_user_error_naming_file_and_line(train, config, content, line, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(content)
    with pytest.raises(UserError, match=rf"train\.jsonl:{line}: not (a )?valid JSON"):
        train(config(model="tiny-test", data=str(data), out=str(tmp_path / "out")))
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_sft_trains_lora_only_and_writes_its_outputs(data, tmp_path):
    sft, _ = data
    out = tmp_path / "adapter"
    metrics = train_sft(
        SFTTrainConfig(
            model="tiny-test", data=str(sft), out=str(out), max_steps=4, lr=5e-3, logging_steps=1, save_steps=100
        )
    )
    assert torch.isfinite(torch.tensor(metrics["train_loss"])) and metrics["tokens_per_second"] > 0
    assert metrics["eval_loss"] < metrics["eval_loss_before"]
    weights = adapter_weights(out)
    assert any(name.endswith("lora_B.weight") and tensor.abs().sum() > 0 for name, tensor in weights.items())
    trained, _ = load_model("tiny-test", adapter=out)
    fresh, _ = load_model("tiny-test")
    base = {
        k.replace("base_model.model.", "").replace(".base_layer", ""): v
        for k, v in trained.state_dict().items()
        if "lora_" not in k
    }
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(base[name], tensor), name
    for name in ("manifest.json", "metrics.jsonl", "loss.png", "adapter_config.json", "tokenizer.json"):
        assert (out / name).exists(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "sft" and manifest["inputs"][0]["path"].endswith("train.jsonl")
    assert not list(out.glob("checkpoint-*"))


def test_bf16_setting_is_true_false_or_auto_by_device(monkeypatch):
    from agentft import models
    from agentft.train import common

    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: False)
    assert [common.use_bf16(SFTTrainConfig(bf16=v), "cpu") for v in (True, False, "auto")] == [True, False, False]
    assert common.use_bf16(SFTTrainConfig(bf16="auto"), "cuda")
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: True)
    assert common.use_bf16(SFTTrainConfig(bf16="AUTO"), "cpu")
    with pytest.raises(UserError, match="true, false or auto"):
        common.use_bf16(SFTTrainConfig(bf16="fp8"), "cpu")


def test_sft_in_bf16_on_cpu_computes_the_loss_under_autocast(data, tmp_path, monkeypatch):
    """The loss calls the backbone directly, so the trainer's autocast (which wraps ``forward``) must be
    entered around it; the weights stay fp32."""
    from agentft.train import sft as sft_module

    seen = []
    original = sft_module.label_positions_loss

    def recording(model, *args, **kwargs):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), next(model.parameters()).dtype))
        return original(model, *args, **kwargs)

    monkeypatch.setattr(sft_module, "label_positions_loss", recording)
    metrics = train_sft(
        SFTTrainConfig(
            model="tiny-test",
            data=str(data[0]),
            out=str(tmp_path / "a"),
            max_steps=3,
            lr=5e-3,
            bf16=True,
            device="cpu",
            logging_steps=1,
            save_steps=100,
        )
    )
    assert metrics["precision"] == "bf16 mixed" and torch.isfinite(torch.tensor(metrics["train_loss"]))
    assert metrics["eval_loss"] < metrics["eval_loss_before"]
    assert seen and all(entry == (True, torch.bfloat16, torch.float32) for entry in seen)


def packed_batch(sft, tiny, n):
    """n training rows packed into one padding-free row by TRL's own collator."""
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = tiny
    rows = load_dataset("json", data_files=str(sft / "train.jsonl"))["train"].select(range(n))
    rows = rows.remove_columns(["trajectory_id"])
    trainer = SFTTrainer(
        model=model,
        processing_class=tokenizer,
        train_dataset=rows,
        args=SFTConfig(
            output_dir="/tmp/unused",
            assistant_only_loss=True,
            padding_free=True,
            max_length=None,
            report_to=[],
            use_cpu=True,
            per_device_train_batch_size=n,
        ),
    )
    return trainer.data_collator([trainer.train_dataset[i] for i in range(n)])


def test_label_positions_loss_equals_the_full_head_loss(data, tiny):
    from agentft.train.sft import label_positions_loss

    model, _ = tiny
    batch = packed_batch(data[0], tiny, 2)
    ours, _ = label_positions_loss(model, batch)
    theirs = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"]).loss
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_shared_prefix_gives_the_same_loss_and_gradients(data, tiny, monkeypatch):
    """Four packed conversations that open with the same system prompt and tools: running that opening
    once and attending to its cache must train exactly like the packed row."""
    import agentft.engine_attention
    from agentft.train.prefix import shared_prefix_length, unpack_rows
    from agentft.train.sft import label_positions_loss

    model, _ = tiny
    rests = []
    original = agentft.engine_attention.rests_attention
    monkeypatch.setattr(agentft.engine_attention, "rests_attention", lambda *a: rests.append(a[4]) or original(*a))
    batch = packed_batch(data[0], tiny, 4)
    input_ids, attention_mask, _ = unpack_rows(batch)
    assert input_ids.shape[0] == 4 and shared_prefix_length(input_ids, attention_mask) >= 32
    results = []
    for share in (False, True):
        model.zero_grad()
        loss, _ = label_positions_loss(model, batch, share_prefix=share)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (packed, packed_grads), (shared, shared_grads) = results
    assert torch.allclose(packed, shared, atol=1e-5)
    assert len(packed_grads) == len(shared_grads) > 0
    for a, b in zip(packed_grads, shared_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-3)
    model.zero_grad()
    # the rests ran packed, none padded to the longest
    lengths = attention_mask.sum(dim=1) - shared_prefix_length(input_ids, attention_mask)
    assert rests and rests[0] == tuple(lengths.tolist()) and len(set(rests[0])) > 1
    assert unpack_rows(packed_batch(data[0], tiny, 1)) is None  # one conversation: nothing to share


def test_shared_prefix_keeps_sliding_windows():
    """A model with sliding-window layers (Gemma 3) whose window is shorter than the shared opening: each
    rest must see only the opening's keys inside its window, as the plain forward pass does (one row is the
    opening alone: no rest)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from agentft.train.prefix import shared_prefix_hidden

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        attn_implementation="sdpa",
    )
    backbone = Gemma3ForCausalLM(config).eval().model
    opening = torch.randint(3, 300, (40,))
    rows = [torch.cat([opening, torch.randint(3, 300, (n,))]) for n in (12, 0, 20, 7)]
    width = max(len(r) for r in rows)
    ids = torch.stack([torch.cat([r, torch.zeros(width - len(r), dtype=torch.long)]) for r in rows])
    mask = torch.stack([(torch.arange(width) < len(r)).long() for r in rows])
    with torch.no_grad():
        plain = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        shared = shared_prefix_hidden(backbone, ids, mask)
    assert backbone.config._attn_implementation == "agentft_engine"  # the packed rests' attention ran
    real = mask.bool()
    assert torch.allclose(plain[real], shared[real], atol=1e-5)


def test_full_fine_tuning_changes_every_weight(data, tmp_path):
    sft, _ = data
    out = tmp_path / "full"
    train_sft(
        SFTTrainConfig(model="tiny-test", data=str(sft), out=str(out), max_steps=2, lr=1e-3, full=True, save_steps=100)
    )
    trained, _ = load_model(out)
    fresh, _ = load_model("tiny-test")
    changed = [
        not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), fresh.state_dict().values(), strict=True)
    ]
    assert sum(changed) / len(changed) > 0.9


def test_dpo_from_an_sft_adapter_moves_the_adapter_and_the_margin(data, tmp_path):
    sft, dpo = data
    start = tmp_path / "sft"
    train_sft(SFTTrainConfig(model="tiny-test", data=str(sft), out=str(start), max_steps=2, save_steps=100))
    # One batch of two pairs, seen four times: the margin on the same pairs must grow (on new pairs a random
    # tiny model's margin can go either way, which made a first-vs-last check on changing batches flaky).
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    (pairs / "train.jsonl").write_text("".join((dpo / "train.jsonl").read_text().splitlines(keepends=True)[:2]))
    out = tmp_path / "dpo"
    metrics = train_dpo(
        DPOTrainConfig(
            model="tiny-test",
            adapter=str(start),
            data=str(pairs),
            out=str(out),
            max_steps=4,
            lr=5e-3,
            logging_steps=1,
            save_steps=100,
        )
    )
    assert metrics["reward_margin_first"] == 0.0  # the first step is scored at the reference
    assert metrics["reward_margin_last"] > 0.0
    before, after = adapter_weights(start), adapter_weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert json.loads((out / "manifest.json").read_text())["config"]["adapter"] == str(start)


def test_dpo_shared_prefix_gives_the_same_loss_gradients_and_reference(data, tmp_path, monkeypatch):
    from datasets import load_dataset
    from trl import DPOConfig

    import agentft.train.prefix
    from agentft.train.common import prepare_model
    from agentft.train.dpo import _trainer_class
    from agentft.train.prefix import shared_prefix_length

    _, dpo = data
    config = DPOTrainConfig(model="tiny-test", data=str(dpo), out=str(tmp_path), device="cpu")
    model, tokenizer = prepare_model(config, "cpu")
    rows = load_dataset("json", data_files=str(dpo / "train.jsonl"))["train"].select(range(2))
    rows = rows.remove_columns([c for c in rows.column_names if c not in ("prompt", "chosen", "rejected", "tools")])
    trainer = _trainer_class(True)(
        model=model,
        processing_class=tokenizer,
        train_dataset=rows,
        args=DPOConfig(
            output_dir=str(tmp_path),
            report_to=[],
            use_cpu=True,
            per_device_train_batch_size=2,
            precompute_ref_log_probs=False,
        ),
    )
    batch = next(iter(trainer.get_train_dataloader()))
    assert shared_prefix_length(batch["input_ids"], batch["attention_mask"]) >= 32
    calls = []
    original = agentft.train.prefix.shared_prefix_hidden
    monkeypatch.setattr(agentft.train.prefix, "shared_prefix_hidden", lambda *a: calls.append(1) or original(*a))
    results = []
    for trainer_class in (_trainer_class(False), type(trainer)):
        model.zero_grad()
        loss = trainer_class.compute_loss(trainer, model, batch)
        loss.backward()
        reference = trainer_class.compute_ref_log_probs(trainer, model, batch)
        results.append(
            (loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None], torch.cat(reference))
        )
    (plain, plain_grads, plain_ref), (shared, shared_grads, shared_ref) = results
    assert len(calls) == 3  # the shared class routed the policy, inline reference and precompute passes
    assert torch.allclose(plain, shared, atol=1e-5) and torch.allclose(plain_ref, shared_ref, atol=1e-4)
    assert len(plain_grads) == len(shared_grads) > 0
    for a, b in zip(plain_grads, shared_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-3)


def test_dpo_precomputes_the_reference_only_where_a_pair_is_seen_twice():
    from agentft.train.dpo import _pairs_seen

    assert _pairs_seen(DPOTrainConfig(max_steps=12, batch_size=1, grad_accum=2), 143) == 24  # on the fly
    assert _pairs_seen(DPOTrainConfig(epochs=2), 10) == 20  # precomputed once, used twice


def test_dpo_sft_weight_adds_the_chosen_nll(data, tmp_path):
    """At the first step the policy is its reference, so plain DPO's loss is exactly log 2; with sft_weight
    the chosen completions' negative log-likelihood is added on top."""
    _, dpo = data
    first = {}
    for weight in (0.0, 1.0):
        out = tmp_path / f"w{weight}"
        train_dpo(
            DPOTrainConfig(
                model="tiny-test",
                data=str(dpo),
                out=str(out),
                max_steps=1,
                logging_steps=1,
                save_steps=100,
                sft_weight=weight,
                device="cpu",
            )
        )
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        first[weight] = next(r["loss"] for r in rows if "loss" in r)
    assert first[0.0] == pytest.approx(0.6931, abs=1e-3)
    assert first[1.0] > first[0.0] + 0.5  # the tiny model gives its chosen tokens little probability


def test_resume_after_sigkill_continues_from_the_last_complete_checkpoint(data, tmp_path):
    sft, _ = data
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("sft:\n  save_steps: 2\n  logging_steps: 1\n  save_total_limit: 10\n  device: cpu\n")
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "agentft.cli",
        "train",
        "sft",
        "--model",
        "tiny-test",
        "--data",
        str(sft),
        "--out",
        str(out),
        "--recipe",
        str(recipe),
        "--max-steps",
        "40",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (out / "checkpoint-4" / ".agentft-complete").exists():
        assert process.poll() is None, "training ended before it could be killed"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    from agentft.train.common import newest_complete_checkpoint

    resume_from = newest_complete_checkpoint(out)
    assert resume_from is not None and int(resume_from.name.split("-")[1]) >= 4
    half_written = out / "checkpoint-999"
    half_written.mkdir()  # a checkpoint without its completion marker is never picked
    assert newest_complete_checkpoint(out) == resume_from
    result = subprocess.run(
        command[:-1] + ["42", "--resume"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["resumed_from"] == str(resume_from)
    assert manifest["metrics"]["steps"] == 42
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 42 and int(resume_from.name.split("-")[1]) in steps  # the log goes on from the checkpoint


class Killed(Exception):
    """Stands in for a kill -9 at a chosen point of a training run."""


def test_resume_never_trains_past_max_steps_logs_each_step_once_and_reports_totals(data, tmp_path, monkeypatch):
    from transformers import TrainerCallback

    import agentft.train.sft as sft_module

    sft, _ = data
    out = tmp_path / "run"
    config = SFTTrainConfig(
        model="tiny-test", data=str(sft), out=str(out), max_steps=4, logging_steps=1, save_steps=2, device="cpu"
    )

    class KillAfterLogging(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.global_step == 3 and "loss" in logs:
                raise Killed  # step 3 is in metrics.jsonl, but its checkpoint never comes

    real_callbacks = sft_module.callbacks
    monkeypatch.setattr(sft_module, "callbacks", lambda out: [*real_callbacks(out), KillAfterLogging()])
    with pytest.raises(Killed):
        train_sft(config)
    monkeypatch.setattr(sft_module, "callbacks", real_callbacks)

    def killed_in_final_save(trainer, tokenizer, config, *, kind, inputs, metrics):
        raise Killed(metrics)

    monkeypatch.setattr(sft_module, "finish_run", killed_in_final_save)
    with pytest.raises(Killed) as killed:
        train_sft(replace(config, resume=True))
    first = killed.value.args[0]
    assert first["steps"] == 4 and first["resumed_at_step"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]  # step 3 logged once, by the resumed part
    assert first["train_loss"] == pytest.approx(sum(losses.values()) / 4, rel=1e-4)  # the whole run, not its part

    def seconds_at(step):  # training time so far, as the checkpoint's completion marker records it
        return json.loads((out / f"checkpoint-{step}" / ".agentft-complete").read_text())["train_seconds"]

    assert 0 < seconds_at(2) < seconds_at(4) and first["train_seconds"] >= seconds_at(4)  # both parts' time
    monkeypatch.undo()
    at_four, trained = seconds_at(4), adapter_weights(out / "checkpoint-4")
    metrics = train_sft(replace(config, resume=True))  # checkpoint-4 is complete: nothing left to train
    saved = adapter_weights(out)
    assert saved.keys() == trained.keys() and all(torch.equal(saved[k], trained[k]) for k in saved)
    assert metrics["steps"] == 4 and metrics["resumed_from"].endswith("checkpoint-4")
    assert metrics["train_loss"] == pytest.approx(first["train_loss"], rel=1e-4)
    assert metrics["train_seconds"] >= at_four
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["steps"] == 4 and not list(out.glob("checkpoint-*"))
    with pytest.raises(UserError, match="holds a finished run"):
        train_sft(replace(config, resume=True))
