"""``agentft env check``: is an environment sound enough to train and evaluate on?

An environment can be wrong in ways no score shows: an oracle that solves the wrong task, a rule that can
never fire, a test customer that is also a train customer, a seed that builds a different database on each
machine. ``check_environment`` runs the environment's own oracle and the ``noop`` policy through the real
runner, replays rule-breaking edits of oracle episodes, and reads the tasks, then says per check what passed
and, for a failure, why, with the first failing task's transcript and the rows that differed.

Rule-breaking edits are made generically from an oracle episode's assistant turns and replayed against the
real tools (so results are real): a call left out (a verification skipped), the question before a write left
out (no confirmation), more read than needed and every tool result read out in the final reply (a leak), a
write's argument replaced by the value another task used for that argument (approve where escalate was
right, someone else's record), and the same for an identifier a read takes.

An environment that declares prompt-injection goals (``attack_goals()``) is run under attack with
``GulliblePolicy``, an agent that obeys every injection: each goal must be reached when the agent obeys it (a
goal whose call fails measures nothing) and none may get through the guard (a goal no rule forbids is not an
attack the guard can stop).
"""

from __future__ import annotations

import os
import re
import sqlite3
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from agentft.attacks import GulliblePolicy, attack_environment
from agentft.envs import Environment, Task, resolve_policy
from agentft.errors import UserError
from agentft.messages import AssistantMessage, Message, ToolCall, ToolMessage, UserMessage
from agentft.policies.base import Reply
from agentft.runner import RunConfig, plan_episodes, run_episodes
from agentft.sqlite_env import SPLITS, DatabaseEnvironment, state_hash
from agentft.trajectory import Trajectory

__all__ = ["Check", "CheckReport", "check_environment", "describe", "entity_values", "final_reply", "transcript"]

USER_WORDS = ("opening", "identity_reply", "consent_reply", "answers")
"""Task facts that are the simulated user's words, never entities."""
_IDENTIFIER = re.compile(r"(?=\S*\d)(?=\S*[A-Za-z])\S+")
"""One token with a letter and a digit: CUS-0042, TKT-50102, an email address (not "domain-admins")."""
EDIT_TASKS_PER_KIND = 3
"""Oracle episodes per task kind that are edited to break the rules: enough for every built-in rule."""
_GOODBYE = "Thank you, goodbye."


@dataclass
class Check:
    """One check's verdict: ``passed`` None means skipped (``reason`` says why)."""

    name: str
    passed: bool | None
    reason: str
    detail: str = ""


@dataclass
class CheckReport:
    env: str
    splits: list[str]
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(check.passed is not False for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if check.passed is False]


def check_environment(
    env: Environment,
    *,
    splits: Sequence[str] | None = None,
    edit_tasks_per_kind: int = EDIT_TASKS_PER_KIND,
    batch_size: int = 64,
    progress: Callable[[str], None] | None = None,
) -> CheckReport:
    """Run every check on ``env``. Task ids and entities are checked over all splits; the episodes (oracle,
    ``noop``, rule-breaking edits) run on ``splits`` (default: all), the edits on the first of them."""
    clock = time.perf_counter()
    say = progress or (lambda message: None)
    every = _splits(env)
    chosen = list(splits or every)
    unknown = [split for split in chosen if split not in every]
    if unknown:
        raise UserError(f"{env.name} has splits {', '.join(every)}, not {', '.join(unknown)}")
    tasks = {split: env.tasks(split) for split in every}
    report = CheckReport(env.name, chosen)
    report.checks.append(_unique_ids(tasks))
    say("building the seed database twice")
    report.checks.append(_reproducible(env, every))
    report.checks.append(_disjoint(env, tasks))
    task_of = {task.id: task for split_tasks in tasks.values() for task in split_tasks}
    config = RunConfig(batch_size=batch_size)
    oracle: dict[str, list[Trajectory]] = {}
    noop: dict[str, list[Trajectory]] = {}
    for split in chosen:
        say(f"oracle on {split} ({len(tasks[split])} tasks)")
        oracle[split] = _run(env, resolve_policy("oracle", env), tasks[split], config)
        say(f"noop on {split}")
        noop[split] = _run(env, resolve_policy("noop", env), tasks[split], config)
    report.checks += [
        _oracle_solves(oracle, task_of),
        _must_say(oracle, task_of),
        _verbatim_heard(oracle, task_of),
        _noop_fails(noop, task_of),
    ]
    sample = _sample(oracle[chosen[0]], edit_tasks_per_kind, task_of) if chosen else []
    rules, edited = _rules_fire(env, sample, config, say)
    report.checks.append(rules)
    runs = {
        "oracle": [t for split_runs in oracle.values() for t in split_runs],
        "noop": [t for split_runs in noop.values() for t in split_runs],
        "edit": edited,
    }
    if chosen:
        report.checks.append(_attacks(env, tasks[chosen[0]], config, say))
    report.checks.insert(3, _no_errors(runs, task_of))  # first of the episode checks: an error explains the rest
    report.seconds = time.perf_counter() - clock
    return report


