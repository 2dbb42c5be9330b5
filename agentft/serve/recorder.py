"""Served conversations as trajectories: PII-scrubbed, appended to a JSONL file of the log directory.

One file per server process (``serve-YYYYmmdd-HHMMSS-PID.jsonl``), so several servers can share a directory;
``agentft dataset sft --from DIR`` reads them all. Scrubbing uses ``agentft.pii.Scrubber`` (key from
``$AGENTFT_PII_KEY`` for pseudonyms that are stable across restarts); only counts of what was replaced are kept.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from agentft.pii import Scrubber
from agentft.trajectory import Trajectory, TrajectoryWriter

__all__ = ["Recorder"]

log = logging.getLogger("agentft.serve")


class Recorder:
    def __init__(self, log_dir: str | os.PathLike[str], scrubber: Scrubber | None = None) -> None:
        self.dir = Path(log_dir)
        self.path = self.dir / f"serve-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl"
        self.scrubber = scrubber or Scrubber()
        self.recorded = 0
        self._writer: TrajectoryWriter | None = None
        self._lock = threading.Lock()

    def record(self, trajectory: Trajectory) -> None:
        """Scrub and append one trajectory (blocking: call it in a worker thread). Never raises."""
        try:
            clean, report = self.scrubber.scrub_trajectory(trajectory)
            clean.metadata["pii_replaced"] = report.counts
            with self._lock:
                if self._writer is None:
                    self._writer = TrajectoryWriter(self.path)
                self._writer.write_batch([clean])
                self.recorded += 1
        except Exception:
            log.exception("could not record trajectory %s", trajectory.id)

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
