"""One model turn, shared by chat completions and agent runs: build it, wait for it, read the reply.

tool_choice, soundly:

- ``none``: the tools are not offered (the prompt lists none) and the reply is never read as a tool call.
- ``auto``: the tools are offered; a reply that parses as tool calls to declared tools is returned as
  ``tool_calls``; anything else (bad JSON, an unknown tool, a half-written tag) is plain assistant text.
- ``{"type": "function", "function": {"name": X}}``: the reply is forced to start with
  ``<tool_call>{"name": "X", "arguments": `` (the prefix ends the prompt), so the model only writes the
  arguments. The answer is always a call to X. Its ``arguments`` string is the JSON object the model wrote
  (re-serialized); if it wrote no valid object, the raw text is passed on as OpenAI does ("the model does not
  always generate valid JSON ... validate the arguments in your code").
- ``required``: the reply is forced to start with ``<tool_call>{"name": "`` and a logits mask
  (``HFBackend``) lets the model continue only with one of the declared names followed by
  ``", "arguments": ``; the model's likeliest declared tool is called, as for a named choice.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from agentft.chat_format import STOP_MARKERS, parse_reply, tool_names
from agentft.errors import FormatError
from agentft.messages import AssistantMessage, Message, ToolCall
from agentft.serve.config import ServeState
from agentft.serve.engine import GenOutput, GenRequest, WorkItem
from agentft.serve.errors import APIError
from agentft.verbatim import Verbatim

__all__ = ["ClientGone", "Interpreted", "build_request", "await_output", "interpret", "call_id", "plain_text"]

_POLL_S = 0.05


class ClientGone(Exception):
    """The client disconnected while its request waited or generated."""


def call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def plain_text(text: str) -> str:
    for marker in STOP_MARKERS:
        text = text.split(marker, 1)[0]
    return text.strip()


def build_request(
    state: ServeState,
    messages: list[Message],
    tools: list[dict[str, Any]] | None,
    *,
    mode: str,
    forced_name: str | None,
    adapter: str | None,
    max_tokens: int | None,
    temperature: float | None,
    stream: bool = False,
    verbatim: dict[str, dict[str, Verbatim]] | None = None,
) -> GenRequest:
    """Render the turn and check it fits the model's context (400 ``context_length_exceeded`` if not)."""
    backend = state.backend
    offered = tools if tools and mode != "none" else None
    prefix, choices = "", None
    if mode == "named":
        prefix = f'<tool_call>{{"name": {json.dumps(forced_name)}, "arguments": '
    elif mode == "required":
        prefix, choices = '<tool_call>{"name": "', sorted(tool_names(offered))
    prompt = backend.render(messages, offered) + prefix
    prompt_tokens = backend.count_tokens(prompt)
    context = backend.context_length
    room = context - prompt_tokens
    wanted = max_tokens if max_tokens is not None else min(state.config.default_max_tokens, room)
    if room < 1 or prompt_tokens + wanted > context:
        raise APIError(
            400,
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{prompt_tokens + max(wanted, 1)} tokens ({prompt_tokens} in the messages, {max(wanted, 1)} "
            "in the completion). Please reduce the length of the messages or completion.",
            code="context_length_exceeded",
            param="messages",
        )
    return GenRequest(
        messages=list(messages),
        tools=offered,
        prompt=prompt,
        prompt_tokens=prompt_tokens,
        max_new_tokens=wanted,
        temperature=temperature or 0.0,
        forced_prefix=prefix,
        name_choices=choices,
        adapter=adapter,
        stream=stream,
        verbatim=verbatim,
    )


async def await_output(item: WorkItem, request: Any, deadline: float) -> GenOutput:
    """The item's output; cancels it and raises 504 past ``deadline`` or ``ClientGone`` on a disconnect."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            item.cancel()
            raise APIError(504, "the request timed out; generation was cancelled", code="timeout")
        done, _ = await asyncio.wait({item.future}, timeout=min(_POLL_S, left))
        if done:
            return item.future.result()
        if request is not None and await request.is_disconnected():
            item.cancel()
            raise ClientGone


@dataclass
class Interpreted:
    """A generated reply read for the API (``content``, ``tool_calls`` with JSON-string arguments) and for the
    trajectory (``message``, where arguments are objects; invalid ones stay text there)."""

    content: str | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    message: AssistantMessage = field(default_factory=AssistantMessage)
    errors: list[FormatError] = field(default_factory=list)

    def finish_reason(self, finish: str) -> str:
        return "tool_calls" if self.tool_calls else ("length" if finish == "length" else "stop")


def _wire_call(name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id(), "type": "function", "function": {"name": name, "arguments": arguments}}


def _forced_call(full: str, names: list[str]) -> tuple[str, str, dict[str, Any] | None] | None:
    """(name, arguments text, arguments object or None) of a forced reply that did not parse cleanly."""
    match = re.match(r'<tool_call>\{"name":\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments":\s*', full)
    if not match:
        return None
    name = match.group(1)
    if name not in names:
        return None
    rest = full[match.end() :]
    try:
        value, _ = json.JSONDecoder().raw_decode(rest)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        return name, json.dumps(value, ensure_ascii=False), value
    raw = plain_text(rest).split("</tool_call>", 1)[0].strip()
    if raw.endswith("}}"):  # the tool call's own closing brace
        raw = raw[:-1]
    return name, raw, None


def interpret(text: str, gen: GenRequest, mode: str, forced_name: str | None) -> Interpreted:
    """Read ``text`` (what followed the forced prefix) as the assistant's reply; never raises."""
    if mode == "none" or not gen.tools:
        content = plain_text(text)
        return Interpreted(content=content, message=AssistantMessage(content=content))
    full = gen.forced_prefix + text
    parsed = parse_reply(full, gen.tools, call_id_prefix="call")
    message = parsed.message
    if parsed.ok and message.tool_calls:
        calls = message.tool_calls
        if mode == "named":
            calls = [c for c in calls if c.function.name == forced_name] or calls[:1]
        wire = [_wire_call(c.function.name, json.dumps(c.function.arguments, ensure_ascii=False)) for c in calls]
        for call, out in zip(calls, wire, strict=True):
            call.id = out["id"]
        return Interpreted(
            content=message.content,
            tool_calls=wire,
            message=AssistantMessage(content=message.content, tool_calls=calls),
        )
    if mode in ("named", "required"):
        names = [forced_name] if mode == "named" and forced_name else sorted(tool_names(gen.tools))
        forced = _forced_call(full, names)
        if forced is not None:
            name, arguments, value = forced
            wire = _wire_call(name, arguments)
            if value is not None:
                return Interpreted(
                    content=None,
                    tool_calls=[wire],
                    message=AssistantMessage(tool_calls=[ToolCall.create(wire["id"], name, value)]),
                    errors=parsed.errors,
                )
            return Interpreted(
                content=None,
                tool_calls=[wire],
                message=AssistantMessage(content=plain_text(full)),
                errors=parsed.errors,
            )
    return Interpreted(content=message.content or "", message=message, errors=parsed.errors)