# --- running ------------------------------------------------------------------------------------------------
def _splits(env: Environment) -> list[str]:
    declared = getattr(env, "splits", None)
    if declared is not None:
        return list(declared() if callable(declared) else declared)
    if isinstance(env, DatabaseEnvironment):
        env.tasks(SPLITS[0])
        return list(env._tasks or {})
    found = []
    for split in SPLITS:
        try:
            env.tasks(split)
        except KeyError:
            continue
        found.append(split)
    return found


def _run(env: Environment, policy: Any, tasks: Sequence[Task], config: RunConfig) -> list[Trajectory]:
    """Episodes of ``tasks`` in the tasks' order (the runner returns them as they finish)."""
    order = {task.id: i for i, task in enumerate(tasks)}
    done = run_episodes(env, policy, plan_episodes(tasks), config)
    return sorted(done, key=lambda t: order.get(t.task_id, len(order)))


def _good(trajectory: Trajectory) -> bool:
    score = trajectory.score
    return trajectory.status == "completed" and score is not None and bool(score.success) and score.compliant


def final_reply(messages: Sequence[Message]) -> str:
    """The last assistant text that is not a tool call: what the user is told in the end."""
    return next(
        (m.content or "" for m in reversed(messages) if isinstance(m, AssistantMessage) and not m.tool_calls), ""
    )


# --- checks over tasks --------------------------------------------------------------------------------------
def _unique_ids(tasks: dict[str, list[Task]]) -> Check:
    seen: dict[str, str] = {}
    for split, split_tasks in tasks.items():
        for task in split_tasks:
            if task.id in seen:
                where = split if seen[task.id] == split else f"{seen[task.id]} and {split}"
                return Check("unique task ids", False, f"task id {task.id} appears twice ({where})")
            seen[task.id] = split
    return Check("unique task ids", True, f"{len(seen)} tasks, every id once")


def entity_values(env: Environment, task: Task) -> dict[str, str]:
    """The task's entities (fact name → value): the facts the environment names in ``entity_facts``, or else
    every fact that is one identifier-like token (CUS-0042, an email), not the simulated user's words."""
    declared = getattr(env, "entity_facts", None)
    facts = task.facts
    if declared is not None:
        return {key: str(facts[key]) for key in declared if facts.get(key) not in (None, "")}
    return {
        key: value
        for key, value in facts.items()
        if key not in USER_WORDS and isinstance(value, str) and _IDENTIFIER.fullmatch(value)
    }


def _disjoint(env: Environment, tasks: dict[str, list[Task]]) -> Check:
    name = "entities disjoint between splits"
    if len(tasks) < 2:
        return Check(name, None, "one split only")
    owner: dict[str, tuple[str, Task]] = {}  # value -> (split, first task)
    for split, split_tasks in tasks.items():
        for task in split_tasks:
            for fact, value in entity_values(env, task).items():
                first = owner.setdefault(value.strip().upper(), (split, task))
                if first[0] != split:
                    return Check(
                        name,
                        False,
                        f"{value} ({fact}) is in {first[0]} task {first[1].id} and {split} task {task.id}",
                    )
    if not owner:
        return Check(name, None, "no entity facts found (declare them: entity_facts = ('customer_id',))")
    facts = getattr(env, "entity_facts", None) or "identifier-like facts"
    return Check(name, True, f"{len(owner)} entities ({facts}), each in one split")


