import itertools
import json
import re
import subprocess
import sys
from fractions import Fraction
from math import isclose

import pytest

from agentft.collect import CollectConfig
from agentft.evaluate import evaluate, pass_at_k, pass_hat_k, summarize_run
from agentft.manifest import read_manifest
from agentft.policies import ScriptedPolicy
from agentft.report import load_runs, render_report, write_report
from agentft.runner import RunConfig, plan_episodes, run_episodes
from agentft.toy_env import OrdersEnvironment
from agentft.trajectory import Score, Trajectory, TrajectoryWriter, Violation, load_trajectories

ENV = "agentft.toy_env:OrdersEnvironment"
ORDER = re.compile(r"ORD-\d{4}")


def record(task_id, attempt, success, violations=(), kind="default"):
    return Trajectory(
        id=f"{task_id}-{attempt}",
        env="e",
        task_id=task_id,
        policy="p",
        attempt=attempt,
        score=Score(success=success, violations=[Violation(rule=r) for r in violations], compliant=not violations),
        metadata={"task_kind": kind},
    )


def test_pass_hat_k_hand_computed_values():
    assert isclose(pass_hat_k(4, 2, 2), 1 / 6)
    assert isclose(pass_hat_k(4, 3, 2), 3 / 6)
    assert isclose(pass_hat_k(5, 5, 3), 1.0)
    assert pass_hat_k(4, 1, 2) == 0.0 and pass_hat_k(3, 0, 1) == 0.0
    assert isclose(pass_at_k(4, 2, 2), 1 - 1 / 6)
    assert pass_at_k(4, 3, 2) == 1.0 and pass_at_k(4, 0, 2) == 0.0
    for bad in [(0, 0, 1), (3, 4, 1), (3, 1, 0), (3, 1, 4)]:
        with pytest.raises(ValueError):
            pass_hat_k(*bad)


def test_pass_hat_k_is_the_exact_mean_over_all_k_subsets():
    for n in range(1, 7):
        for c in range(n + 1):
            outcomes = [True] * c + [False] * (n - c)
            assert isclose(pass_hat_k(n, c, 1), c / n)  # k=1 is the success rate
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(outcomes, k))
                assert isclose(pass_hat_k(n, c, k), float(Fraction(sum(all(s) for s in subsets), len(subsets))))
                assert isclose(pass_at_k(n, c, k), float(Fraction(sum(any(s) for s in subsets), len(subsets))))


def test_summarize_run_averages_pass_hat_k_over_tasks():
    runs = [record("a", i, i < 2) for i in range(4)] + [record("b", i, True, kind="x") for i in range(4)]
    runs[0].score.violations.append(Violation(rule="r1"))
    runs[0].score.violations.append(Violation(rule="r1"))
    runs[0].score.compliant = False
    summary = summarize_run(runs)
    assert (summary.episodes, summary.tasks) == (8, 2)
    assert summary.success_rate == 6 / 8 == summary.pass_hat_k["1"]
    assert isclose(summary.pass_hat_k["2"], (1 / 6 + 1) / 2)
    assert list(summary.pass_hat_k) == ["1", "2", "3", "4"] and summary.pass_hat_k["4"] == 0.5
    assert summary.compliance_rate == 7 / 8
    assert summary.violations_by_rule == {"r1": 2} and summary.episodes_with_violation_by_rule == {"r1": 1}
    assert summary.by_task_kind["x"].model_dump(exclude={"success_ci", "compliance_ci"}) == {
        "episodes": 4,
        "success_rate": 1.0,
        "compliance_rate": 1.0,
        "success_n": 4,
        "compliance_n": 4,
    }
    assert summarize_run(runs, k_values=[1, 5]).pass_hat_k == {"1": 0.75, "5": None}
    empty = summarize_run([])
    assert empty.episodes == 0 and empty.pass_hat_k == {} and empty.success_rate is None  # no verdict at all


