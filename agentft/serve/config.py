"""The server's configuration, and the state one running server shares between its routes."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentft.errors import UserError
from agentft.serve.errors import APIError

if TYPE_CHECKING:
    from agentft.serve.agent import AgentService
    from agentft.serve.engine import Backend, Engine
    from agentft.serve.metrics import Metrics
    from agentft.serve.recorder import Recorder
    from agentft.serve.routing import Router
    from agentft.trajectory import Trajectory

__all__ = ["ServeConfig", "ServeState", "Slot", "api_keys_from_env", "check_api_keys", "is_loopback"]

DRIFT_WINDOW = 200
"""Recent traces the ``agentft_drift_*`` gauges are computed over."""


@dataclass
class ServeConfig:
    model: str = "smollm2-135m"
    """Embedded model name or local model directory (the base model; its id in ``/v1/models``)."""
    adapters: dict[str, str] = field(default_factory=dict)
    """LoRA adapters by model id: a request's ``model`` selects one."""
    env: str | None = None
    """Environment for ``/v1/agent/runs`` (built-in name or ``pkg.module:factory``)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    rag_store: str | None = None
    """Knowledge store directory whose search tool is added to agent runs (needs ``agentft[rag]``)."""
    rag_collection: str = "handbook"
    api_keys: list[str] = field(default_factory=list)
    """Bearer keys; with none, only loopback clients are served."""
    guard: bool = False
    """Check the environment's rules before every write tool call of an agent run, and block violations."""
    spotlight: bool = False
    """Agent runs: show the model tool results between markers the system prompt calls data (``agentft.attacks``)."""
    best_of: int = 1
    """Agent runs: candidates per model turn, the request's own (at its temperature) and ``best_of - 1`` sampled
    at ``best_of_temperature``; ``scorer`` keeps the best, the request's own on a tie (``agentft.bestof``)."""
    best_of_temperature: float = 0.7
    scorer: str = "rules"
    """What ranks best-of-N candidates: ``rules`` or ``rm:DIR``."""
    route: dict[str, float] | None = None
    """A/B routing: arm (a model id: an adapter's name, or the base model's) -> relative weight
    (``agentft.serve.routing``); requests for ``route_name`` are split between the arms."""
    route_name: str = "routed"
    max_batch: int = 16
    batch_wait_ms: float = 10.0
    max_concurrency: int = 64
    """Requests admitted at once (queued or generating); past it a request gets 429."""
    timeout_s: float = 120.0
    """Per-request limit (a whole agent run included); past it the generation is cancelled and the answer is 504."""
    max_body_bytes: int = 1_000_000
    log_dir: str | None = "runs/serve-logs"
    """Where served conversations are appended as PII-scrubbed trajectories; None records nothing."""
    default_max_tokens: int = 256
    """Tokens generated when a request gives no max_tokens (capped by what the context leaves)."""
    agent_max_steps: int = 10
    agent_max_steps_limit: int = 50
    dtype: str = "float32"
    device: str = "cpu"
    header_timeout_s: float = 10.0
    """Seconds a connection has to send its request line and headers (from connecting, or from its previous
    answer); then it is closed (408 if it had started). Slowloris clients cannot hold connections for longer."""
    body_timeout_s: float = 30.0
    """Seconds a request has to send its whole body once its headers are in; then 408."""
    max_connections: int = 200
    """Open connections at once (keep under the process's file-descriptor limit); past it a new one gets 503."""
    max_connections_per_client: int = 64
    """Open connections from one client address; past it a new one from that address gets 503."""

    def __post_init__(self) -> None:
        check_api_keys(self.api_keys)
        for name in ("header_timeout_s", "body_timeout_s", "max_connections", "max_connections_per_client"):
            if not getattr(self, name) > 0:
                raise UserError(f"{name} must be positive, not {getattr(self, name)!r}")


def check_api_keys(keys: list[str]) -> None:
    """UserError for a key that is empty or holds whitespace: ``--api-key "$UNSET"`` must not open the server."""
    for key in keys:
        if not key or not key.strip():
            raise UserError(
                "an API key is empty (an unset shell variable?): pass a real key with --api-key, or none to "
                "serve loopback clients only"
            )
        if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
            raise UserError("an API key must be printable ASCII without spaces (clients send it in a header)")


def api_keys_from_env() -> list[str]:
    """Keys from ``$AGENTFT_API_KEYS`` (comma-separated; blanks ignored)."""
    return [k.strip() for k in os.environ.get("AGENTFT_API_KEYS", "").split(",") if k.strip()]


def is_loopback(host: str | None) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Slot:
    """One admitted request; ``release()`` (idempotent) frees it."""

    def __init__(self, state: ServeState) -> None:
        self._state: ServeState | None = state

    def release(self) -> None:
        if self._state is not None:
            self._state.in_flight -= 1
            self._state = None


class ServeState:
    """Everything the routes of one server share (``app.state.serve``)."""

    def __init__(
        self,
        config: ServeConfig,
        engine: Engine,
        metrics: Metrics,
        recorder: Recorder | None,
        agent: AgentService | None,
        router: Router | None = None,
    ) -> None:
        self.config = config
        self.router = router
        self.recent: deque[Trajectory] = deque(maxlen=DRIFT_WINDOW)
        """The last traces served (scrubbed when recorded), for the ``agentft_drift_*`` gauges."""
        self._drift: tuple[int, dict[str, Any]] | None = None
        self._served = 0
        self.engine = engine
        self.backend: Backend = engine.backend
        self.metrics = metrics
        self.recorder = recorder
        self.agent = agent
        self.in_flight = 0

    def model_ids(self) -> list[str]:
        routed = [self.router.name] if self.router is not None else []
        return [self.backend.model_name, *self.backend.adapters, *routed]

    def resolve_model(self, requested: str | None, key: str | None = None) -> tuple[str, str | None, str | None]:
        """(model id, adapter or None for the base model, A/B arm or None); an unknown id is a 404. With a route,
        a request for its name (or for no model) goes to the arm of ``key`` (``agentft.serve.routing``)."""
        if self.router is not None and requested in (None, "", self.router.name):
            arm, _ = self.router.arm(key)
            return arm, None if arm == self.backend.model_name else arm, arm
        if requested in (None, "", self.backend.model_name):
            return self.backend.model_name, None, None
        if requested in self.backend.adapters:
            return requested, requested, None
        listed = ", ".join(self.model_ids())
        raise APIError(
            404,
            f"the model {requested!r} does not exist; this server has {listed}",
            code="model_not_found",
            param="model",
        )

    async def record(self, trajectory: Trajectory) -> None:
        """Count a served trace in its arm's metrics and append it to the log (scrubbed)."""
        if arm := trajectory.metadata.get("arm"):
            self.metrics.arm(arm, trajectory)
        clean = await asyncio.to_thread(self.recorder.record, trajectory) if self.recorder is not None else None
        self.recent.append(clean or trajectory)
        self._served += 1

    def drift(self) -> dict[str, Any]:
        """``agentft.monitor.profile`` of the recent traces, computed once per new trace."""
        from agentft.monitor import profile

        if self._drift is None or self._drift[0] != self._served:
            self._drift = (self._served, profile(list(self.recent), count_pii=self.recorder is not None))
        return self._drift[1]

    def acquire(self) -> Slot:
        if self.in_flight >= self.config.max_concurrency:
            raise APIError(
                429,
                f"the server is at its concurrency limit ({self.config.max_concurrency} requests); retry shortly",
                code="too_many_requests",
                headers={"Retry-After": "1"},
            )
        self.in_flight += 1
        return Slot(self)