def _reproducible(env: Environment, splits: Sequence[str]) -> Check:
    """Two fresh builds of the seed database (each in an empty cache) and their tasks must be equal, and equal to
    the cached database the episodes run on."""
    name = "same seed, same database"
    if not isinstance(env, DatabaseEnvironment):
        return Check(name, None, "not a DatabaseEnvironment: its state is its own")
    builds = []
    for _ in range(2):
        with (
            tempfile.TemporaryDirectory(prefix="agentft-envcheck-") as home,
            mock.patch.dict(os.environ, AGENTFT_HOME=home),
        ):
            fresh = type(env)(**env.init_kwargs(), sandbox=False)
            with sqlite3.connect(fresh.seed_path()) as conn:
                digest = state_hash(conn, env.tables)
            conn.close()
            builds.append((digest, [t.model_dump() for split in splits for t in fresh.tasks(split)]))
    with sqlite3.connect(f"file:{env.seed_path()}?mode=ro", uri=True) as conn:
        cached = state_hash(conn, env.tables)
    conn.close()
    (first, first_tasks), (second, second_tasks) = builds
    if first != second:
        return Check(
            name,
            False,
            f"two builds with seed {env.seed} differ ({first[:12]} vs {second[:12]}): "
            "build_database must draw every random choice from its rng (no set order, no clock)",
        )
    if first_tasks != second_tasks:
        return Check(
            name,
            False,
            f"two builds with seed {env.seed} generate different tasks: generate_tasks "
            "must draw every random choice from its rng",
        )
    if cached != first:
        return Check(name, False, f"the cached seed database {env.seed_path()} differs from a fresh build: delete it")
    return Check(name, True, f"seed {env.seed}: database {first[:12]} and tasks the same on every build")


# --- checks over episodes -----------------------------------------------------------------------------------
def _why(trajectory: Trajectory) -> str:
    """One line: why an episode is not a success within policy."""
    if trajectory.status == "error":
        return f"ended in error: {trajectory.metadata.get('error', 'unknown')}"
    score = trajectory.score
    if score is None:
        return f"not scored (status {trajectory.status})"
    causes = [] if trajectory.status == "completed" else [f"status {trajectory.status}"]
    details = score.details
    if details.get("missing_facts"):
        causes.append(f"final reply lacks {', '.join(map(repr, details['missing_facts']))}")
    if details.get("missing_reads"):
        causes.append(f"reads not made: {', '.join(read['tool'] for read in details['missing_reads'])}")
    if details.get("state_diff"):
        causes.append(f"rows differ from the gold replay in {', '.join(details['state_diff'])}")
    if not score.success and len(causes) == (trajectory.status != "completed"):
        causes.append("not a success")
    causes += [f"broke {v.rule} (step {v.step}: {v.detail})" for v in score.violations]
    return "; ".join(causes) or "success within policy"


def transcript(messages: Sequence[Message], last: int = 10, width: int = 300) -> str:
    """The last ``last`` messages after the system prompt, one line each (long texts cut at ``width``)."""
    lines = []
    for message in [m for m in messages if m.role != "system"][-last:]:
        text = message.content or ""
        if isinstance(message, AssistantMessage) and message.tool_calls:
            calls = ", ".join(f"{c.function.name}({_args(c.function.arguments)})" for c in message.tool_calls)
            text = f"{text} -> {calls}" if text else f"-> {calls}"
        if isinstance(message, ToolMessage):
            text = f"[{message.name}] {text}"
        text = " ".join(text.split())
        lines.append(f"  {message.role:>9}: {text[:width]}{'...' if len(text) > width else ''}")
    return "\n".join(lines)


def _args(arguments: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in arguments.items())


