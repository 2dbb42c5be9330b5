"""Confidence intervals and paired comparisons for evaluation runs.

An evaluation of 27 to 90 tasks is noisy: 20 successes out of 27 is "74%", but anything from 55% to 87%
is consistent with it. So every rate carries a 95% interval, and two runs are compared task by task on the
tasks both ran: pairing removes the task-difficulty noise that two independent rates would both carry,
which is what makes a 27-task comparison worth reading at all.

- ``wilson_interval``: the Wilson score interval of a rate. Unlike the textbook "rate ± 1.96 standard
  errors" it stays inside [0, 1] and does not collapse to a zero-width interval at 0% or 100%.
- ``mcnemar_exact``: the exact McNemar test. Only the discordant tasks (one run right, the other wrong)
  carry information about which run is better; under "no difference" each is equally likely to go either
  way, so their split is Binomial(b + c, 1/2).
- ``paired_bootstrap``: an interval for the difference of the means, resampling tasks (pairs), so that the
  size of a difference is given along with whether it is significant.
- ``compare_paired`` ties them together into a ``PairedComparison``.

Pure Python (``math``, ``random``, ``statistics``): ``import agentft`` stays light.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

__all__ = [
    "PairedComparison",
    "compare_paired",
    "format_p_value",
    "format_rate",
    "mcnemar_exact",
    "paired_bootstrap",
    "wilson_interval",
]

CONFIDENCE = 0.95
SIGNIFICANCE = 0.05
Z_95 = 1.959963984540054  # the normal quantile at 0.975


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")


def _z(confidence: float) -> float:
    """The two-sided normal quantile: P(|Z| <= z) = confidence."""
    _check_confidence(confidence)
    return Z_95 if confidence == CONFIDENCE else NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of the rate ``successes / n``.

    ``successes`` is a count, or a sum of per-task success fractions (tasks with several attempts): the
    interval is defined for any observed rate in [0, 1], and for a fraction it is conservative, since a
    variable in [0, 1] with mean p has a variance of at most p(1 - p). ``n == 0`` gives (0.0, 1.0):
    nothing observed, nothing excluded.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n={n}, got {successes!r}")
    z = _z(confidence)
    if n == 0:
        return 0.0, 1.0
    rate, z2 = successes / n, z * z
    center = (rate + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(rate * (1 - rate) / n + z2 / (4 * n * n))
    # At 0% and 100% the bound is exactly 0 or 1; say so rather than print a rounding error.
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts.

    ``b``: tasks A got right and B wrong; ``c``: tasks A got wrong and B right. Under "no difference"
    ``min(b, c)`` is the lower tail of Binomial(b + c, 1/2), doubled (capped at 1) for two sides. Computed
    with integers, so it is exact for any count. No discordant task gives 1.0: no evidence either way.
    """
    for name, value in (("b", b), ("c", c)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer count of discordant tasks, got {value!r}")
    m = b + c
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**m)


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default percentile)."""
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def paired_bootstrap(
    a: Sequence[bool | float],
    b: Sequence[bool | float],
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float]:
    """The difference of means ``mean(b) - mean(a)`` and its percentile bootstrap interval.

    ``a[i]`` and ``b[i]`` are the two runs' outcomes on the same task i. Resampling whole tasks keeps
    each pair together, so the interval reflects the paired design (the difference of means is the mean
    of the per-task differences). Deterministic for a given ``seed``. Returns (difference, low, high).
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples must have the same length, got {len(a)} and {len(b)}")
    if not a:
        raise ValueError("paired samples are empty: nothing to compare")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    _check_confidence(confidence)
    n = len(a)
    differences = [float(y) - float(x) for x, y in zip(a, b, strict=True)]
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(differences, k=n)) / n for _ in range(n_resamples))
    tail = (1 - confidence) / 2
    return sum(differences) / n, _quantile(means, tail), _quantile(means, 1 - tail)


def format_rate(rate: float, interval: Sequence[float]) -> str:
    """A rate with its interval in percent, e.g. ``74.1% (55.3–86.8)``."""
    low, high = interval
    return f"{rate:.1%} ({low * 100:.1f}–{high * 100:.1f})"


