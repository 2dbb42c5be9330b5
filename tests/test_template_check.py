"""``agentft doctor --model``: a model's chat template checked for tool use (issue 20, item 4). agentft's own
template passes every check; a plain ChatML template, like SmolLM2-Instruct's own, fails the ones it breaks."""

from __future__ import annotations

from transformers import AutoTokenizer
from typer.testing import CliRunner

from agentft.cli import app
from agentft.models import resolve_model_path
from agentft.template_check import check_template

PLAIN_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_agentfts_template_passes_every_check():
    result = CliRunner().invoke(app, ["doctor", "--model", "tiny-test"])
    assert result.exit_code == 0, result.output
    assert result.output.count(" ok ") == 5 and "FAIL" not in result.output


def test_a_plain_chatml_template_fails_naming_what_it_drops(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("tiny-test"))
    tokenizer.chat_template = PLAIN_CHATML
    failed = {c.name: c.detail for c in check_template(PLAIN_CHATML, tokenizer) if not c.passed}
    assert set(failed) == {"tools rendered", "tool calls rendered", "parser round trip", "generation markers"}
    assert failed["tools rendered"] == "not in the prompt: get_claim, decide_claim"
    tokenizer.save_pretrained(tmp_path / "plain")
    result = CliRunner().invoke(app, ["doctor", "--model", str(tmp_path / "plain")])
    assert result.exit_code == 1
    assert "FAIL" in result.output and "agentft.chat_format.CHAT_TEMPLATE" in result.output
    assert check_template(None)[0].detail == "the tokenizer has no chat template"
