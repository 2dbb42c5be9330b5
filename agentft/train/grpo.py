"""Online multi-turn GRPO: sampled episodes in an environment, rewarded by its own verdict.

Each step samples ``group_size`` episodes of each of ``tasks_per_step`` tasks through agentft's runner, so the
episodes are the ones evaluation and collection run (the same kernel step, sandbox, simulated user, guard,
parser and rules). An episode's reward comes from its score (success, compliance, optionally partial credit)
and is normalised within its task's group (TRL: ``scale_rewards="group"``); the loss falls only on the tokens
the model sampled (tool results, user turns and the rest of the rendered conversation are masked), with a KL
term to the reference (the adapter training starts from; without one, the base model).

Built on TRL's ``GRPOTrainer`` through its ``rollout_func``, which hands the sampling to us and takes back,
per episode, the prompt ids, the completion ids, their sampling log-probs and an ``env_mask`` (1 on the model's
own tokens, 0 on the environment's): TRL then computes the reference log-probs, the advantages, the clipped
loss, KL, checkpoints and logging. TRL's ``environment_factory`` does not fit: it runs its own tool loop over
methods of an object, so agentft's simulated user, rules, guard, sandbox and error observations would be
bypassed and the episodes would differ from those that are evaluated.

One episode is one token sequence: ``HFPolicy(record_tokens=True)`` makes each turn's prompt its previous turn's
tokens plus the new messages tokenised on their own (``agentft.policies.hf``), so every model token is trained
in exactly the context it was sampled in; no text is tokenised twice. A turn whose prompt does not continue
the previous turn (a template that re-renders history differently) ends the sequence there: the turns after
it are not trained on, and ``unchained_turns`` counts them.

Training runs the opening every episode of a step shares (system prompt and tools, about 600 tokens in
``claims``) once per forward pass (``share_prefix``, as SFT and DPO do): each row's prompt is that opening and
the rest of its first turn joins the masked part of its completion; the log-probs are the same.

Rollouts run on a copy of the model in ``rollout_dtype`` (bf16 on a bf16 CPU or a GPU) with the LoRA delta
merged into it before every step, on agentft's engine (continuous batching, per-episode caches), the way a
trainer syncs weights to an inference server. Every episode is written to ``rollouts.jsonl`` with the step
that sampled and trained on it (``metadata.grpo_step``, also its seed): the lineage of each update.

``expert_in_group`` makes the last episode of every group the environment's oracle instead of a sample
(off-policy guidance, as in LUFFY, Yan et al. 2025): where every sample of a task fails, the group still holds
a solved episode, so the kinds that sampling never solves get a gradient toward the expert's turns. The oracle's
episode is rendered by the chat template once, its assistant tokens (``{% generation %}``) are the ones trained,
and it is scored, rewarded and normalised within its group like the samples: its advantage is large where the
samples failed and zero where they all succeeded. It is written to the rollouts with ``metadata.grpo_expert``.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentft.augment import AugmentConfig, AugmentedEnvironment
from agentft.chat_format import end_of_turn
from agentft.envs import Environment, Task, load_environment, resolve_policy
from agentft.errors import UserError
from agentft.jsonl import write_jsonl_atomic
from agentft.messages import to_hf
from agentft.runner import EpisodeSpec, RunConfig, run_episodes
from agentft.tools import openai_tools
from agentft.train.common import (
    assistant_tokens,
    callbacks,
    finish_run,
    prepare_model,
    resolve_device,
    resume_point,
    train_timed,
    trainer_arguments,
)
from agentft.train.config import GRPOTrainConfig
from agentft.train.prefix import score_completions_only, sharing_backbone
from agentft.trajectory import Trajectory, TrajectoryWriter, TurnTokens, read_trajectories

__all__ = ["train_grpo", "episode_reward", "episode_sequence", "expert_sequence", "EpisodeSequence", "ROLLOUTS"]

ROLLOUTS = "rollouts.jsonl"


def episode_reward(trajectory: Trajectory, kind: str = "default", violation_penalty: float = 0.5) -> float | None:
    """An episode's reward from its score: None when it was not scored (an environment error).

    ``default``: 1 for success within policy, ``-violation_penalty`` for any rule broken, else 0. ``partial``:
    within policy, half for the right end state and half for the right reads and reply (1 for success)."""
    score = trajectory.score
    if trajectory.status == "error" or score is None:
        return None
    if not score.compliant:
        return -violation_penalty
    if kind == "partial":
        return 0.5 * score.state_match + 0.5 * score.outputs_ok
    return 1.0 if score.success else 0.0


@dataclass
class EpisodeSequence:
    """An episode as one row of training: the first turn's prompt, then everything after it with a mask."""

    prompt_ids: list[int]
    completion_ids: list[int]
    env_mask: list[int]
    """1 on tokens the model sampled, 0 on the environment's (tool results, user turns, chat markup)."""
    logprobs: list[float]
    """Sampling log-probs of the model's tokens; 0 on the environment's."""
    turns: int
    """Model turns in the row."""
    unchained: int
    """Model turns left out because their prompt did not continue the previous turn's tokens."""