def format_p_value(p: float) -> str:
    """``0.42``, ``0.012``, ``0.0039``, ``< 0.001``: further digits change no decision."""
    if p < 0.001:
        return "< 0.001"
    return f"{p:.2f}" if p >= 0.1 else f"{p:.2g}"


def _p_phrase(p: float) -> str:
    text = format_p_value(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _points(difference: float) -> str:
    return f"{difference * 100:+.1f}"


@dataclass(frozen=True)
class PairedComparison:
    """Run B against run A on one metric, over the tasks both ran (see ``compare_paired``)."""

    metric: str
    n: int
    a_rate: float
    b_rate: float
    a_interval: tuple[float, float]
    b_interval: tuple[float, float]
    difference: float
    difference_interval: tuple[float, float]
    both_right: int
    a_only: int
    b_only: int
    both_wrong: int
    p_value: float
    significant: bool
    only_in_a: int
    only_in_b: int

    @property
    def verdict(self) -> str:
        """One line: which run is better, by how much and how sure, or that the data cannot tell."""
        p = _p_phrase(self.p_value)
        if not self.significant:
            return f"no significant difference ({p})"
        low, high = self.difference_interval
        # "worse by 12.2", not "worse by -12.2"; the interval keeps the sign of B − A.
        by = (
            f"better by {_points(self.difference)}"
            if self.difference >= 0
            else f"worse by {abs(self.difference) * 100:.1f}"
        )
        return f"B {by} points (95% CI {_points(low)} to {_points(high)}), {p}: significant"

    def formatted(self) -> dict[str, str]:
        """The figures as text, by label, for a console or HTML table."""
        low, high = self.difference_interval
        return {
            "A (95% CI)": format_rate(self.a_rate, self.a_interval),
            "B (95% CI)": format_rate(self.b_rate, self.b_interval),
            "both right": str(self.both_right),
            "A right, B wrong": str(self.a_only),
            "A wrong, B right": str(self.b_only),
            "both wrong": str(self.both_wrong),
            "B − A, points (95% CI)": f"{_points(self.difference)} ({_points(low)} to {_points(high)})",
            "p (exact McNemar)": format_p_value(self.p_value),
            "verdict": self.verdict,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: intervals as lists, the verdict included."""
        found = asdict(self)
        for key in ("a_interval", "b_interval", "difference_interval"):
            found[key] = list(found[key])
        return {**found, "verdict": self.verdict}


def compare_paired(
    a: Mapping[str, bool | float],
    b: Mapping[str, bool | float],
    *,
    metric: str,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> PairedComparison:
    """Compare run B with run A on the tasks both ran.

    ``a`` and ``b`` map a task id to its outcome in [0, 1]: a bool for one attempt, the mean over attempts
    for several. Rates, Wilson intervals and the bootstrap difference use these values; the McNemar counts
    use each task's majority outcome (value >= 0.5). Ids in only one run are left out and counted
    (``only_in_a`` / ``only_in_b``): an unpaired task would bring back the noise pairing removes.
    """
    common = sorted(a.keys() & b.keys())
    if not common:
        raise ValueError(f"no task id in common ({len(a)} in A, {len(b)} in B): nothing to pair")
    xs, ys = [float(a[key]) for key in common], [float(b[key]) for key in common]
    if not all(0.0 <= value <= 1.0 for value in (*xs, *ys)):
        raise ValueError(f"{metric}: per-task outcomes must lie in [0, 1]")
    counts = Counter((x >= 0.5, y >= 0.5) for x, y in zip(xs, ys, strict=True))
    n = len(common)
    difference, low, high = paired_bootstrap(xs, ys, n_resamples=n_resamples, seed=seed)
    p_value = mcnemar_exact(counts[(True, False)], counts[(False, True)])
    return PairedComparison(
        metric=metric,
        n=n,
        a_rate=sum(xs) / n,
        b_rate=sum(ys) / n,
        a_interval=wilson_interval(sum(xs), n),
        b_interval=wilson_interval(sum(ys), n),
        difference=difference,
        difference_interval=(low, high),
        both_right=counts[(True, True)],
        a_only=counts[(True, False)],
        b_only=counts[(False, True)],
        both_wrong=counts[(False, False)],
        p_value=p_value,
        significant=p_value < SIGNIFICANCE,
        only_in_a=len(a.keys() - b.keys()),
        only_in_b=len(b.keys() - a.keys()),
    )
