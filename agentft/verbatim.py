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
be copied whole, never as ``abebe570@example.com`` or ``lena``, and never runs across a clause break (punctuation
and a space: ``…@example.com. I was born…``). Sources are cut where JSON would escape a character (quotes,
backslashes, line breaks), so a value never holds one; a token that writes the opening quote with the
value's first characters (`` "+``) is held to the same rule. Where the call is not one the constraint can
follow (the tool's name written after its arguments, a value already off every source, a next character no single
token spells), the model is left free.

A string parameter whose JSON schema has a ``pattern`` (``Field(pattern=...)``, or ``json_schema_extra`` where the
tool should not refuse other values) is copied only from the whole-word stretches that match it, where the
conversation holds any: an email, not the word ``email``, out of "Email lena.larsen653@example.com, born ...".

A number parameter declared verbatim (an amount) is written as one of the numbers the conversation holds, said in
digits (``1,650``, ``$350``) or in English words (``one thousand six hundred fifty``): the model copies the
amount, it does not compute it. List numbering at the start of a line is not a number anyone said.

Declare only what the data copies: a parameter the demonstrations reformat (a date written out by the user, ISO in
the call) would be cut short; ``agentft check`` fails an environment whose oracle does that. Decoding only: it
needs the engine (``HFPolicy``), and it masks what the model may choose, so it is off where log-probabilities must
be the model's own (RL rollouts).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

__all__ = [
    "TokenTexts",
    "Verbatim",
    "VerbatimArguments",
    "numbers_in",
    "open_argument",
    "unheard_arguments",
    "verbatim_fields",
]

_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]+')
_CLAUSE_BREAK = re.compile(r"(?<=[.!?:;,])\s+")
"""Punctuation and a space: a value never runs across one (``… @example.com. I was born …``)."""
_CLOSING = frozenset(",} \n\t</")
"""What may follow the closing quote inside one token (``"``, ``",``, ``"}}``, ``"}}</``...)."""
_NUMBER_ENDS = frozenset(",}")
"""What a number value may close with (``,``, ``}``, ``}}``...)."""
_BARE_NUMBER = re.compile(r"[ \t]*[\d.]*")
_DIGITS = re.compile(r"(?<![\w.,+\-/@])(?<!\d )(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w\-/@]|[.,]\d| \d)")
"""Digits standing alone: not part of an id (CLM-12), a date (1990-01-02) or a digit group (+1 555 250 1000)."""
_LIST_NUMBER = re.compile(r"(?m)^[ \t]*\d+[.)](?=\s)")
_UNITS = {
    word: value
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen".split()
    )
}
_TENS_WORDS = {
    word: 10 * (i + 2) for i, word in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())
}
_SCALES = {"thousand": 1000, "million": 1_000_000}
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
        self.number_closers: list[int] = []
        self.quoted: dict[str, list[int]] = {}
        """Tokens that open a string value (``"``, `` "``) by what they write after the quote (`` "+`` -> ``+``)."""
        for token, text in enumerate(decoded):
            if token in special or not text.startswith(prefix) or len(text) == len(prefix) or "\ufffd" in text:
                continue
            text = text[len(prefix) :]
            self.by_text.setdefault(text, []).append(token)
            if text[0] == '"' and set(text[1:]) <= _CLOSING:
                self.closers.append(token)
            if text.lstrip(" ")[:1] in _NUMBER_ENDS and set(text) <= _CLOSING:
                self.number_closers.append(token)
            if text.lstrip(" ")[:1] == '"' and len(text) - len(text.lstrip(" ")) <= 1:
                self.quoted.setdefault(text.lstrip(" ")[1:], []).append(token)
        self.longest = max(map(len, self.by_text), default=1)
        self._starts: dict[tuple[str, bool], frozenset[int]] = {}

    def spelling(self, text: str, limit: int | None = None, table: Mapping[str, list[int]] | None = None) -> set[int]:
        """The tokens whose text is a beginning of ``text`` (of at most ``limit`` characters); with ``table``
        (``quoted``), those that open a string and then write a beginning of ``text``."""
        table = self.by_text if table is None else table
        longest = min(len(text), self.longest, len(text) if limit is None else limit)
        return {token for end in range(1, longest + 1) for token in table.get(text[:end], ())}

    def starts(self, piece: str, quoted: bool = False) -> frozenset[int]:
        """The tokens a value copied from ``piece`` can begin with (where a word begins, none that runs past the
        piece's last word end), or with ``quoted`` the tokens that open the string and begin it so; kept per
        piece, since a conversation's pieces (the system prompt, earlier turns) come back at every turn."""
        found = self._starts.get((piece, quoted))
        if found is None:
            last, table = _last_end(piece), self.quoted if quoted else None
            found = frozenset().union(
                *(self.spelling(piece[at:], last - at, table) for at in range(len(piece)) if _begins(piece, at))
            )
            if len(self._starts) >= 512:  # a few MB at most in a long-running server
                self._starts.pop(next(iter(self._starts)))
            self._starts[piece, quoted] = found
        return found


