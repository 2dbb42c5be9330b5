"""The transformers backend: batched, left-padded generation with the KV cache, greedy by default."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentft.chat_format import END_OF_TURN, parse_reply
from agentft.messages import Message, to_hf
from agentft.policies.base import Reply, ToolSchemas

__all__ = ["HFPolicy", "Generation"]


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int


class HFPolicy:
    """A local causal LM (embedded name or directory), optionally with a LoRA adapter.

    Prompts of a batch are sorted by length and generated in sub-batches of ``batch_size`` so that
    padding stays small; generation stops at the end-of-turn token.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        adapter: str | os.PathLike[str] | None = None,
        *,
        max_new_tokens: int = 256,
        batch_size: int = 16,
        temperature: float = 0.0,
        dtype: str = "float32",
        device: str = "cpu",
        seed: int = 0,
        loaded: tuple[Any, Any] | None = None,
    ) -> None:
        from agentft.models import load_model

        self.name = f"hf:{model}" + (f"@{adapter}" if adapter else "")
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.temperature = temperature
        self.seed = seed
        self.model, self.tokenizer = loaded or load_model(model, adapter=adapter, dtype=dtype, device=device)
        end = self.tokenizer.convert_tokens_to_ids(END_OF_TURN)
        self._stop_ids = sorted({i for i in (end, self.tokenizer.eos_token_id) if isinstance(i, int) and i >= 0})

    def prompt_text(self, conversation: Sequence[Message | dict[str, Any]], tools: ToolSchemas | None) -> str:
        return self.tokenizer.apply_chat_template(
            to_hf(conversation), tools=list(tools) if tools else None, add_generation_prompt=True, tokenize=False
        )

    def act(self, conversations: Sequence[Sequence[Message | dict[str, Any]]],
            tools: ToolSchemas | None = None) -> list[Reply]:
        prompts = [self.prompt_text(conversation, tools) for conversation in conversations]
        replies = []
        for generation in self.generate(prompts):
            parsed = parse_reply(generation.text, tools)
            replies.append(Reply(message=parsed.message, errors=parsed.errors, text=generation.text,
                                 prompt_tokens=generation.prompt_tokens,
                                 completion_tokens=generation.completion_tokens))
        return replies

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int | None = None,
                 min_new_tokens: int | None = None) -> list[Generation]:
        """Generate a completion for each prompt (already rendered text), in the given order."""
        import torch

        lengths = [len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        results: list[Generation | None] = [None] * len(prompts)
        options: dict[str, Any] = {
            "max_new_tokens": max_new_tokens or self.max_new_tokens,
            "eos_token_id": self._stop_ids,
            "pad_token_id": self.tokenizer.pad_token_id,
            "do_sample": self.temperature > 0,
        }
        if self.temperature > 0:
            options["temperature"] = self.temperature
            torch.manual_seed(self.seed)
        else:
            # Clear sampling defaults a model's generation_config may carry, so greedy is warning-free.
            options.update(temperature=None, top_p=None, top_k=None)
        if min_new_tokens:
            options["min_new_tokens"] = min_new_tokens
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            encoded = self.tokenizer(
                [prompts[i] for i in chunk], return_tensors="pt", padding=True, padding_side="left",
                add_special_tokens=False,
            ).to(self.model.device)
            with torch.inference_mode():
                output = self.model.generate(**encoded, **options)
            new_tokens = output[:, encoded["input_ids"].shape[1] :].tolist()
            for row, index in zip(new_tokens, chunk, strict=True):
                results[index] = self._finish(row, lengths[index])
        return [r for r in results if r is not None]

    def _finish(self, tokens: list[int], prompt_tokens: int) -> Generation:
        # Keep the end-of-turn token in the count (it was generated), drop the padding after it.
        for position, token in enumerate(tokens):
            if token in self._stop_ids:
                tokens = tokens[: position + 1]
                break
        text = self.tokenizer.decode(tokens, skip_special_tokens=False)
        return Generation(text=text.split(END_OF_TURN)[0], prompt_tokens=prompt_tokens,
                          completion_tokens=len(tokens))
