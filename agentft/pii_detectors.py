"""The detectors of ``agentft.pii``: patterns, validators, context rules, typed JSON fields and normalized forms.

``agentft.pii`` is the public side (``Scrubber``, ``Pseudonyms``); this module only says where values are, what
type they are and under which normalized form one value written several ways is the same value.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

__all__ = ["PII_TYPES", "Detection", "candidates", "iban_valid", "luhn_valid"]

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
_A, _I = re.ASCII, re.ASCII | re.IGNORECASE
_MONTHS = "january february march april may june july august september october november december".split()
_MONTH_RE = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sept?|oct|nov|dec)[a-z]{0,6}\.?"

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
_UK_POSTCODE = re.compile(  # "LS1 4DY", "SW1A 1AA": a UK postcode area, then the inward code's allowed letters
    r"(?<![A-Za-z0-9])(?=[A-Z]{1,2}\d[A-Z\d]? \d[A-Z]{2}(?![A-Za-z0-9]))"  # cheap test first, then the areas
    r"(?:AB|AL|BA|BB|BD|BH|BL|BN|BR|BS|BT|CA|CB|CF|CH|CM|CO|CR|CT|CV|CW|DA|DD|DE|DG|DH|DL|DN|DT|DY|"
    r"EC|EH|EN|EX|FK|FY|GL|GU|GY|HA|HD|HG|HP|HR|HS|HU|HX|IG|IM|IP|IV|JE|KA|KT|KW|KY|LA|LD|LE|LL|LN|LS|LU|ME|MK|ML|"
    r"NE|NG|NN|NP|NR|NW|OL|OX|PA|PE|PH|PL|PO|PR|RG|RH|RM|SA|SE|SG|SK|SL|SM|SN|SO|SP|SR|SS|ST|SW|SY|TA|TD|TF|TN|TQ|"
    r"TR|TS|TW|UB|WA|WC|WD|WF|WN|WR|WS|WV|YO|ZE|[BEGLMNSW])\d[A-Z\d]? \d[ABD-HJLNP-UW-Z]{2}(?![A-Za-z0-9])",
    _A,
)
_NAME_WORD = r"(?!(?:Mr|Mrs|Ms|Miss|Mx|Dr)\b)[A-ZÀ-ÖØ-ÞĀ-ž](?:'[A-Z])?[a-zß-öø-ÿĀ-ž]+(?:[A-Z][a-zß-öø-ÿĀ-ž]+)?"
_NAME_CTX = re.compile(  # a name in free text, only where the words before say it is one
    rf"(?:\b(?:[Mm]y name is|[Nn]ame:|[Dd]ear|[Ss]incerely,?)(?: (?:Mr|Mrs|Ms|Miss|Mx|Dr)\.?)?|"
    rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr)\.?) ({_NAME_WORD}(?:[ -]{_NAME_WORD}){{0,2}})(?![\w@])"
    rf"|\b(?:I'm|I am|[Tt]his is|[Ii]t's) ({_NAME_WORD}(?:-{_NAME_WORD})? {_NAME_WORD}(?:-{_NAME_WORD})?)(?![\w@.-]\w)",
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
_NOT_A_NAME_PART = {"will", "may", "mark", "bill", "rose", "grace", "hope", "joy", "june", "april", "august", "dawn"}
_NOT_A_NAME = set(  # capitalised words that follow "I'm" / "this is" / "it's" without being a name
    "fine good great happy sorry sure not just glad okay ok here there back ready still very so really also the a "
    "an this that your my our his her their claim claims support team customer service desk help helpdesk policy "
    "insurance home auto travel premium retail business agent bot assistant manager admin billing sales account "
    "monday tuesday wednesday thursday friday saturday sunday morning afternoon evening night today tomorrow "
    "january february march july september october november december new old all done".split()
)

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
_NO_VALUE = set("unknown|none|null|nil|n/a|na|anonymous|redacted|withheld|not given|not provided|tbd|-|?".split("|"))
_PERSON_NAME = re.compile(r"[^\W\d_]+(?:['.-][^\W\d_]+)*\.?(?: [^\W\d_]+(?:['.-][^\W\d_]+)*\.?){0,4}")
_CAPITALISED = re.compile(r"[A-ZÀ-ÖØ-Þ][^\W\d_]+(?:['-][^\W\d_]+)*(?: [A-ZÀ-ÖØ-Þ][^\W\d_]+(?:['-][^\W\d_]+)*){1,3}")


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
    if kind in ("PERSON", "ADDRESS") and value.lower().strip(" .") in _NO_VALUE:
        return None
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


def candidates(text: str) -> Iterable[Detection]:
    """Every value the detectors find in ``text``, overlapping; ``Scrubber.detect`` picks among them."""

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
    for m in (*_ADDRESS.finditer(text), *_UK_POSTCODE.finditer(text)):
        yield det(m.start(), m.end(), "ADDRESS", _normalize("ADDRESS", m.group()))
    for m in _NAME_CTX.finditer(text):
        g = 1 if m.group(1) else 2
        words = [w.lower() for w in re.split(r"[ -]", m.group(g))]
        if words[0] not in _NOT_A_NAME_PART and (g == 1 or not _NOT_A_NAME.intersection(words)):
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
        if parsed is not None and _dob_context(text, m.start(), m.end()):
            yield det(m.start(), m.end(), "DOB", parsed[0].isoformat())


def _dob_context(text: str, start: int, end: int) -> bool:
    """A date is a birth date after "born"/"birth"/"DOB" (or "verify ... <email> ..."), or before "(DOB)"."""
    for keyword in _DOB_BEFORE.finditer(text, max(0, start - 90), start):
        gap, verify = text[keyword.end() : start], keyword.group("verify") is not None
        if len(gap) <= (90 if verify else 30) and (not verify or "@" in gap) and not _GAP_BREAK.search(gap):
            return True
    return _DOB_AFTER.match(text, end, min(len(text), end + 40)) is not None
