"""Served conversations as trajectories: PII-scrubbed, appended to a JSONL file of the log directory.

One file per server process (``serve-YYYYmmdd-HHMMSS-PID.jsonl``), so several servers can share a directory;
``agentft dataset sft --from DIR`` reads them all. Scrubbing uses ``agentft.pii.Scrubber`` (key from
``$AGENTFT_PII_KEY`` for pseudonyms that are stable across restarts); only counts of what was replaced are kept.
Feedback on them (``POST /v1/feedback``) goes to ``DIR/feedback/`` (``agentft.feedback``), its free text
scrubbed by the same scrubber.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

from agentft.feedback import Feedback, FeedbackLog
from agentft.pii import Scrubber
from agentft.trajectory import Trajectory, TrajectoryWriter

__all__ = ["Recorder"]

log = logging.getLogger("agentft.serve")
KEEP_IDS = 100_000


class Recorder:
    def __init__(self, log_dir: str | os.PathLike[str], scrubber: Scrubber | None = None) -> None:
        self.dir = Path(log_dir)
        self.path = self.dir / f"serve-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl"
        self.scrubber = scrubber or Scrubber()
        self.recorded = 0
        self.feedback = FeedbackLog(self.dir)
        self._ids: OrderedDict[str, str | None] = OrderedDict()
        """The last ``KEEP_IDS`` recorded ids and their A/B arms, for telling feedback on a known conversation from
        a mistyped id and counting it for its arm."""
        self._writer: TrajectoryWriter | None = None
        self._lock = threading.Lock()

    def record(self, trajectory: Trajectory) -> Trajectory | None:
        """Scrub and append one trajectory (blocking: call it in a worker thread); the scrubbed trajectory, or
        None if it could not be recorded. Never raises."""
        try:
            clean, report = self.scrubber.scrub_trajectory(trajectory)
            clean.metadata["pii_replaced"] = report.counts
            with self._lock:
                if self._writer is None:
                    self._writer = TrajectoryWriter(self.path)
                self._writer.write_batch([clean])
                self.recorded += 1
                self._ids[trajectory.id] = trajectory.metadata.get("arm")
                if len(self._ids) > KEEP_IDS:
                    self._ids.popitem(last=False)
            return clean
        except Exception:
            log.exception("could not record trajectory %s", trajectory.id)
            return None

    def record_feedback(
        self, target: str, label: str, correction: str | None, comment: str | None
    ) -> tuple[Feedback, str | None]:
        """Store feedback on a served conversation (blocking: call it in a worker thread); free text scrubbed.
        Returns it with the conversation's A/B arm (None if not routed or not known)."""
        with self._lock:
            known, arm = target in self._ids, self._ids.get(target)
        feedback = Feedback(
            target=target,
            label=label,  # type: ignore[arg-type]
            correction=self.scrubber.scrub_text(correction) if correction else None,
            comment=self.scrubber.scrub_text(comment) if comment else None,
            known=known,
        )
        self.feedback.record(feedback)
        return feedback, arm

    def close(self) -> None:
        self.feedback.close()
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
