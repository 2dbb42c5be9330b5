"""The generation engine: key/value caches kept across turns, and continuous batching, on a CPU or a GPU.

Why its own engine: transformers' continuous batching (``transformers.generation.continuous_batching``) runs on
CUDA and XPU only, vLLM and SGLang need a GPU, and ``model.generate`` re-encodes every prompt and waits for the
longest row of its batch. An agent's turns are long prompts that grow by a few dozen tokens per turn (a tool
result, the user's reply), so on a CPU the work that matters is not re-reading them.

**Layout.** Every sequence lives in a *slot*: one row of a preallocated key/value buffer per layer,
``[slots, kv_heads, capacity, head_dim]``, its token at position ``p`` stored at index ``p``. Rows ``[0, n)``
are the ones generating: the decode batch is the view ``buffer[:n]``, with no copy. A sequence that finished its
turn stays resident ("parked") in a later row until its slot is needed. Attention uses an explicit mask (key
index <= the query's position), so rows of different lengths share one forward pass without padding their caches.

**Reuse.** A new request looks among the resident sequences for the one sharing the longest token prefix with its
prompt: its own previous turn (the whole conversation so far), or any sequence with the same opening (system
prompt and tools). It takes a parked slot over in place when it continues that sequence, or copies the shared
prefix into a free slot, and prefills only the rest. Requests that arrive together and share an opening no
resident sequence holds get it encoded once first. The result is exact: a cached key/value at position ``p``
depends only on tokens ``0..p``, which match.

**Scheduling.** ``step()`` admits waiting requests while slots are free (a batched prefill: queries left-padded,
logits only at each row's last token), then runs one decode step over every generating row. A row that samples a
stop token or reaches its limit leaves the batch at once, and a waiting request takes its place at the next
step, so no row waits for the longest generation of its batch.

**Drafts from the context** (prompt lookup): an agent's replies copy much of what it has read (ids, emails,
dates, the tool-call syntax of its earlier turns). While few rows generate, a decode step is bound by reading
the weights, not by arithmetic, so each greedy row also feeds the tokens that followed the latest earlier
occurrence of its last one to three tokens in its own sequence, and keeps every draft token the model's argmax
agrees with, plus the model's own next token: the same tokens as one at a time, in fewer steps. Drafts are
sized so a step computes at most ``draft_budget`` tokens (rows x (1 + draft)); a constrained row's choice at
each draft position is taken among the tokens allowed there; sampled and log-prob rows take one token a step.

Models: decoder-only transformers that accept a 4D mask and explicit position ids, whose layers attend to the
full context (Llama, Qwen2, SmolLM2, ...) or declare per layer (``config.layer_types``) full or sliding-window
attention (Gemma 3): a sliding layer gets its own mask, key index > the query's position - the window, over the
same whole-length cache (exact; its memory is what full attention would use). ``supports(model)`` says whether a
model qualifies. Sampling is per row (temperature, top-p, seed) and can record each sampled
token's log-probability under the distribution it was drawn from.
"""

from __future__ import annotations

import math
import mmap
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Literal

from agentft.engine_attention import ATTENTION, use_engine_attention

__all__ = ["Request", "Result", "Handle", "Engine", "supports"]

Finish = Literal["stop", "length", "cancelled"]


@dataclass
class Request:
    """One completion to generate from a prompt given as token ids."""

    prompt: list[int]
    max_new_tokens: int
    min_new_tokens: int = 0
    """Stop tokens are not sampled before this many tokens."""
    temperature: float = 0.0
    """0: greedy. Above 0: sampled from softmax(logits / temperature)."""
    top_p: float = 1.0
    seed: int | None = None
    """Seed of this row's own random generator (sampled rows): the same seed draws the same tokens."""
    logprobs: bool = False
    """Record each generated token's log-probability (under the distribution it was drawn from)."""
    allowed: Callable[[list[int]], Sequence[int] | None] | None = None
    """Given the tokens generated so far, the token ids allowed next (None: any)."""
    on_token: Callable[[int], None] | None = None
    """Called with every generated token id (stop token included) as it comes, from the generating thread."""
    session: str | None = None
    """A name for the conversation this turn belongs to; ``Engine.release(session)`` frees its slot first."""


