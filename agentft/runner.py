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

With ``best_of`` N > 1 each turn is N candidate requests: the policy's own turn (greedy by default) and N-1 more
sampled at ``best_of_temperature`` (keys ``KEY~1`` .. ``KEY~N-1``, so each draws its own sample); the episode steps
with the one ``scorer`` ranks highest, the policy's own on a tie (``agentft.bestof``). Only a continuous policy
can sample the extra candidates; any other gives N replies of its own.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from agentft.bestof import choose, load_scorer
from agentft.envs import Environment, Task
from agentft.errors import UserError
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
    best_of: int = 1
    """Candidate turns per model turn (the policy's own and ``best_of - 1`` samples); ``scorer`` picks one."""
    best_of_temperature: float = 0.7
    """Sampling temperature of the extra candidates."""
    scorer: str | None = None
    """What ranks the candidates when ``best_of`` > 1: ``rules`` or ``rm:DIR`` (``agentft.bestof``)."""
    spotlight: bool = False
    """Show the model every tool result between markers the system prompt calls data, not instructions
    (a defence against prompt injection, ``agentft.attacks``)."""


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
    if config.best_of < 1 or (config.best_of > 1 and config.scorer is None):
        raise UserError(f"best_of must be at least 1 (and > 1 needs a scorer), not {config.best_of}")
    name = policy_name or policy.name
    scorer = load_scorer(config.scorer, env) if config.best_of > 1 and config.scorer else None
    guard = Guard(env) if config.guard else None
    active: dict[str, Rollout] = {}
    """Live episodes by their key in this run (episode ids could repeat if a spec does)."""
    if isinstance(policy, ContinuousPolicy) and policy.continuous:
        driver: ContinuousPolicy | _Lockstep = policy
    else:
        driver = _Lockstep(policy, lambda key: active[owner[key][0]].task)
    owner: dict[str, tuple[str, int]] = {}
    """Policy key of each submitted turn -> (episode key, candidate number)."""
    candidates: dict[str, dict[int, Reply]] = {}
    """best_of: the candidate turns back so far, by episode key and candidate number."""
    switched: dict[str, int] = {}
    """best_of: turns where a candidate other than the first was chosen, by episode key."""
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
                    spotlight=config.spotlight,
                    id=episode_id(env.name, spec.task.id, spec.seed, name, spec.attempt),
                )
                # The episode id is the key (a sampling policy seeds each episode from it, so a resumed run
                # draws the same), made unique if a spec repeats.
                key = rollout.id if rollout.id not in active else f"{rollout.id}#{opened}"
                active[key] = rollout
                opened += 1
            for key, rollout in active.items():
                if rollout.status is None and key not in waiting:
                    for number in range(config.best_of):
                        owner[_candidate(key, number)] = (key, number)
                        temperature = config.best_of_temperature if number else None
                        driver.submit(_candidate(key, number), rollout.view(), rollout.tools, temperature)
                    waiting.add(key)
            for candidate, reply in driver.poll():
                key, number = owner.pop(candidate)
                replies = candidates.setdefault(key, {})
                replies[number] = reply
                if len(replies) < config.best_of:
                    continue
                del candidates[key]
                waiting.discard(key)
                chosen, index = choose(active[key], [replies[i] for i in range(config.best_of)], scorer)
                switched[key] = switched.get(key, 0) + (index > 0)
                step(active[key], chosen)
            finished = []
            for key in [key for key, rollout in active.items() if rollout.status is not None]:
                rollout = active.pop(key)
                metadata = None
                if scorer is not None:
                    chosen_later = switched.pop(key, 0)
                    metadata = {"best_of": {"n": config.best_of, "scorer": scorer.name, "switched": chosen_later}}
                finished.append(close_rollout(rollout, name, metadata=metadata))
                for number in range(config.best_of):
                    driver.release(_candidate(key, number))
            if finished:
                done.extend(finished)
                if on_finish is not None:
                    on_finish(finished)
    finally:
        if guard is not None:
            guard.close()
        if scorer is not None:
            scorer.close()
    return done


def _candidate(key: str, number: int) -> str:
    """The policy key of an episode's candidate ``number`` (the episode's own key for the first)."""
    return f"{key}~{number}" if number else key


class _Lockstep:
    """Drives a policy that only has ``act``: every pending turn goes in one call per tool set (an oracle is told
    each episode's task), and all of them come back together."""

    def __init__(self, policy: Policy, task_of: Callable[[str], Task]) -> None:
        self.policy = policy
        self.task_of = task_of
        self.pending: dict[str, tuple[list[Message], list[ToolSpec]]] = {}

    def submit(
        self, key: str, conversation: list[Message], tools: list[ToolSpec], temperature: float | None = None
    ) -> None:
        self.pending[key] = (conversation, tools)  # ``act`` has no per-turn temperature: the policy's own

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
