"""Write ``pii_labelled.jsonl``: a deterministic, labelled synthetic PII set for ``tests/test_pii.py``.

Each line is ``{"text": ..., "spans": [{"start", "end", "type"}]}``; negatives (tricky text without PII:
ids, amounts, years, order numbers, filing dates, versions, non-Luhn numbers, invalid IBANs) have no spans.
Contexts vary: sentences, chat replies, JSON tool results and log lines. The validators here (Luhn, mod-97)
are written independently of ``agentft.pii``. Run ``python tests/data/make_pii_set.py`` to regenerate.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Callable
from pathlib import Path

OUT = Path(__file__).with_name("pii_labelled.jsonl")
FIRST = "ada ben carla dev elif femi gita hugo ines jon kemal lena mateo nia omar priya quinn rosa sami tara".split()
LAST = "abebe berg costa diaz eze fischer garcia haddad ito jensen kowalski larsen mensah novak okafor petrov".split()
MONTHS = "January February March April May June July August September October November December".split()
SLOT = re.compile(r"«(\d)»")


def luhn_complete(body: str) -> str:
    for check in "0123456789":
        digits = [int(c) for c in body + check][::-1]
        if sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(digits)) % 10 == 0:
            return body + check
    raise AssertionError


def iban_check(country: str, bban: str) -> str:
    number = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    return f"{country}{98 - number % 97:02d}{bban}"


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def alnum(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def email(rng: random.Random) -> str:
    first, last, n = rng.choice(FIRST), rng.choice(LAST), rng.randrange(1, 999)
    domain = rng.choice(
        [
            "example.com",
            "mail.example.org",
            "acme-insurance.com",
            "gmail.com",
            "uni.edu",
            "corp.io",
            "claims.example.co.uk",
        ]
    )
    local = rng.choice(
        [
            f"{first}.{last}{n}",
            f"{first[0]}{last}",
            f"{first}_{last}",
            f"{first}+claims",
            f"{first}-{last}{n}",
            f"{last}.{first}",
        ]
    )
    value = f"{local}@{domain}"
    return value.title() if rng.random() < 0.1 else value


def phone(rng: random.Random) -> str:
    a, b, c = f"{rng.randrange(200, 999)}", f"{rng.randrange(100, 999)}", digits(rng, 4)
    return rng.choice(
        [
            f"+1 {a} {b} {c}",
            f"+1-{a}-{b}-{c}",
            f"({a}) {b}-{c}",
            f"{a}-{b}-{c}",
            f"{a}.{b}.{c}",
            f"+1 ({a}) {b}-{c}",
            f"1-800-{b}-{c}",
            f"+44 20 {digits(rng, 4)} {digits(rng, 4)}",
            f"+49 30 {digits(rng, 7)}",
            f"+33 1 {digits(rng, 2)} {digits(rng, 2)} {digits(rng, 2)} {digits(rng, 2)}",
            f"+91 98{digits(rng, 3)} {digits(rng, 5)}",
            f"+61 4{digits(rng, 2)} {digits(rng, 3)} {digits(rng, 3)}",
            f"+1{a}{b}{c}",
        ]
    )


def card(rng: random.Random) -> str:
    prefix, length = rng.choice(
        [
            ("4", 16),
            ("4", 16),
            ("5" + str(rng.randint(1, 5)), 16),
            ("34", 15),
            ("37", 15),
            ("6011", 16),
            ("4", 13),
            ("2221", 16),
        ]
    )
    number = luhn_complete(prefix + digits(rng, length - len(prefix) - 1))
    sep = rng.choice(["", "", " ", "-"])
    if length == 15:
        return sep.join([number[:4], number[4:10], number[10:]]) if sep else number
    if length == 13:
        return number
    return sep.join(number[i : i + 4] for i in range(0, 16, 4))


def ssn(rng: random.Random, sep: str = "-") -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}{sep}{rng.randint(1, 99):02d}{sep}{rng.randint(1, 9999):04d}"


IBAN_FORMATS = {
    "DE": "n18",
    "GB": "a4n14",
    "FR": "n10c11n2",
    "NL": "a4n10",
    "ES": "n20",
    "IT": "a1n10c12",
    "BE": "n12",
    "CH": "n17",
}


def iban_bban(rng: random.Random, layout: str) -> str:
    pools = {"n": string.digits, "a": string.ascii_uppercase, "c": string.ascii_uppercase + string.digits}
    return "".join(alnum(rng, int(n), pools[k]) for k, n in re.findall(r"([nac])(\d+)", layout))


def iban(rng: random.Random, valid: bool = True) -> str:
    country = rng.choice(sorted(IBAN_FORMATS))
    value = iban_check(country, iban_bban(rng, IBAN_FORMATS[country]))
    if not valid:
        value = value[:2] + f"{(int(value[2:4]) + rng.randint(1, 90)) % 100:02d}" + value[4:]
    return " ".join(value[i : i + 4] for i in range(0, len(value), 4)) if rng.random() < 0.5 else value


def ip(rng: random.Random) -> str:
    if rng.random() < 0.6:
        return ".".join(
            str(o)
            for o in (
                rng.choice([10, 34, 52, 81, 172, 192, 203]),
                rng.randrange(256),
                rng.randrange(256),
                rng.randrange(1, 255),
            )
        )
    groups = [f"{rng.randrange(65536):x}" for _ in range(8)]
    return rng.choice(
        [
            ":".join(groups),
            f"2001:db8::{groups[0]}:{groups[1]}",
            f"fe80::{':'.join(groups[:4])}",
            f"{groups[0]}:{groups[1]}:{groups[2]}::{groups[3]}",
        ]
    )


def secret(rng: random.Random) -> tuple[str, str]:
    """A (template, value): the template's «0» is where the value goes."""
    kind = rng.randrange(10)
    if kind == 0:
        return "OPENAI_API_KEY=«0»", "sk-proj-" + alnum(rng, 40)
    if kind == 1:
        return "charged with key «0» in the billing job", "sk_live_" + alnum(rng, 24)
    if kind == 2:
        return "aws_access_key_id = «0»", "AKIA" + alnum(rng, 16, string.ascii_uppercase + string.digits)
    if kind == 3:
        return "export GITHUB_TOKEN=«0»", "ghp_" + alnum(rng, 36)
    if kind == 4:
        return "slack bot token «0» was rotated", f"xoxb-{digits(rng, 12)}-{digits(rng, 12)}-{alnum(rng, 24)}"
    if kind == 5:
        return '{"api_key": "«0»", "region": "eu"}', alnum(rng, 32)
    if kind == 6:
        return "Authorization: Bearer «0»", alnum(rng, 28) + "." + alnum(rng, 12)
    if kind == 7:
        jwt = ".".join(["eyJhbGciOiJIUzI1NiJ9", "eyJ" + alnum(rng, 30), alnum(rng, 43)])
        return "session cookie: «0»", jwt
    if kind == 8:
        return "DEBUG connect db user=claims password=«0» host=db", alnum(rng, 6) + digits(rng, 3) + "!"
    return "maps key «0» (restricted)", "AIza" + alnum(rng, 35, string.ascii_letters + string.digits + "_-")


