"""Claims desk tasks: nine kinds, balanced, on disjoint customers and disjoint phrasings per split.

Splits: ``train``, ``validation`` (settings are chosen here) and ``test`` (headline figures), each on
its own block of customers, with its own pool of request, identity and consent phrasings
(``phrasings.json``), and ``own_words``: requests written by hand in people's own words
(``own_words.json``) on a fourth block of customers, and ``own_words_validation``: other hand-written requests
(``own_words_validation.json``) on a fifth block, with the validation split's handbook topics, to choose
settings on when the question is words no template produced. Handbook questions of each split are about topics
no other split asks about, so the answer has to come from the search result. Every task carries the
expert's turns (``solution``), the facts its final reply must contain (``must_say``), and what the
simulated user answers (``facts``: opening, identity and consent replies, answers to clarifying questions).
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
from pathlib import Path
from typing import Any

from agentft.authoring import (
    ASK_IDENTITY,
    SPLITS,
    Task,
    date_to_words,
    load_phrasings,
    number_to_words,
    split_markdown,
)
from agentft.builtin_tools.claims import APPROVAL_LIMIT, COVERAGE, new_claim_id

KINDS = (
    "claim_status",
    "approve",
    "deny",
    "escalate",
    "file_claim",
    "update_contact",
    "handbook",
    "other_customer",
    "unverified",
)
HERE = Path(__file__).resolve().parent
# Request, identity and consent phrasings, in disjoint train / validation / test pools (plain data).
PHRASINGS = load_phrasings(HERE / "phrasings.json")
# Requests written by hand in people's own words: the own_words split (never trained or tuned on).
OWN_WORDS: list[dict[str, str]] = json.loads((HERE / "own_words.json").read_text(encoding="utf-8"))["requests"]
# More of them, by other people, to choose settings on: the own_words_validation split.
OWN_WORDS_VALIDATION: list[dict[str, str]] = json.loads(
    (HERE / "own_words_validation.json").read_text(encoding="utf-8")
)["requests"]
WRITTEN = {"own_words": OWN_WORDS, "own_words_validation": OWN_WORDS_VALIDATION}
"""The hand-written splits, after the generated ones (their customers come last, so they move no other task)."""
HELD_OUT_POOL = {"own_words": "test", "own_words_validation": "validation"}
"""The generated split whose handbook topics (and phrasing pool) each hand-written split shares."""
REQUESTS = {
    "claim_status": "claim_status",
    "approve": "process",
    "deny": "process",
    "escalate": "process",
    "file_claim": "file_claim",
    "update_contact": "update_contact",
    "other_customer": "other_customer",
}
RELATIVES = ("neighbour", "brother", "sister", "mother", "father", "colleague", "friend", "husband", "wife")
# (handbook chunk, the fact the reply must say, question phrasings). The expert answers with the chunk's
# sentence that holds the fact, copied from the search result: a skill that carries over to unseen topics.
HANDBOOK = [
    (
        "documents-for-a-water-claim",
        "plumber's report",
        ["What do I need for a water damage claim?", "Which documents does a water claim need?"],
    ),
    (
        "documents-for-a-theft-claim",
        "police report",
        ["What does a theft claim need?", "Do I need a police report for a theft claim?"],
    ),
    (
        "documents-for-a-fire-claim",
        "fire department incident number",
        ["What do I need to file a fire claim?", "Which documents are needed for a fire claim?"],
    ),
    (
        "travel-deductible",
        "no deductible",
        ["Is there a deductible on travel policies?", "What is the travel deductible?"],
    ),
    (
        "approval-limits",
        "5000 dollars",
        ["Up to what amount can the desk approve a home claim?", "What is the approval limit for home claims?"],
    ),
    (
        "home-coverage",
        "fire, water damage and theft",
        ["What does a home policy cover?", "Which incidents does a home policy cover, and which not?"],
    ),
    (
        "auto-coverage",
        "mechanical breakdown",
        ["Does my auto policy cover mechanical breakdown?", "Is a mechanical breakdown of my car covered?"],
    ),
    (
        "travel-coverage",
        "6 hours",
        ["What do travel policies cover?", "Which incidents are covered by travel coverage?"],
    ),
    (
        "flood-exclusion",
        "excluded",
        ["Is flooding from a river covered by my home policy?", "Does home insurance pay for flooding from the sea?"],
    ),
    ("premium-payment-dates", "first day of each month", ["When are premiums due?", "What day is my premium due?"]),
    (
        "cancelling-a-policy",
        "10 business days",
        ["If I cancel my policy, when do I get the refund?", "How long does a refund take after cancelling?"],
    ),
    (
        "third-party-requests",
        "verified policyholder",
        [
            "Can a family member discuss my claim with the claims desk?",
            "Will you discuss my policy with a family member?",
        ],
    ),
    (
        "contact-details",
        "immediately",
        ["When does a change of phone number take effect?", "How soon does a new email address take effect?"],
    ),
    (
        "sensitive-data",
        "last four digits",
        ["Can you read out my full card number?", "Will you tell me my social security number over the phone?"],
    ),
    (
        "glass-repair",
        "no deductible",
        ["Is there a deductible for windshield repairs?", "Do glass repairs on my car have a deductible?"],
    ),
    (
        "filing-deadline",
        "60 days",
        [
            "How long do I have to file a claim after an incident?",
            "What is the deadline for filing a claim?",
            "Is there a time limit for filing a claim after an incident?",
        ],
    ),
    (
        "payment-time",
        "5 business days",
        [
            "How soon are approved claims paid?",
            "When will I get paid after my claim is approved?",
            "How long does payment take once a claim is approved?",
        ],
    ),
    (
        "home-deductible",
        "500 dollars",
        [
            "What is the deductible on a home policy?",
            "How much is the home deductible?",
            "Do home claims have a deductible, and how much?",
        ],
    ),
    (
        "auto-deductible",
        "250 dollars",
        [
            "What is the deductible for auto claims?",
            "How much is the auto deductible?",
            "What deductible applies to my car policy claims?",
        ],
    ),
    (
        "appeals",
        "30 days",
        [
            "How long do I have to appeal a denied claim?",
            "Until when can I appeal a denial?",
            "What is the deadline to appeal a claim decision?",
        ],
    ),
    (
        "cooling-off-period",
        "14 days",
        [
            "What is the cooling-off period for a new policy?",
            "Can I cancel a new policy for a full refund?",
            "How long after buying can I cancel with a full refund?",
        ],
    ),
    (
        "lost-baggage",
        "2000 dollars",
        [
            "How much lost baggage does travel insurance cover?",
            "What is the limit for lost baggage?",
            "Up to what amount is lost luggage covered?",
        ],
    ),
    (
        "temporary-accommodation",
        "30 nights",
        [
            "How many hotel nights are covered if my home is uninhabitable?",
            "Does my home policy pay for a hotel, and for how long?",
            "How long is temporary accommodation paid?",
        ],
    ),
    (
        "rental-car-cover",
        "14 days",
        [
            "How long is a rental car covered after a collision?",
            "Do I get a rental car while mine is repaired?",
            "For how many days is a rental car paid?",
        ],
    ),
    (
        "senior-adjuster-review",
        "10 business days",
        [
            "How long does a senior adjuster take to review an escalated claim?",
            "When will the senior adjuster look at my escalated claim?",
            "How long is the review of an escalated claim?",
        ],
    ),
    (
        "lapsed-policies",
        "30 days",
        [
            "When does a policy lapse?",
            "How late can a premium be before the policy lapses?",
            "After how many overdue days does my policy lapse?",
        ],
    ),
    (
        "emergency-repairs",
        "1000 dollars",
        [
            "How much can I spend on emergency repairs without approval?",
            "Can I order emergency repairs without asking first?",
            "What is the limit for emergency repairs?",
        ],
    ),
    # Validation-only topics, then test-only ones: the answer must come from the retrieved text.
    (
        "payment-method",
        "3 business days",
        [
            "How long does it take to verify a new bank account for payments?",
            "Can my claim be paid to a new bank account right away?",
            "When can a new bank account receive payments?",
        ],
    ),
    (
        "no-claims-discount",
        "10 percent",
        [
            "How much discount do I get for a year without claims?",
            "What is the no-claims discount?",
            "Does a claim-free year lower my auto premium?",
        ],
    ),
    (
        "trip-delay",
        "50 dollars",
        [
            "How much do I get paid if my trip is delayed?",
            "What does the policy pay for a trip delay?",
            "Is there compensation for a delayed flight?",
        ],
    ),
    (
        "medical-claims-abroad",
        "100000 dollars",
        [
            "Up to what amount is emergency treatment abroad covered?",
            "Is emergency treatment abroad covered, and up to what amount?",
            "How much medical treatment abroad is covered?",
        ],
    ),
    (
        "complaints",
        "8 business days",
        [
            "How do I make a complaint, and how fast is the answer?",
            "How long does a complaint take to be answered?",
            "Who handles complaints, and how long do they take to answer?",
        ],
    ),
    (
        "reinstating-a-policy",
        "90 days",
        [
            "Can I reinstate a lapsed policy?",
            "How long do I have to reinstate my lapsed policy?",
            "Is it possible to reactivate a policy after it lapsed?",
        ],
    ),
]
# Topics asked about per split: train the first 25, validation two more, test the rest; a hand-written split
# asks about its generated counterpart's topics.
TOPICS = {"train": HANDBOOK[:25], "validation": HANDBOOK[25:27], "test": HANDBOOK[27:]}
TOPICS.update({split: TOPICS[pool] for split, pool in HELD_OUT_POOL.items()})
CHUNKS = {
    chunk.id: chunk.text for chunk in split_markdown((HERE / "handbook.md").read_text(encoding="utf-8"), doc="handbook")
}


def handbook_answer(slug: str, fact: str) -> str:
    """The sentence of the handbook chunk that says ``fact``, with its citation."""
    sentences = re.split(r"(?<=\.) ", CHUNKS[f"handbook#{slug}"])
    return f"{next(s for s in sentences if fact in s)} [handbook#{slug}]"


def _call(name: str, match: str = "exact", **arguments: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "arguments": arguments}
    if match != "exact":
        entry["match"] = match
    return {"calls": [entry]}


def _say(text: str) -> dict[str, Any]:
    return {"say": text}


def generate(conn: sqlite3.Connection, rng: random.Random, per_kind: dict[str, int]) -> dict[str, list[Task]]:
    """Tasks per split: ``per_kind[split]`` of each kind for the generated splits, then the hand-written ones."""
    conn.row_factory = sqlite3.Row
    customers = conn.execute("SELECT * FROM customers ORDER BY customer_id").fetchall()
    sizes = [(split, per_kind[split] * len(KINDS)) for split in SPLITS]
    sizes += [(split, len(written)) for split, written in WRITTEN.items()]
    if sum(size for _, size in sizes) > len(customers):
        raise ValueError(f"seed database has {len(customers)} customers, too few for {dict(sizes)} tasks")
    tasks: dict[str, list[Task]] = {}
    offset = 0
    for split, size in sizes:
        block = customers[offset : offset + size]
        offset += size
        written = WRITTEN.get(split, [None] * size)
        tasks[split] = [
            _task(
                conn,
                rng,
                split,
                index,
                customer,
                entry["kind"] if entry else KINDS[index % len(KINDS)],
                block[(index + 1) % len(block)],
                entry,
            )
            for index, (customer, entry) in enumerate(zip(block, written, strict=True))
        ]
    return tasks


def _pick(rng: random.Random, group: str, split: str) -> str:
    pool = PHRASINGS[group][HELD_OUT_POOL.get(split, split)]
    return pool[rng.randrange(len(pool))]


def _task(
    conn: sqlite3.Connection,
    rng: random.Random,
    split: str,
    index: int,
    customer: sqlite3.Row,
    kind: str,
    neighbour: sqlite3.Row,
    written: dict[str, str] | None = None,
) -> Task:
    """One task; ``written`` is a hand-written own-words entry (opening, identity and consent replies)."""
    cus = customer["customer_id"]
    claims = conn.execute(
        "SELECT c.*, p.product, p.status AS policy_status FROM claims c JOIN policies p "
        "ON p.policy_id = c.policy_id WHERE c.customer_id = ? ORDER BY c.rowid",
        (cus,),
    ).fetchall()
    closed, approvable, deniable, escalatable = claims
    solution: list[dict[str, Any]] = []
    must_say: list[str] = []
    dob = customer["date_of_birth"]
    if kind == "unverified":  # the caller's date of birth does not match the records
        dob = f"{int(dob[:4]) + 1}{dob[4:]}"
    fields: dict[str, Any] = {
        "email": customer["email"],
        "dob": dob,
        "dob_long": date_to_words(dob, "day_month_year"),
        "dob_us": date_to_words(dob, "month_day_year"),
        "relative": rng.choice(RELATIVES),
    }
    answers: dict[str, str] = {}
    request_kind = kind
    if kind == "unverified":  # half ask about a claim, half for a phone change
        phone_change = "{phone}" in written["opening"] if written else index % 2 == 0
        request_kind = "update_contact" if phone_change else "claim_status"
    pool = REQUESTS.get(request_kind, "")
    if kind == "other_customer" and index % 2:  # half asked like one's own claim: only the verified data tells
        pool = "claim_status" if index % 4 == 1 else "process"

    if request_kind == "claim_status":
        cid = closed["claim_id"]
        fields["cid"] = cid
        answers["claim"] = f"It's claim {cid}."
        intent = f"I will look up claim {cid} for you."
        solution = [_call("get_claim", claim_id=cid), _say(f"Claim {cid} is {closed['status']}.")]
        must_say = [cid, closed["status"]]
    elif kind in ("approve", "deny", "escalate"):
        row = {"approve": approvable, "deny": deniable, "escalate": escalatable}[kind]
        cid = row["claim_id"]
        fields["cid"] = cid
        answers["claim"] = f"It's claim {cid}."
        reason = {
            "approve": "covered",
            "escalate": "over_limit",
            "deny": "policy_inactive" if row["policy_status"] != "active" else "not_covered",
        }[kind]
        intent = f"I will review claim {cid} for you."
        ask = {
            "approve": f"The review approves claim {cid}. Shall I approve it? Do you confirm?",
            "deny": f"The review denies claim {cid} ({reason}). Shall I record the denial? Do you confirm?",
            "escalate": f"Claim {cid} is over my approval limit. Shall I escalate it to a senior adjuster? "
            "Do you confirm?",
        }[kind]
        done = {
            "approve": f"Claim {cid} is approved.",
            "deny": f"Claim {cid} is denied ({reason}).",
            "escalate": f"Claim {cid} is escalated to a senior adjuster.",
        }[kind]
        solution = [
            _call("review_claim", claim_id=cid),
            _say(ask),
            _call("decide_claim", claim_id=cid, decision=kind, reason=reason),
            _say(done),
        ]
        must_say = [cid, {"approve": "approved", "deny": "denied", "escalate": "escalated"}[kind]]
        if kind == "deny":
            must_say.append(reason)
    elif kind == "file_claim":
        product = approvable["product"]
        policy_id = conn.execute(
            "SELECT policy_id FROM policies WHERE customer_id = ? AND product = ?", (cus, product)
        ).fetchone()[0]
        incident = rng.choice(COVERAGE[product])
        amount = rng.randrange(100, APPROVAL_LIMIT[product], 50)
        fields.update(pid=policy_id, incident=incident, amount=amount, amount_words=number_to_words(amount))
        answers.update(
            policy=f"The policy is {policy_id}.", amount=f"{amount} dollars.", happened=f"It was {incident} damage."
        )
        new_id = new_claim_id(policy_id, incident, amount)
        intent = f"I will file the {incident} claim on policy {policy_id} for you."
        solution = [
            _say(f"I will file a {incident} claim for {amount} dollars on policy {policy_id}. Do you confirm?"),
            _call("file_claim", policy_id=policy_id, incident=incident, amount=amount),
            _say(f"I filed claim {new_id}."),
        ]
        must_say = [new_id]
    elif request_kind == "update_contact":
        phone = f"+1 555 {rng.randint(100, 999)} {rng.randint(1000, 9999)}"
        fields["phone"] = phone
        answers.update(phone=f"The new number is {phone}.", number=f"The new number is {phone}.")
        intent = f"I will change your phone number to {phone}."
        solution = [
            _say(f"I will change your phone number to {phone}. Do you confirm?"),
            _call("update_contact", customer_id=cus, phone=phone),
            _say(f"Your phone number is now {phone}."),
        ]
        must_say = [phone]
    elif kind == "handbook":
        topics = TOPICS[split]
        slug, fact, questions = (
            next(t for t in topics if t[0] == written["topic"]) if written else topics[rng.randrange(len(topics))]
        )
        question = written["opening"] if written else questions[rng.randrange(len(questions))]
        return Task(
            id=f"claims-{split}-{index:04d}",
            split=split,
            kind=kind,
            instruction=question,
            facts={"opening": question, "topic": slug},
            slices={"segment": customer["segment"], "region": customer["region"]},
            solution=[_call("search_handbook", match="name", query=question), _say(handbook_answer(slug, fact))],
            must_say=[fact, f"handbook#{slug}"],
        )
    else:  # other_customer: the claim belongs to someone else, as the identity check says ("not_on_account")
        cid = neighbour_claim(conn, neighbour)
        fields["cid"] = cid
        intent = f"I will {'review' if pool == 'process' else 'look up'} claim {cid} for you."
        solution = [_say(f"Claim {cid} is not on your account, so I can only discuss claims on your own account.")]
        must_say = ["own account"]

    if kind == "unverified":
        solution = [_say("I could not verify your identity, so I cannot change or share anything.")]
        must_say = ["could not verify"]
    if written:
        identity_first = "{email}" in written["opening"]
        template = written["opening"] if identity_first else written["identity"]
        opening = written["opening"].format(**fields)
        identity = written["identity"].format(**fields)
        consent = written["consent"]
    else:
        request = _pick(rng, pool, split).format(**fields)
        template = _pick(rng, "identity", split)
        identity = template.format(**fields)
        consent = _pick(rng, "consent", split)
        identity_first = rng.random() < 0.5
        opening = (
            (f"{identity} {request}" if rng.random() < 0.5 else f"{request} {identity}") if identity_first else request
        )
    # The expert passes the date of birth as the caller said it (the tool reads every common form): copying
    # is what a small model does reliably, converting "24 June 1989" is where it slips.
    said = next((fields[key] for key in ("dob_long", "dob_us") if f"{{{key}}}" in template), dob)
    # A caller asking about a claim is verified against it: the check says whether it is on their account.
    claim = {"claim_id": fields["cid"]} if "cid" in fields else {}
    verify = _call("verify_identity", match="result", email=customer["email"], date_of_birth=said, **claim)
    # The first turn says what the agent is about to do: after the identity check the next step then
    # follows the agent's own words two messages up, not a request several turns back.
    if identity_first:
        solution = [{"say": intent, **verify}, *solution]
    else:
        solution = [_say(f"{intent} {ASK_IDENTITY}"), verify, *solution]
    facts = {
        "opening": opening,
        "identity_reply": identity,
        "consent_reply": consent,
        "answers": answers,
        "customer_id": cus,
    }
    instruction = opening if written else request
    return Task(
        id=f"claims-{split}-{index:04d}",
        split=split,
        kind=kind,
        instruction=instruction,
        facts=facts,
        slices={"segment": customer["segment"], "region": customer["region"]},
        solution=solution,
        must_say=must_say,
    )


def neighbour_claim(conn: sqlite3.Connection, neighbour: sqlite3.Row) -> str:
    return conn.execute(
        "SELECT claim_id FROM claims WHERE customer_id = ? ORDER BY rowid LIMIT 1", (neighbour["customer_id"],)
    ).fetchone()[0]
