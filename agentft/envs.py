"""The environment protocol and registry.

An environment is what an agent is scored in: tasks split into train/test, and for each episode a fresh
state, tools over it, a system prompt (the policy the agent is given), a deterministic user simulator,
and a scorer. The runner only needs the two protocols below, so a user's own environment is any object
that has these methods, loaded by import path (``my_pkg.envs:load_environment``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from agentft.errors import UserError
from agentft.messages import Message
from agentft.policies.base import Policy, load_policy
from agentft.policies.scripted import NoopPolicy
from agentft.tools import Observation, ToolSpec
from agentft.trajectory import Score, Trajectory

__all__ = ["Task", "SolutionTurn", "SolutionCall", "Episode", "Environment", "load_environment", "resolve_policy"]


class SolutionCall(BaseModel):
    """One tool call of the expert's solution."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    match: Literal["exact", "name", "result"] = Field(
        "exact",
        description="how scoring counts the agent's read as done: the same arguments, the same tool (a free-text "
        "query), or a call with the same result (a date of birth in other words)",
    )


class SolutionTurn(BaseModel):
    """One assistant turn of the expert's solution: what it says, the calls it makes, or both."""

    say: str | None = None
    calls: list[SolutionCall] = Field(default_factory=list)


class Task(BaseModel):
    """One thing a simulated user wants done."""

    id: str
    split: str
    kind: str = "default"
    instruction: str = Field("", description="the user's goal in words (for people and model-backed users)")
    facts: dict[str, Any] = Field(default_factory=dict, description="what the simulated user knows")
    slices: dict[str, str] = Field(default_factory=dict, description="attributes to break results down by")
    solution: list[SolutionTurn] = Field(
        default_factory=list,
        description="the expert's assistant turns in order (dicts {'say': text} or {'calls': [{'name': ..., "
        "'arguments': {...}}]} are read as such); the oracle replays them and scoring replays their writes",
    )
    must_say: list[str] = Field(default_factory=list, description="facts the final reply must contain")


@runtime_checkable
class Episode(Protocol):
    """One live episode: its own copy of the state, its tools and its user."""

    system_prompt: str
    tools: list[ToolSpec]
    """The tools offered to the model (OpenAI-shaped dicts are read as specs too)."""

    def call_tool(self, name: str, arguments: dict[str, Any]) -> Observation:
        """Execute one tool call against this episode's state; never raises."""
        ...

    def user_turn(self, messages: Sequence[Message]) -> str | None:
        """The simulated user's next message (the opening one when only the system prompt is there); None ends
        the episode."""
        ...

    def score(self, trajectory: Trajectory) -> Score:
        """Task success and per-rule compliance of the finished episode."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Environment(Protocol):
    name: str

    def tasks(self, split: str) -> list[Task]: ...

    def start(self, task: Task, *, seed: int = 0) -> Episode: ...

    def oracle(self) -> Policy:
        """The expert policy that solves every task within policy."""
        ...


def load_environment(spec: str, **kwargs: Any) -> Environment:
    """A built-in environment by name (``claims``) or a user's by import path (``pkg.module:factory``).

    Built-in names are the folders of the repository's ``eval_envs/``, installed as ``agentft.builtin_envs``.
    ``attacks`` (``all`` or vector names, comma-separated) gives the environment under prompt injection, one
    per task (``agentft.attacks``); it works on any environment that declares ``attack_goals()``.
    """
    attacks = kwargs.pop("attacks", None)
    forms = "a built-in name from eval_envs/ (claims) or an import path like my_pkg.envs:load_environment"
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
    elif spec.isidentifier():
        module_name, attribute = f"agentft.builtin_envs.{spec}", "load_environment"
    else:
        folder = Path(spec)
        hint = (
            f"; a folder is loaded as {folder.resolve().name}:load_environment with {folder.resolve().parent} "
            "on PYTHONPATH"
            if folder.is_dir()
            else ""
        )
        raise UserError(f"--env {spec!r} is neither a built-in name nor an import path; pass {forms}{hint}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        if ":" not in spec and missing == module_name:
            raise UserError(f"no built-in environment {spec!r}; pass {forms}") from None
        if missing and (module_name == missing or module_name.startswith(f"{missing}.")):
            raise UserError(
                f"cannot import {module_name!r} for --env {spec}: no module named {missing!r} "
                "(is its folder on PYTHONPATH, or the package installed?)"
            ) from None
        raise UserError(f"importing {module_name!r} for --env {spec} failed: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, attribute, None)
    if factory is None:
        raise UserError(f"{module_name} has no {attribute!r}")
    if callable(factory):
        try:
            signature = inspect.signature(factory)
        except (TypeError, ValueError):  # a builtin without one: let the call say what is wrong
            signature = None
        if signature is not None:
            try:
                signature.bind(**kwargs)
            except TypeError as exc:
                accepted = [name for name, p in signature.parameters.items() if p.kind is not p.VAR_POSITIONAL]
                raise UserError(
                    f"{spec} does not take these --env-arg values ({exc}); it takes: {', '.join(accepted) or 'none'}"
                ) from None
    env = factory(**kwargs) if callable(factory) else factory
    if not isinstance(env, Environment):
        raise UserError(f"{spec} did not give an environment (needs name, tasks(), start(), oracle())")
    if attacks:
        from agentft.attacks import attack_environment

        return attack_environment(env, attacks)
    return env


def resolve_policy(spec: str, env: Environment | None = None, **options: Any) -> Policy:
    """``oracle`` (the environment's expert), ``noop`` (never calls a tool), a backend spec (``hf:...``,
    ``openai:...``), or a policy of your own by import path (``pkg.module:factory``, called with the environment:
    a scripted agent, a rule-based baseline)."""
    if spec == "oracle":
        if env is None:
            raise UserError("the oracle policy belongs to an environment: pass --env")
        return env.oracle()
    if spec == "noop":
        return NoopPolicy()
    kind, _, rest = spec.partition(":")
    if rest and kind not in ("hf", "openai") and "/" not in kind:
        module_name, _, attribute = spec.partition(":")
        factory = getattr(importlib.import_module(module_name), attribute, None)
        if not callable(factory):
            raise UserError(f"{module_name} has no policy factory {attribute!r}")
        policy = factory(env)
        if not isinstance(policy, Policy):
            raise UserError(f"{spec} did not give a policy (needs name and act())")
        return policy
    if ":" not in spec:
        raise UserError(
            f"unknown policy {spec!r}: use oracle, noop, hf:MODEL[@ADAPTER_DIR], openai:BASE_URL#MODEL or a factory "
            "of your own as pkg.module:factory"
        )
    return load_policy(spec, **options)
