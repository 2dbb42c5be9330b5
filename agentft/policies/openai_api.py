"""The OpenAI-compatible backend: concurrent requests to any ``/v1/chat/completions`` server."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agentft.chat_format import parse_reply, tool_names
from agentft.errors import FormatError, UserError
from agentft.messages import AssistantMessage, Message, ToolCall, to_openai
from agentft.policies.base import Reply, ToolSchemas
from agentft.tools import openai_tools

__all__ = ["OpenAIPolicy"]


class OpenAIPolicy:
    """Sends each conversation of a batch as its own request, ``concurrency`` at a time.

    The API key comes from ``api_key``, else ``$OPENAI_API_KEY``; local servers that need none get a
    dummy. Transient failures are retried by the ``openai`` client (``max_retries``).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        max_retries: int = 3,
        timeout: float = 120.0,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
    ) -> None:
        import openai

        self.name = f"openai:{base_url}#{model}"
        self.model = model
        self.base_url = base_url
        self.concurrency = concurrency
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
            max_retries=max_retries,
            timeout=timeout,
        )

    def act(
        self, conversations: Sequence[Sequence[Message | dict[str, Any]]], tools: ToolSchemas | None = None
    ) -> list[Reply]:
        if len(conversations) <= 1:
            return [self._one(c, tools) for c in conversations]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda c: self._one(c, tools), conversations))

    def _one(self, conversation: Sequence[Message | dict[str, Any]], tools: ToolSchemas | None) -> Reply:
        import openai

        request: dict[str, Any] = {
            "model": self.model,
            "messages": to_openai(conversation),
            "max_tokens": self.max_new_tokens,
            "temperature": self.temperature,
        }
        if tools:
            request["tools"] = openai_tools(tools)
        clock = time.perf_counter()
        try:
            response = self.client.chat.completions.create(**request)
        except openai.APIConnectionError as exc:
            raise UserError(f"cannot reach the OpenAI-compatible server at {self.base_url}: {exc}") from exc
        choice = response.choices[0].message
        usage = response.usage
        counts = {
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
            "latency_s": time.perf_counter() - clock,
        }
        content = choice.content or ""
        if not choice.tool_calls:
            # Servers without a tool parser return our <tool_call> markup as plain text.
            parsed = parse_reply(content, tools)
            return Reply(message=parsed.message, errors=parsed.errors, text=content, **counts)
        known = tool_names(tools) if tools is not None else None
        calls, errors = [], []
        for call in choice.tool_calls:
            raw = call.function.arguments or ""
            try:
                arguments = json.loads(raw) if raw.strip() else {}
            except json.JSONDecodeError as exc:
                errors.append(
                    FormatError(
                        kind="bad_json",
                        detail=f"arguments of {call.function.name} are not valid JSON ({exc.msg})",
                        raw=raw,
                    )
                )
                continue
            if not isinstance(arguments, dict):
                errors.append(FormatError(kind="bad_arguments", detail="arguments must be a JSON object", raw=raw))
            elif known is not None and call.function.name not in known:
                errors.append(FormatError(kind="unknown_tool", detail=f"unknown tool {call.function.name!r}", raw=raw))
            else:
                calls.append(ToolCall.create(call.id, call.function.name, arguments))
        text = content + "".join(f"\n{c.function.name}({c.function.arguments})" for c in choice.tool_calls)
        if errors:
            return Reply(message=AssistantMessage(content=text.strip()), errors=errors, text=text, **counts)
        return Reply(message=AssistantMessage(content=content or None, tool_calls=calls), text=text, **counts)
