"""The summary of a run: one typed record for ``collect``, ``eval``, ``report`` and the quickstart.

``summarize_run`` reduces a run's trajectories to success, compliance (share of episodes without a policy
violation), pass^k, violations per rule, guard blocks, error counters, cost and latency, and breakdowns by
task kind and slice. Success and compliance carry a Wilson 95% interval over episodes (``success_ci``,
``compliance_ci``; see ``agentft.stats``): at 27 to 90 episodes it is 10 to 35 points wide, as wide as most
differences one hopes to see.

Rates count only episodes with a verdict. An episode that ended in an infrastructure error (its sandbox
died, its scorer raised, it ran out of its own time) has no score: it is counted in ``infra_errors`` and
``not_scored``, never as the model's failure. An episode whose success is unknown (served traffic) counts
for compliance but not for success.

pass^k is tau-bench's reliability metric: the chance that k attempts at a task, drawn without replacement
from the n recorded ones (c of them successful), all succeed: ``C(c, k) / C(n, k)``, averaged over tasks.
pass^1 is the success rate; pass^k falls with k for a policy that only succeeds sometimes. ``pass_at_k``
(at least one of k succeeds) is given for reference.

Latency is the episode's own: ``mean_latency_s`` is its model and tool time (what a user of the agent would
wait, not the batch's wall time, which is ``mean_wall_s``); ``mean_turn_latency_s`` is model time per turn.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentft.attacks import summarize_attacks
from agentft.stats import wilson_interval
from agentft.trajectory import EventError, Trajectory

__all__ = ["RunSummary", "GroupRates", "summarize_run", "outcome", "pass_hat_k", "pass_at_k", "METRICS", "Metric"]

EVENT_ERRORS: tuple[str, ...] = get_args(EventError)
Metric = Literal["success", "compliance"]
METRICS: tuple[Metric, ...] = ("success", "compliance")


def outcome(trajectory: Trajectory, metric: Metric) -> bool | None:
    """An episode's verdict on ``metric``; None when it has none (not scored, or success unknown)."""
    score = trajectory.score
    if score is None:
        return None
    if metric == "success":
        return score.success
    return bool(score.compliant and not score.violations)


def _check(n: int, c: int, k: int) -> None:
    if n < 1 or not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need n >= 1, 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")


def pass_hat_k(n: int, c: int, k: int) -> float:
    """Unbiased pass^k of one task: P(k attempts drawn from n, c successful, all succeed) = C(c,k)/C(n,k)."""
    _check(n, c, k)
    return math.comb(c, k) / math.comb(n, k)  # math.comb(c, k) is 0 when c < k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one task: P(at least one of k attempts drawn from n succeeds) = 1 - C(n-c,k)/C(n,k)."""
    _check(n, c, k)
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


class GroupRates(BaseModel):
    """Success and compliance of a group of episodes, each over the episodes with a verdict on it."""

    model_config = ConfigDict(extra="ignore")

    episodes: int = 0
    success_rate: float | None = None
    success_ci: list[float] = Field(default_factory=lambda: [0.0, 1.0])
    success_n: int = 0
    """Episodes with a success verdict (the rate's denominator)."""
    compliance_rate: float | None = None
    compliance_ci: list[float] = Field(default_factory=lambda: [0.0, 1.0])
    compliance_n: int = 0
    """Episodes with a compliance verdict."""

    @model_validator(mode="before")
    @classmethod
    def _fill_older(cls, value: Any) -> Any:
        """Summaries written before intervals and verdict counts existed: each episode had a verdict."""
        if isinstance(value, dict):
            value = dict(value)
            for metric in METRICS:
                rate, episodes = value.get(f"{metric}_rate"), value.get("episodes")
                if isinstance(rate, int | float) and isinstance(episodes, int):
                    value.setdefault(f"{metric}_n", episodes)
                    value.setdefault(f"{metric}_ci", list(wilson_interval(round(rate * episodes), episodes)))
        return value

    def rate(self, metric: Metric) -> tuple[float | None, list[float]]:
        return getattr(self, f"{metric}_rate"), getattr(self, f"{metric}_ci")

    @classmethod
    def of(cls, episodes: Sequence[Trajectory]) -> GroupRates:
        found: dict[str, object] = {"episodes": len(episodes)}
        for metric in METRICS:
            verdicts = [v for v in (outcome(t, metric) for t in episodes) if v is not None]
            found[f"{metric}_n"] = len(verdicts)
            found[f"{metric}_rate"] = sum(verdicts) / len(verdicts) if verdicts else None
            found[f"{metric}_ci"] = list(wilson_interval(sum(verdicts), len(verdicts)))
        return cls.model_validate(found)


