"""The episode kernel: one step function under collection, evaluation, serving and RL.

A ``Rollout`` is one live episode: the environment's episode (state, tools, simulated user, scorer), the
conversation so far and what happened in it. Everything that runs an agent goes through the same three
functions, so the protocol a model is trained under is the protocol it is served and evaluated under::

    rollout = open_rollout(env, task, seed=0, guard=guard)   # system prompt + the user's opening message
    while rollout.status is None:
        reply = policy.act([rollout.messages], rollout.tools)[0]
        step(rollout, reply)           # the model's turn, then the tools' results or the user's answer
    trajectory = close_rollout(rollout, policy="hf:...")     # scored by the episode, then closed

``step`` never raises for anything the model or a tool does: an unreadable turn is shown back to the model
as an error (a ``parse`` event), a failing call as an error observation. With a ``Guard`` every proposed call,
reads included, is checked against the environment's rules before it runs (``agentft.guard``). An episode
whose environment fails (the sandbox worker died, the scorer raised, the episode ran out of its own time)
ends with status ``error`` and is not scored: infrastructure failures are reported apart from the model's.

Time is the episode's own: ``usage.model_seconds`` is its share of model time (the policy's
``Reply.latency_s``), ``usage.tool_seconds`` its tools, user and guard; ``timeout_s`` applies to their sum,
so an episode batched with slow neighbours is not timed out by their generation.

Callers: ``agentft.runner`` (many rollouts in lockstep, one policy call per step), ``agentft.serve.agent``
(one rollout per request, ``user=None``: the person answers in the next request), and RL rollouts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentft.attacks import spotlight_tag, spotlight_view
from agentft.envs import Environment, Episode, Task
from agentft.errors import UserError
from agentft.guard import Guard
from agentft.messages import AssistantMessage, Message, SystemMessage, ToolMessage, UserMessage
from agentft.policies.base import Reply
from agentft.tools import Observation, Toolset, ToolSpec
from agentft.trajectory import Event, Score, Trajectory, TurnTokens, Usage

__all__ = ["Rollout", "open_rollout", "step", "close_rollout", "FORMAT_HINT", "SIMULATED"]

FORMAT_HINT = "Reply again: call a tool with valid <tool_call> JSON, or answer the user."
SIMULATED = "simulated"
"""``open_rollout(user=SIMULATED)``: the episode's own simulated user answers (collection, evaluation, RL)."""

User = Callable[[Sequence[Message]], str | None]


@dataclass
class Rollout:
    """One live episode and everything that happened in it so far."""

    id: str
    env_name: str
    task: Task
    episode: Episode | None
    tools: list[ToolSpec]
    messages: list[Message]
    user: User | None
    """Who answers a plain-text reply: the simulated user, or None when a person does (the episode ends)."""
    guard: Guard | None = None
    extra: Toolset | None = None
    max_steps: int | None = None
    timeout_s: float | None = None
    seed: int = 0
    attempt: int = 0
    events: list[Event] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    tokens: list[TurnTokens] | None = None
    """The model's turns in token ids, when its policy records them."""
    spotlight: str | None = None
    """The episode's marker when tool results are spotlit (``agentft.attacks.spotlight_view``), else None."""
    status: str | None = None
    error: str | None = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def steps(self) -> int:
        """Model turns taken in this rollout (not counting a replayed history's)."""
        return self.usage.model_calls

    def view(self) -> list[Message]:
        """The conversation as the model is shown it: spotlit when asked. ``messages`` is the record, with the
        tools' results as they gave them."""
        return spotlight_view(self.messages, self.spotlight) if self.spotlight else self.messages

    def fail(self, error: str) -> None:
        """End the episode as an infrastructure error (not the model's failure)."""
        self.status, self.error = "error", error

    def discard(self) -> None:
        """Close the environment's episode (its worker, its files) without scoring; safe to call twice."""
        episode, self.episode = self.episode, None
        if episode is not None:
            episode.close()


