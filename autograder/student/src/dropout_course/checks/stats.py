"""Statistical helpers: every random check takes its tolerance from here.

A check of a random quantity can fail a correct submission by bad luck. Each helper turns
a *false-failure probability* (the chance that a correct implementation fails the check)
into a bound, so the docstring of every random check can state that probability.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache
from statistics import NormalDist

__all__ = [
    "DEFAULT_FALSE_FAILURE",
    "binomial_count_bounds",
    "hoeffding_half_width",
    "same_subset_probability",
    "two_sided_z",
]

#: Per-check false-failure budget used throughout the course.
DEFAULT_FALSE_FAILURE = 1e-6


def two_sided_z(false_failure: float = DEFAULT_FALSE_FAILURE) -> float:
    """The z such that P(|Z| > z) = ``false_failure`` for a standard normal Z (1e-6 -> 4.89)."""
    if not 0.0 < false_failure < 1.0:
        raise ValueError(f"false_failure must be in (0, 1), got {false_failure}")
    return NormalDist().inv_cdf(1.0 - false_failure / 2.0)


def _binomial_pmf_window(n: int, p: float) -> tuple[int, list[float]]:
    """P(X = i) for X ~ Binomial(n, p) and i in a window around the mean.

    The window spans the mean +- (12 sd + 10); the mass outside it is below 1e-25, far under
    any budget used here. Returns the window's first index and the probabilities.
    """
    sd = math.sqrt(n * p * (1.0 - p))
    first = max(0, math.floor(n * p - 12.0 * sd - 10.0))
    last = min(n, math.ceil(n * p + 12.0 * sd + 10.0))
    log_p, log_q = math.log(p), math.log1p(-p)
    log_n_fact = math.lgamma(n + 1)
    pmf = [
        math.exp(
            log_n_fact - math.lgamma(i + 1) - math.lgamma(n - i + 1)
            + i * log_p + (n - i) * log_q
        )
        for i in range(first, last + 1)
    ]
    return first, pmf


@lru_cache(maxsize=256)
def binomial_count_bounds(
    n: int, p: float, false_failure: float = DEFAULT_FALSE_FAILURE
) -> tuple[int, int]:
    """Narrowest interval [lo, hi] with P(X < lo) <= ff/2 and P(X > hi) <= ff/2.

    X ~ Binomial(n, p) and ff is ``false_failure``. Both tails are summed exactly (no normal
    approximation), so the bound also holds for small n and for p near 0 or 1.
    """
    if n < 0 or not 0.0 <= p <= 1.0:
        raise ValueError(f"need n >= 0 and 0 <= p <= 1, got n={n}, p={p}")
    if p in {0.0, 1.0}:
        return (0, 0) if p == 0.0 else (n, n)
    half = false_failure / 2.0
    first, pmf = _binomial_pmf_window(n, p)
    lo, tail = first, 0.0
    for prob in pmf:
        if tail + prob > half:
            break
        tail += prob
        lo += 1
    hi, tail = first + len(pmf) - 1, 0.0
    for prob in reversed(pmf):
        if tail + prob > half:
            break
        tail += prob
        hi -= 1
    return lo, hi


def same_subset_probability(n: int, k: int) -> float:
    """Chance that two independent uniformly random k-subsets of n items are equal: 1/C(n, k)."""
    return float(Fraction(1, math.comb(n, k)))


def hoeffding_half_width(sum_squared_ranges: float,
                         false_failure: float = DEFAULT_FALSE_FAILURE) -> float:
    """Half-width t with P(|S - E[S]| >= t) <= ``false_failure`` for a sum S of independent
    bounded terms, the i-th confined to an interval of length w_i.

    Hoeffding's inequality, P(|S - E[S]| >= t) <= 2 exp(-2 t^2 / sum w_i^2), holds for every
    distribution and every n, with no normal approximation; ``sum_squared_ranges`` is sum w_i^2.
    """
    if sum_squared_ranges < 0 or not 0.0 < false_failure < 1.0:
        raise ValueError(f"need sum_squared_ranges >= 0 and 0 < false_failure < 1, got "
                         f"{sum_squared_ranges}, {false_failure}")
    return math.sqrt(sum_squared_ranges * math.log(2.0 / false_failure) / 2.0)
