"""``agentft monitor``: is served traffic drifting away from what the model was evaluated on?

``profile(trajectories)`` reduces traces to the rates that move when something changes under a deployed
agent: the tool mix, failed and unknown-tool calls, unreadable turns, guard blocks, violations by rule, prompt
length, personal data seen, and bad feedback. ``monitor(logs, baseline)`` profiles an evaluation run (the
baseline) and the served logs in windows of ``window`` traces in time order, and flags a window whose rate moved
past its threshold (``THRESHOLDS``, stated and overridable):

| metric | flagged when the window ... |
|---|---|
| ``tool_mix`` | differs from the baseline's by a total variation distance over 0.25 |
| ``tool_error_rate``, ``unknown_tool_rate``, ``parse_error_rate``, ``guard_block_rate`` | is 5 points above it |
| ``violation_rate:RULE`` | has 5 points more episodes breaking RULE |
| ``prompt_tokens`` | moved by more than 50% either way |
| ``pii_per_episode`` | doubled (personal data where there was little) |
| ``feedback_bad_rate`` | has over 20% of its labelled traces labelled bad (no baseline: evaluations have no feedback) |

A window of fewer than ``min_episodes`` traces (30) is shown and never flagged. Served logs carry the counts of
what the scrubber replaced (``metadata["pii_replaced"]``); the baseline's are counted by scrubbing its traces.
``write_monitor_report`` renders the windows beside the baseline as an HTML page, and ``agentft serve`` exposes
the same rates over its last 200 traces as ``agentft_drift_*`` gauges in ``/metrics``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentft.errors import UserError
from agentft.trajectory import Trajectory

__all__ = ["THRESHOLDS", "Drift", "MonitorResult", "profile", "monitor", "write_monitor_report", "SCALARS"]

FAILED = {"tool_error", "invalid_args", "timeout", "sandbox_error"}
SCALARS = (
    "tool_error_rate",
    "unknown_tool_rate",
    "parse_error_rate",
    "guard_block_rate",
    "prompt_tokens",
    "pii_per_episode",
    "feedback_bad_rate",
)
THRESHOLDS: dict[str, float] = {
    "tool_mix": 0.25,
    "tool_error_rate": 0.05,
    "unknown_tool_rate": 0.05,
    "parse_error_rate": 0.05,
    "guard_block_rate": 0.05,
    "violation_rate": 0.05,
    "prompt_tokens": 0.5,
    "pii_per_episode": 1.0,
    "feedback_bad_rate": 0.2,
}
"""Absolute rises for rates, relative change for ``prompt_tokens`` and ``pii_per_episode``, a total variation
distance for ``tool_mix``, an absolute level for ``feedback_bad_rate``."""


def _pii_count(trajectory: Trajectory, scrubber: Any) -> int:
    counts = trajectory.metadata.get("pii_replaced")
    if counts is None and scrubber is not None:
        counts = scrubber.scrub_trajectory(trajectory)[1].counts
    return sum((counts or {}).values())


def profile(trajectories: Sequence[Trajectory], *, count_pii: bool = True) -> dict[str, Any]:
    """The rates of a group of traces (see the module docstring); a rate with no denominator is None."""
    scrubber = None
    if count_pii and any("pii_replaced" not in t.metadata for t in trajectories):
        from agentft.pii import Scrubber

        scrubber = Scrubber(key="monitor")
    calls = [e for t in trajectories for e in t.events if e.name]
    turns = sum(t.usage.model_calls for t in trajectories)
    errors = Counter(e.error for t in trajectories for e in t.events if e.error)
    judged = [t for t in trajectories if t.score is not None]
    broken = Counter(rule for t in judged for rule in {v.rule for v in t.score.violations})  # type: ignore[union-attr]
    labels = [t.metadata["feedback"][-1]["label"] for t in trajectories if t.metadata.get("feedback")]
    mix = Counter(e.name for e in calls)

    def rate(count: float, total: float) -> float | None:
        return count / total if total else None

    return {
        "episodes": len(trajectories),
        "tool_calls": len(calls),
        "tool_mix": {name: count / len(calls) for name, count in mix.most_common()} if calls else {},
        "tool_error_rate": rate(sum(errors[k] for k in FAILED), len(calls)),
        "unknown_tool_rate": rate(errors["unknown_tool"], len(calls)),
        "parse_error_rate": rate(errors["parse"], turns),
        "guard_block_rate": rate(errors["policy_violation"], len(calls)),
        "violation_rate": {rule: count / len(judged) for rule, count in sorted(broken.items())} if judged else {},
        "prompt_tokens": rate(sum(t.usage.prompt_tokens for t in trajectories), turns),
        "pii_per_episode": rate(sum(_pii_count(t, scrubber) for t in trajectories), len(trajectories))
        if count_pii
        else None,
        "feedback_bad_rate": rate(labels.count("bad"), len(labels)),
    }


@dataclass
class Drift:
    window: int
    metric: str
    baseline: float | None
    value: float | None
    threshold: float
    why: str


@dataclass
class MonitorResult:
    baseline: dict[str, Any]
    windows: list[dict[str, Any]]
    drifts: list[Drift] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def latest_drifts(self) -> list[Drift]:
        """Drift in the most recent window (what an alert fires on)."""
        last = len(self.windows) - 1
        return [d for d in self.drifts if d.window == last]


def _moved(metric: str, base: float | None, value: float | None, threshold: float) -> str | None:
    if value is None:
        return None
    if metric == "feedback_bad_rate":
        return f"{value:.1%} of labelled traces were labelled bad" if value > threshold else None
    if base is None:
        return None
    if metric in ("prompt_tokens", "pii_per_episode"):
        if base == 0:
            return f"{value:.2f} against none" if value > 0 and metric == "pii_per_episode" else None
        change = (value - base) / base
        up = change > threshold if metric == "pii_per_episode" else abs(change) > threshold
        return f"{change:+.0%} ({base:.1f} -> {value:.1f})" if up else None
    rise = value - base
    return f"+{rise * 100:.1f} points ({base:.1%} -> {value:.1%})" if rise > threshold else None


def _distance(a: dict[str, float], b: dict[str, float]) -> float:
    return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in a.keys() | b.keys())


def monitor(
    logs: Sequence[Trajectory],
    baseline: Sequence[Trajectory],
    *,
    window: int = 200,
    min_episodes: int = 30,
    thresholds: dict[str, float] | None = None,
) -> MonitorResult:
    """Profile ``baseline`` and ``logs`` in windows of ``window`` traces (time order), and flag drift."""
    if window < 1 or min_episodes < 1:
        raise UserError(f"window and min_episodes are at least 1, not {window} and {min_episodes}")
    limits = {**THRESHOLDS, **(thresholds or {})}
    if unknown := sorted(set(limits) - set(THRESHOLDS)):
        raise UserError(f"unknown drift threshold(s) {', '.join(unknown)}; known: {', '.join(THRESHOLDS)}")
    if not baseline:
        raise UserError("the baseline has no traces: point --baseline at an evaluation run")
    ordered = sorted(logs, key=lambda t: t.created_at)
    base = profile(baseline)
    result = MonitorResult(base, [], thresholds=limits)
    for index, start in enumerate(range(0, len(ordered), window)):
        group = ordered[start : start + window]
        found = profile(group)
        found.update(first=group[0].created_at, last=group[-1].created_at)
        result.windows.append(found)
        if len(group) < min_episodes:
            continue
        if found["tool_calls"] and base["tool_calls"]:
            distance = _distance(found["tool_mix"], base["tool_mix"])
            if distance > limits["tool_mix"]:
                why = f"total variation distance {distance:.2f}"
                result.drifts.append(Drift(index, "tool_mix", 0.0, distance, limits["tool_mix"], why))
        for metric in SCALARS:
            why = _moved(metric, base[metric], found[metric], limits[metric])
            if why:
                result.drifts.append(Drift(index, metric, base[metric], found[metric], limits[metric], why))
        for rule in sorted(found["violation_rate"].keys() | base["violation_rate"].keys()):
            was, now = base["violation_rate"].get(rule, 0.0), found["violation_rate"].get(rule, 0.0)
            why = _moved("violation_rate", was, now, limits["violation_rate"])
            if why:
                result.drifts.append(Drift(index, f"violation_rate:{rule}", was, now, limits["violation_rate"], why))
    return result


def write_monitor_report(result: MonitorResult, out: str | os.PathLike[str], title: str = "agentft monitor") -> Path:
    """The windows beside the baseline: a table with the drifted cells marked, and a chart per rate."""
    from agentft.jsonl import atomic_open
    from agentft.report import CSS, _bar_chart, _e, _table

    names = ["baseline", *[f"window {i + 1}" for i in range(len(result.windows))]]
    groups = [result.baseline, *result.windows]
    flagged = {(d.window + 1, d.metric) for d in result.drifts}

    def cell(column: int, metric: str, value: Any) -> str:
        text = "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
        return f"<b>&#9888; {_e(text)}</b>" if (column, metric) in flagged else _e(text)

    rows = [["traces", *[_e(g["episodes"]) for g in groups]]]
    rows += [
        ["from", "", *[_e(g["first"]) for g in result.windows]],
        ["to", "", *[_e(g["last"]) for g in result.windows]],
    ]
    for metric in SCALARS:
        rows.append([_e(metric), *[cell(i, metric, g[metric]) for i, g in enumerate(groups)]])
    rules = sorted({rule for g in groups for rule in g["violation_rate"]})
    for rule in rules:
        key = f"violation_rate:{rule}"
        rows.append([_e(key), *[cell(i, key, g["violation_rate"].get(rule, 0.0)) for i, g in enumerate(groups)]])
    tools = sorted({tool for g in groups for tool in g["tool_mix"]})
    for tool in tools:
        rows.append([_e(f"share of calls: {tool}"), *[cell(-1, "", g["tool_mix"].get(tool, 0.0)) for g in groups]])
    drifts = [f"<li>window {d.window + 1}: <b>{_e(d.metric)}</b> {_e(d.why)}</li>" for d in result.drifts]
    charts = []
    for metric in SCALARS:
        values = [g[metric] for g in groups]
        if any(v is not None for v in values):
            percent = metric.endswith("_rate")
            charts += [f"<h3>{_e(metric)}</h3>", _bar_chart(names, [(metric, values)], percent=percent, label=metric)]
    thresholds = ", ".join(f"{k} {v:g}" for k, v in result.thresholds.items())
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<p>{len(result.windows)} windows of served traffic against the evaluation baseline; thresholds: "
        f"{_e(thresholds)}.</p>",
        "<h2>Drift</h2>",
        f"<ul>{''.join(drifts)}</ul>" if drifts else "<p>no drift past the thresholds</p>",
        "<h2>Rates</h2>",
        _table(["", *[_e(n) for n in names]], rows),
        "<h2>Charts</h2>",
        *charts,
    ]
    html = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(html)
    return path
