import json
import os
import signal
import subprocess
import sys
import time

import pytest

from agentft.collect import CollectConfig, collect
from agentft.manifest import read_manifest
from agentft.runner import RunConfig
from agentft.trajectory import ReadReport, read_trajectories

ENV = "agentft.toy_env:OrdersEnvironment"


def ids_in(path):
    return [t.id for t in read_trajectories(path)]


def test_collect_writes_records_and_manifest_and_resumes(tmp_path):
    config = CollectConfig(env=ENV, policy="oracle", out=str(tmp_path), n=10, k=2, run=RunConfig(batch_size=4))
    first = collect(config)
    assert (first.planned, first.skipped, first.ran) == (20, 0, 20)
    assert first.summary.success_rate == 1.0 and first.summary.compliance_rate == 1.0
    assert len(set(ids_in(tmp_path / "trajectories.jsonl"))) == 20
    again = collect(config)
    assert (again.skipped, again.ran) == (20, 0)
    more = collect(CollectConfig(env=ENV, policy="oracle", out=str(tmp_path), n=12, k=2))
    assert (more.planned, more.skipped, more.ran) == (24, 20, 4)
    manifest = read_manifest(tmp_path)
    assert manifest["kind"] == "collect" and manifest["metrics"]["episodes"] == 24
    assert manifest["outputs"][0]["path"] == "trajectories.jsonl"


def test_collect_rejects_more_tasks_than_the_split_has(tmp_path):
    from agentft.errors import UserError

    with pytest.raises(UserError, match="has 20 test tasks"):
        collect(CollectConfig(env=ENV, policy="oracle", out=str(tmp_path), split="test", n=21))


def test_sigkill_mid_run_then_rerun_gives_exactly_200_valid_records(tmp_path):
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "agentft.cli",
        "collect",
        "--env",
        ENV,
        "--env-arg",
        "n_train=200",
        "--env-arg",
        "tool_delay_s=0.01",
        "--policy",
        "oracle",
        "--n",
        "200",
        "--batch-size",
        "4",
        "--out",
        str(out),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    output = out / "trajectories.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if output.exists() and output.read_bytes().count(b"\n") >= 30:
            break
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_with = output.read_bytes().count(b"\n")
    assert 30 <= killed_with < 200, "the run must be killed mid-way for this test to mean anything"
    assert not (out / "manifest.json").exists()

    subprocess.run(command, check=True, capture_output=True, timeout=300)
    report = ReadReport()
    records = list(read_trajectories(output, report=report))
    assert len(records) == 200 and len({r.id for r in records}) == 200
    assert not report.torn_tail and report.bad_lines == []
    assert all(r.status == "completed" and r.score.success for r in records)
    manifest = read_manifest(out)
    assert manifest["metrics"]["episodes"] == 200 and manifest["metrics"]["records_in_file"] == 200
    assert manifest["config"]["n"] == 200
    listed = manifest["outputs"][0]
    from agentft.manifest import sha256_file

    assert listed["sha256"] == sha256_file(output)


def test_local_process_workers_and_ray_collect_the_same_episode_ids(tmp_path):
    base = {"env": ENV, "policy": "oracle", "n": 30, "k": 2}
    local = collect(CollectConfig(out=str(tmp_path / "local"), **base))
    procs = collect(CollectConfig(out=str(tmp_path / "procs"), workers=2, **base))
    ray = collect(CollectConfig(out=str(tmp_path / "ray"), backend="ray", workers=2, **base))
    expected = sorted(ids_in(local.out / "trajectories.jsonl"))
    assert len(expected) == 60
    for result in (procs, ray):
        got = ids_in(result.out / "trajectories.jsonl")
        assert sorted(got) == expected and len(got) == len(set(got))
        assert not (result.out / "shards").exists()
        timing = {"mean_latency_s", "mean_turn_latency_s", "mean_wall_s"}
        assert result.summary.model_dump(exclude=timing) == local.summary.model_dump(exclude=timing)
    assert json.loads((tmp_path / "ray" / "manifest.json").read_text())["config"]["backend"] == "ray"


def _collect_command(out, n, *extra):
    return [
        sys.executable,
        "-m",
        "agentft.cli",
        "collect",
        "--env",
        ENV,
        "--env-arg",
        f"n_train={n}",
        "--env-arg",
        "tool_delay_s=0.01",
        "--policy",
        "oracle",
        "--n",
        str(n),
        "--batch-size",
        "4",
        "--out",
        str(out),
        *extra,
    ]


def test_a_second_collect_into_the_same_directory_fails_at_once_and_the_first_keeps_every_record(tmp_path):
    from agentft.errors import UserError

    out = tmp_path / "run"
    first = subprocess.Popen(_collect_command(out, 60), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not ((out / "trajectories.jsonl").exists() and (out / ".lock").read_text().strip()):
        assert time.monotonic() < deadline and first.poll() is None, first.stderr.read().decode()
        time.sleep(0.01)
    with pytest.raises(UserError, match=rf"{out} is in use by another collect run \(pid {first.pid}\)"):
        collect(CollectConfig(env=ENV, policy="oracle", out=str(out), n=20, env_kwargs={"n_train": 60}))
    assert first.wait(timeout=300) == 0, first.stderr.read().decode()
    records = ids_in(out / "trajectories.jsonl")
    assert len(records) == len(set(records)) == 60
    # the lock went with its holder: the same directory is free again
    assert collect(CollectConfig(env=ENV, policy="oracle", out=str(out), n=60, env_kwargs={"n_train": 60})).ran == 0


def _state(pid):
    """A process's state letter (R, S, Z, ...), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _descendants(pid):
    """Every living process below ``pid``, read from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _state(entry)) and fields[0] != "Z":
            parents[int(entry)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_a_collect_with_workers_takes_its_workers_with_it(tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen(
        _collect_command(out, 400, "--workers", "2"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while sum(path.read_bytes().count(b"\n") for path in out.glob("shards/*.jsonl")) < 10:
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    below = _descendants(process.pid)
    assert len(below) >= 2  # the two workers (and multiprocessing's resource tracker)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 15
    while (alive := {p for p in below if (fields := _state(p)) and fields[0] != "Z"}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive, f"still running after the collect was killed: {sorted(alive)}"
