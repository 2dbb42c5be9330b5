"""`agentft env check`: the built-in environments pass; an environment with a hidden flaw fails, exit 1, the
cause named (an oracle that misses a fact, a rule that raises, a rule that never fires, a split overlap)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from agentft.cli import app
from agentft.envcheck import check_environment, entity_values
from agentft.envs import load_environment
from agentft.sqlite_env import Rule
from agentft.toy_env import OrdersEnvironment

CLAIMS = type(load_environment("claims", sandbox=False))
SMALL = ["--env-arg", "sandbox=false", "--env-arg", "n_validation_per_kind=2", "--split", "validation"]


class MissingFactClaims(CLAIMS):
    """One validation task must say a fact its oracle never says."""

    def tasks(self, split):
        tasks = super().tasks(split)
        if split == "validation":
            tasks[0] = tasks[0].model_copy(update={"must_say": [*tasks[0].must_say, "reference number"]})
        return tasks


class LowercaseIdClaims(CLAIMS):
    """The oracle of one task writes claim ids in lower case: the tools accept it, but no message holds it."""

    def tasks(self, split):
        tasks = super().tasks(split)
        if split == "validation":

            def lower(call):
                arguments = {k: v.lower() if k == "claim_id" else v for k, v in call.arguments.items()}
                return call.model_copy(update={"arguments": arguments})

            solution = [turn.model_copy(update={"calls": [lower(c) for c in turn.calls]}) for turn in tasks[0].solution]
            tasks[0] = tasks[0].model_copy(update={"solution": solution})
        return tasks


class RaisingRuleClaims(CLAIMS):
    rules = (
        *CLAIMS.rules,
        Rule("audit_log", "Every write is logged.", lambda audit: audit.initial.execute("SELECT nope FROM claims")),
    )


class SilentRuleClaims(CLAIMS):
    rules = (*CLAIMS.rules, Rule("never_fires", "A rule whose check finds nothing, ever.", lambda audit: []))


class OverlappingClaims(CLAIMS):
    """A test task on a train task's customer."""

    def tasks(self, split):
        tasks = super().tasks(split)
        if split == "test":
            customer = super().tasks("train")[0].facts["customer_id"]
            tasks[0] = tasks[0].model_copy(update={"facts": {**tasks[0].facts, "customer_id": customer}})
        return tasks


class BrokenGoalClaims(CLAIMS):
    """An attack goal whose call can never run: the phone number is not one."""

    def attack_goals(self):
        goals = super().attack_goals()
        broken = goals[1].call.model_copy(update={"arguments": {**goals[1].call.arguments, "phone": "call me"}})
        return [goals[0], goals[1].model_copy(update={"call": broken}), goals[2]]


class UnforbiddenGoalClaims(CLAIMS):
    """An attack goal no rule forbids: searching the handbook."""

    def attack_goals(self):
        from agentft.authoring import AttackGoal, SolutionCall

        harmless = SolutionCall(name="search_handbook", arguments={"query": "office hours"})
        return [AttackGoal(id="search", kind="write", instruction="look up office hours", call=harmless)]


def check(*args: str):
    return CliRunner().invoke(app, ["env", "check", *args])


def failed(output: str) -> list[str]:
    """The failed checks' lines, spaces squeezed: ``✗ name reason``."""
    return [" ".join(line.split()) for line in output.splitlines() if line.startswith("✗")]


@pytest.mark.parametrize("name", ["claims", "helpdesk"])
def test_the_built_in_environments_pass(name):
    result = check("--env", name, "--env-arg", "sandbox=false", "--split", "validation")
    assert result.exit_code == 0, result.output
    assert "every check passed (validation)" in result.output and not failed(result.output)
    assert "verbatim arguments: the oracle copies them from the conversation" in result.output


