"""The runner: many episodes at once, their model turns batched.

On a CPU, batching is the difference between minutes and hours (one forward pass over 16 conversations gives
several times the tokens/s of one). Slots are refilled as episodes finish, so the batch stays full.
``batch_size=1`` is the per-episode sequential loop, kept as the benchmark baseline.

Each episode is a ``Rollout`` of the episode kernel (``agentft.kernel``): the runner only schedules the model
calls; what a turn does (tools, guard, simulated user, errors) is the kernel's one ``step``. A continuous policy
(``HFPolicy`` with its engine) takes each episode's next turn as soon as the episode needs it, and hands back
turns as they finish, so no episode waits for the slowest generation of a batch; any other policy is driven in
lockstep (every pending turn in one ``act`` call). What the model does wrong never stops a run; an environment
that fails ends that episode with status ``error`` (not scored, reported apart); the others go on.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from agentft.envs import Environment, Task
from agentft.guard import Guard
from agentft.kernel import Rollout, close_rollout, open_rollout, step, tools_key
from agentft.messages import Message
from agentft.policies.base import ContinuousPolicy, Policy, Reply, TaskAwarePolicy
from agentft.tools import ToolSpec
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
    active: dict[str, Rollout] = {}
    """Live episodes by their key in this run (episode ids could repeat if a spec does)."""
    if isinstance(policy, ContinuousPolicy) and policy.continuous:
        driver: ContinuousPolicy | _Lockstep = policy
    else:
        driver = _Lockstep(policy, lambda key: active[key].task)
    queue = deque(specs)
    opened = 0
    waiting: set[str] = set()
    """Episodes whose turn is with the policy."""
    done: list[Trajectory] = []
    try:
        while queue or active:
            while queue and len(active) < config.batch_size:
                spec = queue.popleft()
                rollout = open_rollout(
                    env,
                    spec.task,
                    seed=spec.seed,
                    attempt=spec.attempt,
                    guard=guard,
                    max_steps=config.max_steps,
                    timeout_s=config.episode_timeout_s,
                    id=episode_id(env.name, spec.task.id, spec.seed, name, spec.attempt),
                )
                # The episode id is the key (a sampling policy seeds each episode from it, so a resumed run
                # draws the same), made unique if a spec repeats.
                key = rollout.id if rollout.id not in active else f"{rollout.id}#{opened}"
                active[key] = rollout
                opened += 1
            for key, rollout in active.items():
                if rollout.status is None and key not in waiting:
                    driver.submit(key, rollout.messages, rollout.tools)
                    waiting.add(key)
            for key, reply in driver.poll():
                waiting.discard(key)
                step(active[key], reply)
            finished = []
            for key in [key for key, rollout in active.items() if rollout.status is not None]:
                finished.append(close_rollout(active.pop(key), name))
                driver.release(key)
            if finished:
                done.extend(finished)
                if on_finish is not None:
                    on_finish(finished)
    finally:
        if guard is not None:
            guard.close()
    return done


class _Lockstep:
    """Drives a policy that only has ``act``: every pending turn goes in one call per tool set (an oracle is told
    each episode's task), and all of them come back together."""

    def __init__(self, policy: Policy, task_of: Callable[[str], Task]) -> None:
        self.policy = policy
        self.task_of = task_of
        self.pending: dict[str, tuple[list[Message], list[ToolSpec]]] = {}

    def submit(self, key: str, conversation: list[Message], tools: list[ToolSpec]) -> None:
        self.pending[key] = (conversation, tools)

    def poll(self) -> list[tuple[str, Reply]]:
        groups: dict[str, list[str]] = {}
        for key, (_, tools) in self.pending.items():
            groups.setdefault(tools_key(tools), []).append(key)
        replies: list[tuple[str, Reply]] = []
        for keys in groups.values():
            conversations = [self.pending[key][0] for key in keys]
            tools = self.pending[keys[0]][1]
            clock = time.perf_counter()
            if isinstance(self.policy, TaskAwarePolicy):  # an oracle: told each episode's own task
                group = self.policy.act_on_tasks(conversations, tools, [self.task_of(key) for key in keys])
            else:
                group = self.policy.act(conversations, tools)
            share = (time.perf_counter() - clock) / len(keys)
            for key, reply in zip(keys, group, strict=True):
                if reply.latency_s is None:
                    reply = reply.model_copy(update={"latency_s": share})
                replies.append((key, reply))
        self.pending.clear()
        return replies

    def release(self, key: str) -> None:
        pass
