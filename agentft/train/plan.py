"""Plan a training run before starting it: peak memory, broken down, and time per epoch.

Nothing here loads weights: parameter counts come from the model's ``config.json`` (analytically for the
Llama family, by instantiating on the meta device otherwise), the device's speed from a short matmul probe
(or, for a GPU that is not here, a table of known peaks).

Memory, in bytes, summed as if everything were alive at once (the peak is at the start of the backward
pass, when every saved activation and the loss's vocabulary-sized buffers coexist):

- weights: parameters x bytes of the weight dtype (fp32 on the CPU, bf16 on a GPU by default);
- adapter: LoRA A and B, always fp32 (peft upcasts adapters of a half-precision model);
- gradients: one per trainable parameter, in its dtype;
- optimizer: AdamW's two fp32 moments per trainable parameter, plus an fp32 master copy when full
  fine-tuning runs in half precision;
- activations: what autograd keeps per token of each decoder layer the backward goes through (see
  ``_layer_bytes_per_token``; with LoRA on the top N layers only those), times tokens; with gradient
  checkpointing each layer's input, plus a recomputed layer where it outgrows the logits' buffers;
- logits: trained positions x vocabulary x 4 bytes x 3 (the log-softmax output kept for the backward, its
  gradient and the logits' gradient); with ``label_positions_only`` only the trained positions (35%);
- reference: the frozen reference model of a full DPO run that does not precompute its log-probs.

The framework's own footprint (Python, torch, the CUDA context) is shown separately as ``overhead``.
Checked against measured peak RSS of real LoRA and full training steps on the CPU: within 5% across
plain/label-positions losses, masks, gradient checkpointing and top-layer LoRA.

Time: tokens per second = device FLOP/s x utilization / training FLOPs per token (see ``estimate_for_config``);
an epoch = ``dataset_tokens`` / that.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentft.errors import UserError

__all__ = [
    "Plan",
    "Architecture",
    "estimate",
    "estimate_for_config",
    "architecture",
    "device_speed",
    "GPU_PEAKS",
    "LABEL_FRACTION",
]

Method = Literal["lora", "full", "dpo", "dpo-full", "grpo"]
Mask = Literal["none", "padding", "packed"]

GiB = 1024**3
LABEL_FRACTION = 0.35  # share of positions that carry a label in agentft's tool-use SFT data
LOGIT_COPIES = 3  # log-softmax output (kept for backward), its gradient, the logits' gradient
CPU_OVERHEAD = int(0.6 * GiB)  # python with torch, transformers, peft, trl imported: ~0.5 GiB RSS, + the trainer
CUDA_OVERHEAD = int(0.6 * GiB)  # CUDA context and cuBLAS workspaces

# Utilization = training FLOP/s achieved / the probe's (or the table's) FLOP/s. CPU, calibrated with
# SmolLM2-135M LoRA (r16, all-linear) on the 2-core reference machine, training and probe back to back:
# - one thread: 0.75 (199/167 tokens/s with LoRA on the top 15 layers, 146/128 on all 30, label positions
#   only / all positions, batch 2 x 512; estimates within 3%);
# - two threads, as prepare_model runs: 0.25-0.45 (OpenMP threads stall whenever another process holds a
#   core; the probe's best sample does not see that), and agentft's measured SFT (~100 tokens/s label
#   positions only, ~70 without, padding-free batches) implies 0.35-0.5 against an idle probe: 0.40.
# On the CPU attention runs at about half the matmuls' efficiency: its FLOPs count twice.
CPU_UTILIZATION = 0.40
CPU_UTILIZATION_ONE_THREAD = 0.75
CPU_ATTENTION_COST = 2.0
# GPU: ~40% of the datasheet's dense bf16 peak; a matmul probe itself reaches ~75-80% of that peak.
GPU_UTILIZATION_OF_PEAK = 0.40
GPU_UTILIZATION_OF_PROBE = 0.52

# name fragment -> (dense bf16 TFLOP/s, memory GiB); first match wins, so longer names come first.
GPU_PEAKS: dict[str, tuple[float, float]] = {
    "H200": (989.0, 141.0),
    "H100": (989.0, 80.0),
    "A100": (312.0, 80.0),
    "L40S": (362.0, 48.0),
    "A10G": (125.0, 24.0),
    "L4": (121.0, 24.0),
    "T4": (65.0, 16.0),
}
DEFAULT_GPU = "H100"

_DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}

# Configs of the embedded models, so that planning never has to build them (smollm2's first pull
# converts a GGUF file: ~20 s). A pulled model's own config.json takes precedence.
_EMBEDDED_CONFIGS: dict[str, dict[str, Any]] = {
    "smollm2-135m": {
        "model_type": "llama",
        "vocab_size": 49152,
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "tie_word_embeddings": True,
    },
    "tiny-test": {
        "model_type": "llama",
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "tie_word_embeddings": True,
    },
}

# Decoder-only models whose block is Llama's (RMSNorm, q/k/v/o, gated MLP): counted analytically.
_LLAMA_FAMILY = {"llama", "mistral", "qwen2", "qwen3"}


@dataclass(frozen=True)
class Architecture:
    """What the estimate needs to know about a decoder-only model."""

    model_type: str
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    params: int
    linears: dict[str, tuple[int, int]]  # per layer: name -> (in_features, out_features)
    tied: bool

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def head_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def layer_matmul_params(self) -> int:
        return sum(i * o for i, o in self.linears.values())

    def lora_targets(self, target_modules: str | list[str]) -> dict[str, tuple[int, int]]:
        """The per-layer linears a LoRA config adapts ('all-linear': all but the LM head, like peft)."""
        if target_modules == "all-linear":
            return dict(self.linears)
        names = [target_modules] if isinstance(target_modules, str) else list(target_modules)
        return {name: shape for name, shape in self.linears.items() if name in names}

    def lora_params(self, r: int, target_modules: str | list[str] = "all-linear", top_layers: int | None = None) -> int:
        layers = min(top_layers, self.layers) if top_layers else self.layers
        return layers * sum(r * (i + o) for i, o in self.lora_targets(target_modules).values())


def _read_config(model: str | os.PathLike[str]) -> dict[str, Any]:
    from agentft.models import EMBEDDED_MODELS, is_pulled, model_dir

    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(f"{path} is not a model directory (no config.json)")
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    name = str(model)
    if name in EMBEDDED_MODELS:
        if is_pulled(name):
            return json.loads((model_dir(name) / "config.json").read_text(encoding="utf-8"))
        return dict(_EMBEDDED_CONFIGS[name])
    raise UserError(
        f"model {name!r} is neither an embedded model ({', '.join(EMBEDDED_MODELS)}) nor a local "
        "directory with a config.json"
    )


def architecture(config: Any) -> Architecture:
    """An ``Architecture`` from a transformers config object or its dict (``config.json``), weights untouched."""
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    cfg = {**cfg.get("text_config", {}), **cfg} if "hidden_size" not in cfg else cfg
    try:
        hidden, layers, heads = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
        vocab, intermediate = cfg["vocab_size"], cfg["intermediate_size"]
    except KeyError as missing:
        raise UserError(
            f"cannot plan for this model: its config has no {missing} (a decoder-only transformer "
            "with hidden_size, intermediate_size, num_hidden_layers, num_attention_heads is needed)"
        ) from None
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or hidden // heads
    model_type = cfg.get("model_type", "llama")
    tied = bool(cfg.get("tie_word_embeddings", False))
    linears = {
        "q_proj": (hidden, heads * head_dim),
        "k_proj": (hidden, kv_heads * head_dim),
        "v_proj": (hidden, kv_heads * head_dim),
        "o_proj": (heads * head_dim, hidden),
        "gate_proj": (hidden, intermediate),
        "up_proj": (hidden, intermediate),
        "down_proj": (intermediate, hidden),
    }
    if model_type in _LLAMA_FAMILY:
        params = _llama_family_params(cfg, model_type, linears, vocab, hidden, layers, head_dim, tied)
    else:
        params, linears = _meta_params(cfg, linears)
    return Architecture(
        model_type, vocab, hidden, intermediate, layers, heads, kv_heads, head_dim, params, linears, tied
    )


def _llama_family_params(
    cfg: dict[str, Any],
    model_type: str,
    linears: dict[str, tuple[int, int]],
    vocab: int,
    hidden: int,
    layers: int,
    head_dim: int,
    tied: bool,
) -> int:
    attention_bias = bool(cfg.get("attention_bias", False))
    bias = {name: 0 for name in linears}
    if model_type == "qwen2":  # q, k and v carry a bias, o does not
        bias.update({n: linears[n][1] for n in ("q_proj", "k_proj", "v_proj")})
    elif attention_bias:
        bias.update({n: linears[n][1] for n in ("q_proj", "k_proj", "v_proj", "o_proj")})
    if cfg.get("mlp_bias"):
        bias.update({n: linears[n][1] for n in ("gate_proj", "up_proj", "down_proj")})
    norms = 2 * hidden + (2 * head_dim if model_type == "qwen3" else 0)  # qwen3 also norms q and k per head
    per_layer = sum(i * o for i, o in linears.values()) + sum(bias.values()) + norms
    return vocab * hidden * (1 if tied else 2) + layers * per_layer + hidden


def _meta_params(cfg: dict[str, Any], linears: dict[str, tuple[int, int]]) -> tuple[int, dict[str, tuple[int, int]]]:
    """Exact count for any other architecture: build it on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**cfg)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    output = model.get_output_embeddings()
    found: dict[str, tuple[int, int]] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not output and ".layers.0." in f".{name}.":
            found[name.rsplit(".", 1)[-1]] = (module.in_features, module.out_features)
    return sum(p.numel() for p in model.parameters()), found or linears


