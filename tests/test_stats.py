"""Intervals and paired comparisons against values computed independently of ``agentft.stats``."""

import json
import shutil
from dataclasses import FrozenInstanceError
from math import isclose

import pytest
from typer.testing import CliRunner

from agentft.cli import app
from agentft.collect import CollectConfig
from agentft.errors import UserError
from agentft.evaluate import evaluate, summarize_run, task_outcomes
from agentft.report import load_runs, render_report
from agentft.stats import compare_paired, mcnemar_exact, paired_bootstrap, wilson_interval
from agentft.summary import RunSummary
from agentft.trajectory import Score, Trajectory, Violation

# Wilson 95% intervals from scipy 1.17.1, `scipy.stats.binomtest(k, n).proportion_ci(method="wilson")`, and
# again by bisection on the score equation (p_hat - p)^2 = z^2 p (1 - p) / n in a Python shell: both agree to
# 1e-15.
WILSON_95 = [
    (8, 10, 0.4901624715366418, 0.9433178485456248),
    (0, 10, 0.0, 0.27753279986288926),
    (10, 10, 0.7224672001371109, 1.0),
    (20, 27, 0.5532142868544693, 0.8682962543809282),
    (1, 1, 0.20654931437723745, 1.0),
]
# scipy's binomtest(8, 10).proportion_ci(confidence_level=..., method="wilson").
WILSON_8_OF_10 = [(0.90, 0.5407928056874879, 0.9314420122624679), (0.99, 0.4008186965216716, 0.9598688474953836)]
# Exact two-sided McNemar = binomial test of min(b, c) successes in b + c trials at 1/2, by hand:
# 2 * C(5,0) / 2^5 = 0.0625; 2 * (C(10,0) + C(10,1)) / 2^10 = 22/1024; 2 * (1 + 12 + 66) / 4096 = 158/4096;
# (3, 3) caps at 1; and scipy.stats.binomtest(min(b, c), b + c, 0.5).pvalue gives the same.
MCNEMAR = [
    (0, 5, 0.0625),
    (1, 9, 0.021484375),
    (9, 1, 0.021484375),
    (2, 10, 0.03857421875),
    (3, 3, 1.0),
    (0, 0, 1.0),
    (0, 9, 0.00390625),
]


@pytest.mark.parametrize(("successes", "n", "low", "high"), WILSON_95)
def test_wilson_interval_matches_scipy(successes, n, low, high):
    found = wilson_interval(successes, n)
    assert isclose(found[0], low, abs_tol=1e-12) and isclose(found[1], high, abs_tol=1e-12)


def test_wilson_interval_edges_other_levels_and_bad_arguments():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0  # exact, not 1e-17
    for confidence, low, high in WILSON_8_OF_10:
        found = wilson_interval(8, 10, confidence)
        assert isclose(found[0], low, abs_tol=1e-9) and isclose(found[1], high, abs_tol=1e-9)
    low, high = wilson_interval(13.5, 27)  # a sum of per-task fractions: p_hat = 0.5, symmetric
    assert isclose(low + high, 1.0)
    for bad in [(11, 10), (-1, 10), (1, -1), (1, 2.5)]:
        with pytest.raises(ValueError, match="must be"):
            wilson_interval(*bad)
    for confidence in (0.0, 1.0, 95):
        with pytest.raises(ValueError, match="confidence"):
            wilson_interval(1, 2, confidence)


@pytest.mark.parametrize(("b", "c", "p"), MCNEMAR)
def test_mcnemar_exact_known_values(b, c, p):
    assert isclose(mcnemar_exact(b, c), p, rel_tol=1e-12)


def test_mcnemar_exact_is_exact_for_large_counts_and_checks_its_arguments():
    assert mcnemar_exact(1000, 1000) == 1.0
    assert 0.0 <= mcnemar_exact(0, 3000) < 1e-300  # integer arithmetic: no overflow
    for bad in [(-1, 2), (1.5, 2), (True, 2)]:
        with pytest.raises(ValueError, match="non-negative integer"):
            mcnemar_exact(*bad)


