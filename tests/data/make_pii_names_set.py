"""Write ``pii_names_labelled.jsonl``: names, addresses and the formats the first scrubber missed, labelled.

Each line is ``{"text", "spans": [{"start", "end", "type"}], "where"}``; ``where`` is ``json`` (a tool result or
tool-call arguments as JSON text), ``text`` (free text with a cue: "my name is", "Dear Ms", "I live at"),
``bare`` (free text without any cue: "Maria Gonzalez called about her claim", the case only an NER model can
find) or ``negative`` (look-alikes: no span). Written independently of ``agentft.pii``; names and streets are not
the scrubber's fake lists. Run ``python tests/data/make_pii_names_set.py`` to regenerate.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

OUT = Path(__file__).with_name("pii_names_labelled.jsonl")
FIRST = (
    "Maria José Siobhán Aisha Wei Anne-Marie Tomás Olga Kwame Léa Ngozi Rahul Sofia Hiroshi Fatima Lucas Ingrid "
    "Mehmet Chloé Dmitri Amara Pedro Yuki Helga Samir Nadia Oluwaseun Camille Jakub Leila"
).split()
LAST = (
    "Gonzalez Núñez O'Connor Bello Zhang Dubois Silva Petrova Mensah Moreau Okonkwo Sharma Rossi Tanaka Rahman "
    "Schmidt Lindqvist Yıldız Lefèvre Ivanov Diallo Ferreira Kobayashi Bauer Haddad Benali Adeyemi Martin Novak "
    "Karimi MacLeod"
).split()
STREETS = "Elm Oak Station Church Victoria Park High Mill Harbour Queen King Chestnut Willowbrook Rue".split()
SUFFIXES = "Street Road Avenue Lane Drive Close Way Crescent Terrace Boulevard".split()
CITIES = "Springfield Leeds Lyon Osaka Pune Bristol Toulouse Kyoto Mumbai Dublin Porto Graz".split()
UK_OUTCODES = "LS1 M4 SW1A EC1A B33 G2 EH8 BS1 CF10 NE1 OX2 CB2".split()


def name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def street(rng: random.Random) -> str:
    return f"{rng.randint(1, 240)}{rng.choice(['', '', '', 'B'])} {rng.choice(STREETS)} {rng.choice(SUFFIXES)}"


def uk_postcode(rng: random.Random) -> str:
    letters = "ABDEFGHJLNPQRSTUWXYZ"
    return f"{rng.choice(UK_OUTCODES)} {rng.randint(1, 9)}{rng.choice(letters)}{rng.choice(letters)}"


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def national_phone(rng: random.Random) -> str:
    return rng.choice(
        [
            f"020 7946 {digits(rng, 4)}",
            f"07700 9{digits(rng, 5)}",
            f"0161 496 {digits(rng, 4)}",
            f"01 {digits(rng, 2)} {digits(rng, 2)} {digits(rng, 2)} {digits(rng, 2)}",
            f"06.{digits(rng, 2)}.{digits(rng, 2)}.{digits(rng, 2)}.{digits(rng, 2)}",
            f"03-{digits(rng, 4)}-{digits(rng, 4)}",
            f"090-{digits(rng, 4)}-{digits(rng, 4)}",
            f"098{digits(rng, 3)} {digits(rng, 5)}",
            f"+44 20 7946 {digits(rng, 4)}",
            f"+33 1 {digits(rng, 2)} {digits(rng, 2)} {digits(rng, 2)} {digits(rng, 2)}",
            f"+81 3-{digits(rng, 4)}-{digits(rng, 4)}",
            f"+91 98{digits(rng, 3)} {digits(rng, 5)}",
        ]
    )


def nino(rng: random.Random) -> str:
    first, second = "ABCEGHJKLMNOPRSTWXYZ", "ABCEGHJKLMNPRSTWXYZ"
    prefix = "GB"
    while prefix in {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}:
        prefix = rng.choice(first) + rng.choice(second)
    body = [digits(rng, 2) for _ in range(3)]
    sep = rng.choice(["", " "])
    return sep.join([prefix, *body, rng.choice("ABCD")])


def alnum(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def new_secret(rng: random.Random) -> tuple[str, str]:
    kind = rng.randrange(6)
    if kind == 0:
        return "export GITLAB_TOKEN=«»", "glpat-" + alnum(rng, 20, string.ascii_letters + string.digits + "_-")
    if kind == 1:
        return "sendgrid key «» (mail relay)", f"SG.{alnum(rng, 22)}.{alnum(rng, 43)}"
    if kind == 2:
        return "//registry.npmjs.org/:_authToken=«»", "npm_" + alnum(rng, 36)
    if kind == 3:
        key = alnum(rng, 86, string.ascii_letters + string.digits + "+/") + "=="
        return "DefaultEndpointsProtocol=https;AccountName=docs;AccountKey=«»;EndpointSuffix=core.windows.net", key
    if kind == 4:
        return "twilio account «» sending", "AC" + alnum(rng, 32, "0123456789abcdef")
    return "TWILIO_API_KEY=«»", "SK" + alnum(rng, 32, "0123456789abcdef")


def record(template: str, values: list[tuple[str, str]], where: str, as_json: bool = False) -> dict:
    """``template`` with each «» replaced by a value (JSON-escaped inside a JSON template), and its spans."""
    text, spans = "", []
    parts = template.split("«»")
    for part, (value, kind) in zip(parts, values, strict=False):
        text += part
        written = json.dumps(value, ensure_ascii=False)[1:-1] if as_json else value
        spans.append({"start": len(text), "end": len(text) + len(written), "type": kind})
        text += written
    return {"text": text + parts[-1], "spans": spans, "where": where}


JSON_TEMPLATES = [
    ('{"customer_id": "CUS-0042", "name": "«»", "segment": "retail"}', ["PERSON"]),
    ('{"customer": {"first_name": "«»", "last_name": "«»", "region": "north"}}', ["FIRST", "LAST"]),
    ('{"policyholder_name": "«»", "policy_id": "POL-12345"}', ["PERSON"]),
    ('{"fullName": "«»", "status": "active"}', ["PERSON"]),
    ('{"claim_id": "CLM-123456", "beneficiary": "«»", "amount": 1200.0}', ["PERSON"]),
    ('{"name": "«»", "address": "«»", "city": "«»"}', ["PERSON", "ADDRESS", "CITY"]),
    ('{"address": {"street": "«»", "city": "«»", "postcode": "«»"}}', ["ADDRESS", "CITY", "POSTCODE"]),
    ('{"billing_address": "«», «»", "card_last4": "1111"}', ["ADDRESS", "CITY"]),
    ('{"customer_name": "«»", "home_address": "«»"}', ["PERSON", "ADDRESS"]),
    ('[{"contact_name": "«»", "phone": "«»"}]', ["PERSON", "PHONE"]),
]
TEXT_TEMPLATES = [
    ("Hi, my name is «» and I need to update my claim.", ["PERSON"]),
    ("Dear Ms «», your claim has been received.", ["LAST"]),
    ("Hello, I'm «». My policy is POL-12345.", ["PERSON"]),
    ("This is «» calling about CLM-123456.", ["PERSON"]),
    ("Please send the documents to «», «» «».", ["ADDRESS", "CITY", "POSTCODE"]),
    ("I moved to «» last month.", ["ADDRESS"]),
    ("Mr. «» asked for a callback.", ["LAST"]),
    ("Call me on «» after six.", ["PHONE"]),
    ("My NI number is «».", ["NINO"]),
    ("Employee «» on payroll.", ["NINO"]),
]
BARE_TEMPLATES = [
    ("«» called about the hail damage.", ["PERSON"]),
    ("Approved after a chat with «» from the garage.", ["PERSON"]),
    ("Forward this to «» in accounts.", ["PERSON"]),
    ("The adjuster spoke to «» on Tuesday and will call back.", ["PERSON"]),
    ("Claim notes: «» says the pipe burst overnight.", ["PERSON"]),
    ("cc «», «»", ["PERSON", "PERSON"]),
    ("Thanks to «» for the photos of the damage.", ["PERSON"]),
    ("Her neighbour «» saw the car hit the fence.", ["PERSON"]),
    ("Escalated by «»; waiting for «» to sign off.", ["PERSON", "PERSON"]),
    ("«» and «» share the policy.", ["PERSON", "PERSON"]),
]
NEGATIVES = [
    '{"name": "home", "product": "Premium Cover"}',
    '{"tool": {"name": "lookup_policy"}, "arguments": {"policy_id": "POL-12345"}}',
    '{"product_name": "Gold Plan", "username": "mgonzalez", "phone": "n/a", "date_of_birth": "unknown"}',
    "I'm Fine Thanks, this is Claim Support. It's Monday Morning.",
    "Product code AB123456E is discontinued; SKU DF123456A; QQ123456C in the docs.",
    "Upgraded to version 01.02.03.04.05; build 0.12.34.56.78 released.",
    "Order 0123456789 shipped; invoice 2024-0042-1234 paid; filed 03-12-2024.",
    "ACME ACcount AC12 and SKU SK-0042; hash ac3f9a1b2c4d5e6f7a8b9c0d1e2f3a4b5c",
    "npm_modules and glpat- are prefixes; SG.x.y is short.",
    "12 items in stock, 3 boxes Street Fighter; Room 4, floor 12, building 7.",
    "model T5 3XL, size XL 2XL, Q3 2024 report; ISBN 0-306-40615-2.",
    "The name field is required. Dear customer, thanks for waiting.",
]


def generate(seed: int = 20261129) -> list[dict]:
    rng = random.Random(seed)
    records = []

    def value(kind: str) -> tuple[str, str]:
        makers = {
            "PERSON": lambda: (name(rng), "PERSON"),
            "FIRST": lambda: (rng.choice(FIRST), "PERSON"),
            "LAST": lambda: (rng.choice(LAST), "PERSON"),
            "ADDRESS": lambda: (street(rng), "ADDRESS"),
            "CITY": lambda: (rng.choice(CITIES), "ADDRESS"),
            "POSTCODE": lambda: (uk_postcode(rng), "ADDRESS"),
            "PHONE": lambda: (national_phone(rng), "PHONE"),
            "NINO": lambda: (nino(rng), "NINO"),
        }
        return makers[kind]()

    for i in range(60):
        template, kinds = JSON_TEMPLATES[i % len(JSON_TEMPLATES)]
        records.append(record(template, [value(k) for k in kinds], "json", as_json=True))
    for i in range(60):
        template, kinds = TEXT_TEMPLATES[i % len(TEXT_TEMPLATES)]
        values = [value(k) for k in kinds]
        if template.startswith("Please send"):  # the city of a free-text address is not labelled: no cue says so
            text = record(template, values, "text")
            text["spans"] = [s for s, k in zip(text["spans"], kinds, strict=True) if k != "CITY"]
            records.append(text)
        else:
            records.append(record(template, values, "text"))
    for i in range(48):  # national phone layouts and NI numbers, 4 per layout
        template = ["Call me on «» after six.", '{"mobile": "«»"}', "tel «» (home)", "NI: «»"][i % 4]
        kind = "NINO" if template.startswith("NI") else "PHONE"
        records.append(record(template, [value(kind)], "json" if template.startswith("{") else "text"))
    for _ in range(24):
        template, secret = new_secret(rng)
        records.append(record(template, [(secret, "SECRET")], "text"))
    for i in range(60):
        template, kinds = BARE_TEMPLATES[i % len(BARE_TEMPLATES)]
        records.append(record(template, [value(k) for k in kinds], "bare"))
    records += [{"text": text, "spans": [], "where": "negative"} for text in NEGATIVES]
    return records


def main() -> None:
    records = generate()
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    print(f"{len(records)} records, {sum(len(r['spans']) for r in records)} spans -> {OUT}")


if __name__ == "__main__":
    main()
