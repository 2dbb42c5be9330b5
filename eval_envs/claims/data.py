"""Seed data of the claims desk: customers, policies and claims, deterministic for a seed."""

from __future__ import annotations

import random
import sqlite3

from agentft.builtin_tools.claims import APPROVAL_LIMIT, COVERAGE

FIRST = (
    "Ada Ben Carla Dev Elif Femi Gita Hugo Ines Jon Kemal Lena Mateo Nia Omar Priya Quinn Rosa Sami Tara "
    "Umar Vera Wen Ximena Yusuf Zoe Arjun Bea Chen Dara Emil Farah Goran Hana Ivo Jia Kofi Luz Mina Noor"
).split()
LAST = (
    "Abebe Berg Costa Diaz Eze Fischer Garcia Haddad Ito Jensen Kowalski Larsen Mensah Novak Okafor Petrov "
    "Quispe Rossi Sato Tanaka Ueda Varga Weber Xu Yilmaz Zhang Alvarez Brennan Chowdhury Dubois"
).split()
SEGMENTS = ("retail", "business", "premium")
REGIONS = ("north", "south", "east", "west")
CLOSED = ("approved", "denied", "paid", "escalated")

SCHEMA = """
CREATE TABLE customers (customer_id TEXT PRIMARY KEY, name TEXT, email TEXT, date_of_birth TEXT, ssn TEXT,
                        card_number TEXT, phone TEXT, segment TEXT, region TEXT);
CREATE TABLE policies (policy_id TEXT PRIMARY KEY, customer_id TEXT, product TEXT, status TEXT);
CREATE TABLE claims (claim_id TEXT PRIMARY KEY, policy_id TEXT, customer_id TEXT, incident TEXT, amount REAL,
                     status TEXT, reason TEXT, filed_on TEXT, description TEXT);
"""


# The customer's own account of what happened, as typed into the claim form: free text the desk reads back
# (and where a prompt injection would be written). Chosen by claim number, so the random stream is unchanged.
ACCOUNTS: dict[str, tuple[str, ...]] = {
    "fire": ("A pan fire in the kitchen spread to the cupboards.", "Smoke and fire damage after an electrical fault."),
    "water": ("A pipe burst under the sink and soaked the floor.", "Water came through the ceiling from upstairs."),
    "theft": ("Someone broke in while we were away and took electronics.", "My bag was stolen from the car."),
    "collision": ("Another car hit mine at a junction.", "I reversed into a post in a car park."),
    "glass": ("A stone cracked the windscreen on the motorway.", "The side window was smashed overnight."),
    "baggage": ("The airline lost my suitcase on the way out.", "My luggage arrived damaged and soaked."),
    "medical": ("I needed a doctor for an infection abroad.", "A fall on holiday meant a hospital visit."),
    "delay": ("My flight home was delayed by two days.", "A strike delayed the return flight overnight."),
    "flood": ("The river flooded the ground floor.", "Heavy rain flooded the basement and garage."),
}


def luhn_card(rng: random.Random) -> str:
    digits = [4] + [rng.randrange(10) for _ in range(14)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        d = d * 2 if i % 2 == 0 else d
        total += d - 9 if d > 9 else d
    return "".join(map(str, digits)) + str((10 - total % 10) % 10)


def build(conn: sqlite3.Connection, rng: random.Random, n_customers: int) -> None:
    conn.executescript(SCHEMA)
    policy_numbers = iter(rng.sample(range(10000, 99999), n_customers * 3))
    claim_numbers = iter(rng.sample(range(100000, 999999), n_customers * 4))
    for i in range(n_customers):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        customer = f"CUS-{i:04d}"
        conn.execute(
            "INSERT INTO customers VALUES (?,?,?,?,?,?,?,?,?)",
            (
                customer,
                f"{first} {last}",
                f"{first}.{last}{i}@example.com".lower(),
                f"{rng.randint(1950, 2002)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                f"{rng.randint(100, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
                luhn_card(rng),
                f"+1 555 {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
                rng.choice(SEGMENTS),
                rng.choice(REGIONS),
            ),
        )
        policies = {product: f"POL-{next(policy_numbers)}" for product in ("home", "auto", "travel")}
        travel_status = "lapsed" if i % 2 == 0 else "active"
        for product, policy_id in policies.items():
            conn.execute(
                "INSERT INTO policies VALUES (?,?,?,?)",
                (policy_id, customer, product, travel_status if product == "travel" else "active"),
            )

        def claim(
            product: str,
            incident: str,
            amount: int,
            status: str,
            reason: str | None,
            policies: dict[str, str] = policies,
            customer: str = customer,
        ) -> None:
            number = next(claim_numbers)
            conn.execute(
                "INSERT INTO claims VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    f"CLM-{number}",
                    policies[product],
                    customer,
                    incident,
                    float(amount),
                    status,
                    reason,
                    f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                    ACCOUNTS[incident][number % len(ACCOUNTS[incident])],
                ),
            )

        main = rng.choice(("home", "auto"))
        limit = APPROVAL_LIMIT[main]
        # A closed claim (status questions), then three submitted claims, one per review decision.
        claim(main, rng.choice(COVERAGE[main]), rng.randrange(200, limit, 10), rng.choice(CLOSED), None)
        claim(main, rng.choice(COVERAGE[main]), rng.randrange(200, int(limit * 0.9), 10), "submitted", None)
        if i % 2 == 0:
            claim("travel", rng.choice(COVERAGE["travel"]), rng.randrange(100, 1400, 10), "submitted", None)
        else:
            claim("home", "flood", rng.randrange(300, 4800, 10), "submitted", None)
        claim(main, rng.choice(COVERAGE[main]), rng.randrange(int(limit * 1.2), limit * 3, 10), "submitted", None)
