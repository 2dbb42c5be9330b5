"""PII detection and consistent pseudonymization of trajectories (stdlib + pydantic only).

Detectors (``agentft.pii_detectors``): EMAIL; PHONE (international, US, UK/FR/JP/IN national layouts); CARD (13-19
digits, issuer digit 2-6, Luhn); SSN (123-45-6789, or 9 digits after "SSN"/"social security"; no 000/666/9xx
area); NINO (UK National Insurance, HMRC prefix rules; any prefix after "NI number"); IBAN (country length, mod-97);
IP (v4/v6, not loopback); SECRET (sk-, AKIA, ghp_, glpat-, SG., npm_, xox?-, AIza, Twilio AC/SK, JWTs, private
keys, Bearer, Azure AccountKey=, api_key=/token:/password= values); DOB (a date near "born"/"birth"/"DOB", or after
"verify" next to an email; "filed 2025-03-02" stays); ADDRESS ("12 Elm Street") and PERSON ("my name is ...",
"Dear Ms ...") in free text only where the words say so. A JSON key or argument name that says what its value holds
(``name``, ``customer_name``, ``address``, ``city``, ``postcode``, ``phone``, ``date_of_birth``, ``ssn``, ...) makes the
whole value one of that type. Ids such as CUS-0042 are not personal data. ``Scrubber(use_presidio=True)`` adds
Presidio's PERSON, LOCATION, ... detections in free text (names without a cue: "Maria Gonzalez called"), on an
installed spaCy pipeline (``presidio_analyzer``; never downloaded).

``Scrubber.scrub_trajectory`` first finds every value (messages, tool-call arguments at any depth, tool results as
text so their JSON stays valid, and their typed fields when they are JSON, event arguments and details, score
details, metadata), then replaces every occurrence, also where the context that found it is missing: one value, one
pseudonym, throughout. Values are normalized first (emails and names by case; cards, SSNs and phones by digits, a
national phone is its international form; dates by day, both readings of 03/04/1985), so a value found once is
also replaced where it is written another way; a name's words alone and an address' comma parts get the same fakes.

``mode="fake"`` (default) writes format-preserving fakes derived from the value by HMAC-SHA256: cards Luhn-valid,
IBANs mod-97-valid, dates real dates in the same format, phones in the same layout and country/area code, names
from a list of first and last names, street addresses as "<n> <Tree> <same suffix>". The key is ``key=``, else
``$AGENTFT_PII_KEY``, else random per ``Scrubber``: a fixed key gives the same fakes across trajectories and runs,
and lets whoever holds it test guesses (a birth date has few), so keep it secret. ``mode="placeholder"`` writes
``<EMAIL_1>``, numbered per type within one ``Pseudonyms`` mapping (one per trajectory unless passed in).
``ScrubReport`` holds counts only. Data never raises: a string that cannot be scrubbed becomes ``[REDACTED]``.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import ipaddress
import json
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, Field

from agentft.errors import UserError
from agentft.pii_detectors import (
    _DATE,
    _NOT_A_NAME_PART,
    _NUMBER_RUN,
    _SECRET_PREFIX,
    _STREET_SUFFIX,
    PII_TYPES,
    Detection,
    _date_readings,
    _digits,
    _field_type,
    _normalize,
    _render_date,
    candidates,
    iban_valid,
    luhn_valid,
)
from agentft.trajectory import Trajectory

__all__ = [
    "PII_TYPES",
    "Detection",
    "Pseudonyms",
    "ScrubReport",
    "Scrubber",
    "luhn_valid",
    "iban_valid",
    "presidio_analyzer",
]

PRESIDIO_ENTITIES = ("PERSON", "LOCATION")
"""What Presidio adds by default: names and places in free text. Its number recognizers (driver licences, bank
numbers, NHS numbers) took order numbers and ids for PII on the look-alike set; agentft's own detectors cover
the structured types."""

REDACTED = "[REDACTED]"
_FIRST = "ada ben carla dev elif femi gita hugo ines jon lena mateo nia omar priya rosa sami tara vera zoe".split()
_LAST = "abebe berg costa diaz eze fischer haddad ito jensen larsen mensah novak okafor rossi sato weber xu".split()
_KEEP_DOMAINS = {
    "example.com",
    "example.org",
    "example.net",
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "hotmail.com",
    "icloud.com",
    "proton.me",
    "mail.com",
}
_POOLS = ("0123456789", "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_STREETS = "Alder Birch Cedar Elm Hazel Juniper Linden Maple Oak Rowan Willow Aspen Heather Meadow Orchard".split()
_CITIES = "Ashford Brookfield Clearwater Dunmore Fairview Glenwood Harbourne Kingsbridge Lakeside Millbrook".split()


class Pseudonyms:
    """The values found so far and their pseudonyms. It holds the originals: keep it in memory only."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], str | None] = {}  # (type, normalized value) -> pseudonym, once made
        self.surfaces: dict[str, tuple[str, str]] = {}  # each way a value was written -> (type, normalized)
        self.aliases: dict[tuple[str, str], tuple[str, str]] = {}  # another reading of a value -> its slot
        self._taken: set[tuple[str, str]] = set()
        self._numbers: Counter[str] = Counter()
        self._pattern: re.Pattern[str] | None = None

    def __len__(self) -> int:
        return len(self.values)

    def known(self, text: str) -> list[Detection]:
        """Occurrences in ``text`` of values already found (also where the context that found them is missing)."""
        if not self.surfaces:
            return []
        if self._pattern is None:
            alternatives = "|".join(map(re.escape, sorted(self.surfaces, key=len, reverse=True)))
            self._pattern = re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])")
        found = []
        for m in self._pattern.finditer(text):
            kind, norm = self.surfaces[m.group()]
            quoted = int(m.group()[0] == '"')  # a postcode is found again only as a JSON string, not in amounts
            start, end = m.start() + quoted, m.end() - quoted
            found.append(Detection(start, end, kind, text[start:end], norm))
        return found + self._other_formats(text)

    def slot(self, kind: str, norm: str) -> tuple[str, str] | None:
        """The slot of a value already found, under its normalized form or another reading of it."""
        if (kind, norm) in self.values:
            return kind, norm
        if kind == "PHONE" and len(norm.lstrip("0")) >= 7:  # 020 7946 0958 is +44 20 7946 0958
            bare = norm.lstrip("0")
            for k, n in self.values:
                other = n.lstrip("0")
                if k == "PHONE" and min(len(bare), len(other)) >= 9 and (bare.endswith(other) or other.endswith(bare)):
                    return k, n
        return self.aliases.get((kind, norm))

    def _other_formats(self, text: str) -> list[Detection]:
        """Known phones, SSNs, cards and birth dates written another way: 5551234567 after +1 555 123 4567,
        123456789 after 123-45-6789, 1985-03-12 after 12/03/1985 or 12 March 1985."""
        kinds = {k for k, _ in self.values}
        found: list[Detection] = []
        if kinds & {"PHONE", "SSN", "CARD"}:
            for m in _NUMBER_RUN.finditer(text):
                tokens = [(m.start() + t.start(), m.start() + t.end()) for t in re.finditer(r"\S+", m.group())]
                i = 0
                while i < len(tokens):  # the longest run of whole tokens, from the left, that is a known value
                    for j in range(min(len(tokens), i + 8), i, -1):
                        start, end = tokens[i][0], tokens[j - 1][1]
                        digits = _digits(text[start:end])
                        slot = (self.slot("SSN", digits) if len(digits) == 9 else None) or (
                            self.slot("CARD", digits) if 13 <= len(digits) <= 19 else None
                        )
                        if slot is None and 7 <= len(digits) <= 15:
                            slot = self.slot("PHONE", _normalize("PHONE", digits))
                        if slot is not None:
                            found.append(Detection(start, end, slot[0], text[start:end], slot[1]))
                            i = j - 1
                            break
                    i += 1
        if "DOB" in kinds:
            for m in _DATE.finditer(text):
                slot = next(filter(None, (self.slot("DOB", r) for r in _date_readings(m.group()))), None)
                if slot is not None:
                    found.append(Detection(m.start(), m.end(), "DOB", m.group(), slot[1]))
        return found


