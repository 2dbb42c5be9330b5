"""The second embedded family: Gemma 3 270M pulled from its PyPI wheels, its template carrying tool use, and the
engine running its sliding-window layers exactly on an agent prompt longer than the window."""

import pytest
import torch
from typer.testing import CliRunner

from agentft.cli import app
from agentft.engine import Request
from agentft.envs import load_environment
from agentft.messages import SystemMessage, UserMessage
from agentft.models import is_pulled, pull
from agentft.policies.hf import HFPolicy

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