def _layer_bytes_per_token(
    arch: Architecture,
    *,
    lora: bool,
    lora_r: int,
    lora_targets: dict[str, tuple[int, int]],
    compute_bytes: int,
    mask_row: int | None,
) -> int:
    """Bytes autograd keeps per token of one decoder layer until the backward pass reaches it.

    Established on the CPU (fp32, SDPA, transformers 5) by listing the saved tensors with
    ``torch.autograd.graph.saved_tensors_hooks``; h = hidden, q = heads x head_dim, kv = kv heads x head_dim,
    i = intermediate, c = compute dtype bytes:

    - the inputs of the two RMSNorms, kept in fp32 (the norm upcasts): 2 x 4h
    - their normalized outputs, the inputs of q/k/v and gate/up (kept by the layers that read them): 2 x ch;
      full fine-tuning also keeps the pre-weight normalized tensor for the norm weight's gradient: + 2 x ch
    - SDPA's q (after RoPE), k, v and output (the output is also o_proj's input): c(2q + 2kv); with an
      attention mask transformers repeats k/v to every head (kv -> q) and SDPA keeps a float copy of the
      mask per layer: + c x mask row length
    - SDPA's log-sum-exp and the norms' rsqrt: 4 x heads + 2 x 4
    - the MLP: gate (SiLU's input), SiLU's output, up, and their product (down_proj's input): 4 x ci
    - LoRA: each adapted linear keeps its r-wide A output for B: 4r (fp32 adapters). In half precision peft
      casts each adapted linear's input to fp32 and autocast casts it back: a c x in_features copy per adapted
      linear is kept instead of the inputs themselves (the frozen base layers keep nothing), so the normalized
      outputs and the MLP product drop out (c x r for the A outputs, which autocast makes bf16).

    Checked to the byte against the saved tensors for fp32 and bf16 (autocast) on the CPU; on a GPU SDPA's
    flash kernel keeps the same tensors.
    """
    h, q, i, c = arch.hidden, arch.q_dim, arch.intermediate, compute_bytes
    kv = q if mask_row else arch.kv_dim
    half_lora = lora and c < 4
    total = 2 * 4 * h + 2 * 4 + 4 * arch.heads  # norm inputs (fp32), rsqrt, log-sum-exp
    total += c * (2 * q + 2 * kv) + 3 * c * i  # attention q, k, v, output; MLP gate, SiLU, up
    if mask_row:
        total += c * mask_row
    if not lora:
        total += 2 * c * h + 2 * c * h + c * i  # normalized outputs, pre-weight normalized tensors, MLP product
    elif half_lora:
        total += sum(c * fan_in for fan_in, _ in lora_targets.values()) + len(lora_targets) * c * lora_r
    else:
        total += 2 * c * h + c * i + len(lora_targets) * 4 * lora_r
    return total


