"""Request bodies of the serving API (pydantic), and their conversion to agentft's own messages.

The wire models follow the OpenAI Chat Completions API and ignore fields they do not know (``extra="ignore"``),
so clients that send ``user``, ``parallel_tool_calls``, ``seed``, ``logprobs`` ... are served. Text content may be a
string or a list of ``{"type": "text", "text": ...}`` parts; other part types are a 400. Tool schemas are validated
here (a function name of 1-64 letters, digits, ``_`` or ``-``; ``parameters`` a JSON schema of type object), so a
bad one is a 400 naming the tool, never a 500 later.

Before any field is validated, the whole body is walked once, without recursion: a string with a lone UTF-16
surrogate (JSON ``"\\ud800"``, which no UTF-8 log or tokenizer can encode) and nesting deeper than ``MAX_DEPTH``
(tool schemas and arguments included, which ``jsonschema`` and chat templates walk recursively) are a 400. A
temperature below ``GREEDY_BELOW`` is greedy decoding: dividing logits by a subnormal like ``5e-324`` overflows.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentft.messages import AssistantMessage, Message, SystemMessage, ToolCall, ToolMessage, UserMessage
from agentft.serve.errors import APIError

__all__ = [
    "ChatCompletionRequest",
    "AgentRunRequest",
    "ToolSpec",
    "WireMessage",
    "to_messages",
    "tool_dicts",
    "forced_tool",
    "check_payload",
    "MAX_DEPTH",
]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_DEPTH = 64
"""Deepest nesting of lists and objects in a request body (a tool schema or arguments object included)."""
GREEDY_BELOW = 1e-5
"""Temperatures below this (but >= 0) decode greedily, as 0 does."""
_LENIENT = ConfigDict(extra="ignore")


class TextPart(BaseModel):
    model_config = _LENIENT
    type: str = "text"
    text: str = ""


Content = str | list[TextPart] | None


class WireFunctionCall(BaseModel):
    model_config = _LENIENT
    name: str
    arguments: str | dict[str, Any] = "{}"


class WireToolCall(BaseModel):
    model_config = _LENIENT
    id: str = ""
    type: Literal["function"] = "function"
    function: WireFunctionCall


class WireMessage(BaseModel):
    model_config = _LENIENT
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Content = None
    tool_calls: list[WireToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class FunctionSpec(BaseModel):
    model_config = _LENIENT
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"tool name {value!r} must be 1-64 letters, digits, '_' or '-'")
        return value

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return value
        if value.get("type", "object") != "object":
            raise ValueError("parameters must be a JSON schema of type object")
        import jsonschema

        try:
            jsonschema.Draft202012Validator.check_schema(value)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"parameters is not a valid JSON schema ({exc.message})") from None
        properties = value.get("properties", {})
        if not isinstance(properties, dict):
            raise ValueError("parameters.properties must be an object")
        return value


class ToolSpec(BaseModel):
    model_config = _LENIENT
    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(BaseModel):
    model_config = _LENIENT
    name: str


class NamedToolChoice(BaseModel):
    model_config = _LENIENT
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class StreamOptions(BaseModel):
    model_config = _LENIENT
    include_usage: bool = False


class _Generation(BaseModel):
    """Fields shared by chat completions and agent runs."""

    model_config = _LENIENT
    model: str | None = Field(None, description="the base model or an adapter, as listed by GET /v1/models")
    max_tokens: int | None = Field(None, ge=1, description="most tokens generated (per model turn)")
    max_completion_tokens: int | None = Field(None, ge=1, description="newer name of max_tokens; wins if both")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description=f"0 to 2; below {GREEDY_BELOW} is greedy")
    user: str | None = Field(None, description="the end user's id: keeps them on one A/B arm (agentft.serve.routing)")

    @model_validator(mode="before")
    @classmethod
    def _safe_payload(cls, data: Any) -> Any:
        check_payload(data)
        return data

    @field_validator("temperature")
    @classmethod
    def _greedy_when_tiny(cls, value: float | None) -> float | None:
        return 0.0 if value is not None and value < GREEDY_BELOW else value

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class ChatCompletionRequest(_Generation):
    messages: list[WireMessage] = Field(min_length=1)
    tools: list[ToolSpec] | None = None
    tool_choice: ToolChoice | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _unique_tools(self) -> ChatCompletionRequest:
        names = [t.function.name for t in self.tools or ()]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate:
            raise ValueError(f"tool {duplicate!r} is declared twice")
        return self


class FeedbackRequest(BaseModel):
    model_config = _LENIENT

    id: str = Field(min_length=1, max_length=200, description="the chat completion or agent run id it is about")
    label: Literal["good", "bad"]
    correction: str | None = Field(None, max_length=20_000, description="the reply that should have been given")
    comment: str | None = Field(None, max_length=2_000)


class AgentRunRequest(_Generation):
    messages: list[WireMessage] = Field(
        min_length=1,
        description="the user's message(s); earlier assistant turns "
        "are replayed against a fresh episode (see the docs)",
    )
    env: str | None = Field(None, description="must be the environment the server was started with")
    task_id: str | None = Field(
        None, description="the task whose state the episode starts from (default: the first test task)"
    )
    max_steps: int | None = Field(None, ge=1, description="most model turns")


def _text(content: Content, where: str) -> str | None:
    if content is None or isinstance(content, str):
        return content
    for part in content:
        if part.type != "text":
            raise APIError(
                400,
                f"{where}: content parts of type {part.type!r} are not supported (text only)",
                code="unsupported_content",
                param=where,
            )
    return "".join(part.text for part in content)


def _unencodable(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_payload(value: Any, where: str = "body") -> None:
    """ValueError for a lone surrogate anywhere in ``value`` or nesting deeper than ``MAX_DEPTH``; iterative, so
    a body nested thousands deep is refused without touching the recursion limit."""
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if _unencodable(item):
                raise ValueError(f"{path}: the string holds a lone surrogate (invalid Unicode)")
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise ValueError(f"{path}: nested more than {MAX_DEPTH} levels deep")
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str) and _unencodable(key):
                    raise ValueError(f"{path}: a key holds a lone surrogate (invalid Unicode)")
                stack.append((child, f"{path}.{key}", depth + 1))


def _arguments(call: WireToolCall, where: str) -> dict[str, Any]:
    raw = call.function.arguments
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if raw.strip() else {}
    except (json.JSONDecodeError, RecursionError):
        raise APIError(400, f"{where}: arguments are not valid JSON", code="invalid_arguments", param=where) from None
    if not isinstance(value, dict):
        raise APIError(400, f"{where}: arguments must be a JSON object", code="invalid_arguments", param=where)
    try:
        check_payload(value, where)
    except ValueError as exc:
        raise APIError(400, str(exc), code="invalid_arguments", param=where) from None
    return value


def to_messages(wire: list[WireMessage], *, allow_system: bool = True) -> list[Message]:
    """agentft messages from the request's; every problem is a 400 that names the message."""
    messages: list[Message] = []
    for index, message in enumerate(wire):
        where = f"messages.{index}"
        text = _text(message.content, f"{where}.content")
        if message.role in ("system", "developer"):
            if not allow_system:
                raise APIError(
                    400,
                    f"{where}: the system prompt is the environment's policy; send user messages "
                    "(and earlier assistant turns) only",
                    code="system_not_allowed",
                    param=where,
                )
            messages.append(SystemMessage(content=text or ""))
        elif message.role == "user":
            messages.append(UserMessage(content=text or ""))
        elif message.role == "assistant":
            calls = [
                ToolCall.create(
                    call.id or f"call_h{index}_{i}",
                    call.function.name,
                    _arguments(call, f"{where}.tool_calls.{i}.function.arguments"),
                )
                for i, call in enumerate(message.tool_calls or ())
            ]
            messages.append(AssistantMessage(content=text or None, tool_calls=calls))
        else:
            if not message.tool_call_id:
                raise APIError(
                    400,
                    f"{where}: a tool message needs tool_call_id",
                    code="missing_tool_call_id",
                    param=f"{where}.tool_call_id",
                )
            messages.append(ToolMessage(content=text or "", tool_call_id=message.tool_call_id, name=message.name))
    return messages


