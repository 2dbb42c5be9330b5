"""agentft's attention: sdpa's kernels over two layouts transformers' sdpa attention does not offer.

- The generation engine's passes (``agentft.engine``, ``shared_prefix``): what a decode step on a CPU is bound by
  is reading the key/value cache, so this attention reads less of it.
- Training's packed rests (``agentft.train.prefix``, ``rest_lengths``): several conversations' tokens after the
  opening they share, laid end to end, each attending to one copy of that opening and to itself.

The engine and training switch a model on transformers' sdpa attention to ``engine_attention``
(``use_engine_attention``); calls that pass neither keyword (``generate``, plain training rows) go to sdpa
unchanged.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ATTENTION", "engine_attention", "rests_attention", "use_engine_attention"]


def engine_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    scaling: float | None = None,
    shared_prefix: int | None = None,
    rest_lengths: tuple[int, ...] | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Attention for the engine's forward passes (``shared_prefix`` given, an additive mask) and training's packed
    rests (``rest_lengths`` given: ``rests_attention``); anything else goes to transformers' sdpa attention unchanged.

    - **Grouped-query heads packed**: the query heads sharing a key/value head become extra query rows of that
      head (their mask rows repeated), so keys and values are read as cached, never copied once per query head
      (transformers packs so for a single query token only).
    - **Shared prefix read once** (CPU): every row of the pass holds the same first ``shared_prefix`` tokens (the
      system prompt and tools its episodes share; their keys and values are copies of one encoding). A decode
      step over 64 rows otherwise reads 64 copies of them: on two cores the step is bound by reading the cache,
      not by arithmetic. All rows' queries attend to one copy of the prefix in one pass, each row's to its own
      rest in another, and the two are merged by their log-sum-exps: the same softmax, summed in another order.
      Not on sliding-window layers (their windows cut the prefix differently per query).
    - **Sliding windows cut**: a sliding-window layer reads only the keys some query's window reaches, not the
      whole cache with the rest masked.
    """
    import torch

    if rest_lengths is not None:
        return rests_attention(module, query, key, value, rest_lengths, scaling, kwargs.get("dropout") or 0.0), None
    unsupported = kwargs.get("dropout") or kwargs.get("position_bias") is not None or kwargs.get("softcap")
    if shared_prefix is None or attention_mask is None or attention_mask.dtype == torch.bool or unsupported:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    window, positions = getattr(module, "sliding_window", None), kwargs.get("position_ids")
    if window and positions is not None:
        first = max(0, int(positions.min()) - window + 1)  # every query's window starts at or after it
        key, value, attention_mask = key[:, :, first:], value[:, :, first:], attention_mask[..., first:]
    batch, heads, queries, dim = query.shape
    groups = heads // key.shape[1]
    packed = query.reshape(batch, key.shape[1], groups * queries, dim)

    def rows_of(mask: Any) -> Any:
        return mask.expand(batch, 1, queries, mask.shape[-1]).repeat(1, 1, groups, 1) if groups > 1 else mask

    prefix = shared_prefix if query.device.type == "cpu" and not window else 0
    if not prefix:
        output = torch.nn.functional.scaled_dot_product_attention(
            packed, key, value, attn_mask=rows_of(attention_mask), scale=scaling
        )
    else:
        flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu  # sdpa's CPU kernel, with log-sum-exps
        rest, rest_lse = flash(
            packed,
            key[:, :, prefix:],
            value[:, :, prefix:],
            attn_mask=rows_of(attention_mask[..., prefix:]),
            scale=scaling,
        )
        everyone = packed.transpose(0, 1).reshape(1, key.shape[1], batch * groups * queries, dim)
        head, head_lse = flash(everyone, key[:1, :, :prefix], value[:1, :, :prefix], scale=scaling)
        head = head.reshape(key.shape[1], batch, groups * queries, dim).transpose(0, 1)
        head_lse = head_lse.reshape(key.shape[1], batch, groups * queries).transpose(0, 1)
        top = torch.maximum(head_lse, rest_lse)
        head_weight, rest_weight = torch.exp(head_lse - top)[..., None], torch.exp(rest_lse - top)[..., None]
        output = ((head.float() * head_weight + rest.float() * rest_weight) / (head_weight + rest_weight)).to(
            query.dtype
        )
    return output.reshape(batch, heads, queries, dim).transpose(1, 2).contiguous(), None


def rests_attention(
    module: Any, query: Any, key: Any, value: Any, rest_lengths: tuple[int, ...], scaling: float | None, dropout: float
) -> Any:
    """Attention over packed rests: the queries are several rows' tokens after an opening they all share, laid end
    to end (``rest_lengths`` tokens each); the keys and values are that opening's, then the rests' in the same
    order. Each rest attends to the whole opening and causally to itself (within the layer's sliding window, if it
    has one), one rest per sdpa call: no padding to the longest rest, and the opening's keys and values are not
    copied once per row. Returns ``[1, queries, heads, dim]``.
    """
    import torch

    opening = key.shape[2] - query.shape[2]
    window = getattr(module, "sliding_window", None)
    outputs, start = [], 0
    for length in rest_lengths:
        if not length:
            continue
        own = slice(opening + start, opening + start + length)
        positions = torch.arange(opening + length, device=query.device)  # the keys' positions in the row
        asking = positions[opening:, None]  # the queries'
        mask = positions <= asking
        if window:
            mask &= positions > asking - window
        outputs.append(
            torch.nn.functional.scaled_dot_product_attention(
                query[:, :, start : start + length],
                torch.cat([key[:, :, :opening], key[:, :, own]], dim=2),
                torch.cat([value[:, :, :opening], value[:, :, own]], dim=2),
                attn_mask=mask,
                dropout_p=dropout,
                scale=scaling,
                enable_gqa=True,
            )
        )
        start += length
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous()


ATTENTION = "agentft_engine"
"""The attention implementation the engine and training switch an sdpa model to (``engine_attention``)."""


def use_engine_attention(model: Any) -> bool:
    """Switch a model on transformers' sdpa attention to ``engine_attention``, registered with sdpa's masks (its
    other calls go to sdpa unchanged). Whether the model is on ``engine_attention`` now."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION, engine_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)
    if getattr(model.config, "_attn_implementation", None) == "sdpa":
        model.set_attn_implementation(ATTENTION)
    return getattr(model.config, "_attn_implementation", None) == ATTENTION
