"""The book's statistics module (chapters/_scripts/stats.py): tests against scipy's own
implementations and exact hand computations, and the claim guards."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from chapters._scripts import stats

NAMES = ("dropout", "no dropout")


def test_paired_t_matches_scipy_ttest_rel() -> None:
    a = [0.935, 0.931, 0.940, 0.933, 0.937]
    b = [0.925, 0.927, 0.923, 0.926, 0.924]
    result = stats.paired_t(a, b, names=NAMES, n_test=597)
    reference = scipy_stats.ttest_rel(a, b)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    d = np.subtract(a, b)
    half = scipy_stats.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert (result.low, result.high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert result.verdict == stats.BETTER
    assert result.test_se == pytest.approx(math.sqrt(0.93 * 0.07 / 597), rel=0.01)
    assert "paired t over 5 seeds" in result.describe() and "better" in result.describe()


def test_paired_t_uses_t_not_z_with_few_pairs() -> None:
    """Three pairs, mean 3 standard errors from 0: z = 2 says 'better'; t (4.30) does not."""
    d = np.array([1.0, 2.0, 3.0]) * 0.01
    se = d.std(ddof=1) / math.sqrt(3)
    shift = 3 * se - d.mean()
    a = d + shift
    result = stats.paired_t(a, np.zeros(3), names=NAMES)
    assert result.estimate == pytest.approx(3 * se)
    assert result.verdict == stats.NO_DIFFERENCE


def test_lower_is_better_flips_the_verdict() -> None:
    losses_a, losses_b = [0.20, 0.21, 0.19, 0.20], [0.30, 0.32, 0.31, 0.29]
    assert stats.paired_t(losses_a, losses_b, names=NAMES, metric="NLL",
                          higher_is_better=False).verdict == stats.BETTER
    assert stats.paired_t(losses_b, losses_a, names=NAMES, metric="NLL",
                          higher_is_better=False).verdict == stats.WORSE


def test_sign_flip_is_exact() -> None:
    """Five positive differences: of the 32 sign patterns only all-plus and all-minus are as
    extreme, so p = 2/32 = 0.0625 and five seeds cannot reach 5 %."""
    result = stats.sign_flip([1, 2, 3, 4, 5], [0, 0, 0, 0, 0], names=NAMES)
    assert result.p_value == pytest.approx(2 / 32)
    assert result.verdict == stats.NO_DIFFERENCE
    six = stats.sign_flip([1, 2, 3, 4, 5, 6], [0] * 6, names=NAMES)
    assert six.p_value == pytest.approx(2 / 64)
    assert six.verdict == stats.BETTER


def test_mcnemar_matches_the_exact_binomial() -> None:
    first = np.array([1] * 80 + [1] * 15 + [0] * 5 + [0] * 10, dtype=bool)
    second = np.array([1] * 80 + [0] * 15 + [1] * 5 + [0] * 10, dtype=bool)
    result = stats.mcnemar(first, second, names=NAMES)
    assert result.p_value == pytest.approx(scipy_stats.binomtest(15, 20, 0.5).pvalue)
    assert result.estimate == pytest.approx(10 / 110)
    assert result.verdict == stats.BETTER
    same = stats.mcnemar(first, first, names=NAMES)
    assert same.p_value == 1.0 and same.verdict == stats.NO_DIFFERENCE


def test_paired_bootstrap_detects_a_real_gap_and_not_a_null_one() -> None:
    """Seeded: the same rng draws every time. A 5-point gap on 600 images over 5 seeds is found;
    two models drawn from one distribution are not called different (false-positive rate of the
    procedure is about ALPHA, so this fixed seed pins one draw, it is not a rate)."""
    rng = np.random.default_rng(3)
    good = rng.random((5, 600)) < 0.95
    bad = rng.random((5, 600)) < 0.90
    result = stats.paired_bootstrap(good, bad, names=NAMES, n_boot=2000, seed=1)
    assert result.verdict == stats.BETTER and result.low > 0
    twin = rng.random((5, 600)) < 0.95
    null = stats.paired_bootstrap(good, twin, names=NAMES, n_boot=2000, seed=1)
    assert null.low < 0 < null.high
    assert null.verdict == stats.NO_DIFFERENCE


def test_paired_bootstrap_on_scores_and_its_p_resolution() -> None:
    """Per-image scores that are not 0/1 (confidences) are compared under their own metric name,
    with no binomial standard error; a p below the bootstrap's resolution prints as "p < 1/B";
    tiny differences keep their digits."""
    rng = np.random.default_rng(7)
    high = 0.9 + 0.05 * rng.random((3, 500))
    low = high - 0.02 - 0.001 * rng.random((3, 500))
    result = stats.paired_bootstrap(high, low, names=NAMES, n_boot=1000, metric="confidence")
    assert result.metric == "confidence" and result.test_se is None
    assert result.verdict == stats.BETTER and result.p_value == 0
    assert result.p_text() == "p < 0.001" and "p < 0.001" in result.describe()
    assert stats.paired_bootstrap(high > 0.92, low > 0.92, names=NAMES, n_boot=200).test_se
    tiny = stats.paired_t([1e-5, 2e-5, 3e-5], [0, 0, 0], names=NAMES, metric="distance")
    assert "+2e-05" in tiny.interval_text() and "p = " in tiny.describe()
    timed = stats.paired_t([3.0, 3.1, 3.2], [2.0, 2.2, 2.1], names=NAMES, unit="repetitions")
    assert "paired t over 3 repetitions" in timed.describe()


def test_paired_bootstrap_interval_is_wider_than_the_seed_only_interval() -> None:
    """Resampling test images adds the test set's own variability, which the seed t test omits."""
    rng = np.random.default_rng(5)
    base = rng.random(597) < 0.93
    a = np.array([base ^ (rng.random(597) < 0.01) for _ in range(5)])
    b = np.array([base ^ (rng.random(597) < 0.01) for _ in range(5)])
    boot = stats.paired_bootstrap(a, b, names=NAMES, n_boot=2000)
    seed_t = stats.paired_t(a.mean(axis=1), b.mean(axis=1), names=NAMES)
    assert boot.high - boot.low > 0.5 * (seed_t.high - seed_t.low)


