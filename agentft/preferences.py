"""Preference (DPO) pairs mined at the step where a failing episode goes wrong.

For each failing or non-compliant trajectory, the successful compliant trajectories of the same task are
walked side by side with it; the first assistant turn where they part is the pair: ``prompt`` = the
shared conversation before it, ``chosen`` = the good turn, ``rejected`` = the bad one. With the
environment's deterministic user, two episodes of one task can only part at an assistant turn.

Also, on request:

- **perturbations** of good episodes that break a rule the same way models do: the write issued
  without first asking the user to confirm (``skip_confirmation``), and a customer-data call made before
  the identity check (``skip_verification``); each with its mirror one step later, where the rule is
  satisfied and the same move is now the wrong one (``ask_again`` after the user said yes,
  ``verify_again`` after the identity was verified), so that DPO learns the rule rather than a
  preference for questions over tool calls;
- **step mirrors** of step pairs whose turns make the same tool calls and differ only in words: in another
  task's good episode at the same turn, that task's own words beat the pair's chosen words
  (``step_mirror``), so that DPO learns when those words are right instead of saying them everywhere
  (without them, pairs that prefer "I can only discuss claims on your own account" made the model refuse
  its customers' own claims);
- **whole-episode** pairs (``prompt`` = system + opening, ``chosen``/``rejected`` = everything after) as a
  fallback where step-level pairs are too few.

Each pair is a typed ``PreferencePair`` (messages, tool specs, and where it came from); at the dataset
boundary it becomes a TRL row: ``{"prompt": [...], "chosen": [...], "rejected": [...], "tools": "<json>",
"source": {...}}``.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from agentft.errors import UserError
from agentft.feedback import correction
from agentft.jsonl import write_jsonl_atomic
from agentft.manifest import write_manifest
from agentft.messages import AssistantMessage, Message, ToolCall, to_openai
from agentft.tools import ToolSpec, openai_tools
from agentft.trajectory import Trajectory

__all__ = [
    "PreferenceConfig",
    "PreferenceDataset",
    "PreferencePair",
    "PairSource",
    "mine_pairs",
    "build_dpo_dataset",
    "save_dpo_dataset",
]

PairKind = Literal[
    "step", "step_mirror", "skip_confirmation", "ask_again", "skip_verification", "verify_again", "episode", "feedback"
]


class PairSource(BaseModel):
    """Where a pair came from: its kind, its task, and the trajectories and turn it was cut from."""

    kind: PairKind
    env: str
    task_id: str
    chosen_trajectory: str
    rejected_trajectory: str | None = None
    message_index: int | None = None
    mirrors_task: str | None = None


class PreferencePair(BaseModel):
    """One DPO pair: the shared conversation, the better continuation and the worse one."""

    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]
    tools: list[ToolSpec]
    source: PairSource

    def row(self) -> dict[str, Any]:
        """The TRL conversational row (OpenAI-shaped messages; tools as a JSON string, as Arrow needs)."""
        return {
            "prompt": to_openai(self.prompt),
            "chosen": to_openai(self.chosen),
            "rejected": to_openai(self.rejected),
            "tools": json.dumps(openai_tools(self.tools)),
            "source": self.source.model_dump(exclude_none=True),
        }


@dataclass
class PreferenceConfig:
    step_pairs: bool = True
    """Pairs at the first assistant turn where a failing episode departs from a good one."""
    perturbations: bool = False
    """Pairs from rule-breaking edits of good episodes (skip confirmation, act before verifying) and their
    mirrors (ask again after a yes, verify again after verifying)."""
    step_mirrors: bool = False
    """For each step pair that differs only in words, the same words rejected where another task's expert
    says something else at that turn."""
    whole_episodes: bool = False
    """Whole-episode pairs (fallback)."""
    feedback_pairs: bool = True
    """Served conversations labelled bad with a correction (``POST /v1/feedback``): the correction chosen over
    the last reply."""
    verify_tools: tuple[str, ...] = ("verify_identity", "verify_employee")
    """Tools that check identity, for the act-before-verifying perturbation."""


def _good(t: Trajectory) -> bool:
    return t.status == "completed" and t.score is not None and t.score.success and t.score.compliant


def _key(message: Message) -> tuple[Any, ...]:
    calls = tuple(
        (c.function.name, json.dumps(c.function.arguments, sort_keys=True)) for c in getattr(message, "tool_calls", [])
    )
    return message.role, re.sub(r"\s+", " ", (message.content or "").strip()), calls


def _shared_prefix(a: Sequence[tuple[Any, ...]], b: Sequence[tuple[Any, ...]]) -> int:
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return n


def _tools(t: Trajectory) -> list[ToolSpec]:
    return list(t.tools)


def _row(
    prompt: Sequence[Message],
    chosen: Sequence[Message],
    rejected: Sequence[Message],
    tools: list[ToolSpec],
    source: dict[str, Any],
) -> PreferencePair:
    return PreferencePair(
        prompt=list(prompt),
        chosen=list(chosen),
        rejected=list(rejected),
        tools=tools,
        source=PairSource.model_validate(source),
    )


def _step_pair(
    bad: Trajectory, goods: Sequence[Trajectory], keys: dict[str, list[tuple[Any, ...]]]
) -> PreferencePair | None:
    best, best_len = None, -1
    for good in goods:
        n = _shared_prefix(keys[bad.id], keys[good.id])
        if (
            n < len(bad.messages)
            and n < len(good.messages)
            and isinstance(bad.messages[n], AssistantMessage)
            and isinstance(good.messages[n], AssistantMessage)
            and n > best_len
        ):
            best, best_len = good, n
    if best is None:
        return None
    n = best_len
    return _row(
        bad.messages[:n],
        [best.messages[n]],
        [bad.messages[n]],
        _tools(bad),
        {
            "kind": "step",
            "chosen_trajectory": best.id,
            "rejected_trajectory": bad.id,
            "message_index": n,
            "task_id": bad.task_id,
            "env": bad.env,
        },
    )


def _calls(message: AssistantMessage) -> list[str]:
    return [c.function.name for c in message.tool_calls]


def _step_mirror(
    pair: PreferencePair, episodes: dict[str, Trajectory], goods: dict[tuple[str, str], list[Trajectory]]
) -> PreferencePair | None:
    """The pair's chosen words as the rejected turn of the next task (in sorted order) whose good episode makes
    the same tool calls at the same turn but says something else; None when the pair differs in its calls."""
    source = pair.source
    n = source.message_index
    assert n is not None and source.rejected_trajectory is not None  # a step pair
    chosen = episodes[source.chosen_trajectory].messages[n]
    rejected = episodes[source.rejected_trajectory].messages[n]
    if not chosen.content or _calls(chosen) != _calls(rejected):
        return None
    tasks = sorted(task for task, found in goods.items() if found)
    here = tasks.index((source.env, source.task_id)) if (source.env, source.task_id) in tasks else -1
    for task in tasks[here + 1 :] + tasks[: max(here, 0)]:
        good = goods[task][0]
        right = good.messages[n] if n < len(good.messages) else None
        if (
            isinstance(right, AssistantMessage)
            and right.content
            and _calls(right) == _calls(chosen)
            and _key(right)[1] != _key(chosen)[1]
        ):
            wrong = AssistantMessage(
                content=chosen.content,
                tool_calls=[ToolCall.create(c.id, c.function.name, c.function.arguments) for c in right.tool_calls],
            )
            return _row(
                good.messages[:n],
                [right],
                [wrong],
                _tools(good),
                {
                    "kind": "step_mirror",
                    "chosen_trajectory": good.id,
                    "message_index": n,
                    "task_id": good.task_id,
                    "env": good.env,
                    "mirrors_task": source.task_id,
                },
            )
    return None


def _asks_to_confirm(message: Message) -> bool:
    return (
        isinstance(message, AssistantMessage)
        and not message.tool_calls
        and "confirm" in (message.content or "").lower()
        and "?" in (message.content or "")
    )


def _perturbations(good: Trajectory, config: PreferenceConfig) -> list[PreferencePair]:
    rows = []
    effects = {spec.name: spec.effect for spec in good.tools}
    messages = good.messages
    tools = _tools(good)
    for i, message in enumerate(messages):
        # Skip confirmation: where the expert asks to confirm, the bad turn is the write itself.
        if _asks_to_confirm(message) and i + 2 < len(messages):
            write = messages[i + 2]
            if isinstance(write, AssistantMessage) and any(
                effects.get(c.function.name) == "write" for c in write.tool_calls
            ):
                rows.append(
                    _row(
                        messages[:i],
                        [message],
                        [write],
                        tools,
                        {
                            "kind": "skip_confirmation",
                            "chosen_trajectory": good.id,
                            "message_index": i,
                            "task_id": good.task_id,
                            "env": good.env,
                        },
                    )
                )
                # Its mirror: once the user said yes, the write is right and asking again is wrong. Without it
                # DPO learns "a question beats a tool call" everywhere (measured: success fell by half).
                rows.append(
                    _row(
                        messages[: i + 2],
                        [write],
                        [message],
                        tools,
                        {
                            "kind": "ask_again",
                            "chosen_trajectory": good.id,
                            "message_index": i + 2,
                            "task_id": good.task_id,
                            "env": good.env,
                        },
                    )
                )
    calls = [(i, m) for i, m in enumerate(messages) if isinstance(m, AssistantMessage) and m.tool_calls]
    for (i, first), (j, following) in zip(calls, calls[1:], strict=False):
        if first.tool_calls[0].function.name in config.verify_tools:
            # Act before verifying: the bad turn is the next data call made in the identity check's place.
            early = AssistantMessage(
                content=following.content,
                tool_calls=[ToolCall.create(c.id, c.function.name, c.function.arguments) for c in following.tool_calls],
            )
            rows.append(
                _row(
                    messages[:i],
                    [first],
                    [early],
                    tools,
                    {
                        "kind": "skip_verification",
                        "chosen_trajectory": good.id,
                        "message_index": i,
                        "task_id": good.task_id,
                        "env": good.env,
                    },
                )
            )
            # Its mirror: once verified, the data call is right and checking the identity again is wrong.
            again = AssistantMessage(
                content=None,
                tool_calls=[
                    ToolCall.create(f"{c.id}-again", c.function.name, c.function.arguments) for c in first.tool_calls
                ],
            )
            rows.append(
                _row(
                    messages[:j],
                    [following],
                    [again],
                    tools,
                    {
                        "kind": "verify_again",
                        "chosen_trajectory": good.id,
                        "message_index": j,
                        "task_id": good.task_id,
                        "env": good.env,
                    },
                )
            )
            break
    return rows


def _feedback_pair(trajectory: Trajectory) -> PreferencePair | None:
    """A served conversation labelled bad with a correction: its last reply rejected, the correction chosen."""
    found = correction(trajectory)
    if found is None:
        return None
    index, corrected = found
    return _row(
        trajectory.messages[:index],
        [corrected],
        [trajectory.messages[index]],
        _tools(trajectory),
        {
            "kind": "feedback",
            "chosen_trajectory": trajectory.metadata["feedback"][-1]["id"],
            "rejected_trajectory": trajectory.id,
            "message_index": index,
            "task_id": trajectory.task_id,
            "env": trajectory.env,
        },
    )


def mine_pairs(trajectories: Sequence[Trajectory], config: PreferenceConfig | None = None) -> list[PreferencePair]:
    """All preference pairs the config asks for, in a stable order, without duplicates."""
    config = config or PreferenceConfig()
    by_task: dict[tuple[str, str], list[Trajectory]] = defaultdict(list)
    for t in trajectories:
        by_task[(t.env, t.task_id)].append(t)
    rows: list[PreferencePair] = []
    seen: set[str] = set()
    episodes = {t.id: t for t in trajectories}
    good_by_task = {task: [t for t in group if _good(t)] for task, group in by_task.items()}
    for task, group in sorted(by_task.items()):
        goods = good_by_task.get(task, [])
        bads = [t for t in group if not _good(t)]
        keys = {t.id: [_key(m) for m in t.messages] for t in group} if config.step_pairs and goods and bads else {}
        for bad in bads:
            if config.step_pairs and goods and (row := _step_pair(bad, goods, keys)) is not None:
                rows.append(row)
                if config.step_mirrors and (mirror := _step_mirror(row, episodes, good_by_task)) is not None:
                    rows.append(mirror)
            if config.whole_episodes and goods:
                good = goods[0]
                rows.append(
                    _row(
                        good.messages[:2],
                        good.messages[2:],
                        bad.messages[2:],
                        _tools(bad),
                        {
                            "kind": "episode",
                            "chosen_trajectory": good.id,
                            "rejected_trajectory": bad.id,
                            "task_id": bad.task_id,
                            "env": bad.env,
                        },
                    )
                )
        if config.perturbations:
            for good in goods[:1]:
                rows.extend(_perturbations(good, config))
        if config.feedback_pairs:
            rows.extend(pair for t in group if (pair := _feedback_pair(t)) is not None)
    unique = []
    for row in rows:
        key = json.dumps([to_openai(row.prompt), to_openai(row.chosen), to_openai(row.rejected)], sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return unique


@dataclass
class PreferenceDataset:
    pairs: list[PreferencePair]
    sources: list[Path]
    config: dict[str, Any]
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The pairs as TRL rows (what ``train.jsonl`` holds)."""
        return [pair.row() for pair in self.pairs]


