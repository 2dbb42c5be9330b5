import pytest

from agentft.envs import Task, load_environment, resolve_policy
from agentft.errors import UserError
from agentft.policies import ScriptedPolicy
from agentft.runner import RunConfig, plan_episodes, run_episodes
from agentft.toy_env import OrdersEnvironment

ENV = "agentft.toy_env:OrdersEnvironment"


class CountingPolicy:
    """Wraps a policy and records the size of every batch it is asked for."""

    def __init__(self, inner):
        self.inner, self.name, self.batches = inner, inner.name, []

    def act(self, conversations, tools=None):
        self.batches.append(len(conversations))
        return self.inner.act(conversations, tools)


def test_oracle_solves_every_task_and_noop_none():
    env = load_environment(ENV)
    for split in ("train", "test"):
        specs = plan_episodes(env.tasks(split))
        oracle = run_episodes(env, resolve_policy("oracle", env), specs)
        assert all(t.score.success and t.score.compliant and t.status == "completed" for t in oracle)
        noop = run_episodes(env, resolve_policy("noop"), specs)
        assert not any(t.score.success for t in noop)


def test_lockstep_batches_and_refills_slots():
    env = OrdersEnvironment(n_train=20)
    policy = CountingPolicy(env.oracle())
    trajectories = run_episodes(env, policy, plan_episodes(env.tasks("train")), RunConfig(batch_size=8))
    assert len(trajectories) == 20 and len({t.id for t in trajectories}) == 20
    assert max(policy.batches) == 8 and policy.batches[0] == 8
    assert sum(policy.batches) == sum(t.usage.model_calls for t in trajectories)
    # The same episodes one at a time (the sequential baseline) give the same records.
    sequential = run_episodes(env, env.oracle(), plan_episodes(env.tasks("train")), RunConfig(batch_size=1))
    key = lambda t: t.id  # noqa: E731
    for a, b in zip(sorted(trajectories, key=key), sorted(sequential, key=key), strict=True):
        strip = lambda events: [e.model_copy(update={"latency_ms": 0}) for e in events]  # noqa: E731
        assert a.messages == b.messages and strip(a.events) == strip(b.events) and a.score == b.score


def test_records_carry_events_usage_and_unique_call_ids():
    env = OrdersEnvironment(n_train=4)
    task = next(t for t in env.tasks("train") if t.kind == "cancel" and t.facts["status"] == "open")
    [trajectory] = run_episodes(env, env.oracle(), plan_episodes([task], k=1))
    assert [e.name for e in trajectory.events] == ["get_order", "cancel_order"]
    assert [e.effect for e in trajectory.events] == ["read", "write"]
    ids = [c.id for m in trajectory.messages if m.role == "assistant" for c in m.tool_calls]
    assert len(ids) == len(set(ids)) == 2
    assert trajectory.usage.model_calls == 4 and trajectory.usage.wall_seconds >= 0
    assert trajectory.tools and trajectory.metadata["task_kind"] == "cancel"


def test_bad_model_output_is_fed_back_and_counted_never_fatal():
    env = OrdersEnvironment(n_train=2)
    task = env.tasks("train")[0]
    order = task.facts["order_id"]
    policy = ScriptedPolicy(
        [
            '<tool_call>{"name": "get_order", "arguments": {"order_id": </tool_call>',  # bad JSON
            '<tool_call>{"name": "drop_orders", "arguments": {}}</tool_call>',  # unknown tool
            '<tool_call>{"name": "get_order", "arguments": {"order_id": 7}}</tool_call>',  # invalid args
            '<tool_call>{"name": "get_order", "arguments": {"order_id": "ORD-0000"}}</tool_call>',  # tool error
            f'<tool_call>{{"name": "get_order", "arguments": {{"order_id": "{order}"}}}}</tool_call>',
            f"Order {order} is {task.facts['status']}.",
        ]
    )
    [trajectory] = run_episodes(env, policy, plan_episodes([task]))
    assert trajectory.status == "completed" and trajectory.score.success
    assert [e.error for e in trajectory.events] == ["parse", "parse", "invalid_args", "tool_error", None]
    notices = [m.content for m in trajectory.messages if m.role == "user" and m.content.startswith("[agentft]")]
    assert len(notices) == 2 and "bad_json" in notices[0] and "unknown_tool" in notices[1]