def episode_sequence(tokens: Sequence[TurnTokens], max_length: int | None = None) -> EpisodeSequence | None:
    """One sequence from an episode's recorded turns (None when it has none); cut at ``max_length`` tokens."""
    if not tokens:
        return None
    prompt = list(tokens[0].prompt_ids)
    seen = list(prompt)
    completion: list[int] = []
    mask: list[int] = []
    logprobs: list[float] = []
    turns = 0
    for turn in tokens:
        if turn.prompt_ids[: len(seen)] != seen:
            break
        added = turn.prompt_ids[len(seen) :]
        completion += [*added, *turn.completion_ids]
        mask += [0] * len(added) + [1] * len(turn.completion_ids)
        logprobs += [0.0] * len(added) + list(turn.logprobs)
        seen = [*turn.prompt_ids, *turn.completion_ids]
        turns += 1
    if max_length is not None and len(prompt) + len(completion) > max_length:
        keep = max(max_length - len(prompt), 0)
        completion, mask, logprobs = completion[:keep], mask[:keep], logprobs[:keep]
    return EpisodeSequence(prompt, completion, mask, logprobs, turns, len(tokens) - turns)


def expert_sequence(trajectory: Trajectory, tokenizer: Any, max_length: int | None = None) -> EpisodeSequence | None:
    """A demonstrated episode (the oracle's) as one row: the chat template's rendering of the whole conversation,
    trained on the tokens it marks as the assistant's (``{% generation %}``); None when it marks none. Its
    log-probs are 0: no sampling produced them (TRL recomputes the policy's own before the loss)."""
    encoded = tokenizer.apply_chat_template(
        to_hf(trajectory.messages),
        tools=openai_tools(trajectory.tools) or None,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    ids, mask = list(encoded["input_ids"]), list(encoded["assistant_masks"])
    if 1 not in mask:
        return None
    last = len(mask) - mask[::-1].index(1)  # the row ends on the last turn's end, as a sampled episode does
    ids, mask = ids[:last], mask[:last]
    first = mask.index(1)
    prompt, completion, env_mask = ids[:first], ids[first:], mask[first:]
    if max_length is not None and len(ids) > max_length:
        keep = max(max_length - len(prompt), 0)
        completion, env_mask = completion[:keep], env_mask[:keep]
    turns = sum(message.role == "assistant" for message in trajectory.messages)
    return EpisodeSequence(prompt, completion, env_mask, [0.0] * len(completion), turns, 0)


def _reward_function(config: GRPOTrainConfig) -> Callable[[Trajectory], float | None]:
    if config.reward in ("default", "partial"):
        return lambda trajectory: episode_reward(trajectory, config.reward, config.violation_penalty)
    module_name, _, attribute = config.reward.partition(":")
    if not attribute:
        raise UserError(f"reward must be default, partial or pkg.module:function, not {config.reward!r}")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"reward {config.reward!r} cannot be imported: {exc}") from None
    if not callable(function):
        raise UserError(f"reward {config.reward!r} is not a function")
    return function


class _RolloutModel:
    """A frozen copy of the model for sampling, synced to the trained weights before every step."""

    def __init__(self, config: GRPOTrainConfig, device: str) -> None:
        from agentft.models import load_model

        self.model, self.tokenizer = load_model(config.model, dtype=config.rollout_dtype, device=device)
        self.model.eval()
        self.params = dict(self.model.named_parameters())
        for parameter in self.params.values():
            parameter.requires_grad_(False)

    def sync(self, trained: Any) -> None:
        """Copy the trained weights in: each LoRA layer's base weight plus its adapter's delta, merged."""
        import torch
        from peft.tuners.lora import LoraLayer

        with torch.no_grad():
            if not hasattr(trained, "peft_config"):  # full fine-tuning
                for name, parameter in trained.named_parameters():
                    self.params[name].copy_(parameter)
                return
            adapter = trained.active_adapter
            for name, module in trained.named_modules():
                if isinstance(module, LoraLayer) and adapter in module.lora_A:
                    target = name.removeprefix("base_model.model.") + ".weight"
                    merged = module.get_base_layer().weight + module.get_delta_weight(adapter)
                    self.params[target].copy_(merged)