class ScrubReport(BaseModel):
    """What scrubbing found, as counts only (no value): safe to write next to the dataset."""

    mode: str
    counts: dict[str, int] = Field(default_factory=dict, description="occurrences replaced, per type")
    values: int = Field(0, description="distinct values newly found")
    mapping_size: int = Field(0, description="distinct values in the mapping afterwards")
    strings: int = Field(0, description="strings scanned")
    errors: int = Field(0, description="strings replaced whole by [REDACTED] because scrubbing them failed")


class Scrubber:
    """Finds PII in text and trajectories and replaces each value by a consistent pseudonym."""

    def __init__(
        self,
        *,
        mode: Literal["fake", "placeholder"] = "fake",
        key: bytes | str | None = None,
        types: Iterable[str] = PII_TYPES,
        use_presidio: bool = False,
        presidio_entities: Iterable[str] = PRESIDIO_ENTITIES,
        presidio_threshold: float = 0.5,
        presidio_model: str | None = None,
        language: str = "en",
    ) -> None:
        if mode not in ("fake", "placeholder"):
            raise UserError(f"unknown scrub mode {mode!r}: use 'fake' or 'placeholder'")
        self.mode, self.types = mode, set(types)
        key = key if key is not None else os.environ.get("AGENTFT_PII_KEY")
        self.deterministic = key is not None
        self._key = key.encode() if isinstance(key, str) else key if key is not None else os.urandom(32)
        self._analyzer: Any = None
        self._presidio = (list(presidio_entities), presidio_threshold, language)
        if use_presidio:
            self._analyzer = presidio_analyzer(presidio_model, language)

    def detect(self, text: str, mapping: Pseudonyms | None = None, *, key: str | None = None) -> list[Detection]:
        """Non-overlapping values in ``text`` (longest first, then by ``PII_TYPES`` order), sorted by position.

        ``mapping`` adds occurrences of values it already holds; ``key`` (a JSON key or argument name such as
        ``date_of_birth``) is context for the whole value. In a JSON text, typed fields count ({"name": ...}).
        """
        mapping = mapping if mapping is not None else Pseudonyms()
        self._learn_json_fields(text, mapping)
        prefix = f"{key}: " if key else ""
        text, bare = prefix + text, text
        found = [d for d in candidates(text) if d.type in self.types]
        value = bare.strip()
        kind = _field_type(key, value) if key and value else None
        if kind in self.types:  # the key says what the whole value is: {"name": "Maria Gonzalez"}
            start = len(prefix) + bare.index(value)
            found.append(Detection(start, start + len(value), kind, value, _normalize(kind, value)))
        if self._analyzer is not None:
            entities, threshold, language = self._presidio
            found += [
                Detection(
                    r.start,
                    r.end,
                    r.entity_type,
                    text[r.start : r.end],
                    " ".join(text[r.start : r.end].lower().split()),
                )
                for r in self._analyzer.analyze(
                    text=text, language=language, entities=entities, score_threshold=threshold
                )
                if 0 <= r.start < r.end <= len(text) and _plausible(r.entity_type, text[r.start : r.end])
            ]
        found = [
            Detection(d.start - len(prefix), d.end - len(prefix), *(d.type, d.text, d.norm))
            for d in found
            if d.start >= len(prefix)
        ] + mapping.known(bare)
        rank = {t: i for i, t in enumerate(PII_TYPES)}
        chosen: list[Detection] = []  # sorted by start, non-overlapping
        for d in sorted(found, key=lambda d: (d.start - d.end, rank.get(d.type, len(rank)), d.start)):
            i = bisect.bisect_left(chosen, d.start, key=lambda c: c.start)
            if (i == 0 or chosen[i - 1].end <= d.start) and (i == len(chosen) or chosen[i].start >= d.end):
                chosen.insert(i, d)
        return chosen

    def _fake(self, kind: str, norm: str, attempt: int) -> str:
        seed = hmac.new(self._key, f"{kind}\0{norm}\0{attempt}".encode("utf-8", "surrogatepass"), hashlib.sha256)
        r = random.Random(int.from_bytes(seed.digest(), "big"))

        def scramble(s: str) -> str:  # each ASCII letter or digit by a random one of its class
            return "".join(r.choice(next((p for p in _POOLS if c in p), c)) for c in s)

        if kind == "EMAIL":
            domain = norm.rpartition("@")[2]
            local = f"{r.choice(_FIRST)}.{r.choice(_LAST)}{r.randrange(10, 100)}"
            return f"{local}@{domain if domain in _KEEP_DOMAINS else 'example.com'}"
        if kind == "PHONE":
            keep = max(0, len(norm) - 7)
            return norm[:keep] + str(r.randint(2, 9)) + "".join(str(r.randrange(10)) for _ in norm[keep + 1 :])
        if kind == "CARD":
            body = norm[0] + "".join(str(r.randrange(10)) for _ in norm[2:])
            return next(body + d for d in "0123456789" if luhn_valid(body + d))
        if kind == "SSN":
            return f"{r.randint(1, 665):03d}{r.randint(1, 99):02d}{r.randint(1, 9999):04d}"
        if kind == "IBAN":
            bban = scramble(norm[4:])
            check = 98 - int("".join(str(int(c, 36)) for c in bban + norm[:2] + "00")) % 97
            return f"{norm[:2]}{check:02d}{bban}"
        if kind == "IP":
            if ":" in norm:
                return str(ipaddress.IPv6Address((0x20010DB8 << 96) | r.getrandbits(96)))
            return f"10.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}"
        if kind == "SECRET":
            if norm.startswith("-----"):
                return "".join(
                    p if p.startswith("-----") or p in ("\n", "\\n") else scramble(p)
                    for p in re.split(r"(\\n|\n)", norm)
                )  # a JSON text has "\\n" for newlines
            prefix = _SECRET_PREFIX.match(norm)
            keep = prefix.end() if prefix else 0
            return norm[:keep] + scramble(norm[keep:])
        if kind == "DOB":
            year = int(norm[:4]) if norm[:4].isdigit() else 1980
            return date(min(max(year + r.randint(-3, 3), 1900), 2099), r.randint(1, 12), r.randint(1, 28)).isoformat()
        if kind == "NINO":
            letters = "ABCEGHJKLMNPRSTWXYZ"
            return (
                r.choice(letters) + r.choice(letters.replace("O", "")) + f"{r.randrange(10**6):06d}" + r.choice("ABCD")
            )
        if kind == "ADDRESS":
            return ", ".join(self._fake_address_part(part.strip()) for part in norm.split(",") if part.strip())
        if kind == "PERSON":
            return " ".join(
                r.choice(_FIRST if i < len(norm.split()) - 1 else _LAST).capitalize()
                for i in range(max(1, len(norm.split())))
            )
        return ""

    def _fake_address_part(self, part: str) -> str:
        seed = hmac.new(self._key, f"ADDRESS\0{part.lower()}".encode("utf-8", "surrogatepass"), hashlib.sha256)
        r = random.Random(int.from_bytes(seed.digest(), "big"))
        street = re.fullmatch(r"\d+[A-Za-z]?,? (?:.+ )?(\S+)", part)
        if street:
            suffix = street.group(1) if re.fullmatch(_STREET_SUFFIX, street.group(1).lower().rstrip(".")) else "Street"
            return f"{r.randint(1, 199)} {r.choice(_STREETS)} {suffix}"
        if re.fullmatch(r"[^\W\d_]+(?:[ '-][^\W\d_]+)*", part):
            return r.choice(_CITIES)
        return "".join(r.choice(next((p for p in _POOLS if c in p), c)) for c in part)

    def _pseudonym(self, d: Detection, mapping: Pseudonyms, make: bool = True) -> str:
        """The pseudonym of ``d``'s value; ``make=False`` only records the value (made later, after every
        original is known, so that no fake equals another original)."""
        slot = mapping.slot(d.type, d.norm) or (d.type, d.norm)  # 020 7946 0958 after +44 20 7946 0958
        core = mapping.values.setdefault(slot, None)
        for surface in self._surfaces(d):
            if surface not in mapping.surfaces:
                mapping.surfaces[surface], mapping._pattern = slot, None
        if d.type == "DOB":
            for reading in _date_readings(d.text)[1:]:
                mapping.aliases.setdefault(("DOB", reading), slot)
        if d.type == "ADDRESS" and "," in d.text:  # each part is a value too: "12 Elm Street" alone elsewhere
            for part in d.text.split(","):
                if len(part.strip()) >= 5 and any(c.isalpha() for c in part):
                    self._pseudonym(
                        Detection(0, 0, "ADDRESS", part.strip(), _normalize("ADDRESS", part)), mapping, make
                    )
        if core is None and make:
            for attempt in range(50 if self.mode == "fake" else 0):
                core = self._fake(d.type, d.norm, attempt)
                if d.type == "ADDRESS" or (
                    core and (d.type, core) not in mapping._taken and (d.type, core) not in mapping.values
                ):
                    break  # an address' fake is made part by part, so its parts alone get the same fakes
            else:
                mapping._numbers[d.type] += 1
                core = f"<{d.type}_{mapping._numbers[d.type]}>"
            mapping._taken.add((d.type, core))
        mapping.values[slot] = core
        return core or ""

    @staticmethod
    def _surfaces(d: Detection) -> list[str]:
        """How ``d``'s value may be written again: as found, as JSON escapes it, and a name's parts alone."""
        if d.type == "ADDRESS" and not re.search(r"[^\W\d_]", d.text):  # "62704": POL-62704 or 62704.0 is no zip
            return [json.dumps(d.text)]
        short = 2 if d.type in ("PERSON", "ADDRESS") else 4  # "Léa", "Wu", "Ely": a typed field's value
        out = [d.text, json.dumps(d.text)[1:-1]] if len(d.text) >= short else []
        if d.type == "PERSON" and " " in d.text:
            out += [w for w in d.text.split() if len(w) >= 3 and w[0].isupper() and w.lower() not in _NOT_A_NAME_PART]
        return out

    @staticmethod
    def _render(d: Detection, core: str) -> str:
        if d.type == "PERSON" and not core.startswith("<") and " " not in d.text.strip():
            parts, fakes = d.norm.split(), core.split()  # "Maria" alone, after "Maria Gonzalez"
            word = d.text.strip().lower()
            return fakes[parts.index(word)] if word in parts and len(parts) == len(fakes) else fakes[0]
        if core.startswith("<") or d.type not in ("PHONE", "CARD", "SSN", "IBAN", "DOB", "NINO"):
            return core.upper() if d.type == "EMAIL" and d.text.isupper() else core
        if d.type == "DOB":
            return _render_date(d.text, date.fromisoformat(core))
        is_slot = str.isdigit if d.type not in ("IBAN", "NINO") else str.isalnum
        slots = [i for i, c in enumerate(d.text) if is_slot(c) and c.isascii()]
        if d.type == "PHONE" and slots and len(slots) != len(core):  # 020 7946 0958 is +44 20 7946 0958
            lead, body = ("0" if d.text[slots[0]] == "0" else ""), core.lstrip("0")
            core = lead + body[len(body) - len(slots) + len(lead) :] if len(slots) - len(lead) <= len(body) else body
        if len(slots) < len(core) or (d.type != "PHONE" and len(slots) != len(core)):
            return core
        chars = list(d.text)
        for i, c in zip(slots[len(slots) - len(core) :], core, strict=True):
            chars[i] = c.lower() if chars[i].islower() else c
        return "".join(chars)

    def scrub_text(
        self,
        text: str,
        mapping: Pseudonyms | None = None,
        *,
        key: str | None = None,
        counts: Counter[str] | None = None,
    ) -> str:
        """``text`` with every value replaced by its pseudonym in ``mapping`` (a new one if None). Never raises."""
        try:
            text = text if isinstance(text, str) else "" if text is None else str(text)
            mapping = mapping if mapping is not None else Pseudonyms()
            out, last = [], 0
            for d in self.detect(text, mapping, key=key):
                out += [text[last : d.start], self._render(d, self._pseudonym(d, mapping))]
                last = d.end
                if counts is not None:
                    counts[d.type] += 1
            return "".join(out) + text[last:]
        except Exception:  # noqa: BLE001 - data must never stop a dataset build; a failed string is dropped whole
            if counts is not None:
                counts["_errors"] += 1
            return REDACTED

    def _learn_json_fields(self, text: str, mapping: Pseudonyms) -> None:
        """Record the values of a JSON text's typed fields ({"name": ..., "address": ...}), so that scrubbing the
        text as text replaces them (and the same values elsewhere)."""

        def learn(s: str, key: str | None) -> str:
            kind = _field_type(key, s.strip()) if key and s.strip() else None
            if kind in self.types:
                self._pseudonym(Detection(0, 0, kind, s.strip(), _normalize(kind, s.strip())), mapping, make=False)
            return s

        try:
            value = _loads(text) if text.lstrip()[:1] in ("{", "[") else None
            if isinstance(value, dict | list):
                _walk(value, learn, None)
        except RecursionError:  # nested past Python's limit: no typed fields, its strings are still scrubbed as text
            pass

    def _scrub_json_text(self, text: str, mapping: Pseudonyms, counts: Counter[str]) -> str:
        """A tool result scrubbed as text; if that broke its JSON, its strings are scrubbed one by one instead."""
        scrubbed = self.scrub_text(text, mapping, counts=counts)
        if scrubbed == text or text.lstrip()[:1] not in ("{", "[") or _loads(scrubbed) is not None:
            return scrubbed
        value = _loads(text)
        return (
            scrubbed
            if value is None
            else json.dumps(_walk(value, lambda s, k: self.scrub_text(s, mapping, key=k), None), ensure_ascii=False)
        )

    def scrub_trajectory(
        self, trajectory: Trajectory, mapping: Pseudonyms | None = None
    ) -> tuple[Trajectory, ScrubReport]:
        """A scrubbed copy of ``trajectory`` and the report; one value gets one pseudonym throughout.

        Pass a ``mapping`` to share pseudonyms (and placeholder numbers) across trajectories.
        """
        if not isinstance(trajectory, Trajectory):
            raise UserError(f"scrub_trajectory takes a Trajectory, not {type(trajectory).__name__}")
        mapping = mapping if mapping is not None else Pseudonyms()
        before, counts, strings = len(mapping), Counter[str](), [0]

        def find(text: str, key: str | None) -> str:  # pass 1: learn every value, so pass 2 finds it everywhere
            strings[0] += 1
            for d in self.detect(text, mapping, key=key):
                self._pseudonym(d, mapping, make=False)
            return text

        def replace(text: str, key: str | None) -> str:
            return self.scrub_text(text, mapping, key=key, counts=counts)

        def replace_result(text: str, key: str | None) -> str:
            return self._scrub_json_text(text, mapping, counts)

        try:
            data = trajectory.model_dump()
            for fn, tool_fn in ((find, find), (replace, replace_result)):
                for message in data["messages"]:
                    if isinstance(message.get("content"), str):
                        message["content"] = (tool_fn if message["role"] == "tool" else fn)(message["content"], None)
                    for call in message.get("tool_calls") or []:
                        call["function"]["arguments"] = _walk(call["function"]["arguments"], fn, None)
                for event in data["events"]:
                    event["arguments"] = _walk(event["arguments"], fn, None)
                    event["detail"] = _walk(event["detail"], fn, None)
                if data["score"]:
                    data["score"]["details"] = _walk(data["score"]["details"], fn, None)
                    for violation in data["score"]["violations"]:
                        violation["detail"] = fn(violation["detail"], None)
                data["metadata"] = _walk(data["metadata"], fn, None)
            clean = Trajectory.model_validate(data)
        except Exception:  # noqa: BLE001 - never leak: drop the content rather than return it unscrubbed
            clean = trajectory.model_copy(update={"messages": [], "events": [], "metadata": {}, "score": None})
            counts["_errors"] += 1
        errors = counts.pop("_errors", 0)
        return clean, ScrubReport(
            mode=self.mode,
            counts=dict(sorted(counts.items())),
            values=len(mapping) - before,
            mapping_size=len(mapping),
            strings=strings[0],
            errors=errors,
        )


