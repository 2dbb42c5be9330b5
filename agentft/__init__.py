"""agentft: turn a general chat model into a reliable, policy-compliant tool-using assistant.

``import agentft`` stays light: torch, transformers, trl, chromadb and fastapi load only inside the
functions that need them.
"""

from agentft.chat_format import CHAT_TEMPLATE, ParsedReply, parse_reply, render
from agentft.collect import CollectConfig, collect
from agentft.envs import Environment, Episode, Task, load_environment
from agentft.errors import FormatError, ToolError, UserError
from agentft.evaluate import evaluate, pass_hat_k, summarize_run
from agentft.guard import Guard
from agentft.kernel import Rollout, close_rollout, open_rollout, step
from agentft.messages import (
    AssistantMessage,
    FunctionCall,
    Message,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
    parse_messages,
    to_hf,
    to_openai,
)
from agentft.models import EMBEDDED_MODELS, load_model, pull
from agentft.policies import Policy, Reply, ScriptedPolicy, load_policy
from agentft.runner import RunConfig, run_episodes
from agentft.stats import PairedComparison, compare_paired, wilson_interval
from agentft.summary import RunSummary
from agentft.tools import Observation, Tool, Toolkit, Toolset, ToolSpec, tool
from agentft.trajectory import Trajectory, read_trajectories

__version__ = "0.1.0"

__all__ = [
    "AssistantMessage",
    "CHAT_TEMPLATE",
    "CollectConfig",
    "EMBEDDED_MODELS",
    "Environment",
    "Episode",
    "FormatError",
    "FunctionCall",
    "Guard",
    "Message",
    "Observation",
    "PairedComparison",
    "ParsedReply",
    "Policy",
    "Reply",
    "Rollout",
    "RunConfig",
    "RunSummary",
    "ScriptedPolicy",
    "SystemMessage",
    "Task",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolMessage",
    "ToolSpec",
    "Toolkit",
    "Toolset",
    "Trajectory",
    "UserError",
    "UserMessage",
    "close_rollout",
    "collect",
    "compare_paired",
    "evaluate",
    "load_environment",
    "load_model",
    "load_policy",
    "open_rollout",
    "parse_messages",
    "parse_reply",
    "pass_hat_k",
    "pull",
    "read_trajectories",
    "render",
    "run_episodes",
    "step",
    "summarize_run",
    "to_hf",
    "to_openai",
    "tool",
    "wilson_interval",
]
