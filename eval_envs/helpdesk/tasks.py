"""Service desk tasks: seven kinds, balanced, on disjoint employees and disjoint phrasings per split.

Splits ``train``, ``validation`` and ``test`` each use their own block of employees and their own pool
of request, identity and consent phrasings (``phrasings.json``). Every access request names its ticket
and every password reset names the employee (names are unique), so every opening is unique. Every task
carries the expert's turns (``solution``) and the facts its final reply must contain (``must_say``).
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

from agentft.authoring import SPLITS, Task, load_phrasings
from agentft.builtin_envs.helpdesk.data import N_MANAGERS, tickets_of

KINDS = (
    "grant_standard",
    "grant_privileged",
    "refuse_privileged",
    "already_member",
    "reset_password",
    "ticket_status",
    "unverified",
)
ASK_PIN = "To verify you, please tell me your employee id and PIN."
# Request, identity and consent phrasings, in disjoint train / validation / test pools (plain data).
PHRASINGS = load_phrasings(Path(__file__).resolve().parent / "phrasings.json")


def _call(name: str, match: str = "exact", **arguments: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "arguments": arguments}
    if match != "exact":
        entry["match"] = match
    return {"calls": [entry]}


def _say(text: str) -> dict[str, Any]:
    return {"say": text}


def wrong_pin(pin: str) -> str:
    """A PIN that is not the employee's (for failed verifications)."""
    return str((int(pin) - 1000 + 4321) % 9000 + 1000)


def generate(conn: sqlite3.Connection, rng: random.Random, per_kind: dict[str, int]) -> dict[str, list[Task]]:
    """Tasks per split: ``per_kind[split]`` of each kind, on consecutive blocks of employees."""
    conn.row_factory = sqlite3.Row
    employees = conn.execute("SELECT * FROM employees ORDER BY employee_id").fetchall()[N_MANAGERS:]
    tasks: dict[str, list[Task]] = {}
    offset = 0
    for split in SPLITS:
        size = per_kind[split] * len(KINDS)
        block = employees[offset : offset + size]
        offset += size
        if len(block) < size:
            raise ValueError("seed database has too few employees for the requested task counts")
        tasks[split] = [
            _task(conn, rng, split, index, employee, KINDS[index % len(KINDS)]) for index, employee in enumerate(block)
        ]
    return tasks


def _pick(rng: random.Random, group: str, split: str) -> str:
    pool = PHRASINGS[group][split]
    return pool[rng.randrange(len(pool))]


def _task(
    conn: sqlite3.Connection, rng: random.Random, split: str, index: int, employee: sqlite3.Row, kind: str
) -> Task:
    eid = employee["employee_id"]
    tickets = tickets_of(conn, eid)
    manager = conn.execute("SELECT name FROM employees WHERE employee_id = ?", (employee["manager_id"],)).fetchone()
    pin = wrong_pin(employee["pin"]) if kind == "unverified" else employee["pin"]
    facts: dict[str, Any] = {}
    answers: dict[str, str] = {}
    solution: list[dict[str, Any]]
    must_say: list[str]

    if kind in ("grant_standard", "grant_privileged", "refuse_privileged", "already_member") or (
        kind == "unverified" and index % 2 == 1
    ):
        ticket = tickets[
            {
                "grant_standard": "standard",
                "grant_privileged": "approved",
                "refuse_privileged": "unapproved",
                "already_member": "member",
                "unverified": "standard",
            }[kind]
        ]
        tid, group = ticket["ticket_id"], ticket["group_name"]
        request = _pick(rng, "access", split).format(group=group, tid=tid)
        facts.update(ticket_id=tid, group=group)
        answers.update(ticket=f"It's ticket {tid}.", group=f"The {group} group.")
        review = _call("review_access", employee_id=eid, group=group)
        add = _call("add_to_group", employee_id=eid, group=group, ticket_id=tid)
        done = _say(f"You are now a member of {group}, and ticket {tid} is resolved.")
        if kind == "grant_standard":
            solution = [
                review,
                _say(f"{group} is a standard group. I will add you to {group} under ticket {tid}. Do you confirm?"),
                add,
                done,
            ]
            must_say = [group]
        elif kind == "grant_privileged":
            solution = [
                review,
                _call("get_ticket", ticket_id=tid),
                _say(
                    f"{group} needs approval, and your manager approved ticket {tid}. I will add you to "
                    f"{group}. Do you confirm?"
                ),
                add,
                done,
            ]
            must_say = [group]
        elif kind == "refuse_privileged":
            facts["approval"] = "missing" if ticket["approver_id"] is None else "self_approved"
            why = (
                "has no manager approval"
                if facts["approval"] == "missing"
                else "was approved by you, not your manager, and the group needs manager approval"
            )
            solution = [
                review,
                _call("get_ticket", ticket_id=tid),
                _say(
                    f"{group} is a privileged group and ticket {tid} {why}, so I cannot add you. "
                    "Please ask your manager to approve the ticket."
                ),
            ]
            must_say = ["manager approval"]
        elif kind == "already_member":
            solution = [review, _say(f"You are already a member of {group}, so nothing needs to change.")]
            must_say = ["already a member"]
    elif kind in ("reset_password", "unverified"):
        request = _pick(rng, "reset", split).format(name=employee["name"])
        solution = [
            _say("I will reset your password and send a temporary one to your manager. Do you confirm?"),
            _call("reset_password", employee_id=eid),
            _say(f"Your password is reset; the temporary password went to your manager, {manager['name']}."),
        ]
        must_say = [manager["name"]]
    else:  # ticket_status
        ticket = tickets["other"]
        tid, status = ticket["ticket_id"], ticket["status"]
        request = _pick(rng, "status", split).format(tid=tid)
        facts["ticket_id"] = tid
        answers["ticket"] = f"It's ticket {tid}."
        solution = [_call("get_ticket", ticket_id=tid), _say(f"Ticket {tid} is {status}.")]
        must_say = [tid, status]

    if kind == "unverified":
        solution = [
            _say(
                "I could not verify you, so I cannot make any change. Please check your details or "
                "visit the service desk in person."
            )
        ]
        must_say = ["could not verify"]
    identity = _pick(rng, "identity", split).format(eid=eid, pin=pin)
    verify = _call("verify_employee", match="result", employee_id=eid, pin=pin)
    if rng.random() < 0.5:
        opening = f"{identity} {request}" if rng.random() < 0.5 else f"{request} {identity}"
        solution = [verify, *solution]
    else:
        opening = request
        solution = [_say(ASK_PIN), verify, *solution]
    facts.update(identity_reply=identity, consent_reply=_pick(rng, "consent", split), answers=answers)
    facts.update(opening=opening, employee_id=eid)
    return Task(
        id=f"helpdesk-{split}-{index:04d}",
        split=split,
        kind=kind,
        instruction=request,
        facts=facts,
        slices={"department": employee["department"], "location": employee["location"]},
        solution=solution,
        must_say=must_say,
    )