class Verbatim(NamedTuple):
    """How one verbatim argument is kept."""

    kind: str
    """``"string"`` (whole words of the conversation) or ``"number"`` (a number it said)."""
    pattern: str | None = None
    """A string argument's JSON-schema ``pattern``: then only whole words that match it, where the conversation
    holds any (an email among the words of a request)."""


def verbatim_fields(tools: Iterable[Any] | None) -> dict[str, dict[str, Verbatim]]:
    """Tool name -> {parameter it declares verbatim: how it is kept}, for the tools that declare any."""
    from agentft.tools import ToolSpec

    fields = {}
    for spec in (ToolSpec.model_validate(tool) for tool in tools or ()):
        properties = spec.parameters.get("properties") or {}
        kept = {}
        for name in spec.verbatim:
            schema = properties.get(name) or {}
            if schema.get("type", "string") == "string":
                pattern = schema.get("pattern")
                kept[name] = Verbatim("string", pattern if isinstance(pattern, str) else None)
            else:
                kept[name] = Verbatim("number")
        if kept:
            fields[spec.name] = kept
    return fields


def open_argument(text: str) -> tuple[str | None, str, str, bool] | None:
    """``(tool name, argument, value so far, quoted)`` when ``text`` ends inside the value of an argument of its
    last, unclosed ``<tool_call>``: a string value as written, JSON escapes and all (``quoted``), or what follows
    the argument's ``:`` while that is spaces and digits (a number being written); None anywhere else. The tool
    name is None when the call has not written it yet."""
    start = text.rfind("<tool_call>")
    if start < 0 or "</tool_call>" in text[start:]:
        return None
    frames: list[list[Any]] = []  # [bracket, current key, expecting a key]
    name: str | None = None
    in_string = escaped = is_key = False
    value: list[str] = []
    bare: list[str] | None = None  # what follows an argument's ":" outside a string
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
        elif bare is not None and char not in '"{[,}]':
            bare.append(char)
        elif char == '"':
            in_string, value, bare = True, [], None
            is_key = bool(frames) and frames[-1][0] == "{" and frames[-1][2]
        elif char in "{[":
            frames.append([char, None, char == "{"])
            bare = None
        elif char in "}]":
            if frames:
                frames.pop()
            bare = None
        elif char == ":" and frames and frames[-1][0] == "{":
            frames[-1][2] = False
            bare = [] if len(frames) == 2 else None
        elif char == "," and frames and frames[-1][0] == "{":
            frames[-1][1], frames[-1][2] = None, True
            bare = None
    number = bare is not None and _BARE_NUMBER.fullmatch("".join(bare)) is not None
    inside = (
        (in_string and not is_key and not escaped or number)
        and len(frames) == 2
        and frames[0][1] in ("arguments", "parameters")
        and frames[1][0] == "{"
        and frames[1][1] is not None
    )
    if not inside:
        return None
    return (name, frames[1][1], "".join(value if in_string else bare or ()), in_string)