def dob_value(rng: random.Random) -> str:
    y, m, d = rng.randint(1940, 2005), rng.randint(1, 12), rng.randint(1, 28)
    return rng.choice(
        [
            f"{y}-{m:02d}-{d:02d}",
            f"{y}-{m:02d}-{d:02d}",
            f"{m:02d}/{d:02d}/{y}",
            f"{d:02d}.{m:02d}.{y}",
            f"{MONTHS[m - 1]} {d}, {y}",
            f"{d} {MONTHS[m - 1]} {y}",
            f"{MONTHS[m - 1][:3]} {d} {y}",
            f"{y}/{m:02d}/{d:02d}",
        ]
    )


TEMPLATES: dict[str, list[str]] = {
    "EMAIL": [
        "Please send the form to «0» today.",
        "You can reach me at «0»",
        "ERROR smtp: bounce from <«0»>",
        '{"customer_id": "CUS-0042", "email": "«0»", "status": "active"}',
        "cc: «0»; re: CLM-123456",
        "Thanks! I've updated the contact to «0».",
        "user=«0» action=login ok",
    ],
    "PHONE": [
        "Call me back on «0» please.",
        '{"customer_id": "CUS-0107", "phone": "«0»"}',
        "My new number is «0».",
        "2025-03-02 10:00:01 INFO sms sent to «0» ok",
        "Sure, I'll change the phone number to «0» - confirm?",
        "tel: «0» (mobile)",
    ],
    "CARD": [
        "The card on file is «0».",
        '{"card_number": "«0»", "segment": "retail"}',
        "Charge «0» for $120.00",
        "payment failed card=«0» code=51",
        "My card number is «0», expiring 04/27.",
    ],
    "SSN": [
        "Customer SSN «0» on record.",
        '{"customer_id": "CUS-0012", "ssn": "«0»"}',
        "ssn=«0» verified",
        "My social security number is «0».",
        "The SSN you gave («0») matches.",
    ],
    "IBAN": [
        "Refund to IBAN «0» please.",
        '{"iban": "«0»", "amount": 250.0}',
        "payout account «0» (EUR)",
        "Transfer 1,200.00 to «0» by Friday.",
        "beneficiary iban=«0» ref=CLM-998877",
    ],
    "IP": [
        "Login from «0» was blocked.",
        '{"client_ip": "«0»", "status": 403}',
        "GET /claims 200 src=«0» 12ms",
        "The request came from «0», is that you?",
        "allowlist: «0»",
    ],
    "DOB": [
        "I was born on «0».",
        "Caller verified earlier, date of birth: «0».",
        "DOB «0», policy POL-12345",
        '{"customer_id": "CUS-0042", "date_of_birth": "«0»"}',
        "my birthday is «0»",
        "verify dob=«0» ok",
        "date of birth is «0»",
        "«0» is my date of birth",
        "D.O.B.: «0»",
        "birth date «0» (per ID card)",
    ],
}
SSN_CONTEXT = ["SSN «0»", "social security number: «0»", "my SSN is «0»", '{"ssn": "«0»"}', "Social Security No. «0»"]
MULTI = [
    "I'm «0», born «1»",
    "Hi, this is «0», my phone is «1».",
    "Card «1» belongs to «0».",
    '{"email": "«0»", "phone": "«1»", "claim_id": "CLM-473809", "amount": 12500.0}',
    "«0» called from «1» about POL-20431",
    "verify_identity(email=«0», date_of_birth=«1»)",
    "You can verify me with «0» and «1».",
    "For verification: «0», «1».",
]

