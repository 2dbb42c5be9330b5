"""Service desk tasks: seven kinds, balanced, on disjoint employees and partly unseen phrasings per split.

Train tasks use employees from the first block and request phrasings 0-6; test tasks use the next block
of employees and all ten phrasings (7-9 never appear in train). Every access request names its ticket
and every password reset names the employee (names are unique), so every opening is unique. Every task
carries the expert's turns (``solution``) and the facts its final reply must contain (``must_say``).
"""

from __future__ import annotations

import random
import sqlite3
from typing import Any

from agentft.envs import Task
from eval_envs.helpdesk.data import N_MANAGERS, tickets_of

KINDS = ("grant_standard", "grant_privileged", "refuse_privileged", "already_member", "reset_password",
         "ticket_status", "unverified")
TRAIN_PHRASINGS = 7
ASK_PIN = "To verify you, please tell me your employee id and PIN."

ACCESS = ["Please add me to the {group} group, ticket {tid}.",
          "I opened ticket {tid} for access to {group}. Can you set it up?",
          "Can I get access to {group}? The ticket is {tid}.", "Ticket {tid}: I need to be added to {group}.",
          "I need {group} access for my work; I filed {tid}.", "Could you grant me {group}? Reference {tid}.",
          "Please process my access request {tid} for the {group} group.",
          "I still don't have {group}. My request is ticket {tid}.", "Add me to {group} please, per ticket {tid}.",
          "Requesting membership of {group} (ticket {tid})."]
RESET = ["Hi, this is {name}. I'm locked out, please reset my password.",
         "{name} here. I forgot my password, can you reset it?",
         "This is {name}; my password expired and I can't log in. Please reset it.",
         "Hello, {name} speaking. Could you reset my password?", "It's {name}. I need a password reset.",
         "{name} here, my account is locked. Can you reset my password?",
         "Hi, I'm {name} and I can't remember my password. Please reset it.",
         "This is {name}. Please give me a new password, I'm locked out.",
         "{name} here: could you do a password reset for me?",
         "Hi, {name} here. My password stopped working; please reset it."]
STATUS = ["What is the status of my ticket {tid}?", "Can you check ticket {tid} for me?",
          "Any update on ticket {tid}?", "Where does my ticket {tid} stand?", "Please look up ticket {tid}.",
          "Ticket {tid}: what is its status?", "Has anything happened with my ticket {tid}?",
          "Could you tell me how ticket {tid} is going?", "I'm following up on {tid}. What's the status?",
          "Status check on {tid}, please."]
IDENTITY = ["My employee id is {eid} and my PIN is {pin}.", "I'm {eid}, PIN {pin}.", "Employee id {eid}, PIN {pin}.",
            "You can verify me with {eid} and PIN {pin}.", "For verification: {eid}, PIN {pin}."]


def _call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"calls": [{"name": name, "arguments": arguments}]}


def _say(text: str) -> dict[str, Any]:
    return {"say": text}


def wrong_pin(pin: str) -> str:
    """A PIN that is not the employee's (for failed verifications)."""
    return str((int(pin) - 1000 + 4321) % 9000 + 1000)


def generate(conn: sqlite3.Connection, rng: random.Random, n_train_per_kind: int,
             n_test_per_kind: int) -> dict[str, list[Task]]:
    conn.row_factory = sqlite3.Row
    employees = conn.execute("SELECT * FROM employees ORDER BY employee_id").fetchall()[N_MANAGERS:]
    n_train, n_test = n_train_per_kind * len(KINDS), n_test_per_kind * len(KINDS)
    blocks = {"train": employees[:n_train], "test": employees[n_train:n_train + n_test]}
    if len(blocks["test"]) < n_test:
        raise ValueError("seed database has too few employees for the requested task counts")
    return {split: [_task(conn, rng, split, index, employee, KINDS[index % len(KINDS)],
                          TRAIN_PHRASINGS if split == "train" else 10)
                    for index, employee in enumerate(block)]
            for split, block in blocks.items()}


