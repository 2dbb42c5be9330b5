"""The runner: many episodes stepped in lockstep, every pending model turn of a step in one policy call.

On a CPU, batching is the difference between minutes and hours (one padded ``generate`` over 16
conversations gives several times the tokens/s of one). Slots are refilled as episodes finish, so the
batch stays full. ``batch_size=1`` is the per-episode sequential loop, kept as the benchmark baseline.

What the model does wrong never stops a run: an unparseable turn is shown back to the model as an error
observation (and counted as a ``parse`` event), a failing tool call likewise. An environment that
raises ends that episode with status ``error``; the others go on.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentft.envs import Environment, Episode, Task
from agentft.errors import UserError
from agentft.messages import AssistantMessage, Message, SystemMessage, ToolMessage, UserMessage
from agentft.policies.base import Policy
from agentft.trajectory import Event, Score, Trajectory, Usage, episode_id

__all__ = ["EpisodeSpec", "RunConfig", "run_episodes", "plan_episodes"]

FORMAT_HINT = "Reply again: call a tool with valid <tool_call> JSON, or answer the user."


@dataclass(frozen=True)
class EpisodeSpec:
    task: Task
    attempt: int = 0
    seed: int = 0


@dataclass
class RunConfig:
    max_steps: int = 20
    """Most model turns in one episode; past it the episode ends with status ``max_steps``."""
    episode_timeout_s: float = 600.0
    """Wall-clock limit per episode; past it the episode ends with status ``error``."""
    batch_size: int = 32
    """Episodes stepped together; all their pending model turns go to the policy in one call."""


def plan_episodes(tasks: Sequence[Task], *, k: int = 1, seed: int = 0) -> list[EpisodeSpec]:
    """k attempts of each task (attempt i gets seed ``seed + i``)."""
    return [EpisodeSpec(task, attempt, seed + attempt) for task in tasks for attempt in range(k)]


@dataclass
class _Live:
    spec: EpisodeSpec
    id: str
    episode: Episode | None
    messages: list[Message]
    events: list[Event] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    steps: int = 0
    started: float = field(default_factory=time.perf_counter)
    status: str | None = None
    error: str | None = None


def _start(env: Environment, policy_name: str, spec: EpisodeSpec) -> _Live:
    key = episode_id(env.name, spec.task.id, spec.seed, policy_name, spec.attempt)
    try:
        episode = env.start(spec.task, seed=spec.seed)
        messages: list[Message] = [SystemMessage(content=episode.system_prompt)]
        live = _Live(spec, key, episode, messages)
        opening = episode.user_turn(messages)
        if not opening:
            raise UserError(f"the user simulator of {env.name} gave no opening message for task {spec.task.id}")
        messages.append(UserMessage(content=opening))
    except Exception as exc:
        live = _Live(spec, key, None, [], status="error", error=f"start failed: {type(exc).__name__}: {exc}")
    return live


def _apply(live: _Live, reply: Any) -> None:
    """Add the model's turn and whatever answers it (tool results, an error notice, the user)."""
    assert live.episode is not None
    step = live.steps
    live.steps += 1
    live.usage.model_calls += 1
    live.usage.prompt_tokens += reply.prompt_tokens
    live.usage.completion_tokens += reply.completion_tokens
    message: AssistantMessage = reply.message.model_copy(deep=True)
    for index, call in enumerate(message.tool_calls):
        call.id = f"call_{step}_{index}"
    live.messages.append(message)
    if reply.errors:
        for error in reply.errors:
            live.events.append(Event(step=step, ok=False, error="parse", detail=error.observation()))
        notice = " ".join(e.observation() for e in reply.errors)
        live.messages.append(UserMessage(content=f"[agentft] {notice} {FORMAT_HINT}"))
        return
    if message.tool_calls:
        for call in message.tool_calls:
            observation = live.episode.call_tool(call.function.name, dict(call.function.arguments))
            live.events.append(Event(
                step=step, name=call.function.name, call_id=call.id, arguments=call.function.arguments,
                effect=observation.effect, ok=observation.ok, error=observation.error,
                detail=None if observation.ok else observation.content, latency_ms=observation.latency_ms))
            live.messages.append(ToolMessage(content=observation.content, tool_call_id=call.id,
                                             name=call.function.name))
            if observation.error in ("timeout", "sandbox_error"):
                # The sandbox worker is gone with the episode's state: nothing more can be scored.
                live.status, live.error = "error", observation.content
                return
        return
    answer = live.episode.user_turn(live.messages)
    if answer is None:
        live.status = "completed"
    else:
        live.messages.append(UserMessage(content=answer))


