"""PII detection and consistent pseudonymization of trajectories (stdlib + pydantic only).

Detectors: EMAIL; PHONE (international, US); CARD (13-19 digits, issuer digit 2-6, Luhn); SSN (123-45-6789, or 9
digits after "SSN"/"social security"; no 000/666/9xx area); IBAN (country length, mod-97); IP (v4/v6, not loopback);
SECRET (sk-, AKIA, ghp_, xox?-, AIza, JWTs, private keys, Bearer, api_key=/token:/password= values); DOB (a date
near "born"/"birth"/"DOB", or after "verify" next to an email; "filed 2025-03-02" stays). Ids such as CUS-0042 are
not personal data. ``Scrubber(use_presidio=True)`` adds Presidio's PERSON, LOCATION, ... detections.

``Scrubber.scrub_trajectory`` first finds every value (messages, tool-call arguments at any depth, tool results as
text so their JSON stays valid, event arguments and details, score details, metadata), then replaces every
occurrence, also where the context that found it is missing: one value, one pseudonym, throughout. Values are
normalized first (emails by case; cards, SSNs and phones by digits; dates by day).

``mode="fake"`` (default) writes format-preserving fakes derived from the value by HMAC-SHA256: cards Luhn-valid,
IBANs mod-97-valid, dates real dates in the same format, phones in the same layout and country/area code. The key
is ``key=``, else ``$AGENTFT_PII_KEY``, else random per ``Scrubber``: a fixed key gives the same fakes across
trajectories and runs, and lets whoever holds it test guesses (a birth date has few), so keep it secret.
``mode="placeholder"`` writes ``<EMAIL_1>``, numbered per type within one ``Pseudonyms`` mapping (one per
trajectory unless passed in). ``ScrubReport`` holds counts only. Data never raises: a string that cannot be
scrubbed becomes ``[REDACTED]``.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import ipaddress
import json
import math
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, Field

from agentft.errors import UserError
from agentft.trajectory import Trajectory

__all__ = ["PII_TYPES", "Detection", "Pseudonyms", "ScrubReport", "Scrubber", "luhn_valid", "iban_valid"]

PII_TYPES = (
    "SECRET",
    "EMAIL",
    "IBAN",
    "CARD",
    "SSN",
    "NINO",
    "DOB",
    "IP",
    "PHONE",
    "ADDRESS",
    "PERSON",
)  # overlap order
PRESIDIO_ENTITIES = (
    "PERSON",
    "LOCATION",
    "NRP",
    "US_DRIVER_LICENSE",
    "US_PASSPORT",
    "US_BANK_NUMBER",
    "MEDICAL_LICENSE",
    "UK_NHS",
)
REDACTED = "[REDACTED]"
_A, _I = re.ASCII, re.ASCII | re.IGNORECASE
_MONTHS = "january february march april may june july august september october november december".split()
_MONTH_RE = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sept?|oct|nov|dec)[a-z]{0,6}\.?"
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

_EMAIL = re.compile(
    r"(?<![\w.+%-])[A-Za-z0-9][A-Za-z0-9._%+'-]{0,63}@[A-Za-z0-9][A-Za-z0-9-]{0,62}"
    r"(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}(?![\w-])",
    _A,
)
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){1,6}(?![\d-]|\.\d)", _A)
_PHONE_US = re.compile(r"(?<![\w+.-])(?:1[ .-]?)?(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w-]|\.\d)", _A)
_PHONE_NATIONAL = re.compile(  # UK 020 7946 0958 / 07700 900123, FR 01 23 45 67 89, JP 03-1234-5678, IN 098765 43210
    r"(?<![\w+.-])(?:0\d{2,4} \d{3,4} ?\d{3,4}|0\d{4} \d{6}|0[1-9](?:([ .])\d{2})(?:\1\d{2}){3}|"
    r"0\d{1,4}-\d{1,4}-\d{4}|0\d{5} \d{5})(?![\w-]|\.\d)",
    _A,
)
_PHONE_CTX = re.compile(
    r"(?:phone|tel|mobile|cell|fax|whatsapp|call me (?:at|on))[^\d\n]{0,12}?"
    r"(?<![\w-])(\(?\d[\d ().-]{5,16}\d)(?![\w-])",
    _I,
)
_CARD = re.compile(
    r"(?<![\w-])(?<![A-Z]{2}\d\d )(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{1,4}(?:\1\d{3})?|"
    r"\d{4}([ -])\d{6}\2\d{4,5})(?![\w-])",
    _A,
)
_SSN = re.compile(r"(?<![\w-])(?!000|666|9)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])", _A)
_SSN_CTX = re.compile(
    r"(?<![a-z])(?:ssn|ss#|social[ _-]?security(?:[ _-]?(?:number|no\.?|#))?)[^\w\n]{0,6}"
    r"(?:(?:is|was|number|no)\W{1,3}){0,2}((?!000|666|9)\d{3}([ -]?)(?!00)\d{2}\2(?!0000)\d{4})"
    r"(?![\w-])",
    _I,
)
# UK National Insurance numbers: HMRC's prefix rules (no D F I Q U V first, no D F I O Q U V second, not BG GB KN NK
# NT TN ZZ), suffix A-D; with "NI number"/"national insurance"/"NINO" before it, any two letters (QQ 12 34 56 C).
_NINO_BAD = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}
_NINO = re.compile(r"(?<![A-Za-z0-9])[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]( ?)\d\d\1\d\d\1\d\d\1[A-D](?![A-Za-z0-9])", _A)
_NINO_CTX = re.compile(
    r"(?:national[ _-]?insurance(?:[ _-]?(?:number|no\.?))?|\bni[ _-]?(?:number|no\.?)|\bnino)\W{0,4}(?:is\W{1,3})?"
    r"([A-Z]{2}( ?)\d\d\2\d\d\2\d\d\2[A-D])(?![A-Za-z0-9])",
    _I,
)
_STREET_SUFFIX = (
    "street|st|road|rd|avenue|ave|lane|ln|drive|dr|boulevard|blvd|way|court|ct|place|pl|close|crescent|terrace|"
    "square|sq|parkway|pkwy|highway|hwy|row|gardens|grove|hill|walk|mews|rue|strasse|straße"
)
_ADDRESS = re.compile(  # a street address in free text: "12 Elm Street", "221B Baker St."
    rf"(?<![\w.,-])\d{{1,5}}[A-Za-z]?,? (?:[A-Z][a-z]+ ){{1,3}}"
    rf"(?:(?:{_STREET_SUFFIX.title()})(?![\w.])|(?:St|Rd|Ave|Ln|Dr|Blvd|Ct|Pl|Sq|Pkwy|Hwy)\.)"
    rf"(?:,? (?:(?:apt|flat|suite|unit) \w+))?",
    re.UNICODE,
)
_NAME_WORD = r"[A-Z](?:'[A-Z])?[a-z]+"
_NAME_CTX = re.compile(  # a name in free text, only where the words before say it is one
    rf"(?:\b(?:[Mm]y name is|[Nn]ame:|[Dd]ear|[Ss]incerely,?)(?: (?:Mr|Mrs|Ms|Miss|Mx|Dr)\.?)?|"
    rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr)\.?) ({_NAME_WORD}(?:[ -]{_NAME_WORD}){{0,2}})(?![\w@])"
    rf"|\b(?:I'm|I am|[Tt]his is|[Ii]t's) ({_NAME_WORD} {_NAME_WORD})(?![\w@.-]\w)",
    re.UNICODE,
)
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])", _I)
_IBAN_LENGTHS = {
    c[:2]: int(c[2:])
    for c in (
        "AD24 AE23 AT20 BE16 BG22 BH22 CH21 CY28 CZ24 DE22 DK18 EE20 ES24 FI18 FO18 FR27 GB22 GI23 GR27 HR21 HU28 "
        "IE22 IL23 IS26 IT27 KW30 KZ20 LI21 LT20 LU20 LV21 MC27 MT31 NL18 NO15 PL28 PT25 QA29 RO24 RS22 SA24 SE24 SI19 "
        "SK24 SM27 TN24 TR26 UA29"
    ).split()
}
_IPV4 = re.compile(
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?![\w]|\.\d)",
    _A,
)
_IPV6 = re.compile(
    r"(?<![\w:.])(?=[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:)[0-9A-Fa-f:]{2,39}"
    r"(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?![\w:])",
    _A,
)
_VERSION_BEFORE = re.compile(r"(?<![a-z])(?:version|ver\.?|release|build|v)\s*$", _I)
_SECRETS = [
    re.compile(p, f)
    for p, f in (
        (r"-----BEGIN [A-Z ]{0,30}PRIVATE KEY-----[\s\S]{1,8000}?-----END [A-Z ]{0,30}PRIVATE KEY-----", _A),
        (r"(?<![\w-])(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,200}|[sr]k_(?:live|test)_[A-Za-z0-9]{16,200})", _A),
        (r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])", _A),
        (r"(?<!\w)(?:gh[pousr]_[A-Za-z0-9]{30,255}|github_pat_[A-Za-z0-9_]{22,255})(?!\w)", _A),
        (r"(?<![\w-])xox[abposr]-[A-Za-z0-9-]{10,200}", _A),
        (r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])", _A),
        (r"(?<![\w-])glpat-[A-Za-z0-9_-]{20,60}(?![\w-])", _A),  # GitLab
        (r"(?<![\w.-])SG\.[A-Za-z0-9_-]{16,32}\.[A-Za-z0-9_-]{16,64}(?![\w-])", _A),  # SendGrid
        (r"(?<![\w-])npm_[A-Za-z0-9]{36}(?![\w-])", _A),
        (
            r"(?<![A-Za-z0-9])(?:AC|SK)(?=[0-9a-f]{0,31}[a-f])(?=[0-9a-f]{0,31}\d)[0-9a-f]{32}(?![A-Za-z0-9])",
            _A,
        ),  # Twilio
        (
            r"(?<![a-z])(?:AccountKey|SharedAccessKey|SharedAccessSignature)=([A-Za-z0-9+/%&=:._-]{20,400}?)(?=;|\s|[\"']|$)",
            _I,
        ),
        (r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,2000}\.eyJ[A-Za-z0-9_-]{8,4000}\.[A-Za-z0-9_-]{8,2000}", _A),
        (r"\b(?:bearer|basic)\s+([A-Za-z0-9._~+/=-]{12,500})", _I),
        (
            r"(?<![a-z])(?:api[_ -]?key|apikey|access[_ -]?key(?:[_ -]?id)?|secret(?:[_ -]?(?:access[_ -]?)?key)?|"
            r"client[_ -]?secret|(?:access|auth|refresh|api|session|bot)[_ -]?token|token|password|passwd|pwd|"
            r"private[_ -]?key)(?![a-z])[\"']?\s{0,3}[:=]\s{0,3}[\"']?([^\s\"'`,;{}<>\\]{8,500})",
            _I,
        ),
    )
]
_SECRET_PREFIX = re.compile(
    r"-----BEGIN [A-Z ]*-----|sk-(?:proj-|ant-)?|[sr]k_(?:live|test)_|AKIA|ASIA|"
    r"gh[pousr]_|github_pat_|xox[a-z]-|AIza|eyJ|glpat-|SG\.|npm_|(?:AC|SK)(?=[0-9a-f]{32}$)",
    _A,
)
_DATE = re.compile(
    rf"(?<![\w/.-])(?:\d{{4}}[-/.]\d{{1,2}}[-/.]\d{{1,2}}|(?:19|20)\d{{6}}|"
    rf"\d{{1,2}}[-/.]\d{{1,2}}[-/.](?:\d{{4}}|\d\d)|{_MONTH_RE}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}|"
    rf"\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH_RE},?\s+\d{{4}})(?!(?!T\d)[\w/-]|\.\d)",
    _I,
)
_DOB_BEFORE = re.compile(r"born|birth|(?<![a-z])dob(?![a-z])|d\.o\.b\.?|(?P<verify>verif[a-z]*|authenticat[a-z]*)", _I)
_DOB_AFTER = re.compile(
    r"\W{0,3}(?:\(?\s*(?:dob|d\.o\.b|date of birth|birth ?date|birthday)|\s*(?:is|was)\s+"
    r"(?:my|his|her|their|the)\s+(?:birthday|date of birth|dob|birth ?date))",
    _I,
)
_GAP_BREAK = re.compile(r"[.!?;](?:\s|$)|\n\s*\n|(?<![\w.@+-])\d+(?![\w@])")
_TOKEN = re.compile(r"\d+|[A-Za-z]+", _A)
_NUMBER_RUN = re.compile(r"(?<![\w.+-])\+?(?:\(\d+\)|\d)(?:[ .-]?(?:\(\d+\)|\d))*(?![\w-]|\.\d)", _A)
_POOLS = ("0123456789", "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_STREETS = "Alder Birch Cedar Elm Hazel Juniper Linden Maple Oak Rowan Willow Aspen Heather Meadow Orchard".split()
_CITIES = "Ashford Brookfield Clearwater Dunmore Fairview Glenwood Harbourne Kingsbridge Lakeside Millbrook".split()
_NOT_A_NAME_PART = {"will", "may", "mark", "bill", "rose", "grace", "hope", "joy", "june", "april", "august", "dawn"}

# JSON keys / argument names (snake_cased) that say what their value is: the whole value is one of that type.
_FIELDS = {
    **dict.fromkeys(
        "full_name fullname first_name firstname given_name last_name lastname surname family_name middle_name "
        "maiden_name account_holder cardholder card_holder policyholder policy_holder beneficiary insured".split(),
        "PERSON",
    ),
    **dict.fromkeys(
        "address addr street street_address address_line address_line_1 address_line_2 address_1 address_2 "
        "line_1 line_2 city town postcode post_code postal_code zip zip_code zipcode".split(),
        "ADDRESS",
    ),
    **dict.fromkeys(
        "phone phone_number phonenumber mobile mobile_number cell cell_phone telephone tel fax home_phone "
        "work_phone contact_number".split(),
        "PHONE",
    ),
    **dict.fromkeys("email email_address e_mail mail".split(), "EMAIL"),
    **dict.fromkeys("date_of_birth dob birth_date birthdate birthday born born_on".split(), "DOB"),
    **dict.fromkeys("ssn social_security_number social_security ss_number".split(), "SSN"),
    **dict.fromkeys("ni_number nino national_insurance_number national_insurance".split(), "NINO"),
    **dict.fromkeys("iban".split(), "IBAN"),
    **dict.fromkeys("card card_number cardnumber credit_card credit_card_number cc_number pan card_no".split(), "CARD"),
}
_PERSON_ROLES = (
    "customer client patient contact holder account_holder card_holder beneficiary employee caller insured "
    "applicant recipient sender policyholder claimant owner member guest passenger driver agent_customer"
).split()
_PERSON_NAME = re.compile(r"[^\W\d_]+(?:['.-][^\W\d_]+)*\.?(?: [^\W\d_]+(?:['.-][^\W\d_]+)*\.?){0,4}")
_CAPITALISED = re.compile(r"[A-Z][^\W\d_]+(?:['-][^\W\d_]+)*(?: [A-Z][^\W\d_]+(?:['-][^\W\d_]+)*){1,3}")


def _field_type(key: str, value: str) -> str | None:
    """The type a JSON key says its value holds (``customer_name`` -> PERSON), if the value fits that type."""
    k = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower().replace("-", "_").replace(" ", "_").strip("_")
    kind = _FIELDS.get(k)
    if kind is None and k.endswith("_name") and k[:-5] in _PERSON_ROLES:
        kind = "PERSON"
    if kind is None and k.endswith("_address") and k[:-8] in ("home", "billing", "shipping", "mailing", "postal"):
        kind = "ADDRESS"
    if kind is None and k in ("name", "display_name", "contact") and _CAPITALISED.fullmatch(value):
        kind = "PERSON"  # a bare "name" is a person's only when it reads like one: "Maria Gonzalez", not "home"
    digits = len(_digits(value))
    fits = {
        "PERSON": lambda: _PERSON_NAME.fullmatch(value) is not None and len(value) >= 2,
        "ADDRESS": lambda: len(value) >= 3 and any(c.isalnum() for c in value),
        "PHONE": lambda: 7 <= digits <= 15 and not re.search(r"[A-Za-z]{2}", value),
        "EMAIL": lambda: "@" in value,
        "DOB": lambda: _parse_date(value) is not None,
        "SSN": lambda: digits == 9 and len(value) <= 11,
        "NINO": lambda: re.fullmatch(r"[A-Za-z]{2} ?\d\d ?\d\d ?\d\d ?[A-Da-d]", value) is not None,
        "IBAN": lambda: iban_valid(value),
        "CARD": lambda: 13 <= digits <= 19 and luhn_valid(value) and not re.search(r"[A-Za-z]", value),
    }
    return kind if kind is not None and fits[kind]() else None


def _normalize(kind: str, text: str) -> str:
    """The form under which one value written several ways gets one pseudonym."""
    if kind in ("CARD", "SSN"):
        return _digits(text)
    if kind == "PHONE":
        digits = _digits(text)
        return digits[1:] if len(digits) == 11 and digits[0] == "1" else digits
    if kind in ("IBAN", "NINO"):
        return "".join(text.split()).upper()
    if kind == "DOB":
        parsed = _parse_date(text)
        return parsed[0].isoformat() if parsed else text
    if kind in ("EMAIL", "PERSON"):
        return " ".join(text.lower().split())
    return " ".join(text.split()).rstrip(".")


def _date_readings(text: str) -> list[str]:
    """Every ISO date ``text`` may mean: 03/04/1985 is 4 March or 3 April, depending on who wrote it."""
    parsed = _parse_date(text)
    if parsed is None:
        return []
    readings = [parsed[0].isoformat()]
    m = re.fullmatch(r"(\d{1,2})([-/.])(\d{1,2})\2(\d{2}|\d{4})", text.strip())
    if m and int(m.group(1)) <= 12 and int(m.group(3)) <= 12 and m.group(1) != m.group(3):
        d, mo = parsed[0].month, parsed[0].day  # the other order
        try:
            readings.append(date(parsed[0].year, mo, d).isoformat())
        except ValueError:
            pass
    return readings


@dataclass(frozen=True)
class Detection:
    """One value found in a text: ``text[start:end]``, its type and its normalized form."""

    start: int
    end: int
    type: str
    text: str
    norm: str


def luhn_valid(number: str) -> bool:
    """Whether the digits of ``number`` pass the Luhn check."""
    digits = [int(c) for c in number if c in "0123456789"]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(reversed(digits)))
    return len(digits) >= 2 and total % 10 == 0


def iban_valid(iban: str) -> bool:
    """Whether ``iban`` (spaces allowed) is well formed, of its country's length if known, and passes mod-97."""
    s = "".join(iban.split()).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", s, _A) or _IBAN_LENGTHS.get(s[:2], len(s)) != len(s):
        return False
    return int("".join(str(int(c, 36)) for c in s[4:] + s[:4])) % 97 == 1


