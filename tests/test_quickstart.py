"""`agentft quickstart --budget fast` end to end (tiny model): every stage runs and the summary holds."""

import json
import subprocess
import sys

from transformers import AutoTokenizer

from agentft.datasets import longest_turn_tokens
from agentft.models import resolve_model_path
from agentft.trajectory import read_trajectories


def test_quickstart_fast_end_to_end_and_resume(tmp_path):
    out = tmp_path / "qs"
    command = [
        sys.executable,
        "-m",
        "agentft.cli",
        "quickstart",
        "--budget",
        "fast",
        "--model",
        "tiny-test",
        "--out",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    for name in ("base", "sft", "dpo"):
        run = summary[name]
        for field in (
            "success_rate",
            "compliance_rate",
            "pass_hat_k",
            "violations_by_rule",
            "episodes",
            "errors",
            "mean_latency_s",
        ):
            assert field in run, (name, field)
        planned = summary["plan"]["base_tasks" if name == "base" else "test_tasks"]
        assert run["episodes"] == planned and run["split"] == "test"
        assert run["success_ci"][0] <= run["success_rate"] <= run["success_ci"][1]
    for name in ("sft", "dpo"):
        own = summary["own_words"][name]
        assert own["split"] == "own_words" and own["episodes"] == summary["plan"]["own_words_tasks"]
    assert {c["metric"] for c in summary["dpo_vs_sft"]} == {"success", "compliance"}
    sft = summary["training"]["sft"]
    assert sft["eval_loss"] < sft["eval_loss_before"]  # the tuned model's loss fell on held-out train tasks
    losses = [
        json.loads(line)["loss"]
        for line in (out / "adapter-sft" / "metrics.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    assert losses and all(loss == loss for loss in losses)  # finite
    assert summary["training"]["dpo"]["pairs"] > 0
    assert set(summary["timings"]) >= {
        "pull",
        "collect",
        "dataset",
        "sft",
        "eval-base",
        "eval-sft",
        "mine",
        "dpo",
        "eval-dpo",
        "own-words",
        "total",
    }
    demonstrations = list(read_trajectories(out / "oracle-sft" / "trajectories.jsonl"))
    assert len(demonstrations) == 2 * summary["plan"]["sft_tasks"]  # each task and its augmented variant
    # the generation limit leaves room above the longest demonstrated turn (the fast budget's floor is less)
    longest = longest_turn_tokens(demonstrations, AutoTokenizer.from_pretrained(resolve_model_path("tiny-test")))
    assert summary["generation"]["max_new_tokens"] >= 4 * longest / 3 > summary["plan"]["max_new_tokens"]
    assert all(t.score.success and t.score.compliant for t in demonstrations)
    html = (out / "report.html").read_text()
    assert all(name in html for name in ("base", "sft", "dpo")) and "https://" not in html
    # Held-out: no test task was trained on.
    trained = {json.loads(line)["trajectory_id"] for line in (out / "data-sft" / "train.jsonl").open()}

    sft_tasks = {t.task_id for t in read_trajectories(out / "oracle-sft" / "trajectories.jsonl") if t.id in trained}
    test_tasks = {t.task_id for t in read_trajectories(out / "eval-sft" / "trajectories.jsonl")}
    assert sft_tasks and not sft_tasks & test_tasks and all(t.startswith("claims-test") for t in test_tasks)

    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and " ".join(again.stdout.split()).count("done before, skipped") == 10

    # --rl on the same directory: the ten stages are skipped, GRPO and its evaluation run.
    rl = subprocess.run([*command, "--rl"], capture_output=True, text=True, timeout=600)
    assert rl.returncode == 0, rl.stderr[-3000:]
    assert " ".join(rl.stdout.split()).count("done before, skipped") == 10
    summary = json.loads((out / "summary.json").read_text())
    assert summary["grpo"]["episodes"] == summary["plan"]["test_tasks"] and summary["grpo"]["split"] == "test"
    assert {c["metric"] for c in summary["grpo_vs_sft"]} == {"success", "compliance"}
    assert summary["training_grpo"]["steps"] == summary["plan"]["rl_steps"]
    assert {"grpo", "eval-grpo"} <= set(summary["timings"]) and "grpo" in (out / "report.html").read_text()
    rollouts = list(read_trajectories(out / "adapter-grpo" / "rollouts.jsonl"))
    plan = summary["plan"]
    assert len(rollouts) == plan["rl_steps"] * plan["rl_tasks_per_step"] * plan["rl_group_size"]
    assert not {t.task_id for t in rollouts} & (sft_tasks | test_tasks)  # a block of its own


def test_mining_falls_back_to_perturbations_when_the_sft_model_made_no_mistake(tmp_path):
    from rich.console import Console

    from agentft.collect import CollectConfig, collect
    from agentft.quickstart import mine_preferences

    sources = [
        collect(
            CollectConfig(
                env="claims",
                policy="oracle",
                out=str(tmp_path / name),
                split="train",
                n=9,
                start=216,
                env_kwargs={"sandbox": False},
            )
        ).out
        for name in ("oracle", "sft")
    ]
    console = Console(record=True, width=200)
    pairs = mine_preferences(sources, perturbations=False, console=console)
    assert pairs.rows and "step" not in pairs.stats["by_kind"]  # nothing failed: edits of good episodes only
    assert {"skip_verification", "verify_again"} <= set(pairs.stats["by_kind"])
    assert "made no mistake" in console.export_text()