class RunSummary(GroupRates):
    """Everything a run's report says, as written to ``summary.json`` (see the module docstring)."""

    env: str = ""
    """As given (a built-in name or an import path)."""
    env_name: str = ""
    policy: str = ""
    split: str = ""
    n: int | None = None
    k: int = 1
    seed: int = 0
    guard: bool = False
    spotlight: bool = False
    tasks: int = 0
    attempts_per_task: dict[str, int] = Field(default_factory=dict)
    infra_errors: int = 0
    """Episodes that ended in an infrastructure error: not scored, not counted as the model's failures."""
    not_scored: int = 0
    """Episodes without a success verdict (infrastructure errors, served traffic)."""
    pass_hat_k: dict[str, float | None] = Field(default_factory=dict)
    pass_at_k: dict[str, float | None] = Field(default_factory=dict)
    violations_by_rule: dict[str, int] = Field(default_factory=dict)
    episodes_with_violation_by_rule: dict[str, int] = Field(default_factory=dict)
    guard_blocks_by_rule: dict[str, int] = Field(default_factory=dict)
    """Calls the guard refused, by rule (runs with the guard on)."""
    errors: dict[str, int] = Field(default_factory=dict)
    statuses: dict[str, int] = Field(default_factory=dict)
    mean_latency_s: float = 0.0
    """The episode's own model and tool time, on average."""
    mean_turn_latency_s: float = 0.0
    """Model time per model turn."""
    mean_wall_s: float = 0.0
    """From an episode's start to its end, waiting for the rest of its batch included."""
    mean_tokens: float = 0.0
    mean_model_calls: float = 0.0
    by_task_kind: dict[str, GroupRates] = Field(default_factory=dict)
    by_slice: dict[str, dict[str, GroupRates]] = Field(default_factory=dict)
    best_of: dict[str, Any] | None = None
    """Best-of-N runs: candidates per turn, the scorer, model turns, and the turns where it chose another
    candidate than the first (what the scorer changed)."""
    attacks: dict[str, Any] | None = None
    """Runs under prompt injection (``agentft.attacks``): episodes, injections delivered, goals reached, the
    attack success rate over delivered injections with its interval, by vector, goal and kind, and utility under
    attack (task success of the attacked episodes, ``utility_under_attack``)."""
    augment_dropped: int | None = None
    """Augmented variants dropped because the oracle failed them (``collect --augment``)."""

    def infra_warning(self) -> str | None:
        """A sentence for the console when some episodes were not scored, else None."""
        if not self.infra_errors:
            return None
        return (
            f"{self.infra_errors} of {self.episodes} episodes ended in an infrastructure error (see 'error' in "
            f"their metadata and the report) and were not scored; rates are over the {self.success_n} scored"
        )


def _estimates(
    per_task: dict[tuple[str, str], list[bool]], k_values: Iterable[int], estimator: Callable[[int, int, int], float]
) -> dict[str, float | None]:
    """Mean of ``estimator`` over tasks, per k; None for a k that some task has fewer scored attempts than."""
    found: dict[str, float | None] = {}
    for k in k_values:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if not per_task or any(len(group) < k for group in per_task.values()):
            found[str(k)] = None
            continue
        values = [estimator(len(group), sum(group), k) for group in per_task.values()]
        found[str(k)] = sum(values) / len(values)
    return found


def _mean(total: float, count: int) -> float:
    return total / count if count else 0.0


