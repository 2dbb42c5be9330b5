"""Verbatim arguments: values a tool says are copied from the conversation, kept so while a local model decodes.

A small model reads ``jane.doe42@example.com`` in the user's message and writes ``jane.dou42@example.com`` in its
tool call: the commonest single failure of the tuned SmolLM2 on requests in people's own words. A tool declares
which of its string parameters are copied, never composed (``@tool(verbatim=["email", "claim_id"])``: ids, emails,
phone numbers), and the engine then allows only the tokens that keep the value a piece of the text the conversation
holds (the system prompt, the user's turns, the tool results), or close it. Among those the model still picks what
it prefers; it can no longer write a value nobody said.

A value is whole words of its source: it begins where a word does (after a space, a bracket or quote, or one of
``:=,;/#``) and closes only where one ends (before a space, a bracket, quote, comma or semicolon, or sentence
punctuation that ends the text or meets a space), never on sentence punctuation: ``lena.abebe570@example.com`` can
be copied whole, never as ``abebe570@example.com`` or ``lena``. Sources are cut where JSON would escape a character
(quotes, backslashes, line breaks), so a value never holds one. Where the call is not one the constraint can
follow (the tool's name written after its arguments, a value already off every source, a next character no single
token spells), the model is left free. Declare only what the data copies: a parameter the demonstrations reformat
(a date written out by the user, ISO in the call) would be cut short; ``agentft check`` fails an environment whose
oracle does that. Decoding only: it needs the engine (``HFPolicy``), and it masks what the model may choose, so it
is off where log-probabilities must be the model's own (RL rollouts).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = ["TokenTexts", "VerbatimArguments", "open_argument", "unheard_arguments", "verbatim_fields"]

_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]+')
_CLOSING = frozenset(",} \n\t</")
"""What may follow the closing quote inside one token (``"``, ``",``, ``"}}``, ``"}}</``...)."""
_OPENERS = "([{<'\""
"""A value begins after these, never on them."""
_BEFORE = _OPENERS + ":=,;/#"
"""What a value may begin after (besides a space)."""
_HARD_ENDS = ",;)]}>'\""
"""What a value may close before, whatever follows."""
_SOFT_ENDS = ".:!?"
"""Sentence punctuation: a value may close before it where it ends the text or meets a space, and never ends on it."""


class TokenTexts:
    """The text each token of a vocabulary writes (decoded after an anchor token, so a leading space stays)."""

    def __init__(self, tokenizer: Any) -> None:
        anchor = tokenizer("a", add_special_tokens=False)["input_ids"]
        prefix = tokenizer.decode(anchor)
        special = set(getattr(tokenizer, "all_special_ids", ())) | set(getattr(tokenizer, "added_tokens_decoder", {}))
        decoded = tokenizer.batch_decode([[*anchor, token] for token in range(len(tokenizer))])
        self.by_text: dict[str, list[int]] = {}
        self.closers: list[int] = []
        for token, text in enumerate(decoded):
            if token in special or not text.startswith(prefix) or len(text) == len(prefix) or "\ufffd" in text:
                continue
            text = text[len(prefix) :]
            self.by_text.setdefault(text, []).append(token)
            if text[0] == '"' and set(text[1:]) <= _CLOSING:
                self.closers.append(token)
        self.longest = max(map(len, self.by_text), default=1)
        self._starts: dict[str, frozenset[int]] = {}

    def spelling(self, text: str) -> set[int]:
        """The tokens whose text is a beginning of ``text``."""
        return {
            token for end in range(1, min(len(text), self.longest) + 1) for token in self.by_text.get(text[:end], ())
        }

    def starts(self, piece: str) -> frozenset[int]:
        """The tokens a value copied from ``piece`` can begin with (where a word begins); kept per piece, since a
        conversation's pieces (the system prompt, earlier turns) come back at every turn."""
        found = self._starts.get(piece)
        if found is None:
            found = frozenset().union(*(self.spelling(piece[at:]) for at in range(len(piece)) if _begins(piece, at)))
            if len(self._starts) >= 512:  # a few MB at most in a long-running server
                self._starts.pop(next(iter(self._starts)))
            self._starts[piece] = found
        return found


def verbatim_fields(tools: Iterable[Any] | None) -> dict[str, frozenset[str]]:
    """Tool name -> the parameters it declares verbatim, for the tools that declare any."""
    from agentft.tools import ToolSpec

    specs = (ToolSpec.model_validate(spec) for spec in tools or ())
    return {spec.name: frozenset(spec.verbatim) for spec in specs if spec.verbatim}


def open_argument(text: str) -> tuple[str | None, str, str] | None:
    """``(tool name, argument, value so far)`` when ``text`` ends inside the string value of an argument of its
    last, unclosed ``<tool_call>`` (the value as written, JSON escapes and all); None anywhere else. The tool name
    is None when the call has not written it yet."""
    start = text.rfind("<tool_call>")
    if start < 0 or "</tool_call>" in text[start:]:
        return None
    frames: list[list[Any]] = []  # [bracket, current key, expecting a key]
    name: str | None = None
    in_string = escaped = is_key = False
    value: list[str] = []
    for char in text[start + len("<tool_call>") :]:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string, written = False, "".join(value)
                if is_key:
                    frames[-1][1] = written
                elif len(frames) == 1 and frames[0][1] == "name":
                    name = written
                continue
            value.append(char)
        elif char == '"':
            in_string, value = True, []
            is_key = bool(frames) and frames[-1][0] == "{" and frames[-1][2]
        elif char in "{[":
            frames.append([char, None, char == "{"])
        elif char in "}]":
            if frames:
                frames.pop()
        elif char == ":" and frames and frames[-1][0] == "{":
            frames[-1][2] = False
        elif char == "," and frames and frames[-1][0] == "{":
            frames[-1][1], frames[-1][2] = None, True
    inside = (
        in_string
        and not is_key
        and not escaped
        and len(frames) == 2
        and frames[0][1] in ("arguments", "parameters")
        and frames[1][0] == "{"
        and frames[1][1] is not None
    )
    return (name, frames[1][1], "".join(value)) if inside else None


