"""Run manifests: every output directory says what made it (inputs' hashes, config, versions, metrics)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from agentft.jsonl import atomic_open

__all__ = ["write_manifest", "read_manifest", "sha256_file", "write_json_atomic"]

_PACKAGES = ("agentft", "torch", "transformers", "peft", "trl", "datasets", "chromadb")


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never half of one."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, default=str)
        handle.write("\n")


def _git_sha() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def _versions() -> dict[str, str]:
    found = {}
    for package in _PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def write_manifest(
    out_dir: str | os.PathLike[str],
    *,
    kind: str,
    config: dict[str, Any],
    inputs: list[str | os.PathLike[str]] = (),
    outputs: list[str | os.PathLike[str]] = (),
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write ``manifest.json`` in ``out_dir`` atomically and return its path."""
    out_dir = Path(out_dir)
    manifest = {
        "kind": kind,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_sha": _git_sha(),
        "versions": _versions(),
        "config": config,
        "inputs": [{"path": str(p), "sha256": sha256_file(p)} for p in inputs],
        "outputs": [
            {
                "path": str(Path(p).relative_to(out_dir) if Path(p).is_relative_to(out_dir) else p),
                "sha256": sha256_file(p),
            }
            for p in outputs
        ],
        "metrics": metrics or {},
    }
    path = out_dir / "manifest.json"
    write_json_atomic(path, manifest)
    return path


def read_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    return json.loads((Path(out_dir) / "manifest.json").read_text(encoding="utf-8"))