@dataclass
class Result:
    tokens: list[int]
    """The generated token ids, the stop token included when the row stopped on one."""
    finish: Finish
    prompt_tokens: int
    cached_tokens: int
    """Prompt tokens whose keys and values came from a resident sequence rather than a new prefill."""
    seconds: float
    """The time of the forward passes this row took part in (not its wait in the queue)."""
    logprobs: list[float] | None = None


class Handle:
    """A submitted request: its result once ``done``; ``cancel()`` stops it at the next step."""

    _ids = count()

    def __init__(self, request: Request) -> None:
        if not request.prompt:
            raise ValueError("a request needs at least one prompt token")
        if request.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        self.id = next(self._ids)
        self.request = request
        self.result: Result | None = None
        self._cancelled = threading.Event()

    @property
    def done(self) -> bool:
        return self.result is not None

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()


@dataclass
class _Row:
    """What a slot holds: the tokens whose keys and values are cached, and the request generating in it."""

    tokens: list[int] = field(default_factory=list)
    handle: Handle | None = None
    generated: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    pending: int | None = None
    """The last sampled token: generated, not yet in the cache (the next decode step's input)."""
    ngrams: dict[tuple[int, ...], int] = field(default_factory=dict)
    """Drafts: each 1- to 3-token run of ``tokens`` -> the position after its latest occurrence."""
    indexed: int = 0
    """Positions of ``tokens`` whose runs ending there are in ``ngrams``."""
    cached_tokens: int = 0
    seconds: float = 0.0
    generator: Any = None
    used: float = 0.0
    """When the slot last served a request (least recently used slots are taken first)."""
    session: str | None = None
    released: bool = False