class VerbatimArguments:
    """An engine request's ``allowed``: inside a verbatim argument's value, the tokens that keep it a piece of
    ``sources`` (or close it); None (any token) everywhere else."""

    def __init__(
        self,
        texts: TokenTexts,
        decode: Callable[[list[int]], str],
        fields: Mapping[str, Mapping[str, Verbatim]],
        sources: Sequence[str],
    ) -> None:
        self.texts = texts
        self.decode = decode
        self.fields = fields
        self.said = list(sources)
        self.sources = [piece for source in sources for piece in _pieces(source)]
        """The sources cut where JSON would escape a character (quotes, backslashes, line breaks), so a value is
        written in JSON exactly as it reads, and at clause breaks (punctuation and a space): a value is copied
        from one piece."""
        self._seen: dict[str, list[int]] = {}
        self._numbers: list[str] | None = None
        self._matching: dict[str, list[str]] = {}

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
        if found is None:
            return None
        tool, argument, written, quoted = found
        field = self.fields.get(tool or "", {}).get(argument)
        if field is None:
            return None
        if field.kind == "number":
            return None if quoted else self.number_continuations(written)
        matching = self.matching(field.pattern) if field.pattern else []
        if quoted:
            return self._one_of(written, matching, self.texts.closers) if matching else self.continuations(written)
        if written.strip():
            return None
        if matching:  # the opening quote, or a token that opens the string and begins one of them
            allowed = set(self.texts.quoted.get("", ())).union(
                *(self.texts.spelling(value, table=self.texts.quoted) for value in matching)
            )
            return sorted(allowed | (set() if written else set(self.texts.by_text.get(" ", ()))))
        return self.openings(written)

    def matching(self, pattern: str) -> list[str]:
        """The whole-word stretches of the sources that match ``pattern`` (a value a string argument with that
        JSON-schema pattern can copy); none for a pattern Python's ``re`` cannot read."""
        found = self._matching.get(pattern)
        if found is None:
            compiled = _compiled(pattern)
            found = set()
            for piece in self.sources if compiled else ():
                ends = [end for end in range(1, len(piece) + 1) if _ends(piece, end)]
                for at in (at for at in range(len(piece)) if _begins(piece, at)):
                    found.update(piece[at:end] for end in ends if end > at and compiled.search(piece[at:end]))
            self._matching[pattern] = found = sorted(found)
        return found

    def _one_of(self, written: str, options: list[str], closers: list[int], space: bool = False) -> list[int] | None:
        """The tokens that write on towards one of ``options`` (with ``space``, also after a leading space), and
        ``closers`` once it is one; None when it begins none of them (left free)."""
        rests = [option[len(written) :] for option in options if option.startswith(written)]
        allowed = set().union(*(self.texts.spelling(rest) for rest in rests if rest))
        if space:
            allowed.update(*(self.texts.spelling(" " + rest) for rest in rests))
        if "" in rests:
            allowed.update(closers)
        return sorted(allowed) or None

    def openings(self, written: str) -> list[int]:
        """After an argument's ``:``: a space (if none yet), a bare opening quote, or a token that opens the string
        and begins a value as ``continuations("")`` would (`` "+`` where a source holds ``+1 555 ...``)."""
        allowed = set(self.texts.quoted.get("", ())).union(*(self.texts.starts(s, quoted=True) for s in self.sources))
        if not written:
            allowed.update(self.texts.by_text.get(" ", ()))
        return sorted(allowed)

    def number_continuations(self, written: str) -> list[int] | None:
        """The tokens that write on towards a number the sources hold (``written``: what follows the argument's
        ``:`` so far), and those that close it once it is one; None when it is none of them (left free)."""
        if self._numbers is None:
            self._numbers = sorted({_number_text(n) for text in self.said for n in numbers_in(text)})
        # right after the ":", a space may come first
        return self._one_of(written.lstrip(" \t"), self._numbers, self.texts.number_closers, space=not written)

    def continuations(self, value: str) -> list[int] | None:
        """The tokens that extend ``value`` along a source (never past its last word end, after which a value
        could not close), and those that close it where a word of the source ends; None when ``value`` begins no
        word of a source (written some other way: the model is left free), or when no single token spells how a
        source goes on (a character split across byte tokens)."""
        found = self._seen.get(value)
        if found is not None:
            return found
        if not value:
            allowed = set().union(*(self.texts.starts(source) for source in self.sources))
        else:
            places = [(source, at + len(value)) for source in self.sources for at in _places(source, value)]
            if not places:
                return None
            allowed = set().union(
                *(self.texts.spelling(source[end:], _last_end(source) - end) for source, end in places)
            )
            if any(_ends(source, end) for source, end in places):
                allowed.update(self.texts.closers)
        if not allowed:  # no source, or it goes on in a character split across byte tokens
            return None
        self._seen[value] = found = sorted(allowed)
        return found


