"""Feedback on served conversations: a label (good or bad) and an optional corrected reply, kept beside the
served traces and read back when datasets are built from them.

``POST /v1/feedback`` (``agentft serve``) appends one ``Feedback`` record to ``LOG_DIR/feedback/``, one file
per server process like the traces. When ``load_sources`` reads a log directory, ``attach_feedback`` puts each
trajectory's records in ``metadata["feedback"]`` (the latest label is the run's ``verdict``). Then

- ``agentft dataset sft --from runs/serve-logs`` drops runs labelled bad, and with ``--feedback good`` keeps
  only runs labelled good;
- ``agentft dataset dpo --from runs/serve-logs`` turns a bad run with a correction into a pair
  (``correction_pair``): the conversation up to its last reply, the correction chosen, the reply rejected,
  its source naming the served request.

A correction is PII-scrubbed with the server's scrubber before it is stored (one key, so a value in the trace
and in the correction gets the same fake within one server process; set ``AGENTFT_PII_KEY`` for the same
fakes across restarts).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from agentft.jsonl import JsonlWriter, ReadReport, read_jsonl
from agentft.messages import AssistantMessage
from agentft.trajectory import Trajectory

__all__ = ["Feedback", "FeedbackLog", "FEEDBACK_DIR", "attach_feedback", "correction", "read_feedback", "verdict"]

FEEDBACK_DIR = "feedback"
"""The folder of a log directory that holds feedback files."""
Label = Literal["good", "bad"]


class Feedback(BaseModel):
    """One person's verdict on one served conversation."""

    id: str = Field(default_factory=lambda: "fb-" + uuid.uuid4().hex[:24])
    target: str = Field(description="the served chat completion or agent run id")
    label: Label
    correction: str | None = Field(None, description="the reply that should have been given (scrubbed)")
    comment: str | None = None
    known: bool = Field(True, description="whether the server that stored it had recorded the target")
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


class FeedbackLog:
    """Appends feedback to ``LOG_DIR/feedback/feedback-YYYYmmdd-HHMMSS-PID.jsonl`` (thread-safe)."""

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(log_dir) / FEEDBACK_DIR
        self.path = self.dir / f"feedback-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl"
        self._writer: JsonlWriter | None = None
        self._lock = threading.Lock()

    def record(self, feedback: Feedback) -> None:
        with self._lock:
            if self._writer is None:
                self._writer = JsonlWriter(self.path, encode=lambda f: f.model_dump_json())
            self._writer.write_batch([feedback])

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None


def read_feedback(log_dirs: Iterable[str | os.PathLike[str]]) -> dict[str, list[Feedback]]:
    """Every feedback record under the ``feedback/`` folder of each log directory, by target id, oldest first.
    A torn last line (a server killed mid-write) is skipped, like a trajectory file's."""
    found: dict[str, list[Feedback]] = defaultdict(list)
    for log_dir in log_dirs:
        folder = Path(log_dir) / FEEDBACK_DIR
        for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else ():
            for record in read_jsonl(path, Feedback.model_validate_json, report=ReadReport(), what="feedback record"):
                found[record.target].append(record)
    for records in found.values():
        records.sort(key=lambda f: f.created_at)
    return dict(found)


def attach_feedback(trajectories: Sequence[Trajectory], log_dirs: Iterable[str | os.PathLike[str]]) -> dict[str, int]:
    """Put each trajectory's feedback in ``metadata["feedback"]``; counts of records attached and of records
    whose target is in none of these trajectories (a mistyped id, a trace in another directory)."""
    found = read_feedback(log_dirs)
    ids = {t.id for t in trajectories}
    for trajectory in trajectories:
        if trajectory.id in found:
            trajectory.metadata["feedback"] = [f.model_dump(mode="json") for f in found[trajectory.id]]
    attached = sum(len(records) for target, records in found.items() if target in ids)
    return {"attached": attached, "unmatched": sum(len(r) for r in found.values()) - attached}


def verdict(trajectory: Trajectory) -> Label | None:
    """The latest label given to a served conversation, or None."""
    records = trajectory.metadata.get("feedback") or []
    return records[-1]["label"] if records else None


def correction(trajectory: Trajectory) -> tuple[int, AssistantMessage] | None:
    """For a run labelled bad with a correction: the index of its last assistant reply and the corrected reply."""
    records = trajectory.metadata.get("feedback") or []
    if not records or records[-1]["label"] != "bad" or not records[-1].get("correction"):
        return None
    last = max((i for i, m in enumerate(trajectory.messages) if isinstance(m, AssistantMessage)), default=None)
    if last is None:
        return None
    return last, AssistantMessage(content=records[-1]["correction"])
