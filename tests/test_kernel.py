"""The episode kernel (``agentft.kernel``): one step under collection, evaluation and served agent runs.

What issue #15 promised and these tests pin down: a scripted model gets the same trajectory (call ids, tool
results, events, messages, the format notice) through ``run_episodes`` and through ``POST /v1/agent/runs``; the
guard blocks a read of another customer's claim in ``eval --guard`` and in a guarded agent run (counted in
``/metrics``); an episode's timeout counts its own model and tool time, not its batch neighbours' generation.
"""

from __future__ import annotations

import json
import sqlite3
import time

import httpx
import pytest
from typer.testing import CliRunner

from agentft.builtin_envs.claims import ClaimsEnvironment
from agentft.cli import app
from agentft.kernel import FORMAT_HINT
from agentft.messages import AssistantMessage, UserMessage
from agentft.policies import ScriptedPolicy
from agentft.runner import EpisodeSpec, RunConfig, run_episodes
from agentft.toy_env import OrdersEnvironment
from agentft.trajectory import Trajectory, load_trajectories

CLAIMS = ClaimsEnvironment(sandbox=False)
BROKEN = '<tool_call>{"name": "decide_claim", "arguments": {"claim_id": </tool_call>'


def claims_task(task_id: str):
    return next(t for t in CLAIMS.tasks("test") if t.id == task_id)


def call(name: str, **arguments) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def solution_texts(task) -> list[str]:
    """The task's solution as the text a model would write, one string per assistant turn."""
    texts = []
    for turn in task.solution:
        calls = [call(c.name, **c.arguments) for c in turn.calls]
        texts.append("\n".join([turn.say, *calls] if turn.say is not None else calls))
    return texts


def verify_text(task) -> str:
    verify = next(c for turn in task.solution for c in turn.calls if c.name == "verify_identity")
    return call("verify_identity", **verify.arguments)


def another_customers_claim(customer_id: str) -> str:
    with sqlite3.connect(f"file:{CLAIMS.seed_path()}?mode=ro", uri=True) as conn:
        row = conn.execute(
            "SELECT claim_id FROM claims WHERE customer_id != ? ORDER BY claim_id LIMIT 1", (customer_id,)
        ).fetchone()
    conn.close()
    return row[0]


def calls(trajectory: Trajectory) -> list[tuple]:
    """What every event records, less its timing."""
    return [(e.step, e.name, e.call_id, e.arguments, e.ok, e.error, e.effect, e.detail) for e in trajectory.events]


# ---- 1. the same trajectory through collection and a served agent run --------------------------------------


def test_a_scripted_model_gets_the_same_trajectory_in_collection_and_in_served_agent_runs(tmp_path):
    pytest.importorskip("fastapi")
    from test_serve import KEY

    from agentft.serve import Engine, ScriptedBackend, ServeConfig, create_app
    from agentft.testing import serve_in_thread

    # The approve task: the user is asked for identity, then for consent. A malformed call after the consent
    # exercises the format notice; the decision (a write) and the final answer follow. (It sits in the last
    # request: a replayed history recomputes tool calls, not an earlier request's parse events.)
    task = claims_task("claims-test-0001")
    texts = solution_texts(task)
    texts.insert(4, BROKEN)
    [collected] = run_episodes(CLAIMS, ScriptedPolicy(texts), [EpisodeSpec(task)])
    assert collected.status == "completed" and collected.score.success and collected.score.compliant
    ids = [c.id for m in collected.messages if isinstance(m, AssistantMessage) for c in m.tool_calls]
    assert ids == ["call_1_0", "call_2_0", "call_5_0"]
    notice = next(m.content for m in collected.messages if (m.content or "").startswith("[agentft]"))
    assert notice.endswith(FORMAT_HINT)

    # The same model served: the person answers in the next request, with the conversation sent back.
    app = create_app(ServeConfig(env="claims", api_keys=[KEY], log_dir=None), Engine(ScriptedBackend(texts)))
    served: Trajectory | None = None
    sent = [collected.messages[1].model_dump(mode="json", exclude_none=True)]
    requests = 0
    with serve_in_thread(app) as url:
        while served is None or len(served.messages) < len(collected.messages):
            response = httpx.post(
                f"{url}/v1/agent/runs",
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=60,
                json={"messages": sent, "task_id": task.id, "env": "claims"},
            )
            assert response.status_code == 200, response.text
            run = response.json()
            requests += 1
            assert run["status"] == "completed" and requests <= 3
            served = Trajectory.model_validate(run["trajectory"])
            # Every answer is the start of the collected conversation, to the message.
            assert served.messages == collected.messages[: len(served.messages)]
            assert calls(served) == calls(collected)[: len(served.events)]
            assert run["reply"] == served.messages[-1].content
            if len(served.messages) < len(collected.messages):
                answer = collected.messages[len(served.messages)]
                assert isinstance(answer, UserMessage)  # the simulated user spoke where the person does
                sent = [*run["trajectory"]["messages"][1:], answer.model_dump(mode="json", exclude_none=True)]
    assert requests == 3  # opening, identity, consent
    assert served.messages == collected.messages and served.tools == collected.tools
    assert calls(served) == calls(collected)
    assert [e.error for e in served.events] == [None, None, "parse", None]
    assert served.score.success is None and served.score.compliant


