import subprocess
import sys

from typer.testing import CliRunner

from agentft.cli import app

runner = CliRunner()


def test_models_list_and_pull_tiny_test():
    result = runner.invoke(app, ["models", "pull", "tiny-test"])
    assert result.exit_code == 0, result.output
    listing = runner.invoke(app, ["models", "list"])
    assert "tiny-test" in listing.output and "smollm2-135m" in listing.output


def test_chat_prints_a_reply_from_tiny_test():
    result = runner.invoke(app, ["chat", "--model", "tiny-test", "--max-new-tokens", "5", "hello"])
    assert result.exit_code == 0, result.output


def test_doctor_reports_versions_and_cache():
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    for needle in ("transformers", "AGENTFT_HOME", "torch threads", "CPU bf16", "GPU"):
        assert needle in result.output


def test_user_errors_exit_2_with_a_message_not_a_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "agentft.cli", "models", "pull", "nope"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "error:" in result.stderr and "embedded models are" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_documented_command_is_there():
    names = {command.name or command.callback.__name__ for command in app.registered_commands}
    groups = {group.name for group in app.registered_groups}
    assert {"chat", "collect", "eval", "report", "export", "lineage", "doctor", "quickstart", "serve"} <= names
    assert {"models", "dataset", "train", "rag"} <= groups
