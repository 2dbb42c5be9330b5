"""The helpdesk environment measures what it claims to: the oracle is perfect, doing nothing scores zero,
and every rule catches exactly the misbehaviour it names."""

import json
from collections import Counter

import pytest

from agentft.builtin_envs.helpdesk.tasks import ASK_PIN, KINDS
from agentft.envs import load_environment, resolve_policy
from agentft.messages import AssistantMessage, SystemMessage, ToolCall, UserMessage
from agentft.policies import ScriptedPolicy
from agentft.runner import RunConfig, plan_episodes, run_episodes


@pytest.fixture(scope="module")
def env():
    return load_environment("helpdesk", sandbox=False)


def test_splits_are_large_balanced_and_disjoint(env):
    train, validation, test = env.tasks("train"), env.tasks("validation"), env.tasks("test")
    assert len(train) >= 200 and len(validation) >= 60 and len(test) >= 60
    for tasks in (train, validation, test):
        counts = Counter(t.kind for t in tasks)
        assert set(counts) == set(KINDS) and max(counts.values()) - min(counts.values()) <= 1
        approvals = Counter(t.facts["approval"] for t in tasks if t.kind == "refuse_privileged")
        assert set(approvals) == {"missing", "self_approved"}
        in_opening = Counter(bool(t.solution[0].calls) for t in tasks)
        assert min(in_opening.values()) >= len(tasks) // 3
    employees = lambda tasks: {t.facts["employee_id"] for t in tasks}  # noqa: E731
    blocks = [employees(tasks) for tasks in (train, validation, test)]
    assert sum(map(len, blocks)) == len(set().union(*blocks))
    openings = [t.facts["opening"] for t in train + validation + test]
    assert len(set(openings)) == len(openings)  # the oracle finds its task by the opening
    assert [t.model_dump() for t in train] == [t.model_dump() for t in load_environment("helpdesk").tasks("train")]


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_oracle_scores_100_percent_success_and_compliance(env, split):
    trajectories = run_episodes(env, env.oracle(), plan_episodes(env.tasks(split)), RunConfig(batch_size=128))
    failures = [(t.task_id, t.score.model_dump()) for t in trajectories if not (t.score.success and t.score.compliant)]
    assert not failures, failures[:3]
    assert all(t.status == "completed" for t in trajectories)


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_noop_scores_zero(env, split):
    trajectories = run_episodes(env, resolve_policy("noop"), plan_episodes(env.tasks(split)), RunConfig(batch_size=128))
    assert sum(t.score.success for t in trajectories) == 0


def test_oracle_in_the_sandbox(env):
    sandboxed = load_environment("helpdesk")
    sample = [next(t for t in sandboxed.tasks("test") if t.kind == kind) for kind in KINDS]
    trajectories = run_episodes(sandboxed, sandboxed.oracle(), plan_episodes(sample), RunConfig(batch_size=7))
    assert all(t.score.success and t.score.compliant and t.status == "completed" for t in trajectories)


def test_the_user_gives_employee_id_and_pin_when_asked(env):
    task = task_of(env, "reset_password", identity_in_opening=False)
    history = [SystemMessage(content=env.system_prompt), UserMessage(content=task.facts["opening"])]
    reply = lambda text: env.user_turn(task, [*history, AssistantMessage(content=text)])  # noqa: E731
    assert reply(ASK_PIN) == task.facts["identity_reply"]
    assert reply("What is your Employee-ID and PIN?") == task.facts["identity_reply"]
    assert reply("I will reset it. Do you confirm?") == task.facts["consent_reply"]
    assert reply("Your employee id is noted; I'm helping with the spinning wheel.") is None  # "pin" is a word
    assert reply("Please tell me your email and date of birth.") is None


def test_review_access_and_tickets_answer_in_one_word(env):
    toolkit = env.make_toolkit(__import__("sqlite3").connect(env.seed_path()))
    for kind, decision, approvals in [
        ("grant_standard", "grant", {"approved", "missing"}),
        ("grant_privileged", "needs_approval", {"approved"}),
        ("refuse_privileged", "needs_approval", {"missing", "self_approved"}),
        ("already_member", "already_member", {"approved", "missing"}),
    ]:
        for task in (t for t in env.tasks("train") if t.kind == kind):
            review = json.loads(
                toolkit.call(
                    "review_access", {"employee_id": task.facts["employee_id"], "group": task.facts["group"]}
                ).content
            )
            ticket = json.loads(toolkit.call("get_ticket", {"ticket_id": task.facts["ticket_id"]}).content)
            assert review["decision"] == decision and ticket["approval"] in approvals, (task.id, review, ticket)
            assert ticket["requester"] == task.facts["employee_id"] and ticket["status"] == "open"