@dataclass
class Plan:
    """The estimate: memory by component (bytes), throughput and time, with the assumptions in ``notes``."""

    model: str
    method: str
    device: str
    dtype: str
    batch: int
    seq: int
    params: int
    trainable_params: int
    memory: dict[str, int]
    overhead_bytes: int
    capacity_bytes: int | None
    flops_per_token: float
    device_flops: float
    device_flops_source: str
    utilization: float
    tokens_per_step: int
    dataset_tokens: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def peak_bytes(self) -> int:
        """Peak of the training's own allocations (weights included, framework overhead not)."""
        return sum(self.memory.values())

    @property
    def total_bytes(self) -> int:
        return self.peak_bytes + self.overhead_bytes

    @property
    def fits(self) -> bool | None:
        return None if self.capacity_bytes is None else self.total_bytes <= self.capacity_bytes

    @property
    def tokens_per_second(self) -> float:
        return self.device_flops * self.utilization / self.flops_per_token

    @property
    def seconds_per_step(self) -> float:
        return self.tokens_per_step / self.tokens_per_second

    @property
    def epoch_seconds(self) -> float | None:
        return None if self.dataset_tokens is None else self.dataset_tokens / self.tokens_per_second

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            peak_bytes=self.peak_bytes,
            total_bytes=self.total_bytes,
            fits=self.fits,
            tokens_per_second=round(self.tokens_per_second, 1),
            seconds_per_step=round(self.seconds_per_step, 3),
            epoch_seconds=None if self.epoch_seconds is None else round(self.epoch_seconds, 1),
        )
        return data

    def table(self) -> Any:
        """A rich ``Table`` (print it with ``rich.console.Console().print``)."""
        from rich.table import Table

        table = Table(
            "estimate",
            "value",
            title=f"{self.model} {self.method} on {self.device} ({self.dtype}), batch {self.batch} x {self.seq} tokens",
            title_justify="left",
        )
        table.add_row("parameters", f"{self.params / 1e6:,.1f} M ({self.trainable_params / 1e6:,.2f} M trained)")
        for name, size in self.memory.items():
            table.add_row(f"  {name}", _gib(size))
        table.add_row("[bold]peak (training)[/bold]", f"[bold]{_gib(self.peak_bytes)}[/bold]")
        table.add_row("  + framework overhead", _gib(self.overhead_bytes))
        capacity = "" if self.capacity_bytes is None else f" of {_gib(self.capacity_bytes)}"
        verdict = "" if self.fits is None else (" [green]fits[/green]" if self.fits else " [red]does not fit[/red]")
        table.add_row("[bold]total[/bold]", f"[bold]{_gib(self.total_bytes)}[/bold]{capacity}{verdict}")
        table.add_row("FLOPs per token", f"{self.flops_per_token / 1e9:,.2f} G")
        table.add_row(
            "device",
            f"{self.device_flops / 1e12:,.3f} TFLOP/s ({self.device_flops_source}) x "
            f"{self.utilization:.0%} utilization",
        )
        table.add_row("throughput", f"{self.tokens_per_second:,.0f} tokens/s, {self.seconds_per_step:,.2f} s/step")
        if self.epoch_seconds is not None:
            table.add_row("epoch", f"{self.dataset_tokens:,} tokens: {_duration(self.epoch_seconds)}")
        for note in self.notes:
            table.add_row("note", note)
        return table


