"""The two error families of agentft.

``UserError`` is the developer's mistake (a bad config, a bad tool definition, a missing model): it is
raised at once, and its message says what to do. The model's and the tools' mistakes (bad JSON, an
unknown tool, invalid arguments, a tool that raises or hangs) are never exceptions: they become
observations the model sees and counters the report shows. ``FormatError`` describes one of those.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

__all__ = ["UserError", "ToolError", "FormatError", "FormatErrorKind", "error_text"]


def error_text(kind: str, detail: str) -> str:
    """What the model reads for any failed call or unreadable turn: ``Error (KIND): DETAIL``.

    The only place this text is built; the kind also travels as data (``Observation.error``,
    ``Event.error``), so nothing reads it back from the text.
    """
    return f"Error ({kind}): {detail}"


class UserError(Exception):
    """A mistake by the developer using agentft; the message says how to fix it."""


class ToolError(Exception):
    """Raised by a tool to tell the model why a call failed ("claim CLM-9 not found").

    The message is shown to the model verbatim as the tool's result; the call is counted as a tool error.
    """


FormatErrorKind = Literal["bad_json", "missing_name", "bad_arguments", "unknown_tool", "unclosed_tag"]


class FormatError(BaseModel):
    """A problem in the model's output, reported back to the model as an observation."""

    kind: FormatErrorKind
    detail: str
    raw: str = ""

    def observation(self) -> str:
        """The text the model is shown so that it can correct itself."""
        return error_text(self.kind, self.detail)
