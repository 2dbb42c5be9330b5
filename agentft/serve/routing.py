"""A/B routing: shares of traffic between model versions, sticky per user or session.

``agentft serve --adapter current=DIR1 --adapter candidate=DIR2 --route current=90,candidate=10`` answers every
request for the model ``routed`` (``--route-name``; also a request that names no model) from one arm, chosen
by its key: the ``X-Agentft-Session`` header, else the request's ``user`` field. A key always lands on the same
arm (its SHA-256 places it in one of 10,000 buckets, the arms hold consecutive ranges in the order given, so
moving weight between two arms moves only the keys in between). A request without a key gets an arm drawn
at random by weight. A request that names an arm's model id directly is served by it and not counted as routed.

The arm is recorded on every served trace (``metadata["arm"]``) and in ``/metrics``
(``agentft_arm_requests_total{arm}``, ``agentft_arm_request_seconds``, tool calls by outcome, guard blocks,
rule violations, and feedback by label), so two versions can be compared on live traffic.
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from itertools import accumulate

from agentft.errors import UserError

__all__ = ["Router", "parse_route", "BUCKETS", "SESSION_HEADER"]

BUCKETS = 10_000
SESSION_HEADER = "x-agentft-session"


def parse_route(spec: str) -> dict[str, float]:
    """``current=90,candidate=10`` -> {"current": 90.0, "candidate": 10.0}; weights are relative."""
    weights: dict[str, float] = {}
    for part in spec.split(","):
        name, sep, value = part.strip().partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or not name or name in weights or not weight >= 0:
            raise UserError(f"--route takes NAME=WEIGHT pairs (each name once, weights >= 0), not {spec!r}")
        weights[name] = weight
    if sum(weights.values()) <= 0:
        raise UserError(f"--route needs a positive weight somewhere: {spec!r}")
    return weights


class Router:
    """Picks an arm for a request key (see the module docstring)."""

    def __init__(self, weights: dict[str, float], name: str = "routed", seed: int | None = None) -> None:
        if not weights or sum(weights.values()) <= 0:
            raise UserError("a route needs at least one arm with a positive weight")
        self.name = name
        self.weights = dict(weights)
        total = sum(weights.values())
        self.arms = list(weights)
        self._ends = [round(end / total * BUCKETS) for end in accumulate(weights.values())]
        self._random = random.Random(seed)

    def arm(self, key: str | None) -> tuple[str, bool]:
        """(arm, sticky): the key's arm, or one drawn by weight when there is no key."""
        if key:
            bucket = int.from_bytes(hashlib.sha256(f"agentft-route:{key}".encode()).digest()[:8], "big") % BUCKETS
            return self.arms[bisect_right(self._ends, bucket)], True
        return self._random.choices(self.arms, weights=list(self.weights.values()))[0], False