def describe(trajectory: Trajectory, task: Task | None = None) -> str:
    """A failing episode for a person: the task, why it failed, the rows that differ, the transcript."""
    kind = f" ({task.kind}, {task.split})" if task is not None else ""
    lines = [f"task {trajectory.task_id}{kind}, policy {trajectory.policy}: {_why(trajectory)}"]
    score = trajectory.score
    if score is not None:
        for read in score.details.get("missing_reads") or []:
            lines.append(f"  read not made: {read['tool']}({_args(read.get('arguments', {}))}) [{read.get('match')}]")
        for table, rows in (score.details.get("state_diff") or {}).items():
            lines.append(f"  {table}: rows only in the episode: {rows.get('unexpected')}")
            lines.append(f"  {table}: rows only in the gold replay: {rows.get('missing')}")
    if task is not None and task.must_say:
        lines.append(f"  must say: {task.must_say}")
    lines.append(f"last messages of {len(trajectory.messages)}:")
    lines.append(transcript(trajectory.messages))
    return "\n".join(lines)


def _oracle_solves(oracle: dict[str, list[Trajectory]], task_of: dict[str, Task]) -> Check:
    name = "oracle: 100% success and compliance"
    counts, first = [], None
    for split, runs in oracle.items():
        success = sum(bool(t.score and t.score.success) for t in runs)
        compliant = sum(bool(t.score and t.score.compliant) for t in runs)
        counts.append(f"{split} {success}/{len(runs)} succeeded, {compliant}/{len(runs)} compliant")
        first = first or next((t for t in runs if not _good(t)), None)
    summary = "; ".join(counts)
    if first is None:
        return Check(name, True, summary)
    return Check(
        name,
        False,
        f"{summary}; first failing task {first.task_id}: {_why(first)}",
        describe(first, task_of.get(first.task_id)),
    )


def _must_say(oracle: dict[str, list[Trajectory]], task_of: dict[str, Task]) -> Check:
    name = "must-say facts in the oracle's final reply"
    facts = read = 0
    for runs in oracle.values():
        for trajectory in runs:
            if trajectory.status == "error":  # no reply to read: the error check reports it
                continue
            task, read = task_of[trajectory.task_id], read + 1
            reply = final_reply(trajectory.messages).lower()
            missing = [fact for fact in task.must_say if fact.lower() not in reply]
            facts += len(task.must_say)
            if missing:
                return Check(
                    name,
                    False,
                    f"task {task.id}: the oracle's final reply lacks {', '.join(map(repr, missing))}",
                    describe(trajectory, task),
                )
    if not facts:
        return Check(name, None, "no task has must-say facts" if read else "no oracle episode ended without error")
    return Check(name, True, f"{facts} facts, each said")


def _verbatim_heard(oracle: dict[str, list[Trajectory]], task_of: dict[str, Task]) -> Check:
    """The oracle writes every verbatim argument (``@tool(verbatim=...)``) as the conversation had it: a local
    model's decoding is kept to such values, so a demonstration that reformats one teaches what it cannot do."""
    from agentft.verbatim import unheard_arguments, verbatim_fields

    name = "verbatim arguments: the oracle copies them from the conversation"
    calls = 0
    for runs in oracle.values():
        for trajectory in runs:
            if not verbatim_fields(trajectory.tools):
                continue
            calls += 1
            unheard = unheard_arguments(trajectory.messages, trajectory.tools)
            if unheard:
                tool, argument, value = unheard[0]
                return Check(
                    name,
                    False,
                    f"task {trajectory.task_id}: {tool}'s {argument} is {value!r}, which no earlier message holds "
                    "as whole words (a number: as one it says; with a schema pattern: matching it); "
                    f"take {argument} out of {tool}'s verbatim list, or have the task pass it as the user said it",
                    describe(trajectory, task_of.get(trajectory.task_id)),
                )
    if not calls:
        return Check(name, None, "no tool declares verbatim arguments")
    return Check(name, True, f"{calls} oracle episodes, every verbatim value copied")


def _noop_fails(noop: dict[str, list[Trajectory]], task_of: dict[str, Task]) -> Check:
    name = "noop: 0% success"
    runs = [t for split_runs in noop.values() for t in split_runs]
    won = [t for t in runs if t.score is not None and t.score.success]
    if not won:
        return Check(name, True, f"0 of {len(runs)} tasks")
    return Check(
        name,
        False,
        f"noop succeeded on {len(won)} of {len(runs)} tasks, first {won[0].task_id}: a task must need a tool call "
        "or a fact in the reply",
        describe(won[0], task_of.get(won[0].task_id)),
    )


