"""A registry of model versions and the gate decisions about them: one JSON file, ``DIR/registry.json``.

Each version is a name, the adapter directory it stands for (or the base model), its lineage (adapter ->
dataset -> trajectories, from the manifests: ``agentft.lineage.trace``), and every gate decision about it with
its evidence; ``current`` names the promoted version that serves. Writes go through a lock file and an atomic
rename, so two gates finishing at once cannot lose one another's entry.

Why a JSON file and not MLflow's model registry: a registry of a few adapters needs nothing but a file a person
can read and diff, and agentft's manifests already carry hashes and lineage; MLflow would add a tracking
server (or its SQLite store), Flask, SQLAlchemy and Alembic to every install for the same three facts
(version, evidence, current). Training runs report to TensorBoard or Weights & Biases through TRL's
``report_to`` as before.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agentft.errors import UserError
from agentft.jsonl import file_lock
from agentft.manifest import write_json_atomic

__all__ = ["Registry"]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Registry:
    """``DIR/registry.json``: versions, their gate decisions, and the current one."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.path = self.root / "registry.json"

    def read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"current": None, "versions": {}}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{self.path} is not valid JSON ({exc}); restore it from version control") from None
        if not isinstance(data, dict) or not isinstance(data.get("versions"), dict):
            raise UserError(f"{self.path} is not an agentft registry (no 'versions')")
        return data

    @contextmanager
    def _editing(self) -> Iterator[dict[str, Any]]:
        with file_lock(self.root / ".registry.lock"):
            data = self.read()
            yield data
            write_json_atomic(self.path, data)

    def record_gate(self, name: str, model: str, lineage: dict[str, Any] | None, decision: dict[str, Any]) -> None:
        """Add a gate decision to version ``name`` (registered on first sight); a promotion makes it current."""
        with self._editing() as data:
            version = data["versions"].setdefault(
                name, {"model": model, "lineage": lineage, "registered_at": _now(), "gates": []}
            )
            version["gates"].append(decision)
            version["status"] = "promoted" if decision["promote"] else "rejected"
            if decision["promote"]:
                previous = data.get("current")
                if previous and previous != name and previous in data["versions"]:
                    data["versions"][previous]["status"] = "retired"
                data["current"] = name
                version["promoted_at"] = decision["decided_at"]
