"""Training data from trajectories: filters with drop counts, PII scrubbing, SFT rows, exports, a dataset card.

Rows follow TRL's conversational format: ``{"messages": [...], "tools": "<json>", "trajectory_id": ...}``.
Tool-call arguments and the ``tools`` column are JSON strings: Arrow merges the keys of nested dicts
across rows (``{"city": ...}`` would gain every other row's keys as nulls), and TRL parses a JSON-string
``tools`` column. The train/validation split is by task id, so no task is on both sides (rows that all fall in
validation, e.g. a few served-feedback rows, become train rows).

Output directory: ``train.jsonl``, ``validation.jsonl``, ``hf/`` (``datasets.DatasetDict.save_to_disk``),
``README.md`` (the dataset card: counts, token lengths, task mix, drop reasons, slice report), and
``manifest.json`` (source files and their sha256, the filter config, every row's trajectory id).
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentft.augment import original_task_id
from agentft.errors import UserError
from agentft.feedback import attach_feedback, verdict
from agentft.jsonl import atomic_open, write_jsonl_atomic, write_jsonl_files_atomic
from agentft.manifest import write_manifest
from agentft.messages import AssistantMessage, to_openai
from agentft.tools import openai_tools
from agentft.trajectory import ReadReport, Trajectory, read_trajectories, structure_problem

__all__ = [
    "FilterConfig",
    "SFTDataset",
    "filter_trajectories",
    "has_empty_reply",
    "sft_row",
    "build_sft_dataset",
    "save_sft_dataset",
    "export_openai",
    "load_sources",
    "split_of",
    "token_lengths",
]


@dataclass
class FilterConfig:
    require_success: bool = True
    """Drop episodes scored as failed. An episode whose success is unknown (``success`` None: served traffic,
    recorded LangChain runs) is kept: nothing says it failed; see ``require_known_success``."""
    require_known_success: bool = False
    """Also drop episodes whose success is unknown: only episodes scored as successful are kept."""
    require_compliant: bool = True
    """Drop episodes with any rule violation (or no compliance verdict at all)."""
    statuses: tuple[str, ...] = ("completed",)
    """Keep only these episode statuses."""
    dedupe: bool = True
    """Drop episodes whose normalized conversation repeats an earlier one."""
    max_tokens: int | None = None
    """Drop episodes longer than this in the target model's chat format (needs a tokenizer)."""
    feedback: Literal["any", "good"] = "any"
    """Served conversations labelled bad (``POST /v1/feedback``) are always dropped; ``good`` keeps only those
    labelled good."""


def load_sources(
    paths: Iterable[str | Path], reports: dict[Path, ReadReport] | None = None
) -> tuple[list[Trajectory], list[Path]]:
    """Trajectories from files or run directories (their ``*.jsonl``), and the files they came from.

    ``reports``, when given, receives each file's ``ReadReport`` (a torn last line that was skipped)."""
    files: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            found = sorted(entry.glob("*.jsonl"))
            if not found:
                raise UserError(f"{entry} holds no .jsonl trajectory files")
            files.extend(found)
        elif entry.exists():
            files.append(entry)
        else:
            raise UserError(f"no such file or directory: {entry}")
    records = []
    for file in files:
        report = ReadReport()
        records.extend(read_trajectories(file, report=report))
        if reports is not None:
            reports[file] = report
    attach_feedback(records, [entry for entry in map(Path, paths) if entry.is_dir()])
    return records, files


def _fingerprint(trajectory: Trajectory) -> str:
    """Content hash of a conversation, blind to tool-call ids and whitespace differences."""
    parts = []
    for message in trajectory.messages:
        calls = [(c.function.name, c.function.arguments) for c in getattr(message, "tool_calls", [])]
        text = re.sub(r"\s+", " ", (message.content or "").strip().lower())
        parts.append([message.role, text, calls])
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def has_empty_reply(messages: Iterable[Any]) -> bool:
    """Whether an assistant turn that would be learned (``weight`` not 0) holds neither text nor tool calls: a
    served reply cut off at the token limit before any output, or an empty completion. Trained on, it teaches
    the model to say nothing."""
    return any(
        isinstance(m, AssistantMessage) and m.weight != 0 and not (m.content or "").strip() and not m.tool_calls
        for m in messages
    )


