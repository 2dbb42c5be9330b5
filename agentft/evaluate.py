"""``agentft eval``: score a policy on a split and write ``summary.json``, ``report.html`` and the manifest.

Evaluation is collection plus a report: ``evaluate`` runs ``collect`` (so a killed evaluation resumes
where it stopped, and a rerun costs nothing) and writes the run's summary (``agentft.summary.RunSummary``:
success and compliance with Wilson 95% intervals, pass^k, violations per rule, guard blocks, errors apart
from the model's failures, latency) and an HTML report. ``task_outcomes`` gives each task's outcome for
pairing two runs (``agentft report A B``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from pathlib import Path

from agentft.collect import OUTPUT, CollectConfig, collect
from agentft.errors import UserError
from agentft.manifest import write_json_atomic, write_manifest
from agentft.summary import METRICS, Metric, RunSummary, outcome, pass_at_k, pass_hat_k, summarize_run
from agentft.trajectory import Trajectory

__all__ = [
    "pass_hat_k",
    "pass_at_k",
    "summarize_run",
    "task_outcomes",
    "evaluate",
    "RunSummary",
    "METRICS",
    "SUMMARY",
    "REPORT",
]

SUMMARY = "summary.json"
REPORT = "report.html"


def task_outcomes(trajectories: Iterable[Trajectory], metric: Metric) -> dict[str, float]:
    """Each task's outcome on ``metric`` (success or compliance), keyed ``env/task_id``, for pairing two runs.

    A task attempted several times gets the mean over its attempts with a verdict, a value in [0, 1]; a task
    with none (every attempt unscored) is left out. ``agentft.stats.compare_paired`` bootstraps the
    difference on these means and counts a task as right for McNemar when the mean is at least 0.5 (a
    majority of attempts, ties counting as right). The env is part of the key so that two environments'
    task ids never pair.
    """
    if metric not in METRICS:
        raise UserError(f"metric is one of {', '.join(METRICS)}, not {metric!r}")
    attempts: dict[str, list[bool]] = defaultdict(list)
    for t in trajectories:
        verdict = outcome(t, metric)
        if verdict is not None:
            attempts[f"{t.env}/{t.task_id}"].append(verdict)
    return {key: sum(values) / len(values) for key, values in attempts.items()}


def evaluate(
    config: CollectConfig,
    *,
    k: int | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_finish: Callable[[list[Trajectory]], None] | None = None,
) -> RunSummary:
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
    out, summary = result.out, result.summary
    if summary.episodes != result.planned:
        raise UserError(
            f"{out / OUTPUT} holds {summary.episodes} of the {result.planned} planned episodes; rerun to resume"
        )
    write_json_atomic(out / SUMMARY, summary.model_dump(mode="json"))
    name = Path(out).resolve().name or str(out)
    write_report(
        out / REPORT, [(name, summary, result.trajectories)], title=f"agentft eval: {config.policy} on {config.env}"
    )
    write_manifest(
        out,
        kind="eval",
        config=asdict(config),
        outputs=[out / OUTPUT, out / SUMMARY, out / REPORT],
        metrics=summary.model_dump(mode="json"),
    )
    return summary
