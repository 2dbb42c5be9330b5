"""Chat messages in the OpenAI shape, as one tagged union with one serializer.

Internally a tool call's ``arguments`` is a dict. At the OpenAI boundary it is a JSON string
(``to_openai`` / ``parse_messages`` convert); Hugging Face chat templates get the dict.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, field_validator

__all__ = [
    "SystemMessage",
    "UserMessage",
    "AssistantMessage",
    "ToolMessage",
    "ToolCall",
    "FunctionCall",
    "Message",
    "parse_messages",
    "to_openai",
    "to_hf",
]


class FunctionCall(BaseModel):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)

    @field_validator("arguments", mode="before")
    @classmethod
    def _decode_json_string(cls, value: Any) -> Any:
        # The OpenAI wire format carries arguments as a JSON string.
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        return value


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall

    @classmethod
    def create(cls, id: str, name: str, arguments: dict[str, Any] | None = None) -> ToolCall:
        return cls(id=id, function=FunctionCall(name=name, arguments=arguments or {}))


class SystemMessage(BaseModel):
    role: Literal["system"] = "system"
    content: str


class UserMessage(BaseModel):
    role: Literal["user"] = "user"
    content: str


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    weight: Literal[0, 1] | None = Field(
        None,
        exclude_if=lambda value: value is None,  # records and requests carry it only where it is set
        description="OpenAI's fine-tuning weight: 0 keeps the turn in the conversation but out of the loss "
        "(a deliberate slip in a recovery demonstration, agentft.recovery); None or 1 is learned from",
    )


class ToolMessage(BaseModel):
    role: Literal["tool"] = "tool"
    content: str
    tool_call_id: str
    name: str | None = None


Message = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]
_messages_adapter: TypeAdapter[list[Message]] = TypeAdapter(list[Message])


def parse_messages(messages: Iterable[Message | dict[str, Any]]) -> list[Message]:
    """Validate OpenAI- or HF-shaped dicts (or messages) into typed messages."""
    items = [m.model_dump() if isinstance(m, BaseModel) else m for m in messages]
    return _messages_adapter.validate_python(items)


def _dump(message: Message, *, arguments_as_json: bool) -> dict[str, Any]:
    data = message.model_dump(exclude_none=True)
    if isinstance(message, AssistantMessage):
        data.setdefault("content", None)
        if not message.tool_calls:
            data.pop("tool_calls", None)
        elif arguments_as_json:
            for call in data["tool_calls"]:
                call["function"]["arguments"] = json.dumps(call["function"]["arguments"], ensure_ascii=False)
    return data


def to_openai(messages: Sequence[Message | dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages for an OpenAI-compatible API: tool-call arguments as JSON strings."""
    return [_dump(m, arguments_as_json=True) for m in parse_messages(messages)]


def to_hf(messages: Sequence[Message | dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages for a Hugging Face chat template: tool-call arguments as dicts."""
    return [_dump(m, arguments_as_json=False) for m in parse_messages(messages)]