def filter_trajectories(
    trajectories: Sequence[Trajectory], config: FilterConfig, lengths: dict[str, int] | None = None
) -> tuple[list[Trajectory], Counter[str]]:
    """Keep what passes every filter; count each drop under its first failing reason.

    A conversation that is not well formed (``agentft.trajectory.structure_problem``) is dropped as
    ``malformed:<problem>``: it would teach the model a broken protocol; one with a learned assistant turn that
    holds neither text nor tool calls (``has_empty_reply``) as ``empty_reply``. These checks come after the
    status, success and compliance filters, so a failed episode is still counted as failed."""
    kept: list[Trajectory] = []
    drops: Counter[str] = Counter()
    seen: set[str] = set()
    for trajectory in trajectories:
        score = trajectory.score
        if trajectory.status not in config.statuses:
            drops[f"status:{trajectory.status}"] += 1
        elif verdict(trajectory) == "bad":
            drops["feedback_bad"] += 1
        elif config.feedback == "good" and verdict(trajectory) != "good":
            drops["feedback_not_good"] += 1
        elif config.require_success and (score is None or score.success is False):
            drops["not_successful"] += 1
        elif config.require_known_success and score.success is None:
            drops["success_unknown"] += 1
        elif config.require_compliant and not (score and score.compliant):
            drops["not_compliant"] += 1
        elif problem := structure_problem(trajectory):
            drops[f"malformed:{problem}"] += 1
        elif has_empty_reply(trajectory.messages):
            drops["empty_reply"] += 1
        elif (
            config.max_tokens is not None and lengths is not None and lengths.get(trajectory.id, 0) > config.max_tokens
        ):
            drops["too_long"] += 1
        elif config.dedupe and (key := _fingerprint(trajectory)) in seen:
            drops["duplicate"] += 1
        else:
            if config.dedupe:
                seen.add(key)
            kept.append(trajectory)
    return kept, drops


def sft_row(trajectory: Trajectory) -> dict[str, Any]:
    """One TRL conversational row (tool-call arguments and tools as JSON strings).

    Every assistant message carries OpenAI's ``weight``: 0 for a turn kept as context but not learned (a slip
    in a recovery demonstration, ``agentft.recovery``), else 1; on every row, so that the column has one type."""
    messages = to_openai(trajectory.messages)
    for message in messages:
        if message["role"] == "assistant":
            message["weight"] = message.get("weight", 1)
    return {
        "messages": messages,
        "tools": json.dumps(openai_tools(trajectory.tools)),
        "trajectory_id": trajectory.id,
    }


def split_of(task_id: str, validation_fraction: float, seed: int = 0) -> str:
    """``train`` or ``validation`` for a task, stable across runs and machines."""
    digest = int(hashlib.sha256(f"{seed}:{task_id}".encode()).hexdigest()[:8], 16)
    return "validation" if digest / 0xFFFFFFFF < validation_fraction else "train"


def _render(tokenizer: Any, messages: list[dict[str, Any]], tools: Any = None, prompt: bool = False) -> str:
    from agentft.chat_format import CHAT_TEMPLATE, GEMMA_TEMPLATE, render

    if tokenizer.chat_template in (CHAT_TEMPLATE, GEMMA_TEMPLATE):
        return render(messages, tools, add_generation_prompt=prompt, template=tokenizer.chat_template)
    return tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=prompt, tokenize=False)


def token_lengths(trajectories: Sequence[Trajectory], tokenizer: Any) -> dict[str, int]:
    """Length of each trajectory in tokens of ``tokenizer``'s chat format."""
    texts = [_render(tokenizer, sft_row(t)["messages"], openai_tools(t.tools) or None) for t in trajectories]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return {t.id: len(ids) for t, ids in zip(trajectories, encoded, strict=True)}


def longest_turn_tokens(trajectories: Sequence[Trajectory], tokenizer: Any) -> int:
    """The longest assistant turn, in tokens the model generates for it: what a generation limit must allow.

    A limit below it cuts the model's copy of a demonstrated turn short (a tool call without its closing
    tag), a failure no trace would explain.
    """
    system = {"role": "system", "content": "-"}
    prompt = _render(tokenizer, [system], prompt=True)
    turns = {
        json.dumps(message, sort_keys=True): message
        for t in trajectories
        for message in sft_row(t)["messages"]
        if message["role"] == "assistant" and message["weight"] != 0  # a slip is never generated from a limit's view
    }
    texts = [_render(tokenizer, [system, message]).removeprefix(prompt) for message in turns.values()]
    return max((len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]), default=0)