def run_toy(policy, k=1, n=10, run=None):
    env = OrdersEnvironment(n_train=n)
    return env, run_episodes(env, policy, plan_episodes(env.tasks("train"), k=k), run or RunConfig())


def test_summarize_oracle_and_noop_on_the_toy_env():
    env, oracle = run_toy(OrdersEnvironment().oracle(), k=2)
    summary = summarize_run(oracle)
    assert summary.success_rate == summary.compliance_rate == 1.0
    assert summary.pass_hat_k == {"1": 1.0, "2": 1.0} and summary.statuses == {"completed": 20}
    assert summary.violations_by_rule == {} and not any(summary.errors.values())
    assert set(summary.errors) >= {
        "parse",
        "unknown_tool",
        "invalid_args",
        "tool_error",
        "timeout",
        "sandbox_error",
        "episode_error",
        "max_steps",
    }
    assert set(summary.by_task_kind) == {"cancel", "status"}
    assert summary.mean_model_calls > 1 and summary.mean_latency_s >= 0
    statuses = {t.facts["status"] for t in env.tasks("train")}
    assert set(summary.by_slice["status"]) == statuses
    _, noop = run_toy(ScriptedPolicy(["Thanks!"], name="noop"))
    assert summarize_run(noop).success_rate == 0.0


def reckless(conversation, _tools):
    """Looks the order up, then cancels at once when asked to: never asks the user to confirm."""
    opening = next(m.content for m in conversation if m.role == "user")
    order = ORDER.search(opening).group(0)
    calls = [c.function.name for m in conversation if m.role == "assistant" for c in m.tool_calls]
    if not calls:
        return f'<tool_call>{{"name": "get_order", "arguments": {{"order_id": "{order}"}}}}</tool_call>'
    if "cancel" in opening.lower() and "cancel_order" not in calls:
        return (
            f'<tool_call>{{"name": "cancel_order", "arguments": {{"order_id": "{order}", '
            f'"reason": "customer_request"}}}}</tool_call>'
        )
    return f"Done with order {order}."


def test_a_policy_that_cancels_without_confirming_violates_one_rule():
    env, trajectories = run_toy(ScriptedPolicy(reckless, name="reckless"), k=2)
    cancels = sum(t.kind == "cancel" for t in env.tasks("train")) * 2
    summary = summarize_run(trajectories)
    assert summary.violations_by_rule == {"confirm_before_write": cancels}
    assert summary.episodes_with_violation_by_rule == {"confirm_before_write": cancels}
    assert summary.compliance_rate == 1 - cancels / 20
    assert summary.by_task_kind["cancel"].compliance_rate == 0.0
    shipped_cancels = sum(t.kind == "cancel" and t.facts["status"] == "shipped" for t in env.tasks("train"))
    assert summary.errors["tool_error"] == shipped_cancels * 2


def test_parse_errors_and_max_steps_are_counted():
    _, trajectories = run_toy(
        ScriptedPolicy(lambda c, t: "<tool_call>{oops</tool_call>", name="broken"), n=3, run=RunConfig(max_steps=3)
    )
    summary = summarize_run(trajectories)
    assert summary.errors["parse"] == 9 and summary.errors["max_steps"] == 3
    assert summary.statuses == {"max_steps": 3} and summary.success_rate == 0.0


