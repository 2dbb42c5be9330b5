"""Recovery demonstrations: the expert slips once, reads the tool's error, and makes the right call.

An oracle never errs, so a model tuned on its episodes has never seen anyone recover from an error
observation: given one (an unknown tool, a missing argument, a value outside an enum) it repeats itself or
gives up. ``RecoveringOracle`` wraps any environment's oracle; in a chosen fraction of episodes, at one of
the turns where the expert calls a tool, it first makes one deliberately wrong call of the kinds models
make: a tool name that does not exist, a required argument left out, a required argument under another
tool's parameter name, or a value outside the parameter's enum. The environment's own tools answer it with
their real error, and the expert's next turn is its planned, correct call.

The slipped turn is marked ``weight: 0`` (OpenAI's per-message fine-tuning weight): it stays in the
conversation, so the turns after it learn to recover, but SFT never learns to make it (agentft's chat
templates leave a weight-0 turn outside their ``{% generation %}`` markers; see ``agentft.train.sft``).
The inner oracle never sees a slip: slipped turns and their results are removed from what it is shown.

Which episodes slip, at which turn and how is a pure function of the seed and the task id. A slip is always
on a tool the task's solution calls with arguments the tools reject, so the episode's outcome is unchanged;
and since a call the tools refuse never ran, rules do not count it (``agentft.sqlite_env.Audit``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from agentft.errors import UserError
from agentft.messages import AssistantMessage, Message, ToolCall, ToolMessage, parse_messages
from agentft.policies.base import Policy, Reply, TaskAwarePolicy, ToolSchemas
from agentft.tools import openai_tools

__all__ = ["RecoveringOracle", "slip_call", "without_slips"]

_VERBS = {
    "get": "fetch",
    "fetch": "get",
    "lookup": "find",
    "find": "lookup",
    "search": "find",
    "list": "show",
    "create": "add",
    "add": "create",
    "file": "submit",
    "submit": "file",
    "update": "change",
    "set": "update",
    "delete": "remove",
    "remove": "delete",
    "verify": "check",
    "check": "verify",
    "send": "post",
    "approve": "accept",
    "deny": "reject",
    "escalate": "refer",
    "cancel": "stop",
}
"""A call's verb swapped for a near-synonym: the tool a model invents when it half-remembers the real one."""


