import json

import pytest

from agentft.chat_format import CHAT_TEMPLATE, GEMMA_TEMPLATE, render
from agentft.collect import CollectConfig, collect
from agentft.datasets import longest_turn_tokens, sft_row
from agentft.envs import load_environment
from agentft.errors import UserError
from agentft.messages import AssistantMessage, ToolCall, ToolMessage
from agentft.recovery import RecoveringOracle, slip_call, without_slips
from agentft.runner import RunConfig
from agentft.train.sft import _check_weights
from agentft.trajectory import read_trajectories

SIZES = {"n_train_per_kind": 3, "n_validation_per_kind": 1, "n_test_per_kind": 1}


@pytest.fixture(scope="module", params=["claims", "helpdesk"])
def recovered(request, tmp_path_factory):
    """Every episode of two environments' train tasks, with the expert slipping once in each."""
    out = tmp_path_factory.mktemp(f"recovery-{request.param}")
    result = collect(
        CollectConfig(
            env=request.param,
            policy="oracle",
            out=str(out),
            recovery=1.0,
            augment=1,
            env_kwargs={"sandbox": False, **SIZES},
            run=RunConfig(batch_size=16),
        )
    )
    return request.param, result


def test_every_slip_is_refused_then_recovered_without_changing_the_outcome(recovered):
    name, result = recovered
    assert result.summary.success_rate == 1.0 and result.summary.compliance_rate == 1.0
    kinds = set()
    for trajectory in result.trajectories:
        assert trajectory.policy == "oracle+recovery1"
        slipped = [i for i, m in enumerate(trajectory.messages) if getattr(m, "weight", None) == 0]
        assert len(slipped) == 1, trajectory.id  # exactly one slip per episode at rate 1
        slip, answer, fix = trajectory.messages[slipped[0] : slipped[0] + 3]
        assert isinstance(answer, ToolMessage) and answer.content.startswith("Error (")
        kinds.add(answer.content.split(")")[0].removeprefix("Error ("))
        assert isinstance(fix, AssistantMessage) and fix.tool_calls and fix.weight is None
        assert slip.tool_calls[0].function.model_dump() != fix.tool_calls[0].function.model_dump()
        # the stored record round-trips the weight, and only there
        assert '"weight":0' in trajectory.to_json() and trajectory.to_json().count('"weight"') == 1
    assert kinds == {"unknown_tool", "invalid_args"}, name


def test_slips_are_deterministic_and_a_rate_picks_a_share_of_episodes(tmp_path):
    def run(out, rate):
        config = CollectConfig(
            env="claims",
            policy="oracle",
            out=str(tmp_path / out),
            n=27,
            recovery=rate,
            env_kwargs={"sandbox": False, **SIZES},
        )
        return {t.task_id: [m.model_dump() for m in t.messages] for t in collect(config).trajectories}

    first, again, plain = run("a", 0.5), run("b", 0.5), run("c", 0.0)
    assert first == again
    changed = [task for task in first if first[task] != plain[task]]
    assert 5 <= len(changed) <= 22  # about half of 27
    for task in changed:  # the slipped episode is the plain one with the slip and its error inserted
        slipped = [m for m in first[task] if m.get("weight") == 0]
        assert len(slipped) == 1
        assert len(first[task]) == len(plain[task]) + 2


def test_slip_kinds_follow_the_tool_schemas():
    env = load_environment("claims", sandbox=False, **SIZES)
    tools = env.start(env.tasks("train")[0]).tools
    call = ToolCall.create("c", "decide_claim", {"claim_id": "CLM-1", "decision": "deny", "reason": "late"})
    seen = {}
    for seed in range(60):
        slipped = slip_call(call, tools, seed)
        function = slipped.function
        if function.name != "decide_claim":
            seen["unknown_tool"] = function.name
        elif set(function.arguments) < set(call.function.arguments):
            seen["missing_argument"] = function.arguments
        elif function.arguments.get("decision") not in (None, "deny"):
            seen["bad_value"] = function.arguments["decision"]
        else:
            seen["renamed_argument"] = function.arguments
    assert set(seen) == {"unknown_tool", "missing_argument", "bad_value", "renamed_argument"}
    assert seen["unknown_tool"] not in {t.name for t in tools}
    assert seen["bad_value"] not in ("approve", "deny")
    assert slip_call(call, tools, 3) == slip_call(call, tools, 3)


