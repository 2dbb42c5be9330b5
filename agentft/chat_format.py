"""The tool-aware chat format: render conversations for a model, parse its output back into messages.

SmolLM2-Instruct's own template is plain ChatML and drops tools and tool calls, so agentft ships
``chatml_tools.jinja`` (installed as the tokenizer's chat template when a model is pulled). Gemma's turns are
``<start_of_turn>ROLE ... <end_of_turn>`` with the assistant called ``model``: ``GEMMA_TEMPLATE`` is the same
template with Gemma's markers (derived from the one source, so tools, calls and results render identically).
``end_of_turn(tokenizer)`` names the token that ends an assistant turn for whichever template a tokenizer
carries. ``render``
here uses the same Jinja settings as ``transformers`` so that the text is identical whether or not
``transformers`` is loaded. ``parse_reply`` is the one way from model text back to an
``AssistantMessage``: malformed output comes back as ``FormatError`` values, never as an exception.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, Field

from agentft.errors import FormatError
from agentft.messages import AssistantMessage, Message, ToolCall, to_hf
from agentft.tools import ToolSpec, openai_tools

__all__ = [
    "CHAT_TEMPLATE",
    "GEMMA_TEMPLATE",
    "END_OF_TURN",
    "STOP_MARKERS",
    "end_of_turn",
    "ParsedReply",
    "render",
    "parse_reply",
    "tool_names",
]

END_OF_TURN = "<|im_end|>"
"""ChatML's end of turn (the embedded SmolLM2 and tiny-test); ``end_of_turn(tokenizer)`` for any model."""
_END_MARKERS = (END_OF_TURN, "<end_of_turn>", "<|eot_id|>")
"""Ends of an assistant turn in the chat families agentft knows: ChatML, Gemma, Llama 3."""
STOP_MARKERS = (*_END_MARKERS, "<|endoftext|>", "<|im_start|>", "<start_of_turn>", "<eos>")
"""Text that ends a reply wherever the model writes it: ends of turn, ends of text, the start of another turn."""
_TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|(?=<tool_call>)|\Z)", re.S)
_UNCLOSED = re.compile(r"<tool_call>(?:(?!</tool_call>).)*\Z", re.S)

CHAT_TEMPLATE: str = resources.files("agentft").joinpath("templates/chatml_tools.jinja").read_text("utf-8")


def _gemma_template(chatml: str) -> str:
    """The ChatML template with Gemma's turn markers, its ``model`` role, and its ``<bos>`` (Gemma's outputs
    degrade without it; agentft tokenises prompts without special tokens, so the template writes it)."""
    replacements = {
        "<|im_start|>assistant": "<start_of_turn>model",
        "<|im_start|>": "<start_of_turn>",
        "<|im_end|>": "<end_of_turn>",
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face": "You are a helpful assistant.",
    }
    for old, new in replacements.items():
        assert old in chatml, old
        chatml = chatml.replace(old, new)
    head, marker, body = chatml.partition("{%- if messages and")
    return head + '{{- "<bos>" -}}\n' + marker + body


GEMMA_TEMPLATE: str = _gemma_template(CHAT_TEMPLATE)


def end_of_turn(tokenizer: Any) -> str:
    """The token that ends an assistant turn for this tokenizer: the end-of-turn marker its chat template writes
    (ChatML's ``<|im_end|>``, Gemma's ``<end_of_turn>``, Llama 3's ``<|eot_id|>``), else its end-of-sequence."""
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    return next((marker for marker in _END_MARKERS if marker in template), tokenizer.eos_token or END_OF_TURN)


class _GenerationMarkers(jinja2.ext.Extension):
    """Accepts ``{% generation %}...{% endgeneration %}`` and renders its body unchanged."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False
) -> str:
    # Same signature and output as transformers' chat-template filter.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@cache
def _compiled(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationMarkers, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    return env.from_string(template)


def render(
    messages: Sequence[Message | dict[str, Any]],
    tools: Sequence[ToolSpec | dict[str, Any]] | None = None,
    *,
    add_generation_prompt: bool = False,
    template: str = CHAT_TEMPLATE,
) -> str:
    """Render a conversation (and the tools offered) as the model sees it."""
    return _compiled(template).render(
        messages=to_hf(messages),
        tools=openai_tools(tools) or None,
        add_generation_prompt=add_generation_prompt,
    )


def tool_names(tools: Sequence[ToolSpec | dict[str, Any]] | None) -> set[str]:
    """The names of tool specs (or OpenAI-style schemas, ``{"type": "function", "function": {...}}`` or bare)."""
    return {ToolSpec.model_validate(t).name for t in tools or ()}


class ParsedReply(BaseModel):
    """The assistant message read from model text, and what was wrong with the text, if anything.

    When anything is wrong, the message carries the raw text as ``content`` and no tool calls: nothing
    half-parsed gets executed, and re-rendering the message reproduces exactly what the model wrote.
    """

    message: AssistantMessage
    errors: list[FormatError] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _cut_at_stop(text: str) -> str:
    for marker in STOP_MARKERS:
        index = text.find(marker)
        if index != -1:
            text = text[:index]
    return text


def _read_call(body: str, known: set[str] | None) -> tuple[str, dict[str, Any]] | FormatError:
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        return FormatError(kind="bad_json", detail=f"tool call is not valid JSON ({exc.msg})", raw=body)
    if not isinstance(data, dict):
        return FormatError(kind="bad_json", detail="tool call must be a JSON object", raw=body)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        return FormatError(kind="missing_name", detail='tool call has no "name"', raw=body)
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            pass
    if not isinstance(arguments, dict):
        return FormatError(kind="bad_arguments", detail=f'"arguments" of {name} must be a JSON object', raw=body)
    if known is not None and name not in known:
        listed = ", ".join(sorted(known)) or "none"
        return FormatError(kind="unknown_tool", detail=f"unknown tool {name!r}; available: {listed}", raw=body)
    return name, arguments


def parse_reply(
    text: str, tools: Sequence[ToolSpec | dict[str, Any]] | None = None, *, call_id_prefix: str = "call"
) -> ParsedReply:
    """Turn model output into an ``AssistantMessage``; never raises on what the model wrote.

    ``tools`` (schemas) enables the unknown-tool check. Tool-call ids are ``{call_id_prefix}_{i}``, so
    the same output parsed at the same step always gets the same ids.
    """
    text = _cut_at_stop(text).strip()
    known = tool_names(tools) if tools is not None else None
    calls: list[ToolCall] = []
    errors: list[FormatError] = []
    for index, match in enumerate(_TOOL_CALL.finditer(text)):
        body = match.group(1).strip()
        result = _read_call(body, known)
        if isinstance(result, FormatError):
            errors.append(result)
        else:
            calls.append(ToolCall.create(f"{call_id_prefix}_{index}", *result))
    if errors and _UNCLOSED.search(text):
        errors.append(FormatError(kind="unclosed_tag", detail="<tool_call> without </tool_call>", raw=text))
    if errors:
        return ParsedReply(message=AssistantMessage(content=text), errors=errors)
    content = _TOOL_CALL.sub("", text).strip() if calls else text
    return ParsedReply(message=AssistantMessage(content=content or None, tool_calls=calls))
