"""``agentft gate``: promote a candidate only when a paired evaluation says it is not worse than the baseline.

Both are evaluated on the same tasks (environment, split, ``n`` tasks, ``k`` attempts each, the guard as given;
each evaluation resumable, under ``OUT/baseline`` and ``OUT/candidate``) and compared task by task
(``agentft.stats.compare_paired``: an exact McNemar test on success and on compliance). The candidate is
promoted when

- **success**: it is not worse beyond noise (not significantly worse at ``alpha``; better or a tie passes), and
- **compliance**: its rate is not lower than the baseline's (any drop blocks: a policy violation is a cost,
  not noise to wait out).

The decision, both summaries, the paired comparisons and the reasons are written to ``OUT/gate.json`` and to
the registry (``agentft.registry``) with the candidate's lineage (adapter -> dataset -> trajectories); a
promotion makes the candidate the registry's ``current`` version. A model is an adapter directory (served on
``model``), ``base`` (the model without an adapter), or any policy spec ``agentft eval`` takes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agentft.collect import CollectConfig
from agentft.errors import UserError
from agentft.evaluate import evaluate
from agentft.lineage import find_manifest, trace
from agentft.manifest import write_json_atomic
from agentft.registry import Registry
from agentft.report import compare_runs
from agentft.runner import RunConfig
from agentft.trajectory import load_trajectories

__all__ = ["GateConfig", "run_gate", "policy_spec"]


@dataclass
class GateConfig:
    candidate: str
    """An adapter directory, ``base``, or a policy spec (``hf:...``, ``oracle``, ``pkg.module:factory``)."""
    baseline: str = "base"
    """What the candidate must not be worse than (same forms); usually the registry's current adapter."""
    model: str = "smollm2-135m"
    """The base model adapters are loaded on."""
    env: str = "claims"
    split: str = "test"
    n: int | None = None
    """Tasks (the first n of the split); all when omitted."""
    k: int = 1
    """Attempts per task."""
    guard: bool = False
    alpha: float = 0.05
    """A success drop with a paired p-value below this blocks the promotion."""
    out: str = "runs/gate"
    registry: str = "runs/registry"
    name: str | None = None
    """The candidate's name in the registry (default: its directory's name, or the spec)."""
    dtype: str = "auto"
    max_new_tokens: int = 256
    env_kwargs: dict[str, Any] | None = None


def policy_spec(model: str, what: str) -> str:
    """``what`` as a policy spec: an adapter directory on ``model``, ``base``, or a spec as it is."""
    if what == "base":
        return f"hf:{model}"
    if Path(what).is_dir():
        return f"hf:{model}@{what}"
    if ":" in what or what in ("oracle", "noop"):
        return what
    raise UserError(f"{what!r} is not an adapter directory, 'base', or a policy spec (hf:..., oracle, pkg.module:f)")


def _evaluate(config: GateConfig, spec: str, out: Path) -> Any:
    local = spec.startswith("hf:")
    return evaluate(
        CollectConfig(
            env=config.env,
            policy=spec,
            out=str(out),
            split=config.split,
            n=config.n,
            k=config.k,
            env_kwargs=dict(config.env_kwargs or {}),
            policy_kwargs={"dtype": config.dtype, "max_new_tokens": config.max_new_tokens} if local else {},
            run=RunConfig(guard=config.guard),
        )
    )


def run_gate(config: GateConfig) -> dict[str, Any]:
    """Evaluate both, compare them paired, decide, and record the decision (see the module docstring)."""
    if not 0 < config.alpha < 1:
        raise UserError(f"alpha is a probability in (0, 1), not {config.alpha}")
    out = Path(config.out)
    specs = {
        "baseline": policy_spec(config.model, config.baseline),
        "candidate": policy_spec(config.model, config.candidate),
    }
    summaries = {role: _evaluate(config, spec, out / role) for role, spec in specs.items()}
    runs = [(role, summaries[role], load_trajectories(out / role)) for role in ("baseline", "candidate")]
    success, compliance = compare_runs(runs[0], runs[1])
    reasons = []
    if success.significant and success.difference < 0:
        reasons.append(f"success is worse: {success.verdict}")
    if compliance.b_rate < compliance.a_rate:
        reasons.append(
            f"compliance is lower: {compliance.b_rate:.1%} against {compliance.a_rate:.1%} on {compliance.n} tasks"
        )
    promote = not reasons
    name = config.name or (Path(config.candidate).name if Path(config.candidate).is_dir() else config.candidate)
    decision = {
        "candidate": name,
        "candidate_policy": specs["candidate"],
        "baseline_policy": specs["baseline"],
        "promote": promote,
        "reasons": reasons or [f"success: {success.verdict}; compliance not lower"],
        "env": config.env,
        "split": config.split,
        "tasks": success.n,
        "k": config.k,
        "guard": config.guard,
        "alpha": config.alpha,
        "success": asdict(success) | {"verdict": success.verdict},
        "compliance": asdict(compliance) | {"verdict": compliance.verdict},
        "summaries": {role: str(out / role / "summary.json") for role in specs},
        "decided_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(out / "gate.json", decision)
    lineage = trace(config.candidate) if find_manifest(config.candidate) else None
    Registry(config.registry).record_gate(name, specs["candidate"], lineage, decision)
    return decision
