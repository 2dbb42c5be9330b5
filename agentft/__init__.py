"""agentft: turn a general chat model into a reliable, policy-compliant tool-using assistant.

``import agentft`` stays light: torch, transformers, trl, chromadb and fastapi load only inside the
functions that need them.
"""

from agentft.chat_format import CHAT_TEMPLATE, ParsedReply, parse_reply, render
from agentft.errors import FormatError, UserError
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

__version__ = "0.1.0"

__all__ = [
    "AssistantMessage",
    "CHAT_TEMPLATE",
    "EMBEDDED_MODELS",
    "FormatError",
    "FunctionCall",
    "Message",
    "ParsedReply",
    "Policy",
    "Reply",
    "ScriptedPolicy",
    "SystemMessage",
    "ToolCall",
    "ToolMessage",
    "UserError",
    "UserMessage",
    "load_model",
    "load_policy",
    "parse_messages",
    "parse_reply",
    "pull",
    "render",
    "to_hf",
    "to_openai",
]
