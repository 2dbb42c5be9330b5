"""Run the opening that every row of a batch shares once, then the rest of each row against its cache.

Tool-use training rows open with the same system prompt and tool list (about 600 of ~900 tokens in
``claims``). Running that opening once per batch and letting each row's remainder attend to its keys and
values gives the same hidden states, loss and gradients as running every row in full: autograd carries
each row's gradient back through the cache into the one prefix pass. The remainders run packed end to end,
not padded to the longest (a quarter of a padded batch's tokens were padding in the quickstart's SFT).

SFT uses it on its packed rows; DPO (chosen and rejected rows that share their whole prompt) through
:func:`sharing_backbone`, which TRL's fused LM head then calls without knowing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["MIN_SHARED_PREFIX", "shared_prefix_hidden", "unpack_rows", "sharing_backbone", "score_completions_only"]

MIN_SHARED_PREFIX = 32
"""Shorter common openings are not worth a second forward call."""


def shared_prefix_length(input_ids: Any, attention_mask: Any) -> int:
    """Tokens every row starts with, within every row's real (unpadded) length."""
    same = (input_ids == input_ids[:1]).all(dim=0).long().cumprod(dim=0).sum()
    return int(min(int(same), int(attention_mask.sum(dim=1).min())))


def shared_prefix_hidden(backbone: Any, input_ids: Any, attention_mask: Any) -> Any:
    """Last hidden states ``[rows, length, hidden]`` of right-padded rows, the shared opening run once.

    The rows' rests (their tokens after the opening) then run as one packed sequence on top of the opening's
    cache: no padding tokens through the layers, and each rest attends to the one copy of the opening's keys and
    values (``agentft.engine_attention.rests_attention``). Falls back to one plain forward call for a single row,
    a short common opening, or a model off sdpa attention.
    """
    import torch

    from agentft.engine_attention import use_engine_attention

    rows, width = input_ids.shape
    length = shared_prefix_length(input_ids, attention_mask) if rows > 1 else 0
    if length < MIN_SHARED_PREFIX or length == width or not use_engine_attention(backbone):
        return backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    prefix = backbone(input_ids=input_ids[:1, :length], use_cache=True)
    real = attention_mask[:, length:].bool()
    positions = torch.arange(length, width, device=input_ids.device).expand(rows, -1)
    packed = backbone(
        input_ids=input_ids[:, length:][real][None],
        position_ids=positions[real][None],
        cache=prefix.past_key_values,
        use_cache=True,
        rest_lengths=tuple(real.sum(dim=1).tolist()),
    ).last_hidden_state
    rest = packed.new_zeros(rows, width - length, packed.shape[-1])
    rest[real] = packed[0]
    return torch.cat([prefix.last_hidden_state.expand(rows, -1, -1), rest], dim=1)


def unpack_rows(inputs: dict[str, Any]) -> tuple[Any, Any, Any] | None:
    """A padding-free packed row (``position_ids`` restart at each example) as right-padded rows:
    ``(input_ids, attention_mask, labels)``; None when the batch is not a packed row of several examples."""
    import torch

    ids, labels, positions = inputs["input_ids"], inputs["labels"], inputs.get("position_ids")
    if positions is None or ids.shape[0] != 1:
        return None
    starts = (positions[0] == 0).nonzero().flatten().tolist()
    if len(starts) < 2:
        return None
    ends = [*starts[1:], ids.shape[1]]
    width = max(b - a for a, b in zip(starts, ends, strict=True))
    out_ids = torch.zeros(len(starts), width, dtype=ids.dtype, device=ids.device)
    out_labels = torch.full_like(out_ids, -100)
    attention = torch.zeros_like(out_ids)
    for row, (a, b) in enumerate(zip(starts, ends, strict=True)):
        out_ids[row, : b - a] = ids[0, a:b]
        out_labels[row, : b - a] = labels[0, a:b]
        attention[row, : b - a] = 1
    return out_ids, attention, out_labels


@contextlib.contextmanager
def sharing_backbone(model: Any) -> Iterator[None]:
    """While active, the model's backbone runs a batch's shared opening once (see the module docstring).

    Only plain calls (``input_ids`` and a right-padding ``attention_mask``, no cache) are rerouted; anything
    else goes to the original forward unchanged.
    """
    from transformers.modeling_outputs import BaseModelOutputWithPast

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(base, base.base_model_prefix)
    original = backbone.forward

    def forward(input_ids: Any = None, attention_mask: Any = None, **kwargs: Any) -> Any:
        # PEFT passes inputs_embeds=None, output_attentions=None, ... explicitly: those are still plain calls
        extras = {k for k, v in kwargs.items() if v is not None and v is not False and k != "return_dict"}
        plain = input_ids is not None and attention_mask is not None and not extras
        if not plain or not _right_padded(attention_mask):
            return original(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return BaseModelOutputWithPast(
            last_hidden_state=shared_prefix_hidden(_Original(backbone, original), input_ids, attention_mask)
        )

    backbone.forward = forward
    try:
        yield
    finally:
        del backbone.forward


class _Original:
    """The backbone with its own forward (not the rerouting one), callable like the module."""

    def __init__(self, module: Any, forward: Any) -> None:
        self.module, self.forward = module, forward

    def __getattr__(self, name: str) -> Any:  # config, set_attn_implementation
        return getattr(self.module, name)

    def __call__(self, **kwargs: Any) -> Any:
        return self.forward(**kwargs)


def _right_padded(attention_mask: Any) -> bool:
    """Every row is ones then zeros (what a shared opening at position 0 needs)."""
    return bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())


@contextlib.contextmanager
def score_completions_only() -> Iterator[None]:
    """TRL's fused LM head (DPO, GRPO) scores only the labelled tokens on Triton devices and every position elsewhere
    (fixed tile shapes for compilers such as XLA). Eager CPU runs gain from the compact path too: measured on
    SmolLM2 pairs, the head took 4.7 of 10 s per step scoring all ~900 positions for ~60 completion tokens.
    The log-probs are the same (unscored positions are zeros either way). TRL's kernels keep their own
    device check, so they stay on the torch path."""
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None:  # a TRL without the switch: nothing to change
        yield
        return
    trl_utils._use_triton = lambda device: True
    try:
        yield
    finally:
        trl_utils._use_triton = original
