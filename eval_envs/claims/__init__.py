"""``claims``: an insurance claims desk, scored for task success and per-rule policy compliance.

State: customers, policies and claims in SQLite. Tools: ``tools/claims.py``. Policy given to the agent:
``policy.md``. Rules: ``rules.py``. Tasks: nine kinds (status, approve, deny, escalate, file, update
contact, handbook question, another customer's claim, failed verification), 360 train, 90 validation and
108 test by default, on disjoint customers with disjoint phrasing pools (``phrasings.json``), plus
``own_words``: 90 requests written by hand in people's own words (``own_words.json``).
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from agentft.authoring import DatabaseEnvironment, KeywordIndex, SandboxLimits, Task
from agentft.builtin_envs.claims import data, rules, tasks
from agentft.builtin_tools.claims import ClaimsDesk

__all__ = ["ClaimsEnvironment", "load_environment"]

HERE = Path(__file__).resolve().parent


class ClaimsEnvironment(DatabaseEnvironment):
    name = "claims"
    version = 2
    tables = ("customers", "policies", "claims")
    system_prompt = (HERE / "policy.md").read_text(encoding="utf-8").strip()
    rules = rules.RULES
    seed_sources = ("agentft.builtin_tools.claims",)  # the seed data uses its coverage table and limits

    def __init__(
        self,
        seed: int = 0,
        *,
        n_train_per_kind: int = 40,
        n_validation_per_kind: int = 10,
        n_test_per_kind: int = 12,
        sandbox: bool = True,
        limits: SandboxLimits | None = None,
    ) -> None:
        super().__init__(seed, sandbox=sandbox, limits=limits)
        self.n_train_per_kind = n_train_per_kind
        self.n_validation_per_kind = n_validation_per_kind
        self.n_test_per_kind = n_test_per_kind
        self._handbook: KeywordIndex | None = None

    def init_kwargs(self) -> dict:
        return {
            "seed": self.seed,
            "n_train_per_kind": self.n_train_per_kind,
            "n_validation_per_kind": self.n_validation_per_kind,
            "n_test_per_kind": self.n_test_per_kind,
        }

    def build_database(self, conn: sqlite3.Connection, rng: random.Random) -> None:
        data.build(conn, rng, n_customers=720)

    def make_toolkit(self, conn: sqlite3.Connection) -> ClaimsDesk:
        if self._handbook is None:
            self._handbook = KeywordIndex.from_markdown(HERE / "handbook.md", doc="handbook")
        return ClaimsDesk(conn, handbook=self._handbook)

    def generate_tasks(self, conn: sqlite3.Connection, rng: random.Random) -> dict[str, list[Task]]:
        return tasks.generate(
            conn,
            rng,
            {"train": self.n_train_per_kind, "validation": self.n_validation_per_kind, "test": self.n_test_per_kind},
        )


def load_environment(**kwargs) -> ClaimsEnvironment:
    return ClaimsEnvironment(**kwargs)
