import json
import os

import pytest

from agentft.jsonl import JsonlWriter, atomic_open, write_jsonl_atomic, write_jsonl_files_atomic
from agentft.trajectory import Trajectory, TrajectoryWriter


def test_a_write_that_fails_halfway_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "rows.jsonl"
    assert write_jsonl_atomic(path, [{"n": 1}, {"n": 2}]) == 2
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_jsonl_atomic(path, [{"n": 3}, {"n": object()}])  # the second row cannot be encoded
    assert path.read_bytes() == before
    with pytest.raises(TypeError):
        write_jsonl_atomic(tmp_path / "new.jsonl", [{"n": object()}])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]


def test_files_that_belong_together_are_replaced_together(tmp_path):
    train, validation = tmp_path / "train.jsonl", tmp_path / "validation.jsonl"
    write_jsonl_files_atomic({train: [{"split": "train"}], validation: [{"split": "validation"}]})
    with pytest.raises(TypeError):
        write_jsonl_files_atomic({train: [{"new": 1}], validation: [{"new": object()}]})
    assert [json.loads(p.read_text()) for p in (train, validation)] == [{"split": "train"}, {"split": "validation"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl", "validation.jsonl"]


def test_files_get_the_umask_permissions_of_an_ordinary_write(tmp_path):
    write_jsonl_atomic(tmp_path / "a.jsonl", [{}])
    (tmp_path / "b.jsonl").write_text("{}\n")
    assert os.stat(tmp_path / "a.jsonl").st_mode == os.stat(tmp_path / "b.jsonl").st_mode
    with atomic_open(tmp_path / "c.txt", "w", encoding="utf-8") as handle:
        handle.write("é")
    assert (tmp_path / "c.txt").read_text(encoding="utf-8") == "é"


def test_the_appending_writer_and_the_atomic_one_write_the_same_lines(tmp_path):
    rows = [{"text": "é\nx", "n": 1}, {"text": "", "n": None}]
    with JsonlWriter(tmp_path / "stream.jsonl") as writer:
        assert writer.write_batch(rows[:1]) + writer.write_batch(rows[1:]) == 2
    write_jsonl_atomic(tmp_path / "whole.jsonl", rows)
    assert (tmp_path / "stream.jsonl").read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert (tmp_path / "whole.jsonl").read_text(encoding="utf-8").splitlines()[0].startswith('{"text": "é\\nx"')
    trajectory = Trajectory(id="x", env="e", task_id="t", policy="p")
    with TrajectoryWriter(tmp_path / "t.jsonl") as writer:
        writer.write_batch([trajectory])
    write_jsonl_atomic(tmp_path / "t2.jsonl", [trajectory], encode=Trajectory.to_json)
    assert (tmp_path / "t.jsonl").read_bytes() == (tmp_path / "t2.jsonl").read_bytes()
