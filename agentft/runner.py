"""The runner: many episodes stepped in lockstep, every pending model turn of a step in one policy call.

On a CPU, batching is the difference between minutes and hours (one padded ``generate`` over 16
conversations gives several times the tokens/s of one). Slots are refilled as episodes finish, so the
batch stays full. ``batch_size=1`` is the per-episode sequential loop, kept as the benchmark baseline.

Each episode is a ``Rollout`` of the episode kernel (``agentft.kernel``): the runner only batches the model
calls; what a turn does (tools, guard, simulated user, errors) is the kernel's one ``step``. What the model
does wrong never stops a run; an environment that fails ends that episode with status ``error`` (not
scored, reported apart); the others go on.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from agentft.envs import Environment, Task
from agentft.guard import Guard
from agentft.kernel import Rollout, close_rollout, open_rollout, step, tools_key
from agentft.policies.base import Policy, TaskAwarePolicy
from agentft.trajectory import Trajectory, episode_id

__all__ = ["EpisodeSpec", "RunConfig", "run_episodes", "plan_episodes"]


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
    """Limit on an episode's own model and tool time (not its wait for the rest of its batch); past it the
    episode ends with status ``error`` and is not scored."""
    batch_size: int = 32
    """Episodes stepped together; all their pending model turns go to the policy in one call."""
    guard: bool = False
    """Check every tool call against the environment's rules before it runs; block the ones that break one."""


def plan_episodes(tasks: Sequence[Task], *, k: int = 1, seed: int = 0) -> list[EpisodeSpec]:
    """k attempts of each task (attempt i gets seed ``seed + i``)."""
    return [EpisodeSpec(task, attempt, seed + attempt) for task in tasks for attempt in range(k)]


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
    guard = Guard(env) if config.guard else None
    queue = deque(specs)
    active: list[Rollout] = []
    done: list[Trajectory] = []
    try:
        while queue or active:
            while queue and len(active) < config.batch_size:
                spec = queue.popleft()
                active.append(
                    open_rollout(
                        env,
                        spec.task,
                        seed=spec.seed,
                        attempt=spec.attempt,
                        guard=guard,
                        max_steps=config.max_steps,
                        timeout_s=config.episode_timeout_s,
                        id=episode_id(env.name, spec.task.id, spec.seed, name, spec.attempt),
                    )
                )
            groups: dict[str, list[Rollout]] = {}
            for rollout in active:
                if rollout.status is None:
                    groups.setdefault(tools_key(rollout.tools), []).append(rollout)
            for group in groups.values():
                clock = time.perf_counter()
                conversations = [rollout.messages for rollout in group]
                if isinstance(policy, TaskAwarePolicy):  # an oracle: told each episode's own task
                    replies = policy.act_on_tasks(conversations, group[0].tools, [rollout.task for rollout in group])
                else:
                    replies = policy.act(conversations, group[0].tools)
                share = (time.perf_counter() - clock) / len(group)
                for rollout, reply in zip(group, replies, strict=True):
                    if reply.latency_s is None:
                        reply = reply.model_copy(update={"latency_s": share})
                    step(rollout, reply)
            finished = [close_rollout(rollout, name) for rollout in active if rollout.status is not None]
            active = [rollout for rollout in active if rollout.status is None]
            if finished:
                done.extend(finished)
                if on_finish is not None:
                    on_finish(finished)
    finally:
        if guard is not None:
            guard.close()
    return done