def tool_dicts(tools: list[ToolSpec] | None) -> list[dict[str, Any]]:
    """Tool schemas as plain dicts (``parameters`` defaulting to an empty object schema)."""
    out = []
    for spec in tools or ():
        function: dict[str, Any] = {
            "name": spec.function.name,
            "description": spec.function.description or "",
            "parameters": spec.function.parameters or {"type": "object", "properties": {}},
        }
        out.append({"type": "function", "function": function})
    return out


def forced_tool(choice: ToolChoice | None, tools: list[dict[str, Any]]) -> tuple[str, str | None]:
    """(mode, name): mode is auto, none, required or named; a choice that cannot be honoured is a 400."""
    names = [t["function"]["name"] for t in tools]
    if choice is None:
        return ("auto" if tools else "none"), None
    if isinstance(choice, NamedToolChoice):
        if choice.function.name not in names:
            declared = ", ".join(names) or "none"
            raise APIError(
                400,
                f"tool_choice names {choice.function.name!r}, which is not among the declared tools ({declared})",
                code="invalid_tool_choice",
                param="tool_choice",
            )
        return "named", choice.function.name
    if choice == "required" and not tools:
        raise APIError(
            400,
            "tool_choice 'required' needs at least one tool in tools",
            code="invalid_tool_choice",
            param="tool_choice",
        )
    if choice == "auto" and not tools:
        return "none", None
    return choice, None
