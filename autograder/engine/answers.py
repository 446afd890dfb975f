"""Reference answers that hidden tests need: instructors only, never shipped to students.

A check in the public package (``dropout_course.checks``) judges properties and compares with
expected values it is *given*; it never computes a graded task's answer, because a student can
import the package and call anything in it. What does compute (part of) an answer lives here and
is imported only by hidden test cells, which run in the trusted grader (and in the instructor's
own tests), never in the sandbox: ``sandbox.PUBLIC_LIBRARY`` copies no module of this package but
``runner`` and ``wire``, and the student kit holds only ``dropout_course``.

Needs only torch and the public package, so the checks' tests run on a machine with just torch,
numpy and pytest.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import torch
from dropout_course.checks.ex03 import ALPHA_PRIME
from dropout_course.checks.stats import t_critical
from dropout_course.layers import GaussianDropout

__all__ = ["DROPOUT_LAYERS", "alpha_affine", "dropblock_gamma", "inverted_unit_variance",
           "linear_dropout_penalty", "paired_verdict", "uncorrected_test_factor"]

#: The dropout layers that Monte Carlo code must switch on (Exercise 3, Task 7; Exercise 4,
#: Task 4): torch.nn's dropout family and the course's GaussianDropout, which is not a
#: torch.nn.Dropout subclass. The hidden tests build a model around each.
DROPOUT_LAYERS: tuple[type[torch.nn.Module], ...] = (
    torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d,
    torch.nn.AlphaDropout, torch.nn.FeatureAlphaDropout, GaussianDropout,
)


def alpha_affine(p: float) -> tuple[float, float]:
    """Exercise 3, Task 2: the affine correction (a, b) of alpha dropout,
    a = ((1-p)(1 + p alpha'^2))^(-1/2), b = -a alpha' p. A kept unit becomes a x + b, a dropped
    one a alpha' + b."""
    a = ((1.0 - p) * (1.0 + p * ALPHA_PRIME**2)) ** -0.5
    return a, -a * ALPHA_PRIME * p


def dropblock_gamma(p: float, block_size: int, height: int, width: int) -> float:
    """Exercise 3, Task 3: the paper's rate of block centres (Ghiasi et al., 2018) for a
    height x width map: gamma = p / block_size^2 * (H W) / ((H - block_size + 1)(W - block_size
    + 1))."""
    valid = (height - block_size + 1) * (width - block_size + 1)
    return p / block_size**2 * (height * width) / valid


def paired_verdict(with_dropout: Sequence[float], without_dropout: Sequence[float],
                   alpha: float = 0.05) -> tuple[float, float, str]:
    """Exercise 4, Task 5 on valid input: (mean_diff, std_err, verdict) of the paired
    differences, with ``statistics.fmean`` and ``statistics.stdev`` (divisor n - 1); the verdict
    is the two-sided paired t-test at level ``alpha`` (critical value t_{1 - alpha/2, n - 1})."""
    diffs = [float(x) - float(y) for x, y in zip(with_dropout, without_dropout, strict=True)]
    mean = statistics.fmean(diffs)
    err = statistics.stdev(diffs) / math.sqrt(len(diffs))
    bar = t_critical(alpha, len(diffs) - 1) * err
    verdict = "helps" if mean > bar else "hurts" if mean < -bar else "inconclusive"
    return mean, err, verdict


# --------------------------------------------------------------------------- Exercise 2, Task 5
# The numeric questions: each hidden test compares the student's number with one of these
# (``dropout_course.checks.questions.check_close``). The parameters are in the question's text.

def inverted_unit_variance(x: float, p: float) -> float:
    """Question 1: Var[m x / (1 - p)] with m ~ Bernoulli(1 - p) is x^2 p / (1 - p)."""
    return x * x * p / (1.0 - p)


def uncorrected_test_factor(p: float) -> float:
    """Question 2: trained with the mask alone (no division by 1 - p) and evaluated with no
    correction, a pre-activation at test time is 1 / (1 - p) times its expected value in
    training."""
    return 1.0 / (1.0 - p)


def linear_dropout_penalty(x: Sequence[Sequence[float]], w: Sequence[float], p: float) -> float:
    """Question 3: inverted dropout on the inputs of linear regression adds, in expectation,
    p / (1 - p) * sum_j (X^T X)_jj w_j^2 to the squared error ||y - X w||^2."""
    columns = [sum(row[j] ** 2 for row in x) for j in range(len(w))]
    return p / (1.0 - p) * sum(c * wj**2 for c, wj in zip(columns, w, strict=True))
