"""The policy protocol, its reply type, and the spec-string loader."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from agentft.errors import FormatError, UserError
from agentft.messages import AssistantMessage, Message
from agentft.tools import ToolSpec
from agentft.trajectory import TurnTokens

__all__ = ["Policy", "Reply", "TaskAwarePolicy", "ContinuousPolicy", "load_policy"]

ToolSchemas = Sequence[ToolSpec]


class Reply(BaseModel):
    """One assistant turn written by a policy, with what it cost and what was wrong with it."""

    message: AssistantMessage
    errors: list[FormatError] = Field(default_factory=list)
    text: str = Field("", description="the raw text the model produced, before parsing")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float | None = Field(
        None,
        description="this reply's own model time; None: the runner "
        "attributes an equal share of the policy call's wall time",
    )
    tokens: TurnTokens | None = Field(None, description="the turn in token ids, when the policy records them")


@runtime_checkable
class Policy(Protocol):
    """Anything that writes the next assistant turn for a batch of conversations."""

    name: str

    def act(self, conversations: Sequence[Sequence[Message]], tools: ToolSchemas | None = None) -> list[Reply]:
        """One reply per conversation, in order. ``tools`` are offered to every conversation of the batch."""
        ...


@runtime_checkable
class TaskAwarePolicy(Policy, Protocol):
    """A policy with privileged knowledge of each conversation's task: an environment's oracle, which replays
    the task's own solution. The runner hands it the tasks (a model never gets them), so two tasks that open
    with the same words can never be mixed up."""

    def act_on_tasks(
        self, conversations: Sequence[Sequence[Message]], tools: ToolSchemas | None, tasks: Sequence[Any]
    ) -> list[Reply]:
        """One reply per conversation, each knowing its ``Task``."""
        ...


@runtime_checkable
class ContinuousPolicy(Policy, Protocol):
    """A policy whose turns join a running batch (``HFPolicy`` with its engine): the runner submits each
    episode's next turn as soon as the episode needs one, instead of waiting for a whole batch of turns."""

    @property
    def continuous(self) -> bool:
        """False when this instance can only ``act`` (e.g. a model the engine cannot run)."""
        ...

    def submit(
        self, key: str, conversation: Sequence[Message], tools: ToolSchemas | None, temperature: float | None = None
    ) -> None:
        """Queue the next turn of episode ``key`` (sampled at ``temperature`` instead of the policy's own, if given)."""
        ...

    def poll(self) -> list[tuple[str, Reply]]:
        """Generate until at least one queued turn is done; those turns' replies, by key."""
        ...

    def release(self, key: str) -> None:
        """Episode ``key`` ended: whatever is kept for it can go."""
        ...


def load_policy(spec: str, **options: Any) -> Policy:
    """Build a policy from its spec string: ``hf:MODEL[@ADAPTER]`` or ``openai:BASE_URL#MODEL``.

    ``options`` go to the backend's constructor (e.g. ``max_new_tokens``, ``batch_size``).
    """
    kind, _, rest = spec.partition(":")
    if kind == "hf" and rest:
        from agentft.policies.hf import HFPolicy

        model, _, adapter = rest.partition("@")
        return HFPolicy(model, adapter=adapter or None, **options)
    if kind == "openai" and "#" in rest:
        from agentft.policies.openai_api import OpenAIPolicy

        base_url, _, model = rest.rpartition("#")
        return OpenAIPolicy(base_url, model, **options)
    raise UserError(
        f"unknown policy {spec!r}: use hf:MODEL[@ADAPTER_DIR] (e.g. hf:smollm2-135m) or "
        "openai:BASE_URL#MODEL (e.g. openai:http://127.0.0.1:8000/v1#smollm2-135m)"
    )
