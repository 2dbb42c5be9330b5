"""Server metrics in the Prometheus text exposition format (version 0.0.4), without a client library.

Counters: requests by route, method and status; errors by status and code; generated and prompt tokens;
generation batches; cancelled generations by stage (queued / running); guard blocks by rule; agent tool calls
by tool and outcome. Histograms: request latency by route, batch sizes. Gauges: requests in flight, queue depth.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable

__all__ = ["Metrics", "Histogram", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Iterable[str], values: Iterable[object], extra: str = "") -> str:
    parts = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Histogram:
    def __init__(self, buckets: Iterable[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.sum += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1

    def lines(self, name: str, label_names: tuple[str, ...], label_values: tuple[object, ...]) -> list[str]:
        out = [f"{name}_bucket{_labels(label_names, label_values, f'le={_q(_number(b))}')} {c}"
               for b, c in zip(self.buckets, self.counts, strict=True)]
        out.append(f"{name}_bucket{_labels(label_names, label_values, _INF)} {self.count}")
        out.append(f"{name}_sum{_labels(label_names, label_values)} {_number(round(self.sum, 6))}")
        out.append(f"{name}_count{_labels(label_names, label_values)} {self.count}")
        return out


def _q(text: str) -> str:
    return f'"{text}"'


_INF = 'le="+Inf"'


class Metrics:
    """Thread-safe counters of one server; ``render()`` is the body of ``GET /metrics``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.errors: Counter[tuple[str, str]] = Counter()
        self.latency: dict[str, Histogram] = {}
        self.batch_sizes = Histogram(BATCH_BUCKETS)
        self.batches = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cancellations: Counter[str] = Counter()
        self.guard_blocks: Counter[str] = Counter()
        self.tool_calls: Counter[tuple[str, str]] = Counter()
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, method, str(status))] += 1
            self.latency.setdefault(route, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def error(self, status: int, code: str | None) -> None:
        with self._lock:
            self.errors[(str(status), code or "")] += 1

    def batch(self, size: int) -> None:
        with self._lock:
            self.batches += 1
            self.batch_sizes.observe(size)

    def tokens(self, prompt: int, completion: int) -> None:
        with self._lock:
            self.prompt_tokens += prompt
            self.completion_tokens += completion

    def cancelled(self, stage: str) -> None:
        with self._lock:
            self.cancellations[stage] += 1

    def known_rules(self, rules: Iterable[str]) -> None:
        """Rules whose block counter is shown (at 0) before any block."""
        with self._lock:
            for rule in rules:
                self.guard_blocks.setdefault(rule, 0)

    def guard_block(self, rule: str) -> None:
        with self._lock:
            self.guard_blocks[rule] += 1

    def tool_call(self, tool: str, outcome: str) -> None:
        with self._lock:
            self.tool_calls[(tool, outcome)] += 1

    def gauge(self, name: str, help: str, read: Callable[[], float]) -> None:
        self.gauges[name] = (help, read)

    def render(self) -> str:
        lines: list[str] = []

        def family(name: str, kind: str, help: str) -> None:
            lines.append(f"# HELP {name} {help}")
            lines.append(f"# TYPE {name} {kind}")

        with self._lock:
            family("agentft_requests_total", "counter", "HTTP requests by route, method and status.")
            for (route, method, status), n in sorted(self.requests.items()):
                lines.append(f"agentft_requests_total{_labels(('route', 'method', 'status'), (route, method, status))}"
                             f" {n}")
            family("agentft_request_duration_seconds", "histogram", "Request latency (to the last byte) by route.")
            for route, histogram in sorted(self.latency.items()):
                lines.extend(histogram.lines("agentft_request_duration_seconds", ("route",), (route,)))
            family("agentft_errors_total", "counter", "Error responses by status and error code.")
            for (status, code), n in sorted(self.errors.items()):
                lines.append(f"agentft_errors_total{_labels(('status', 'code'), (status, code))} {n}")
            family("agentft_prompt_tokens_total", "counter", "Prompt tokens of completed generations.")
            lines.append(f"agentft_prompt_tokens_total {self.prompt_tokens}")
            family("agentft_generated_tokens_total", "counter", "Tokens generated.")
            lines.append(f"agentft_generated_tokens_total {self.completion_tokens}")
            family("agentft_batches_total", "counter", "Generation batches run.")
            lines.append(f"agentft_batches_total {self.batches}")
            family("agentft_batch_size", "histogram", "Model turns per generation batch.")
            lines.extend(self.batch_sizes.lines("agentft_batch_size", (), ()))
            family("agentft_generation_cancelled_total", "counter",
                   "Generations cancelled (client gone or timed out), before (queued) or during (running) a batch.")
            for stage in ("queued", "running"):
                lines.append(f"agentft_generation_cancelled_total{_labels(('stage',), (stage,))} "
                             f"{self.cancellations[stage]}")
            family("agentft_guard_blocks_total", "counter", "Write tool calls blocked by the runtime guard, by rule.")
            for rule, n in sorted(self.guard_blocks.items()):
                lines.append(f"agentft_guard_blocks_total{_labels(('rule',), (rule,))} {n}")
            family("agentft_agent_tool_calls_total", "counter", "Tool calls executed in agent runs, by tool and "
                   "outcome (ok, error, blocked).")
            for (tool, outcome), n in sorted(self.tool_calls.items()):
                lines.append(f"agentft_agent_tool_calls_total{_labels(('tool', 'outcome'), (tool, outcome))} {n}")
        for name, (help, read) in sorted(self.gauges.items()):
            family(name, "gauge", help)
            lines.append(f"{name} {_number(read())}")
        return "\n".join(lines) + "\n"