# ---- 2. the guard in eval: a read of another customer's claim is blocked ----------------------------------


def nosy_script(task, claim_id: str) -> list[str]:
    """Verifies the caller, then reads someone else's claim, then answers."""
    return [verify_text(task), call("get_claim", claim_id=claim_id), "I can only discuss your own claims."]


def test_the_guard_blocks_a_read_of_another_customers_claim_before_it_runs():
    task = claims_task("claims-test-0000")
    other = another_customers_claim(task.facts["customer_id"])
    script = nosy_script(task, other)

    [guarded] = run_episodes(CLAIMS, ScriptedPolicy(script), [EpisodeSpec(task)], RunConfig(guard=True))
    assert guarded.status == "completed"
    read = next(e for e in guarded.events if e.name == "get_claim")
    assert not read.ok and read.error == "policy_violation" and read.effect == "read"
    result = next(m for m in guarded.messages if m.role == "tool" and m.name == "get_claim")
    assert result.content == (
        "Error (policy_violation): own_records_only: Only the verified caller's own records are read or changed."
    )
    assert other not in result.content  # no claim data reached the model
    [block] = guarded.metadata["guard_blocks"]
    assert block["tool"] == "get_claim" and block["call_id"] == read.call_id == "call_1_0"
    assert [r["rule"] for r in block["rules"]] == ["own_records_only"]
    assert guarded.metadata["guard"] is True
    assert guarded.score.violations == [] and guarded.score.compliant  # the blocked read never ran

    # Without the guard the same script reads the claim and is scored non-compliant.
    [open_] = run_episodes(CLAIMS, ScriptedPolicy(script), [EpisodeSpec(task)], RunConfig(guard=False))
    read = next(e for e in open_.events if e.name == "get_claim")
    assert read.ok and read.error is None
    result = next(m for m in open_.messages if m.role == "tool" and m.name == "get_claim")
    assert json.loads(result.content)["claim_id"] == other
    assert [v.rule for v in open_.score.violations] == ["own_records_only"] and not open_.score.compliant
    assert "guard_blocks" not in open_.metadata


class NosyClaims(ClaimsEnvironment):
    """The claims desk whose 'oracle' reads another customer's claim: an agent that breaks own_records_only."""

    def oracle(self):
        by_opening = {t.facts["opening"]: t for t in self.tasks("test")}

        def step(conversation, _tools):
            task = by_opening[conversation[1].content]
            script = nosy_script(task, another_customers_claim(task.facts["customer_id"]))
            return script[min(sum(m.role == "assistant" for m in conversation), len(script) - 1)]

        return ScriptedPolicy(step, name="oracle")


def eval_cli(out, *args: str) -> list[Trajectory]:
    result = CliRunner().invoke(
        app, ["eval", "--split", "test", "--n", "2", "--env-arg", "sandbox=false", "--out", str(out), *args]
    )
    assert result.exit_code == 0, result.output
    return sorted(load_trajectories(out), key=lambda t: t.task_id)


