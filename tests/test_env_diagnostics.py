"""An environment's failures say what went wrong: the missing fact, the differing rows, the rule that raised;
`eval` refuses a run it could not score; the seed database follows the environment's code."""

from __future__ import annotations

import importlib
import itertools
import json
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from agentft.authoring import DatabaseEnvironment, Rule, Task, Toolkit, tool
from agentft.cli import app
from agentft.envs import load_environment
from agentft.policies import ScriptedPolicy
from agentft.runner import plan_episodes, run_episodes

CLAIMS = type(load_environment("claims", sandbox=False))


class BrokenRuleClaims(CLAIMS):
    """The claims desk with one more rule, which raises (an environment bug: a column that does not exist)."""

    rules = (
        *CLAIMS.rules,
        Rule(
            "audit_log",
            "Every write is logged.",
            lambda audit: audit.initial.execute("SELECT no_such_column FROM claims").fetchall(),
        ),
    )


def solution_texts(task) -> list[str]:
    texts = []
    for turn in task.solution:
        calls = [f"<tool_call>{json.dumps({'name': c.name, 'arguments': c.arguments})}</tool_call>" for c in turn.calls]
        texts.append("\n".join([turn.say, *calls] if turn.say is not None else calls))
    return texts


def test_a_score_names_the_missing_fact_and_the_rows_that_differ():
    env = load_environment("claims", sandbox=False)
    task = next(t for t in env.tasks("validation") if t.kind == "update_contact")
    script = solution_texts(task)
    write = next(i for i, turn in enumerate(task.solution) if any(c.name == "update_contact" for c in turn.calls))
    call = task.solution[write].calls[0]
    changed = {key: f"x{value}" if key in ("phone", "email") else value for key, value in call.arguments.items()}
    script[write] = f"<tool_call>{json.dumps({'name': call.name, 'arguments': changed})}</tool_call>"
    script[-1] = "All done."  # the final reply leaves out what the user must be told
    [record] = run_episodes(env, ScriptedPolicy(script), plan_episodes([task]))
    details = record.score.details
    assert not record.score.success and details["missing_facts"] == task.must_say
    assert set(details["state_diff"]) == {"customers"}
    unexpected, missing = (
        details["state_diff"]["customers"]["unexpected"],
        details["state_diff"]["customers"]["missing"],
    )
    assert len(unexpected) == len(missing) == 1 and unexpected[0][0] == missing[0][0]  # the same customer, changed


def test_a_rule_that_raises_is_named_and_eval_exits_1_unless_allowed(tmp_path):
    args = [
        "eval",
        "--env",
        f"{__name__}:BrokenRuleClaims",
        "--policy",
        "oracle",
        "--split",
        "test",
        "--n",
        "2",
        "--env-arg",
        "sandbox=false",
    ]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert result.exit_code == 1
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["infra_errors"] == 2 and summary["success_rate"] is None
    records = [json.loads(line) for line in (tmp_path / "a" / "trajectories.jsonl").read_text().splitlines()]
    assert all("rule 'audit_log' raised OperationalError" in r["metadata"]["error"] for r in records)
    assert CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b"), "--allow-unscored"]).exit_code == 0