@dataclass
class SFTDataset:
    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    drops: Counter[str]
    sources: list[Path]
    config: dict[str, Any]
    stats: dict[str, Any] = field(default_factory=dict)


def build_sft_dataset(
    sources: Iterable[str | Path],
    *,
    filters: FilterConfig | None = None,
    scrub: bool = False,
    scrub_key: str | None = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
    tokenizer: Any = None,
) -> SFTDataset:
    """Read, filter, optionally scrub PII, and split trajectories into SFT rows.

    Scrubbing replaces personal data with format-preserving fakes, consistent within each trajectory; with a
    fixed ``scrub_key`` (or ``$AGENTFT_PII_KEY``) the fakes are also the same from build to build.
    """
    filters = filters or FilterConfig()
    if filters.max_tokens is not None and tokenizer is None:
        raise UserError("max_tokens filtering needs the target model's tokenizer (pass --model)")
    reports: dict[Path, ReadReport] = {}
    trajectories, files = load_sources(sources, reports)
    torn = [str(path) for path, report in reports.items() if report.torn_tail]
    lengths = token_lengths(trajectories, tokenizer) if tokenizer is not None else None
    kept, drops = filter_trajectories(trajectories, filters, lengths)
    if torn:  # a record cut short by a killed writer (or a zero-filled end) is a record lost: say so
        drops["torn_line"] += len(torn)
    scrub_report: dict[str, Any] = {}
    if scrub:
        from agentft.pii import Scrubber

        scrubber, totals = Scrubber(key=scrub_key), Counter()
        cleaned = []
        for trajectory in kept:
            clean, report = scrubber.scrub_trajectory(trajectory)
            cleaned.append(clean)
            totals.update(report.counts)
            totals["strings_redacted_on_error"] += report.errors
        kept, scrub_report = cleaned, dict(totals)
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "validation": []}
    for trajectory in kept:
        # A task and its augmented variants fall on the same side, or the eval loss would be measured on
        # rewordings of training rows.
        splits[split_of(original_task_id(trajectory.task_id), validation_fraction, seed)].append(sft_row(trajectory))
    if not splits["train"]:  # a few rows (served feedback) can all hash to validation: train on them instead
        splits["train"], splits["validation"] = splits["validation"], []
    stats = _card_stats(kept, {"train": splits["train"], "validation": splits["validation"]}, lengths)
    if tokenizer is not None and kept:
        stats["tokens"]["longest_turn"] = longest_turn_tokens(kept, tokenizer)
    stats["scrubbed"] = scrub_report
    stats["torn_files"] = torn
    import os

    config = {
        "filters": asdict(filters),
        "scrub": scrub,
        "validation_fraction": validation_fraction,
        "seed": seed,
        "scrub_key_fixed": bool(scrub and (scrub_key or os.environ.get("AGENTFT_PII_KEY"))),
    }
    return SFTDataset(splits["train"], splits["validation"], drops, files, config, stats)


def _card_stats(
    kept: Sequence[Trajectory], splits: dict[str, list[dict[str, Any]]], lengths: dict[str, int] | None
) -> dict[str, Any]:
    slices: dict[str, Counter[str]] = defaultdict(Counter)
    for t in kept:
        for name, value in (t.metadata.get("slices") or {}).items():
            slices[name][str(value)] += 1
    stats: dict[str, Any] = {
        "rows": {name: len(rows) for name, rows in splits.items()},
        "tasks": len({t.task_id for t in kept}),
        "task_kinds": dict(Counter(t.metadata.get("task_kind", "default") for t in kept).most_common()),
        "environments": dict(Counter(t.env for t in kept)),
        "policies": dict(Counter(t.policy for t in kept)),
        "slices": {name: dict(counter.most_common()) for name, counter in sorted(slices.items())},
    }
    if lengths:
        values = sorted(lengths[t.id] for t in kept) or [0]
        stats["tokens"] = {
            "min": values[0],
            "mean": round(statistics.mean(values), 1),
            "p95": values[int(0.95 * (len(values) - 1))],
            "max": values[-1],
            "total": sum(values),
        }
    return stats