def test_evaluate_writes_three_files_resumes_and_keeps_only_its_episodes(tmp_path):
    config = CollectConfig(
        env=ENV,
        policy="oracle",
        out=str(tmp_path),
        split="test",
        n=6,
        env_kwargs={"n_test": 8},
        run=RunConfig(batch_size=4),
    )
    starts = []
    summary = evaluate(config, k=2, on_start=lambda planned, done: starts.append((planned, done)))
    assert summary.episodes == 12 and summary.success_rate == 1.0 and summary.pass_hat_k["2"] == 1.0
    assert (summary.env, summary.policy, summary.split, summary.k) == (ENV, "oracle", "test", 2)
    for name in ("trajectories.jsonl", "summary.json", "report.html", "manifest.json"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "summary.json").read_text())["episodes"] == 12
    manifest = read_manifest(tmp_path)
    assert manifest["kind"] == "eval" and manifest["metrics"]["pass_hat_k"] == {"1": 1.0, "2": 1.0}
    assert [o["path"] for o in manifest["outputs"]] == ["trajectories.jsonl", "summary.json", "report.html"]
    again = evaluate(config, k=2, on_start=lambda planned, done: starts.append((planned, done)))
    assert starts == [(12, 0), (12, 12)]
    timing = {"mean_latency_s", "mean_turn_latency_s", "mean_wall_s"}
    assert again.model_dump(exclude=timing) == summary.model_dump(exclude=timing)
    # Another policy into the same directory: its summary counts only its own episodes.
    noop = evaluate(
        CollectConfig(env=ENV, policy="noop", out=str(tmp_path), split="test", n=6, env_kwargs={"n_test": 8})
    )
    assert noop.episodes == 6 and noop.success_rate == 0.0 and noop.k == 1


def test_report_is_self_contained_escapes_model_output_and_names_every_run(tmp_path):
    evil = "<script>alert(1)</script>"
    _, bad = run_toy(ScriptedPolicy([evil], name="evil"), n=4)
    _, good = run_toy(OrdersEnvironment().oracle(), n=4)
    _, reckless_runs = run_toy(ScriptedPolicy(reckless, name="reckless"), n=4)
    runs = [
        ("base <b>model</b>", summarize_run(bad), bad),
        ("tuned", summarize_run(good), good),
        ("reckless", summarize_run(reckless_runs), reckless_runs),
    ]
    page = render_report(runs, title="base vs tuned")
    for forbidden in ("http://", "https://", "<script", "src="):
        assert forbidden not in page, forbidden
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "base &lt;b&gt;model&lt;/b&gt;" in page and "tuned" in page and "reckless" in page
    assert page.count("<svg") >= 3 and "confirm_before_write" in page and "Sample of failed episodes" in page
    path = write_report(tmp_path / "r.html", runs[:1])
    assert path.read_text() == render_report(runs[:1])


def test_load_runs_reads_summaries_dedupes_names_and_rejects_bad_dirs(tmp_path):
    from agentft.errors import UserError

    for parent, policy in (("a", "oracle"), ("b", "noop")):
        evaluate(CollectConfig(env=ENV, policy=policy, out=str(tmp_path / parent / "run"), n=3))
    runs = load_runs([tmp_path / "a" / "run", tmp_path / "b" / "run"])
    assert [name for name, _, _ in runs] == ["run", "run (2)"]
    assert [len(t) for _, _, t in runs] == [3, 3] and runs[1][1].policy == "noop"
    # A run directory made in-process (scripted policy) reads the same; the report shows its failures.
    _, evil = run_toy(ScriptedPolicy(["<script>alert(1)</script>"], name="evil"), n=3)
    with TrajectoryWriter(tmp_path / "c" / "run" / "trajectories.jsonl") as writer:
        writer.write_batch(evil)
    evil_summary = {**summarize_run(evil).model_dump(), "policy": "evil"}
    (tmp_path / "c" / "run" / "summary.json").write_text(json.dumps(evil_summary))
    [scripted] = load_runs([tmp_path / "c" / "run"])
    assert len(scripted[2]) == 3 and "&lt;script&gt;alert(1)" in render_report([*runs, scripted])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no summary.json"):
        load_runs([tmp_path / "empty"])
    with pytest.raises(UserError, match="no such run directory"):
        load_runs([tmp_path / "missing"])
    (tmp_path / "empty" / "summary.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_runs([tmp_path / "empty"])


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "agentft.cli", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_cli_eval_and_report_end_to_end(tmp_path):
    for policy in ("oracle", "noop"):
        result = cli(
            "eval",
            "--env",
            ENV,
            "--policy",
            policy,
            "--env-arg",
            "n_test=6",
            "--n",
            "5",
            "--k",
            "2",
            "--batch-size",
            "4",
            "--max-steps",
            "8",
            "--out",
            tmp_path / policy,
        )
        assert result.returncode == 0, result.stderr
        assert "pass^2" in result.stdout and "compliance (95% CI)" in result.stdout
        for name in ("trajectories.jsonl", "summary.json", "report.html"):
            assert str(tmp_path / policy / name) in result.stdout
    summary = json.loads((tmp_path / "oracle" / "summary.json").read_text())
    assert summary["episodes"] == 10 and summary["success_rate"] == 1.0 and summary["split"] == "test"
    result = cli("report", tmp_path / "oracle", tmp_path / "noop", "--out", tmp_path / "cmp.html")
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "cmp.html").read_text()
    assert "oracle" in page and "noop" in page and "http://" not in page and "https://" not in page