def _digits(s: str) -> str:
    return "".join(c for c in s if c in "0123456789")


def _entropy(s: str) -> float:
    return -sum(n / len(s) * math.log2(n / len(s)) for n in Counter(s).values()) if s else 0.0


def _secretish(value: str) -> bool:
    mixed = any(c.isdigit() for c in value) or (value.lower() != value and value.upper() != value)
    return len(value) >= 8 and mixed and _entropy(value) >= 2.5 and not value.lower().startswith(("xxx", "redacted"))


def _parse_date(s: str) -> tuple[date, list[tuple[int, int, str]]] | None:
    """A date written in ``s`` and where its parts are: (start, end, role) with role y/m/d/M (month name)/s."""
    toks = [(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(s)]
    nums = [t for t in toks if t[2].isdigit()]
    named = [t for t in toks if t[2][:3].lower() in [n[:3] for n in _MONTHS] and not t[2].isdigit()]
    try:
        if named:
            y, d = next(t for t in nums if len(t[2]) == 4), next(t for t in nums if len(t[2]) <= 2)
            m = [n[:3] for n in _MONTHS].index(named[0][2][:3].lower()) + 1
            roles = [(*y[:2], "y"), (*d[:2], "d"), (*named[0][:2], "M")]
            roles += [(*t[:2], "s") for t in toks if t[2].lower() in ("st", "nd", "rd", "th")]
            return date(int(y[2]), m, int(d[2])), roles
        if len(nums) == 1 and len(nums[0][2]) == 8:  # 19800402
            at, n = nums[0][0], nums[0][2]
            roles = [(at, at + 4, "y"), (at + 4, at + 6, "m"), (at + 6, at + 8, "d")]
            return date(int(n[:4]), int(n[4:6]), int(n[6:])), roles
        if len(nums) != 3:
            return None
        a, b, c = nums
        if len(a[2]) == 4:
            order = "ymd"
        else:
            first, second = int(a[2]), int(b[2])
            order = "dmy" if first > 12 or (second <= 12 and s[a[1]] != "/") else "mdy"
        parts = dict(zip(order, (a, b, c), strict=True))
        year = int(parts["y"][2]) + (0 if len(parts["y"][2]) == 4 else 1900 if int(parts["y"][2]) > 30 else 2000)
        return date(year, int(parts["m"][2]), int(parts["d"][2])), [(*t[:2], r) for r, t in parts.items()]
    except (StopIteration, ValueError):
        return None


def _ordinal(day: int) -> str:
    return "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def _render_date(surface: str, new: date) -> str:
    parsed = _parse_date(surface)
    if parsed is None:
        return new.isoformat()
    out = surface
    for start, end, role in sorted(parsed[1], reverse=True):
        old = surface[start:end]
        if role == "y":
            value = str(new.year) if len(old) == 4 else f"{new.year % 100:02d}"
        elif role in "md":
            number = new.month if role == "m" else new.day
            value = f"{number:0{len(old)}d}"
        else:
            value = _MONTHS[new.month - 1] if role == "M" else _ordinal(new.day)
            value = value if role == "s" or len(old) > 3 else value[:3]
            value = value.upper() if old.isupper() else value.capitalize() if old[0].isupper() else value
        out = out[:start] + value + out[end:]
    return out


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
            found.append(Detection(m.start(), m.end(), kind, m.group(), norm))
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
            try:
                from presidio_analyzer import AnalyzerEngine
            except ImportError:
                raise UserError(
                    "use_presidio=True needs Presidio: pip install presidio-analyzer "
                    "&& python -m spacy download en_core_web_lg"
                ) from None
            self._analyzer = AnalyzerEngine()

    def _candidates(self, text: str) -> Iterable[Detection]:
        def det(start: int, end: int, kind: str, norm: str | None = None) -> Detection:
            return Detection(start, end, kind, text[start:end], text[start:end] if norm is None else norm)

        for m in _EMAIL.finditer(text):
            yield det(m.start(), m.end(), "EMAIL", m.group().lower())
        for m in _PHONE_NATIONAL.finditer(text):
            digits = _digits(m.group())
            if (
                10 <= len(digits) <= 11
                and digits[1] != "0"
                and not _VERSION_BEFORE.search(text, max(0, m.start() - 12), m.start())
            ):
                yield det(m.start(), m.end(), "PHONE", _digits(m.group()))
        for m in (*_NINO.finditer(text), *_NINO_CTX.finditer(text)):
            g = 1 if m.re is _NINO_CTX else 0
            if g or m.group()[:2] not in _NINO_BAD:
                yield det(m.start(g), m.end(g), "NINO", _normalize("NINO", m.group(g)))
        for m in _ADDRESS.finditer(text):
            yield det(m.start(), m.end(), "ADDRESS", _normalize("ADDRESS", m.group()))
        for m in _NAME_CTX.finditer(text):
            g = 1 if m.group(1) else 2
            if m.group(g).split()[0].lower() not in _NOT_A_NAME_PART:
                yield det(m.start(g), m.end(g), "PERSON", _normalize("PERSON", m.group(g)))
        for m in (*_PHONE_INTL.finditer(text), *_PHONE_US.finditer(text), *_PHONE_CTX.finditer(text)):
            g = 1 if m.re is _PHONE_CTX else 0
            digits = _digits(m.group(g))
            if 7 <= len(digits) <= 15 and (g == 0 or not _DATE.fullmatch(m.group(g))):
                norm = digits[1:] if len(digits) == 11 and digits[0] == "1" else digits
                yield det(m.start(g), m.end(g), "PHONE", norm)
        for m in _CARD.finditer(text):  # "4111 1111 1111 1111 123 items": retry without a 5th group
            for value in (m.group(), m.group()[:-4] if m.group(1) and m.group().count(m.group(1)) == 4 else ""):
                digits = _digits(value)
                if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_valid(digits):
                    yield det(m.start(), m.start() + len(value), "CARD", digits)
                    break
        for m in (*_SSN.finditer(text), *_SSN_CTX.finditer(text)):
            g = 1 if m.re is _SSN_CTX else 0
            yield det(m.start(g), m.end(g), "SSN", _digits(m.group(g)))
        for m in _IBAN.finditer(text):  # drop trailing groups (a word caught after it) only to the country's length
            parts = m.group().split(" ")
            for k in range(len(parts), 0 if m.group()[:2] in _IBAN_LENGTHS else len(parts) - 1, -1):
                value = " ".join(parts[:k])
                if iban_valid(value):
                    yield det(m.start(), m.start() + len(value), "IBAN", value.replace(" ", "").upper())
                    break
        for m in (*_IPV4.finditer(text), *_IPV6.finditer(text)):
            try:
                address = ipaddress.ip_address(m.group())
            except ValueError:
                continue
            v6_groups = sum(1 for g in m.group().split(":") if g)
            if (
                address.is_loopback
                or address.is_unspecified
                or (address.version == 6 and v6_groups < 3)
                or _VERSION_BEFORE.search(text, max(0, m.start() - 12), m.start())
            ):
                continue
            yield det(m.start(), m.end(), "IP", address.compressed)
        for pattern in _SECRETS:
            for m in pattern.finditer(text):
                g = 1 if pattern.groups else 0
                if (
                    g == 0
                    and m.group().startswith("-----")
                    or (_secretish(m.group(g)) if g else any(c.isdigit() for c in m.group()))
                ):
                    yield det(m.start(g), m.end(g), "SECRET")
        for m in _DATE.finditer(text):
            parsed = _parse_date(m.group())
            if parsed is not None and self._dob_context(text, m.start(), m.end()):
                yield det(m.start(), m.end(), "DOB", parsed[0].isoformat())

    @staticmethod
    def _dob_context(text: str, start: int, end: int) -> bool:
        """A date is a birth date after "born"/"birth"/"DOB" (or "verify ... <email> ..."), or before "(DOB)"."""
        for keyword in _DOB_BEFORE.finditer(text, max(0, start - 90), start):
            gap, verify = text[keyword.end() : start], keyword.group("verify") is not None
            if len(gap) <= (90 if verify else 30) and (not verify or "@" in gap) and not _GAP_BREAK.search(gap):
                return True
        return _DOB_AFTER.match(text, end, min(len(text), end + 40)) is not None

    def detect(self, text: str, mapping: Pseudonyms | None = None, *, key: str | None = None) -> list[Detection]:
        """Non-overlapping values in ``text`` (longest first, then by ``PII_TYPES`` order), sorted by position.

        ``mapping`` adds occurrences of values it already holds; ``key`` (a JSON key or argument name such as
        ``date_of_birth``) is context for the whole value.
        """
        prefix = f"{key}: " if key else ""
        text, bare = prefix + text, text
        found = [d for d in self._candidates(text) if d.type in self.types]
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
                if 0 <= r.start < r.end <= len(text)
            ]
        found = [
            Detection(d.start - len(prefix), d.end - len(prefix), *(d.type, d.text, d.norm))
            for d in found
            if d.start >= len(prefix)
        ] + (mapping.known(bare) if mapping is not None else [])
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
        out = [d.text, json.dumps(d.text)[1:-1]] if len(d.text) >= 4 else []
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
            self._learn_json_fields(text, mapping)
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
        value = _loads(text) if text.lstrip()[:1] in ("{", "[") else None
        if isinstance(value, dict | list):

            def learn(s: str, key: str | None) -> str:
                kind = _field_type(key, s.strip()) if key and s.strip() else None
                if kind in self.types:
                    self._pseudonym(Detection(0, 0, kind, s.strip(), _normalize(kind, s.strip())), mapping, make=False)
                return s

            _walk(value, learn, None)

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
            self._learn_json_fields(text, mapping)
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