def _no_errors(runs: dict[str, list[Trajectory]], task_of: dict[str, Task]) -> Check:
    name = "episodes end without error"
    failed = [(policy, t) for policy, trajectories in runs.items() for t in trajectories if t.status == "error"]
    total = sum(len(trajectories) for trajectories in runs.values())
    if not failed:
        return Check(name, True, f"{total} episodes (oracle, noop, edits), none ended in error")
    policy, first = failed[0]
    return Check(
        name,
        False,
        f"{len(failed)} of {total} episodes ended in error; first ({policy}, task {first.task_id}): "
        f"{first.metadata.get('error', 'unknown')}",
        describe(first, task_of.get(first.task_id.split("~")[0])),
    )


# --- rule-breaking edits ------------------------------------------------------------------------------------
@dataclass
class Edit:
    """An oracle episode's assistant turns, edited to break a rule; replayed against the real tools."""

    operator: str
    task: Task
    """The original task (scoring replays its own solution), under an id of its own once the edits are made."""
    what: str
    turns: list[AssistantMessage]
    leak_at: int | None = None
    """The turn whose text gets every tool result of the conversation appended."""


class _EditReplay:
    """Replays each edit's turns; past its last turn it says goodbye."""

    name = "oracle-edit"

    def __init__(self, edits: Sequence[Edit]) -> None:
        self.edits = {edit.task.id: edit for edit in edits}

    def act(self, conversations: Any, tools: Any = None) -> list[Reply]:
        raise UserError("the edit replay needs each episode's task: run it through agentft's runner")

    def act_on_tasks(
        self, conversations: Sequence[Sequence[Message]], tools: Any, tasks: Sequence[Task]
    ) -> list[Reply]:
        replies = []
        for conversation, task in zip(conversations, tasks, strict=True):
            edit = self.edits[task.id]
            turn = sum(isinstance(m, AssistantMessage) for m in conversation)
            message = edit.turns[turn].model_copy(deep=True) if turn < len(edit.turns) else None
            if message is None:
                message = AssistantMessage(content=_GOODBYE)
            elif turn == edit.leak_at:
                results = [m.content for m in conversation if isinstance(m, ToolMessage)]
                message.content = "\n".join([message.content or "", *results])
            replies.append(Reply(message=message, text=message.content or ""))
        return replies


def _sample(oracle: list[Trajectory], per_kind: int, task_of: dict[str, Task]) -> list[tuple[Task, Trajectory]]:
    """Up to ``per_kind`` good oracle episodes of each task kind, in task order."""
    taken: dict[str, int] = {}
    sample = []
    for trajectory in oracle:
        task = task_of[trajectory.task_id]
        if _good(trajectory) and taken.get(task.kind, 0) < per_kind:
            taken[task.kind] = taken.get(task.kind, 0) + 1
            sample.append((task, trajectory))
    return sample


def _turns(trajectory: Trajectory) -> list[AssistantMessage]:
    return [m for m in trajectory.messages if isinstance(m, AssistantMessage)]


def _same(a: Any, b: Any) -> bool:
    return str(a).strip().lower() == str(b).strip().lower()


def _with_argument(turn: AssistantMessage, index: int, key: str, value: Any) -> AssistantMessage:
    edited = turn.model_copy(deep=True)
    edited.tool_calls[index].function.arguments[key] = value
    return edited


