"""Best-of-N and the reward model: the rules scorer in a claims episode, best-of-2 in eval and serve, a reward
model trained on tiny data."""

import json

import httpx
import pytest
from test_kernel import CLAIMS, another_customers_claim, call, claims_task, verify_text
from test_serve import KEY, NEW_PHONE, OPENING, claims_agent
from typer.testing import CliRunner

from agentft.bestof import RulesScorer, choose, load_scorer
from agentft.chat_format import parse_reply
from agentft.cli import app
from agentft.collect import CollectConfig, collect
from agentft.errors import UserError
from agentft.kernel import open_rollout, step
from agentft.policies.base import Reply
from agentft.preferences import PreferenceConfig, build_dpo_dataset, save_dpo_dataset
from agentft.serve import create_app
from agentft.serve.backends import ScriptedBackend
from agentft.serve.config import ServeConfig
from agentft.serve.engine import Engine
from agentft.testing import serve_in_thread
from agentft.train import RMTrainConfig, train_rm
from agentft.trajectory import load_trajectories


def reply(text, tools):
    parsed = parse_reply(text, tools)
    return Reply(message=parsed.message, errors=parsed.errors, text=text, completion_tokens=3, latency_s=0.1)


def test_the_rules_scorer_keeps_the_candidate_that_breaks_no_rule():
    task = claims_task("claims-test-0000")
    rollout = open_rollout(CLAIMS, task)
    step(rollout, reply(verify_text(task), rollout.tools))
    nosy = reply(call("get_claim", claim_id=another_customers_claim(task.facts["customer_id"])), rollout.tools)
    own = reply(call("get_claim", claim_id=task.facts["claim_id"]), rollout.tools) if "claim_id" in task.facts else None
    unknown = reply(call("delete_everything"), rollout.tools)
    garbled = reply('<tool_call>{"name": "get_cla', rollout.tools)
    answer = reply("Could you tell me which claim you mean?", rollout.tools)
    scorer = RulesScorer(CLAIMS)
    try:
        candidates = [garbled, nosy, unknown, answer] + ([own] if own else [])
        scores = scorer.scores(rollout, candidates)
        assert scores[1] < 0 and scores[3] == 0  # reading another customer's claim breaks own_records_only
        assert unknown.errors or scores[2] < 0  # a tool the episode does not offer
        chosen, index = choose(rollout, candidates, scorer)
        assert index == 3  # unreadable ranks last; among the rule-abiding, the earliest
        assert chosen.completion_tokens == 3 * len(candidates)  # the turn cost every candidate
        assert choose(rollout, [nosy], None) == (nosy, 0)  # one candidate needs no scorer
    finally:
        scorer.close()
        rollout.discard()
    with pytest.raises(UserError, match="unknown scorer"):
        load_scorer("judge:me", CLAIMS)


def test_best_of_2_in_eval_samples_two_candidates_per_turn(tmp_path):
    base = ["eval", "--env", "claims", "--env-arg", "sandbox=false", "--policy", "hf:tiny-test", "--n", "2"]
    base += ["--max-new-tokens", "8", "--max-steps", "2"]
    refused = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "r"), "--best-of", "2", "--record-tokens"])
    assert isinstance(refused.exception, UserError) and "no --record-tokens" in str(refused.exception)
    out = tmp_path / "best"
    result = CliRunner().invoke(app, [*base, "--out", str(out), "--best-of", "2", "--best-of-temperature", "1.0"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_of"]["n"] == 2 and summary["best_of"]["scorer"] == "rules"
    # The first candidate is the model's own greedy turn: where the scorer never switched, the episode is
    # exactly the greedy run's.
    greedy = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "greedy")])
    assert greedy.exit_code == 0, greedy.output
    plain = {t.task_id: t.messages for t in load_trajectories(tmp_path / "greedy")}
    kept = [t for t in load_trajectories(out) if t.metadata["best_of"]["switched"] == 0]
    assert kept and all(t.messages == plain[t.task_id] for t in kept)
    assert summary["best_of"]["turns"] == sum(t.usage.model_calls for t in load_trajectories(out)) > 0
    assert all(t.metadata["best_of"]["n"] == 2 for t in load_trajectories(out))


def alternating(request, state={"n": 0}):  # noqa: B006 - the counter is the point
    """The claims agent, except that right after verifying every other candidate asks to confirm first."""
    if request.messages[-1].role == "tool" and request.messages[-1].name == "verify_identity":
        state["n"] += 1
        if state["n"] % 2:
            return f"I will change your phone number to {NEW_PHONE}. Do you confirm?"
    return claims_agent(request)


def test_best_of_2_in_serve_keeps_the_candidate_that_asks_before_writing(tmp_path):
    config = ServeConfig(env="claims", api_keys=[KEY], log_dir=str(tmp_path), best_of=2, scorer="rules")
    with serve_in_thread(create_app(config, Engine(ScriptedBackend(alternating)))) as url:
        response = httpx.post(
            f"{url}/v1/agent/runs",
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=60,
            json={"messages": [{"role": "user", "content": OPENING}], "task_id": "claims-test-0005", "max_steps": 6},
        )
    assert response.status_code == 200, response.text
    run = response.json()
    # Without best-of the agent writes at once (test_serve: scored non-compliant); here the scorer kept the
    # candidate that asks first, whichever of the two it was.
    assert run["reply"].endswith("Do you confirm?")
    assert run["trajectory"]["score"]["compliant"] and not run["trajectory"]["score"]["violations"]
    assert not any(m.get("name") == "update_contact" for m in run["trajectory"]["messages"])
    assert run["usage"]["completion_tokens"] > 0
    with pytest.raises(UserError, match="pass --env"):
        create_app(ServeConfig(best_of=2), Engine(ScriptedBackend("hi")))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Asking before a cancellation (chosen) against cancelling at once (rejected), on 60 toy tasks."""
    root = tmp_path_factory.mktemp("rm")
    oracle = collect(CollectConfig(env="agentft.toy_env:OrdersEnvironment", policy="oracle", out=str(root / "o"), n=60))
    built = build_dpo_dataset([oracle.out], PreferenceConfig(step_pairs=False, perturbations=True))
    built.pairs = [pair for pair in built.pairs if pair.source.kind == "skip_confirmation"]
    return save_dpo_dataset(built, root / "dpo")


def test_a_reward_model_ranks_held_out_pairs_and_scores_best_of_2(pairs, tmp_path):
    out = tmp_path / "rm"
    metrics = train_rm(
        RMTrainConfig(
            model="tiny-test",
            data=str(pairs),
            out=str(out),
            lr=1e-2,
            epochs=3,
            batch_size=4,
            validation_fraction=0.25,
            device="cpu",
        )
    )
    # 19 pairs, one per task; 5 tasks held out and ranked after training (chance: half right)
    assert metrics["heldout_pairs"] == 5 and metrics["heldout_accuracy"] >= 0.8, metrics
    assert json.loads((out / "manifest.json").read_text())["kind"] == "rm"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--env",
            "agentft.toy_env:OrdersEnvironment",
            "--policy",
            "hf:tiny-test",
            "--n",
            "2",
            "--max-new-tokens",
            "8",
            "--max-steps",
            "2",
            "--best-of",
            "2",
            "--scorer",
            f"rm:{out}",
            "--out",
            str(tmp_path / "eval"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["best_of"]["scorer"] == f"rm:{out}"
    with pytest.raises(UserError, match="not a reward model"):
        load_scorer(f"rm:{pairs}")