def test_the_inner_oracle_never_sees_a_slip():
    slip = AssistantMessage(tool_calls=[ToolCall.create("s", "nope", {})], weight=0)
    kept = AssistantMessage(tool_calls=[ToolCall.create("k", "get_claim", {"claim_id": "CLM-1"})])
    conversation = [
        slip,
        ToolMessage(content="Error (unknown_tool): ...", tool_call_id="s"),
        kept,
        ToolMessage(content="{}", tool_call_id="k"),
    ]
    assert without_slips(conversation) == conversation[2:]


def test_recovery_needs_an_oracle_told_its_tasks():
    from agentft.policies.scripted import NoopPolicy

    with pytest.raises(UserError, match="told each task"):
        RecoveringOracle(NoopPolicy(), 0.5)
    env = load_environment("claims", sandbox=False, **SIZES)
    with pytest.raises(UserError, match="fraction"):
        RecoveringOracle(env.oracle(), 1.5)
    with pytest.raises(UserError, match="oracle's"):
        collect(CollectConfig(env="claims", policy="noop", out="/nonexistent", recovery=0.5))


def test_a_slip_is_context_not_loss(recovered, tiny):
    """The row marks the slip weight 0; the template renders it but leaves it outside the assistant mask."""
    _, result = recovered
    _, tokenizer = tiny
    trajectory = result.trajectories[0]
    row = sft_row(trajectory)
    weights = [m["weight"] for m in row["messages"] if m["role"] == "assistant"]
    assert weights.count(0) == 1 and set(weights) == {0, 1}
    tools = json.loads(row["tools"])
    encoded = tokenizer.apply_chat_template(
        row["messages"], tools=tools, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    learned = tokenizer.decode([t for t, m in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True) if m])
    rendered = render(row["messages"], tools, template=CHAT_TEMPLATE)
    slip = next(m for m in trajectory.messages if getattr(m, "weight", None) == 0).tool_calls[0].function
    slip_text = f'<tool_call>{{"name": {json.dumps(slip.name)}, "arguments": {json.dumps(slip.arguments)}}}</tool_call>'
    assert slip_text in rendered and slip_text not in learned
    fix = row["messages"][[m.get("weight") for m in row["messages"]].index(0) + 2]
    assert f'"name": {json.dumps(fix["tool_calls"][0]["function"]["name"])}' in learned
    # a weight of 1 renders exactly as no weight at all, in both of agentft's templates
    unweighted = [{k: v for k, v in m.items() if k != "weight"} for m in row["messages"] if m.get("weight") != 0]
    weighted = [m for m in row["messages"] if m.get("weight") != 0]
    for template in (CHAT_TEMPLATE, GEMMA_TEMPLATE):
        assert render(weighted, tools, template=template) == render(unweighted, tools, template=template)


def test_the_generation_limit_ignores_slips(recovered, tiny):
    _, result = recovered
    _, tokenizer = tiny
    plain = [t.model_copy(update={"messages": without_slips(t.messages)}) for t in result.trajectories]
    assert longest_turn_tokens(result.trajectories, tokenizer) == longest_turn_tokens(plain, tokenizer)


def test_sft_refuses_weight_zero_rows_under_a_template_that_would_learn_them(recovered, tiny):
    _, result = recovered
    _, tokenizer = tiny
    rows = {"messages": [sft_row(t)["messages"] for t in result.trajectories]}
    _check_weights(rows, tokenizer)  # agentft's template: fine
    ignoring = tokenizer.chat_template.replace("message.weight == 0", "message.weight == 7")
    original, tokenizer.chat_template = tokenizer.chat_template, ignoring
    try:
        with pytest.raises(UserError, match="weight 0"):
            _check_weights(rows, tokenizer)
        _check_weights({"messages": [[{"role": "assistant", "content": "x", "weight": 1}]]}, tokenizer)  # none: fine
    finally:
        tokenizer.chat_template = original


def test_recorded_slips_reread_from_disk(recovered):
    _, result = recovered
    again = list(read_trajectories(result.out / "trajectories.jsonl"))
    assert [t.messages for t in again] == [t.messages for t in result.trajectories]


def test_every_recovery_demonstration_becomes_a_training_row(recovered):
    """A slip to a tool that does not exist is context (weight 0), not a malformed demonstration."""
    from agentft.datasets import build_sft_dataset

    _, result = recovered
    built = build_sft_dataset([result.out], validation_fraction=0.0)
    assert not built.drops, built.drops
    assert len(built.train) == len(result.trajectories)
