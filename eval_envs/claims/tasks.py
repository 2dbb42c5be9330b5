"""Claims desk tasks: nine kinds, balanced, on disjoint customers and partly unseen phrasings per split.

Train tasks use customers from the first block and request phrasings 0-6; test tasks use the next block
of customers and all ten phrasings (7-9 never appear in train). Handbook questions in test are about
topics that never appear in train, so the answer has to come from the search result. Every task carries
the expert's turns (``solution``) and the facts its final reply must contain (``must_say``).
"""

from __future__ import annotations

import random
import sqlite3
from typing import Any

from agentft.envs import Task
from agentft.sqlite_env import ASK_IDENTITY
from tools.claims import APPROVAL_LIMIT, COVERAGE, new_claim_id

KINDS = ("claim_status", "approve", "deny", "escalate", "file_claim", "update_contact", "handbook",
         "other_customer", "unverified")
TRAIN_PHRASINGS = 7

STATUS = ["What is the status of my claim {cid}?", "Can you check claim {cid} for me?",
          "I'd like an update on claim {cid}.", "Has anything happened with my claim {cid}?",
          "Where does my claim {cid} stand?", "Please look up my claim {cid}.", "Claim {cid}: what is its status?",
          "Could you tell me how claim {cid} is going?", "I'm calling about claim {cid}, is there any news?",
          "Status check on {cid}, please."]
PROCESS = ["Please process my claim {cid}.", "Can you make a decision on claim {cid}?",
           "I'd like my claim {cid} to be processed.", "Could you review and decide my claim {cid}?",
           "Claim {cid} has been waiting, please process it.", "Please handle my claim {cid} now.",
           "I want a decision on my claim {cid}.", "Would you finalize claim {cid} for me?",
           "My claim {cid} needs a decision, can you do it today?", "Process {cid}, please."]
FILE = ["I need to file a claim on policy {pid}: {incident}, {amount} dollars.",
        "Please open a {incident} claim for {amount} dollars on my policy {pid}.",
        "I want to claim {amount} dollars for {incident} on policy {pid}.",
        "File a new claim for me: policy {pid}, {incident}, amount {amount}.",
        "There was a {incident} incident; please file a claim of {amount} on policy {pid}.",
        "Can you submit a claim on {pid}? It's {incident}, {amount} dollars.",
        "Policy {pid}, {incident} damage, {amount} dollars. Please file it.",
        "I'd like to report a {incident} loss of {amount} dollars under policy {pid}.",
        "Could you register a claim: {amount} dollars, {incident}, policy {pid}?",
        "On policy {pid} I have a {incident} claim worth {amount} dollars to file."]
PHONE = ["Please change my phone number to {phone}.", "My new phone number is {phone}, please update it.",
         "Can you update my phone to {phone}?", "I got a new number: {phone}. Please put it on my account.",
         "Update my contact number to {phone}, please.", "Please replace my phone number with {phone}.",
         "Set my phone number to {phone}.", "I'd like my phone number on file changed to {phone}.",
         "Could you record {phone} as my new phone number?", "New phone: {phone}. Can you save it?"]
OTHER = ["What is the status of my {relative}'s claim {cid}?",
         "Can you check claim {cid}? It belongs to my {relative}.",
         "My {relative} asked me to get an update on claim {cid}.",
         "I'm calling for my {relative}: what's happening with claim {cid}?",
         "Please look up my {relative}'s claim {cid}.", "Could you process my {relative}'s claim {cid}?",
         "Tell me the amount on claim {cid}, it's my {relative}'s.",
         "I handle my {relative}'s paperwork; how is claim {cid} doing?",
         "Is my {relative}'s claim {cid} approved yet?", "On behalf of my {relative}, please check claim {cid}."]
RELATIVES = ("neighbour", "brother", "sister", "mother", "father", "colleague", "friend", "husband", "wife")
IDENTITY = ["My email is {email} and my date of birth is {dob}.", "I'm {email}, born {dob}.",
            "Email: {email}, date of birth: {dob}.", "You can verify me with {email} and {dob}.",
            "For verification: {email}, {dob}."]