@pytest.mark.parametrize("bad", [([1.0], [2.0]), ([1.0, 2.0], [1.0]), ([1.0, math.nan], [0, 0])])
def test_bad_samples_are_refused(bad) -> None:
    with pytest.raises(ValueError):
        stats.paired_t(*bad, names=NAMES)


def test_selection_and_bracketing() -> None:
    scores = {0.0: [0.90, 0.91], 0.3: [0.93, 0.94], 0.5: [0.92, 0.92]}
    assert stats.select_on_validation(scores) == 0.3
    assert stats.select_on_validation({1: [0.3], 2: [0.2]}, higher_is_better=False) == 2
    assert stats.is_bracketed([0.0, 0.3, 0.5], 0.3)
    assert not stats.is_bracketed([1e-5, 1e-4, 1e-3], 1e-5)
    stats.claim_bracketed([0.0, 0.3, 0.5], 0.3, "p = 0.3 was chosen")
    with pytest.raises(AssertionError, match="edge of the grid"):
        stats.claim_bracketed([1e-5, 1e-4, 1e-3], 1e-5, "lambda was tuned")
    # A strength cannot go below 0: a winner at 0 ("none") has nothing beyond it to try, but the
    # top edge of the same grid is still an unbracketed winner, and 0 must be in the grid.
    stats.claim_bracketed([0.0, 0.1, 1.0], 0.0, "no decay won", bound=0.0)
    assert not stats.is_bracketed([0.0, 0.1, 1.0], 1.0, bound=0.0)
    assert not stats.is_bracketed([0.01, 0.1, 1.0], 0.01, bound=0.0)
    with pytest.raises(ValueError, match="not in the grid"):
        stats.is_bracketed([0.01, 0.1], 0.0, bound=0.0)


@pytest.mark.parametrize("statement", [
    "in accuracy they were within the seed-to-seed spread",
    "dropout beats no dropout on every seed",
    "MC dropout has the lower NLL",
    "spatial dropout was not ahead",
    "dropout is more accurate than weight decay",
    "the two were indistinguishable",
    "the training accuracy at p = 0.9 is under that without dropout, on every seed",
    "on every seed the MC band's sd exceeds the deterministic sd",
    "spatial dropout's loss is smaller",
])
def test_claim_refuses_a_comparison_of_settings(statement: str) -> None:
    with pytest.raises(ValueError, match="claim_verdict"):
        stats.claim(True, statement)


@pytest.mark.parametrize("statement", [
    "every kept unit equals a*x + b",
    "for p = 0.3 every block size above 1 falls short by more than 0.02",
    "a batch of one raises in training mode",
    "the validation and test accuracies differ by under two standard errors",
    "the running variance is larger than 10% too large at p = 0.5",
    "the left end of the interval lies above one half",
])
def test_claim_accepts_statements_that_compare_nothing(statement: str) -> None:
    stats.claim(True, statement)
    with pytest.raises(AssertionError, match="measured otherwise"):
        stats.claim(False, statement)


def test_claim_verdict_pins_the_prose_to_the_test() -> None:
    result = stats.paired_t([0.935, 0.936, 0.934, 0.935], [0.925, 0.927, 0.923, 0.925],
                            names=NAMES)
    stats.claim_verdict(result, stats.BETTER, "dropout was more accurate")
    stats.claim_verdict(result, (stats.BETTER, stats.NO_DIFFERENCE), "dropout was not worse")
    with pytest.raises(AssertionError, match="the test found"):
        stats.claim_verdict(result, stats.NO_DIFFERENCE, "no detectable difference")
    with pytest.raises(ValueError, match="unknown verdicts"):
        stats.claim_verdict(result, "same", "the same")
