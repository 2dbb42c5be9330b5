"""The trajectory record: one episode of an agent using tools, as one JSON line.

One schema (pydantic, versioned) and one serializer; everything downstream (datasets, evaluation,
serving logs) reads it. ``TrajectoryWriter`` appends one record per line in a single write and
flushes + fsyncs per batch; ``read_trajectories`` skips (and reports) a torn last line left by a
killed writer, and the writer trims such a tail before appending, so a resumed run loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from agentft.errors import UserError
from agentft.jsonl import JsonlWriter, ReadReport, read_jsonl
from agentft.messages import AssistantMessage, Message, ToolMessage
from agentft.tools import ToolSpec

__all__ = [
    "SCHEMA_VERSION",
    "TurnTokens",
    "Event",
    "EventError",
    "Violation",
    "Score",
    "Usage",
    "Trajectory",
    "episode_id",
    "TrajectoryWriter",
    "ReadReport",
    "read_trajectories",
    "load_trajectories",
    "structure_problem",
]

SCHEMA_VERSION = 1
EventError = Literal[
    "parse", "unknown_tool", "invalid_args", "tool_error", "timeout", "sandbox_error", "policy_violation"
]
"""``policy_violation``: the guard refused the call, so it never ran (rules and scoring skip it)."""
Status = Literal["completed", "max_steps", "error"]


class Event(BaseModel):
    """One tool call (or one unparseable model turn) and how it went."""

    step: int
    name: str = Field("", description="tool name; empty for a model turn that could not be parsed")
    call_id: str = ""
    arguments: dict[str, Any] = Field(default_factory=dict)
    effect: Literal["read", "write"] | None = None
    ok: bool = True
    error: EventError | None = None
    detail: str | None = None
    latency_ms: float = 0.0


class Violation(BaseModel):
    rule: str
    step: int | None = None
    detail: str = ""


class Score(BaseModel):
    """An episode's verdict. ``success`` is None when nothing could say whether the task was done (served
    traffic, recorded LangChain runs): unknown, not failed. Compliance is judged from the rules either way."""

    success: bool | None = False
    state_match: bool = False
    outputs_ok: bool = False
    violations: list[Violation] = Field(default_factory=list)
    compliant: bool = True
    details: dict[str, Any] = Field(default_factory=dict)


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_calls: int = 0
    wall_seconds: float = 0.0
    """From the episode's start to its end, waiting for the rest of its batch included."""
    model_seconds: float = 0.0
    """The episode's own share of model time (what a user of the agent would wait for its turns)."""
    tool_seconds: float = 0.0
    """Time in the episode's tool calls, simulated user and guard."""

    @property
    def own_seconds(self) -> float:
        """The episode's own time: its model turns and its tools, not its batch neighbours' generation."""
        return self.model_seconds + self.tool_seconds


class TurnTokens(BaseModel):
    """One assistant turn as the model read and wrote it, in token ids: what reinforcement learning trains on,
    with no re-tokenisation of text (a rendered conversation does not always tokenise back to what was
    sampled). Recorded by a local policy asked to (``HFPolicy(record_tokens=True)``)."""

    step: int = 0
    """The turn's index among the conversation's assistant turns."""
    prompt_ids: list[int]
    """The whole prompt of the turn (conversation so far, rendered with the tools and the generation prompt)."""
    completion_ids: list[int]
    """The sampled tokens, the stop token included when the turn ended on one."""
    logprobs: list[float]
    """Each completion token's log-probability under the distribution it was drawn from (softmax of the
    logits over ``temperature``; greedy turns: temperature 1)."""
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    """The turn's own sampling seed (None for greedy turns)."""


class Trajectory(BaseModel):
    schema_version: int = SCHEMA_VERSION
    id: str
    env: str
    task_id: str
    split: str = ""
    policy: str
    seed: int = 0
    attempt: int = 0
    tools: list[ToolSpec] = Field(default_factory=list)
    messages: list[Message] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)
    tokens: list[TurnTokens] | None = None
    """Token-exact model turns, when the policy recorded them (``HFPolicy(record_tokens=True)``)."""
    score: Score | None = None
    usage: Usage = Field(default_factory=Usage)
    status: Status = "completed"
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    metadata: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=False)

    @classmethod
    def from_json(cls, line: str | bytes) -> Trajectory:
        record = cls.model_validate_json(line)
        if record.schema_version > SCHEMA_VERSION:
            raise UserError(
                f"trajectory {record.id} has schema_version {record.schema_version}; this agentft "
                f"reads up to {SCHEMA_VERSION}: upgrade agentft"
            )
        return record


def episode_id(env: str, task_id: str, seed: int, policy: str, attempt: int) -> str:
    """Deterministic id of an episode: the same inputs always name the same record."""
    key = json.dumps([env, task_id, seed, policy, attempt])
    return hashlib.sha256(key.encode()).hexdigest()[:20]


class TrajectoryWriter(JsonlWriter):
    """Appends trajectories to a JSONL file: one line per record in one write; fsync per batch (``JsonlWriter``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path, encode=Trajectory.to_json)

    def __enter__(self) -> TrajectoryWriter:
        return self


def read_trajectories(
    path: str | os.PathLike[str], *, report: ReadReport | None = None, strict: bool = True
) -> Iterator[Trajectory]:
    """Yield the records of a JSONL file (``agentft.jsonl.read_jsonl``: a torn last line or a zero-filled end
    is skipped and noted in ``report``; any other invalid line raises ``UserError`` naming the line, unless
    ``strict=False``)."""
    if not Path(path).exists():
        raise UserError(f"no such trajectory file: {path}")
    return read_jsonl(path, Trajectory.from_json, report=report, strict=strict, what="trajectory record")


def structure_problem(trajectory: Trajectory) -> str | None:
    """Why the conversation cannot be a training row, or None: a tool result that answers no earlier call
    (or answers one twice), a call left without a result, a call to a tool the record does not declare (except
    in a turn with ``weight`` 0, which is context, not a demonstration: a recovery demonstration's slip), or no
    assistant turn at all. The first problem found, as a short key.

    Calls in the last message may stay unanswered: a served chat completion ends on the model's reply, and a
    reply that calls tools is a whole turn (the client runs them and sends the results in a later request)."""
    declared = {tool.name for tool in trajectory.tools}
    pending: set[str] = set()
    answered: set[str] = set()
    assistant = False
    for message in trajectory.messages:
        if isinstance(message, AssistantMessage):
            assistant = True
            for call in message.tool_calls:
                if call.function.name not in declared and message.weight != 0:
                    return "undeclared_tool"
                if call.id in pending or call.id in answered:
                    return "duplicate_call_id"
                pending.add(call.id)
        elif isinstance(message, ToolMessage):
            if message.tool_call_id not in pending:
                return "result_without_call"
            pending.remove(message.tool_call_id)
            answered.add(message.tool_call_id)
    if not assistant:
        return "no_assistant_turn"
    last = trajectory.messages[-1]
    if pending - {call.id for call in getattr(last, "tool_calls", [])}:
        return "call_without_result"
    return None


def load_trajectories(paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str]) -> list[Trajectory]:
    """All records of one or more JSONL files or directories (``*.jsonl`` inside), in order."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    records: list[Trajectory] = []
    for entry in paths:
        entry = Path(entry)
        files = sorted(entry.glob("*.jsonl")) if entry.is_dir() else [entry]
        if entry.is_dir() and not files:
            raise UserError(f"{entry} holds no .jsonl trajectory files")
        for file in files:
            records.extend(read_trajectories(file))
    return records
