"""The promotion gate (issue 19, item 3): a paired evaluation on the same tasks promotes a candidate that is not
worse and refuses one that is worse or less compliant; each decision lands in the registry with its evidence."""

from __future__ import annotations

import json

from test_kernel import another_customers_claim
from typer.testing import CliRunner

from agentft.cli import app
from agentft.errors import UserError
from agentft.messages import ToolCall
from agentft.registry import Registry

SMALL = ["--env", "claims", "--env-arg", "sandbox=false", "--split", "validation", "--n", "9"]


class Nosy:
    """The oracle, plus a look at another customer's claim in its first turn: as successful, less compliant."""

    name = "nosy"

    def __init__(self, env) -> None:
        self.oracle = env.oracle()

    def act(self, conversations, tools=None):  # pragma: no cover - the runner tells it the tasks
        raise AssertionError

    def act_on_tasks(self, conversations, tools, tasks):
        replies = self.oracle.act_on_tasks(conversations, tools, tasks)
        for conversation, task, reply in zip(conversations, tasks, replies, strict=True):
            if len(conversation) == 2 and "customer_id" in task.facts:  # system + opening: the first turn
                other = another_customers_claim(task.facts["customer_id"])
                reply.message.tool_calls.append(ToolCall.create("nosy", "get_claim", {"claim_id": other}))
        return replies


def nosy(env):
    return Nosy(env)


def gate(tmp_path, candidate: str, baseline: str, name: str):
    out = tmp_path / name
    return CliRunner().invoke(
        app,
        ["gate", "--candidate", candidate, "--baseline", baseline, "--name", name, "--out", str(out)]
        + ["--registry", str(tmp_path / "registry"), *SMALL],
    )


def test_the_gate_promotes_a_better_candidate_and_refuses_a_worse_or_less_compliant_one(tmp_path):
    better = gate(tmp_path, "oracle", "noop", "v2")
    assert better.exit_code == 0, better.output
    assert "PROMOTED v2" in better.output
    decision = json.loads((tmp_path / "v2" / "gate.json").read_text())
    assert decision["promote"] and decision["tasks"] == 9 and decision["success"]["b_rate"] == 1.0
    assert decision["success"]["a_rate"] == 0.0 and decision["success"]["significant"]

    worse = gate(tmp_path, "noop", "oracle", "v3")
    assert worse.exit_code == 1
    assert "REFUSED v3" in worse.output and "success is worse" in worse.output

    sloppy = gate(tmp_path, "test_gate:nosy", "oracle", "v4")
    assert sloppy.exit_code == 1, sloppy.output
    refused = json.loads((tmp_path / "v4" / "gate.json").read_text())
    assert refused["success"]["b_rate"] == 1.0  # as successful ...
    assert refused["reasons"] == [refused["reasons"][0]] and refused["reasons"][0].startswith("compliance is lower")

    registry = Registry(tmp_path / "registry").read()
    assert registry["current"] == "v2"
    assert {name: v["status"] for name, v in registry["versions"].items()} == {
        "v2": "promoted",
        "v3": "rejected",
        "v4": "rejected",
    }
    assert registry["versions"]["v4"]["gates"][0]["compliance"]["b_rate"] < 1.0

    again = gate(tmp_path, "oracle", "test_gate:nosy", "v5")  # a later promotion retires the current one
    assert again.exit_code == 0, again.output
    registry = Registry(tmp_path / "registry").read()
    assert registry["current"] == "v5" and registry["versions"]["v2"]["status"] == "retired"


def test_a_bad_candidate_spec_is_a_clear_error(tmp_path):
    result = gate(tmp_path, "no/such/adapter", "base", "bad")
    assert isinstance(result.exception, UserError) and "not an adapter directory" in str(result.exception)
