"""A policy that replies from a script, for tests of tools, environments and runners."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from agentft.chat_format import parse_reply
from agentft.errors import UserError
from agentft.messages import AssistantMessage, Message, parse_messages
from agentft.policies.base import Reply, ToolSchemas

__all__ = ["ScriptedPolicy", "NoopPolicy"]

ScriptStep = str | AssistantMessage
Script = Sequence[ScriptStep] | Callable[[list[Message], ToolSchemas | None], ScriptStep]


class ScriptedPolicy:
    """Replies from a list (the n-th assistant turn of every conversation gets ``script[n]``) or a function.

    A text reply goes through the same parser as a real model's output, so a scripted malformed tool
    call exercises the same error paths.

    >>> policy = ScriptedPolicy(['<tool_call>{"name": "get_time", "arguments": {}}</tool_call>', "It is noon."])
    """

    def __init__(self, script: Script, *, name: str = "scripted") -> None:
        self.script = script
        self.name = name

    def _step(self, conversation: list[Message], tools: ToolSchemas | None) -> ScriptStep:
        if callable(self.script):
            return self.script(conversation, tools)
        turn = sum(1 for m in conversation if m.role == "assistant")
        if turn >= len(self.script):
            raise UserError(f"scripted policy {self.name!r} has {len(self.script)} replies; turn {turn + 1} asked")
        return self.script[turn]

    def act(
        self, conversations: Sequence[Sequence[Message | dict[str, Any]]], tools: ToolSchemas | None = None
    ) -> list[Reply]:
        replies = []
        for conversation in conversations:
            step = self._step(parse_messages(conversation), tools)
            if isinstance(step, AssistantMessage):
                replies.append(Reply(message=step, text=step.content or ""))
            else:
                parsed = parse_reply(step, tools)
                replies.append(Reply(message=parsed.message, errors=parsed.errors, text=step))
        return replies


class NoopPolicy:
    """Never calls a tool; answers every turn with one polite sentence.

    Every environment must score 0% success against it: a task whose right outcome is "no write" only
    succeeds when the agent did the required reads and told the user the required facts.
    """

    name = "noop"
    SENTENCE = "Thank you for reaching out; I am happy to help with your request."

    def act(
        self, conversations: Sequence[Sequence[Message | dict[str, Any]]], tools: ToolSchemas | None = None
    ) -> list[Reply]:
        return [Reply(message=AssistantMessage(content=self.SENTENCE), text=self.SENTENCE) for _ in conversations]