def open_rollout(
    env: Environment,
    task: Task,
    *,
    seed: int = 0,
    id: str = "",
    guard: Guard | None = None,
    extra: Toolset | None = None,
    user: User | str | None = SIMULATED,
    max_steps: int | None = None,
    timeout_s: float | None = None,
    attempt: int = 0,
    history: Sequence[Message] | None = None,
    deadline: float | None = None,
    spotlight: bool = False,
) -> Rollout:
    """Start an episode of ``task``: the system prompt, then the user's opening (or a replayed ``history``).

    Never raises for the environment's failures: a rollout that could not start has status ``error``.
    ``history`` (served multi-turn runs) is the conversation so far without the system message; its tool calls
    run again in this fresh episode, through the guard, and their results are recomputed. Past ``deadline``
    (a ``time.monotonic()`` value) the replay stops and the rollout ends ``error``: a long history cannot hold
    a worker beyond its request's timeout. With ``spotlight`` the model is shown the conversation through
    ``Rollout.view()``: tool results between markers derived from the episode's id, which the system prompt
    tells it are data.
    """
    rollout = Rollout(
        id=id,
        env_name=env.name,
        task=task,
        episode=None,
        tools=[],
        messages=[],
        user=None,
        guard=guard,
        extra=extra,
        max_steps=max_steps,
        timeout_s=timeout_s,
        seed=seed,
        attempt=attempt,
        spotlight=spotlight_tag(id or f"{task.id}-{seed}-{attempt}") if spotlight else None,
    )
    clock = time.perf_counter()
    try:
        rollout.episode = env.start(task, seed=seed)
        specs = [ToolSpec.model_validate(t) for t in rollout.episode.tools]
        rollout.tools = [*specs, *(extra.specs() if extra is not None else [])]
        rollout.user = rollout.episode.user_turn if user == SIMULATED else user  # type: ignore[assignment]
        rollout.messages.append(SystemMessage(content=rollout.episode.system_prompt))
        if history is None:
            opening = rollout.user(rollout.messages) if rollout.user is not None else None
            if not opening:
                raise UserError(f"the user simulator of {env.name} gave no opening message for task {task.id}")
            rollout.messages.append(UserMessage(content=opening))
        else:
            for message in history:
                if isinstance(message, ToolMessage):  # recomputed below
                    continue
                rollout.messages.append(message.model_copy(deep=True))
                if isinstance(message, AssistantMessage) and message.tool_calls:
                    if deadline is not None and time.monotonic() > deadline:
                        rollout.fail("the request's history took longer than its timeout to replay")
                        break
                    _run_calls(rollout, rollout.messages[-1], step=_turns(rollout) - 1, replayed=True)
    except Exception as exc:
        rollout.fail(f"start failed: {type(exc).__name__}: {exc}")
    rollout.usage.tool_seconds += time.perf_counter() - clock
    return rollout


def step(rollout: Rollout, reply: Reply) -> None:
    """Add the model's turn and whatever answers it (tool results, an error notice, the user's reply).

    Sets ``rollout.status`` when the episode ends: ``completed`` (the user has nothing more to say),
    ``max_steps``, or ``error`` (the environment failed, or the episode used up ``timeout_s`` of its own time).
    """
    if rollout.status is not None:
        raise ValueError(f"rollout {rollout.id or rollout.task.id} has already ended ({rollout.status})")
    number = _turns(rollout)  # the turn's index in the conversation (a replayed history's turns included)
    usage = rollout.usage
    usage.model_calls += 1
    usage.prompt_tokens += reply.prompt_tokens
    usage.completion_tokens += reply.completion_tokens
    usage.model_seconds += reply.latency_s or 0.0
    if reply.tokens is not None:
        rollout.tokens = [*(rollout.tokens or []), reply.tokens.model_copy(update={"step": number})]
    clock = time.perf_counter()
    try:
        _answer(rollout, reply, number)
    except Exception as exc:
        rollout.fail(f"environment failed: {type(exc).__name__}: {exc}")
    usage.tool_seconds += time.perf_counter() - clock
    if rollout.status is None and rollout.max_steps is not None and rollout.steps >= rollout.max_steps:
        rollout.status = "max_steps"
    if rollout.status is None and rollout.timeout_s is not None and usage.own_seconds > rollout.timeout_s:
        rollout.fail(f"episode timeout ({rollout.timeout_s:g} s of its own model and tool time)")


def _turns(rollout: Rollout) -> int:
    return sum(isinstance(m, AssistantMessage) for m in rollout.messages)


def _answer(rollout: Rollout, reply: Reply, number: int) -> None:
    message = reply.message.model_copy(deep=True)
    rollout.messages.append(message)
    if reply.errors:
        for error in reply.errors:
            rollout.events.append(Event(step=number, ok=False, error="parse", detail=error.observation()))
        notice = " ".join(e.observation() for e in reply.errors)
        rollout.messages.append(UserMessage(content=f"[agentft] {notice} {FORMAT_HINT}"))
        return
    if message.tool_calls:
        _run_calls(rollout, message, step=number)
        return
    answer = rollout.user(rollout.messages) if rollout.user is not None else None
    if answer is None:
        rollout.status = "completed"
    else:
        rollout.messages.append(UserMessage(content=answer))