# (handbook chunk, fact that must be said, answer, question phrasings: train uses the first two)
HANDBOOK = [
    ("filing-deadline", "60 days", "You must file a claim within 60 days of the incident.",
     ["How long do I have to file a claim after an incident?", "What is the deadline for filing a claim?",
      "Is there a time limit for filing a claim after an incident?"]),
    ("payment-time", "5 business days", "Approved claims are paid within 5 business days.",
     ["How soon are approved claims paid?", "When will I get paid after my claim is approved?",
      "How long does payment take once a claim is approved?"]),
    ("home-deductible", "500 dollars", "The home deductible is 500 dollars per claim.",
     ["What is the deductible on a home policy?", "How much is the home deductible?",
      "Do home claims have a deductible, and how much?"]),
    ("auto-deductible", "250 dollars", "The auto deductible is 250 dollars per claim.",
     ["What is the deductible for auto claims?", "How much is the auto deductible?",
      "What deductible applies to my car policy claims?"]),
    ("appeals", "30 days", "You can appeal a denied claim within 30 days of the decision.",
     ["How long do I have to appeal a denied claim?", "Until when can I appeal a denial?",
      "What is the deadline to appeal a claim decision?"]),
    ("cooling-off-period", "14 days", "A new policy can be cancelled with a full refund within 14 days.",
     ["What is the cooling-off period for a new policy?", "Can I cancel a new policy for a full refund?",
      "How long after buying can I cancel with a full refund?"]),
    ("lost-baggage", "2000 dollars", "Lost baggage is covered up to 2000 dollars per trip.",
     ["How much lost baggage does travel insurance cover?", "What is the limit for lost baggage?",
      "Up to what amount is lost luggage covered?"]),
    ("temporary-accommodation", "30 nights", "The policy pays hotel accommodation for up to 30 nights.",
     ["How many hotel nights are covered if my home is uninhabitable?",
      "Does my home policy pay for a hotel, and for how long?", "How long is temporary accommodation paid?"]),
    ("rental-car-cover", "14 days", "A rental car is covered for up to 14 days during repairs.",
     ["How long is a rental car covered after a collision?", "Do I get a rental car while mine is repaired?",
      "For how many days is a rental car paid?"]),
    ("senior-adjuster-review", "10 business days", "A senior adjuster reviews an escalated claim within 10 "
     "business days.", ["How long does a senior adjuster take to review an escalated claim?",
                        "When will the senior adjuster look at my escalated claim?",
                        "How long is the review of an escalated claim?"]),
    ("lapsed-policies", "30 days", "A policy lapses when a premium is 30 days overdue.",
     ["When does a policy lapse?", "How late can a premium be before the policy lapses?",
      "After how many overdue days does my policy lapse?"]),
    ("emergency-repairs", "1000 dollars", "Emergency repairs up to 1000 dollars need no prior approval.",
     ["How much can I spend on emergency repairs without approval?",
      "Can I order emergency repairs without asking first?", "What is the limit for emergency repairs?"]),
    # Test-only topics: the answer must come from the retrieved text, not from memory of training.
    ("payment-method", "3 business days", "A new bank account takes 3 business days to verify.",
     ["How long does it take to verify a new bank account for payments?",
      "Can my claim be paid to a new bank account right away?", "When can a new bank account receive payments?"]),
    ("no-claims-discount", "10 percent", "Each claim-free year earns a 10 percent discount on the auto premium.",
     ["How much discount do I get for a year without claims?", "What is the no-claims discount?",
      "Does a claim-free year lower my auto premium?"]),
    ("trip-delay", "50 dollars", "Travel policies pay 50 dollars for each full 6 hours of delay.",
     ["How much do I get paid if my trip is delayed?", "What does the policy pay for a trip delay?",
      "Is there compensation for a delayed flight?"]),
    ("medical-claims-abroad", "100000 dollars", "Emergency treatment abroad is covered up to 100000 dollars.",
     ["Up to what amount is emergency treatment abroad covered?", "What documents do medical claims abroad need?",
      "How much medical treatment abroad is covered?"]),
    ("complaints", "8 business days", "The customer care team answers complaints within 8 business days.",
     ["How do I make a complaint, and how fast is the answer?", "How long does a complaint take to be answered?",
      "Who handles complaints?"]),
    ("reinstating-a-policy", "90 days", "A lapsed policy can be reinstated within 90 days.",
     ["Can I reinstate a lapsed policy?", "How long do I have to reinstate my lapsed policy?",
      "Is it possible to reactivate a policy after it lapsed?"]),
]
TRAIN_TOPICS = 12