def numbers_in(text: str) -> set[float]:
    """The numbers ``text`` says: in digits standing alone (``350``, ``$1,650.50``; not the digits of an id, a
    date or a phone number, nor a list item's number at the start of a line) or in English words (``one thousand
    six hundred fifty``, ``twenty-five``)."""
    text = _LIST_NUMBER.sub(" ", text)
    found = {float(match.group(0).replace(",", "")) for match in _DIGITS.finditer(text)}
    total = current = 0
    inside = False
    for word in re.findall(r"[a-z]+|[^a-z\s-]", text.lower()):  # punctuation ends a number in words
        if word in _UNITS or word in _TENS_WORDS:
            current += _UNITS.get(word, _TENS_WORDS.get(word, 0))
        elif word == "hundred":
            current = max(current, 1) * 100
        elif word in _SCALES:
            total, current = total + max(current, 1) * _SCALES[word], 0
        elif inside and word == "and" or not inside and word == "a":
            continue
        else:
            if inside:
                found.add(float(total + current))
            total, current, inside = 0, 0, False
            continue
        inside = True
    if inside:
        found.add(float(total + current))
    return found


def _number_text(number: float) -> str:
    """A number as a tool call writes it: ``2650``, ``1270.5``."""
    return str(int(number)) if number == int(number) else repr(number)


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


def _compiled(pattern: str) -> re.Pattern[str] | None:
    """A JSON-schema ``pattern`` as Python reads it (None when it cannot)."""
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _search(pattern: str, value: str) -> bool:
    """Whether ``value`` matches a JSON-schema ``pattern`` (unanchored, as JSON Schema reads it)."""
    compiled = _compiled(pattern)
    return compiled is None or compiled.search(value) is not None


def _pieces(text: str) -> list[str]:
    """``text`` cut where JSON would escape a character and at clause breaks: the stretches a value is copied from."""
    return [piece for part in _NEEDS_ESCAPE.split(text) for piece in _CLAUSE_BREAK.split(part) if piece]


def _last_end(text: str) -> int:
    """The last place a value copied from ``text`` can close (0: none)."""
    return next((end for end in range(len(text), 0, -1) if _ends(text, end)), 0)


def _places(text: str, part: str) -> Iterable[int]:
    """Where ``part`` occurs in ``text`` beginning a word."""
    at = text.find(part)
    while at >= 0:
        if _begins(text, at):
            yield at
        at = text.find(part, at + 1)


def _copyable(value: str, texts: Iterable[str]) -> bool:
    """Whether ``value`` is whole words of one of ``texts`` (cut where JSON escapes), as the constraint copies."""
    pieces = (piece for text in texts for piece in _pieces(text))
    return any(_ends(piece, at + len(value)) for piece in pieces for at in _places(piece, value))


def unheard_arguments(messages: Sequence[Any], tools: Any) -> list[tuple[str, str, str]]:
    """``(tool, argument, value)`` for each verbatim argument of a tool call in ``messages`` that is not whole words
    of an earlier system, user or tool message (or does not match the argument's JSON-schema ``pattern``): a value
    the constraint would not let a model write (``agentft check`` runs the oracle through this, so a declaration
    that no demonstration could keep is caught)."""
    from agentft.messages import AssistantMessage, parse_messages

    fields = verbatim_fields(tools)
    heard: list[str] = []
    unheard = []
    for message in parse_messages(messages):
        if not isinstance(message, AssistantMessage):
            heard.append(message.content)
            continue
        for call in message.tool_calls:
            for argument, field in sorted(fields.get(call.function.name, {}).items()):
                value = call.function.arguments.get(argument)
                if isinstance(value, str) and value and not _copyable(value, heard):
                    unheard.append((call.function.name, argument, value))
                elif isinstance(value, str) and field.pattern and not _search(field.pattern, value):
                    unheard.append((call.function.name, argument, value))
                elif isinstance(value, int | float) and not isinstance(value, bool):
                    if not any(float(value) in numbers_in(text) for text in heard):
                        unheard.append((call.function.name, argument, str(value)))
    return unheard
