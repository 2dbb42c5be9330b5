"""``agentft export --merge``: fold a LoRA adapter into its base model, for serving without peft.

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

__all__ = ["merge_adapter", "adapter_base_model"]

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