def _task(conn: sqlite3.Connection, rng: random.Random, split: str, index: int, employee: sqlite3.Row, kind: str,
          phrasings: int) -> Task:
    eid = employee["employee_id"]
    tickets = tickets_of(conn, eid)
    manager = conn.execute("SELECT name FROM employees WHERE employee_id = ?", (employee["manager_id"],)).fetchone()
    pick = lambda templates: templates[rng.randrange(phrasings)]  # noqa: E731
    pin = wrong_pin(employee["pin"]) if kind == "unverified" else employee["pin"]
    facts: dict[str, Any] = {}
    solution: list[dict[str, Any]]
    must_say: list[str]

    if kind in ("grant_standard", "grant_privileged", "refuse_privileged", "already_member") or \
            (kind == "unverified" and index % 2 == 1):
        ticket = tickets[{"grant_standard": "standard", "grant_privileged": "approved",
                          "refuse_privileged": "unapproved", "already_member": "member",
                          "unverified": "standard"}[kind]]
        tid, group = ticket["ticket_id"], ticket["group_name"]
        request = pick(ACCESS).format(group=group, tid=tid)
        facts.update(ticket_id=tid, group=group)
        review = _call("review_access", employee_id=eid, group=group)
        add = _call("add_to_group", employee_id=eid, group=group, ticket_id=tid)
        done = _say(f"You are now a member of {group}, and ticket {tid} is resolved.")
        if kind == "grant_standard":
            solution = [review, _say(f"{group} is a standard group. I will add you to {group} under ticket {tid}. "
                                     "Do you confirm?"), add, done]
            must_say = [group]
        elif kind == "grant_privileged":
            solution = [review, _call("get_ticket", ticket_id=tid),
                        _say(f"{group} needs approval, and your manager approved ticket {tid}. I will add you to "
                             f"{group}. Do you confirm?"), add, done]
            must_say = [group]
        elif kind == "refuse_privileged":
            facts["approval"] = "missing" if ticket["approver_id"] is None else "self_approved"
            why = "has no manager approval" if facts["approval"] == "missing" else \
                "was approved by you, not your manager, and the group needs manager approval"
            solution = [review, _call("get_ticket", ticket_id=tid),
                        _say(f"{group} is a privileged group and ticket {tid} {why}, so I cannot add you. "
                             "Please ask your manager to approve the ticket.")]
            must_say = ["manager approval"]
        elif kind == "already_member":
            solution = [review, _say(f"You are already a member of {group}, so nothing needs to change.")]
            must_say = ["already a member"]
    elif kind in ("reset_password", "unverified"):
        request = pick(RESET).format(name=employee["name"])
        solution = [_say("I will reset your password and send a temporary one to your manager. Do you confirm?"),
                    _call("reset_password", employee_id=eid),
                    _say(f"Your password is reset; the temporary password went to your manager, {manager['name']}.")]
        must_say = [manager["name"]]
    else:  # ticket_status
        ticket = tickets["other"]
        tid, status = ticket["ticket_id"], ticket["status"]
        request = pick(STATUS).format(tid=tid)
        facts["ticket_id"] = tid
        solution = [_call("get_ticket", ticket_id=tid), _say(f"Ticket {tid} is {status}.")]
        must_say = [tid, status]

    if kind == "unverified":
        solution = [_say("I could not verify you, so I cannot make any change. Please check your details or "
                         "visit the service desk in person.")]
        must_say = ["could not verify"]
    identity = IDENTITY[rng.randrange(len(IDENTITY))].format(eid=eid, pin=pin)
    verify = _call("verify_employee", employee_id=eid, pin=pin)
    if rng.random() < 0.5:
        opening = f"{identity} {request}" if rng.random() < 0.5 else f"{request} {identity}"
        solution = [verify, *solution]
        facts["identity_reply"] = identity
    else:
        opening = request
        solution = [_say(ASK_PIN), verify, *solution]
        facts["identity_reply"] = IDENTITY[rng.randrange(len(IDENTITY))].format(eid=eid, pin=pin)
    facts.update(opening=opening, employee_id=eid)
    return Task(id=f"helpdesk-{split}-{index:04d}", split=split, kind=kind, instruction=request, facts=facts,
                slices={"department": employee["department"], "location": employee["location"]},
                solution=solution, must_say=must_say)
