"""GRPO on the tiny model: real TRL steps over real episodes of the toy environment."""

import json
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file

from agentft.envs import load_environment
from agentft.errors import UserError
from agentft.messages import SystemMessage, UserMessage
from agentft.policies.hf import HFPolicy
from agentft.train import GRPOTrainConfig, train_grpo
from agentft.train.grpo import ROLLOUTS, episode_reward, episode_sequence, expert_sequence
from agentft.trajectory import Score, Trajectory, Violation, read_trajectories

ENV = "agentft.toy_env:OrdersEnvironment"


def low_ids(trajectory: Trajectory) -> float:
    """A reward the tiny random model can learn: the share of sampled tokens whose id is a multiple of 8."""
    ids = [i for turn in trajectory.tokens for i in turn.completion_ids]
    return sum(i % 8 == 0 for i in ids) / max(len(ids), 1)


def config(out, **overrides):
    settings = dict(
        model="tiny-test",
        env=ENV,
        out=str(out),
        group_size=2,
        tasks_per_step=2,
        batch_size=2,
        max_new_tokens=16,
        max_turns=3,
        lr=1e-2,
        device="cpu",
        reward=f"{__name__}:low_ids",
        save_steps=100,
    )
    return GRPOTrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def start_adapter(tmp_path_factory):
    """A LoRA adapter that is not the identity (as an SFT adapter is not)."""
    from agentft.models import load_model

    model, tokenizer = load_model("tiny-test")  # its own copy: PEFT freezes the base weights it wraps
    path = tmp_path_factory.mktemp("grpo") / "sft"
    lora = LoraConfig(r=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    peft = get_peft_model(model, lora)
    peft.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def metric_rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"reward"' in line]


def test_grpo_from_an_adapter_trains_it_logs_rewards_and_resumes(start_adapter, tmp_path, monkeypatch):
    import agentft.train.grpo as grpo

    out = tmp_path / "grpo"

    def crash(*args, **kwargs):  # the run dies after its last checkpoint, before it saves its result
        raise RuntimeError("killed")

    monkeypatch.setattr(grpo, "finish_run", crash)
    with pytest.raises(RuntimeError, match="killed"):
        train_grpo(config(out, adapter=str(start_adapter), max_steps=2, save_steps=1))
    monkeypatch.undo()
    metrics = train_grpo(config(out, adapter=str(start_adapter), max_steps=3, save_steps=1, resume=True))

    assert metrics["resumed_at_step"] == 2 and metrics["steps"] == 3
    rows = metric_rows(out)
    assert [r["step"] for r in rows] == [1, 2, 3]  # each step logged once across the two runs
    assert all(math.isfinite(r["loss"]) and 0 <= r["reward"] <= 1 for r in rows)
    assert all({"success", "compliance", "kl", "reward_std", "rollout/tokens_per_s"} <= set(r) for r in rows)
    before, after = (
        load_file(str(start_adapter / "adapter_model.safetensors")),
        load_file(str(out / "adapter_model.safetensors")),
    )
    assert before.keys() == after.keys() and all("lora_" in k for k in after)  # LoRA only: the base is not saved
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert not (out / "ref").exists() and not list(out.glob("checkpoint-*"))
    # Lineage: every episode of every step once, tagged with the step that trained on it.
    episodes = list(read_trajectories(out / ROLLOUTS))
    assert sorted(e.metadata["grpo_step"] for e in episodes) == [0] * 4 + [1] * 4 + [2] * 4
    assert all(e.tokens for e in episodes)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "grpo" and manifest["config"]["adapter"] == str(start_adapter)
    assert any(o["path"].endswith(ROLLOUTS) for o in manifest["outputs"])
    assert (out / "loss.png").stat().st_size > 0


def test_reward_rises_on_a_learnable_reward(tmp_path):
    # Full fine-tuning: the tiny random model's LoRA cannot move its near-uniform output distribution much.
    out = tmp_path / "grpo"
    train_grpo(config(out, full=True, lr=1e-1, beta=0.0, max_steps=10, group_size=4, batch_size=8, max_turns=1))
    rewards = [r["reward"] for r in metric_rows(out)]
    assert len(rewards) == 10
    assert sum(rewards[-2:]) / 2 > rewards[0] + 0.5, rewards  # from ~0.1 to ~1 in 4 of 4 seeds tried


def test_grpo_samples_rewritten_variants_of_its_tasks_too(tmp_path):
    from agentft.augment import original_task_id

    out = tmp_path / "grpo"
    settings = dict(env="claims", reward="default", start=5, n=2, augment=1, max_steps=1, max_turns=1)
    metrics = train_grpo(config(out, **settings, tasks_per_step=4, batch_size=8))
    ids = {e.task_id for e in read_trajectories(out / ROLLOUTS)}
    originals = {original_task_id(i) for i in ids}
    assert originals == {"claims-train-0005", "claims-train-0006"} and ids > originals  # and their variants
    assert metrics["tasks"] == len(ids) == 4
    assert json.loads((out / "manifest.json").read_text())["config"]["augment"] == 1


def expert_log_prob(model, sequence) -> float:
    """Mean log-prob of a row's trained tokens under ``model``."""
    ids = torch.tensor([sequence.prompt_ids + sequence.completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(sequence.prompt_ids) - 1 : -1].float()
    scores = torch.log_softmax(logits, dim=-1).gather(1, ids[0, len(sequence.prompt_ids) :, None])[:, 0]
    return scores[torch.tensor(sequence.env_mask, dtype=torch.bool)].mean().item()


def test_the_oracle_in_each_group_is_rendered_as_the_model_sees_it_and_trained_toward(tiny, tmp_path):
    from agentft.models import load_model
    from agentft.runner import EpisodeSpec, RunConfig, run_episodes

    _, tokenizer = tiny
    env = load_environment(ENV)
    task = env.tasks("train")[0]
    [demonstration] = run_episodes(env, env.oracle(), [EpisodeSpec(task)], RunConfig(), policy_name="oracle")
    sequence = expert_sequence(demonstration, tokenizer)
    # Its opening is the first prompt a sampling policy gets for the same task, token for token.
    policy = HFPolicy("tiny-test", loaded=tiny, max_new_tokens=4, temperature=1.0, record_tokens=True)
    [sampled] = run_episodes(env, policy, [EpisodeSpec(task)], RunConfig(max_steps=1), policy_name="p")
    assert sequence.prompt_ids == sampled.tokens[0].prompt_ids
    # Trained: the assistant's turns, each with its end of turn; masked: the tool results between them.
    trained = tokenizer.decode([t for t, m in zip(sequence.completion_ids, sequence.env_mask, strict=True) if m])
    assert trained.count("<|im_end|>") == sequence.turns == 2 and "<tool_call>" in trained
    assert "<tool_response>" not in trained and 0 in sequence.env_mask
    assert sequence.env_mask[-1] == 1 and tokenizer.decode(sequence.completion_ids[-1:]) == "<|im_end|>"

    # The tiny model never solves a task, so only the oracle's episodes carry an advantage: training raises them.
    out = tmp_path / "grpo"
    settings = dict(full=True, reward="default", n=1, tasks_per_step=1, beta=0.0, max_steps=3, expert_in_group=True)
    train_grpo(config(out, lr=1e-2, **settings))
    episodes = list(read_trajectories(out / ROLLOUTS))
    experts = [e for e in episodes if e.metadata.get("grpo_expert")]
    assert len(episodes) == 6 and len(experts) == 3  # 3 steps x (1 sample + the oracle) of task 0
    assert all(e.policy == "oracle" and e.score.success for e in experts)
    assert all(r["success"] == 0.0 for r in metric_rows(out))  # the statistics are the samples' own
    trained_model, _ = load_model(str(out))
    before, after = expert_log_prob(tiny[0], sequence), expert_log_prob(trained_model, sequence)
    assert after > before + 0.5, (before, after)


def test_the_oracle_in_each_group_needs_a_template_that_marks_the_assistant_turns(tiny):
    import copy

    from agentft.train.grpo import _check_assistant_marks

    tokenizer = copy.deepcopy(tiny[1])
    tokenizer.chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    with pytest.raises(UserError, match="generation"):
        _check_assistant_marks(tokenizer)
    _check_assistant_marks(tiny[1])  # agentft's template marks them


def test_recorded_log_probs_match_a_recomputation_of_the_whole_episode(tiny):
    model, tokenizer = tiny
    env = load_environment(ENV)
    policy = HFPolicy("tiny-test", loaded=tiny, max_new_tokens=12, temperature=1.0, record_tokens=True)
    tools = env.start(env.tasks("train")[0]).tools
    # Three turns of several conversations, as the runner drives them: each turn's reply, then a user's answer.
    conversations = {
        f"e{i}": [SystemMessage(content="You help."), UserMessage(content=f"Order ORD-00{i}?")] for i in range(3)
    }
    recorded = {key: [] for key in conversations}
    for turn in range(3):
        for key, conversation in conversations.items():
            policy.submit(key, conversation, tools)
        pending = set(conversations)
        while pending:
            for key, reply in policy.poll():
                pending.discard(key)
                recorded[key].append(reply.tokens.model_copy(update={"step": turn}))
                conversations[key] += [reply.message, UserMessage(content=f"thanks {turn}, and then?")]
    for turns in recorded.values():
        sequence = episode_sequence(turns)
        assert sequence.unchained == 0 and sequence.turns == 3
        assert 0 in sequence.env_mask  # the users' turns sit between the model's, masked
        ids = torch.tensor([sequence.prompt_ids + sequence.completion_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(sequence.prompt_ids) - 1 : -1].float()
        recomputed = torch.log_softmax(logits, dim=-1).gather(1, ids[0, len(sequence.prompt_ids) :, None])[:, 0]
        mask = torch.tensor(sequence.env_mask, dtype=torch.bool)
        stored = torch.tensor(sequence.logprobs)
        assert torch.allclose(recomputed[mask], stored[mask], atol=1e-4), (recomputed[mask] - stored[mask]).abs().max()
        assert (stored[~mask] == 0).all()


def test_shared_opening_gives_the_log_probs_trl_computes_without_it():
    from trl.trainer.utils import add_fused_lm_head

    from agentft.models import load_model
    from agentft.train.prefix import score_completions_only, sharing_backbone

    model, _ = load_model("tiny-test")  # its own copy: TRL patches the forward, as GRPOTrainer does
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    generator = torch.Generator().manual_seed(0)
    opening = torch.randint(3, 500, (40,), generator=generator)
    rows = [torch.cat([opening, torch.randint(3, 500, (n,), generator=generator)]) for n in (12, 20, 7)]
    width = max(len(r) for r in rows)
    ids = torch.stack([torch.cat([r, torch.zeros(width - len(r), dtype=torch.long)]) for r in rows])
    mask = torch.stack([(torch.arange(width) < len(r)).long() for r in rows])
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :40] = -100  # TRL labels the completion only
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        with sharing_backbone(model), score_completions_only():
            shared = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    scored = labels[:, 1:] != -100  # entry t is the log-prob of token t + 1
    assert torch.allclose(plain.log_probs[scored], shared.log_probs[scored], atol=1e-5)
    assert torch.allclose(plain.entropy[scored], shared.entropy[scored], atol=1e-4)


def test_episode_reward_by_score():
    def episode(status="completed", **score):
        return Trajectory(id="e", env="x", task_id="t", policy="p", status=status, score=Score(**score))

    broke = [Violation(rule="r", message="m")]
    assert episode_reward(episode(success=True)) == 1.0
    assert episode_reward(episode(success=False)) == 0.0
    assert episode_reward(episode(success=True, compliant=False, violations=broke), violation_penalty=0.7) == -0.7
    assert episode_reward(episode(state_match=True, outputs_ok=False), "partial") == 0.5
    assert episode_reward(episode(status="error")) is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"group_size": 1}, "group_size must be at least 2"),
        ({"batch_size": 3}, "batch_size 3 must divide"),
        ({"grad_accum": 2}, "leave grad_accum at 1"),
        ({"reward": "no_such_module:f"}, "cannot be imported"),
        ({"reward": "sparse"}, "reward must be default, partial"),
        ({"split": "nope"}, "orders"),
        ({"augment": -1}, "augment is the number of rewritten variants"),
    ],
)
def test_bad_settings_are_user_errors(tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        train_grpo(config(tmp_path / "out", max_steps=1, **overrides))


def test_train_plan_sizes_a_grpo_step():
    from agentft.train.plan import estimate

    lora = estimate("tiny-test", "lora", 8, 512, "cpu", device_flops=1e11)
    grpo = estimate("tiny-test", "grpo", 8, 512, "cpu", device_flops=1e11)
    assert {"reference adapter", "rollout model", "rollout cache"} <= set(grpo.memory)
    assert grpo.memory["rollout model"] == grpo.memory["weights"]  # fp32 on a CPU
    assert grpo.peak_bytes > lora.peak_bytes and grpo.flops_per_token > lora.flops_per_token  # + the reference
