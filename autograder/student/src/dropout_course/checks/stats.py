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
    "binomial_spread_lower_bound",
    "hoeffding_half_width",
    "same_subset_probability",
    "t_critical",
    "two_sided_z",
]

#: Per-check false-failure budget used throughout the course.
DEFAULT_FALSE_FAILURE = 1e-6


def two_sided_z(false_failure: float = DEFAULT_FALSE_FAILURE) -> float:
    """The z such that P(|Z| > z) = ``false_failure`` for a standard normal Z (1e-6 -> 4.89)."""
    if not 0.0 < false_failure < 1.0:
        raise ValueError(f"false_failure must be in (0, 1), got {false_failure}")
    return NormalDist().inv_cdf(1.0 - false_failure / 2.0)


def _t_central_probability(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with ``df`` (a whole number >= 1) degrees of freedom.

    The finite series of Abramowitz & Stegun 26.7.3-26.7.4 in theta = atan(t / sqrt(df)).
    Hand-written, not ``scipy.stats.t``, because the checks must run where only torch and
    NumPy are installed (a GPU machine); tests/test_checks_core.py compares it with SciPy.
    """
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    term, total = 1.0, 1.0
    if df % 2 == 1:
        if df == 1:
            return 2.0 * theta / math.pi
        for k in range(1, (df - 3) // 2 + 1):
            term *= cos2 * (2 * k) / (2 * k + 1)
            total += term
        return 2.0 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    for k in range(1, (df - 2) // 2 + 1):
        term *= cos2 * (2 * k - 1) / (2 * k)
        total += term
    return math.sin(theta) * total


def t_critical(alpha: float, df: int) -> float:
    """The two-sided critical value t* of Student's t: P(|T| > t*) = ``alpha`` with ``df``
    degrees of freedom (0.05 and 2 -> 4.303; 0.05 and 4 -> 2.776), i.e.
    ``scipy.stats.t.ppf(1 - alpha / 2, df)``, by bisection to about 1e-13 relative."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be a whole number >= 1, got {df!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"the level alpha must lie in (0, 1), got {alpha!r}")
    low, high = 0.0, 1.0
    while _t_central_probability(high, df) < 1.0 - alpha:
        low, high = high, 2.0 * high
    for _ in range(200):
        mid = 0.5 * (low + high)
        if _t_central_probability(mid, df) < 1.0 - alpha:
            low = mid
        else:
            high = mid
        if high - low <= 1e-14 * high:
            break
    return 0.5 * (low + high)


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


def binomial_spread_lower_bound(n: int, p: float, calls: int,
                                false_failure: float = DEFAULT_FALSE_FAILURE) -> float:
    """The value that ``S = sum_r (K_r - n p)^2`` exceeds except with probability
    ``false_failure``, for ``calls`` independent counts K_r ~ Binomial(n, p).

    Maurer's lower-tail bound for sums of independent non-negative variables (A. Maurer, "A
    bound on the deviation probability for sums of non-negative random variables", JIPAM 4(1),
    2003): P(S <= E S - t) <= exp(-t^2 / (2 sum E[Y_r^2])), with Y_r = (K_r - n p)^2, so
    E Y = n p q and E Y^2 = n p q (1 + 3 (n - 2) p q), the binomial's fourth central moment
    (q = 1 - p). No normal approximation. A count that does not vary (a fixed number of units
    dropped per call) gives S near 0, far below the bound.
    """
    if not 0.0 < p < 1.0 or n < 2 or calls < 1:
        raise ValueError(f"need 0 < p < 1, n >= 2 and calls >= 1, got {p}, {n}, {calls}")
    pq = p * (1.0 - p)
    mean = calls * n * pq
    fourth = n * pq * (1.0 + 3.0 * (n - 2) * pq)
    bound = mean - math.sqrt(2.0 * calls * fourth * math.log(1.0 / false_failure))
    if bound <= 0.0:
        raise ValueError("too few calls for this false-failure probability: the bound is <= 0")
    return bound


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
