"""``agentft quickstart``: the main job on the embedded model.

Stages in this version: (1) pull the embedded model; (2) probe it: eight claims-desk requests that each
need one tool call are sent as one batch through the tool-aware chat format, and every reply is
scored against the expected call. An untuned SmolLM2 scores near zero here; this is the baseline the
fine-tuning stages start from.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console

__all__ = ["run_quickstart", "PROBE_TOOLS", "PROBE_REQUESTS"]


def _tool(name: str, description: str, **params: str) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": {p: {"type": "string", "description": d}
                                                        for p, d in params.items()},
                       "required": list(params)}}}


PROBE_TOOLS = [
    _tool("get_claim", "Look up an insurance claim.", claim_id="Claim id, e.g. CLM-1001"),
    _tool("get_policy", "Look up an insurance policy.", policy_id="Policy id, e.g. POL-2001"),
    _tool("find_customer", "Find a customer by email.", email="Customer email"),
]
PROBE_SYSTEM = "You are the claims desk assistant of Acme Insurance. Use the tools to answer."
PROBE_REQUESTS: list[tuple[str, str, dict[str, str]]] = [
    ("What is the status of claim CLM-1001?", "get_claim", {"claim_id": "CLM-1001"}),
    ("Can you check claim CLM-2040 for me?", "get_claim", {"claim_id": "CLM-2040"}),
    ("Is my policy POL-2001 still active?", "get_policy", {"policy_id": "POL-2001"}),
    ("Please pull up policy POL-7313.", "get_policy", {"policy_id": "POL-7313"}),
    ("My email is dana@example.com, find my account.", "find_customer", {"email": "dana@example.com"}),
    ("Look me up: lee.wong@example.org", "find_customer", {"email": "lee.wong@example.org"}),
    ("Claim CLM-3300: has it been paid yet?", "get_claim", {"claim_id": "CLM-3300"}),
    ("What does policy POL-1180 cover?", "get_policy", {"policy_id": "POL-1180"}),
]


def _probe(policy: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    conversations = [[{"role": "system", "content": PROBE_SYSTEM}, {"role": "user", "content": request}]
                     for request, _, _ in PROBE_REQUESTS]
    started = time.perf_counter()
    replies = policy.act(conversations, PROBE_TOOLS)
    seconds = time.perf_counter() - started
    records, called, correct, malformed = [], 0, 0, 0
    for (request, tool, arguments), reply in zip(PROBE_REQUESTS, replies, strict=True):
        calls = reply.message.tool_calls
        called += bool(calls)
        malformed += bool(reply.errors)
        right = len(calls) == 1 and calls[0].function.name == tool and calls[0].function.arguments == arguments
        correct += right
        records.append({"request": request, "expected": {"name": tool, "arguments": arguments},
                        "reply": reply.model_dump(), "correct": right})
    n = len(PROBE_REQUESTS)
    summary = {"requests": n, "tool_call_rate": called / n, "correct_call_rate": correct / n,
               "malformed_rate": malformed / n, "seconds": round(seconds, 2),
               "completion_tokens": sum(r.completion_tokens for r in replies)}
    return summary, records


def run_quickstart(*, out: Path, model: str = "smollm2-135m", console: Console | None = None) -> dict[str, Any]:
    """Run every stage available in this version; write ``summary.json`` and ``probe.jsonl`` under ``out``."""
    from agentft.models import EMBEDDED_MODELS, pull
    from agentft.policies.hf import HFPolicy

    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    started = time.perf_counter()
    if model in EMBEDDED_MODELS:
        with console.status(f"[1/2] pulling {model} (converted once, then cached)"):
            pull(model)
    timings["pull_s"] = round(time.perf_counter() - started, 2)

    started = time.perf_counter()
    with console.status(f"[2/2] probing {model}: {len(PROBE_REQUESTS)} tool-use requests in one batch"):
        policy = HFPolicy(model, max_new_tokens=64)
        probe, records = _probe(policy)
    timings["probe_s"] = round(time.perf_counter() - started, 2)

    with (out / "probe.jsonl").open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    summary = {"model": model, "base_probe": probe, "timings": timings}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    console.print(f"[bold]{model}[/bold] untuned: {probe['correct_call_rate']:.0%} correct tool calls, "
                  f"{probe['tool_call_rate']:.0%} attempted, {probe['malformed_rate']:.0%} malformed "
                  f"({probe['requests']} requests). Wrote {out}/summary.json and probe.jsonl")
    return summary
