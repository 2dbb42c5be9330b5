"""The transformers backend: continuous batching with key/value caches kept across turns (``agentft.engine``).

Greedy by default. ``engine=False`` (and models the engine cannot run, e.g. sliding-window attention) generate
with transformers' ``generate`` in sorted, left-padded sub-batches, reusing the cache of the opening every prompt
shares: the path the benchmarks compare the engine against.
"""

from __future__ import annotations

import inspect
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentft.chat_format import end_of_turn, parse_reply
from agentft.errors import UserError
from agentft.messages import Message, to_hf
from agentft.policies.base import Reply, ToolSchemas
from agentft.tools import openai_tools
from agentft.trajectory import TurnTokens

__all__ = ["HFPolicy", "Generation"]


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float = 0.0
    """This row's own model time: the forward passes it took part in, not its wait for other rows."""
    cached_tokens: int = 0
    """Prompt tokens whose keys and values were reused (an earlier turn, or an opening shared with others)."""
    tokens: TurnTokens | None = None
    """The turn in token ids (``record_tokens``)."""


class HFPolicy:
    """A local causal LM (embedded name or directory), optionally with a LoRA adapter (merged for speed).

    ``batch_size`` turns generate at once; with the engine, a turn that ends leaves the batch and a waiting one
    joins at the next token, and every episode's conversation stays cached between its turns (``max_resident``
    conversations; memory grows with them). ``dtype`` is float32, bfloat16 or auto (bf16 on a GPU or on a CPU
    that multiplies bf16 natively, else fp32). ``temperature`` > 0 samples (``top_p``, ``seed``: every episode
    draws from its own generator, seeded from ``seed`` and the episode's key, so reruns repeat).
    ``record_tokens`` puts every turn's prompt and completion token ids and the completion's log-probabilities
    on its reply (``Reply.tokens``), and so on the trajectory: what reinforcement learning trains on. In the
    continuous mode it also makes an episode's turns chain in tokens: the next turn's prompt is this turn's
    prompt, the tokens it sampled, then the new messages (tool results, the user's reply) rendered and tokenised
    on their own, so the model reads its own sampled tokens back, not a re-tokenisation of their text (which
    can split a word differently: 1 in 35 turns of sampled SmolLM2 episodes). One episode is then one token
    sequence, every model token's log-prob exact in it.
    ``verbatim`` (on by default) keeps the values of the arguments a tool declares verbatim to text the
    conversation holds (``agentft.verbatim``); turned off for RL rollouts, whose log-probs must be the model's own.

    Two ways to drive it: ``act`` (a batch of conversations, one reply each: any caller) and ``submit`` /
    ``poll`` / ``release`` (the runner's continuous mode: a turn submitted while others generate joins them).
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        adapter: str | os.PathLike[str] | None = None,
        *,
        max_new_tokens: int = 256,
        batch_size: int = 16,
        temperature: float = 0.0,
        top_p: float = 1.0,
        dtype: str = "float32",
        device: str = "cpu",
        seed: int = 0,
        engine: bool = True,
        max_resident: int = 64,
        record_tokens: bool = False,
        verbatim: bool = True,
        loaded: tuple[Any, Any] | None = None,
    ) -> None:
        from agentft.engine import Engine, supports
        from agentft.models import load_model, stop_token_ids

        self.name = f"hf:{model}" + (f"@{adapter}" if adapter else "")
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed
        self.model, self.tokenizer = loaded or load_model(
            model, adapter=adapter, dtype=dtype, device=device, merge=True
        )
        self.end_of_turn = end_of_turn(self.tokenizer)
        self._stop_ids = stop_token_ids(self.model, self.tokenizer)
        self.engine = (
            Engine(self.model, self._stop_ids, max_batch=batch_size, slots=max_resident)
            if engine and supports(self.model)
            else None
        )
        self._legacy = _LegacyGenerate(self) if self.engine is None else None
        if record_tokens and self.engine is None:
            raise UserError(
                f"record_tokens needs agentft's engine, which {model} cannot run (sliding-window attention) "
                "or which was turned off (engine=False)"
            )
        self.record_tokens = record_tokens
        self.verbatim = verbatim and self.engine is not None
        self._token_texts: Any = None
        self._submitted: dict[int, tuple[Any, str, ToolSchemas | None, int]] = {}
        """Turns submitted and not yet polled: handle id -> (handle, episode key, tools, conversation length)."""
        self._chains: dict[str, tuple[list[int], int]] = {}
        """``record_tokens``: each episode's tokens through its last reply, and its message count with that reply."""
        self._calls = 0

    @property
    def continuous(self) -> bool:
        """Whether turns can join a running batch (``submit``/``poll``); else the runner calls ``act``."""
        return self.engine is not None

    def prompt_text(self, conversation: Sequence[Message | dict[str, Any]], tools: ToolSchemas | None) -> str:
        return self.tokenizer.apply_chat_template(
            to_hf(conversation), tools=openai_tools(tools) or None, add_generation_prompt=True, tokenize=False
        )

    # ---- a batch at a time ------------------------------------------------------------------------------
    def act(
        self, conversations: Sequence[Sequence[Message | dict[str, Any]]], tools: ToolSchemas | None = None
    ) -> list[Reply]:
        generations = self.generate(
            [self.prompt_text(conversation, tools) for conversation in conversations],
            constraints=[self._verbatim(conversation, tools) for conversation in conversations],
        )
        return [self._reply(generation, tools) for generation in generations]

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int | None = None,
        min_new_tokens: int | None = None,
        constraints: Sequence[Any] | None = None,
    ) -> list[Generation]:
        """A completion for each prompt (already rendered text), in the given order; ``constraints``: each
        prompt's ``allowed`` (``agentft.engine.Request``), with the engine."""
        if self._legacy is not None:
            return self._legacy.generate(prompts, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens)
        assert self.engine is not None
        self._calls += 1
        requests = [
            self._request(
                prompt,
                f"act/{self._calls}/{index}",
                None,
                max_new_tokens,
                min_new_tokens,
                allowed=constraints[index] if constraints else None,
            )
            for index, prompt in enumerate(prompts)
        ]
        return [
            self._generation(request, result)
            for request, result in zip(requests, self.engine.run(requests), strict=True)
        ]

    # ---- continuous: the runner submits turns as its episodes need them -------------------------------------
    def submit(
        self, key: str, conversation: Sequence[Message], tools: ToolSchemas | None, temperature: float | None = None
    ) -> None:
        """Queue the next turn of the conversation ``key``; it joins the generating batch at the next step.
        ``temperature`` overrides the policy's own for this turn (best-of-N samples its extra candidates so)."""
        assert self.engine is not None, "submit needs the engine (HFPolicy(engine=True) and a model it supports)"
        turn = sum(1 for message in conversation if getattr(message, "role", None) == "assistant")
        text = self.prompt_text(conversation, tools)
        chained = self._chained_ids(key, conversation, tools, text) if self.record_tokens else None
        request = self._request(
            text,
            f"{key}/{turn}",
            key,
            None,
            None,
            ids=chained,
            temperature=temperature,
            allowed=self._verbatim(conversation, tools),
        )
        handle = self.engine.submit(request)
        self._submitted[handle.id] = (handle, key, tools, len(conversation))

    def poll(self) -> list[tuple[str, Reply]]:
        """Generate until at least one submitted turn is done; returns those turns' replies by key."""
        assert self.engine is not None
        while True:
            done = [handle for handle, *_ in self._submitted.values() if handle.done]
            if done:
                replies = []
                for handle in done:
                    _, key, tools, length = self._submitted.pop(handle.id)
                    if self.record_tokens:
                        self._chains[key] = (self._closed_turn(handle.request.prompt, handle.result.tokens), length + 1)
                    replies.append((key, self._reply(self._generation(handle.request, handle.result), tools)))
                return replies
            if not self.engine.busy:
                return []
            self.engine.step()

    def release(self, key: str) -> None:
        """The episode ``key`` ended: its cached conversation is the first to give way."""
        self._chains.pop(key, None)
        if self.engine is not None:
            self.engine.release(key)

    # ---- helpers ----------------------------------------------------------------------------------------
    def _verbatim(self, conversation: Sequence[Message | dict[str, Any]], tools: ToolSchemas | None) -> Any:
        """The next turn's verbatim-arguments constraint, or None (off, or no tool declares one)."""
        from agentft.verbatim import TokenTexts, VerbatimArguments, verbatim_fields

        if not self.verbatim or not verbatim_fields(tools):
            return None
        if self._token_texts is None:  # built once, and only for tools that declare verbatim arguments
            self._token_texts = TokenTexts(self.tokenizer)
        return VerbatimArguments.for_conversation(
            self._token_texts,
            lambda tokens: self.tokenizer.decode(tokens, skip_special_tokens=False),
            to_hf(conversation),
            tools,
        )

    def _closed_turn(self, prompt: Sequence[int], completion: Sequence[int]) -> list[int]:
        """A turn's tokens as the next turn continues them: ended by the end-of-turn token (added when the turn
        stopped on its length limit or on another stop token, as the chat template would render it)."""
        end = self.tokenizer.convert_tokens_to_ids(self.end_of_turn)
        closed = [*prompt, *completion]
        return closed if completion and completion[-1] == end else [*closed, end]

    def _chained_ids(
        self, key: str, conversation: Sequence[Message], tools: ToolSchemas | None, text: str
    ) -> list[int] | None:
        """The prompt of episode ``key``'s next turn as its last turn's tokens plus the new messages' rendering
        (see the class docstring); None for a first turn, or when the template does not render the conversation
        so far as a prefix of the whole (then the whole is tokenised, as for any turn without a record)."""
        chain = self._chains.get(key)
        if chain is None or chain[1] > len(conversation):
            return None
        ids, length = chain
        before = self.tokenizer.apply_chat_template(
            to_hf(conversation[:length]), tools=openai_tools(tools) or None, tokenize=False
        )
        marker = self.end_of_turn
        end = before.rfind(marker)
        if end < 0 or not text.startswith(before[: end + len(marker)]):
            return None
        rest = text[end + len(marker) :]
        return [*ids, *self.tokenizer(rest, add_special_tokens=False)["input_ids"]]

    def _request(
        self,
        prompt: str,
        seed_key: str,
        session: str | None,
        max_new_tokens: int | None,
        min_new_tokens: int | None,
        ids: list[int] | None = None,
        temperature: float | None = None,
        allowed: Any = None,
    ) -> Any:
        from agentft.engine import Request

        ids = ids if ids is not None else self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return Request(
            prompt=ids,
            max_new_tokens=max_new_tokens or self.max_new_tokens,
            min_new_tokens=min_new_tokens or 0,
            temperature=self.temperature if temperature is None else temperature,
            top_p=self.top_p,
            seed=zlib.crc32(f"{self.seed}/{seed_key}".encode()),
            logprobs=self.record_tokens,
            allowed=allowed,
            session=session,
        )

    def _generation(self, request: Any, result: Any) -> Generation:
        tokens = result.tokens
        text = self.tokenizer.decode(tokens, skip_special_tokens=False).split(self.end_of_turn)[0]
        recorded = None
        if self.record_tokens:
            sampled = request.temperature > 0
            recorded = TurnTokens(
                prompt_ids=list(request.prompt),
                completion_ids=list(tokens),
                logprobs=list(result.logprobs or []),
                temperature=request.temperature,
                top_p=request.top_p,
                seed=request.seed if sampled else None,
            )
        return Generation(
            text=text,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=len(tokens),
            seconds=result.seconds,
            cached_tokens=result.cached_tokens,
            tokens=recorded,
        )

    @staticmethod
    def _reply(generation: Generation, tools: ToolSchemas | None) -> Reply:
        parsed = parse_reply(generation.text, tools)
        return Reply(
            message=parsed.message,
            errors=parsed.errors,
            text=generation.text,
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
            latency_s=generation.seconds,
            tokens=generation.tokens,
        )


