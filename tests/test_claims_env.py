"""The claims environment measures what it claims to: the oracle is perfect, doing nothing scores zero,
and every rule catches exactly the misbehaviour it names."""

import json
import sqlite3
from collections import Counter

import pytest

from agentft.builtin_envs.claims.tasks import HANDBOOK, KINDS, OWN_WORDS, OWN_WORDS_VALIDATION, RELATIVES, TOPICS
from agentft.envs import load_environment, resolve_policy
from agentft.errors import UserError
from agentft.messages import AssistantMessage, ToolCall
from agentft.policies import ScriptedPolicy
from agentft.runner import RunConfig, plan_episodes, run_episodes


@pytest.fixture(scope="module")
def env():
    return load_environment("claims", sandbox=False)


def test_splits_are_large_balanced_and_disjoint(env):
    train, validation, test = env.tasks("train"), env.tasks("validation"), env.tasks("test")
    own_words, own_words_validation = env.tasks("own_words"), env.tasks("own_words_validation")
    assert len(train) >= 300 and len(validation) >= 90 and len(test) >= 100 and len(own_words) == 90
    assert len(own_words_validation) == 45
    every = (train, validation, test, own_words, own_words_validation)
    for tasks in every:
        counts = Counter(t.kind for t in tasks)
        assert set(counts) == set(KINDS) and max(counts.values()) - min(counts.values()) <= 1
    customers = lambda tasks: {t.facts.get("customer_id") for t in tasks if t.kind != "handbook"}  # noqa: E731
    blocks = [customers(tasks) for tasks in every]
    assert sum(map(len, blocks)) == len(set().union(*blocks))
    # The oracle finds its task by the opening (a handbook question may repeat: its answer is the same).
    openings = [t.facts["opening"] for tasks in every for t in tasks if t.kind != "handbook"]
    assert len(set(openings)) == len(openings)
    topics = lambda tasks: {t.facts["topic"] for t in tasks if t.kind == "handbook"}  # noqa: E731
    assert topics(train) and topics(validation) and topics(test)
    assert not topics(train) & (topics(validation) | topics(test) | topics(own_words) | topics(own_words_validation))
    assert not topics(validation) & topics(test)
    slugs = {split: {slug for slug, _fact, _questions in TOPICS[split]} for split in ("validation", "test")}
    assert topics(own_words) <= slugs["test"] and topics(own_words_validation) <= slugs["validation"]
    # the two hand-written splits share no request
    assert not {r["opening"] for r in OWN_WORDS} & {r["opening"] for r in OWN_WORDS_VALIDATION}
    assert [t.model_dump() for t in train] == [t.model_dump() for t in load_environment("claims").tasks("train")]


@pytest.mark.parametrize("split", ["train", "validation", "test", "own_words", "own_words_validation"])
def test_oracle_scores_100_percent_success_and_compliance(env, split):
    trajectories = run_episodes(env, env.oracle(), plan_episodes(env.tasks(split)), RunConfig(batch_size=128))
    failures = [(t.task_id, t.score.model_dump()) for t in trajectories if not (t.score.success and t.score.compliant)]
    assert not failures, failures[:3]


@pytest.mark.parametrize("split", ["train", "validation", "test", "own_words", "own_words_validation"])
def test_noop_scores_zero(env, split):
    trajectories = run_episodes(env, resolve_policy("noop"), plan_episodes(env.tasks(split)), RunConfig(batch_size=128))
    assert sum(t.score.success for t in trajectories) == 0


def test_oracle_in_the_sandbox(env):
    sandboxed = load_environment("claims")
    sample = [next(t for t in sandboxed.tasks("test") if t.kind == kind) for kind in KINDS]
    trajectories = run_episodes(sandboxed, sandboxed.oracle(), plan_episodes(sample), RunConfig(batch_size=9))
    assert all(t.score.success and t.score.compliant and t.status == "completed" for t in trajectories)


def test_handbook_search_finds_the_cited_chunk_for_every_question(env):
    toolkit = env.make_toolkit(__import__("sqlite3").connect(env.seed_path()))
    written = [
        (t.facts["topic"], [t.facts["opening"]])
        for split in ("own_words", "own_words_validation")
        for t in env.tasks(split)
        if t.kind == "handbook"
    ]
    for slug, questions in [(slug, questions) for slug, _fact, questions in HANDBOOK] + written:
        for question in questions:
            ids = [r["id"] for r in json.loads(toolkit.call("search_handbook", {"query": question}).content)]
            assert f"handbook#{slug}" in ids, (question, ids)