NEGATIVES: list[Callable[[random.Random], str]] = [
    lambda r: f"Claim CLM-{digits(r, 6)} was filed on 2025-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}.",
    lambda r: f"Policy POL-{digits(r, 5)} of customer CUS-{r.randrange(10000):04d} renews in {r.randint(2020, 2030)}.",
    lambda r: f"The amount is {r.randrange(1000, 99999):,}.{r.randrange(100):02d} USD, paid {r.randint(1, 28)} March.",
    lambda r: f"Order #{digits(r, 7)} shipped; invoice INV-{r.randint(2019, 2026)}-{digits(r, 5)}.",
    lambda r: (
        f"Upgraded agentft to v{r.randint(0, 9)}.{r.randint(0, 20)}.{r.randint(0, 30)} (version "
        f"{r.randint(1, 9)}.{r.randint(0, 9)}.{r.randint(0, 9)}.{r.randint(0, 9)})."
    ),
    lambda r: f"Reference number {non_luhn(r)} is not a card.",
    lambda r: f"IBAN {iban(r, valid=False)} failed validation.",
    lambda r: (
        f'{{"claim_id": "CLM-{digits(r, 6)}", "amount": {r.randrange(100, 9000)}.0, "filed_on": '
        f'"2025-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}", "status": "submitted"}}'
    ),
    lambda r: (
        f"2025-03-02T12:{r.randrange(60):02d}:{r.randrange(60):02d}Z INFO request_id={alnum(r, 8)} "
        f"latency_ms={r.randrange(900)} tokens={r.randrange(4000)}"
    ),
    lambda r: (
        f"Date of birth is required; the claim was filed {r.randint(2020, 2025)}-0{r.randint(1, 9)}-1{r.randint(0, 9)}."
    ),
    lambda r: f"She was born in {r.randint(1950, 2000)} and moved in {r.randint(2001, 2024)}.",
    lambda r: (
        f"Can you verify the claim filed on 2025-0{r.randint(1, 9)}-{r.randint(10, 28)}? I was born in 1980; "
        f"it was filed 03/{r.randint(10, 28)}/2025."
    ),
    lambda r: f"Invalid SSNs: {r.choice(['000', '666', '912'])}-{digits(r, 2)}-{digits(r, 4)} cannot be issued.",
    lambda r: (
        f"ZIP {digits(r, 5)}-{digits(r, 4)}, ISBN 978-{r.randint(0, 9)}-{digits(r, 2)}-{digits(r, 6)}-{r.randint(0, 9)}"
    ),
    lambda r: f"uuid 123e4567-e89b-12d3-a456-{digits(r, 12)} commit {alnum(r, 40, '0123456789abcdef')}",
    lambda r: f"Server listening on 127.0.0.1:{r.randint(1024, 65535)} and [::1], bound 0.0.0.0",
    lambda r: f"max_tokens={r.randrange(64, 4096)} prompt_tokens={r.randrange(10, 900)}; password reset link sent",
    lambda r: (
        f"Meeting at {r.randint(1, 12)}:{r.randrange(60):02d} on April {r.randint(1, 28)}, 2025; room {digits(r, 3)}"
    ),
    lambda r: f"Epoch 17{digits(r, 11)} ms; build 10.0.{digits(r, 5)}.{digits(r, 4)}; pi is 3.14159",
    lambda r: f"Deductible ${r.randrange(1, 10)},{digits(r, 3)}.00 applies to claims over 5000 (limit 3000).",
    lambda r: (
        f"Claim CLM-{digits(r, 6)}: approved. Reason: covered. Escalations in Q{r.randint(1, 4)} "
        f"{r.randint(2020, 2026)}."
    ),
]