def summarize_run(
    trajectories: Iterable[Trajectory], k_values: Iterable[int] | None = None, **about: object
) -> RunSummary:
    """Reduce one run's trajectories to its summary; ``about`` fills the descriptive fields (env, policy, ...).

    Attempts are grouped into tasks by (env, task_id). ``pass_hat_k`` / ``pass_at_k`` map ``str(k)`` to the
    mean over tasks, for k = 1 .. the fewest attempts any task has (or ``k_values``; a k larger than some
    task's scored attempts gives None rather than a biased number).
    """
    trajectories = list(trajectories)
    n = len(trajectories)
    tasks: dict[tuple[str, str], list[Trajectory]] = defaultdict(list)
    scored: dict[tuple[str, str], list[bool]] = {}
    for t in trajectories:
        tasks[(t.env, t.task_id)].append(t)
        verdict = outcome(t, "success")
        group = scored.setdefault((t.env, t.task_id), [])
        if verdict is not None:
            group.append(verdict)
    attempts = [len(group) for group in tasks.values()]
    if k_values is None:
        k_values = range(1, min(attempts) + 1) if attempts else []
    k_values = sorted(set(k_values))

    violations: Counter[str] = Counter()
    episodes_with: Counter[str] = Counter()
    blocks: Counter[str] = Counter()
    errors: Counter[str] = Counter({kind: 0 for kind in (*EVENT_ERRORS, "episode_error", "max_steps")})
    statuses: Counter[str] = Counter()
    by_kind: dict[str, list[Trajectory]] = defaultdict(list)
    by_slice: dict[str, dict[str, list[Trajectory]]] = defaultdict(lambda: defaultdict(list))
    best_of: dict[str, Any] | None = None
    for t in trajectories:
        rules = [v.rule for v in t.score.violations] if t.score is not None else []
        violations.update(rules)
        episodes_with.update(set(rules))
        blocks.update(r["rule"] for b in t.metadata.get("guard_blocks") or () for r in b.get("rules", ()))
        errors.update(e.error for e in t.events if e.error)
        statuses[t.status] += 1
        if t.status == "error":
            errors["episode_error"] += 1
        elif t.status == "max_steps":
            errors["max_steps"] += 1
        by_kind[str(t.metadata.get("task_kind") or "default")].append(t)
        if chosen := t.metadata.get("best_of"):
            best_of = best_of or {"n": chosen["n"], "scorer": chosen["scorer"], "turns": 0, "switched": 0}
            best_of["turns"] += t.usage.model_calls
            best_of["switched"] += chosen["switched"]
        for name, value in (t.metadata.get("slices") or {}).items():
            by_slice[str(name)][str(value)].append(t)

    rates = GroupRates.of(trajectories)
    calls = sum(t.usage.model_calls for t in trajectories)
    return RunSummary(
        **{**rates.model_dump(), **about},
        tasks=len(tasks),
        attempts_per_task={"min": min(attempts, default=0), "max": max(attempts, default=0)},
        infra_errors=statuses["error"],
        not_scored=n - rates.success_n,
        pass_hat_k=_estimates(scored, k_values, pass_hat_k),
        pass_at_k=_estimates(scored, k_values, pass_at_k),
        violations_by_rule=dict(violations.most_common()),
        episodes_with_violation_by_rule=dict(episodes_with.most_common()),
        guard_blocks_by_rule=dict(blocks.most_common()),
        errors=dict(errors),
        statuses=dict(sorted(statuses.items())),
        mean_latency_s=_mean(sum(t.usage.own_seconds for t in trajectories), n),
        mean_turn_latency_s=_mean(sum(t.usage.model_seconds for t in trajectories), calls),
        mean_wall_s=_mean(sum(t.usage.wall_seconds for t in trajectories), n),
        mean_tokens=_mean(sum(t.usage.prompt_tokens + t.usage.completion_tokens for t in trajectories), n),
        mean_model_calls=_mean(calls, n),
        best_of=best_of,
        attacks=summarize_attacks(trajectories),
        by_task_kind={kind: GroupRates.of(group) for kind, group in sorted(by_kind.items())},
        by_slice={
            name: {value: GroupRates.of(group) for value, group in sorted(values.items())}
            for name, values in sorted(by_slice.items())
        },
    )