def _run_calls(rollout: Rollout, message: AssistantMessage, *, step: int, replayed: bool = False) -> None:
    """Run the calls of the assistant message just appended, each through the guard first."""
    assert rollout.episode is not None
    effects = {spec.name: spec.effect for spec in rollout.tools}
    extra = {spec.name for spec in rollout.extra.specs()} if rollout.extra is not None else set()
    for index, call in enumerate(message.tool_calls):
        call.id = f"call_{step}_{index}"
        name, arguments = call.function.name, dict(call.function.arguments)
        pending = Event(step=step, name=name, call_id=call.id, arguments=arguments, effect=effects.get(name))
        blocks = (
            rollout.guard.check(rollout.messages, rollout.events, rollout.task, pending, snapshot(rollout.episode))
            if rollout.guard
            else []
        )
        observation: Observation
        if blocks:
            observation = Guard.observation(blocks, effects.get(name))
            rollout.blocks.append(
                {
                    "step": step,
                    "call_id": call.id,
                    "tool": name,
                    "arguments": arguments,
                    "replayed": replayed,
                    "rules": [{"rule": b.rule, "description": b.description, "detail": b.detail} for b in blocks],
                }
            )
        elif name in extra:
            observation = rollout.extra.call(name, arguments)  # type: ignore[union-attr]
        else:
            observation = rollout.episode.call_tool(name, arguments)
        rollout.events.append(
            pending.model_copy(
                update={
                    "effect": observation.effect or pending.effect,
                    "ok": observation.ok,
                    "error": observation.error,
                    "detail": None if observation.ok else observation.content,
                    "latency_ms": observation.latency_ms,
                }
            )
        )
        rollout.messages.append(ToolMessage(content=observation.content, tool_call_id=call.id, name=name))
        if observation.error in ("timeout", "sandbox_error"):
            # The sandbox worker is gone with the episode's state: nothing more can be scored.
            rollout.fail(observation.content)
            return


def snapshot(episode: Any) -> bytes | None:
    """The episode's state for the guard's rules, when the episode can give it (``snapshot()``)."""
    snapshot = getattr(episode, "snapshot", None)
    return snapshot() if callable(snapshot) else None


def close_rollout(
    rollout: Rollout, policy: str, *, judge: Guard | None = None, metadata: dict[str, Any] | None = None
) -> Trajectory:
    """The finished episode as a trajectory: scored, then the episode closed (its record is never lost).

    By default the episode's own scorer gives success and compliance. With ``judge`` (served traffic, which
    has no reference outcome) only compliance is judged, by the rules, and ``success`` is None. An episode
    that ended in ``error`` is not scored (``score`` None) and says why in ``metadata["error"]``.
    """
    rollout.usage.wall_seconds = round(time.perf_counter() - rollout.started, 3)
    rollout.usage.model_seconds = round(rollout.usage.model_seconds, 3)
    rollout.usage.tool_seconds = round(rollout.usage.tool_seconds, 3)
    task = rollout.task
    info: dict[str, Any] = {"task_kind": task.kind, "slices": task.slices, **(metadata or {})}
    if rollout.guard is not None or rollout.blocks:
        info.update(guard=rollout.guard is not None, guard_blocks=rollout.blocks)
    if rollout.spotlight:
        info["spotlight"] = rollout.spotlight
    trajectory = Trajectory(
        id=rollout.id,
        env=rollout.env_name,
        task_id=task.id,
        split=task.split,
        policy=policy,
        seed=rollout.seed,
        attempt=rollout.attempt,
        tools=rollout.tools,
        messages=rollout.messages,
        events=rollout.events,
        tokens=rollout.tokens,
        usage=rollout.usage,
        status=rollout.status or "error",
        metadata=info,
    )
    if rollout.status is None:
        trajectory.metadata["error"] = "the episode was closed before it ended"
    elif rollout.error:
        trajectory.metadata["error"] = rollout.error
    if rollout.episode is None:
        return trajectory
    try:
        if trajectory.status != "error":
            if judge is not None:
                violations = judge.violations(trajectory.messages, trajectory.events, task, snapshot(rollout.episode))
                trajectory.score = Score(
                    success=None, compliant=not violations, violations=violations, details={"scored": "compliance only"}
                )
            else:
                trajectory.score = rollout.episode.score(trajectory)
    except Exception as exc:
        trajectory.status = "error"
        trajectory.metadata["error"] = f"scoring failed: {type(exc).__name__}: {exc}"
    finally:
        try:
            rollout.discard()
        except Exception as exc:  # a leak, not a reason to lose the record
            trajectory.metadata["close_error"] = f"{type(exc).__name__}: {exc}"
    return trajectory


def tools_key(tools: Sequence[ToolSpec]) -> str:
    """Rollouts offered the same tools can share one policy call."""
    return json.dumps([spec.model_dump() for spec in tools], sort_keys=True)
