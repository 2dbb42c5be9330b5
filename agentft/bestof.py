"""Best-of-N: sample N candidate turns, keep the one a scorer ranks highest.

Two scorers, both judging a candidate in its episode as it stands (``agentft.kernel.Rollout``):

- ``rules``: the environment's rules applied to the calls a candidate proposes, on the episode's current state
  (the guard's check, ``agentft.guard``), plus calls to tools the episode does not offer. A candidate loses a
  point for each; the earliest of the best wins ties. It needs no model and no training data, only rules.
- ``rm:DIR``: a reward model (``agentft train rm``) scores the conversation ending in each candidate.

Either way a candidate that could not be read (a format error) ranks below every readable one, and ties go to
the earliest. The first candidate is the policy's own turn (greedy by default), the others are sampled
(``best_of_temperature``, each with its own seed): so the scorer changes a turn only where a sample is better
than what the model would have done anyway. The runner (``RunConfig.best_of``, ``agentft eval --best-of``) and
``agentft serve --best-of`` submit the candidates as separate requests and step the episode with the chosen one
(``choose``); the turn's usage is what all candidates cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from agentft.errors import UserError
from agentft.guard import Guard
from agentft.kernel import Rollout, snapshot
from agentft.messages import to_hf
from agentft.policies.base import Reply
from agentft.tools import openai_tools
from agentft.trajectory import Event

__all__ = ["Scorer", "RulesScorer", "RewardModelScorer", "load_scorer", "choose"]


class Scorer(Protocol):
    """Ranks candidate turns of one episode: one number per candidate, higher is better."""

    name: str

    def scores(self, rollout: Rollout, candidates: Sequence[Reply]) -> list[float]: ...

    def close(self) -> None: ...


class RulesScorer:
    """Minus the rules each candidate's calls would break, and its calls to tools the episode lacks."""

    name = "rules"

    def __init__(self, env: Any) -> None:
        if not Guard.supports(env):
            raise UserError(
                f"--scorer rules judges calls by the environment's rules; {getattr(env, 'name', env)!r} has none "
                "(use --scorer rm:DIR)"
            )
        self.guard = Guard(env)

    def scores(self, rollout: Rollout, candidates: Sequence[Reply]) -> list[float]:
        offered = {spec.name: spec.effect for spec in rollout.tools}
        if rollout.extra is not None:
            offered.update({spec.name: spec.effect for spec in rollout.extra.specs()})
        state = snapshot(rollout.episode)
        found = []
        for reply in candidates:
            messages, events, broken = [*rollout.messages, reply.message], list(rollout.events), 0
            for call in reply.message.tool_calls:
                name = call.function.name
                if name not in offered:
                    broken += 1
                    continue
                pending = Event(step=0, name=name, arguments=dict(call.function.arguments), effect=offered[name])
                broken += len(self.guard.check(messages, events, rollout.task, pending, state))
                events.append(pending.model_copy(update={"ok": True}))
            found.append(-float(broken))
        return found

    def close(self) -> None:
        self.guard.close()


class RewardModelScorer:
    """A reward model's score of the conversation ending in each candidate."""

    def __init__(self, path: str, *, device: str = "cpu") -> None:
        from agentft.train.rm import RewardModel

        self.name = f"rm:{path}"
        self.model = RewardModel.load(path, device=device)

    def scores(self, rollout: Rollout, candidates: Sequence[Reply]) -> list[float]:
        conversations = [to_hf([*rollout.messages, reply.message]) for reply in candidates]
        return self.model.score(conversations, openai_tools(rollout.tools))

    def close(self) -> None:
        pass


def load_scorer(spec: str, env: Any = None, *, device: str = "cpu") -> Scorer:
    """``rules`` (needs the environment) or ``rm:DIR``."""
    if spec == "rules":
        if env is None:
            raise UserError("--scorer rules needs an environment (serve: --env NAME)")
        return RulesScorer(env)
    if spec.startswith("rm:") and spec[3:]:
        return RewardModelScorer(spec[3:], device=device)
    raise UserError(f"unknown scorer {spec!r}: use rules or rm:DIR (a reward model from agentft train rm)")


def choose(rollout: Rollout, candidates: Sequence[Reply], scorer: Scorer | None) -> tuple[Reply, int]:
    """The best candidate, with the turn's total cost on it, and its index (a lone candidate needs no scorer)."""
    if len(candidates) == 1:
        return candidates[0], 0
    if scorer is None:
        raise UserError("choosing among several candidate turns needs a scorer")
    scores = scorer.scores(rollout, candidates)
    # readable before unreadable, then the score, then the earliest
    best = max(range(len(candidates)), key=lambda i: (not candidates[i].errors, scores[i], -i))
    chosen = candidates[best]
    total = chosen.model_copy(
        update={
            "prompt_tokens": sum(c.prompt_tokens for c in candidates),
            "completion_tokens": sum(c.completion_tokens for c in candidates),
            "latency_s": max((c.latency_s or 0.0) for c in candidates),
        }
    )
    return total, best
