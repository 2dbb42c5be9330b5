"""``agentft export --merge [--gguf]``: fold a LoRA adapter into its base model, for serving without peft, and
optionally write it as one GGUF file with an Ollama ``Modelfile`` (``write_gguf``, ``write_modelfile``).

The base model is the one the adapter's ``manifest.json`` names (``config.model``), else the one in peft's
``adapter_config.json`` (``base_model_name_or_path``), unless ``model=`` says otherwise. The merged model is
saved with ``save_pretrained`` in the base model's dtype, with the tokenizer (and its chat template) and a
``manifest.json`` of kind ``export`` whose inputs are the adapter's files, so ``agentft lineage`` follows it
back to the training run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from agentft.errors import UserError

__all__ = ["merge_adapter", "adapter_base_model", "write_gguf", "write_modelfile"]

_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def _check_adapter(adapter: Path) -> None:
    if not adapter.is_dir():
        raise UserError(f"adapter directory {adapter} does not exist")
    if not (adapter / "adapter_config.json").exists():
        if (adapter / "model.safetensors").exists() or (adapter / "config.json").exists():
            raise UserError(
                f"{adapter} is a full model (trained with --full?), not a LoRA adapter: there is "
                "nothing to merge, use the directory as the model"
            )
        raise UserError(f"{adapter} is not a LoRA adapter directory (no adapter_config.json)")
    if not any((adapter / name).exists() for name in _ADAPTER_WEIGHTS):
        raise UserError(
            f"{adapter} has an adapter_config.json but no adapter weights ({' or '.join(_ADAPTER_WEIGHTS)})"
        )


def _model_exists(name: str) -> bool:
    from agentft.models import EMBEDDED_MODELS

    return name in EMBEDDED_MODELS or Path(name).expanduser().is_dir()


def adapter_base_model(adapter_dir: str | os.PathLike[str]) -> str:
    """The base model an adapter was trained on: its manifest's ``config.model``, else peft's record."""
    adapter = Path(adapter_dir)
    _check_adapter(adapter)
    candidates: list[str] = []
    manifest = adapter / "manifest.json"
    if manifest.exists():
        try:
            model = json.loads(manifest.read_text(encoding="utf-8")).get("config", {}).get("model")
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{manifest} cannot be read: {exc}") from None
        if isinstance(model, str) and model:
            candidates.append(model)
    try:
        peft_config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{adapter / 'adapter_config.json'} cannot be read: {exc}") from None
    if isinstance(peft_config.get("base_model_name_or_path"), str) and peft_config["base_model_name_or_path"]:
        candidates.append(peft_config["base_model_name_or_path"])
    for candidate in candidates:
        if _model_exists(candidate):
            return candidate
    if candidates:
        raise UserError(
            f"the base model of {adapter} ({' or '.join(map(repr, candidates))}) is not available here: "
            "pass it explicitly (--model NAME_OR_DIRECTORY)"
        )
    raise UserError(f"{adapter} does not say which base model it was trained on: pass --model NAME_OR_DIRECTORY")


def _prepare_out(out: Path, adapter: Path) -> None:
    if out.resolve() == adapter.resolve():
        raise UserError("the merged model must go to a directory other than the adapter's")
    if out.exists():
        if not out.is_dir():
            raise UserError(f"{out} exists and is not a directory")
        previous = out / "manifest.json"
        try:
            is_export = previous.exists() and json.loads(previous.read_text(encoding="utf-8")).get("kind") == "export"
        except (OSError, json.JSONDecodeError):
            is_export = False
        if any(out.iterdir()) and not is_export:
            raise UserError(f"{out} is not empty and not an earlier export: choose a new directory")


def merge_adapter(
    adapter_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    model: str | None = None,
    dtype: str | None = None,
) -> Path:
    """Merge the LoRA adapter in ``adapter_dir`` into its base model and save the result in ``out_dir``.

    ``model``: the base model (embedded name or directory) when the adapter's own record is missing or
    points elsewhere. ``dtype``: of the saved weights (default: the base model's). The merge itself runs in
    fp32. Returns ``out_dir``; it is written beside and renamed into place, so it is never half-written.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    from agentft.manifest import write_manifest
    from agentft.models import _ensure_chat_tokens, load_model, resolve_model_path

    adapter, out = Path(adapter_dir), Path(out_dir)
    _check_adapter(adapter)
    base = model or adapter_base_model(adapter)
    _prepare_out(out, adapter)
    base_path = resolve_model_path(base)
    base_config = json.loads((base_path / "config.json").read_text(encoding="utf-8"))
    saved_dtype = dtype or base_config.get("dtype") or base_config.get("torch_dtype") or "float32"
    if not isinstance(getattr(torch, str(saved_dtype), None), torch.dtype):
        raise UserError(f"unknown dtype {saved_dtype!r}: use float32, bfloat16 or float16")

    base_model, tokenizer = load_model(base, dtype="float32")
    try:
        peft_model = PeftModel.from_pretrained(base_model, adapter)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise UserError(f"the adapter {adapter} does not fit the base model {base}: {exc}") from None
    merged: Any = peft_model.merge_and_unload(safe_merge=True)
    merged.to(getattr(torch, saved_dtype))
    if (adapter / "tokenizer_config.json").exists():  # the training run's tokenizer, chat template included
        tokenizer = AutoTokenizer.from_pretrained(adapter)
        _ensure_chat_tokens(tokenizer)

    partial = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        merged.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        inputs = [
            (adapter / name).resolve()
            for name in ("adapter_config.json", *_ADAPTER_WEIGHTS)
            if (adapter / name).exists()
        ]
        outputs = sorted(partial.glob("*.safetensors")) + [partial / "config.json"]
        write_manifest(
            partial,
            kind="export",
            config={"method": "merge", "adapter": str(adapter.resolve()), "model": base, "dtype": saved_dtype},
            inputs=inputs,
            outputs=outputs,
        )
        shutil.rmtree(out, ignore_errors=True)
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out


# --- GGUF ----------------------------------------------------------------------------------------------------

GGUF_TYPES = ("f16", "f32")
"""Tensor types ``write_gguf`` writes: f16 (the default, half the size) or f32. Quantisation (Q8_0, Q4_K_M) is
llama.cpp's ``llama-quantize`` on the f16 file."""
_LAYER_TENSORS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def _permute(weights: Any, heads: int) -> Any:
    """llama.cpp's layout of a q/k projection (rotary halves interleaved), which its GGUF readers undo."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def write_gguf(
    model_dir: str | os.PathLike[str], out_file: str | os.PathLike[str], *, tensor_type: str = "f16"
) -> Path:
    """A Llama-architecture model directory (a merged export) as one GGUF file: weights, the BPE tokenizer with
    its special tokens, and the chat template (agentft's tool-aware one for a model trained here), so llama.cpp
    and Ollama render tools and tool calls the way the model was tuned. Written beside, then renamed."""
    import gguf
    import numpy as np
    from safetensors.torch import load_file

    source, out = Path(model_dir), Path(out_file)
    if tensor_type not in GGUF_TYPES:
        raise UserError(f"GGUF tensor type is one of {', '.join(GGUF_TYPES)}, not {tensor_type!r}")
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "llama":
        raise UserError(
            f"GGUF export covers Llama-architecture models (SmolLM2); {source} is {config.get('model_type')!r}"
        )
    weights = sorted(source.glob("*.safetensors"))
    if not weights or not (source / "tokenizer.json").exists():
        raise UserError(f"{source} needs safetensors weights and a tokenizer.json (a merged export has both)")
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    writer = gguf.GGUFWriter(partial, "llama")
    writer.add_name(source.resolve().name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    rope = config.get("rope_theta") or (config.get("rope_parameters") or {}).get("rope_theta") or 10000.0
    writer.add_rope_freq_base(float(rope))  # transformers 5 keeps it under rope_parameters
    writer.add_rope_dimension_count(config.get("head_dim") or config["hidden_size"] // heads)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if tensor_type == "f16" else gguf.LlamaFileType.ALL_F32)
    special_ids = {
        t["id"]
        for t in json.loads((source / "tokenizer.json").read_text(encoding="utf-8")).get("added_tokens", [])
        if t.get("special")
    }
    tokens, types = [], []
    for index, (text, _score, kind) in enumerate(gguf.BpeVocab(source).all_tokens()):
        tokens.append(text)
        types.append(gguf.TokenType.CONTROL if index in special_ids else kind)  # <|im_start|> stays one token
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(source, load_merges=True, n_vocab=len(tokens))
    special.add_to_gguf(writer)  # merges, bos/eos/pad ids and the tokenizer's chat template
    if not special.chat_template:
        from agentft.chat_format import CHAT_TEMPLATE

        writer.add_chat_template(CHAT_TEMPLATE)
    for file in weights:
        for key, tensor in load_file(file).items():
            array = tensor.float().numpy()  # bf16 and f16 checkpoints too (numpy has no bf16)
            if key == "model.embed_tokens.weight":
                name = "token_embd.weight"
            elif key == "model.norm.weight":
                name = "output_norm.weight"
            elif key == "lm_head.weight":
                if config.get("tie_word_embeddings"):
                    continue
                name = "output.weight"
            else:
                parts = key.split(".")  # model.layers.N.<module>.weight
                inner = ".".join(parts[3:-1])
                if parts[:2] != ["model", "layers"] or inner not in _LAYER_TENSORS:
                    raise UserError(f"GGUF export does not know the tensor {key!r}")
                name = f"blk.{parts[2]}.{_LAYER_TENSORS[inner]}.weight"
                if inner in ("self_attn.q_proj", "self_attn.k_proj"):
                    array = _permute(array, heads if inner == "self_attn.q_proj" else kv_heads)
            # Norms stay f32, as llama.cpp's converter keeps one-dimensional tensors.
            writer.add_tensor(name, array if array.ndim == 1 or tensor_type == "f32" else array.astype(np.float16))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        partial.rename(out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def write_modelfile(gguf_file: str | os.PathLike[str]) -> Path:
    """An Ollama ``Modelfile`` beside the GGUF: the file, ChatML's stop tokens, greedy decoding. The chat
    template travels inside the GGUF (Ollama reads it from there); ``ollama create NAME -f Modelfile``."""
    gguf_path = Path(gguf_file)
    path = gguf_path.with_name("Modelfile")
    lines = [
        f"FROM ./{gguf_path.name}",
        'PARAMETER stop "<|im_end|>"',
        'PARAMETER stop "<|endoftext|>"',
        "PARAMETER temperature 0",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