def test_max_steps_and_errors_end_only_their_own_episode():
    class Flaky(OrdersEnvironment):
        def start(self, task: Task, *, seed: int = 0):
            episode = super().start(task, seed=seed)
            if task.id.endswith("1"):
                episode.call_tool = lambda name, arguments: 1 / 0
            if task.id.endswith("2"):
                raise RuntimeError("seed database missing")
            return episode

    env = Flaky(n_train=4)
    looping = ScriptedPolicy(
        lambda conversation, tools: (
            '<tool_call>{"name": "get_order", "arguments": {"order_id": "ORD-0000"}}</tool_call>'
        )
    )
    trajectories = {
        t.task_id: t for t in run_episodes(env, looping, plan_episodes(env.tasks("train")), RunConfig(max_steps=3))
    }
    assert trajectories["train-0000"].status == "max_steps" and trajectories["train-0000"].usage.model_calls == 3
    assert trajectories["train-0001"].status == "error"
    assert "ZeroDivisionError" in trajectories["train-0001"].metadata["error"]
    assert (
        trajectories["train-0002"].status == "error"
        and "seed database missing" in trajectories["train-0002"].metadata["error"]
    )
    assert trajectories["train-0003"].status == "max_steps"
    # The model's failures are scored as failures; the environment's are not scored at all (reported apart).
    assert all(t.score is not None and not t.score.success for t in trajectories.values() if t.status != "error")
    assert all(t.score is None for t in trajectories.values() if t.status == "error")


def test_episode_timeout():
    env = OrdersEnvironment(n_train=2, tool_delay_s=0.05)
    looping = ScriptedPolicy(
        lambda c, t: '<tool_call>{"name": "get_order", "arguments": {"order_id": "ORD-1"}}</tool_call>'
    )
    trajectories = run_episodes(
        env, looping, plan_episodes(env.tasks("train")), RunConfig(max_steps=100, episode_timeout_s=0.2)
    )
    assert all(t.status == "error" and "episode timeout" in t.metadata["error"] for t in trajectories)


def test_environment_registry_errors():
    with pytest.raises(UserError, match="no built-in environment 'nope'"):
        load_environment("nope")
    with pytest.raises(UserError, match="has no 'Missing'"):
        load_environment("agentft.toy_env:Missing")
    with pytest.raises(UserError, match="did not give an environment"):
        load_environment("agentft.toy_env:SYSTEM_PROMPT")
    with pytest.raises(UserError, match="pass --env"):
        resolve_policy("oracle")


def test_environment_spec_mistakes_are_messages(tmp_path):
    """What a user types wrong in --env, --env-arg and --policy is told back, never a traceback."""
    with pytest.raises(UserError, match=r"cannot import 'nope_pkg_xyz'.*no module named 'nope_pkg_xyz'"):
        load_environment("nope_pkg_xyz:load_environment")
    (tmp_path / "my_desk").mkdir()
    with pytest.raises(UserError, match=r"a folder is loaded as my_desk:load_environment"):
        load_environment(str(tmp_path / "my_desk"))
    with pytest.raises(UserError, match=r"is neither a built-in name nor an import path"):
        load_environment("./not/a/folder")
    broken = tmp_path / "broken_env_pkg_xyz.py"
    broken.write_text("import not_installed_dependency_xyz\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(UserError, match=r"importing 'broken_env_pkg_xyz'.*not_installed_dependency_xyz"):
            load_environment("broken_env_pkg_xyz:load_environment")
    finally:
        sys.path.remove(str(tmp_path))
    with pytest.raises(UserError, match=r"does not take these --env-arg values.*it takes: .*seed"):
        load_environment("agentft.toy_env:OrdersEnvironment", perkind=2)
    with pytest.raises(UserError, match=r"unknown policy 'orcale': use oracle, noop"):
        resolve_policy("orcale", OrdersEnvironment())