def _gib(size: float) -> str:
    return f"{size / GiB:,.2f} GiB" if size >= 0.1 * GiB else f"{size / 2**20:,.1f} MiB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:,.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.1f} min"
    return f"{seconds / 3600:,.1f} h"


def device_speed(
    device: str, gpu: str | None = None, *, probe_seconds: float = 0.3
) -> tuple[float, float, str, int | None]:
    """(FLOP/s, utilization, where the figure came from, memory capacity in bytes) of ``device``."""
    if device == "cpu":
        return _cpu_probe(probe_seconds), _cpu_utilization(), "fp32 matmul probe", _system_memory()
    if device != "cuda":
        raise UserError(f"device must be cpu or cuda, not {device!r}")
    import torch

    if gpu is None and torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        flops = _cuda_probe(probe_seconds)
        return flops, GPU_UTILIZATION_OF_PROBE, f"bf16 matmul probe on {properties.name}", properties.total_memory
    name = gpu or DEFAULT_GPU
    for fragment, (tflops, memory_gib) in GPU_PEAKS.items():
        if fragment.lower() in name.lower():
            return tflops * 1e12, GPU_UTILIZATION_OF_PEAK, f"{fragment} datasheet bf16 peak", int(memory_gib * GiB)
    raise UserError(f"unknown GPU {name!r}: known are {', '.join(GPU_PEAKS)}")


