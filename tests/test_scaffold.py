"""`agentft env new` scaffolds a package that works untouched: `env check` passes, the oracle scores 100% success
and compliance, `noop` 0%, its own tests pass, and it is lint-clean; nothing is ever overwritten."""

import json
import os
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentft.cli import app
from agentft.errors import UserError
from agentft.scaffold import TEMPLATES, class_name, scaffold_environment

REPO = Path(__file__).resolve().parent.parent
NAME = "loans_desk"


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory):
    root = tmp_path_factory.mktemp("scaffold")
    result = CliRunner().invoke(app, ["env", "new", NAME, "--dir", str(root)])
    assert result.exit_code == 0, result.output
    assert f"agentft env check --env {NAME}:load_environment" in result.output
    return root


def run(root: Path, *args: str) -> subprocess.CompletedProcess:
    """A fresh process with the scaffold's folder on the path, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_package_has_every_part(scaffolded):
    package = scaffolded / NAME
    names = {p.relative_to(package).as_posix() for p in package.rglob("*") if "__pycache__" not in p.parts}
    expected = {"__init__.py", "tools.py", "data.py", "rules.py", "tasks.py", "policy.md", "guide.md"}
    assert expected | {"phrasings.json", "tests/__init__.py", "tests/test_environment.py"} <= names
    assert not any(".tmpl" in name or "{{" in (package / name).read_text() for name in names if "." in name)
    init = (package / "__init__.py").read_text()
    assert f"class {class_name(NAME)}Environment(DatabaseEnvironment):" in init and f'name = "{NAME}"' in init


def test_env_check_passes_untouched(scaffolded):
    result = run(scaffolded, sys.executable, "-m", "agentft.cli", "env", "check", "--env", f"{NAME}:load_environment")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "every check passed (train, validation, test)" in result.stdout
    assert "✓ verbatim arguments" in result.stdout  # its tools declare them, and the oracle copies them
    assert "3 rules, each broken by an edit" in result.stdout


@pytest.mark.parametrize(("policy", "rate"), [("oracle", 1.0), ("noop", 0.0)])
def test_eval_oracle_is_perfect_and_noop_scores_zero(scaffolded, policy, rate):
    out = scaffolded / f"eval-{policy}"
    command = ["eval", "--env", f"{NAME}:load_environment", "--policy", policy, "--out", str(out)]
    result = run(scaffolded, sys.executable, "-m", "agentft.cli", *command)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 12 and summary["success_rate"] == rate and summary["compliance_rate"] == 1.0


def test_its_own_tests_pass_and_it_is_lint_clean(scaffolded):
    tests = run(scaffolded, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", NAME)
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert "3 passed" in tests.stdout
    config = str(REPO / "pyproject.toml")
    for command in (["check"], ["format", "--check"]):
        lint = run(scaffolded, sys.executable, "-m", "ruff", *command, "--config", config, NAME)
        assert lint.returncode == 0, lint.stdout + lint.stderr


def test_nothing_is_overwritten_and_bad_names_are_refused(tmp_path):
    scaffold_environment("first_desk", tmp_path)
    marker = tmp_path / "first_desk" / "tools.py"
    marker.write_text("# mine")
    with pytest.raises(UserError, match="already exists"):
        scaffold_environment("first_desk", tmp_path)
    assert marker.read_text() == "# mine"
    for bad, why in [("1desk", "not a Python package name"), ("my-desk", "not a Python"), ("class", "not a Python")]:
        with pytest.raises(UserError, match=why):
            scaffold_environment(bad, tmp_path)
    with pytest.raises(UserError, match="already an importable module"):
        scaffold_environment("json", tmp_path)  # would hide, or be hidden by, the standard library's
    result = CliRunner().invoke(app, ["env", "new", "first_desk", "--dir", str(tmp_path)])
    assert result.exit_code != 0 and isinstance(result.exception, UserError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first_desk"]


def test_the_templates_are_package_data():
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    templates = REPO / "agentft" / TEMPLATES
    files = [p for p in templates.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert files
    for path in files:
        package = ".".join(path.parent.relative_to(REPO).parts)
        assert package in setuptools["packages"], package
        assert any(fnmatch(path.name, pattern) for pattern in setuptools["package-data"][package]), path