def test_editing_the_seed_data_rebuilds_the_seed_database(tmp_path, monkeypatch):
    from agentft.sqlite_env import code_fingerprint

    package = tmp_path / "tiny_env"
    package.mkdir()
    (package / "data.py").write_text("ROWS = [(1, 'a')]\n")
    (package / "__init__.py").write_text(
        textwrap.dedent("""
        from agentft.envs import Task
        from agentft.sqlite_env import DatabaseEnvironment
        from agentft.tools import Toolkit

        from tiny_env import data


        class Tiny(DatabaseEnvironment):
            name = "tiny"
            tables = ("items",)

            def build_database(self, conn, rng):
                conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
                conn.executemany("INSERT INTO items VALUES (?, ?)", data.ROWS)

            def make_toolkit(self, conn):
                return Toolkit()

            def generate_tasks(self, conn, rng):
                return {"train": [], "validation": [], "test": []}
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from tiny_env import Tiny

    first = Tiny(sandbox=False).seed_path()
    assert Tiny(sandbox=False).seed_path() == first  # cached
    (package / "data.py").write_text("ROWS = [(1, 'new')]\n")  # the seed data changes, the version does not
    code_fingerprint.cache_clear()  # computed once per process: what the next process would see
    importlib.reload(sys.modules["tiny_env.data"])
    second = Tiny(sandbox=False).seed_path()
    assert second != first
    import sqlite3

    assert sqlite3.connect(second).execute("SELECT name FROM items").fetchall() == [("new",)]


@pytest.fixture(autouse=True)
def _fresh_fingerprints():
    from agentft.sqlite_env import code_fingerprint

    yield
    code_fingerprint.cache_clear()


CLOCK = itertools.count()


class Approvals(DatabaseEnvironment):
    """A minimal environment: one request to decide, with a reason in free text."""

    name = "approvals-test"
    tables = ("requests",)
    system_prompt = "Decide requests."

    def build_database(self, conn, rng):
        conn.execute("CREATE TABLE requests (id TEXT PRIMARY KEY, status TEXT, reason TEXT, decided_at TEXT)")
        conn.execute("INSERT INTO requests VALUES ('R1', 'pending', NULL, NULL)")

    def make_toolkit(self, conn):
        class Desk(Toolkit):
            @tool(effect="write")
            def decide(self, request_id: str, status: str, reason: str) -> str:
                """Decide a request.

                Args:
                    request_id: The request.
                    status: approved or denied.
                    reason: Why, in a sentence.
                """
                stamp = f"t{next(CLOCK)}"  # differs between the episode and the gold replay
                conn.execute(
                    "UPDATE requests SET status = ?, reason = ?, decided_at = ? WHERE id = ?",
                    (status, reason, stamp, request_id),
                )
                return "done"

        return Desk()

    def generate_tasks(self, conn, rng):
        task = Task(
            id="t1",
            split="test",
            facts={"opening": "Please approve R1."},
            solution=[
                {
                    "calls": [
                        {"name": "decide", "arguments": {"request_id": "R1", "status": "approved", "reason": "ok"}}
                    ]
                },
                {"say": "R1 is approved."},
            ],
            must_say=["approved"],
        )
        return {"train": [], "validation": [], "test": [task]}


def test_scoring_settings_ignore_columns_and_compare_free_text_by_presence():
    in_own_words = [
        '<tool_call>{"name": "decide", "arguments": {"request_id": "R1", "status": "approved", '
        '"reason": "the budget allows it"}}</tool_call>',
        "R1 is approved.",
    ]
    strict = Approvals(sandbox=False)
    [record] = run_episodes(strict, ScriptedPolicy(in_own_words), plan_episodes(strict.tasks("test")))
    assert not record.score.success and set(record.score.details["state_diff"]) == {"requests"}

    class OnlyFreeText(Approvals):
        free_text_columns = {"requests": ("reason",)}

    [record] = run_episodes(
        OnlyFreeText(sandbox=False), ScriptedPolicy(in_own_words), plan_episodes(strict.tasks("test"))
    )
    assert not record.score.success  # the decision's timestamp still differs

    class Lenient(Approvals):
        ignored_columns = {"requests": ("decided_at",)}
        free_text_columns = {"requests": ("reason",)}

    lenient = Lenient(sandbox=False)
    [record] = run_episodes(lenient, ScriptedPolicy(in_own_words), plan_episodes(lenient.tasks("test")))
    assert record.score.success, record.score.details
    empty = [in_own_words[0].replace("the budget allows it", " "), in_own_words[1]]
    [record] = run_episodes(lenient, ScriptedPolicy(empty), plan_episodes(lenient.tasks("test")))
    assert not record.score.success  # a free-text column must still hold some text


def test_the_built_in_environments_use_only_the_authoring_api():
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    allowed = ("agentft.authoring", "agentft.builtin_envs", "agentft.builtin_tools")
    for path in [*root.joinpath("eval_envs").rglob("*.py"), *root.joinpath("tools").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("agentft"):
                names = [node.module] if node.module != "agentft" else [f"agentft.{a.name}" for a in node.names]
                for name in names:
                    assert name.startswith(allowed), f"{path.relative_to(root)} imports {name}"