def non_luhn(rng: random.Random) -> str:
    number = luhn_complete("4" + digits(rng, 14))
    return number[:-1] + str((int(number[-1]) + rng.randint(1, 9)) % 10)


def compose(template: str, values: list[tuple[str, str]]) -> dict:
    text, spans, last = "", [], 0
    for m in SLOT.finditer(template):
        value, kind = values[int(m.group(1))]
        text += template[last : m.start()]
        spans.append({"start": len(text), "end": len(text) + len(value), "type": kind})
        text += value
        last = m.end()
    return {"text": text + template[last:], "spans": spans}


def generate(seed: int = 20250302) -> list[dict]:
    rng = random.Random(seed)
    makers: dict[str, Callable[[random.Random], str]] = {
        "EMAIL": email,
        "PHONE": phone,
        "CARD": card,
        "SSN": ssn,
        "IBAN": iban,
        "IP": ip,
        "DOB": dob_value,
    }
    records = []
    for kind, templates in TEMPLATES.items():
        for i in range(70):
            records.append(compose(templates[i % len(templates)], [(makers[kind](rng), kind)]))
    for i in range(20):
        records.append(compose(SSN_CONTEXT[i % len(SSN_CONTEXT)], [(ssn(rng, rng.choice(["", " "])), "SSN")]))
    for _ in range(70):
        template, value = secret(rng)
        records.append(compose(template, [(value, "SECRET")]))
    for i in range(80):
        template = MULTI[i % len(MULTI)]
        second = {1: ("PHONE", phone), 2: ("CARD", card), 3: ("PHONE", phone), 4: ("PHONE", phone)}.get(
            i % len(MULTI), ("DOB", dob_value)
        )
        records.append(compose(template, [(email(rng), "EMAIL"), (second[1](rng), second[0])]))
    for i in range(200):
        records.append({"text": NEGATIVES[i % len(NEGATIVES)](rng), "spans": []})
    return records


def main() -> None:
    records = generate()
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    print(f"{len(records)} records, {sum(len(r['spans']) for r in records)} PII spans -> {OUT}")


if __name__ == "__main__":
    main()