def test_eval_guard_flag_blocks_a_misbehaving_agent_and_never_the_oracle(tmp_path):
    # A user environment by import path (pytest puts tests/ on sys.path): the claims desk with a nosy "oracle".
    nosy = eval_cli(tmp_path / "nosy", "--env", "test_kernel:NosyClaims", "--policy", "oracle", "--guard")
    assert len(nosy) == 2
    for trajectory in nosy:
        assert [e.error for e in trajectory.events if e.name == "get_claim"] == ["policy_violation"]
        assert [r["rule"] for b in trajectory.metadata["guard_blocks"] for r in b["rules"]] == ["own_records_only"]
        assert trajectory.score.compliant
    unguarded = eval_cli(tmp_path / "open", "--env", "test_kernel:NosyClaims", "--policy", "oracle")
    assert all([v.rule for v in t.score.violations] == ["own_records_only"] for t in unguarded)

    oracle = eval_cli(tmp_path / "oracle", "--env", "claims", "--policy", "oracle", "--guard")
    assert len(oracle) == 2
    assert all(t.score.success and t.score.compliant for t in oracle)
    assert all(t.metadata["guard"] is True and t.metadata["guard_blocks"] == [] for t in oracle)
    summary = json.loads((tmp_path / "oracle" / "summary.json").read_text())
    assert summary["success_rate"] == 1.0 and summary["compliance_rate"] == 1.0


# ---- 3. the guard in a served agent run, counted in /metrics ------------------------------------------------


def test_a_guarded_agent_run_blocks_the_read_and_counts_it_in_metrics():
    pytest.importorskip("fastapi")
    from test_serve import KEY, metrics, sample

    from agentft.serve import Engine, ScriptedBackend, ServeConfig, create_app
    from agentft.testing import serve_in_thread

    task = claims_task("claims-test-0000")
    other = another_customers_claim(task.facts["customer_id"])
    app = create_app(
        ServeConfig(env="claims", guard=True, api_keys=[KEY], log_dir=None),
        Engine(ScriptedBackend(nosy_script(task, other))),
    )
    with serve_in_thread(app) as url:
        assert sample(metrics(url), "agentft_guard_blocks_total", rule="own_records_only") == 0
        response = httpx.post(
            f"{url}/v1/agent/runs",
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=60,
            json={
                "messages": [{"role": "user", "content": task.facts["opening"]}],
                "task_id": task.id,
                "env": "claims",
            },
        )
        assert response.status_code == 200, response.text
        run = response.json()
        text = metrics(url)
    assert run["status"] == "completed" and run["reply"] == "I can only discuss your own claims."
    [block] = run["guard_blocks"]
    assert block["tool"] == "get_claim" and block["arguments"] == {"claim_id": other} and not block["replayed"]
    assert [r["rule"] for r in block["rules"]] == ["own_records_only"]
    trajectory = Trajectory.model_validate(run["trajectory"])
    read = next(e for e in trajectory.events if e.name == "get_claim")
    assert not read.ok and read.error == "policy_violation" and read.call_id == block["call_id"]
    result = next(m for m in trajectory.messages if m.role == "tool" and m.name == "get_claim")
    assert result.content.startswith("Error (policy_violation): own_records_only:")
    assert trajectory.metadata["guard_blocks"] == run["guard_blocks"] and trajectory.score.compliant
    assert sample(text, "agentft_guard_blocks_total", rule="own_records_only") == 1
    assert sample(text, "agentft_guard_blocks_total", rule="verify_first") == 0


# ---- 4. the episode timeout counts the episode's own time ---------------------------------------------------


def orders_tasks():
    """A cancel of an open order (four model turns) and one other task."""
    env = OrdersEnvironment(n_train=10, n_test=0)
    tasks = env.tasks("train")
    fast = next(t for t in tasks if t.kind == "cancel" and t.facts["status"] == "open")
    slow = next(t for t in tasks if t is not fast)
    return env, fast, slow


class SlowRows:
    """The oracle, but every batch that holds ``slow_order`` takes ``delay_s``; replies report ``latency``."""

    name = "slow-rows"

    def __init__(self, env, slow_order: str, delay_s: float, latency=None) -> None:
        self.oracle, self.slow_order, self.delay_s, self.latency = env.oracle(), slow_order, delay_s, latency

    def act(self, conversations, tools=None):
        slow = [self.slow_order in (conversation[1].content or "") for conversation in conversations]
        if any(slow):
            time.sleep(self.delay_s)
        replies = self.oracle.act(conversations, tools)
        if self.latency is None:
            return replies
        return [
            r.model_copy(update={"latency_s": self.latency(is_slow)}) for r, is_slow in zip(replies, slow, strict=True)
        ]