def _card(dataset: SFTDataset, title: str) -> str:
    s = dataset.stats
    lines = [
        f"# {title}",
        "",
        "SFT rows built by `agentft dataset sft` (TRL conversational format).",
        "",
        "## Counts",
        "",
        "| split | rows |",
        "|---|---|",
    ]
    lines += [f"| {name} | {count} |" for name, count in s["rows"].items()]
    lines += ["", f"Distinct tasks: {s['tasks']}. Environments: {s['environments']}. Policies: {s['policies']}."]
    if "tokens" in s:
        t = s["tokens"]
        lines += [
            "",
            "## Token lengths (target model's chat format)",
            "",
            f"min {t['min']}, mean {t['mean']}, p95 {t['p95']}, max {t['max']}; {t['total']} tokens in all.",
        ]
    lines += ["", "## Task mix", "", "| task kind | rows |", "|---|---|"]
    lines += [f"| {kind} | {count} |" for kind, count in s["task_kinds"].items()]
    lines += ["", "## Dropped", "", "| reason | trajectories |", "|---|---|"]
    lines += [f"| {reason} | {count} |" for reason, count in sorted(dataset.drops.items())] or ["| none | 0 |"]
    lines += ["", "## Slices", "", "A skew here is a skew the model will learn: check it before training.", ""]
    total = sum(s["rows"].values()) or 1
    for name, counter in s["slices"].items():
        shares = ", ".join(f"{value} {count} ({count / total:.0%})" for value, count in counter.items())
        lines.append(f"- **{name}**: {shares}")
    if not s["slices"]:
        lines.append("- the environment declares no slices")
    if s.get("scrubbed"):
        lines += ["", "## PII scrubbed", "", ", ".join(f"{k}: {v}" for k, v in sorted(s["scrubbed"].items()))]
    lines += [
        "",
        "## Lineage",
        "",
        "`manifest.json` lists the source files with their sha256, the filter config "
        "and each row's trajectory id; `agentft lineage` prints the chain.",
    ]
    return "\n".join(lines) + "\n"


def save_sft_dataset(dataset: SFTDataset, out: str | Path, *, title: str = "agentft SFT dataset") -> Path:
    """Write JSONL, the HF dataset, the card and the manifest; returns ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not dataset.train:
        raise UserError(
            "no rows left after filtering: "
            + (", ".join(f"{k} {v}" for k, v in dataset.drops.items()) or "the sources are empty")
        )
    # Both splits or neither: a row that cannot be written leaves the previous pair in place.
    write_jsonl_files_atomic({out / f"{name}.jsonl": getattr(dataset, name) for name in ("train", "validation")})
    from datasets import Dataset, DatasetDict

    parts = {name: Dataset.from_list(rows) for name in ("train", "validation") if (rows := getattr(dataset, name))}
    DatasetDict(parts).save_to_disk(str(out / "hf"))
    with atomic_open(out / "README.md", "w", encoding="utf-8") as handle:
        handle.write(_card(dataset, title))
    config = {
        **dataset.config,
        "kind": "sft",
        "trajectory_ids": {
            name: [r["trajectory_id"] for r in getattr(dataset, name)] for name in ("train", "validation")
        },
    }
    write_manifest(
        out,
        kind="dataset",
        config=config,
        inputs=dataset.sources,
        outputs=[out / "train.jsonl", out / "validation.jsonl", out / "README.md"],
        metrics={**dataset.stats, "dropped": dict(dataset.drops)},
    )
    return out


def export_openai(dataset_dir: str | Path, out: str | Path) -> int:
    """OpenAI fine-tuning JSONL (``{"messages": [...], "tools": [...]}`` per line) from a saved SFT dataset."""
    dataset_dir, out = Path(dataset_dir), Path(out)
    source = dataset_dir / "train.jsonl"
    if not source.exists():
        raise UserError(f"{dataset_dir} is not an agentft SFT dataset (no train.jsonl)")
    rows = []
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{source}:{number}: not valid JSON") from None
        messages = [{k: v for k, v in m.items() if v is not None} for m in row["messages"]]
        rows.append({"messages": messages, "tools": json.loads(row["tools"]) if row.get("tools") else []})
    write_jsonl_atomic(out, rows)
    return len(rows)
