"""What ships where: only `agentft` is installed at the top level, a user's own `tools` package is left alone,
and the committed sample trajectories still read and build datasets."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from agentft.datasets import build_sft_dataset
from agentft.preferences import build_dpo_dataset
from agentft.trajectory import read_trajectories

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "trajectories" / "samples"
# Repository folder -> where it lands in the wheel (pyproject.toml's package-dir).
FOLDERS = {"agentft": "agentft", "tools": "agentft/builtin_tools", "eval_envs": "agentft/builtin_envs"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip wheel .` builds, from a clean copy of the sources (a stale build/ would leak into it)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for folder in FOLDERS:
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(root), "."],
        cwd=src,
        check=True,
        capture_output=True,
    )
    (path,) = root.glob("agentft-*.whl")
    return path


def test_the_wheel_installs_only_agentft_and_all_of_the_builtin_folders(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert top == {"agentft"}
    expected = set()
    for folder, target in FOLDERS.items():
        for path in (REPO / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                if path.suffix == ".py" or folder == "eval_envs" or path.parent.name in ("recipes", "templates"):
                    expected.add(f"{target}/{path.relative_to(REPO / folder).as_posix()}")
    assert expected - set(names) == set()  # a new subpackage must be added to pyproject.toml's packages


USER_CODE = r"""
import sys, tempfile
from pathlib import Path

import tools, eval_envs
assert tools.MINE and eval_envs.MINE

import agentft
from agentft.envs import load_environment

assert Path(agentft.__file__).is_relative_to(sys.argv[1]), agentft.__file__
assert load_environment("claims", sandbox=False).tasks("test")
assert load_environment("helpdesk", sandbox=False).tasks("test")

env = load_environment("claims")  # sandboxed: the worker imports the environment and reads its handbook
task = env.tasks("test")[0]
episode = env.start(task)
try:
    assert episode.user_turn([]) == task.facts["opening"]
    call = task.solution[0].calls[0]
    assert episode.call_tool(call.name, call.arguments).ok
    assert "handbook#" in episode.call_tool("search_handbook", {"query": "glass repair"}).content
finally:
    episode.close()

from agentft.builtin_tools.claims import HANDBOOK
assert HANDBOOK.is_file(), HANDBOOK
assert sys.modules["tools"] is tools and sys.modules["eval_envs"] is eval_envs
print("ok")
"""


@pytest.mark.parametrize("install", ["editable", "wheel"])
def test_a_user_tools_package_does_not_shadow_or_break_agentft(install, tmp_path, request):
    user = tmp_path / "project"
    for name in ("tools", "eval_envs"):
        (user / name).mkdir(parents=True)
        (user / name / "__init__.py").write_text("MINE = True\n")
    path, root = [str(user)], REPO
    if install == "wheel":  # an unpacked wheel on the path stands in for a fresh venv's site-packages
        root = tmp_path / "site"
        zipfile.ZipFile(request.getfixturevalue("wheel")).extractall(root)
        path.append(str(root))
    # cwd is the user's project, so the repository's own tools/ and eval_envs/ are not on the path.
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    done = subprocess.run(
        [sys.executable, "-c", USER_CODE, str(root)], cwd=user, env=environ, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr

    cli = Path(sys.executable).with_name("agentft")
    out = tmp_path / "out"
    args = ["collect", "--env", "claims", "--policy", "oracle", "--split", "test", "--n", "2", "--out", str(out)]
    done = subprocess.run([str(cli), *args], cwd=user, env=environ, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [t.score.success for t in read_trajectories(out / "trajectories.jsonl")] == [True, True]


def test_the_committed_samples_read_back_and_build_datasets():
    oracle, noop = SAMPLES / "claims-oracle", SAMPLES / "claims-noop"
    for run in (oracle, noop):
        manifest = json.loads((run / "manifest.json").read_text())
        (output,) = manifest["outputs"]
        assert hashlib.sha256((run / output["path"]).read_bytes()).hexdigest() == output["sha256"]
    good = list(read_trajectories(oracle / "trajectories.jsonl"))
    bad = list(read_trajectories(noop / "trajectories.jsonl"))
    assert len(good) == len(bad) == 6 and [t.task_id for t in good] == [t.task_id for t in bad]
    assert all(t.score.success and t.score.compliant for t in good)
    assert not any(t.score.success for t in bad)

    sft = build_sft_dataset([oracle])
    assert len(sft.train) + len(sft.validation) == 6
    assert build_dpo_dataset([oracle, noop]).stats["pairs"] > 0