def test_paired_bootstrap_is_deterministic_and_brackets_the_difference():
    a = [True, False, True, True, False, False, True, False, True, False] * 3
    b = [True, True, True, False, True, False, True, True, True, False] * 3
    found = paired_bootstrap(a, b, seed=7)
    assert found == paired_bootstrap(a, b, seed=7)
    difference, low, high = found
    assert isclose(difference, (7 - 5) / 10) and low <= difference <= high and -1 <= low < high <= 1
    narrower = paired_bootstrap(a, b, seed=7, confidence=0.5)
    assert low <= narrower[1] <= narrower[2] <= high
    assert paired_bootstrap(a, a) == (0.0, 0.0, 0.0)
    assert paired_bootstrap([0.0] * 5, [1.0] * 5) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap([True], [True, False])
    with pytest.raises(ValueError, match="empty"):
        paired_bootstrap([], [])


def outcomes(both_right, a_only, b_only, both_wrong):
    pairs = (
        [(True, True)] * both_right
        + [(True, False)] * a_only
        + [(False, True)] * b_only
        + [(False, False)] * both_wrong
    )
    return ({f"t{i}": x for i, (x, _) in enumerate(pairs)}, {f"t{i}": y for i, (_, y) in enumerate(pairs)})


def test_compare_paired_counts_pairs_and_reports_unpaired_ids():
    a, b = outcomes(3, 1, 5, 1)
    a["gone"] = True
    b.update(new1=True, new2=False)
    found = compare_paired(a, b, metric="success")
    assert (found.n, found.only_in_a, found.only_in_b) == (10, 1, 2)
    assert (found.both_right, found.a_only, found.b_only, found.both_wrong) == (3, 1, 5, 1)
    assert (found.a_rate, found.b_rate) == (0.4, 0.8) and isclose(found.difference, 0.4)
    assert found.a_interval == wilson_interval(4, 10) and found.b_interval == wilson_interval(8, 10)
    assert isclose(found.p_value, 2 * (1 + 6) / 64) and not found.significant  # scipy binomtest(1, 6): 0.21875
    assert found.verdict == "no significant difference (p = 0.22)"
    assert json.loads(json.dumps(found.to_dict()))["b_interval"] == list(wilson_interval(8, 10))
    with pytest.raises(FrozenInstanceError):
        found.n = 3


def test_compare_paired_verdict_names_direction_size_and_p():
    a, b = outcomes(2, 1, 9, 0)  # mcnemar(1, 9) = 0.021484375; B - A = 8 / 12
    better = compare_paired(a, b, metric="success")
    low, high = better.difference_interval
    assert better.significant and isclose(better.p_value, 0.021484375)
    assert better.verdict == (
        f"B better by +66.7 points (95% CI {low * 100:+.1f} to {high * 100:+.1f}), p = 0.021: significant"
    )
    assert compare_paired(b, a, metric="success").verdict.startswith("B worse by 66.7 points (95% CI -")
    with pytest.raises(ValueError, match="no task id in common"):
        compare_paired({"x": True}, {"y": True}, metric="success")


def test_compare_paired_uses_means_for_the_difference_and_majorities_for_the_counts():
    found = compare_paired({"t": 0.5, "u": 0.0}, {"t": 0.0, "u": 1 / 3}, metric="success")
    assert (found.a_only, found.both_wrong) == (1, 1)  # 0.5 is a majority (tie counts as right); 1/3 is not
    assert isclose(found.difference, (-0.5 + 1 / 3) / 2)


def record(task_id, attempt, success, violations=(), kind="default", env="e"):
    return Trajectory(
        id=f"{env}-{task_id}-{attempt}",
        env=env,
        task_id=task_id,
        policy="p",
        attempt=attempt,
        score=Score(success=success, violations=[Violation(rule=r) for r in violations], compliant=not violations),
        metadata={"task_kind": kind, "slices": {"size": "big" if attempt else "small"}},
    )


def test_summarize_run_gives_wilson_intervals_overall_and_per_group():
    runs = [record("a", i, i < 2) for i in range(4)] + [
        record("b", i, True, ["r1"] * (i == 0), kind="x") for i in range(4)
    ]
    summary = summarize_run(runs)
    assert summary.success_ci == list(wilson_interval(6, 8))
    assert summary.compliance_ci == list(wilson_interval(7, 8))
    assert summary.by_task_kind["x"].model_dump() == {
        "episodes": 4,
        "success_rate": 1.0,
        "success_ci": list(wilson_interval(4, 4)),
        "success_n": 4,
        "compliance_rate": 0.75,
        "compliance_ci": list(wilson_interval(3, 4)),
        "compliance_n": 4,
    }
    assert summary.by_slice["size"]["big"].success_ci == list(wilson_interval(4, 6))
    assert summarize_run([]).success_ci == [0.0, 1.0]