def _cpu_utilization() -> float:
    return CPU_UTILIZATION_ONE_THREAD if (os.cpu_count() or 1) == 1 else CPU_UTILIZATION


def _cpu_probe(seconds: float) -> float:
    """Best fp32 matmul rate over ~``seconds``: the best sample is the least disturbed by other processes."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)  # the threads training gets (prepare_model)
    try:
        n = 1024
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        best, started = math.inf, time.perf_counter()
        while time.perf_counter() - started < seconds:
            tick = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - tick)
    finally:
        torch.set_num_threads(threads)
    return 2 * n**3 / best


def _cuda_probe(seconds: float) -> float:
    import torch

    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    a @ b
    torch.cuda.synchronize()
    best, started = math.inf, time.perf_counter()
    while time.perf_counter() - started < seconds:
        tick = time.perf_counter()
        for _ in range(5):
            a @ b
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - tick) / 5)
    return 2 * n**3 / best


def _system_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def estimate(
    model: str,
    method: Method,
    batch: int,
    seq: int,
    device: Literal["cpu", "cuda"],
    *,
    lora_r: int = 16,
    dtype: str | None = None,
    label_positions_only: bool = True,
    gradient_checkpointing: bool = False,
    dataset_tokens: int | None = None,
    **options: Any,
) -> Plan:
    """Estimate peak memory and time per epoch of training ``model`` (an embedded name or a model directory).

    ``method``: ``lora`` or ``full`` (SFT/CPT), ``dpo`` (LoRA DPO) or ``dpo-full``. ``batch``: sequences per
    step (DPO: pairs); ``seq``: tokens per sequence. ``dataset_tokens``: tokens in one epoch (DPO: chosen and
    rejected together) to get its duration. Further options: see ``estimate_for_config``.
    """
    return estimate_for_config(
        _read_config(model),
        method,
        batch,
        seq,
        device,
        lora_r=lora_r,
        dtype=dtype,
        label_positions_only=label_positions_only,
        gradient_checkpointing=gradient_checkpointing,
        dataset_tokens=dataset_tokens,
        name=str(model),
        **options,
    )


def estimate_for_config(
    config: Any,
    method: Method,
    batch: int,
    seq: int,
    device: Literal["cpu", "cuda"],
    *,
    lora_r: int = 16,
    dtype: str | None = None,
    label_positions_only: bool = True,
    gradient_checkpointing: bool = False,
    dataset_tokens: int | None = None,
    target_modules: str | list[str] = "all-linear",
    lora_top_layers: int | None = None,
    mask: Mask = "padding",
    label_fraction: float = LABEL_FRACTION,
    precompute_ref: bool = True,
    gpu: str | None = None,
    device_flops: float | None = None,
    name: str | None = None,
) -> Plan:
    """The estimate for a transformers config (object or dict).

    ``mask``: how batches are laid out: ``none`` (every row full, no mask: CPT blocks), ``padding`` (padded
    rows with an attention mask: SFT/DPO without padding-free) or ``packed`` (padding-free: one row of
    batch x seq tokens). ``label_positions_only`` (SFT): the LM head runs on ``label_fraction`` of the
    positions only; ignored for DPO (TRL scores every position). ``lora_top_layers``: LoRA on the top N
    layers only (the layers below keep no activations and get no backward). ``gpu``: plan for this GPU (a name in
    ``GPU_PEAKS``) instead of the one present. ``device_flops``: skip the probe and use this FLOP/s.
    """
    if method not in ("lora", "full", "dpo", "dpo-full", "grpo"):
        raise UserError(f"method must be lora, full, dpo, dpo-full or grpo, not {method!r}")
    if mask not in ("none", "padding", "packed"):
        raise UserError(f"mask must be none, padding or packed, not {mask!r}")
    if device not in ("cpu", "cuda"):
        raise UserError(f"device must be cpu or cuda, not {device!r}")
    if batch < 1 or seq < 2:
        raise UserError("batch must be at least 1 and seq at least 2")
    arch = architecture(config)
    dtype = dtype or ("float32" if device == "cpu" else "bfloat16")
    if dtype not in _DTYPE_BYTES:
        raise UserError(f"dtype must be one of {', '.join(_DTYPE_BYTES)}, not {dtype!r}")
    weight_bytes = _DTYPE_BYTES[dtype]
    lora = method in ("lora", "dpo", "grpo")
    dpo = method.startswith("dpo")
    grpo = method == "grpo"
    rows = batch * (2 if dpo else 1)  # DPO runs chosen and rejected side by side
    tokens = rows * seq
    notes: list[str] = []

    targets = arch.lora_targets(target_modules) if lora else {}
    adapter_params = arch.lora_params(lora_r, target_modules, lora_top_layers) if lora else 0
    # layers the backward goes through: with LoRA on the top N only, nothing below them needs a gradient
    trained_layers = min(lora_top_layers, arch.layers) if lora and lora_top_layers else arch.layers
    trainable = adapter_params if lora else arch.params
    memory = {"weights": arch.params * weight_bytes}
    if lora:
        memory["adapter"] = adapter_params * 4
    memory["gradients"] = trainable * (4 if lora else weight_bytes)
    memory["optimizer"] = trainable * 8 + (trainable * 4 if not lora and weight_bytes < 4 else 0)
    mask_row = {"none": None, "padding": seq, "packed": rows * seq}[mask]
    per_layer = _layer_bytes_per_token(
        arch, lora=lora, lora_r=lora_r, lora_targets=targets, compute_bytes=weight_bytes, mask_row=mask_row
    )
    final_norm = 4 * arch.hidden + (0 if lora else 2 * weight_bytes * arch.hidden)
    fraction = label_fraction if label_positions_only and not dpo else 1.0
    memory["logits"] = math.ceil(tokens * fraction) * arch.vocab * 4 * LOGIT_COPIES
    if gradient_checkpointing:
        # Only each layer's input survives the forward. The backward recomputes one layer at a time (plus its
        # gradients in flight, ~ the MLP's two input gradients) after the loss's vocabulary-sized buffers are
        # gone: the peak is the larger of the two phases, so the recomputed layer counts only by its excess.
        memory["activations"] = tokens * (trained_layers * weight_bytes * arch.hidden + final_norm)
        in_flight = 2 * weight_bytes * arch.intermediate
        memory["recomputed layer"] = max(0, tokens * (per_layer + in_flight) - memory["logits"])
    else:
        memory["activations"] = tokens * (trained_layers * per_layer + final_norm)
    if dpo and not lora and not precompute_ref:
        memory["reference"] = arch.params * weight_bytes
    if grpo:
        # TRL's frozen copy of the starting adapter (the KL reference), and agentft's rollout copy of the model
        # (merged weights, bf16 on a GPU) with the engine's key/value slots for one step's episodes
        rollout_bytes = 2 if device == "cuda" else weight_bytes
        memory["reference adapter"] = adapter_params * 4
        memory["rollout model"] = arch.params * rollout_bytes
        memory["rollout cache"] = batch * arch.layers * 2 * arch.kv_dim * seq * rollout_bytes
        notes.append(
            "grpo: batch = episodes per forward/backward pass, seq = tokens per episode; the time is the "
            "training's only: sampling the episodes comes on top (benchmarks/grpo.py measures both)"
        )
    if not lora and weight_bytes < 4:
        notes.append(
            "full fine-tuning in half precision: fp32 master weights and moments assumed (16 B/param); "
            "a bf16-loaded model under torch AdamW keeps bf16 moments and no master copy (8 B/param)"
        )

    # FLOPs per token: 2 per weight for the forward matmuls (the LM head on the trained positions only);
    # the backward doubles that for the activation gradients, and for full fine-tuning once more for the
    # weight gradients (frozen weights get none). Attention per layer, forward: QK^T and AV over the keys a
    # token sees, 2 x 2 x keys x q_dim; causal without a mask (flash kernel) skips the upper triangle
    # (keys = seq / 2 on average), with a mask the kernel computes every key of the row (seq, or
    # batch x seq when packed); its backward is about twice its forward.
    layer_forward = 2 * arch.layer_matmul_params
    head_forward = 2 * arch.head_params * fraction
    keys = {"none": seq / 2, "padding": seq, "packed": rows * seq}[mask]
    attention = 4 * keys * arch.q_dim * (CPU_ATTENTION_COST if device == "cpu" else 1.0)  # per layer
    forward = arch.layers * (layer_forward + attention) + head_forward
    backward = (1 if lora else 2) * (trained_layers * layer_forward + head_forward) + 2 * trained_layers * attention
    flops = forward + backward
    if gradient_checkpointing:
        flops += trained_layers * (layer_forward + attention)
    if dpo or grpo:  # the reference's forward over the same tokens (DPO: precomputed once, before training)
        flops += arch.layers * (layer_forward + attention) + 2 * arch.head_params

    if device_flops is not None:
        utilization = _cpu_utilization() if device == "cpu" else GPU_UTILIZATION_OF_PEAK
        speed, source, capacity = device_flops, "given", _system_memory() if device == "cpu" else None
    else:
        speed, utilization, source, capacity = device_speed(device, gpu)
        if device == "cpu":
            notes.append(
                f"CPU speed probed just now on {os.cpu_count() or 1} thread(s): other processes on the "
                "cores slow training more than they slow the probe"
            )
        if device == "cuda" and gpu is None and "probe" not in source:
            notes.append(f"no GPU visible here: planned for an {DEFAULT_GPU} (pass gpu=... for another)")
    if arch.model_type not in _LLAMA_FAMILY:
        notes.append(f"{arch.model_type}: activations and FLOPs assume a Llama-style block")
    if mask != "none":
        notes.append(
            f"attention mask ({mask}): k/v repeated to every head and a {mask_row}-wide mask kept per "
            "layer (as measured on the CPU)"
        )
    return Plan(
        model=name or str(arch.model_type),
        method=method,
        device=device,
        dtype=dtype,
        batch=batch,
        seq=seq,
        params=arch.params,
        trainable_params=trainable,
        memory=memory,
        overhead_bytes=CPU_OVERHEAD if device == "cpu" else CUDA_OVERHEAD,
        capacity_bytes=capacity,
        flops_per_token=flops,
        device_flops=speed,
        device_flops_source=source,
        utilization=utilization,
        tokens_per_step=tokens,
        dataset_tokens=dataset_tokens,
        notes=notes,
    )
