"""Policies: what writes the assistant's next turn, for a whole batch of conversations at once.

A policy maps a batch of conversations (plus the tool schemas on offer) to a batch of ``Reply``
objects. Batch-first is deliberate: on a CPU one padded ``generate`` over 16 conversations is several
times faster than 16 calls. Backends, by spec string (``load_policy``):

- ``hf:<model>[@<adapter dir>]`` — transformers (+ peft), left-padded batched greedy generation.
- ``openai:<base_url>#<model>`` — any OpenAI-compatible server (vLLM, OpenAI, ``agentft serve``).
- ``ScriptedPolicy`` — scripted replies for tests (built in code, not from a spec).
"""

from __future__ import annotations

from agentft.policies.base import Policy, Reply, load_policy
from agentft.policies.scripted import ScriptedPolicy

__all__ = ["Policy", "Reply", "ScriptedPolicy", "load_policy", "HFPolicy", "OpenAIPolicy"]


def __getattr__(name: str):
    # The backends import heavy stacks (torch, openai) lazily.
    if name == "HFPolicy":
        from agentft.policies.hf import HFPolicy

        return HFPolicy
    if name == "OpenAIPolicy":
        from agentft.policies.openai_api import OpenAIPolicy

        return OpenAIPolicy
    raise AttributeError(name)