def test_task_outcomes_average_attempts_and_keep_environments_apart():
    runs = [record("a", 0, True), record("a", 1, False), record("a", 2, True), record("a", 0, True, env="f")]
    assert task_outcomes(runs, "success") == {"e/a": 2 / 3, "f/a": 1.0}
    with pytest.raises(UserError, match="metric"):
        task_outcomes(runs, "speed")


def test_report_shows_intervals_even_for_old_summaries_and_pairs_runs_with_trajectories():
    base = [record(f"t{i}", 0, i < 3) for i in range(9)]
    tuned = [record(f"t{i}", 0, True) for i in range(9)]
    written = summarize_run(base).model_dump()
    old = RunSummary.model_validate({k: v for k, v in written.items() if not k.endswith(("_ci", "_n"))})
    page = render_report([("base", old, base), ("tuned", summarize_run(tuned), tuned)])
    assert "33.3% (12.1–64.6)" in page and "100.0% (70.1–100.0)" in page  # 3/9 and 9/9, scipy as above
    assert "Paired comparison" in page and "tuned (B) vs base (A)" in page and "p = 0.031" in page  # 2 / 2^6
    assert "Success by task kind" in page and "default" in page
    without = render_report([("base", old, None), ("tuned", summarize_run(tuned), tuned)])
    assert "Paired comparison" not in without and "33.3% (12.1–64.6)" in without
    bare = render_report([("x", RunSummary.model_validate({"success_rate": 0.5}), None)])  # no episodes: no crash
    assert "50.0%" in bare


ENV = "claims"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The oracle and the noop policy on 9 test tasks of the built-in claims environment, sandbox off."""
    root = tmp_path_factory.mktemp("runs")
    for policy in ("oracle", "noop"):
        evaluate(
            CollectConfig(
                env=ENV, policy=policy, out=str(root / policy), split="test", n=9, env_kwargs={"sandbox": False}
            )
        )
    return root


def test_cli_report_prints_the_paired_comparison(two_runs, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(two_runs / "oracle"), str(two_runs / "noop")])
    assert result.exit_code == 0, result.output
    assert "noop (B) vs oracle (A): 9 tasks in common, 0 only in A, 0 only in B" in result.output
    assert "100.0% (70.1–100.0)" in result.output and "0.0% (0.0–29.9)" in result.output  # 9/9 and 0/9
    assert "A right, B wrong" in result.output and "0.0039" in result.output  # 2 / 2^9
    assert "success: B worse by 100.0 points (95% CI -100.0 to -100.0), p = 0.0039: significant" in result.output
    assert "compliance: " in result.output
    assert not (tmp_path / "cmp.html").exists()
    result = runner.invoke(
        app, ["report", str(two_runs / "oracle"), str(two_runs / "noop"), "--out", str(tmp_path / "cmp.html")]
    )
    assert result.exit_code == 0 and "Paired comparison" in (tmp_path / "cmp.html").read_text()


def test_cli_report_says_plainly_what_it_cannot_pair(two_runs, tmp_path):
    runner = CliRunner()
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "summary.json").write_text((two_runs / "noop" / "summary.json").read_text())
    result = runner.invoke(app, ["report", str(two_runs / "oracle"), str(bare)])
    assert isinstance(result.exception, UserError) and "no trajectories.jsonl" in str(result.exception)
    result = runner.invoke(app, ["report", str(two_runs / "oracle")])
    assert isinstance(result.exception, UserError) and "--out" in str(result.exception)
    [(_, summary, trajectories)] = load_runs([two_runs / "oracle"])
    assert len(trajectories) == 9 and summary.success_ci[1] == 1.0


def test_cli_report_warns_about_a_torn_last_trajectory(two_runs, tmp_path):
    torn = tmp_path / "noop"
    shutil.copytree(two_runs / "noop", torn)
    with (torn / "trajectories.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"id": "cut-sh')  # a writer killed mid-record
    result = CliRunner().invoke(app, ["report", str(two_runs / "oracle"), str(torn)])
    assert result.exit_code == 0, result.output
    path = torn / "trajectories.jsonl"
    assert f"warning: {path} ends in a torn or zero-filled record, skipped (1 line dropped" in result.output
    assert "9 tasks in common" in result.output
    with pytest.warns(UserWarning, match="1 line dropped"):
        [(_, _, trajectories)] = load_runs([torn])
    assert len(trajectories) == 9
    result = CliRunner().invoke(app, ["report", str(two_runs / "oracle"), str(two_runs / "noop")])
    assert "warning" not in result.output
