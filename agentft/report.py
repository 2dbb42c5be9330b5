"""Evaluation reports: one self-contained HTML page for one run or several side by side (base vs tuned).

The page has inline CSS and inline SVG charts only: no JavaScript, no fonts or images to fetch, so it
opens from a file, an artifact store or an email attachment the same. Every piece of text that comes
from a run (names, rules, task ids, and above all model output) is HTML-escaped: model output is
untrusted.

Success and compliance are shown with their Wilson 95% interval; a page with two or more runs that kept
their trajectories also compares each later run with the first, task by task (``compare_runs``).
"""

from __future__ import annotations

import html
import json
import os
import warnings
from collections.abc import Callable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agentft.errors import UserError
from agentft.evaluate import METRICS, task_outcomes
from agentft.jsonl import ReadReport, atomic_open
from agentft.stats import PairedComparison, compare_paired, format_rate
from agentft.summary import GroupRates, RunSummary
from agentft.trajectory import Trajectory, read_trajectories

__all__ = ["RunData", "render_report", "write_report", "load_run", "load_runs", "compare_runs"]

RunData = tuple[str, RunSummary, list[Trajectory] | None]
"""(run name, its summary, the run's trajectories or None)."""

PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d", "#bab0ac")
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right;vertical-align:top}
th:first-child,td:first-child,td.text{text-align:left}
th{background:#f4f4f4}.muted{color:#777}
pre{white-space:pre-wrap;word-break:break-word;max-width:560px;margin:0;font-size:.8rem}
svg text{font-size:12px;fill:#222}.swatch{display:inline-block;width:.8em;height:.8em;margin:0 .3em 0 1em}
"""
MAX_MESSAGE_CHARS = 1200


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _with_interval(group: GroupRates, metric: str) -> str:
    """``74.1% (55.3–86.8)``, or n/a when no episode has a verdict."""
    rate, interval = group.rate(metric)  # type: ignore[arg-type]
    return "n/a" if rate is None else _e(format_rate(rate, interval))


def _group_cells(group: GroupRates | None) -> list[str]:
    return [_with_interval(group, "success"), _e(group.episodes)] if group else ["n/a", "0"]


def _groups_table(runs: Sequence[RunData], column: str, rows: Sequence[tuple[str, Sequence[GroupRates | None]]]) -> str:
    """Success with its interval, and episodes, per group and run; each row holds one group per run."""
    header = [column]
    for name, _, _ in runs:
        header += [f"{_e(name)}: success (95% CI)", f"{_e(name)}: episodes"]
    return _table(header, [[_e(label), *chain.from_iterable(map(_group_cells, groups))] for label, groups in rows])


def _color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1) -> str:
    """A table from already-escaped cells; the first ``text_columns`` are left-aligned."""
    head = "".join(f"<th>{cell}</th>" for cell in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=text' if i < text_columns else ''}>{cell}</td>" for i, cell in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _legend(names: Sequence[str]) -> str:
    return (
        "<p>"
        + "".join(
            f'<span class=swatch style="background:{_color(i)}"></span>{_e(name)}' for i, name in enumerate(names)
        )
        + "</p>"
    )


def _bar_chart(
    categories: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], *, percent: bool, label: str
) -> str:
    """Horizontal grouped bars as inline SVG: one group per category, one bar per series (run)."""
    if not categories or not series:
        return "<p class=muted>nothing to show</p>"
    label_w, plot_w, value_w, bar_h, gap = 190, 440, 70, 14, 12
    values = [v for _, row in series for v in row if v is not None]
    top = 1.0 if percent else max(values, default=0) or 1.0
    group_h = len(series) * (bar_h + 2) + gap
    height = len(categories) * group_h + 4
    parts = [
        f'<svg role="img" aria-label="{_e(label)}" width="{label_w + plot_w + value_w}" height="{height}" '
        f'viewBox="0 0 {label_w + plot_w + value_w} {height}"><title>{_e(label)}</title>'
    ]
    for i, category in enumerate(categories):
        y0 = i * group_h + 2
        short = category if len(category) <= 28 else category[:27] + "\u2026"
        middle = y0 + len(series) * (bar_h + 2) / 2 + 4
        parts.append(
            f'<text x="{label_w - 8}" y="{middle:.1f}" text-anchor="end">{_e(short)}'
            f"<title>{_e(category)}</title></text>"
        )
        for j, (name, row) in enumerate(series):
            value = row[i] if i < len(row) else None
            y = y0 + j * (bar_h + 2)
            width = 0.0 if value is None else plot_w * max(0.0, value) / top
            text = (_pct(value) if percent else _num(value, 0)) if value is not None else "n/a"
            parts.append(
                f'<rect x="{label_w}" y="{y}" width="{width:.1f}" height="{bar_h}" fill="{_color(j)}">'
                f"<title>{_e(name)}: {_e(text)}</title></rect>"
            )
            parts.append(f'<text x="{label_w + width + 4:.1f}" y="{y + bar_h - 3}">{_e(text)}</text>')
    parts.append(f'<line x1="{label_w}" y1="0" x2="{label_w}" y2="{height}" stroke="#999"/></svg>')
    return "".join(parts)


def _k_values(summaries: Sequence[RunSummary]) -> list[str]:
    return sorted({k for s in summaries for k in s.pass_hat_k}, key=int)


def _headline(runs: Sequence[RunData]) -> str:
    ks = _k_values([s for _, s, _ in runs])
    header = [
        "run",
        "env",
        "policy",
        "split",
        "episodes",
        "tasks",
        "success (95% CI)",
        "compliance (95% CI)",
        *[f"pass^{k}" for k in ks],
        "not scored (infra errors)",
        "guard blocks",
        "own time per episode (s)",
        "model time per turn (s)",
        "mean tokens",
        "mean model calls",
    ]
    rows = []
    for name, s, _ in runs:
        rows.append(
            [
                _e(name),
                _e(s.env),
                _e(s.policy),
                _e(s.split),
                _e(s.episodes),
                _e(s.tasks),
                _with_interval(s, "success"),
                _with_interval(s, "compliance"),
                *[_pct(s.pass_hat_k.get(k)) for k in ks],
                _e(f"{s.not_scored} ({s.infra_errors})"),
                _e(sum(s.guard_blocks_by_rule.values())),
                _num(s.mean_latency_s, 3),
                _num(s.mean_turn_latency_s, 3),
                _num(s.mean_tokens, 0),
                _num(s.mean_model_calls, 1),
            ]
        )
    return _table(header, rows, text_columns=4)


def _union(runs: Sequence[RunData], field: str) -> list[str]:
    keys: dict[str, None] = {}
    for _, s, _ in runs:
        keys.update(dict.fromkeys(getattr(s, field)))
    return list(keys)


def _charts(runs: Sequence[RunData]) -> str:
    names = [name for name, _, _ in runs]
    ks = _k_values([s for _, s, _ in runs])
    headline = ["success", "compliance", *[f"pass^{k}" for k in ks]]
    parts = [
        "<h2>Success, compliance and pass^k</h2>",
        _legend(names),
        _bar_chart(
            headline,
            [(name, [s.success_rate, s.compliance_rate, *[s.pass_hat_k.get(k) for k in ks]]) for name, s, _ in runs],
            percent=True,
            label="success, compliance and pass^k per run",
        ),
    ]
    rules = _union(runs, "violations_by_rule")
    parts += ["<h2>Policy violations by rule</h2>"]
    if rules:
        parts += [
            _legend(names),
            _bar_chart(
                rules,
                [(name, [s.violations_by_rule.get(r, 0) for r in rules]) for name, s, _ in runs],
                percent=False,
                label="violations by rule per run",
            ),
            _table(
                ["rule", *[f"{_e(n)}: violations / episodes" for n in names]],
                [
                    [
                        _e(r),
                        *[
                            f"{s.violations_by_rule.get(r, 0)} / {s.episodes_with_violation_by_rule.get(r, 0)}"
                            for _, s, _ in runs
                        ],
                    ]
                    for r in rules
                ],
            ),
        ]
    else:
        parts.append("<p class=muted>no violations</p>")
    blocked = _union(runs, "guard_blocks_by_rule")
    if blocked:
        parts += [
            "<h2>Calls blocked by the guard, by rule</h2>",
            _table(
                ["rule", *[_e(n) for n in names]],
                [[_e(r), *[_e(s.guard_blocks_by_rule.get(r, 0)) for _, s, _ in runs]] for r in blocked],
            ),
        ]
    parts.append(_attacks(runs))
    kinds = _union(runs, "by_task_kind")
    parts += [
        "<h2>Success by task kind</h2>",
        _legend(names),
        _bar_chart(
            kinds,
            [(name, [_rate(s.by_task_kind.get(kind)) for kind in kinds]) for name, s, _ in runs],
            percent=True,
            label="success per task kind per run",
        ),
        _groups_table(runs, "task kind", [(kind, [s.by_task_kind.get(kind) for _, s, _ in runs]) for kind in kinds]),
    ]
    return "".join(parts)


def _rate(group: GroupRates | None) -> float | None:
    return group.success_rate if group is not None else None


def _errors(runs: Sequence[RunData]) -> str:
    kinds = _union(runs, "errors")
    if not kinds:
        return "<h2>Errors</h2><p class=muted>no error counters</p>"
    rows = [[_e(kind), *[_e(s.errors.get(kind, 0)) for _, s, _ in runs]] for kind in kinds]
    statuses = _union(runs, "statuses")
    status_rows = [[_e(f"status: {st}"), *[_e(s.statuses.get(st, 0)) for _, s, _ in runs]] for st in statuses]
    note = (
        "<p>Episodes with status <code>error</code> failed for reasons outside the model (the sandbox, the "
        "scorer, the episode's own time limit): they are not scored and not counted in the rates.</p>"
    )
    return "<h2>Errors by kind</h2>" + note + _table(["kind", *[_e(name) for name, _, _ in runs]], rows + status_rows)


def _slices(runs: Sequence[RunData]) -> str:
    names = _union(runs, "by_slice")
    if not names:
        return ""
    parts = ["<h2>Success by slice</h2>"]
    for slice_name in names:
        values: dict[str, None] = {}
        for _, s, _ in runs:
            values.update(dict.fromkeys(s.by_slice.get(slice_name) or {}))
        parts.append(
            _groups_table(
                runs,
                "slice",
                [
                    (f"{slice_name} = {value}", [(s.by_slice.get(slice_name) or {}).get(value) for _, s, _ in runs])
                    for value in values
                ],
            )
        )
    return "".join(parts)


def _episodes(run: RunData) -> list[Trajectory]:
    name, _, trajectories = run
    if trajectories is None:
        raise UserError(
            f"run {name!r} has no trajectories.jsonl, and a paired comparison needs each task's "
            "outcome: point at the directory `agentft eval --out` wrote"
        )
    return trajectories


def compare_runs(a: RunData, b: RunData) -> list[PairedComparison]:
    """Run ``b`` against run ``a`` on success and on compliance, paired on the tasks both ran.

    Each task's outcome is the mean over its attempts (see ``agentft.evaluate.task_outcomes``).
    """
    a_episodes, b_episodes = _episodes(a), _episodes(b)
    comparisons = []
    for metric in METRICS:
        a_tasks, b_tasks = task_outcomes(a_episodes, metric), task_outcomes(b_episodes, metric)
        if not a_tasks.keys() & b_tasks.keys():
            raise UserError(
                f"runs {a[0]!r} and {b[0]!r} have no task in common, so there is nothing to pair: "
                "evaluate both on the same environment and split"
            )
        comparisons.append(compare_paired(a_tasks, b_tasks, metric=metric))
    return comparisons


def _paired(runs: Sequence[RunData]) -> str:
    kept = [run for run in runs if run[2] is not None]
    if len(kept) < 2:
        return ""
    base = kept[0]
    parts = [
        "<h2>Paired comparison</h2>",
        f"<p class=muted>Each run (B) against {_e(base[0])} (A), on the tasks both ran. A task attempted "
        "several times counts by its mean over attempts (majority for the counts). p: exact McNemar test on "
        "the tasks only one run got right; significant when p &lt; 0.05. The interval of B − A is a "
        "bootstrap over tasks.</p>",
    ]
    for other in kept[1:]:
        parts.append(f"<h3>{_e(other[0])} (B) vs {_e(base[0])} (A)</h3>")
        try:
            comparisons = compare_runs(base, other)
        except UserError as exc:
            parts.append(f"<p class=muted>{_e(exc)}</p>")
            continue
        first = comparisons[0]
        parts.append(f"<p>{first.n} tasks in common; {first.only_in_a} only in A, {first.only_in_b} only in B.</p>")
        labels = list(first.formatted())
        parts.append(
            _table(
                ["metric", *map(_e, labels)],
                [[_e(c.metric), *[_e(c.formatted()[label]) for label in labels]] for c in comparisons],
                text_columns=1,
            )
        )
    return "".join(parts)


def _last_assistant(t: Trajectory) -> str:
    for message in reversed(t.messages):
        if message.role == "assistant":
            calls = [
                f"{c.function.name}({json.dumps(c.function.arguments, ensure_ascii=False)})"
                for c in getattr(message, "tool_calls", None) or []
            ]
            text = "\n".join(part for part in [message.content or "", *calls] if part)
            return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "\u2026"
    return ""


def _failures(runs: Sequence[RunData], limit: int) -> str:
    parts = []
    for name, _, trajectories in runs:
        if trajectories is None:
            continue
        failed = [
            t
            for t in trajectories
            if t.score is None or t.score.success is False or t.score.violations or t.status != "completed"
        ]
        # Violations first, then one attempt per task before the next attempts: a varied sample.
        failed.sort(key=lambda t: (not (t.score and t.score.violations), t.attempt, t.task_id, t.id))
        parts.append(
            f"<h3>{_e(name)}: {len(failed)} failed or non-compliant episodes"
            f"{f', first {limit} shown' if len(failed) > limit else ''}</h3>"
        )
        if not failed:
            continue
        rows = []
        for t in failed[:limit]:
            violations = "<br>".join(f"{_e(v.rule)}: {_e(v.detail)}" for v in (t.score.violations if t.score else []))
            note = t.metadata.get("error")
            status = _e(t.status) + (f"<br><span class=muted>{_e(note)}</span>" if note else "")
            rows.append(
                [
                    _e(t.task_id),
                    _e(t.attempt),
                    _e(t.metadata.get("task_kind", "")),
                    status,
                    violations or "<span class=muted>none</span>",
                    f"<pre>{_e(_last_assistant(t))}</pre>",
                ]
            )
        parts.append(
            _table(["task", "attempt", "kind", "status", "violations", "last assistant message"], rows, text_columns=6)
        )
    return "<h2>Sample of failed episodes</h2>" + "".join(parts) if parts else ""


def _attack_cell(group: dict[str, Any] | None) -> str:
    if not group:
        return "-"
    if group["attack_success_rate"] is None:
        return _e(f"n/a (0 of {group['episodes']} delivered)")
    rate = format_rate(group["attack_success_rate"], group["attack_success_ci"])
    return _e(f"{rate}: {group['succeeded']} of {group['delivered']} delivered")


def _attacks(runs: Sequence[RunData]) -> str:
    """Runs under prompt injection: attack success over delivered injections, overall, by vector and by goal."""
    attacked = [(name, s.attacks) for name, s, _ in runs if s.attacks]
    if not attacked:
        return ""
    rows = [["all injections", *[_attack_cell(a) for _, a in attacked]]]
    hijacks = [_e(f"{a['hijacked']} of {a['delivered']}") if "hijacked" in a else "-" for _, a in attacked]
    rows.append(["acted on the attacker's target (any call naming it)", *hijacks])
    for field in ("vector", "goal"):
        keys = list(dict.fromkeys(k for _, a in attacked for k in a[f"by_{field}"]))
        rows += [[f"{field}: {k}", *[_attack_cell(a[f"by_{field}"].get(k)) for _, a in attacked]] for k in keys]
    utility = ["utility under attack (success)", *[_with_interval(s, "success") for _, s, _ in runs if s.attacks]]
    return "<h2>Prompt injection: attack success</h2>" + _table(
        ["", *[_e(name) for name, _ in attacked]], [*rows, utility]
    )


def render_report(runs: Sequence[RunData], title: str = "agentft evaluation report", *, max_failures: int = 5) -> str:
    """One self-contained HTML page comparing ``runs`` (one run is a report of its own)."""
    if not runs:
        raise UserError("a report needs at least one run")
    body = [
        f"<h1>{_e(title)}</h1>",
        "<h2>Headline</h2>",
        _headline(runs),
        _paired(runs),
        _charts(runs),
        _errors(runs),
        _slices(runs),
        _failures(runs, max_failures),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(
    path: str | os.PathLike[str],
    runs: Sequence[RunData],
    title: str = "agentft evaluation report",
    *,
    max_failures: int = 5,
) -> Path:
    """Render the report and write it atomically to ``path``; returns the path."""
    path = Path(path)
    page = render_report(runs, title, max_failures=max_failures)
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(page)
    return path


def load_run(
    run_dir: str | os.PathLike[str], name: str | None = None, *, warn: Callable[[str], None] | None = None
) -> RunData:
    """A run directory written by ``agentft eval``: its summary and (if present) its own trajectories.

    A torn or zero-filled last record of ``trajectories.jsonl`` is skipped and said through ``warn`` (default:
    ``warnings.warn``): a lost record is said, not hidden."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"no such run directory: {run_dir}")
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        raise UserError(f"{run_dir} has no summary.json: make it with `agentft eval --out {run_dir}`")
    try:
        raw = json.loads(summary_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{summary_path} is not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or "success_rate" not in raw:
        raise UserError(f"{summary_path} is not an evaluation summary (no success_rate)")
    try:
        summary = RunSummary.model_validate(raw)
    except ValidationError as exc:
        raise UserError(f"{summary_path} is not an evaluation summary ({str(exc).splitlines()[0]})") from None
    trajectories = None
    if (run_dir / "trajectories.jsonl").is_file():
        want = {"policy": summary.policy, "split": summary.split, "env": summary.env_name}
        report = ReadReport()
        trajectories = [
            t
            for t in read_trajectories(run_dir / "trajectories.jsonl", report=report)
            if all(getattr(t, key) == value for key, value in want.items() if value)
        ]
        if report.torn_tail:
            message = (
                f"warning: {run_dir / 'trajectories.jsonl'} ends in a torn or zero-filled record, skipped "
                "(1 line dropped)"
            )
            (warn or _warn)(message)
    return (name or run_dir.resolve().name, summary, trajectories)


def _warn(message: str) -> None:
    warnings.warn(message.removeprefix("warning: "), stacklevel=3)


def load_runs(
    run_dirs: Sequence[str | os.PathLike[str]], *, warn: Callable[[str], None] | None = None
) -> list[RunData]:
    """Several run directories, named by their directory names (``name (2)`` etc. when two are equal); ``warn``
    as for ``load_run``."""
    if not run_dirs:
        raise UserError("name at least one run directory")
    runs, seen = [], set()
    for run_dir in run_dirs:
        base = Path(run_dir).resolve().name or str(run_dir)
        name, count = base, 1
        while name in seen:
            count += 1
            name = f"{base} ({count})"
        seen.add(name)
        runs.append(load_run(run_dir, name, warn=warn))
    return runs
