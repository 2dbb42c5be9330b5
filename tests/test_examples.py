"""Every numbered example runs, with the tiny model where it would otherwise take minutes."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("[0-9][0-9]_*.py"))
FAST_ARGS = {
    "01_chat_format.py": [],
    "02_batched_policy.py": ["--model", "tiny-test"],
    "03_tools.py": [],
    "04_collect.py": [],
    "05_evaluate.py": [],
    "06_rag.py": [],
    "07_serve.py": [],
    "08_train.py": ["--model", "tiny-test", "--steps", "2"],
    "09_quickstart.py": ["--model", "tiny-test", "--budget", "fast"],
    "10_held_out.py": [],
    "11_own_environment.py": ["--model", "tiny-test", "--steps", "2"],
    "12_fast_rollouts.py": ["--model", "tiny-test", "--tasks", "3"],
    "13_rl.py": ["--model", "tiny-test", "--steps", "2"],
    "14_prompt_injection.py": ["--n", "18"],
    "15_operate.py": [],
    "16_model_families.py": ["--models", "tiny-test", "gemma3-270m"],
    "17_verbatim_arguments.py": ["--model", "tiny-test"],
}


def test_every_example_is_listed():
    assert [p.name for p in EXAMPLES] == sorted(FAST_ARGS)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(example):
    result = subprocess.run(
        [sys.executable, str(example), *FAST_ARGS[example.name]], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip()