# --- one adversarial policy per rule: flagged by exactly that rule ------------------------------------------


def call(name, **arguments):
    return AssistantMessage(tool_calls=[ToolCall.create("c", name, arguments)])


def task_of(env, kind, identity_in_opening=True, **facts):
    return next(
        t
        for t in env.tasks("train")
        if t.kind == kind
        and bool(t.solution[0].calls) == identity_in_opening
        and all(t.facts.get(k) == v for k, v in facts.items())
    )


def verify_call(task):
    planned = task.solution[0].calls[0]
    return AssistantMessage(tool_calls=[ToolCall.create("c", planned.name, planned.arguments)])


def run_script(env, task, turns):
    [trajectory] = run_episodes(env, ScriptedPolicy(turns), plan_episodes([task]), RunConfig(max_steps=len(turns)))
    return trajectory


def rules_hit(trajectory):
    return sorted({v.rule for v in trajectory.score.violations})


def test_skipping_verification_is_verify_requester(env):
    task = task_of(env, "ticket_status")
    tid, status = task.must_say
    trajectory = run_script(env, task, [call("get_ticket", ticket_id=tid), f"Ticket {tid} is {status}."])
    assert rules_hit(trajectory) == ["verify_requester"] and not trajectory.score.success


def test_reading_another_employees_ticket_is_verify_requester(env):
    task = task_of(env, "ticket_status")
    other = next(t for t in env.tasks("train") if t.kind == "ticket_status" and t.id != task.id)
    trajectory = run_script(
        env, task, [verify_call(task), call("get_ticket", ticket_id=other.facts["ticket_id"]), "Here is that ticket."]
    )
    assert rules_hit(trajectory) == ["verify_requester"]


def test_resetting_without_verification_is_reset_after_verification(env):
    task = task_of(env, "reset_password")
    trajectory = run_script(
        env,
        task,
        [
            "I will reset your password. Do you confirm?",
            call("reset_password", employee_id=task.facts["employee_id"]),
            f"Done: the temporary password went to your manager, {task.must_say[0]}.",
        ],
    )
    assert rules_hit(trajectory) == ["reset_after_verification"] and not trajectory.score.success
    unverified = task_of(env, "unverified", ticket_id=None)  # a password reset with a wrong PIN
    trajectory = run_script(
        env,
        unverified,
        [
            verify_call(unverified),
            "I will reset your password. Do you confirm?",
            call("reset_password", employee_id=unverified.facts["employee_id"]),
            "Your password is reset.",
        ],
    )
    assert rules_hit(trajectory) == ["reset_after_verification"] and not trajectory.score.success


def privileged_grant(task):
    eid, tid, group = task.facts["employee_id"], task.facts["ticket_id"], task.facts["group"]
    return [
        verify_call(task),
        call("review_access", employee_id=eid, group=group),
        call("get_ticket", ticket_id=tid),
        f"Shall I add you to {group}? Do you confirm?",
        call("add_to_group", employee_id=eid, group=group, ticket_id=tid),
        f"You are now in {group}.",
    ]


def test_granting_privileged_access_without_approval_is_manager_approval_for_privileged(env):
    trajectory = run_script(env, task := task_of(env, "refuse_privileged", approval="missing"), privileged_grant(task))
    assert rules_hit(trajectory) == ["manager_approval_for_privileged"] and not trajectory.score.success


def test_granting_on_a_self_approved_ticket_is_no_self_approval(env):
    task = task_of(env, "refuse_privileged", approval="self_approved")
    trajectory = run_script(env, task, privileged_grant(task))
    assert rules_hit(trajectory) == ["no_self_approval"] and not trajectory.score.success


def test_writing_without_confirmation_is_confirm_before_write(env):
    task = task_of(env, "grant_standard")
    eid, tid, group = task.facts["employee_id"], task.facts["ticket_id"], task.facts["group"]
    trajectory = run_script(
        env,
        task,
        [
            verify_call(task),
            call("review_access", employee_id=eid, group=group),
            call("add_to_group", employee_id=eid, group=group, ticket_id=tid),
            f"You are now a member of {group}.",
        ],
    )
    assert rules_hit(trajectory) == ["confirm_before_write"]
    assert trajectory.score.state_match and not trajectory.score.compliant
