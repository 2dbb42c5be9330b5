"""The guard: an environment's rules, checked before a tool call runs (reads and writes alike).

``Guard.check(...)`` builds a provisional trajectory, the conversation so far plus the proposed call as an
``Event`` (its assistant message is already in the conversation), runs every rule's ``check(Audit(...))``
with the seed database as the initial state (a private read-only copy), and returns the violations the
proposed call adds: those present with it and absent without it, so that an earlier, already-recorded
violation never blocks a later call. A rule whose check raises blocks the call (fail closed).

The episode kernel (``agentft.kernel``) calls it as tool middleware when a run has the guard on
(``--guard`` in ``collect``, ``eval`` and ``serve``): a blocked call is not executed, the model reads
``Error (policy_violation): RULE: DESCRIPTION`` as its result, and the trajectory records an ``Event`` with
``error="policy_violation"`` plus ``metadata["guard_blocks"]``. A blocked call never ran, so the rules and
the scorer skip it. The same rules judge compliance of served traffic (``Guard.violations``).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentft.envs import Task
from agentft.errors import UserError
from agentft.messages import Message
from agentft.tools import Observation
from agentft.trajectory import Event, Trajectory, Violation

__all__ = ["Guard", "Block"]

_FAILED = "rule check failed: "


@dataclass(frozen=True)
class Block:
    """One rule a proposed call would break."""

    rule: str
    description: str
    detail: str


class Guard:
    """The rules of a SQLite-backed environment (``env.rules``, ``env.seed_path()``)."""

    def __init__(self, env: Any) -> None:
        if not self.supports(env):
            raise UserError(
                f"the guard checks an environment's rules against its seed database; "
                f"{getattr(env, 'name', env)!r} has no rules or no seed_path()"
            )
        self.env_name = env.name
        self.rules = list(env.rules)
        self.descriptions = {rule.name: rule.description for rule in self.rules}
        self.user = getattr(env, "user", None)  # the words that count as asking to confirm
        self._dir = Path(tempfile.mkdtemp(prefix="agentft-guard-"))
        self.initial_path = self._dir / "initial.sqlite"
        shutil.copyfile(env.seed_path(), self.initial_path)
        os.chmod(self.initial_path, stat.S_IRUSR | stat.S_IRGRP)

    @staticmethod
    def supports(env: Any) -> bool:
        return bool(getattr(env, "rules", None)) and callable(getattr(env, "seed_path", None))

    def violations(
        self, messages: Sequence[Message], events: Sequence[Event], task: Task, state: bytes | None = None
    ) -> list[Violation]:
        """Every rule's violations over a conversation and its calls; ``state`` is the episode's database as it
        is now (``episode.snapshot()``), where rules look records up (the seed's copy when None)."""
        from agentft.sqlite_env import Audit

        trajectory = Trajectory(
            id="guard", env=self.env_name, task_id=task.id, policy="guard", messages=list(messages), events=list(events)
        )
        conn = sqlite3.connect(f"file:{self.initial_path}?mode=ro", uri=True)
        current = None
        if state is not None:
            current = sqlite3.connect(":memory:")
            current.deserialize(state)
        try:
            audit = Audit(trajectory, task, conn, self.user, state=current)
            found: list[Violation] = []
            for rule in self.rules:
                try:
                    found.extend(rule.check(audit))
                except Exception as exc:  # fail closed
                    found.append(Violation(rule=rule.name, step=None, detail=f"{_FAILED}{type(exc).__name__}: {exc}"))
            return found
        finally:
            conn.close()
            if current is not None:
                current.close()

    def check(
        self,
        messages: Sequence[Message],
        events: Sequence[Event],
        task: Task,
        pending: Event,
        state: bytes | None = None,
    ) -> list[Block]:
        """The rule violations the pending call would add (empty: let it run), judged on ``state``."""
        before = Counter(_key(v) for v in self.violations(messages, events, task, state))
        blocks = []
        for violation in self.violations(messages, [*events, pending], task, state):
            key = _key(violation)
            if before[key] > 0 and not violation.detail.startswith(_FAILED):
                before[key] -= 1
                continue
            blocks.append(Block(violation.rule, self.descriptions.get(violation.rule, ""), violation.detail))
        return blocks

    @staticmethod
    def observation(blocks: Sequence[Block], effect: Any = None) -> Observation:
        """What the model reads instead of the blocked call's result."""
        detail = "; ".join(dict.fromkeys(f"{b.rule}: {b.description}" for b in blocks))
        return Observation.failure("policy_violation", detail, effect)

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


def _key(violation: Violation) -> tuple[str, int | None, str]:
    return violation.rule, violation.step, violation.detail