def _call(name: str, match: str = "exact", **arguments: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "arguments": arguments}
    if match != "exact":
        entry["match"] = match
    return {"calls": [entry]}


def _say(text: str) -> dict[str, Any]:
    return {"say": text}


def generate(conn: sqlite3.Connection, rng: random.Random, n_train_per_kind: int,
             n_test_per_kind: int) -> dict[str, list[Task]]:
    conn.row_factory = sqlite3.Row
    customers = conn.execute("SELECT * FROM customers ORDER BY customer_id").fetchall()
    blocks = {"train": customers[: n_train_per_kind * len(KINDS)],
              "test": customers[n_train_per_kind * len(KINDS):(n_train_per_kind + n_test_per_kind) * len(KINDS)]}
    if len(blocks["test"]) < n_test_per_kind * len(KINDS):
        raise ValueError("seed database has too few customers for the requested task counts")
    tasks: dict[str, list[Task]] = {}
    for split, block in blocks.items():
        phrasings = TRAIN_PHRASINGS if split == "train" else 10
        tasks[split] = [
            _task(conn, rng, split, index, customer, KINDS[index % len(KINDS)], phrasings,
                  block[(index + 1) % len(block)])
            for index, customer in enumerate(block)
        ]
    return tasks


def _task(conn: sqlite3.Connection, rng: random.Random, split: str, index: int, customer: sqlite3.Row, kind: str,
          phrasings: int, neighbour: sqlite3.Row) -> Task:
    cus = customer["customer_id"]
    claims = conn.execute("SELECT c.*, p.product, p.status AS policy_status FROM claims c JOIN policies p "
                          "ON p.policy_id = c.policy_id WHERE c.customer_id = ? ORDER BY c.rowid", (cus,)).fetchall()
    closed, approvable, deniable, escalatable = claims
    pick = lambda templates: templates[rng.randrange(phrasings)]  # noqa: E731
    solution: list[dict[str, Any]] = []
    must_say: list[str] = []
    dob = customer["date_of_birth"]
    if kind == "unverified":  # the caller's date of birth does not match the records
        dob = f"{int(dob[:4]) + 1}{dob[4:]}"
    facts: dict[str, Any] = {}

    if kind == "claim_status":
        cid = closed["claim_id"]
        request = pick(STATUS).format(cid=cid)
        intent = f"I will look up claim {cid} for you."
        solution = [_call("get_claim", claim_id=cid), _say(f"Claim {cid} is {closed['status']}.")]
        must_say = [cid, closed["status"]]
    elif kind in ("approve", "deny", "escalate"):
        row = {"approve": approvable, "deny": deniable, "escalate": escalatable}[kind]
        cid = row["claim_id"]
        reason = {"approve": "covered", "escalate": "over_limit",
                  "deny": "policy_inactive" if row["policy_status"] != "active" else "not_covered"}[kind]
        request = pick(PROCESS).format(cid=cid)
        intent = f"I will review claim {cid} for you."
        ask = {"approve": f"The review approves claim {cid}. Shall I approve it? Do you confirm?",
               "deny": f"The review denies claim {cid} ({reason}). Shall I record the denial? Do you confirm?",
               "escalate": f"Claim {cid} is over my approval limit. Shall I escalate it to a senior adjuster? "
                           "Do you confirm?"}[kind]
        done = {"approve": f"Claim {cid} is approved.", "deny": f"Claim {cid} is denied ({reason}).",
                "escalate": f"Claim {cid} is escalated to a senior adjuster."}[kind]
        solution = [_call("review_claim", claim_id=cid), _say(ask),
                    _call("decide_claim", claim_id=cid, decision=kind, reason=reason), _say(done)]
        must_say = [cid, {"approve": "approved", "deny": "denied", "escalate": "escalated"}[kind]]
        if kind == "deny":
            must_say.append(reason)
    elif kind == "file_claim":
        product = approvable["product"]
        policy_id = conn.execute("SELECT policy_id FROM policies WHERE customer_id = ? AND product = ?",
                                 (cus, product)).fetchone()[0]
        incident = rng.choice(COVERAGE[product])
        amount = rng.randrange(100, APPROVAL_LIMIT[product], 50)
        request = pick(FILE).format(pid=policy_id, incident=incident, amount=amount)
        new_id = new_claim_id(policy_id, incident, amount)
        intent = f"I will file the {incident} claim on policy {policy_id} for you."
        solution = [_say(f"I will file a {incident} claim for {amount} dollars on policy {policy_id}. "
                         "Do you confirm?"),
                    _call("file_claim", policy_id=policy_id, incident=incident, amount=amount),
                    _say(f"I filed claim {new_id}.")]
        must_say = [new_id]
    elif kind in ("update_contact", "unverified") and (kind == "update_contact" or index % 2 == 0):
        phone = f"+1 555 {rng.randint(100, 999)} {rng.randint(1000, 9999)}"
        request = pick(PHONE).format(phone=phone)
        intent = f"I will change your phone number to {phone}."
        solution = [_say(f"I will change your phone number to {phone}. Do you confirm?"),
                    _call("update_contact", customer_id=cus, phone=phone), _say(f"Your phone number is now {phone}.")]
        must_say = [phone]
    elif kind == "unverified":
        request = pick(STATUS).format(cid=closed["claim_id"])
        intent = f"I will look up claim {closed['claim_id']} for you."
    elif kind == "handbook":
        topics = HANDBOOK[:TRAIN_TOPICS] if split == "train" else HANDBOOK[TRAIN_TOPICS:]
        slug, fact, answer, questions = topics[rng.randrange(len(topics))]
        question = questions[rng.randrange(len(questions))]
        return Task(id=f"claims-{split}-{index:04d}", split=split, kind=kind, instruction=question,
                    facts={"opening": question, "topic": slug},
                    slices={"segment": customer["segment"], "region": customer["region"]},
                    solution=[_call("search_handbook", match="name", query=question),
                              _say(f"{answer} [handbook#{slug}]")],
                    must_say=[fact, f"handbook#{slug}"])
    else:  # other_customer: the claim belongs to someone else
        request = pick(OTHER).format(relative=rng.choice(RELATIVES), cid=neighbour_claim(conn, neighbour))
        intent = "I can only discuss claims on your own account."
        solution = [_say(intent)]
        must_say = ["own account"]

    if kind == "unverified":
        solution = [_say("I could not verify your identity, so I cannot change or share anything.")]
        must_say = ["could not verify"]
    identity = IDENTITY[rng.randrange(len(IDENTITY))].format(email=customer["email"], dob=dob)
    verify = _call("verify_identity", email=customer["email"], date_of_birth=dob)
    # The first turn says what the agent is about to do: after the identity check the next step then
    # follows the agent's own words two messages up, not a request several turns back.
    if rng.random() < 0.5:
        opening = f"{identity} {request}" if rng.random() < 0.5 else f"{request} {identity}"
        solution = [{"say": intent, **verify}, *solution]
        facts["identity_reply"] = identity
    else:
        opening = request
        solution = [_say(f"{intent} {ASK_IDENTITY}"), verify, *solution]
        facts["identity_reply"] = IDENTITY[rng.randrange(len(IDENTITY))].format(email=customer["email"], dob=dob)
    facts.update(opening=opening, customer_id=cus)
    return Task(id=f"claims-{split}-{index:04d}", split=split, kind=kind, instruction=request, facts=facts,
                slices={"segment": customer["segment"], "region": customer["region"]}, solution=solution,
                must_say=must_say)


def neighbour_claim(conn: sqlite3.Connection, neighbour: sqlite3.Row) -> str:
    return conn.execute("SELECT claim_id FROM claims WHERE customer_id = ? ORDER BY rowid LIMIT 1",
                        (neighbour["customer_id"],)).fetchone()[0]