def _plausible(kind: str, span: str) -> bool:
    """Keep an NER name or place only when it is written like one: capitalised words of letters, two or more
    for a person ("Claim CLM-647110", "latency_ms=205" and "Epoch" were PERSON to spaCy's small pipeline)."""
    if kind not in ("PERSON", "LOCATION"):
        return True
    words = span.split()
    capitalised = all(w[0].isupper() and all(c.isalpha() or c in "'’.-" for c in w) for w in words)
    return capitalised and len(words) >= (2 if kind == "PERSON" else 1)


SPACY_MODELS = ("en_core_web_lg", "en_core_web_trf", "en_core_web_md", "en_core_web_sm")
"""The spaCy English pipelines Presidio is run on, the first one installed (any other ``LANG_*`` pipeline after)."""


def presidio_analyzer(model: str | None = None, language: str = "en") -> Any:
    """Presidio's analyzer over an installed spaCy pipeline: ``model`` by package name, else the first of
    ``SPACY_MODELS`` installed, else any installed pipeline for ``language``. Never a download (Presidio's own
    default fetches en_core_web_lg from the internet when it is missing)."""
    try:
        import spacy.util
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
    except ImportError:
        raise UserError(
            "use_presidio=True needs Presidio and a spaCy pipeline: pip install 'agentft[pii-ner]' (or "
            "pip install presidio-analyzer), then a spaCy English pipeline (python -m spacy download en_core_web_lg)"
        ) from None
    if model is None:
        installed = spacy.util.get_installed_models()
        ranked = [m for m in SPACY_MODELS if m in installed and language == "en"]
        ranked += sorted(m for m in installed if m.startswith(f"{language}_") and m not in ranked)
        if not ranked:
            raise UserError(
                f"use_presidio=True found no spaCy pipeline for {language!r}: install one "
                "(python -m spacy download en_core_web_lg) or name it with presidio_model="
            )
        model = ranked[0]
    elif not spacy.util.is_package(model):
        raise UserError(f"spaCy pipeline {model!r} is not installed (agentft never downloads one)")
    provider = NlpEngineProvider(
        nlp_configuration={"nlp_engine_name": "spacy", "models": [{"lang_code": language, "model_name": model}]}
    )
    return AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=[language])


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _walk(value: Any, fn: Callable[[str, str | None], str], key: str | None) -> Any:
    """``value`` with ``fn(string, nearest key)`` applied to every string inside (keys are kept)."""
    if isinstance(value, str):
        return fn(value, key)
    if isinstance(value, dict):
        return {k: _walk(v, fn, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(v, fn, key) for v in value]
    return value