class VerbatimArguments:
    """An engine request's ``allowed``: inside a verbatim argument's value, the tokens that keep it a piece of
    ``sources`` (or close it); None (any token) everywhere else."""

    def __init__(
        self,
        texts: TokenTexts,
        decode: Callable[[list[int]], str],
        fields: Mapping[str, frozenset[str]],
        sources: Sequence[str],
    ) -> None:
        self.texts = texts
        self.decode = decode
        self.fields = fields
        self.sources = [piece for source in sources for piece in _NEEDS_ESCAPE.split(source) if piece]
        """The sources cut where JSON would escape a character (quotes, backslashes, line breaks): a value is
        copied from one piece, so it is written in JSON exactly as it reads."""
        self._seen: dict[str, list[int]] = {}

    @classmethod
    def for_conversation(
        cls, texts: TokenTexts, decode: Callable[[list[int]], str], messages: Sequence[Mapping[str, Any]], tools: Any
    ) -> VerbatimArguments | None:
        """The constraint for the next assistant turn of ``messages`` (dicts with ``role`` and ``content``), or
        None when no tool offered declares a verbatim parameter."""
        fields = verbatim_fields(tools)
        if not fields:
            return None
        sources = [m.get("content") for m in messages if m.get("role") != "assistant"]
        return cls(texts, decode, fields, [s for s in sources if isinstance(s, str)])

    def __call__(self, generated: list[int]) -> list[int] | None:
        text = self.decode(generated)
        if "<tool_call>" not in text:
            return None
        found = open_argument(text)
        if found is None or found[1] not in self.fields.get(found[0] or "", ()):
            return None
        return self.continuations(found[2])

    def continuations(self, value: str) -> list[int] | None:
        """The tokens that extend ``value`` along a source, and those that close it where a word of the source
        ends; None when ``value`` begins no word of a source (it was written some other way: the model is left
        free), or when no single token spells how a source goes on (a character split across byte tokens)."""
        found = self._seen.get(value)
        if found is not None:
            return found
        if not value:
            allowed = set().union(*(self.texts.starts(source) for source in self.sources))
        else:
            places = [(source, at + len(value)) for source in self.sources for at in _places(source, value)]
            if not places:
                return None
            allowed = set().union(*(self.texts.spelling(source[end:]) for source, end in places))
            if any(_ends(source, end) for source, end in places):
                allowed.update(self.texts.closers)
        if not allowed:  # no source, or it goes on in a character split across byte tokens
            return None
        self._seen[value] = found = sorted(allowed)
        return found


def _begins(text: str, at: int) -> bool:
    """Whether a word begins at ``at``."""
    char = text[at]
    after = at == 0 or text[at - 1].isspace() or text[at - 1] in _BEFORE
    return after and not char.isspace() and char not in _OPENERS


def _ends(text: str, end: int) -> bool:
    """Whether a value that began where a word does can close at ``end``."""
    last = text[end - 1]
    if last.isspace() or last in _SOFT_ENDS or last in _HARD_ENDS:
        return False
    if end == len(text) or text[end] in _HARD_ENDS:
        return True
    rest = text[end:].lstrip(_SOFT_ENDS + _HARD_ENDS)
    return not rest or rest[0].isspace()


def _places(text: str, part: str) -> Iterable[int]:
    """Where ``part`` occurs in ``text`` beginning a word."""
    at = text.find(part)
    while at >= 0:
        if _begins(text, at):
            yield at
        at = text.find(part, at + 1)


def _copyable(value: str, texts: Iterable[str]) -> bool:
    """Whether ``value`` is whole words of one of ``texts`` (cut where JSON escapes), as the constraint copies."""
    pieces = (piece for text in texts for piece in _NEEDS_ESCAPE.split(text) if piece)
    return any(_ends(piece, at + len(value)) for piece in pieces for at in _places(piece, value))


def unheard_arguments(messages: Sequence[Any], tools: Any) -> list[tuple[str, str, str]]:
    """``(tool, argument, value)`` for each verbatim argument of a tool call in ``messages`` that is not whole words
    of an earlier system, user or tool message: a value the constraint would not let a model write (``agentft check``
    runs the oracle through this, so a declaration that no demonstration could keep is caught)."""
    from agentft.messages import AssistantMessage, parse_messages

    fields = verbatim_fields(tools)
    heard: list[str] = []
    unheard = []
    for message in parse_messages(messages):
        if not isinstance(message, AssistantMessage):
            heard.append(message.content)
            continue
        for call in message.tool_calls:
            for argument in sorted(fields.get(call.function.name, ())):
                value = call.function.arguments.get(argument)
                if isinstance(value, str) and value and not _copyable(value, heard):
                    unheard.append((call.function.name, argument, value))
    return unheard
