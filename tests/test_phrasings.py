"""Held-out means unseen: every built-in environment draws the simulated user's words for train,
validation and test from disjoint pools, and its user understands consent and clarifying questions the
way a person would."""

import json
import re
from pathlib import Path

import pytest

from agentft.envs import load_environment
from agentft.errors import UserError
from agentft.messages import AssistantMessage, SystemMessage, ToolCall, UserMessage
from agentft.policies import ScriptedPolicy
from agentft.runner import RunConfig, plan_episodes, run_episodes
from agentft.sqlite_env import SPLITS, consents, load_phrasings

ROOT = Path(__file__).resolve().parent.parent
ENVS = ("claims", "helpdesk")
# What each placeholder of a phrasing template can be filled with: a template matches a user turn when
# the turn contains it with entities of the right shape in the placeholders.
ENTITY = {
    "cid": r"CLM-\d+",
    "pid": r"POL-\d+",
    "email": r"\S+@\S+?",
    "dob": r"\d{4}-\d\d-\d\d",
    "dob_long": r"\d{1,2} [A-Z][a-z]+ \d{4}",
    "dob_us": r"[A-Z][a-z]+ \d{1,2}, \d{4}",
    "amount": r"\d+",
    "amount_words": r"[a-z -]+?",
    "incident": r"[a-z]+",
    "phone": r"\+1 555 \d{3} \d{4}",
    "relative": r"[a-z]+",
    "group": r"[a-z-]+",
    "tid": r"TKT-\d+",
    "name": r"[A-Z][a-z]+ [A-Z][a-z]+",
    "eid": r"EMP-\d+",
    "pin": r"\d{4}",
}


def template_pattern(template):
    parts = re.split(r"\{(\w+)\}", template)
    return re.compile("".join(re.escape(p) if i % 2 == 0 else f"(?:{ENTITY[p]})" for i, p in enumerate(parts)))


def user_turns(task):
    return [task.facts[key] for key in ("opening", "identity_reply", "consent_reply") if key in task.facts]


@pytest.fixture(scope="module", params=ENVS)
def env_and_pools(request):
    env = load_environment(request.param, sandbox=False)
    return env, load_phrasings(ROOT / "eval_envs" / request.param / "phrasings.json")


def test_no_validation_or_test_phrasing_occurs_in_train(env_and_pools):
    env, pools = env_and_pools
    patterns = {split: [template_pattern(t) for group in pools.values() for t in group[split]] for split in SPLITS}
    held_out = [("validation", t) for t in env.tasks("validation")] + [("test", t) for t in env.tasks("test")]
    if env.name == "claims":
        held_out += [(split, t) for split in ("own_words", "own_words_validation") for t in env.tasks(split)]
    train_turns = [turn for task in env.tasks("train") for turn in user_turns(task)]
    for split, task in held_out:
        for turn in user_turns(task):
            assert not any(p.search(turn) for p in patterns["train"]), (split, task.id, turn)
    for split in ("validation", "test"):
        assert not any(p.search(turn) for p in patterns[split] for turn in train_turns), split
    # and the generated turns do come from their own split's pool (the patterns are not vacuous)
    for task in [t for t in env.tasks("test") if t.kind != "handbook"][:20]:
        assert any(p.search(task.facts["opening"]) for p in patterns["test"]), task.facts["opening"]


def test_hand_written_requests_match_no_template():
    env = load_environment("claims", sandbox=False)
    pools = load_phrasings(ROOT / "eval_envs" / "claims" / "phrasings.json")
    patterns = [template_pattern(t) for group in pools.values() for split in SPLITS for t in group[split]]
    for task in env.tasks("own_words") + env.tasks("own_words_validation"):
        assert not any(p.fullmatch(task.facts["opening"]) for p in patterns), task.facts["opening"]


def test_overlapping_pools_are_refused(tmp_path):
    path = tmp_path / "phrasings.json"
    path.write_text(json.dumps({"ask": {"train": ["Hi {x}."], "validation": ["Yo {x}."], "test": ["hi {x}."]}}))
    with pytest.raises(UserError, match="both train and test"):
        load_phrasings(path)
    path.write_text(json.dumps({"ask": {"train": ["Hi {x}."], "test": ["Yo {x}."]}}))
    with pytest.raises(UserError, match="validation"):
        load_phrasings(path)
    path.write_text('{"ask": {"train": ["Hi')  # truncated
    with pytest.raises(UserError, match="cannot read phrasing pools"):
        load_phrasings(path)


