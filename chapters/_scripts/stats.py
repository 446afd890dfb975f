"""The book's statistics: paired comparisons of settings, their verdicts, and the build's claims.

Every sentence of a chapter that compares settings ("dropout beats no dropout", "the two are
indistinguishable") is backed by one of the comparisons here and checked with
:func:`claim_verdict`; :func:`claim` is for statements that compare nothing (a number against a
closed form, a property of one run) and refuses a statement worded as a comparison, so a
range check cannot stand in for a test again.

The vocabulary of a verdict is fixed (:data:`VERDICTS`): "better", "worse" (for the first setting
against the second, in the direction that is good for the metric) or "no detectable difference
at this size". It says what was found at the stated level, never that two settings are equal.

Two sources of randomness are in every measurement of the book: the training run (weights, batch
order, dropout masks: varied over seeds) and the fixed test set (its images are one sample of all
digits). :func:`paired_t` and :func:`sign_flip` treat the seeds as the sample (the test set fixed);
:func:`paired_bootstrap` resamples both seeds and test images, so its interval also holds for
new test images; :func:`mcnemar` tests one pair of runs on shared test images. Chapters say which
they used; :meth:`Comparison.describe` prints it with the interval.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats

#: Two-sided level of every test and interval in the book: 95 % intervals.
ALPHA = 0.05
BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no detectable difference at this size"
VERDICTS = (BETTER, WORSE, NO_DIFFERENCE)

# Words that make a statement a comparison of settings. A statement using them must come with a
# test (claim_verdict), not a bare boolean.
_COMPARATIVE = re.compile(
    r"\b(better|worse|beats?|beaten|ahead|behind|outperform\w*|helps?|hurts?|improv\w*|"
    r"indistinguishable|no detectable|same as|on par|within (the )?(seed|spread|noise)\w*|"
    r"wins?|loses|superior|inferior|lower|higher)\b"
    # "than" compares two things unless a number follows it ("more than 0.02" is a threshold);
    # so do "under", "above", "larger", ... ("under that without dropout" compares settings,
    # "above 0.5" and "larger than 10%" are thresholds).
    r"|\bthan\b(?!\s*[-+\u2212]?\d)"
    r"|\b(under|above|below|exceed\w*|smaller|larger|greater|faster|slower|fewer)\b"
    r"(?!\s*(than\s*)?([-+\u2212]?\d|(one|two|three|four|five|ten|half)\b))",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Comparison:
    """The result of comparing setting ``first`` with setting ``second`` on one metric.

    ``estimate`` is first - second (mean over pairs); ``low``/``high`` its (1 - ALPHA) interval;
    ``verdict`` is one of :data:`VERDICTS`, from the interval, in the metric's good direction.
    """

    first: str
    second: str
    metric: str
    estimate: float
    low: float
    high: float
    p_value: float
    n: int
    method: str
    higher_is_better: bool = True
    test_se: float | None = None
    #: The smallest p-value the method can tell from 0 (a bootstrap's 1 / replicates), if any.
    p_resolution: float | None = None

    @property
    def verdict(self) -> str:
        """"better"/"worse" when the interval excludes 0 (and p < ALPHA), else no difference."""
        if self.p_value >= ALPHA or self.low <= 0 <= self.high:
            return NO_DIFFERENCE
        up = self.low > 0
        return BETTER if up == self.higher_is_better else WORSE

    def p_text(self) -> str:
        """"p = 0.013", or "p < 0.00025" where the method cannot resolve a smaller p."""
        if self.p_resolution is not None and self.p_value < self.p_resolution:
            return f"p < {self.p_resolution:.2g}"
        return f"p = {self.p_value:.2g}"

    def interval_text(self) -> str:
        """The estimate and its interval, e.g. "+0.0134 [+0.0080, +0.0188]"."""
        return (f"{_signed(self.estimate)} [{_signed(self.low)}, {_signed(self.high)}]")

    def describe(self) -> str:
        """One line: verdict, estimate, interval, method, sample size and p-value."""
        text = (f"{self.first} vs {self.second} ({self.metric}): {self.verdict}, "
                f"difference {self.interval_text()} ({100 * (1 - ALPHA):.0f} % interval), "
                f"{self.method}, n = {self.n}, {self.p_text()}")
        if self.test_se is not None:
            text += f"; test-set standard error of one accuracy ±{self.test_se:.4f}"
        return text

    def __str__(self) -> str:
        return self.describe()


def _signed(x: float) -> str:
    """A signed number with four decimals, or three significant digits when that shows nothing."""
    return f"{x:+.4f}" if x == 0 or abs(x) >= 5e-4 else f"{x:+.3g}"


def _paired(first: Sequence[float], second: Sequence[float]) -> np.ndarray:
    a = np.asarray(first, dtype=float)
    b = np.asarray(second, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired samples need equal 1-D shapes, got {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError("a paired comparison needs at least two pairs")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired samples must be finite")
    return a - b


def binomial_se(accuracy: float, n_test: int) -> float:
    """Binomial standard error of one accuracy measured on ``n_test`` independent test images."""
    if not 0 <= accuracy <= 1 or n_test < 1:
        raise ValueError("accuracy must be in [0, 1] and n_test positive")
    return math.sqrt(accuracy * (1 - accuracy) / n_test)


def t_interval(values: Sequence[float], alpha: float = ALPHA) -> tuple[float, float, float]:
    """Mean and two-sided (1 - alpha) Student-t interval of ``values`` (ddof = 1)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        raise ValueError("an interval needs at least two values")
    mean = float(x.mean())
    half = float(_scipy_stats.t.ppf(1 - alpha / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def paired_t(first: Sequence[float], second: Sequence[float], *, names: tuple[str, str],
             metric: str = "accuracy", higher_is_better: bool = True,
             n_test: int | None = None, unit: str = "seeds") -> Comparison:
    """Paired t test over seeds: pair i is both settings trained with seed i.

    ``unit`` names what the pairs are, for the printed method ("repetitions" for timings that
    took turns).
    The interval is mean(d) ± t_{1-alpha/2, n-1}·sd(d)/√n. With ``n_test`` (test images behind each
    accuracy) the comparison also reports the test set's binomial standard error.
    """
    d = _paired(first, second)
    mean, low, high = t_interval(d)
    sd = float(d.std(ddof=1))
    if sd == 0:  # every pair differs by the same amount: no spread to test against
        p = 1.0 if mean == 0 else 0.0
    else:
        p = float(2 * _scipy_stats.t.sf(abs(mean) / (sd / math.sqrt(len(d))), len(d) - 1))
    return Comparison(names[0], names[1], metric, mean, low, high, p, len(d),
                      f"paired t over {len(d)} {unit}", higher_is_better,
                      _pooled_se(first, second, metric, n_test))


def _pooled_se(first: Sequence[float], second: Sequence[float], metric: str,
                 n_test: int | None) -> float | None:
    if n_test is None or "acc" not in metric:
        return None
    return binomial_se(float(np.mean([*first, *second])), n_test)


def sign_flip(first: Sequence[float], second: Sequence[float], *, names: tuple[str, str],
              metric: str = "accuracy", higher_is_better: bool = True,
              unit: str = "seeds") -> Comparison:
    """Exact paired permutation test: all 2^n sign flips of the differences (n ≤ 16).

    It assumes only that, with no difference, each pair's difference is as likely + as -. With n
    pairs the smallest attainable two-sided p is 2/2^n (n = 5: 0.0625 — five seeds can never
    give a verdict at 5 % this way; the verdict then says so). The interval is the t interval.
    """
    d = _paired(first, second)
    if len(d) > 16:
        raise ValueError("sign_flip enumerates 2^n flips; use paired_t for n > 16")
    observed = abs(d.mean())
    flips = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    means = np.abs(flips @ d / len(d))
    p = float(np.mean(means >= observed - 1e-12))
    mean, low, high = t_interval(d)
    return Comparison(names[0], names[1], metric, mean, low, high, p, len(d),
                      f"exact sign-flip test over {len(d)} {unit}", higher_is_better)


def mcnemar(correct_first: Sequence[bool], correct_second: Sequence[bool], *,
            names: tuple[str, str]) -> Comparison:
    """Exact McNemar test of two classifiers on the same test images.

    Only images one classifier gets right and the other wrong count: with b and c of them, the
    two-sided p is the binomial(b + c, 1/2) tail. The interval on the accuracy difference is
    Newcombe's paired Wald interval (b - c)/n ± z·√(b + c - (b - c)²/n)/n.
    """
    a = np.asarray(correct_first, dtype=bool)
    b_ = np.asarray(correct_second, dtype=bool)
    if a.shape != b_.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("McNemar needs two equal-length 1-D arrays of correct/incorrect")
    n = len(a)
    only_first = int(np.sum(a & ~b_))
    only_second = int(np.sum(~a & b_))
    discordant = only_first + only_second
    p = 1.0 if discordant == 0 else float(
        _scipy_stats.binomtest(only_first, discordant, 0.5).pvalue)
    diff = (only_first - only_second) / n
    z = float(_scipy_stats.norm.ppf(1 - ALPHA / 2))
    half = z * math.sqrt(max(discordant - (only_first - only_second) ** 2 / n, 0.0)) / n
    return Comparison(names[0], names[1], "accuracy", diff, diff - half, diff + half, p, n,
                      f"exact McNemar on {n} shared test images", True,
                      binomial_se(float(a.mean()), n))


def paired_bootstrap(correct_first: np.ndarray, correct_second: np.ndarray, *,
                     names: tuple[str, str], n_boot: int = 4000, seed: int = 0,
                     metric: str = "accuracy", higher_is_better: bool = True) -> Comparison:
    """Two-level paired bootstrap of a mean difference: seeds and test images resampled.

    ``correct_*`` have shape (seeds, test images): 1 where that seed's model got that image
    right (an accuracy), or any per-image score (a confidence, a loss: say which in ``metric``
    and ``higher_is_better``). The test set's binomial standard error is reported for 0/1 data.
    Each replicate draws seeds with replacement (the same seeds for both settings) and test
    images with replacement (the same images for both), so the percentile interval covers
    both the training randomness and the choice of test set. The p-value is the two-sided
    bootstrap tail 2·min(P(d* ≤ 0), P(d* ≥ 0)) (capped at 1; resolution 1/n_boot).
    """
    a = np.asarray(correct_first, dtype=float)
    b = np.asarray(correct_second, dtype=float)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] < 2:
        raise ValueError("need arrays of shape (seeds >= 2, test images), equal for both")
    rng = np.random.default_rng(seed)
    n_seeds, n_images = a.shape
    diff = a - b
    estimate = float(diff.mean())
    replicates = np.empty(n_boot)
    for r in range(n_boot):
        rows = rng.integers(0, n_seeds, n_seeds)
        cols = rng.integers(0, n_images, n_images)
        replicates[r] = diff[np.ix_(rows, cols)].mean()
    low, high = np.quantile(replicates, [ALPHA / 2, 1 - ALPHA / 2])
    p = min(1.0, 2 * min(np.mean(replicates <= 0), np.mean(replicates >= 0)))
    binary = bool(np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all())
    return Comparison(names[0], names[1], metric, estimate, float(low), float(high),
                      float(p), n_seeds, f"paired bootstrap over {n_seeds} seeds x {n_images} "
                      f"test images ({n_boot} replicates)", higher_is_better,
                      binomial_se(float(a.mean()), n_images) if binary else None, 1 / n_boot)


def select_on_validation(scores: Mapping[Hashable, Sequence[float]], *,
                         higher_is_better: bool = True) -> Hashable:
    """The setting with the best mean validation score (ties: the first in ``scores``' order)."""
    if not scores:
        raise ValueError("nothing to select from")
    means = {k: float(np.mean(v)) for k, v in scores.items()}
    return (max if higher_is_better else min)(means, key=means.get)


def is_bracketed(grid: Sequence[float], winner: float, *, bound: float | None = None) -> bool:
    """True when ``winner`` lies strictly inside ``grid`` (neither its smallest nor largest).

    ``bound`` is a value the setting cannot pass (0 for a regularisation strength: "none"); a
    winner *at* the bound, with the bound in the grid, is bracketed too, since nothing lies
    beyond it to try.
    """
    values = sorted(grid)
    if winner not in values:
        raise ValueError(f"{winner!r} is not in the grid {values}")
    if bound is not None and winner == bound:
        return True
    return values[0] < winner < values[-1]


def _is_comparative(statement: str) -> bool:
    return bool(_COMPARATIVE.search(statement))


def claim(holds: bool, statement: str) -> None:
    """Stop the build when a statement that compares no settings is not what this run measured.

    A statement worded as a comparison ("better than", "within the spread", "helps") is refused
    whatever ``holds`` is: compare settings with a test and :func:`claim_verdict`.
    """
    if _is_comparative(statement):
        raise ValueError(f"{statement!r} compares settings: back it with claim_verdict and a test")
    if not holds:
        raise AssertionError(f"the text says {statement!r}, but this run measured otherwise")


def claim_exact(holds: bool, statement: str) -> None:
    """Stop the build when a comparison of quantities with no sampling randomness fails.

    Only for exact numbers: closed forms, exact expectations, properties of one deterministic
    computation ("on 8x8 maps b = 7 drops more than b = 5" from the exact formula). A measured,
    random quantity compared between settings needs a test and :func:`claim_verdict`.
    """
    if not holds:
        raise AssertionError(f"the text says {statement!r}, but the exact computation disagrees")


def claim_verdict(comparison: Comparison, expected: str | Sequence[str], statement: str) -> None:
    """Stop the build unless the test's verdict is the one the text states.

    ``expected`` is one verdict of :data:`VERDICTS` or several (when the text is worded to hold
    for each, e.g. "not worse": (BETTER, NO_DIFFERENCE)).
    """
    allowed = (expected,) if isinstance(expected, str) else tuple(expected)
    unknown = [v for v in allowed if v not in VERDICTS]
    if unknown:
        raise ValueError(f"unknown verdicts {unknown}; use {VERDICTS}")
    if comparison.verdict not in allowed:
        raise AssertionError(f"the text says {statement!r} ({' or '.join(allowed)}), but the "
                             f"test found: {comparison.describe()}")


def claim_bracketed(grid: Sequence[float], winner: float, statement: str, *,
                    bound: float | None = None) -> None:
    """Stop the build when a tuned setting's winner sits on the edge of its grid.

    A winner on the edge means the optimum may lie outside the values tried: widen the grid. A
    winner at ``bound``, a value the setting cannot pass (see :func:`is_bracketed`), is inside.
    """
    if not is_bracketed(grid, winner, bound=bound):
        raise AssertionError(f"{statement!r}: the winner {winner!r} is on the edge of the grid "
                             f"{sorted(grid)}; the optimum was not bracketed")
