"""Everything you need to write an environment of your own, in one place.

An environment is what an agent is scored in: a seed database and tools over it, a policy text the agent is
given, rules the tools deliberately do not enforce, tasks in disjoint splits (each with the expert's
solution and the facts its final reply must contain), a scripted user, and an oracle. Subclass
``DatabaseEnvironment`` and supply four things (``build_database``, ``make_toolkit``, ``generate_tasks``, the
class attributes); the seed cache, sandbox, scripted user, oracle and scoring come with it. The built-in
``claims`` and ``helpdesk`` environments use only these names. The README's "Your own environment" section
walks through one; ``agentft env new NAME`` scaffolds one and ``agentft env check`` checks it.

- Tools: ``tool``, ``Toolkit`` (methods decorated ``@tool(effect="read"|"write")``), ``ToolError`` for a
  failure the model should read.
- Tasks: ``Task`` with ``solution`` (``SolutionTurn``: ``say`` and/or ``calls`` of ``SolutionCall`` with
  ``match`` "exact" | "name" | "result") and ``must_say``; facts the scripted user speaks from: ``opening``,
  ``identity_reply``, ``consent_reply``, ``answers`` (keyword -> reply).
- The scripted user: ``UserSettings`` (what counts as an identity request or a confirmation question),
  ``consents`` (consent judged by meaning), ``load_phrasings`` (split-disjoint phrasing pools), ``SPLITS``.
- Rules: ``Rule(name, description, check)`` where ``check(audit) -> list[Violation]``; ``Audit`` (the calls
  that ran, each a ``Call`` with ``event`` (name, arguments, effect, step, ok), parsed ``result`` and
  ``message_index``; ``state``, the episode's database as it is now, and ``initial``, as it started;
  ``confirmed_between``; ``assistant_texts``); reusable pieces: ``CONFIRM_BEFORE_WRITE``, ``IdentityCheck``,
  ``verify_first``, ``own_records_only``.
- Scoring settings (class attributes of ``DatabaseEnvironment``): ``tables`` (compared with the gold replay),
  ``ignored_columns``, ``free_text_columns`` (checked for presence, not equality).
- Knowledge: ``KeywordIndex`` and ``split_markdown`` for a handbook search tool without embeddings; name the
  tools that return documents in ``knowledge_tools``.
- Prompt injection: ``attack_goals()`` returns ``AttackGoal``s (a rule-breaking write with its
  ``match_arguments``, or a secret that must not leak), aimed at records no task names (``mentioned``);
  ``--env-arg attacks=all`` then runs every task under an injection (``agentft.attacks``), and ``agentft env
  check`` checks that an obeying agent reaches each goal and the guard refuses it.
"""

from __future__ import annotations

from agentft.attacks import AttackGoal
from agentft.augment import date_to_words, number_to_words
from agentft.envs import SolutionCall, SolutionTurn, Task
from agentft.errors import ToolError
from agentft.knowledge import KeywordIndex, split_markdown
from agentft.sandbox import SandboxLimits
from agentft.sqlite_env import (
    ASK_IDENTITY,
    CONFIRM_BEFORE_WRITE,
    CONFIRMED,
    DECLINE_IDENTITY,
    SPLITS,
    Audit,
    Call,
    DatabaseEnvironment,
    IdentityCheck,
    Rule,
    UserSettings,
    asks_to_confirm,
    consents,
    load_phrasings,
    own_records_only,
    scored_rows,
    state_diff,
    state_hash,
    verify_first,
)
from agentft.tools import Tool, Toolkit, ToolSpec, tool
from agentft.trajectory import Violation

__all__ = [
    "ASK_IDENTITY",
    "AttackGoal",
    "Audit",
    "CONFIRMED",
    "CONFIRM_BEFORE_WRITE",
    "Call",
    "DECLINE_IDENTITY",
    "DatabaseEnvironment",
    "IdentityCheck",
    "KeywordIndex",
    "Rule",
    "SPLITS",
    "SandboxLimits",
    "SolutionCall",
    "SolutionTurn",
    "Task",
    "Tool",
    "ToolError",
    "ToolSpec",
    "Toolkit",
    "UserSettings",
    "Violation",
    "asks_to_confirm",
    "consents",
    "date_to_words",
    "load_phrasings",
    "number_to_words",
    "own_records_only",
    "scored_rows",
    "split_markdown",
    "state_diff",
    "state_hash",
    "tool",
    "verify_first",
]