def test_an_episode_is_not_timed_out_by_its_neighbours_generation():
    env, fast, slow = orders_tasks()
    policy = SlowRows(env, slow.facts["order_id"], 0.7, latency=lambda is_slow: 0.7 if is_slow else 0.01)
    done = {
        t.task_id: t
        for t in run_episodes(
            env, policy, [EpisodeSpec(fast), EpisodeSpec(slow)], RunConfig(batch_size=2, episode_timeout_s=0.3)
        )
    }
    assert done[fast.id].status == "completed" and done[fast.id].score.success
    assert done[fast.id].usage.model_calls == 4 and done[fast.id].usage.model_seconds < 0.1
    assert done[fast.id].usage.wall_seconds >= 0.7  # it did wait for its neighbour's generation
    assert done[slow.id].status == "error" and done[slow.id].score is None
    assert "episode timeout" in done[slow.id].metadata["error"] and done[slow.id].usage.model_calls == 1


def test_without_reported_latency_each_row_is_charged_an_equal_share_of_the_call():
    env, fast, _ = orders_tasks()
    other = next(t for t in env.tasks("train") if t.kind == "cancel" and t.facts["status"] == "open" and t is not fast)
    policy = SlowRows(env, "ORD-", 0.15)  # every call takes 0.15 s; replies report no latency
    config = RunConfig(batch_size=2, episode_timeout_s=0.42)
    together = run_episodes(env, policy, [EpisodeSpec(fast), EpisodeSpec(other)], config)
    assert all(t.status == "completed" and t.score.success for t in together)
    assert all(0.25 <= t.usage.model_seconds < 0.42 for t in together)  # 4 turns x half of 0.15 s
    # Alone in its batch an episode is charged the whole call: its third turn passes 0.42 s.
    alone = run_episodes(env, policy, [EpisodeSpec(fast)], RunConfig(batch_size=1, episode_timeout_s=0.42))
    assert alone[0].status == "error" and "episode timeout" in alone[0].metadata["error"]
    assert alone[0].usage.model_calls == 3


# ---- rules judge the episode's current state (security issue, finding 1) ------------------------------------


def file_then_approve_script(task, policy_id: str):
    """Files a 99,999 flood claim on a home policy (asking first), then approves that new claim (asking first)."""

    def step(conversation, _tools):
        turn = sum(m.role == "assistant" for m in conversation)
        if turn == 0:
            return verify_text(task)
        if turn == 1:
            return "I will file a flood claim of 99999 on your home policy. Do you confirm?"
        if turn == 2:
            return call("file_claim", policy_id=policy_id, incident="flood", amount=99999)
        filed = next(json.loads(m.content) for m in conversation if m.role == "tool" and "claim_id" in m.content)
        if turn == 3:
            return f"I will approve claim {filed['claim_id']}. Do you confirm?"
        if turn == 4:
            return call("decide_claim", claim_id=filed["claim_id"], decision="approve", reason="covered")
        return f"Claim {filed['claim_id']} is approved."

    return ScriptedPolicy(step)


def test_a_claim_filed_in_the_episode_is_judged_by_the_rules_and_the_guard():
    task = next(t for t in CLAIMS.tasks("test") if t.kind == "file_claim")
    with sqlite3.connect(f"file:{CLAIMS.seed_path()}?mode=ro", uri=True) as conn:
        policy = conn.execute(
            "SELECT policy_id FROM policies WHERE customer_id = ? AND product = 'home' AND status = 'active'",
            (task.facts["customer_id"],),
        ).fetchone()
    conn.close()
    if policy is None:
        pytest.skip("this seed gives the customer no active home policy")
    spec = [EpisodeSpec(task)]
    [unguarded] = run_episodes(CLAIMS, file_then_approve_script(task, policy[0]), spec)
    # The approval was executed; the offline scorer sees the new claim in the episode's state and flags it.
    assert {v.rule for v in unguarded.score.violations} >= {"escalate_over_limit", "approve_only_eligible"}
    [guarded] = run_episodes(CLAIMS, file_then_approve_script(task, policy[0]), spec, RunConfig(guard=True))
    blocked = [b for b in guarded.metadata["guard_blocks"] if b["tool"] == "decide_claim"]
    assert blocked and {r["rule"] for r in blocked[0]["rules"]} >= {"escalate_over_limit", "approve_only_eligible"}
    assert guarded.score.compliant  # the approval never ran
    assert not [b for b in guarded.metadata["guard_blocks"] if b["tool"] == "file_claim"]  # filing was confirmed
