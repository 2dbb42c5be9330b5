"""``agentft serve``: an OpenAI-compatible server with dynamic batching, LoRA adapters, agent runs and a guard.

- ``POST /v1/chat/completions`` (tools, tool_choice, streaming), ``GET /v1/models``;
- ``POST /v1/agent/runs``: the agent loop server-side in a fresh episode of an environment, with the
  optional runtime guard that blocks rule-breaking writes;
- ``GET /healthz``, ``GET /metrics`` (Prometheus text).

``create_app(ServeConfig(...))`` builds the ASGI app; ``Engine(ScriptedBackend(...))`` replaces the model in tests.
Importing this package loads FastAPI (not torch: the model loads in ``HFBackend``).
"""

from agentft.serve.app import create_app
from agentft.serve.backends import HFBackend, ScriptedBackend
from agentft.serve.config import ServeConfig, api_keys_from_env, is_loopback
from agentft.serve.engine import Engine, GenOutput, GenRequest

__all__ = [
    "Engine",
    "GenOutput",
    "GenRequest",
    "HFBackend",
    "ScriptedBackend",
    "ServeConfig",
    "api_keys_from_env",
    "create_app",
    "is_loopback",
]
