"""``agentft lineage PATH``: trace an adapter, dataset or run back to the trajectories that made it.

Every agentft output directory has a ``manifest.json`` naming its inputs with their sha256. Following the
inputs (and the adapter a policy or a training run started from) from manifest to manifest gives the
chain; each input's hash is checked again, so a file changed after the fact shows up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentft.errors import UserError
from agentft.manifest import sha256_file

__all__ = ["trace", "find_manifest"]


def find_manifest(path: str | Path) -> Path | None:
    """The directory whose ``manifest.json`` describes ``path`` (a directory or a file inside one)."""
    path = Path(path)
    for candidate in (path, path.parent):
        if candidate.is_dir() and (candidate / "manifest.json").exists():
            return candidate
    return None


def _upstream_dirs(config: dict[str, Any]) -> list[str]:
    found = []
    for key in ("adapter", "data", "init_adapter"):
        if isinstance(config.get(key), str):
            found.append(config[key])
    policy = config.get("policy")
    if isinstance(policy, str) and policy.startswith("hf:") and "@" in policy:
        found.append(policy.split("@", 1)[1])
    return found


def trace(path: str | Path, _seen: set[Path] | None = None) -> dict[str, Any]:
    """The lineage tree of ``path``: kind, creation time, key config, inputs (hash-checked) and their own trees."""
    seen = _seen if _seen is not None else set()
    directory = find_manifest(path)
    if directory is None:
        if _seen is None:
            raise UserError(f"{path} has no manifest.json (and neither has its directory): not an agentft output")
        return {"path": str(path), "kind": "file"}
    directory = directory.resolve()
    try:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{directory / 'manifest.json'} cannot be read: {exc}") from None
    node: dict[str, Any] = {
        "path": str(directory),
        "kind": manifest.get("kind", "?"),
        "created_at": manifest.get("created_at"),
        "git_sha": manifest.get("git_sha"),
        "summary": _summary(manifest),
        "inputs": [],
    }
    if directory in seen:
        node["inputs"] = "(already shown)"
        return node
    seen.add(directory)
    upstream: dict[Path, dict[str, Any]] = {}
    for entry in manifest.get("inputs", []):
        file = Path(entry["path"])
        status = "missing" if not file.exists() else "ok" if sha256_file(file) == entry.get("sha256") else "changed"
        item = {"path": str(file), "sha256": entry.get("sha256"), "status": status}
        parent = find_manifest(file)
        if parent is not None and parent.resolve() != directory:
            upstream.setdefault(parent.resolve(), trace(parent, seen))
        node["inputs"].append(item)
    for extra in _upstream_dirs(manifest.get("config", {})):
        parent = find_manifest(extra)
        if parent is not None and parent.resolve() != directory:
            upstream.setdefault(parent.resolve(), trace(parent, seen))
    node["upstream"] = list(upstream.values())
    return node


def _summary(manifest: dict[str, Any]) -> str:
    config, metrics = manifest.get("config", {}), manifest.get("metrics", {})
    parts = []
    for key in ("env", "policy", "split", "n", "k", "kind", "model", "method"):
        if config.get(key) not in (None, "", []):
            parts.append(f"{key}={config[key]}")
    for key in ("episodes", "success_rate", "compliance_rate", "pairs", "rows", "train_loss", "eval_loss"):
        if key in metrics:
            value = metrics[key]
            parts.append(f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}")
    return ", ".join(parts)
