"""Drift monitoring (issue 19, item 4): ``agentft monitor`` stays quiet on traffic like the baseline and flags
an injected drift (a tool that starts failing), naming the metric; ``agentft serve`` shows the same rates as
gauges."""

from __future__ import annotations

import httpx
import pytest
from typer.testing import CliRunner

from agentft.authoring import ToolError, tool
from agentft.builtin_envs.claims import ClaimsEnvironment
from agentft.builtin_tools.claims import ClaimsDesk
from agentft.cli import app
from agentft.monitor import monitor, profile
from agentft.runner import RunConfig, plan_episodes, run_episodes
from agentft.trajectory import TrajectoryWriter


class BrokenDesk(ClaimsDesk):
    @tool(effect="read")
    def get_claim(self, claim_id: str) -> dict:
        """Look up a claim (the claims system's lookup is down).

        Args:
            claim_id: e.g. CLM-123456.
        """
        raise ToolError("claims lookup unavailable (HTTP 503)")


class BrokenClaims(ClaimsEnvironment):
    def make_toolkit(self, conn):
        return BrokenDesk(conn, handbook=super().make_toolkit(conn).handbook)


def oracle_run(env, split: str, n: int = 90):
    return run_episodes(env, env.oracle(), plan_episodes(env.tasks(split)[:n]), RunConfig(batch_size=64))


@pytest.fixture(scope="module")
def runs():
    env = ClaimsEnvironment(sandbox=False)
    return {
        "baseline": oracle_run(env, "validation"),
        "same": oracle_run(env, "test"),
        "broken": oracle_run(BrokenClaims(sandbox=False), "test"),
    }


def test_unchanged_traffic_is_quiet_and_a_failing_tool_is_flagged(runs):
    quiet = monitor(runs["same"], runs["baseline"], window=45, min_episodes=30)
    assert len(quiet.windows) == 2 and quiet.drifts == []

    drifted = monitor(runs["same"][:45] + runs["broken"][:45], runs["baseline"], window=45, min_episodes=30)
    assert {d.window for d in drifted.drifts} == {1}  # the traffic after the outage, not before
    metrics = {d.metric for d in drifted.latest_drifts}
    assert "tool_error_rate" in metrics, drifted.drifts
    error = next(d for d in drifted.latest_drifts if d.metric == "tool_error_rate")
    assert error.baseline == 0.0 and error.value > 0.05 and "points" in error.why


def test_the_profile_reads_rates_from_the_traces(runs):
    base = profile(runs["baseline"])
    assert base["episodes"] == 90 and base["tool_error_rate"] == 0.0 and base["violation_rate"] == {}
    assert abs(sum(base["tool_mix"].values()) - 1.0) < 1e-9 and base["prompt_tokens"] == 0.0  # the oracle: no tokens
    assert base["pii_per_episode"] > 0  # emails and dates of birth in the openings and results
    assert profile(runs["broken"])["tool_error_rate"] > 0


def test_monitor_cli_writes_the_report_and_exits_1_on_drift(runs, tmp_path):
    for name in ("baseline", "same", "broken"):
        with TrajectoryWriter(tmp_path / name / "trajectories.jsonl") as writer:
            writer.write_batch(runs[name])
    runner = CliRunner()
    args = ["monitor", "--baseline", str(tmp_path / "baseline"), "--window", "90", "--min-episodes", "30"]
    quiet = runner.invoke(app, [*args, "--logs", str(tmp_path / "same"), "--out", str(tmp_path / "quiet.html")])
    assert quiet.exit_code == 0, quiet.output
    assert "no drift in the latest window" in quiet.output
    drifted = runner.invoke(app, [*args, "--logs", str(tmp_path / "broken"), "--out", str(tmp_path / "drift.html")])
    assert drifted.exit_code == 1, drifted.output
    assert "tool_error_rate" in drifted.output
    page = (tmp_path / "drift.html").read_text()
    assert "&#9888;" in page and "tool_error_rate" in page and "<svg" in page
    lenient = runner.invoke(
        app,
        [
            *args,
            "--logs",
            str(tmp_path / "broken"),
            "--out",
            str(tmp_path / "x.html"),
            "--threshold",
            "tool_error_rate=0.9",
        ]
        + ["--threshold", "tool_mix=1", "--threshold", "violation_rate=1", "--threshold", "unknown_tool_rate=1"],
    )
    assert "tool_error_rate" not in lenient.output.split("->")[0]


def test_serve_shows_the_drift_rates_as_gauges(tmp_path):
    pytest.importorskip("fastapi")
    from test_serve import KEY, metrics, sample

    from agentft.serve import Engine, ScriptedBackend, ServeConfig, create_app
    from agentft.testing import serve_in_thread

    broken = '<tool_call>{"name": "get_claim", "arguments": {"claim_id": </tool_call>'
    app_ = create_app(ServeConfig(api_keys=[KEY], log_dir=str(tmp_path)), Engine(ScriptedBackend(broken)))
    tools = [{"type": "function", "function": {"name": "get_claim", "parameters": {"type": "object"}}}]
    with serve_in_thread(app_) as url:
        assert sample(metrics(url), "agentft_drift_parse_error_rate") != sample(
            metrics(url), "agentft_drift_parse_error_rate"
        )  # NaN
        for _ in range(3):
            httpx.post(
                f"{url}/v1/chat/completions",
                headers={"Authorization": f"Bearer {KEY}"},
                json={"messages": [{"role": "user", "content": "claim?"}], "tools": tools},
                timeout=30,
            )
        text = metrics(url)
    assert sample(text, "agentft_drift_parse_error_rate") == 1.0
    assert sample(text, "agentft_drift_prompt_tokens") > 0