def _unit(*parts: object) -> float:
    """A number in [0, 1) from the parts, the same on every machine."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return int(digest[:12], 16) / float(16**12)


def _pick(options: Sequence[Any], *parts: object) -> Any:
    return options[int(_unit(*parts) * len(options))]


def _parameters(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["function"]["name"]: t["function"].get("parameters") or {} for t in tools}


def _invented_name(name: str, known: set[str]) -> str:
    words = name.split("_")
    candidates = []
    if words[0] in _VERBS:
        candidates.append("_".join([_VERBS[words[0]], *words[1:]]))
    if len(words) > 1:
        candidates.append("_".join(reversed(words)))
    candidates.append(f"{name}_request")
    return next(c for c in candidates if c not in known)


def slip_call(call: ToolCall, tools: ToolSchemas | Sequence[dict[str, Any]], *parts: object) -> ToolCall:
    """A wrong version of ``call`` that the tools will refuse, chosen by ``parts``.

    The kinds that apply to the call are tried in a seeded order: ``unknown_tool`` always applies;
    ``missing_argument`` and ``renamed_argument`` need a required argument the call passes (renamed to a
    parameter name of another tool, else to ``id``); ``bad_value`` needs an argument with an enum."""
    schemas = _parameters(openai_tools(tools))
    name, arguments = call.function.name, dict(call.function.arguments)
    parameters = schemas.get(name, {})
    properties = parameters.get("properties") or {}
    required = [a for a in parameters.get("required") or [] if a in arguments]
    enums = [a for a in arguments if isinstance(properties.get(a, {}).get("enum"), list)]
    others = sorted({p for n, s in schemas.items() if n != name for p in s.get("properties") or {}} - set(properties))
    applicable = (
        ["unknown_tool"] + ["missing_argument", "renamed_argument"] * bool(required) + ["bad_value"] * bool(enums)
    )
    kind = _pick(applicable, *parts, "kind")
    if kind == "unknown_tool":
        return ToolCall.create(call.id, _invented_name(name, set(schemas)), arguments)
    if kind == "bad_value":
        argument = _pick(enums, *parts, "argument")
        allowed = {str(v) for v in properties[argument]["enum"]}
        value = next(v for v in ("other", "general", "unknown", "misc") if v not in allowed)
        return ToolCall.create(call.id, name, {**arguments, argument: value})
    argument = _pick(required, *parts, "argument")
    value = arguments.pop(argument)
    if kind == "renamed_argument":
        target = _pick(others, *parts, "name") if others else "id"
        if target in arguments or target in properties:
            return ToolCall.create(call.id, name, arguments)  # nowhere to move it: left out instead
        arguments[target] = value
    return ToolCall.create(call.id, name, arguments)


def without_slips(conversation: Sequence[Message]) -> list[Message]:
    """The conversation without weight-0 assistant turns and the tool results that answered them."""
    dropped = {c.id for m in conversation if isinstance(m, AssistantMessage) and m.weight == 0 for c in m.tool_calls}
    return [
        m
        for m in conversation
        if not (isinstance(m, AssistantMessage) and m.weight == 0)
        and not (isinstance(m, ToolMessage) and m.tool_call_id in dropped)
    ]


class RecoveringOracle:
    """An environment's oracle that slips once in ``rate`` of the episodes and then recovers (module docstring).

    Needs the runner to tell it each conversation's task (it wraps a ``TaskAwarePolicy``, as every
    environment's oracle run by ``agentft collect`` is), so that the choice depends on the task alone. The
    slipping turn is one of the task's tool-calling turns, uniformly (counted from ``task.solution``; the
    first one for an oracle whose tasks carry no solution)."""

    name = "oracle"

    def __init__(self, inner: Policy, rate: float, *, seed: int = 0) -> None:
        if not 0.0 <= rate <= 1.0:
            raise UserError(f"recovery is the fraction of episodes in which the expert slips once, not {rate}")
        if not isinstance(inner, TaskAwarePolicy):
            raise UserError(f"recovery demonstrations need an oracle that is told each task; {inner.name!r} is not one")
        self.inner, self.rate, self.seed = inner, rate, seed

    def act(self, conversations: Sequence[Sequence[Message]], tools: ToolSchemas | None = None) -> list[Reply]:
        raise UserError("a recovering oracle must be told each conversation's task: run it through agentft's runner")

    def act_on_tasks(
        self, conversations: Sequence[Sequence[Message]], tools: ToolSchemas | None, tasks: Sequence[Any]
    ) -> list[Reply]:
        conversations = [parse_messages(c) for c in conversations]
        clean = [without_slips(c) for c in conversations]
        replies = self.inner.act_on_tasks(clean, tools, tasks)
        return [
            self._maybe_slip(conversation, shown, reply, task, tools or [])
            for conversation, shown, reply, task in zip(conversations, clean, replies, tasks, strict=True)
        ]

    def _maybe_slip(
        self, conversation: list[Message], shown: list[Message], reply: Reply, task: Any, tools: ToolSchemas
    ) -> Reply:
        calls = reply.message.tool_calls
        if not calls or len(shown) != len(conversation) or _unit(self.seed, task.id, "episode") >= self.rate:
            return reply  # no call to get wrong, already slipped once, or not an episode that slips
        solution = getattr(task, "solution", None) or []
        calling_turns = sum(bool(turn.calls) for turn in solution) or 1
        turn = sum(isinstance(m, AssistantMessage) and bool(m.tool_calls) for m in shown)
        if turn != int(_unit(self.seed, task.id, "turn") * calling_turns):
            return reply
        slipped = slip_call(calls[0], tools, self.seed, task.id, turn)
        return Reply(message=AssistantMessage(content=None, tool_calls=[slipped], weight=0))
