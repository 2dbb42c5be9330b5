import json

import pytest

from agentft.errors import UserError
from agentft.manifest import read_manifest, sha256_file, write_manifest
from agentft.messages import AssistantMessage, ToolCall, ToolMessage, UserMessage
from agentft.trajectory import (
    SCHEMA_VERSION,
    Event,
    ReadReport,
    Score,
    Trajectory,
    TrajectoryWriter,
    Violation,
    episode_id,
    load_trajectories,
    read_trajectories,
)


def make(i: int = 0) -> Trajectory:
    return Trajectory(
        id=episode_id("env", f"t{i}", 0, "oracle", 0),
        env="env",
        task_id=f"t{i}",
        split="train",
        policy="oracle",
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}, "effect": "read"}],
        messages=[
            UserMessage(content="hi é"),
            AssistantMessage(tool_calls=[ToolCall.create("call_0_0", "f", {"n": {"deep": [1, None]}})]),
            ToolMessage(content="ok", tool_call_id="call_0_0", name="f"),
            AssistantMessage(content="done"),
        ],
        events=[Event(step=0, name="f", call_id="call_0_0", arguments={"n": 1}, effect="read", latency_ms=1.5)],
        score=Score(
            success=True, state_match=True, outputs_ok=True, violations=[Violation(rule="r", step=0)], compliant=False
        ),
    )


def test_round_trip_is_lossless():
    record = make()
    line = record.to_json()
    assert "\n" not in line
    again = Trajectory.from_json(line)
    assert again == record
    assert json.loads(line)["schema_version"] == SCHEMA_VERSION
    assert again.messages[1].tool_calls[0].function.arguments == {"n": {"deep": [1, None]}}


def test_episode_ids_are_deterministic_and_distinct():
    assert episode_id("claims", "t1", 0, "oracle", 0) == episode_id("claims", "t1", 0, "oracle", 0)
    assert len({episode_id("claims", "t1", s, p, a) for s in (0, 1) for p in ("oracle", "noop") for a in (0, 1)}) == 8


def test_newer_schema_version_is_refused():
    data = json.loads(make().to_json())
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(UserError, match="upgrade agentft"):
        Trajectory.from_json(json.dumps(data))


def test_torn_last_line_is_reported_and_trimmed_before_appending(tmp_path):
    path = tmp_path / "t.jsonl"
    with TrajectoryWriter(path) as writer:
        writer.write_batch([make(0), make(1)])
    with path.open("ab") as handle:  # a writer killed halfway through a record
        handle.write(make(2).to_json().encode()[:57])
    report = ReadReport()
    assert [t.task_id for t in read_trajectories(path, report=report)] == ["t0", "t1"]
    assert report.torn_tail and report.records == 2
    with TrajectoryWriter(path) as writer:
        assert writer.trimmed_bytes == 57
        writer.write_batch([make(2)])
    report = ReadReport()
    assert [t.task_id for t in read_trajectories(path, report=report)] == ["t0", "t1", "t2"]
    assert not report.torn_tail


@pytest.mark.parametrize(
    "tail", [b"\x00" * 70000, b"\n\x00\x00\n\x00", b'{"id": "t2"' + b"\x00" * 512], ids=["block", "lines", "after_torn"]
)
def test_a_zero_filled_end_is_torn_and_trimmed_before_appending(tmp_path, tail):
    path = tmp_path / "t.jsonl"
    with TrajectoryWriter(path) as writer:
        writer.write_batch([make(0), make(1)])
    with path.open("ab") as handle:  # a crash left the end of the file zero-filled
        handle.write(tail)
    report = ReadReport()
    assert [t.task_id for t in read_trajectories(path, report=report)] == ["t0", "t1"]
    assert report.torn_tail and report.bad_lines == []
    with TrajectoryWriter(path) as writer:
        assert writer.trimmed_bytes == len(tail)
        writer.write_batch([make(2)])
    report = ReadReport()
    assert [t.task_id for t in read_trajectories(path, report=report)] == ["t0", "t1", "t2"]
    assert not report.torn_tail


def test_corrupt_middle_line_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(make(0).to_json() + "\n{not json}\n" + make(1).to_json() + "\n")
    with pytest.raises(UserError, match=r"t.jsonl:2: not a valid trajectory record"):
        list(read_trajectories(path))
    report = ReadReport()
    assert len(list(read_trajectories(path, report=report, strict=False))) == 2
    assert report.bad_lines == [2]


def test_load_trajectories_from_directories(tmp_path):
    for name, i in (("a.jsonl", 0), ("b.jsonl", 1)):
        with TrajectoryWriter(tmp_path / name) as writer:
            writer.write_batch([make(i)])
    assert [t.task_id for t in load_trajectories(tmp_path)] == ["t0", "t1"]
    with pytest.raises(UserError, match="no .jsonl"):
        load_trajectories(tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else tmp_path)
    with pytest.raises(UserError, match="no such trajectory file"):
        load_trajectories(tmp_path / "missing.jsonl")


def test_manifest_is_written_atomically_with_hashes(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text("x\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.txt").write_text("r")
    write_manifest(out, kind="test", config={"a": 1}, inputs=[data], outputs=[out / "result.txt"], metrics={"m": 2})
    manifest = read_manifest(out)
    assert manifest["kind"] == "test" and manifest["config"] == {"a": 1} and manifest["metrics"] == {"m": 2}
    assert manifest["inputs"][0]["sha256"] == sha256_file(data)
    assert manifest["outputs"] == [{"path": "result.txt", "sha256": sha256_file(out / "result.txt")}]
    assert "pydantic" not in manifest["versions"] and "agentft" in manifest["versions"]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temp files left