def test_cli_eval_runs_an_hf_policy_in_bf16(tmp_path):
    result = cli(
        "eval",
        "--env",
        ENV,
        "--policy",
        "hf:tiny-test",
        "--dtype",
        "bfloat16",
        "--env-arg",
        "n_test=2",
        "--max-new-tokens",
        "8",
        "--max-steps",
        "2",
        "--out",
        tmp_path / "bf16",
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "bf16" / "manifest.json").read_text())
    assert manifest["config"]["policy_kwargs"] == {
        "max_new_tokens": 8,
        "dtype": "bfloat16",
        "temperature": 0.0,
        "top_p": 1.0,
        "seed": 0,
        "record_tokens": False,
        "verbatim": True,
    }
    result = cli("eval", "--env", ENV, "--policy", "hf:tiny-test", "--dtype", "int4", "--out", tmp_path / "bad")
    assert result.returncode == 2 and "--dtype is float32, bfloat16 or auto" in result.stderr


def test_cli_eval_samples_k_attempts_and_records_their_tokens(tmp_path):
    args = ["--env", ENV, "--env-arg", "n_test=2", "--max-new-tokens", "8", "--max-steps", "2", "--k", "2"]
    sampled = ["--temperature", "1.0", "--top-p", "0.95", "--record-tokens"]
    result = cli("eval", "--policy", "hf:tiny-test", *args, *sampled, "--out", tmp_path / "sampled")
    assert result.returncode == 0, result.stderr
    trajectories = list(load_trajectories(tmp_path / "sampled" / "trajectories.jsonl"))
    assert len(trajectories) == 4 and all(t.tokens and t.tokens[0].temperature == 1.0 for t in trajectories)
    first_turns = {}
    for t in trajectories:
        first_turns.setdefault(t.task_id, []).append(t.tokens[0].completion_ids)
    assert any(a != b for a, b in first_turns.values())  # the two attempts of a task sampled differently
    # A rerun into a fresh directory draws the same: each episode's generator is seeded from its id.
    again = cli("eval", "--policy", "hf:tiny-test", *args, *sampled, "--out", tmp_path / "again")
    assert again.returncode == 0, again.stderr
    redrawn = {t.id: t.tokens for t in load_trajectories(tmp_path / "again" / "trajectories.jsonl")}
    assert redrawn == {t.id: t.tokens for t in trajectories}
    for flag in (["--temperature", "0.7"], ["--no-verbatim"]):
        refused = cli("eval", "--policy", "oracle", *args, *flag, "--out", tmp_path / "oracle")
        assert refused.returncode == 2 and "apply to local models" in " ".join(refused.stderr.split())


def test_cli_report_on_a_missing_run_dir_exits_2_with_a_message(tmp_path):
    result = cli("report", tmp_path / "missing", "--out", tmp_path / "cmp.html")
    assert result.returncode == 2 and "error:" in result.stderr and "no such run directory" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "cmp.html").exists()
    result = cli("eval", "--env", ENV, "--policy", "oracle", "--k", "0", "--out", tmp_path / "k0")
    assert result.returncode == 2 and "error:" in result.stderr
