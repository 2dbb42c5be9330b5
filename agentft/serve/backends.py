"""Model backends of the server: a transformers model with LoRA adapters, and a scripted one for tests.

``HFBackend`` loads the base model once; with adapters it wraps it in a peft ``PeftModel`` and loads each adapter
by name. Every adapter (and the base) has its own ``agentft.engine.Engine``: rows join and leave at any token,
and a conversation that comes back (a client resending its history, an agent run's next turn) or shares an
opening with another reuses its cached keys and values, which are only valid under the weights that computed
them. A step runs each engine with rows under its adapter (``set_adapter``, or the base with the adapters
disabled). Rows stream their new text out as it comes; ``tool_choice="required"`` restricts a row's first
tokens to one of the declared tool names, and an agent run's rows keep the arguments its tools declare verbatim
to text the conversation holds (``agentft.verbatim``). A model the engine cannot run (sliding-window attention)
generates each joining group with transformers' ``generate`` instead, one group at a time.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentft.chat_format import end_of_turn, render
from agentft.errors import UserError
from agentft.messages import AssistantMessage, Message, to_hf
from agentft.serve.engine import GenOutput, GenRequest, Row

__all__ = ["HFBackend", "ScriptedBackend", "NAME_SUFFIX"]

NAME_SUFFIX = '", "arguments": '
"""What follows a tool name chosen under tool_choice=required (the prompt ends with ``{"name": "``)."""


def _name_choices(choices: list[list[int]]) -> Any:
    """The ``allowed`` function of a row that must start with one of these token sequences (tool names)."""

    def allowed(done: list[int]) -> list[int] | None:
        live = [c for c in choices if c[: len(done)] == done]
        if not live or any(len(c) == len(done) for c in live):
            return None
        return sorted({c[len(done)] for c in live})

    return allowed


class _Stream:
    """Turns a row's tokens into text deltas: never half of a multi-byte character, nothing after end-of-turn."""

    def __init__(self, backend: HFBackend, row: Row) -> None:
        self.backend, self.row = backend, row
        self.tokens: list[int] = []
        self.sent = 0

    def __call__(self, token: int) -> None:
        if token in self.backend.stop_ids:
            return
        self.tokens.append(token)
        text = self.backend.decode(self.tokens)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            return
        if len(text) > self.sent:
            self.row.emit(text[self.sent :])
            self.sent = len(text)


class HFBackend:
    """A local causal LM (embedded name or directory) with any number of named LoRA adapters."""

    def __init__(
        self,
        model: str,
        adapters: dict[str, str | Path] | None = None,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        max_batch: int = 16,
        loaded: tuple[Any, Any] | None = None,
    ) -> None:
        from agentft.engine import supports
        from agentft.models import load_model, stop_token_ids

        self.model_name = str(model)
        self.adapters = list(adapters or {})
        base, self.tokenizer = loaded or load_model(model, dtype=dtype, device=device)
        if not supports(base):
            raise UserError(
                f"agentft serve runs models with full or per-layer sliding-window attention; {model} has another kind"
            )
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
        self.end_of_turn = end_of_turn(self.tokenizer)
        self.stop_ids = set(stop_token_ids(base, self.tokenizer))
        self._lock = threading.Lock()  # a fast tokenizer must not be used by two threads at once
        self.max_batch = max_batch
        self._engines: dict[str | None, Any] = {}
        self._rows: dict[int, tuple[Row, Any]] = {}
        self._token_texts: Any = None

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

    def decode(self, tokens: list[int]) -> str:
        with self._lock:
            text = self.tokenizer.decode(tokens, skip_special_tokens=False)
        return text.split(self.end_of_turn)[0]

    def start(self, rows: Sequence[Row]) -> None:
        from agentft.engine import Engine, Request

        for row in rows:
            request = row.request
            with self._lock:
                prompt = self.tokenizer(request.prompt, add_special_tokens=False)["input_ids"]
                choices = [
                    self.tokenizer(name + NAME_SUFFIX, add_special_tokens=False)["input_ids"]
                    for name in request.name_choices or ()
                ]
            engine = self._engines.get(request.adapter)
            if engine is None:
                engine = self._engines[request.adapter] = Engine(
                    self.model, sorted(self.stop_ids), max_batch=self.max_batch, slots=2 * self.max_batch
                )
            handle = engine.submit(
                Request(
                    prompt=prompt,
                    max_new_tokens=request.max_new_tokens,
                    temperature=request.temperature,
                    allowed=_name_choices(choices) if choices else self._verbatim(request),
                    on_token=_Stream(self, row) if request.stream else None,
                )
            )
            self._rows[handle.id] = (row, handle)

    def _verbatim(self, request: GenRequest) -> Any:
        """The row's verbatim-arguments constraint (agent runs over tools that declare them), or None."""
        from agentft.verbatim import TokenTexts, VerbatimArguments

        if not request.verbatim:
            return None
        with self._lock:
            if self._token_texts is None:
                self._token_texts = TokenTexts(self.tokenizer)

        def decode(tokens: list[int]) -> str:  # the text of the reply so far, the forced prefix included
            with self._lock:
                return request.forced_prefix + self.tokenizer.decode(tokens, skip_special_tokens=False)

        sources = [m["content"] for m in to_hf(request.messages) if m["role"] != "assistant"]
        return VerbatimArguments(self._token_texts, decode, request.verbatim, [s for s in sources if s])

    def step(self) -> list[tuple[Row, GenOutput]]:
        finished: list[tuple[Row, GenOutput]] = []
        for adapter, engine in self._engines.items():
            if not engine.busy:
                continue
            for row, handle in self._rows.values():
                if row.cancelled:
                    handle.cancel()
            with self._adapter(adapter):
                done = engine.step()
            for handle in done:
                row, _ = self._rows.pop(handle.id)
                result = handle.result
                assert result is not None
                finished.append((row, GenOutput(self.decode(result.tokens), len(result.tokens), result.finish)))
        return finished

    def abort(self) -> list[Row]:
        rows = [row for row, _ in self._rows.values()]
        self._rows.clear()
        self._engines.clear()  # their state may be half-updated: start again from empty caches
        return rows


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
        """Rows handed over together: their number and adapter."""
        self.cancelled_rows = 0
        self._running: list[_ScriptedRow] = []

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

    def start(self, rows: Sequence[Row]) -> None:
        self.batches.append({"size": len(rows), "adapter": rows[0].request.adapter if rows else None})
        for row in rows:
            self._running.append(_ScriptedRow(row, _PIECE.findall(self._text(row.request))))

    def step(self) -> list[tuple[Row, GenOutput]]:
        finished: list[tuple[Row, GenOutput]] = []
        for state in list(self._running):
            row, request = state.row, state.row.request
            finish: str | None = None
            if row.cancelled:
                finish = "cancelled"
                self.cancelled_rows += 1
            elif state.count >= len(state.pieces):
                finish = "stop"
                state.count += 1  # the end-of-turn token
            else:
                if request.stream:
                    row.emit(state.pieces[state.count])
                state.count += 1
                if state.count >= request.max_new_tokens:
                    finish = "length"
            if finish is not None:
                self._running.remove(state)
                text = "".join(state.pieces[: min(state.count, len(state.pieces))])
                finished.append((row, GenOutput(text=text, completion_tokens=state.count, finish=finish)))  # type: ignore[arg-type]
        if self._running and self.token_delay_s:
            time.sleep(self.token_delay_s)
        return finished

    def abort(self) -> list[Row]:
        rows = [state.row for state in self._running]
        self._running.clear()
        return rows


@dataclass
class _ScriptedRow:
    row: Row
    pieces: list[str]
    count: int = 0


_PIECE = re.compile(r"\s*\S+|\s+$")