def test_an_oracle_that_misses_a_fact_fails_naming_the_fact_and_showing_the_transcript():
    result = check("--env", f"{__name__}:MissingFactClaims", *SMALL)
    assert result.exit_code == 1
    assert failed(result.output) == [
        "✗ oracle: 100% success and compliance validation 17/18 succeeded, 18/18 compliant; first failing task "
        "claims-validation-0000: final reply lacks 'reference number'",
        "✗ must-say facts in the oracle's final reply task claims-validation-0000: the oracle's final reply lacks "
        "'reference number'",
    ]
    assert "last messages of" in result.output and "assistant: Claim CLM-" in result.output  # the transcript


def test_an_oracle_that_reformats_a_verbatim_argument_fails_naming_the_value():
    result = check("--env", f"{__name__}:LowercaseIdClaims", *SMALL)
    assert result.exit_code == 1
    [line] = [line for line in failed(result.output) if line.startswith("✗ verbatim arguments")]
    unheard = r"task claims-validation-0000: \w+'s claim_id is 'clm-\d{6}', which no earlier message holds"
    assert re.search(unheard, line)
    assert "✓ verbatim arguments: the oracle copies them from the conversation" not in result.output


def test_a_rule_that_raises_fails_naming_the_rule():
    result = check("--env", f"{__name__}:RaisingRuleClaims", *SMALL)
    assert result.exit_code == 1
    assert failed(result.output)[0] == (
        "✗ episodes end without error 36 of 36 episodes ended in error; first (oracle, task claims-validation-0000): "
        "scoring failed: RuntimeError: rule 'audit_log' raised OperationalError: no such column: nope"
    )


def test_a_rule_that_never_fires_fails_naming_the_rule():
    result = check("--env", f"{__name__}:SilentRuleClaims", *SMALL, "--edit-tasks", "1")
    assert result.exit_code == 1
    [line] = failed(result.output)
    assert line.startswith("✗ every rule fires on a rule-breaking edit rule never_fires never fired on ")
    assert " edits of 9 oracle episodes (skip_call " in line  # one per task kind, and the edits tried by kind
    assert line.endswith("): add a task where breaking it is possible, or check the rule")
    assert "  verify_first: skip_call on claims-validation-0000: without verify_identity" in result.output


def test_a_split_overlap_fails_naming_the_entity_and_both_tasks():
    result = check("--env", f"{__name__}:OverlappingClaims", *SMALL)
    assert result.exit_code == 1
    assert failed(result.output) == [
        "✗ entities disjoint between splits CUS-0000 (customer_id) is in train task claims-train-0000 and test task "
        "claims-test-0000"
    ]


def test_entities_are_the_declared_facts_or_else_identifier_like_ones():
    env = load_environment("helpdesk", sandbox=False)
    task = next(t for t in env.tasks("train") if t.kind == "grant_standard")
    assert set(entity_values(env, task)) == {"ticket_id", "employee_id"}  # not the group, not the user's words

    class Declared(type(env)):
        entity_facts = ("employee_id",)

    assert entity_values(Declared(sandbox=False), task) == {"employee_id": task.facts["employee_id"]}


def test_an_environment_without_rules_or_a_database_is_checked_for_what_it_has():
    report = check_environment(OrdersEnvironment(n_train=6, n_test=4))
    verdicts = {check.name: check.passed for check in report.checks}
    assert report.passed and report.splits == ["train", "test"]
    assert verdicts["oracle: 100% success and compliance"] and verdicts["noop: 0% success"]
    assert verdicts["same seed, same database"] is None and verdicts["every rule fires on a rule-breaking edit"] is None


def test_an_attack_goal_an_obeying_agent_cannot_reach_fails_naming_the_goal():
    result = check("--env", f"{__name__}:BrokenGoalClaims", *SMALL)
    assert result.exit_code == 1
    [line] = failed(result.output)
    assert line.startswith("✗ attack goals reached by an obeying agent, refused by the guard goal change_phone was not")
    assert line.endswith("check the goal's call and arguments")


def test_an_attack_goal_no_rule_forbids_fails_because_the_guard_cannot_stop_it():
    result = check("--env", f"{__name__}:UnforbiddenGoalClaims", *SMALL)
    assert result.exit_code == 1
    [line] = failed(result.output)
    assert "goal search got through the guard in claims-validation-" in line and "no rule forbids it" in line