def build_dpo_dataset(sources: Iterable[str | Path], config: PreferenceConfig | None = None) -> PreferenceDataset:
    from dataclasses import asdict

    from agentft.datasets import has_empty_reply, load_sources
    from agentft.trajectory import ReadReport

    config = config or PreferenceConfig()
    reports: dict[Path, ReadReport] = {}
    trajectories, files = load_sources(sources, reports)
    mined = mine_pairs(trajectories, config)
    # A chosen reply with neither text nor tool calls would teach the model to say nothing: drop the pair.
    pairs = [pair for pair in mined if not has_empty_reply(pair.chosen)]
    dropped = {"empty_reply": len(mined) - len(pairs)} if len(mined) > len(pairs) else {}
    kinds: dict[str, int] = defaultdict(int)
    for pair in pairs:
        kinds[pair.source.kind] += 1
    stats = {
        "pairs": len(pairs),
        "by_kind": dict(kinds),
        "trajectories": len(trajectories),
        "failing": sum(not _good(t) for t in trajectories),
        # a record cut short by a killed writer (or a zero-filled end) is a record lost: say so
        "torn_files": [str(path) for path, report in reports.items() if report.torn_tail],
        "dropped": dropped,
    }
    return PreferenceDataset(pairs, files, asdict(config), stats)


def save_dpo_dataset(dataset: PreferenceDataset, out: str | Path) -> Path:
    """``train.jsonl``, the HF dataset under ``hf/``, and the manifest."""
    out = Path(out)
    if not dataset.pairs:
        raise UserError(
            "no preference pairs: the sources need failing episodes and successful ones of the same "
            "tasks (or enable perturbations)"
        )
    out.mkdir(parents=True, exist_ok=True)
    rows = dataset.rows
    write_jsonl_atomic(out / "train.jsonl", rows)
    from datasets import Dataset

    Dataset.from_list(
        [{k: (json.dumps(v) if k == "source" else v) for k, v in row.items()} for row in rows]
    ).save_to_disk(str(out / "hf"))
    write_manifest(
        out,
        kind="dataset",
        config={**dataset.config, "kind": "dpo", "pairs": [r["source"] for r in rows]},
        inputs=dataset.sources,
        outputs=[out / "train.jsonl"],
        metrics=dataset.stats,
    )
    return out