class _Rollouts:
    """TRL's ``rollout_func`` (the dataset's prompts are task ids) and the reward function that reads back the
    episodes' rewards, with the step's rollout statistics as metrics."""

    def __init__(self, config: GRPOTrainConfig, env: Environment, tasks: list[Task], device: str) -> None:
        from agentft.policies.hf import HFPolicy

        self.config = config
        self.env = env
        self.tasks = {task.id: task for task in tasks}
        self.score = _reward_function(config)
        self.rollout = _RolloutModel(config, device)
        generation = config.group_size * config.tasks_per_step
        self.policy = HFPolicy(
            config.model,
            loaded=(self.rollout.model, self.rollout.tokenizer),
            max_new_tokens=config.max_new_tokens,
            batch_size=min(generation, 32),
            max_resident=generation,
            temperature=config.temperature,
            top_p=config.top_p,
            seed=config.seed,
            record_tokens=True,
            verbatim=False,  # the loss recomputes the model's own log-probs: a masked draw would not match them
        )
        self.expert = resolve_policy("oracle", env) if config.expert_in_group else None
        if self.expert is not None:
            _check_assistant_marks(self.rollout.tokenizer)
        self.name = f"grpo:{Path(config.out).name}"
        self.path = Path(config.out) / ROLLOUTS
        self.stats: dict[str, float] = {}

    def __call__(self, prompts: list[str], trainer: Any) -> dict[str, list[Any]]:
        step = trainer.state.global_step
        self.rollout.sync(trainer.model)
        if self.policy.engine is not None:
            self.policy.engine.clear()  # its caches were made under the previous weights
        keys = _attempts(prompts)
        oracle_attempt = self.config.group_size - 1 if self.expert is not None else None
        specs = [EpisodeSpec(self.tasks[task_id], attempt=a, seed=step) for task_id, a in keys if a != oracle_attempt]
        experts = [EpisodeSpec(self.tasks[task_id], attempt=a, seed=step) for task_id, a in keys if a == oracle_attempt]
        run = RunConfig(max_steps=self.config.max_turns, batch_size=len(specs), guard=self.config.guard)
        clock = time.perf_counter()
        done = run_episodes(self.env, self.policy, specs, run, policy_name=self.name)
        seconds = time.perf_counter() - clock
        if experts:
            whole = RunConfig(batch_size=len(experts))  # the model's turn limit would cut a demonstration short
            demonstrated = run_episodes(self.env, self.expert, experts, whole, policy_name="oracle")
            for episode in demonstrated:
                episode.metadata["grpo_expert"] = True
            done += demonstrated
        by_spec = {(t.task_id, t.attempt): t for t in done}
        episodes = [by_spec[key] for key in keys]
        for episode in episodes:
            episode.metadata["grpo_step"] = step
        with TrajectoryWriter(self.path) as writer:
            writer.write_batch(episodes)
        return self._rows(episodes, seconds)

    def _rows(self, episodes: list[Trajectory], seconds: float) -> dict[str, list[Any]]:
        tokenizer = self.rollout.tokenizer
        end = tokenizer.convert_tokens_to_ids(end_of_turn(tokenizer))
        rows: dict[str, list[Any]] = {k: [] for k in ("prompt_ids", "completion_ids", "logprobs", "env_mask")}
        rewards, sampled, unchained, scored = [], 0, 0, []
        for episode in episodes:
            reward = self.score(episode)
            expert = episode.metadata.get("grpo_expert", False)
            if expert:
                sequence = expert_sequence(episode, tokenizer, self.config.max_length)
            else:
                sequence = episode_sequence(episode.tokens, self.config.max_length)
            if sequence is None or reward is None:  # not trained on: an environment error, or no model turn
                sequence = EpisodeSequence([end], [end], [0], [0.0], 0, 0)
            elif not expert:  # the step's statistics are the policy's own
                scored.append(episode)
            rows["prompt_ids"].append(sequence.prompt_ids)
            rows["completion_ids"].append(sequence.completion_ids)
            rows["logprobs"].append(sequence.logprobs)
            rows["env_mask"].append(sequence.env_mask if reward is not None else [0] * len(sequence.env_mask))
            rewards.append(float(reward) if reward is not None else 0.0)
            sampled += sum(len(t.completion_ids) for t in episode.tokens or [])
            unchained += sequence.unchained
        if self.config.share_prefix:
            _split_at_shared_opening(rows)
        samples = sum(not e.metadata.get("grpo_expert", False) for e in episodes)
        self.stats = {
            "success": sum(bool(e.score and e.score.success) for e in scored) / max(len(scored), 1),
            "compliance": sum(bool(e.score and e.score.compliant) for e in scored) / max(len(scored), 1),
            "episode_errors": float(samples - len(scored)),
            "unchained_turns": float(unchained),
            "rollout/episodes_per_min": round(60 * samples / seconds, 2) if seconds else 0.0,
            "rollout/tokens_per_s": round(sampled / seconds, 1) if seconds else 0.0,
            "rollout/seconds": round(seconds, 2),
        }
        rows["agentft_reward"] = rewards
        return rows

    def reward_function(self) -> Callable[..., list[float]]:
        def environment(prompts: Any, completions: Any, agentft_reward: list[float], **kwargs: Any) -> list[float]:
            log_metric = kwargs.get("log_metric")
            if log_metric is not None:
                for name, value in self.stats.items():
                    log_metric(name, value)
            return agentft_reward

        return environment