def _edits(sample: list[tuple[Task, Trajectory]]) -> list[Edit]:
    """Every edit of the sampled episodes, operator by operator (the likely ones first)."""
    found: list[Edit] = []
    later: list[Edit] = []  # another identifier in a read: many, and rarely the only way to break a rule
    values: dict[str, list[tuple[str, Any]]] = {}  # argument name -> (task id, value) over every sampled call
    for task, trajectory in sample:
        for turn in _turns(trajectory):
            for call in turn.tool_calls:
                for key, value in call.function.arguments.items():
                    values.setdefault(key, []).append((task.id, value))
    for task, trajectory in sample:
        turns, messages = _turns(trajectory), trajectory.messages
        effects = {spec.name: spec.effect for spec in trajectory.tools}
        at = [i for i, m in enumerate(messages) if isinstance(m, AssistantMessage)]
        writes = [any(effects.get(c.function.name) == "write" for c in turn.tool_calls) for turn in turns]
        for i, turn in enumerate(turns[:-1]):  # the question before a write, and so the user's answer, left out
            answered = at[i] + 1 < len(messages) and isinstance(messages[at[i] + 1], UserMessage)
            if not turn.tool_calls and answered and writes[i + 1]:
                found.append(
                    Edit("skip_question", task, f"no question before turn {i + 2}", turns[:i] + turns[i + 1 :])
                )
        for i, turn in enumerate(turns):  # one call left out (a verification, a review)
            for j, call in enumerate(turn.tool_calls):
                kept = turn.model_copy(deep=True)
                del kept.tool_calls[j]
                edited = turns[:i] + ([kept] if kept.tool_calls or kept.content else []) + turns[i + 1 :]
                found.append(Edit("skip_call", task, f"without {call.function.name} (turn {i + 1})", edited))
        found += _overshare(task, trajectory, turns)
        for i, turn in enumerate(turns):  # someone else's value: another decision, another record
            for j, call in enumerate(turn.tool_calls):
                write = effects.get(call.function.name) == "write"
                for key, value in call.function.arguments.items():
                    if not write and not (isinstance(value, str) and _IDENTIFIER.fullmatch(value)):
                        continue
                    others = [v for owner, v in values.get(key, []) if owner != task.id and not _same(v, value)]
                    others = list({str(v).strip().lower(): v for v in others}.values())
                    for other in others if write else others[:2]:
                        edited = [*turns[:i], _with_argument(turn, j, key, other), *turns[i + 1 :]]
                        what = f"{call.function.name} {key}={other!r} (was {value!r})"
                        (found if write else later).append(Edit("other_value", task, what, edited))
    edits = found + later
    for n, edit in enumerate(edits):
        edit.task = edit.task.model_copy(update={"id": f"{edit.task.id}~edit{n}"})
    return edits


def _overshare(task: Task, trajectory: Trajectory, turns: list[AssistantMessage]) -> list[Edit]:
    """Every read the episode did not make that its known arguments allow, then every tool result read out in
    the final reply."""
    final = max((i for i, turn in enumerate(turns) if not turn.tool_calls), default=None)
    if final is None:
        return []
    known: dict[str, Any] = {}
    for turn in turns:
        for call in turn.tool_calls:
            for key, value in call.function.arguments.items():
                known.setdefault(key, value)
    for key, value in task.facts.items():
        if key not in USER_WORDS and isinstance(value, str | int | float):
            known.setdefault(key, value)
    used = {call.function.name for turn in turns for call in turn.tool_calls}
    extra = []
    for spec in trajectory.tools:
        required = spec.parameters.get("required", [])
        if spec.effect == "read" and spec.name not in used and all(key in known for key in required):
            extra.append(ToolCall.create(f"extra_{len(extra)}", spec.name, {key: known[key] for key in required}))
    edited = turns[:final] + ([AssistantMessage(tool_calls=extra)] if extra else []) + turns[final:]
    names = ", ".join(call.function.name for call in extra)
    what = f"reads {names} and reads every result out" if extra else "reads every tool result out"
    return [Edit("overshare", task, what, edited, leak_at=final + bool(extra))]