def _finish(env: Environment, policy_name: str, live: _Live) -> Trajectory:
    live.usage.wall_seconds = round(time.perf_counter() - live.started, 3)
    metadata: dict[str, Any] = {"task_kind": live.spec.task.kind, "slices": live.spec.task.slices}
    if live.error:
        metadata["error"] = live.error
    trajectory = Trajectory(
        id=live.id, env=env.name, task_id=live.spec.task.id, split=live.spec.task.split, policy=policy_name,
        seed=live.spec.seed, attempt=live.spec.attempt, tools=live.episode.tools if live.episode else [],
        messages=live.messages, events=live.events, usage=live.usage, status=live.status or "error",
        metadata=metadata,
    )
    if live.episode is not None:
        try:
            trajectory.score = live.episode.score(trajectory)
        except Exception as exc:
            trajectory.status = "error"
            trajectory.metadata["error"] = f"scoring failed: {type(exc).__name__}: {exc}"
            trajectory.score = Score(success=False, compliant=False)
        finally:
            try:
                live.episode.close()
            except Exception as exc:  # a leak, not a reason to lose the record
                trajectory.metadata["close_error"] = f"{type(exc).__name__}: {exc}"
    else:
        trajectory.score = Score(success=False, compliant=False)
    return trajectory


def run_episodes(
    env: Environment,
    policy: Policy,
    specs: Iterable[EpisodeSpec],
    config: RunConfig | None = None,
    *,
    on_finish: Callable[[list[Trajectory]], None] | None = None,
    policy_name: str | None = None,
) -> list[Trajectory]:
    """Run every episode to the end; returns the trajectories in the order they finished.

    ``on_finish`` is called after every step with the episodes that ended in it (to write them to disk
    as they come). ``policy_name`` (default ``policy.name``) goes into episode ids and records.
    """
    config = config or RunConfig()
    name = policy_name or policy.name
    queue = deque(specs)
    active: list[_Live] = []
    done: list[Trajectory] = []
    while queue or active:
        while queue and len(active) < config.batch_size:
            active.append(_start(env, name, queue.popleft()))
        ready = [live for live in active if live.status is None]
        groups: dict[str, list[_Live]] = {}
        for live in ready:
            assert live.episode is not None
            groups.setdefault(json.dumps(live.episode.tools, sort_keys=True), []).append(live)
        for group in groups.values():
            replies = policy.act([live.messages for live in group], group[0].episode.tools)
            for live, reply in zip(group, replies, strict=True):
                try:
                    _apply(live, reply)
                except Exception as exc:
                    live.status, live.error = "error", f"environment failed: {type(exc).__name__}: {exc}"
                if live.status is None and live.steps >= config.max_steps:
                    live.status = "max_steps"
                if live.status is None and time.perf_counter() - live.started > config.episode_timeout_s:
                    live.status, live.error = "error", f"episode timeout ({config.episode_timeout_s:g} s)"
        finished = [_finish(env, name, live) for live in active if live.status is not None]
        active = [live for live in active if live.status is None]
        if finished:
            done.extend(finished)
            if on_finish is not None:
                on_finish(finished)
    return done