def supports(model: Any) -> bool:
    """Whether the engine can run ``model``: a decoder whose layers attend to the full context, or declare which
    of them slide (``config.layer_types``: full and sliding-window attention only)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    layer_types = getattr(config, "layer_types", None) or []
    if layer_types:
        return set(layer_types) <= {"full_attention", "sliding_attention"} and not getattr(
            config, "use_bidirectional_attention", False
        )
    return not getattr(config, "sliding_window", None) or getattr(config, "use_sliding_window", True) is False


def _window(model: Any) -> int | None:
    """The sliding window of a model whose ``layer_types`` include sliding-window attention, else None."""
    config = model.config
    return config.sliding_window if "sliding_attention" in (getattr(config, "layer_types", None) or []) else None


def _lazy(device: Any) -> bool:
    """Whether zero-filled buffers on ``device`` take memory only where written (a CPU's anonymous memory)."""
    import torch

    return torch.device(device).type == "cpu" and os.name != "nt"


def _zeros(shape: tuple[int, ...], dtype: Any, device: Any) -> Any:
    """A zero-filled buffer. On a CPU it is anonymous memory the kernel maps a page at a time on first write, so
    a key/value buffer costs only what is stored in it: a slot never used, or the unused length of a short
    one, takes no memory, and a generous length costs nothing until a sequence reaches it (a 90-task
    evaluation peaked at 4.3 GB instead of 6.0, at the same speed: BENCHMARKS.md)."""
    import torch

    if not _lazy(device):
        return torch.zeros(shape, dtype=dtype, device=device)
    count = math.prod(shape)
    memory = mmap.mmap(-1, max(1, count * dtype.itemsize), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return torch.frombuffer(memory, dtype=dtype, count=count).view(shape)  # the tensor keeps the mapping alive


class _SlotCache:
    """The key/value buffers, in the shape transformers' attention layers call: ``update`` stores the new keys
    and values of rows ``[lo, hi)`` at their own positions and returns those rows' whole (viewed) cache."""

    def __init__(self, slots: int, capacity: int) -> None:
        self.slots = slots
        self.capacity = capacity
        self.keys: list[Any] = []
        self.values: list[Any] = []
        self.lo = self.hi = self.width = 0
        self.length = 0
        """Positions below it may hold something in some slot; above it every buffer is still zeros."""
        self.rows: Any = None
        self.positions: Any = None

    def bind(self, lo: int, hi: int, positions: Any, width: int) -> None:
        import torch

        self.lo, self.hi, self.width = lo, hi, width
        self.length = max(self.length, width)
        self.rows = torch.arange(lo, hi, device=positions.device)[:, None]
        self.positions = positions

    def update(self, key_states: Any, value_states: Any, layer_idx: int, *args: Any, **kwargs: Any) -> Any:
        if layer_idx == len(self.keys):  # first forward: allocate this layer's buffers
            batch, heads, _, dim = key_states.shape
            shape = (self.slots, heads, self.capacity, dim)
            self.keys.append(_zeros(shape, key_states.dtype, key_states.device))
            self.values.append(_zeros(shape, value_states.dtype, value_states.device))
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys[self.rows, :, self.positions] = key_states.transpose(1, 2)
        values[self.rows, :, self.positions] = value_states.transpose(1, 2)
        return keys[self.lo : self.hi, :, : self.width], values[self.lo : self.hi, :, : self.width]

    def resize(self, *, slots: int | None = None, capacity: int | None = None) -> None:
        """More slots, or longer or shorter ones; what is cached (within the new length) stays. Copies only the
        positions some sequence has reached."""
        slots, capacity = slots or self.slots, capacity or self.capacity
        kept = min(capacity, self.capacity, self.length)
        for buffers in (self.keys, self.values):
            for i, old in enumerate(buffers):
                new = _zeros((slots, old.shape[1], capacity, old.shape[3]), old.dtype, old.device)
                new[: self.slots, :, :kept] = old[:, :, :kept]
                buffers[i] = new
        self.slots, self.capacity, self.length = slots, capacity, kept

    def copy(self, source: int, target: int, length: int) -> None:
        for buffers in (self.keys, self.values):
            for buffer in buffers:
                buffer[target, :, :length] = buffer[source, :, :length]

    def swap(self, a: int, b: int, length: int) -> None:
        for buffers in (self.keys, self.values):
            for buffer in buffers:
                saved = buffer[a, :, :length].clone()
                buffer[a, :, :length] = buffer[b, :, :length]
                buffer[b, :, :length] = saved

    # What transformers may ask of a cache besides ``update``.
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0

    is_compileable = False


def _common_prefix(a: Sequence[int], b: Sequence[int], low: int = 0) -> int:
    """Length of the longest common prefix of two token lists that share at least their first ``low`` (binary
    search over C-speed slice comparisons)."""
    high = min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


class Engine:
    """Continuous batching over one model with resident key/value caches. Not thread-safe: one thread steps it
    (``Handle.cancel`` may be called from any thread).

    ``max_batch`` rows generate at once; up to ``slots`` sequences stay resident (default ``max_batch``; slots are
    added as sequences arrive, each as long as the longest sequence resident, and the length shrinks back when
    long sequences are gone). On a CPU the buffers take memory only where something was stored (``_zeros``): about
    the resident sequences' tokens x the model's key/value size per token. On a GPU: slots x that length x it.
    ``max_prefill_tokens`` bounds the tokens (padding included) of one prefill forward pass. ``draft_tokens``
    (0: off) and ``draft_budget``: drafts from the context (module docstring).
    """

    def __init__(
        self,
        model: Any,
        stop_ids: Sequence[int],
        *,
        max_batch: int = 32,
        slots: int | None = None,
        max_prefill_tokens: int = 4096,
        shared_prefix_min: int = 32,
        draft_tokens: int = 4,
        draft_budget: int = 8,
    ) -> None:
        if not supports(model):
            raise ValueError(
                f"the engine needs full or per-layer sliding-window attention; {type(model).__name__} has another "
                "kind (use HFPolicy(engine=False))"
            )
        import torch

        self.model = model
        self.stop_ids = frozenset(stop_ids)
        self._stop_tensor = torch.tensor(sorted(self.stop_ids), dtype=torch.long, device=self._device)
        self.max_batch = max(1, max_batch)
        self.slots = max(self.max_batch, slots or self.max_batch)
        """Most sequences resident at once; buffers grow to it as conversations arrive."""
        self.max_prefill_tokens = max(1, max_prefill_tokens)
        self.shared_prefix_min = shared_prefix_min
        self.draft_tokens, self.draft_budget = max(0, draft_tokens), draft_budget
        # Slots are added as sequences arrive (a few at a time): a long prompt makes every allocated slot that long,
        # so a lone long request must not find max_batch of them allocated.
        self.rows = [_Row() for _ in range(min(4, self.max_batch))]
        self.cache = _SlotCache(len(self.rows), 256)
        self.active = 0
        """Rows [0, active) are generating."""
        self.waiting: list[Handle] = []
        self.stats = {
            "prefill_tokens": 0,
            "cached_tokens": 0,
            "decode_steps": 0,
            "generated_tokens": 0,
            "draft_tokens": 0,
            "accepted_tokens": 0,
        }
        use_engine_attention(model)
        impl = getattr(model.config, "_attn_implementation", None) or "sdpa"
        self._bool_mask = impl in ("sdpa", "flash_attention_2", "flex_attention")
        self._engine_attention = impl == ATTENTION
        self._window = _window(model)

    # ---- public API -------------------------------------------------------------------------------------
    def submit(self, request: Request) -> Handle:
        handle = Handle(request)
        self.waiting.append(handle)
        return handle

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.active)

    def step(self) -> list[Handle]:
        """Admit what fits, run one decode step; returns the handles that finished in it."""
        import torch

        finished = self._drop_cancelled()
        with torch.inference_mode():
            finished += self._admit()
            if self.active:
                finished += self._decode()
        return finished

    def run(self, requests: Sequence[Request]) -> list[Result]:
        """Generate every request (continuously batched); results in the order given."""
        handles = [self.submit(request) for request in requests]
        while not all(handle.done for handle in handles):
            self.step()
        return [handle.result for handle in handles]  # type: ignore[misc]

    def release(self, session: str) -> None:
        """The conversation ``session`` will not come back: its parked slot is the first to be reused."""
        for row in self.rows[self.active :]:
            if row.session == session:
                row.released = True

    def clear(self) -> None:
        """Forget every resident sequence (e.g. after the model's weights changed)."""
        if self.active:
            raise RuntimeError("cannot clear the engine while rows are generating")
        self.rows = [_Row() for _ in self.rows]

    # ---- admission --------------------------------------------------------------------------------------
    def _drop_cancelled(self) -> list[Handle]:
        finished = []
        for handle in [h for h in self.waiting if h.cancelled]:
            self.waiting.remove(handle)
            handle.result = Result([], "cancelled", len(handle.request.prompt), 0, 0.0)
            finished.append(handle)
        return finished

    def _admit(self) -> list[Handle]:
        if not self.waiting or self.active >= self.max_batch:
            return []
        self._encode_shared_opening()
        admitted: list[Handle] = []
        while self.waiting and self.active + len(admitted) < self.max_batch:
            if not self._place(self.waiting[0]):
                break
            admitted.append(self.waiting.pop(0))
        if not admitted:
            return []
        # The admitted rows go to [active, active + k), shortest rest first: a forward pass reads a contiguous
        # block of rows, and neighbours of similar length waste little padding.
        slot_of = {row.handle.id: slot for slot, row in enumerate(self.rows) if row.handle is not None}
        admitted.sort(key=lambda h: self._rest(slot_of[h.id]))
        for offset, handle in enumerate(admitted):
            target = self.active + offset
            self._swap(next(s for s in range(target, len(self.rows)) if self.rows[s].handle is handle), target)
        self._prefill(self.active, self.active + len(admitted))
        self.active += len(admitted)
        return self._retire()

    def _place(self, handle: Handle) -> bool:
        """Give the handle a slot: the parked sequence it continues, taken over in place, or a free slot seeded
        with the longest prefix any resident sequence shares with the prompt. False when every slot is taken."""
        prompt = handle.request.prompt
        best, best_length = -1, 0
        for slot, row in enumerate(self.rows):
            if not row.tokens or row.tokens[:best_length] != prompt[:best_length]:
                continue  # shares less than the best so far: one slice comparison says so
            length = _common_prefix(row.tokens, prompt, best_length)
            takeover = self._parked(slot) and (length == len(row.tokens) or row.released)
            if length > best_length or (length == best_length and length and takeover):
                best, best_length = slot, length
        best_length = min(best_length, len(prompt) - 1)  # at least one token to prefill: it gives the logits
        if best >= 0 and best_length > 0 and self._parked(best):
            row = self.rows[best]
            if best_length == len(row.tokens) or row.released:
                self._claim(best, handle, best_length)
                return True
        free = self._free_slot(exclude=best)
        if free is None:
            return False
        if best >= 0 and best_length > 0:
            self.cache.copy(best, free, best_length)
            self.rows[free].tokens = self.rows[best].tokens[:best_length]
        else:
            best_length = 0
        self._claim(free, handle, best_length)
        return True

    def _parked(self, slot: int) -> bool:
        return slot >= self.active and self.rows[slot].handle is None

    def _free_slot(self, exclude: int = -1) -> int | None:
        """An empty slot, else a released one, else a new one (up to ``slots``), else the least recently used
        parked one. None when every slot is generating."""
        parked = [s for s in range(self.active, len(self.rows)) if self._parked(s) and s != exclude]
        for slot in parked:
            if not self.rows[slot].tokens or self.rows[slot].released:
                return slot
        if len(self.rows) < self.slots:
            added = min(max(4, len(self.rows) // 2), self.slots - len(self.rows))
            self.cache.resize(slots=len(self.rows) + added)
            self.rows += [_Row() for _ in range(added)]
            return len(self.rows) - added
        return min(parked, key=lambda s: self.rows[s].used) if parked else None

    def _claim(self, slot: int, handle: Handle, cached: int) -> None:
        import torch

        request = handle.request
        row = self.rows[slot]
        row.tokens = row.tokens[:cached] if cached else []
        row.handle, row.generated, row.logprobs, row.pending = handle, [], [], None
        row.ngrams, row.indexed = {}, 0
        row.cached_tokens, row.seconds, row.used = cached, 0.0, time.monotonic()
        row.session, row.released = request.session, False
        row.generator = None
        if request.temperature > 0:
            row.generator = torch.Generator(device=self._device)
            row.generator.manual_seed(request.seed if request.seed is not None else torch.seed())

    def _encode_shared_opening(self) -> None:
        """Several waiting requests share an opening no resident sequence holds: encode it once, parked, for
        them to copy (the system prompt and tools of a fresh batch of episodes)."""
        window = [h.request.prompt for h in self.waiting[: self.max_batch - self.active]]
        if len(window) < 2:
            return
        length = min(len(prompt) - 1 for prompt in window)
        for prompt in window[1:]:
            length = min(length, _common_prefix(window[0], prompt))
        opening = window[0][:length]
        source, resident = -1, 0
        for slot, row in enumerate(self.rows):
            if row.tokens and (shared := _common_prefix(row.tokens, opening)) > resident:
                source, resident = slot, shared
        if length - resident < self.shared_prefix_min:
            return
        slot = self._free_slot(exclude=source)
        if slot is None:
            return
        if resident:
            self.cache.copy(source, slot, resident)
        row = self.rows[slot]
        row.tokens, row.session, row.released, row.used = opening[:resident], None, False, time.monotonic()
        self._forward(slot, [(opening[resident:], resident)], logits=False)
        row.tokens = opening
        self.stats["prefill_tokens"] += length - resident

    # ---- forward passes ---------------------------------------------------------------------------------
    @property
    def _device(self) -> Any:
        return next(self.model.parameters()).device

    def _forward(self, lo: int, rows: Sequence[tuple[list[int], int]], *, logits: bool = True, keep: int = 1) -> Any:
        """One forward pass over slots ``[lo, lo + len(rows))``: each row's new tokens at positions from its
        start. Queries are left-padded (a padding query writes past its row's end, where nothing reads).
        Returns the logits at each row's last ``keep`` positions (float32; ``[rows, vocab]`` for one), or None."""
        import torch

        device = self._device
        width = max(len(tokens) for tokens, _ in rows)
        needed = max(start + width for _, start in rows)
        if needed > self.cache.capacity:  # grow by at least a quarter (double, where that is free), by 256s
            grown = self.cache.capacity * 2 if _lazy(device) else self.cache.capacity * 5 // 4
            capacity = -(-max(needed, grown) // 256) * 256
            self.cache.resize(capacity=capacity)
        ids, positions = [], []
        for tokens, start in rows:
            pad = width - len(tokens)
            ids.append([tokens[0]] * pad + list(tokens))
            positions.append([start + len(tokens) + j for j in range(pad)] + list(range(start, start + len(tokens))))
        input_ids = torch.tensor(ids, device=device)
        position_ids = torch.tensor(positions, device=device)
        span = int(position_ids.max()) + 1
        keys, queries = torch.arange(span, device=device)[None, None, None, :], position_ids[:, None, :, None]
        mask: Any = self._mask(keys <= queries)
        if self._window is not None:
            mask = {
                "full_attention": mask,
                "sliding_attention": self._mask((keys <= queries) & (keys > queries - self._window)),
            }
        self.cache.bind(lo, lo + len(rows), position_ids, span)
        shared = {"shared_prefix": self._shared_prefix(lo, rows)} if self._engine_attention else {}
        # The positions to project onto the vocabulary as a tensor, not a count: transformers slices a count as a
        # strided view, and on a strided 3-D input torch's matmul copies the projection's weight once per row
        # (56 MB a row for SmolLM2: 1.4 s for a 19-row prefill, most of the pass). A tensor index gathers the
        # rows into a contiguous block first. No logits wanted: no positions, no projection.
        kept = torch.arange(width - keep if logits else width, width, device=device)
        output = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids,
            cache=self.cache,
            use_cache=True,
            logits_to_keep=kept,
            **shared,
        )
        if not logits:
            return None
        return output.logits[:, -1, :].float() if keep == 1 else output.logits[:, -keep:, :].float()

    def _shared_prefix(self, lo: int, rows: Sequence[tuple[list[int], int]]) -> int:
        """The tokens every row of a pass holds cached at its start and every query comes after (0 when fewer
        than ``shared_prefix_min``, or one row): what ``engine_attention`` reads once for all rows."""
        if len(rows) < 2:
            return 0
        first = self.rows[lo].tokens
        shared = min(start for _, start in rows)
        for offset in range(1, len(rows)):
            shared = min(shared, _common_prefix(first, self.rows[lo + offset].tokens))
        return shared if shared >= self.shared_prefix_min else 0

    def _mask(self, allowed: Any) -> Any:
        """A boolean mask as the model's attention takes it: as is, or additive (0 or the dtype's minimum)."""
        if self._bool_mask:
            return allowed
        import torch

        dtype = next(self.model.parameters()).dtype
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )

    def _prefill(self, lo: int, hi: int) -> None:
        """Encode the uncached rest of the prompts in slots [lo, hi) (sorted by length), in forward passes of at
        most ``max_prefill_tokens`` tokens and about a fifth of padding at most, and sample each row's first
        token. (Prefill is compute-bound on a CPU: padding costs as much as real tokens.)"""
        start = lo
        while start < hi:
            end, real = start + 1, self._rest(start)
            while end < hi:  # the next row joins unless the pass gets too big or mostly padding
                padded = (end + 1 - start) * self._rest(end)
                if padded > self.max_prefill_tokens or padded > 1.25 * (real + self._rest(end)) + 64:
                    break
                real += self._rest(end)
                end += 1
            clock = time.perf_counter()
            rows = [
                (self.rows[s].handle.request.prompt[self.rows[s].cached_tokens :], self.rows[s].cached_tokens)
                for s in range(start, end)
            ]
            logits = self._forward(start, rows)
            for slot in range(start, end):
                self.rows[slot].tokens = list(self.rows[slot].handle.request.prompt)
            self._sample(list(range(start, end)), logits, time.perf_counter() - clock)
            self.stats["prefill_tokens"] += sum(len(tokens) for tokens, _ in rows)
            self.stats["cached_tokens"] += sum(cached for _, cached in rows)
            start = end

    def _rest(self, slot: int) -> int:
        row = self.rows[slot]
        return len(row.handle.request.prompt) - row.cached_tokens

    def _decode(self) -> list[Handle]:
        clock = time.perf_counter()
        width = min(self.draft_tokens, self.draft_budget // self.active - 1) if self.draft_tokens else 0
        drafts = [self._draft(slot, width) if width > 0 else None for slot in range(self.active)]
        if any(drafts):  # some row found its context continuing: every greedy row fills the width
            pending = [row.pending for row in self.rows[: self.active]]
            drafts = [None if d is None else d + [p] * (width - len(d)) for d, p in zip(drafts, pending, strict=True)]
        else:
            drafts = [None] * self.active
        rows = [
            ([row.pending, *(draft or ())], len(row.tokens))
            for row, draft in zip(self.rows[: self.active], drafts, strict=True)
        ]
        keep = max(len(tokens) for tokens, _ in rows)
        logits = self._forward(0, rows, keep=keep)
        seconds = time.perf_counter() - clock
        sampled = [slot for slot in range(self.active) if drafts[slot] is None]
        for slot in sampled:
            self.rows[slot].tokens.append(self.rows[slot].pending)
        if keep > 1:
            for slot in range(self.active):
                if drafts[slot] is not None:
                    self._verify(slot, drafts[slot], logits[slot, -1 - len(drafts[slot]) :], seconds)
            logits = logits[sampled, -1] if sampled else None
        if sampled:
            self._sample(sampled, logits, seconds)
        self.stats["decode_steps"] += 1
        return self._retire()

    def _draft(self, slot: int, width: int) -> list[int] | None:
        """Up to ``width`` tokens to verify after the row's pending one: those that followed the latest earlier
        occurrence of the row's last 3, else 2, else 1 tokens ([] if none did). None when the row takes one token
        a step (sampled, log-prob or min-length rows)."""
        row = self.rows[slot]
        request = row.handle.request
        if request.temperature > 0 or request.logprobs or request.min_new_tokens:
            return None
        context = row.tokens
        context.append(row.pending)  # taken back below: the pending token is not in the cache yet
        try:
            for end in range(row.indexed, len(context) - 1):  # index the runs ending before the last token
                for n in (1, 2, 3):
                    if end + 1 >= n:
                        row.ngrams[tuple(context[end + 1 - n : end + 1])] = end + 1
            row.indexed = max(row.indexed, len(context) - 1)
            draft: list[int] = []
            for n in (3, 2, 1):
                start = row.ngrams.get(tuple(context[-n:])) if len(context) >= n else None
                if start is not None:
                    draft = context[start : start + width]
                    break
        finally:
            context.pop()
        return draft

    def _verify(self, slot: int, draft: list[int], logits: Any, seconds: float) -> None:
        """Keep the draft tokens the model's greedy choice agrees with, then the model's own next token; cut at
        a stop token or the row's limit. ``logits``: at the pending token and at each draft token."""
        row = self.rows[slot]
        request = row.handle.request
        choices = logits.argmax(dim=-1).tolist()
        agreed = 0
        while True:
            if request.allowed is not None:  # the row's choice at this position, among the tokens allowed there
                allowed = request.allowed([*row.generated, *draft[:agreed]])
                if allowed:
                    allowed = list(allowed)
                    choices[agreed] = allowed[int(logits[agreed, allowed].argmax())]
            if agreed == len(draft) or choices[agreed] != draft[agreed]:
                break
            agreed += 1
        new = choices[: agreed + 1]
        room = request.max_new_tokens - len(row.generated)
        for index, token in enumerate(new[:room]):
            if token in self.stop_ids:
                new = new[: index + 1]
                break
        new = new[:room]
        row.tokens.append(row.pending)
        row.tokens.extend(new[:-1])  # their keys and values were computed as draft tokens
        row.generated.extend(new)
        row.pending = new[-1]
        row.seconds += seconds
        if request.on_token is not None:
            for token in new:
                request.on_token(token)
        self.stats["generated_tokens"] += len(new)
        self.stats["draft_tokens"] += len(draft)
        self.stats["accepted_tokens"] += len(new) - 1

    def _sample(self, slots: list[int], logits: Any, seconds: float) -> None:
        import torch

        greedy = logits.argmax(dim=-1).tolist()  # one call for every row; rows whose scores change redo theirs
        for index, slot in enumerate(slots):
            row = self.rows[slot]
            request = row.handle.request
            scores = original = logits[index]
            if len(row.generated) < request.min_new_tokens:
                scores = scores.index_fill(0, self._stop_tensor, float("-inf"))
            if request.allowed is not None:
                allowed = request.allowed(row.generated)
                if allowed:
                    keep = torch.tensor(list(allowed), device=scores.device, dtype=torch.long)
                    scores = torch.full_like(scores, float("-inf")).index_copy(0, keep, scores[keep])
            if request.temperature > 0:
                scores = scores / request.temperature
                probs = torch.softmax(scores, dim=-1)
                if request.top_p < 1.0:
                    ordered, order = torch.sort(probs, descending=True)
                    beyond = torch.cumsum(ordered, dim=-1) - ordered > request.top_p
                    ordered[beyond] = 0.0
                    probs = torch.zeros_like(probs).scatter(0, order, ordered)
                    probs = probs / probs.sum()
                token = int(torch.multinomial(probs, 1, generator=row.generator))
            else:
                token = greedy[index] if scores is original else int(torch.argmax(scores))
            if request.logprobs:
                row.logprobs.append(float(torch.log_softmax(scores, dim=-1)[token]))
            row.generated.append(token)
            row.pending = token
            row.seconds += seconds
            if request.on_token is not None:
                request.on_token(token)
        self.stats["generated_tokens"] += len(slots)

    def _retire(self) -> list[Handle]:
        """End the rows that stopped, hit their limit or were cancelled; park them after the generating ones."""
        finished = []
        slot = 0
        while slot < self.active:
            row = self.rows[slot]
            handle = row.handle
            assert handle is not None
            request = handle.request
            finish: Finish | None = None
            if handle.cancelled:
                finish = "cancelled"
            elif row.pending in self.stop_ids:
                finish = "stop"
            elif len(row.generated) >= request.max_new_tokens:
                finish = "length"
            if finish is None:
                slot += 1
                continue
            handle.result = Result(
                tokens=row.generated,
                finish=finish,
                prompt_tokens=len(request.prompt),
                cached_tokens=row.cached_tokens,
                seconds=row.seconds,
                logprobs=row.logprobs if request.logprobs else None,
            )
            row.handle, row.pending, row.generator, row.used = None, None, None, time.monotonic()
            finished.append(handle)
            self.active -= 1
            if slot != self.active:
                self._swap(slot, self.active)
        if finished:
            self._shrink()
        return finished

    def _shrink(self) -> None:
        """Give back memory a long sequence made every slot take: once no resident sequence needs more than a
        third of the buffer's length, it is cut to what they need (one long request must not leave every
        slot at its length for good)."""
        longest = max((len(row.tokens) + 1 for row in self.rows), default=0)
        if self.cache.capacity > max(1024, 3 * longest):
            self.cache.resize(capacity=max(256, -(-longest * 5 // 4 // 256) * 256))

    def _swap(self, a: int, b: int) -> None:
        if a == b:
            return
        length = max(len(self.rows[a].tokens), len(self.rows[b].tokens))
        if length and self.cache.keys:
            self.cache.swap(a, b, length)
        self.rows[a], self.rows[b] = self.rows[b], self.rows[a]