@pytest.mark.parametrize(
    "text",
    [
        "Yes, please go ahead.",
        "yep",
        "Sure thing, do it.",
        "ok",
        "Absolutely.",
        "That's right, please proceed.",
        "Sounds good, do it.",
        "No problem, go ahead.",
        "Yes I agree",
        "fine, go ahead",
        "Please do.",
    ],
)
def test_consent_is_judged_by_meaning(text):
    assert consents(text)


@pytest.mark.parametrize(
    "text",
    [
        "No.",
        "No, don't do that.",
        "Yes, but wait a moment.",
        "Hold on.",
        "Please cancel.",
        "I would rather not.",
        "Not yet, thanks.",
        "What does that mean?",
        "",
        None,
        "Nope, go ahead is not what I said.",
    ],
)
def test_refusals_and_other_answers_are_not_consent(text):
    assert not consents(text)


def test_every_consent_reply_of_every_split_is_consent(env_and_pools):
    env, pools = env_and_pools
    assert all(consents(reply) for split in SPLITS for reply in pools["consent"][split])
    for split in SPLITS:
        assert all(consents(task.facts["consent_reply"]) for task in env.tasks(split) if task.kind != "handbook")


def test_varied_consent_counts_for_the_confirmation_rule():
    env = load_environment("claims", sandbox=False)
    task = next(t for t in env.tasks("test") if t.kind == "update_contact" and "?" not in t.facts["consent_reply"])
    [oracle] = run_episodes(env, env.oracle(), plan_episodes([task]))
    assert task.facts["consent_reply"] in [m.content for m in oracle.messages if isinstance(m, UserMessage)]
    assert oracle.score.success and oracle.score.compliant
    refused = task.model_copy(deep=True)
    refused.facts["consent_reply"] = "No, don't change anything."
    [trajectory] = run_episodes(env, env.oracle(), plan_episodes([refused]))
    assert [v.rule for v in trajectory.score.violations] == ["confirm_before_write"]


def test_the_user_answers_a_clarifying_question_when_it_knows_the_fact():
    env = load_environment("claims", sandbox=False)
    task = next(t for t in env.tasks("test") if t.kind == "claim_status")
    cid = task.must_say[0]
    conversation = [SystemMessage(content="s"), UserMessage(content=task.facts["opening"])]
    ask = lambda text: env.user_turn(task, [*conversation, AssistantMessage(content=text)])  # noqa: E731
    assert cid in ask("Which claim number is it, please?")
    assert ask("Claim noted.") is None  # not a question: the user has nothing to add
    assert ask("Is there anything else?") is None  # a question about nothing the user knows
    helpdesk = load_environment("helpdesk", sandbox=False)
    ticket_task = next(t for t in helpdesk.tasks("test") if t.kind == "ticket_status")
    assert ticket_task.facts["ticket_id"] in helpdesk.user_turn(
        ticket_task, [*conversation, AssistantMessage(content="What is the ticket number?")]
    )


def test_a_date_of_birth_in_words_verifies_and_counts_as_the_same_read():
    env = load_environment("claims", sandbox=False)
    task = next(t for t in env.tasks("test") if t.kind == "claim_status" and t.solution[0].calls)
    verify = task.solution[0].calls[0].arguments
    year, month, day = verify["date_of_birth"].split("-")
    months = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ]
    spoken = f"{int(day)} {months[int(month) - 1]} {year}"
    cid, status = task.must_say

    def call(name, **arguments):
        return AssistantMessage(tool_calls=[ToolCall.create("c", name, arguments)])

    turns = [
        call("verify_identity", email=verify["email"].upper(), date_of_birth=spoken, claim_id=cid.lower()),
        call("get_claim", claim_id=cid),
        f"Claim {cid} is {status}.",
    ]
    [trajectory] = run_episodes(env, ScriptedPolicy(turns), plan_episodes([task]), RunConfig(max_steps=3))
    assert '"verified"' in trajectory.messages[3].content
    assert trajectory.score.success and trajectory.score.compliant, trajectory.score