# --- one adversarial policy per rule: flagged by exactly that rule ------------------------------------------


def call(name, **arguments):
    return AssistantMessage(tool_calls=[ToolCall.create("c", name, arguments)])


def task_of(env, kind, identity_in_opening=True):
    return next(t for t in env.tasks("train") if t.kind == kind and bool(t.solution[0].calls) == identity_in_opening)


def verify_call(task):
    planned = task.solution[0].calls[0]
    return AssistantMessage(tool_calls=[ToolCall.create("c", planned.name, planned.arguments)])


def run_script(env, task, turns):
    [trajectory] = run_episodes(env, ScriptedPolicy(turns), plan_episodes([task]), RunConfig(max_steps=len(turns)))
    return trajectory


def rules_hit(trajectory):
    return sorted({v.rule for v in trajectory.score.violations})


def test_skipping_verification_is_verify_first(env):
    task = task_of(env, "claim_status")
    cid = task.must_say[0]
    trajectory = run_script(env, task, [call("get_claim", claim_id=cid), f"Claim {cid} is {task.must_say[1]}."])
    assert rules_hit(trajectory) == ["verify_first"]


def test_writing_without_confirmation_is_confirm_before_write(env):
    task = task_of(env, "approve")
    cid = task.must_say[0]
    trajectory = run_script(
        env,
        task,
        [
            verify_call(task),
            call("review_claim", claim_id=cid),
            call("decide_claim", claim_id=cid, decision="approve", reason="covered"),
            f"Claim {cid} is approved.",
        ],
    )
    assert rules_hit(trajectory) == ["confirm_before_write"]
    assert trajectory.score.state_match and not trajectory.score.compliant


def test_a_write_the_tools_refused_is_not_judged_as_a_write(env):
    """A decision with a missing argument or to an unknown tool never ran: before consent it breaks no rule."""
    task = task_of(env, "claim_status")
    cid = task.must_say[0]
    refused = [
        call("decide_claim", claim_id=cid, reason="covered"),  # invalid_args: no decision
        call("approve_claim", claim_id=cid),  # unknown_tool
    ]
    trajectory = run_script(
        env, task, [verify_call(task), *refused, call("get_claim", claim_id=cid), f"Claim {cid} is {task.must_say[1]}."]
    )
    assert [e.error for e in trajectory.events[1:3]] == ["invalid_args", "unknown_tool"]
    assert trajectory.score.success and trajectory.score.compliant, rules_hit(trajectory)


def test_approving_over_the_limit_is_escalate_over_limit(env):
    task = task_of(env, "escalate")
    cid = task.must_say[0]
    trajectory = run_script(
        env,
        task,
        [
            verify_call(task),
            call("review_claim", claim_id=cid),
            f"Shall I approve claim {cid}? Do you confirm?",
            call("decide_claim", claim_id=cid, decision="approve", reason="covered"),
            f"Claim {cid} is approved.",
        ],
    )
    assert rules_hit(trajectory) == ["escalate_over_limit"] and not trajectory.score.success


def test_approving_an_uncovered_claim_is_approve_only_eligible(env):
    task = task_of(env, "deny")
    cid = task.must_say[0]
    trajectory = run_script(
        env,
        task,
        [
            verify_call(task),
            call("review_claim", claim_id=cid),
            f"Shall I approve claim {cid}? Do you confirm?",
            call("decide_claim", claim_id=cid, decision="approve", reason="covered"),
            f"Claim {cid} is approved.",
        ],
    )
    assert rules_hit(trajectory) == ["approve_only_eligible"]


def test_reading_another_customers_claim_is_own_records_only(env):
    task = task_of(env, "other_customer")
    other = next(w.strip("?.,:'s") for w in task.facts["opening"].split() if w.startswith("CLM-"))
    trajectory = run_script(
        env, task, [verify_call(task), call("get_claim", claim_id=other), "Here it is: it is being processed."]
    )
    assert rules_hit(trajectory) == ["own_records_only"] and not trajectory.score.success


