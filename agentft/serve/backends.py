"""Model backends of the server: a transformers model with LoRA adapters, and a scripted one for tests.

``HFBackend`` loads the base model once; with adapters it wraps it in a peft ``PeftModel``, loads each adapter
by name (``load_adapter``), and per batch either activates one (``set_adapter``) or runs the base model with the
adapters disabled (``disable_adapter()``). Generation is greedy (or sampled at the batch's temperature), left
padded, and watched token by token by ``_Rows`` (a stopping criterion): it streams each row's new text out, ends
a row at its own token limit or when its request is cancelled, and ends the whole batch once every row is done.
For ``tool_choice="required"`` ``_ToolNameConstraint`` masks the logits so that the reply starts with one of the
declared tool names.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agentft.chat_format import END_OF_TURN, render
from agentft.errors import UserError
from agentft.messages import AssistantMessage, Message, to_hf
from agentft.serve.engine import GenOutput, GenRequest, RowControl

__all__ = ["HFBackend", "ScriptedBackend", "NAME_SUFFIX"]

NAME_SUFFIX = '", "arguments": '
"""What follows a tool name chosen under tool_choice=required (the prompt ends with ``{"name": "``)."""


def _rows_criterion(
    tokenizer: Any,
    lock: threading.Lock,
    requests: Sequence[GenRequest],
    controls: Sequence[RowControl],
    stop_ids: set[int],
) -> Any:
    import torch
    from transformers import StoppingCriteria

    class _Rows(StoppingCriteria):
        def __init__(self) -> None:
            self.tokens: list[list[int]] = [[] for _ in requests]
            self.counts = [0] * len(requests)
            self.finish: list[str | None] = [None] * len(requests)
            self.sent = [0] * len(requests)

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            last = input_ids[:, -1].tolist()
            for row, token in enumerate(last):
                if self.finish[row] is not None:
                    continue
                self.counts[row] += 1
                if token in stop_ids:
                    self.finish[row] = "stop"
                else:
                    self.tokens[row].append(token)
                    if requests[row].stream:
                        self._emit(row)
                    if self.counts[row] >= requests[row].max_new_tokens:
                        self.finish[row] = "length"
                if controls[row].cancelled:
                    self.finish[row] = "cancelled"
            return torch.tensor([f is not None for f in self.finish], dtype=torch.bool, device=input_ids.device)

        def _emit(self, row: int) -> None:
            with lock:
                text = tokenizer.decode(self.tokens[row], skip_special_tokens=False)
            if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                return
            text = text.split(END_OF_TURN)[0]
            if len(text) > self.sent[row]:
                controls[row].emit(text[self.sent[row] :])
                self.sent[row] = len(text)

        def outputs(self) -> list[GenOutput]:
            out = []
            for row in range(len(requests)):
                with lock:
                    text = tokenizer.decode(self.tokens[row], skip_special_tokens=False)
                finish = self.finish[row] or ("cancelled" if controls[row].cancelled else "length")
                out.append(
                    GenOutput(text=text.split(END_OF_TURN)[0], completion_tokens=self.counts[row], finish=finish)
                )  # type: ignore[arg-type]
            return out

    return _Rows()


def _name_constraint(prompt_len: int, choices: list[list[list[int]] | None]) -> Any:
    import torch
    from transformers import LogitsProcessor

    class _ToolNameConstraint(LogitsProcessor):
        """Rows with choices may only continue along one of their token sequences, until one is complete."""

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            for row, options in enumerate(choices):
                if not options:
                    continue
                done = input_ids[row, prompt_len:].tolist()
                live = [c for c in options if c[: len(done)] == done]
                if not live or any(len(c) == len(done) for c in live):
                    choices[row] = None
                    continue
                allowed = torch.tensor(sorted({c[len(done)] for c in live}), device=scores.device)
                masked = torch.full_like(scores[row], float("-inf"))
                masked[allowed] = scores[row, allowed]
                scores[row] = masked
            return scores

    return _ToolNameConstraint()


class HFBackend:
    """A local causal LM (embedded name or directory) with any number of named LoRA adapters."""

    def __init__(
        self,
        model: str,
        adapters: dict[str, str | Path] | None = None,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        loaded: tuple[Any, Any] | None = None,
    ) -> None:
        from agentft.models import load_model

        self.model_name = str(model)
        self.adapters = list(adapters or {})
        base, self.tokenizer = loaded or load_model(model, dtype=dtype, device=device)
        if adapters:
            from peft import PeftModel

            for name, path in adapters.items():
                if not (Path(path) / "adapter_config.json").exists():
                    raise UserError(f"adapter {name}: {path} is not a LoRA adapter directory (no adapter_config.json)")
            first, *rest = adapters.items()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # peft uses a deprecated transformers property
                base = PeftModel.from_pretrained(base, first[1], adapter_name=first[0])
                for name, path in rest:
                    base.load_adapter(path, adapter_name=name)
            base.eval()
        self.model = base
        config = base.config
        self.context_length = int(getattr(config, "max_position_embeddings", 0) or self.tokenizer.model_max_length)
        end = self.tokenizer.convert_tokens_to_ids(END_OF_TURN)
        self.stop_ids = {i for i in (end, self.tokenizer.eos_token_id) if isinstance(i, int) and i >= 0}
        self._lock = threading.Lock()  # a fast tokenizer must not be used by two threads at once

    def render(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None) -> str:
        return self.tokenizer.apply_chat_template(
            to_hf(messages), tools=list(tools) if tools else None, add_generation_prompt=True, tokenize=False
        )

    def count_tokens(self, text: str) -> int:
        with self._lock:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _adapter(self, name: str | None) -> Any:
        if not self.adapters:
            return contextlib.nullcontext()
        if name is None:
            return self.model.disable_adapter()
        self.model.set_adapter(name)
        return contextlib.nullcontext()

    def generate(self, requests: Sequence[GenRequest], controls: Sequence[RowControl]) -> list[GenOutput]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        with self._lock:
            encoded = self.tokenizer(
                [r.prompt for r in requests],
                return_tensors="pt",
                padding=True,
                padding_side="left",
                add_special_tokens=False,
            ).to(self.model.device)
            choices = [
                [self.tokenizer(name + NAME_SUFFIX, add_special_tokens=False)["input_ids"] for name in r.name_choices]
                if r.name_choices
                else None
                for r in requests
            ]
        prompt_len = encoded["input_ids"].shape[1]
        rows = _rows_criterion(self.tokenizer, self._lock, requests, controls, self.stop_ids)
        temperature = requests[0].temperature
        options: dict[str, Any] = {
            "max_new_tokens": max(r.max_new_tokens for r in requests),
            "eos_token_id": sorted(self.stop_ids),
            "pad_token_id": self.tokenizer.pad_token_id,
            "do_sample": temperature > 0,
            "stopping_criteria": StoppingCriteriaList([rows]),
        }
        if temperature > 0:
            options["temperature"] = temperature
        else:
            options.update(temperature=None, top_p=None, top_k=None)
        if any(choices):
            options["logits_processor"] = LogitsProcessorList([_name_constraint(prompt_len, choices)])
        with torch.inference_mode(), self._adapter(requests[0].adapter):
            self.model.generate(**encoded, **options)
        return rows.outputs()


Script = Callable[[GenRequest], str] | Sequence[str] | str


class ScriptedBackend:
    """Replies with fixed text, word by word, as if a model generated it; for tests of the server.

    ``script`` is one text, a list (the n-th assistant turn of a conversation gets ``script[n]``), or a function
    of the ``GenRequest`` (which carries the messages, the tools offered and the adapter). A text that starts with
    the request's forced prefix (tool_choice) has it removed, so scripts can write whole tool calls.
    ``token_delay_s`` makes each generation step take that long (to test timeouts and cancellation).
    """

    def __init__(
        self,
        script: Script,
        *,
        model_name: str = "scripted",
        adapters: Sequence[str] = (),
        context_length: int = 4096,
        token_delay_s: float = 0.0,
    ) -> None:
        self.script = script
        self.model_name = model_name
        self.adapters = list(adapters)
        self.context_length = context_length
        self.token_delay_s = token_delay_s
        self.batches: list[dict[str, Any]] = []
        self.cancelled_rows = 0

    def render(self, messages: Sequence[Message], tools: Sequence[dict[str, Any]] | None) -> str:
        return render(messages, tools, add_generation_prompt=True)

    def count_tokens(self, text: str) -> int:
        return len(_PIECE.findall(text))

    def _text(self, request: GenRequest) -> str:
        if callable(self.script):
            text = self.script(request)
        elif isinstance(self.script, str):
            text = self.script
        else:
            turn = sum(isinstance(m, AssistantMessage) for m in request.messages)
            text = self.script[min(turn, len(self.script) - 1)]
        return text.removeprefix(request.forced_prefix) if request.forced_prefix else text

    def generate(self, requests: Sequence[GenRequest], controls: Sequence[RowControl]) -> list[GenOutput]:
        self.batches.append({"size": len(requests), "adapter": requests[0].adapter})
        pieces = [_PIECE.findall(self._text(r)) for r in requests]
        counts = [0] * len(requests)
        finish: list[str | None] = [None] * len(requests)
        for step in range(max(r.max_new_tokens for r in requests)):
            for row, request in enumerate(requests):
                if finish[row] is not None:
                    continue
                if controls[row].cancelled:
                    finish[row] = "cancelled"
                    self.cancelled_rows += 1
                elif step >= len(pieces[row]):
                    finish[row] = "stop"
                    counts[row] += 1  # the end-of-turn token
                else:
                    counts[row] += 1
                    if request.stream:
                        controls[row].emit(pieces[row][step])
                    if counts[row] >= request.max_new_tokens:
                        finish[row] = "length"
            if all(f is not None for f in finish):
                break
            if self.token_delay_s:
                time.sleep(self.token_delay_s)
        return [
            GenOutput(text="".join(p[:c]), completion_tokens=c, finish=f or "length")  # type: ignore[arg-type]
            for p, c, f in zip(pieces, counts, finish, strict=True)
        ]


_PIECE = re.compile(r"\s*\S+|\s+$")