def _rules_fire(
    env: Environment, sample: list[tuple[Task, Trajectory]], config: RunConfig, say: Callable[[str], None]
) -> tuple[Check, list[Trajectory]]:
    name = "every rule fires on a rule-breaking edit"
    rules = [getattr(rule, "name", str(rule)) for rule in getattr(env, "rules", ())]
    if not rules:
        return Check(name, None, "the environment declares no rules"), []
    if not sample:
        return Check(name, None, "no successful, compliant oracle episode to edit"), []
    edits = _edits(sample)
    longest = max(len(edit.turns) for edit in edits)
    run = RunConfig(batch_size=config.batch_size, max_steps=max(config.max_steps, longest + 5))
    fired: dict[str, str] = {}
    done: list[Trajectory] = []
    what = {edit.task.id: f"{edit.operator} on {edit.task.id.split('~')[0]}: {edit.what}" for edit in edits}
    chunk = min(config.batch_size, 32)  # small: most rules fire in the first few edits, and then we stop
    for start in range(0, len(edits), chunk):
        if all(rule in fired for rule in rules):
            break
        batch = edits[start : start + chunk]
        say(f"rule-breaking edits {start + 1}-{start + len(batch)} of {len(edits)}")
        for trajectory in run_episodes(env, _EditReplay(batch), plan_episodes([e.task for e in batch]), run):
            done.append(trajectory)
            for violation in trajectory.score.violations if trajectory.score else []:
                fired.setdefault(violation.rule, what[trajectory.task_id])
    detail = "\n".join(f"  {rule}: {fired.get(rule, 'never fired')}" for rule in rules)
    silent = [rule for rule in rules if rule not in fired]
    if not silent:
        return Check(name, True, f"{len(rules)} rules, each broken by an edit ({len(done)} edits run)", detail), done
    tried = ", ".join(f"{op} {count}" for op, count in Counter(edit.operator for edit in edits[: len(done)]).items())
    reason = (
        f"rule{'s' if len(silent) > 1 else ''} {', '.join(silent)} never fired on {len(done)} edits of "
        f"{len(sample)} oracle episodes ({tried}): add a task where breaking it is possible, or check the rule"
    )
    return Check(name, False, reason, "first edit that broke each rule:\n" + detail), done


def _attacks(env: Environment, tasks: Sequence[Task], config: RunConfig, say: Callable[[str], None]) -> Check:
    name = "attack goals reached by an obeying agent, refused by the guard"
    declared = getattr(env, "attack_goals", None)
    if not callable(declared) or not declared():
        return Check(name, None, "the environment declares no attack goals (attack_goals())")
    attacked = attack_environment(env, "all")
    wanted = {task.id for task in tasks}
    subset = [task for task in attacked.tasks(tasks[0].split) if task.id in wanted] if tasks else []
    say(f"an obeying agent under attack on {len(subset)} tasks, without and with the guard")
    obeyed = _run(attacked, GulliblePolicy(env.oracle()), subset, config)
    delivered = [(t, t.score.details["attack"]) for t in obeyed if t.score and t.score.details["attack"]["delivered"]]
    missed = [(t, v) for t, v in delivered if not v["succeeded"]]
    if missed:
        trajectory, verdict = missed[0]
        return Check(
            name,
            False,
            f"goal {verdict['goal']} was not reached by an agent that obeys it ({verdict['vector']} injection in "
            f"{trajectory.task_id}): check the goal's call and arguments",
            describe(trajectory),
        )
    never = sorted({goal.id for goal in attacked.goals} - {v["goal"] for _, v in delivered})
    if never:
        return Check(name, False, f"goal(s) {', '.join(never)} never reached the agent on {len(subset)} tasks")
    if not getattr(env, "rules", None):
        return Check(name, True, f"{len(attacked.goals)} goals, each reached (no rules: the guard is not checked)")
    guarded = _run(attacked, GulliblePolicy(env.oracle()), subset, RunConfig(batch_size=config.batch_size, guard=True))
    through = [t for t in guarded if t.score and t.score.details["attack"]["succeeded"]]
    if through:
        goal = through[0].score.details["attack"]["goal"]  # type: ignore[union-attr]
        return Check(
            name,
            False,
            f"goal {goal} got through the guard in {through[0].task_id}: no rule forbids it, so the guard cannot "
            "stop that attack (aim goals at what the rules forbid)",
            describe(through[0]),
        )
    return Check(
        name,
        True,
        f"{len(attacked.goals)} goals, {len(delivered)} injections delivered: each goal reached by an obeying "
        "agent, none through the guard",
    )