def _logits_at(model: Any, positions: list[int]) -> dict[str, Any]:
    """``logits_to_keep`` as a tensor of positions, where the model takes it. A count is a strided slice of the
    hidden states, on which the vocabulary projection copies its weight once per row (``agentft.engine``,
    ``Engine._forward``); a tensor gathers them contiguously, and an empty one skips the projection."""
    import torch

    if "logits_to_keep" not in inspect.signature(model.forward).parameters:
        return {}
    return {"logits_to_keep": torch.tensor(positions, dtype=torch.long, device=model.device)}


class _LegacyGenerate:
    """transformers' ``generate``: prompts sorted by length in left-padded sub-batches of ``batch_size``, the
    opening every prompt shares encoded once and its cache reused across the batch and across calls."""

    def __init__(self, policy: HFPolicy) -> None:
        self.policy = policy
        self._prefix_cache: dict[str, tuple[Any, list[tuple[Any, Any]]]] = {}

    def generate(
        self, prompts: Sequence[str], *, max_new_tokens: int | None = None, min_new_tokens: int | None = None
    ) -> list[Generation]:
        import torch

        policy, tokenizer = self.policy, self.policy.tokenizer
        lengths = [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        results: list[Generation | None] = [None] * len(prompts)
        options: dict[str, Any] = {
            "max_new_tokens": max_new_tokens or policy.max_new_tokens,
            "eos_token_id": policy._stop_ids,
            "pad_token_id": tokenizer.pad_token_id,
            "do_sample": policy.temperature > 0,
        }
        if policy.temperature > 0:
            options.update(temperature=policy.temperature, top_p=policy.top_p)
            torch.manual_seed(policy.seed)
        else:
            # Clear sampling defaults a model's generation_config may carry, so greedy is warning-free.
            options.update(temperature=None, top_p=None, top_k=None)
        if min_new_tokens:
            options["min_new_tokens"] = min_new_tokens
        options.update(_logits_at(policy.model, [-1]))  # not generate's default count of 1
        prefix = self._shared_prefix(prompts)
        for start in range(0, len(order), policy.batch_size):
            chunk = order[start : start + policy.batch_size]
            clock = time.perf_counter()
            with torch.inference_mode():
                if prefix:
                    prompt_width, output = self._generate_after_prefix(prefix, [prompts[i] for i in chunk], options)
                else:
                    encoded = tokenizer(
                        [prompts[i] for i in chunk],
                        return_tensors="pt",
                        padding=True,
                        padding_side="left",
                        add_special_tokens=False,
                    ).to(policy.model.device)
                    prompt_width, output = encoded["input_ids"].shape[1], policy.model.generate(**encoded, **options)
            elapsed = time.perf_counter() - clock
            finished = [
                self._finish(row, lengths[index])
                for row, index in zip(output[:, prompt_width:].tolist(), chunk, strict=True)
            ]
            longest = max(max(g.completion_tokens for g in finished), 1)
            for generation, index in zip(finished, chunk, strict=True):
                # Its own share: the sub-batch's time scaled by its tokens over the longest row's.
                generation.seconds = elapsed * max(generation.completion_tokens, 1) / longest
                results[index] = generation
        return [r for r in results if r is not None]

    def _shared_prefix(self, prompts: Sequence[str]) -> str:
        """The longest run of whole turns every prompt starts with (the system prompt and tools, at least)."""
        common = os.path.commonprefix(list(prompts))
        end = self.policy.end_of_turn + "\n"
        boundary = common.rfind(end)
        return common[: boundary + len(end)] if boundary > 0 else ""

    def _prefix_state(self, prefix: str) -> tuple[Any, list[tuple[Any, Any]]]:
        """Token ids and key/value tensors of a prefix, computed once and kept for the next calls."""
        cached = self._prefix_cache.get(prefix)
        if cached is None:
            model = self.policy.model
            ids = self.policy.tokenizer(prefix, return_tensors="pt", add_special_tokens=False)["input_ids"].to(
                model.device
            )
            cache = model(input_ids=ids, use_cache=True, **_logits_at(model, [])).past_key_values
            cached = (ids[0], [(layer.keys, layer.values) for layer in cache.layers])
            if len(self._prefix_cache) >= 4:
                self._prefix_cache.pop(next(iter(self._prefix_cache)))
            self._prefix_cache[prefix] = cached
        return cached

    def _generate_after_prefix(self, prefix: str, prompts: Sequence[str], options: dict[str, Any]) -> tuple[int, Any]:
        """Generate with the shared prefix's cache: only the rest of each prompt is encoded.

        Rows are laid out as [prefix][padding][rest] with the padding masked out, so the prefix sits at the
        same positions in every row and its cached keys and values serve the whole batch.
        """
        import torch
        from transformers import StaticCache

        model, tokenizer = self.policy.model, self.policy.tokenizer
        prefix_ids, layers = self._prefix_state(prefix)
        rests = tokenizer([p[len(prefix) :] for p in prompts], add_special_tokens=False)["input_ids"]
        width = max(len(r) for r in rests)
        pad = tokenizer.pad_token_id
        rows, masks = [], []
        for rest in rests:
            gap = width - len(rest)
            rows.append(prefix_ids.tolist() + [pad] * gap + rest)
            masks.append([1] * len(prefix_ids) + [0] * gap + [1] * len(rest))
        batch = len(prompts)
        # Preallocated: a growing cache would copy every row's keys and values at each new token (measured:
        # three quarters of the decode time at batch 27 with a 600-token prefix).
        cache = StaticCache(config=model.config, max_cache_len=len(rows[0]) + options["max_new_tokens"])
        for layer, (keys, values) in zip(cache.layers, layers, strict=True):
            layer.update(keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1))
        input_ids = torch.tensor(rows, device=model.device)
        output = model.generate(
            input_ids=input_ids, attention_mask=torch.tensor(masks, device=model.device), cache=cache, **options
        )
        return input_ids.shape[1], output

    def _finish(self, tokens: list[int], prompt_tokens: int) -> Generation:
        # Keep the end-of-turn token in the count (it was generated), drop the padding after it.
        for position, token in enumerate(tokens):
            if token in self.policy._stop_ids:
                tokens = tokens[: position + 1]
                break
        text = self.policy.tokenizer.decode(tokens, skip_special_tokens=False)
        return Generation(
            text=text.split(self.policy.end_of_turn)[0], prompt_tokens=prompt_tokens, completion_tokens=len(tokens)
        )