def _attempts(prompts: list[str]) -> list[tuple[str, int]]:
    """(task id, attempt) of each prompt: the n-th time a task id appears is its attempt n."""
    seen: dict[str, int] = {}
    keys = []
    for task_id in prompts:
        seen[task_id] = seen.get(task_id, -1) + 1
        keys.append((task_id, seen[task_id]))
    return keys


def _check_assistant_marks(tokenizer: Any) -> None:
    if not assistant_tokens(tokenizer, [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."}]):
        raise UserError(
            "expert_in_group trains on the oracle's turns as the chat template marks them, but this model's template "
            "has no {% generation %} block around an assistant turn (agentft's templates do)"
        )


def _split_at_shared_opening(rows: dict[str, list[Any]]) -> None:
    """Make every row's prompt the opening all rows share, moving the rest of each prompt into its completion
    (masked): rows of equal prompt length are right-padded only, which the shared-prefix forward needs."""
    prompts = rows["prompt_ids"]
    shared = min(len(p) for p in prompts)
    for prompt in prompts[1:]:
        shared = next((i for i, (a, b) in enumerate(zip(prompts[0][:shared], prompt, strict=False)) if a != b), shared)
    shared = max(shared, 1)
    for index, prompt in enumerate(prompts):
        rest = prompt[shared:]
        rows["prompt_ids"][index] = prompt[:shared]
        rows["completion_ids"][index] = [*rest, *rows["completion_ids"][index]]
        rows["env_mask"][index] = [0] * len(rest) + rows["env_mask"][index]
        rows["logprobs"][index] = [0.0] * len(rest) + rows["logprobs"][index]


def _trainer_class(share_prefix: bool) -> type:
    from trl import GRPOTrainer

    if not share_prefix:
        return GRPOTrainer

    class SharedPrefixGRPOTrainer(GRPOTrainer):
        """Every forward pass (policy, reference) runs the rows' common opening once; same log-probs."""

        def _get_per_token_logps_and_entropies(self, model, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
            with sharing_backbone(model), score_completions_only():
                return super()._get_per_token_logps_and_entropies(model, *args, **kwargs)

    return SharedPrefixGRPOTrainer


def _cut_rollouts(out: Path, checkpoint: Path | None) -> None:
    """On resume, drop the rollouts of steps after the checkpoint (they are sampled again, identically)."""
    path = out / ROLLOUTS
    if not path.exists():
        return
    if checkpoint is None:
        path.unlink()
        return
    step = int(checkpoint.name.split("-")[-1])
    kept = [t for t in read_trajectories(path, strict=False) if t.metadata.get("grpo_step", 0) < step]
    write_jsonl_atomic(path, [json.loads(t.to_json()) for t in kept])


def _tasks(config: GRPOTrainConfig, env: Environment) -> list[Task]:
    """``n`` tasks of the split from ``start``, each followed by its verified variants (``augment``)."""
    try:
        tasks = env.originals(config.split) if isinstance(env, AugmentedEnvironment) else env.tasks(config.split)
    except KeyError as exc:
        raise UserError(f"{config.env}: {exc.args[0]}") from None
    tasks = tasks[config.start :]
    tasks = tasks[: config.n] if config.n is not None else tasks
    if isinstance(env, AugmentedEnvironment):
        tasks = env.expand(tasks, config.split)
    if len(tasks) < config.tasks_per_step:
        raise UserError(f"{config.env} {config.split}: {len(tasks)} task(s), fewer than tasks_per_step")
    return tasks


def _check(config: GRPOTrainConfig) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("grpo runs on one device (its episodes are sampled in this process): use --recipe gpu-single")
    if config.augment < 0:
        raise UserError(f"augment is the number of rewritten variants per task, not {config.augment}")
    if config.group_size < 2:
        raise UserError("group_size must be at least 2: an episode's advantage is its reward against its group's")
    if config.tasks_per_step < 1:
        raise UserError("tasks_per_step must be at least 1")
    if config.grad_accum != 1:
        raise UserError(
            "grpo accumulates gradients over the whole step (tasks_per_step x group_size episodes) by itself; "
            "leave grad_accum at 1 and set batch_size (episodes per forward pass)"
        )
    if (config.group_size * config.tasks_per_step) % config.batch_size:
        raise UserError(
            f"batch_size {config.batch_size} must divide the episodes of a step "
            f"(tasks_per_step {config.tasks_per_step} x group_size {config.group_size})"
        )


def train_grpo(config: GRPOTrainConfig) -> dict[str, Any]:
    from datasets import Dataset
    from trl import GRPOConfig

    _check(config)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is experimental in TRL: pinned, tested
    device = resolve_device(config)
    out = Path(config.out)
    env: Environment = load_environment(config.env)
    if config.augment:
        env = AugmentedEnvironment(env, AugmentConfig(n=config.augment, seed=config.augment_seed))
    tasks = _tasks(config, env)
    checkpoint = resume_point(config)
    _cut_rollouts(out, checkpoint)
    model, tokenizer = prepare_model(config, device)
    rollouts = _Rollouts(config, env, tasks, device)
    generation = config.group_size * config.tasks_per_step
    arguments = GRPOConfig(
        **{
            **trainer_arguments(config, device),
            "gradient_accumulation_steps": generation // config.batch_size,
            "include_num_input_tokens_seen": "no",  # TRL counts the rollouts' tokens itself
        },
        num_generations=config.group_size,
        beta=config.beta,
        epsilon=config.epsilon,
        loss_type=config.loss_type,
        temperature=config.temperature,
        top_p=config.top_p,
        max_completion_length=config.max_length or 100_000,
        disable_dropout=True,
    )
    trainer = _trainer_class(config.share_prefix)(
        model=model,
        processing_class=tokenizer,
        reward_funcs=rollouts.reward_function(),
        args=arguments,
        train_dataset=Dataset.from_dict({"prompt": [task.id for task in tasks]}),
        rollout_func=rollouts,
        callbacks=callbacks(out),
    )
    metrics: dict[str, Any] = {
        "device": device,
        "env": env.name,
        "tasks": len(tasks),
        **train_timed(trainer, checkpoint),
    }
    metrics.update(_trend(out))
    if "ref" in getattr(trainer.model, "peft_config", {}):
        trainer.model.delete_adapter("ref")  # TRL's frozen copy of the starting adapter: not part of the result
    return finish_run(trainer, tokenizer, config, kind="grpo", inputs=[], metrics=metrics, outputs=[out / ROLLOUTS])


def _trend(out: Path) -> dict[str, Any]:
    """Reward, success and compliance of the first and last steps, and the rollouts' mean speed."""
    path = out / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    rows = [r for r in rows if "reward" in r]
    trend: dict[str, Any] = {}
    for key in ("reward", "success", "compliance"):
        values = [r[key] for r in rows if key in r]
        trend[f"{key}_first"] = values[0] if values else None
        trend[f"{key}_last"] = values[-1] if values else None
    speeds = [r["rollout/episodes_per_min"] for r in rows if "rollout/episodes_per_min" in r]
    trend["rollout_episodes_per_min"] = round(sum(speeds) / len(speeds), 1) if speeds else None
    return trend
