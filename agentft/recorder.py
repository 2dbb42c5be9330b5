"""Record a LangChain / LangGraph agent run as an agentft ``Trajectory``.

``TrajectoryRecorder`` is a LangChain callback handler. Pass it in the run's config and it keeps the
conversation the chat model saw (the longest prompt so far plus the model's replies and the tool
results since), one ``Event`` per tool call, token usage when the model reports it, and wall time.
It never raises into the agent: a callback that fails is logged and the run goes on.

>>> from langchain.agents import create_agent
>>> from agentft.recorder import TrajectoryRecorder
>>> from agentft.trajectory import TrajectoryWriter
>>> recorder = TrajectoryRecorder()
>>> agent = create_agent(model, tools=tools)  # doctest: +SKIP
>>> agent.invoke({"messages": [{"role": "user", "content": "Status of CLM-1001?"}]},
...              config={"callbacks": [recorder]})  # doctest: +SKIP
>>> with TrajectoryWriter("runs/claims.jsonl") as writer:  # doctest: +SKIP
...     writer.write_batch([recorder.trajectory(env="claims", task_id="t1", tools=tools)])

Use one recorder per run (or per conversation, when a checkpointer carries the history across
``invoke`` calls); ``reset()`` empties it. This module needs ``langchain-core``; ``import agentft`` does
not load it.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, get_args

from agentft.errors import UserError, error_text
from agentft.messages import AssistantMessage, Message, SystemMessage, ToolCall, ToolMessage, UserMessage
from agentft.tools import ToolErrorKind
from agentft.trajectory import Event, Trajectory, Usage, episode_id

try:
    from langchain_core.callbacks import BaseCallbackHandler
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise UserError("agentft.recorder needs LangChain: pip install 'langchain-core>=1.0'") from exc

__all__ = ["TrajectoryRecorder", "EFFECT_METADATA_KEY"]

logger = logging.getLogger(__name__)
EFFECT_METADATA_KEY = "agentft_effect"  # a LangChain tool's ``metadata[...]`` naming its effect: "read" | "write"
# LangChain carries a tool's failure to callbacks only as text: read agentft's own error kind back from it here,
# at that boundary (agentft's tools build the text with ``agentft.errors.error_text``).
_AGENTFT_ERROR = re.compile(rf"^Error \(({'|'.join(get_args(ToolErrorKind))})\): ")
_INVALID_ARGS = {"ValidationError", "ToolInvocationError", "ValidationErrorV1"}
_CONTROL_FLOW = {"GraphBubbleUp", "GraphInterrupt", "ParentCommand"}  # LangGraph signals, not failures
_F = TypeVar("_F", bound=Callable[..., None])


def _guarded(method: _F) -> _F:
    @functools.wraps(method)
    def wrapper(self: TrajectoryRecorder, *args: Any, **kwargs: Any) -> None:
        try:
            with self._lock:
                now = time.monotonic()
                self._started = now if self._started is None else self._started
                self._last = now
                method(self, *args, **kwargs)
        except Exception:
            logger.warning("TrajectoryRecorder.%s failed; the run goes on", method.__name__, exc_info=True)

    return wrapper  # type: ignore[return-value]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [b if isinstance(b, str) else b.get("text", "") for b in content if isinstance(b, str | dict)]
        text = "".join(p for p in parts if isinstance(p, str))
        if text or not content:
            return text
    return json.dumps(content, ensure_ascii=False, default=str)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, ensure_ascii=False, default=str))


class TrajectoryRecorder(BaseCallbackHandler):
    """Collects one LangChain/LangGraph agent run; ``trajectory()`` turns it into a record."""

    run_inline = True  # keep the event order in async runs too

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        """Forget everything recorded so far."""
        with self._lock:
            self._messages: list[Message] = []
            self._main_runs: set[Any] = set()
            self._turns = 0
            self._call_steps: dict[str, int] = {}
            self._tool_runs: dict[Any, dict[str, Any]] = {}
            self._events: list[Event] = []
            self._usage = Usage()
            self._model: str | None = None
            self._error: str | None = None
            self._started: float | None = None
            self._last: float | None = None
            self._unnamed_calls = 0

    # ---- conversions -------------------------------------------------------------------------------

    def _tool_calls(self, message: Any) -> list[ToolCall]:
        calls = []
        for call in getattr(message, "tool_calls", None) or []:
            call_id = call.get("id")
            if not call_id:
                self._unnamed_calls += 1
                call_id = f"call_{self._unnamed_calls}"
            calls.append(ToolCall.create(call_id, call.get("name") or "", _jsonable(call.get("args") or {})))
        return calls

    def _convert(self, message: Any) -> Message | None:
        kind = getattr(message, "type", "")
        if kind == "chat":
            kind = {"user": "human", "assistant": "ai"}.get(getattr(message, "role", ""), getattr(message, "role", ""))
        text = _text(getattr(message, "content", ""))
        if kind in ("system", "developer"):
            return SystemMessage(content=text)
        if kind == "human":
            return UserMessage(content=text)
        if kind in ("ai", "AIMessageChunk"):
            calls = self._tool_calls(message)
            return AssistantMessage(content=text or (None if calls else ""), tool_calls=calls)
        if kind == "tool":
            name = getattr(message, "name", None)
            return ToolMessage(content=text, tool_call_id=str(message.tool_call_id), name=name)
        return None

    # ---- model callbacks ---------------------------------------------------------------------------

    @_guarded
    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[Any]],
        *,
        run_id: Any,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        params = kwargs.get("invocation_params") or {}
        name = (metadata or {}).get("ls_model_name") or params.get("model") or params.get("model_name")
        self._model = str(name) if name else self._model
        prompt = [m for m in (self._convert(x) for x in (messages[0] if messages else [])) if m is not None]
        if len(prompt) >= len(self._messages):  # the agent's next call: it holds everything so far
            self._messages = prompt
        elif not (prompt and prompt[-1] == self._messages[-1]):  # a trimmed history still ends where we are
            return  # a side call (a summarizer, a sub-chain): count its usage, keep it out of the conversation
        self._main_runs.add(run_id)

    @_guarded
    def on_llm_end(self, response: Any, *, run_id: Any, **kwargs: Any) -> None:
        generations = response.generations[0] if response.generations else []
        self._usage.model_calls += 1
        reported = False
        for generation in generations:
            usage = getattr(getattr(generation, "message", None), "usage_metadata", None)
            if usage:
                reported = True
                self._usage.prompt_tokens += int(usage.get("input_tokens") or 0)
                self._usage.completion_tokens += int(usage.get("output_tokens") or 0)
        token_usage = (response.llm_output or {}).get("token_usage") or {}
        if not reported and token_usage:
            self._usage.prompt_tokens += int(token_usage.get("prompt_tokens") or token_usage.get("input_tokens") or 0)
            self._usage.completion_tokens += int(
                token_usage.get("completion_tokens") or token_usage.get("output_tokens") or 0
            )
        if run_id not in self._main_runs or not generations:
            return
        message = getattr(generations[0], "message", None)
        converted = self._convert(message) if message is not None else None
        if not isinstance(converted, AssistantMessage):
            converted = AssistantMessage(content=getattr(generations[0], "text", ""))
        step = self._turns
        self._turns += 1
        for call in converted.tool_calls:
            self._call_steps[call.id] = step
        for bad in getattr(message, "invalid_tool_calls", None) or []:
            self._events.append(
                Event(
                    step=step,
                    name=bad.get("name") or "",
                    call_id=bad.get("id") or "",
                    ok=False,
                    error="parse",
                    detail=str(bad.get("error") or bad.get("args")),
                )
            )
        self._messages.append(converted)

    # ---- tool callbacks ----------------------------------------------------------------------------

    @_guarded
    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: Any,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        arguments: Any = inputs
        if not isinstance(arguments, dict):
            try:
                arguments = json.loads(input_str)
            except (TypeError, ValueError):
                arguments = None
            arguments = arguments if isinstance(arguments, dict) else {"input": input_str}
        effect = (metadata or {}).get(EFFECT_METADATA_KEY)
        name = (serialized or {}).get("name") or kwargs.get("name") or ""
        self._tool_runs[run_id] = {
            "name": name,
            "call_id": kwargs.get("tool_call_id") or "",
            "arguments": _jsonable(arguments),
            "started": time.perf_counter(),
            "effect": effect if effect in ("read", "write") else None,
        }

    def _finish(self, run_id: Any, content: str, call_id: str | None, error: Any, detail: str | None) -> None:
        start = self._tool_runs.pop(run_id, None)
        if start is None:
            return
        call_id = call_id or start["call_id"]
        step = self._call_steps.get(call_id, max(self._turns - 1, 0))
        latency = round((time.perf_counter() - start["started"]) * 1000, 3)
        self._events.append(
            Event(
                step=step,
                name=start["name"],
                call_id=call_id,
                arguments=start["arguments"],
                effect=start["effect"],
                ok=error is None,
                error=error,
                detail=detail,
                latency_ms=latency,
            )
        )
        if call_id in self._call_steps:  # a call the recorded model made: its result joins the conversation
            self._messages.append(ToolMessage(content=content, tool_call_id=call_id, name=start["name"] or None))

    @_guarded
    def on_tool_end(self, output: Any, *, run_id: Any, **kwargs: Any) -> None:
        status = getattr(output, "status", None) if getattr(output, "type", None) == "tool" else None
        content = _text(output.content) if status is not None else _text(output)
        call_id = getattr(output, "tool_call_id", None) if status is not None else None
        match = _AGENTFT_ERROR.match(content)
        error = match.group(1) if match else ("tool_error" if status == "error" else None)
        self._finish(run_id, content, call_id, error, content if error else None)

    @_guarded
    def on_tool_error(self, error: BaseException, *, run_id: Any, **kwargs: Any) -> None:
        names = {klass.__name__ for klass in type(error).__mro__}
        kind = "invalid_args" if names & _INVALID_ARGS else "tool_error"
        detail = f"{type(error).__name__}: {error}"
        self._finish(run_id, error_text(kind, detail), kwargs.get("tool_call_id"), kind, detail)

    # ---- chain callbacks ---------------------------------------------------------------------------

    @_guarded
    def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, *, run_id: Any, **kwargs: Any) -> None:
        pass  # only stamps the start time

    @_guarded
    def on_chain_end(self, outputs: Any, *, run_id: Any, **kwargs: Any) -> None:
        pass  # only stamps the end time

    @_guarded
    def on_chain_error(self, error: BaseException, *, run_id: Any, parent_run_id: Any = None, **kwargs: Any) -> None:
        if parent_run_id is None and not {k.__name__ for k in type(error).__mro__} & _CONTROL_FLOW:
            self._error = f"{type(error).__name__}: {error}"

    # ---- the record --------------------------------------------------------------------------------

    def trajectory(
        self,
        *,
        env: str = "langchain",
        task_id: str = "run",
        policy: str | None = None,
        split: str = "",
        seed: int = 0,
        attempt: int = 0,
        tools: Sequence[Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Trajectory:
        """The run so far as a ``Trajectory``; ``tools`` are LangChain tools, agentft tools or schema dicts."""
        schemas = [_schema(t) for t in tools or []]
        effects = {s.get("function", {}).get("name"): s.get("effect") for s in schemas}
        with self._lock:
            policy = policy or self._model or "langchain"
            events = [
                e if e.effect or not effects.get(e.name) else e.model_copy(update={"effect": effects[e.name]})
                for e in self._events
            ]
            wall = (self._last or 0.0) - (self._started or 0.0)
            usage = self._usage.model_copy(update={"wall_seconds": round(wall, 3)})
            extra = dict(metadata or {})
            if self._error:
                extra.setdefault("error", self._error)
            return Trajectory(
                id=episode_id(env, task_id, seed, policy, attempt),
                env=env,
                task_id=task_id,
                split=split,
                policy=policy,
                seed=seed,
                attempt=attempt,
                tools=schemas,
                messages=[m.model_copy(deep=True) for m in self._messages],
                events=events,
                usage=usage,
                status="error" if self._error else "completed",
                metadata=extra,
            )


def _schema(item: Any) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return _jsonable(dict(item))
    if callable(getattr(item, "schema", None)) and hasattr(item, "effect"):  # an agentft Tool
        return item.schema()
    from langchain_core.utils.function_calling import convert_to_openai_tool

    try:
        schema = convert_to_openai_tool(item)
    except Exception as exc:
        raise UserError(f"cannot describe tool {item!r} as an OpenAI schema ({exc})") from exc
    effect = (getattr(item, "metadata", None) or {}).get(EFFECT_METADATA_KEY)
    if effect in ("read", "write"):
        schema["effect"] = effect
    return schema