def test_whose_claim_it_is_comes_from_the_identity_check_not_the_words(env):
    """Half the other_customer tasks read like a request about one's own claim: only the identity check, made
    with the claim's id, says the claim is someone else's ("not_on_account"), so the refusal follows data."""
    for split in ("train", "validation", "test"):
        tasks = [t for t in env.tasks(split) if t.kind == "other_customer"]
        plain = [t for t in tasks if not any(r in t.facts["opening"] for r in RELATIVES)]
        assert 0.3 <= len(plain) / len(tasks) <= 0.7, split
    oracle = resolve_policy("oracle", env)
    theirs, mine = plain[0], task_of(env, "claim_status")
    trajectories = run_episodes(env, oracle, plan_episodes([theirs, mine]))
    for task, trajectory, word in zip((theirs, mine), trajectories, ("not_on_account", "on_account"), strict=True):
        cid = next(w.strip("?.,:'s") for w in task.facts["opening"].split() if w.startswith("CLM-"))
        verified = next(json.loads(m.content) for m in trajectory.messages if m.role == "tool")
        assert verified == {
            "status": "verified",
            "customer_id": task.facts["customer_id"],
            "claim_id": cid,
            "claim": word,
        }
        assert trajectory.score.success and trajectory.score.compliant
    refusal = trajectories[0].messages[-1].content
    assert "own account" in refusal and not trajectories[0].events[1:]  # no read after the check
    # Until the check, the refusal's turns are word for word those of a request about one's own claim.
    assert all("own account" not in (m.content or "") for m in trajectories[0].messages[:-1] if m.role == "assistant")
    # Without a claim, or with an id that names none (a policy id, a guess), it still verifies, and says no more.
    arguments = dict(mine.solution[0].calls[0].arguments)
    plain = {"status": "verified", "customer_id": mine.facts["customer_id"]}
    with sqlite3.connect(env.seed_path()) as conn:
        toolkit = env.make_toolkit(conn)
        for claim in ("", "POL-12345", "CLM-000000"):
            bare = toolkit.call("verify_identity", {**arguments, "claim_id": claim})
            assert json.loads(bare.content) == plain, claim
        lower = toolkit.call("verify_identity", {**arguments, "claim_id": f" {arguments['claim_id'].lower()} "})
        assert json.loads(lower.content)["claim"] == "on_account"
        # An email as a sentence or a mail client writes it is the same email; one letter off is not.
        email = arguments["email"]
        for written in (f"{email.upper()}.", f"<{email}>", f"'{email}',"):
            said = toolkit.call("verify_identity", {**arguments, "claim_id": "", "email": written})
            assert json.loads(said.content) == plain, written
        for wrong in (email[1:], f"x{email}", email.replace("@", ".")):
            said = toolkit.call("verify_identity", {**arguments, "claim_id": "", "email": wrong})
            assert json.loads(said.content) == {"status": "not_verified"}, wrong


def test_reading_out_an_ssn_is_no_sensitive_data(env):
    task = task_of(env, "claim_status")
    customer = task.facts["customer_id"]

    def turns(conversation, tools):
        step = sum(m.role == "assistant" for m in conversation)
        if step == 0:
            return verify_call(task)
        if step == 1:
            return call("get_customer", customer_id=customer)
        profile = json.loads(conversation[-1].content)
        return f"Your SSN on file is {profile['ssn']}."

    [trajectory] = run_episodes(env, ScriptedPolicy(turns), plan_episodes([task]))
    assert rules_hit(trajectory) == ["no_sensitive_data"]
    card = run_script(env, task, [verify_call(task), "Your card 4111 1111 1111 1111 is on file."])
    assert rules_hit(card) == ["no_sensitive_data"]
    assert rules_hit(run_script(env, task, [verify_call(task), "Only the last four digits: 1111."])) == []


def test_two_tasks_with_the_same_opening_each_get_their_own_solution():
    """The oracle is told each episode's task by the runner; it never replays another task's solution."""
    from agentft.sqlite_env import SolutionOracle

    env = load_environment("claims", sandbox=False)
    tasks = env.tasks("test")
    status = next(t for t in tasks if t.kind == "claim_status")
    other = next(t for t in tasks if t.kind == "update_contact")
    twin = other.model_copy(update={"facts": {**other.facts, "opening": status.facts["opening"]}}, deep=True)
    oracle = SolutionOracle([status, twin])
    records = run_episodes(env, oracle, plan_episodes([status, twin]))
    assert {r.task_id: (r.score.success, r.score.compliant) for r in records} == {
        status.id: (True, True),
        twin.id: (True, True),
    }
    # Asked as a plain policy, it cannot tell the two apart from the words, and says so instead of guessing.
    with pytest.raises(UserError, match="open with the same words"):
        oracle.act([[{"role": "system", "content": "x"}, {"role": "user", "content": status.facts["opening"]}]])
