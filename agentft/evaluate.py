"""``agentft eval``: score a policy on a split and write ``summary.json``, ``report.html`` and the manifest.

Evaluation is collection plus a summary: ``evaluate`` runs ``collect`` (so a killed evaluation resumes
where it stopped, and a rerun costs nothing), keeps the records of this run's planned episodes, and
reduces them with ``summarize_run``: success, compliance (share of episodes without a policy violation),
pass^k, violations per rule, error counters, cost, and breakdowns by task kind and slice. Success and
compliance carry a Wilson 95% interval over episodes (``success_ci``, ``compliance_ci``; see
``agentft.stats``): at 27 to 90 episodes it is 10 to 35 points wide, as wide as most differences one
hopes to see.

pass^k is tau-bench's reliability metric: the chance that k attempts at a task, drawn without
replacement from the n recorded ones (c of them successful), all succeed: ``C(c, k) / C(n, k)``,
averaged over tasks. pass^1 is the success rate; pass^k falls with k for a policy that only succeeds
sometimes. ``pass_at_k`` (at least one of k succeeds) is given for reference.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Literal, get_args

from agentft.collect import OUTPUT, CollectConfig, collect
from agentft.errors import UserError
from agentft.manifest import write_json_atomic, write_manifest
from agentft.stats import wilson_interval
from agentft.trajectory import EventError, Trajectory, read_trajectories

__all__ = ["pass_hat_k", "pass_at_k", "summarize_run", "task_outcomes", "evaluate",
           "METRICS", "SUMMARY", "REPORT"]

SUMMARY = "summary.json"
REPORT = "report.html"
EVENT_ERRORS: tuple[str, ...] = get_args(EventError)


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


def _success(t: Trajectory) -> bool:
    return bool(t.score is not None and t.score.success)


def _compliant(t: Trajectory) -> bool:
    # An episode that could not be scored (no score, or the runner's compliant=False placeholder) counts as
    # non-compliant: nothing shows it kept to the policy.
    return bool(t.score is not None and t.score.compliant and not t.score.violations)


Metric = Literal["success", "compliance"]
METRICS: tuple[Metric, ...] = ("success", "compliance")
_OUTCOMES: dict[str, Callable[[Trajectory], bool]] = {"success": _success, "compliance": _compliant}


def _rate(part: float, whole: int) -> float:
    return part / whole if whole else 0.0


def _rates(episodes: Sequence[Trajectory]) -> dict[str, Any]:
    """``<metric>_rate`` and its Wilson 95% interval ``<metric>_ci`` (``[low, high]``, per episode)."""
    found: dict[str, Any] = {}
    for metric in METRICS:
        count = sum(map(_OUTCOMES[metric], episodes))
        found[f"{metric}_rate"] = _rate(count, len(episodes))
        found[f"{metric}_ci"] = list(wilson_interval(count, len(episodes)))
    return found


def _group_rates(groups: dict[str, list[Trajectory]]) -> dict[str, dict[str, Any]]:
    return {key: {"episodes": len(group), **_rates(group)} for key, group in sorted(groups.items())}


def task_outcomes(trajectories: Iterable[Trajectory], metric: Metric) -> dict[str, float]:
    """Each task's outcome on ``metric`` (success or compliance), keyed ``env/task_id``, for pairing two runs.

    A task attempted several times gets the mean over its attempts, a value in [0, 1]:
    ``agentft.stats.compare_paired`` bootstraps the difference on these means and counts a task as right
    for McNemar when the mean is at least 0.5 (a majority of attempts, ties counting as right). The env
    is part of the key so that two environments' task ids never pair.
    """
    if metric not in _OUTCOMES:
        raise UserError(f"metric is one of {', '.join(METRICS)}, not {metric!r}")
    attempts: dict[str, list[bool]] = defaultdict(list)
    for t in trajectories:
        attempts[f"{t.env}/{t.task_id}"].append(_OUTCOMES[metric](t))
    return {key: sum(values) / len(values) for key, values in attempts.items()}


def _estimates(per_task: dict[tuple[str, str], list[Trajectory]], k_values: Iterable[int],
               estimator: Callable[[int, int, int], float]) -> dict[str, float | None]:
    """Mean of ``estimator`` over tasks, per k; None for a k that some task has fewer attempts than."""
    found: dict[str, float | None] = {}
    for k in k_values:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if not per_task or any(len(group) < k for group in per_task.values()):
            found[str(k)] = None
            continue
        values = [estimator(len(group), sum(map(_success, group)), k) for group in per_task.values()]
        found[str(k)] = sum(values) / len(values)
    return found


def summarize_run(trajectories: Sequence[Trajectory], k_values: Iterable[int] | None = None) -> dict[str, Any]:
    """Reduce one run's trajectories to the numbers of an evaluation (see the module docstring).

    Attempts are grouped into tasks by (env, task_id). ``pass_hat_k`` / ``pass_at_k`` map ``str(k)`` to
    the mean over tasks, for k = 1 .. the fewest attempts any task has (or ``k_values``; a k larger than
    some task's attempts gives None rather than a biased number).
    """
    trajectories = list(trajectories)
    n = len(trajectories)
    per_task: dict[tuple[str, str], list[Trajectory]] = defaultdict(list)
    for t in trajectories:
        per_task[(t.env, t.task_id)].append(t)
    attempts = [len(group) for group in per_task.values()]
    if k_values is None:
        k_values = range(1, min(attempts) + 1) if attempts else []
    k_values = sorted(set(k_values))

    violations: Counter[str] = Counter()
    episodes_with: Counter[str] = Counter()
    errors: Counter[str] = Counter({kind: 0 for kind in (*EVENT_ERRORS, "episode_error", "max_steps")})
    statuses: Counter[str] = Counter()
    by_kind: dict[str, list[Trajectory]] = defaultdict(list)
    by_slice: dict[str, dict[str, list[Trajectory]]] = defaultdict(lambda: defaultdict(list))
    for t in trajectories:
        rules = [v.rule for v in t.score.violations] if t.score is not None else []
        violations.update(rules)
        episodes_with.update(set(rules))
        errors.update(e.error for e in t.events if e.error)
        statuses[t.status] += 1
        if t.status == "error":
            errors["episode_error"] += 1
        elif t.status == "max_steps":
            errors["max_steps"] += 1
        by_kind[str(t.metadata.get("task_kind") or "default")].append(t)
        for name, value in (t.metadata.get("slices") or {}).items():
            by_slice[str(name)][str(value)].append(t)

    return {
        "episodes": n,
        "tasks": len(per_task),
        "attempts_per_task": {"min": min(attempts, default=0), "max": max(attempts, default=0)},
        **_rates(trajectories),
        "pass_hat_k": _estimates(per_task, k_values, pass_hat_k),
        "pass_at_k": _estimates(per_task, k_values, pass_at_k),
        "violations_by_rule": dict(violations.most_common()),
        "episodes_with_violation_by_rule": dict(episodes_with.most_common()),
        "errors": dict(errors),
        "statuses": dict(sorted(statuses.items())),
        "mean_latency_s": _rate(sum(t.usage.wall_seconds for t in trajectories), n),
        "mean_tokens": _rate(sum(t.usage.prompt_tokens + t.usage.completion_tokens for t in trajectories), n),
        "mean_model_calls": _rate(sum(t.usage.model_calls for t in trajectories), n),
        "by_task_kind": _group_rates(by_kind),
        "by_slice": {name: _group_rates(values) for name, values in sorted(by_slice.items())},
    }


def evaluate(config: CollectConfig, *, k: int | None = None,
             on_start: Callable[[int, int], None] | None = None,
             on_finish: Callable[[list[Trajectory]], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the episodes of ``config``, then write ``summary.json``, ``report.html`` and the manifest.

    ``k`` is the number of attempts per task (default ``config.k``); pass^1 .. pass^k are reported.
    ``on_start`` / ``on_finish`` are ``collect``'s progress callbacks. Returns the summary.
    """
    from agentft.report import write_report

    if k is not None:
        config = replace(config, k=k)
    if config.k < 1:
        raise UserError(f"k (attempts per task) must be at least 1, got {config.k}")
    result = collect(config, on_start=on_start, on_finish=on_finish)
    env_name, wanted = result.env_name, result.ids
    out = result.out
    mine = [t for t in read_trajectories(out / OUTPUT) if t.id in wanted]
    if len(mine) != len(wanted):
        raise UserError(f"{out / OUTPUT} holds {len(mine)} of the {len(wanted)} planned episodes; rerun to resume")
    summary = {
        "env": config.env, "env_name": env_name, "policy": config.policy, "split": config.split,
        "n": config.n, "k": config.k, "seed": config.seed,
        **summarize_run(mine, k_values=range(1, config.k + 1)),
    }
    write_json_atomic(out / SUMMARY, summary)
    name = Path(out).resolve().name or str(out)
    write_report(out / REPORT, [(name, summary, mine)], title=f"agentft eval: {config.policy} on {config.env}")
    write_manifest(out, kind="eval", config=asdict(config),
                   outputs=[out / OUTPUT, out / SUMMARY, out / REPORT], metrics=summary)
    return summary
