"""A training method is one config and one function: registered, it is ``agentft train NAME``."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from agentft.cli import app
from agentft.errors import UserError
from agentft.train import METHODS, SFTTrainConfig, register_method

runner = CliRunner()


@dataclass
class EchoConfig:
    out: str = field(metadata={"help": "where echo.txt goes"})  # no default: the command line must give it
    word: str = field(default="hello", metadata={"help": "word to write"})
    times: int = field(default=1, metadata={"help": "repeat count"})
    shout: bool = field(default=False, metadata={"help": "in capitals"})
    tags: list[str] = field(default_factory=list, metadata={"help": "labels"})


def train_echo(config: EchoConfig) -> dict:
    word = config.word.upper() if config.shout else config.word
    Path(config.out).mkdir(parents=True, exist_ok=True)
    (Path(config.out) / "echo.txt").write_text(json.dumps({"words": [word] * config.times, "tags": config.tags}))
    return {"steps": config.times}


@pytest.fixture
def echo():
    register_method("echo", EchoConfig, train_echo, help="Write a word to a file (a toy method).")
    yield
    del METHODS["echo"]


def test_a_registered_method_is_a_command_whose_help_is_its_config(echo):
    listing = runner.invoke(app, ["train", "--help"])
    assert listing.exit_code == 0, listing.output
    assert "echo" in listing.output and "Write a word to a file" in listing.output
    result = runner.invoke(app, ["train", "echo", "--help"])
    assert result.exit_code == 0, result.output
    for text in (
        "--word",
        "word to write",
        "--times",
        "repeat count",
        "--shout",
        "--no-shout",
        "in capitals",
        "--recipe",
        "[default: hello]",
    ):
        assert text in result.output, text


def test_flags_override_the_recipe_which_overrides_the_config(echo, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("echo:\n  word: recipe\n  times: 2\n")
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        ["train", "echo", "--out", str(out), "--recipe", str(recipe), "--times", "3", "--shout", "--tags", "[a, b]"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "echo.txt").read_text()) == {"words": ["RECIPE"] * 3, "tags": ["a", "b"]}
    assert "echo done" in result.output and '"steps": 3' in result.output
    missing = runner.invoke(app, ["train", "echo", "--recipe", str(recipe)])
    assert missing.exit_code != 0 and "--out" in missing.output


def test_registering_checks_the_config_at_once():
    @dataclass
    class Undocumented:
        out: str = field(default="x", metadata={"help": "output"})
        steps: int = 1

    with pytest.raises(UserError, match=r"Undocumented field\(s\) \['steps'\] have no help"):
        register_method("bad", Undocumented, train_echo, help="-")
    with pytest.raises(UserError, match="already registered"):
        register_method("sft", EchoConfig, train_echo, help="-")
    with pytest.raises(UserError, match="already the config of 'sft'"):
        register_method("sft2", SFTTrainConfig, train_echo, help="-")
    assert "bad" not in METHODS and "sft2" not in METHODS


def options(method: str) -> set[str]:
    command = typer.main.get_command(app).get_command(None, "train").get_command(None, method)
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def test_the_shipped_methods_keep_their_flags():
    common = {
        "--out",
        "--model",
        "--recipe",
        "--adapter",
        "--max-steps",
        "--epochs",
        "--lr",
        "--lora-r",
        "--batch-size",
        "--resume",
        "--device",
    }
    assert common | {"--data", "--full"} <= options("sft")
    assert common | {"--data", "--beta"} <= options("dpo")
    assert common | {"--docs", "--block-size", "--full"} <= options("cpt")


def test_sft_flags_reach_the_config(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setitem(METHODS, "sft", dataclasses.replace(METHODS["sft"], train=lambda c: seen.append(c) or {}))
    result = runner.invoke(
        app,
        [
            "train",
            "sft",
            "--data",
            "d",
            "--out",
            str(tmp_path),
            "--recipe",
            "cpu-small",
            "--lr",
            "0.5",
            "--no-padding-free",
            "--bf16",
            "true",
            "--resume",
        ],
    )
    assert result.exit_code == 0, result.output
    [config] = seen
    assert (config.data, config.lr, config.padding_free, config.bf16, config.resume) == ("d", 0.5, False, True, True)
    assert (config.batch_size, config.device) == (8, "cpu")  # from the recipe; not given, so not overridden
    missing = runner.invoke(app, ["train", "sft", "--out", str(tmp_path), "--recipe", "cpu-small"])
    assert missing.exit_code != 0 and "--data" in missing.output and len(seen) == 1
