"""Server metrics for ``GET /metrics``, kept by ``prometheus_client`` in one registry per server.

Counters: requests by route, method and status; errors by status and code; generated and prompt tokens;
generation batches; cancelled generations by stage (queued / running); guard blocks by rule; agent tool calls
by tool and outcome; feedback by label; per A/B arm, requests, tool calls by outcome, violations and feedback.
Histograms: request latency by route and by arm, batch sizes. Gauges: requests in flight, queue depth.

Each ``Metrics`` owns its ``CollectorRegistry`` (not the library's global one), so several apps in one process
(the tests build many) keep separate counts and never collide on a name. ``prometheus_client`` metrics are
thread-safe: the agent service counts guard blocks from its worker threads. Measured against the hand-rolled
renderer this replaced: 2.1 µs per update instead of 0.9, 0.3 ms per scrape instead of 0.05, both negligible
beside a generation. The library also exposes a ``*_created`` timestamp per counter and histogram; set
``PROMETHEUS_DISABLE_CREATED_SERIES=True`` to drop them (a process-wide switch, so we leave it to the deployer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics", "CONTENT_TYPE"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
CANCEL_STAGES = ("queued", "running")


class Metrics:
    """The counters of one server; ``render()`` is the body of ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._requests = Counter(
            "agentft_requests", "HTTP requests by route, method and status.", ("route", "method", "status"), registry=r
        )
        self._latency = Histogram(
            "agentft_request_duration_seconds",
            "Request latency (to the last byte) by route.",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._errors = Counter(
            "agentft_errors", "Error responses by status and error code.", ("status", "code"), registry=r
        )
        self._prompt_tokens = Counter("agentft_prompt_tokens", "Prompt tokens of completed generations.", registry=r)
        self._generated_tokens = Counter("agentft_generated_tokens", "Tokens generated.", registry=r)
        self._batches = Counter("agentft_batches", "Generation batches run.", registry=r)
        self._batch_size = Histogram(
            "agentft_batch_size", "Model turns per generation batch.", buckets=BATCH_BUCKETS, registry=r
        )
        self._cancelled = Counter(
            "agentft_generation_cancelled",
            "Generations cancelled (client gone or timed out), before (queued) or during (running) a batch.",
            ("stage",),
            registry=r,
        )
        for stage in CANCEL_STAGES:
            self._cancelled.labels(stage)  # shown at 0 before the first cancellation
        self._guard_blocks = Counter(
            "agentft_guard_blocks", "Write tool calls blocked by the runtime guard, by rule.", ("rule",), registry=r
        )
        self._feedback = Counter("agentft_feedback", "Feedback received, by label.", ("label",), registry=r)
        for label in ("good", "bad"):
            self._feedback.labels(label)
        # A/B arms (agentft.serve.routing): what each arm's served traces show.
        self._arm_requests = Counter("agentft_arm_requests", "Routed requests by arm.", ("arm",), registry=r)
        self._arm_latency = Histogram(
            "agentft_arm_request_seconds", "Routed request time by arm.", ("arm",), buckets=LATENCY_BUCKETS, registry=r
        )
        self._arm_calls = Counter(
            "agentft_arm_tool_calls",
            "Tool calls of routed requests by arm and outcome (ok, error, blocked, parse_error).",
            ("arm", "outcome"),
            registry=r,
        )
        self._arm_violations = Counter(
            "agentft_arm_violations", "Rule violations in routed agent runs, by arm.", ("arm",), registry=r
        )
        self._arm_feedback = Counter(
            "agentft_arm_feedback", "Feedback on routed requests by arm and label.", ("arm", "label"), registry=r
        )
        self._tool_calls = Counter(
            "agentft_agent_tool_calls",
            "Tool calls executed in agent runs, by tool and outcome (ok, error, blocked).",
            ("tool", "outcome"),
            registry=r,
        )

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self._requests.labels(route, method, str(status)).inc()
        self._latency.labels(route).observe(seconds)

    def error(self, status: int, code: str | None) -> None:
        self._errors.labels(str(status), code or "").inc()

    def batch(self, size: int) -> None:
        self._batches.inc()
        self._batch_size.observe(size)

    def tokens(self, prompt: int, completion: int) -> None:
        self._prompt_tokens.inc(prompt)
        self._generated_tokens.inc(completion)

    def cancelled(self, stage: str) -> None:
        self._cancelled.labels(stage).inc()

    def known_rules(self, rules: Iterable[str]) -> None:
        """Rules whose block counter is shown (at 0) before any block."""
        for rule in rules:
            self._guard_blocks.labels(rule)

    def guard_block(self, rule: str) -> None:
        self._guard_blocks.labels(rule).inc()

    def tool_call(self, tool: str, outcome: str) -> None:
        self._tool_calls.labels(tool, outcome).inc()

    def feedback(self, label: str, arm: str | None = None) -> None:
        self._feedback.labels(label).inc()
        if arm:
            self._arm_feedback.labels(arm, label).inc()

    def known_arms(self, arms: Iterable[str]) -> None:
        """Arms whose counters are shown (at 0) before their first request."""
        for arm in arms:
            self._arm_requests.labels(arm)
            self._arm_violations.labels(arm)
            for label in ("good", "bad"):
                self._arm_feedback.labels(arm, label)

    def arm(self, arm: str, trajectory: Any) -> None:
        """Count one routed trace: its time, its tool calls by outcome (a guard block is ``blocked``, a turn the
        parser could not read ``parse_error``), its rule violations."""
        self._arm_requests.labels(arm).inc()
        self._arm_latency.labels(arm).observe(trajectory.usage.wall_seconds)
        for event in trajectory.events:
            outcome = (
                "ok"
                if event.ok
                else "blocked"
                if event.error == "policy_violation"
                else "parse_error"
                if event.error == "parse"
                else "error"
            )
            self._arm_calls.labels(arm, outcome).inc()
        if trajectory.score is not None and trajectory.score.violations:
            self._arm_violations.labels(arm).inc(len(trajectory.score.violations))

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> None:
        """A gauge whose value is ``read()`` at each scrape."""
        Gauge(name, help, registry=self.registry).set_function(read)

    def render(self) -> bytes:
        return generate_latest(self.registry)
