"""A stand-in for the few ``scipy.stats`` functions Exercise 4's verdict code calls, installed
by conftest.py only where SciPy is missing: the GPU machine has torch, NumPy and pytest alone,
and `make test-cuda` must still run every Exercise 4 test there. It is built on the checks'
own Student-t code (``dropout_course.checks.stats``), which tests/test_checks_core.py compares
with the real SciPy wherever SciPy is installed."""

from __future__ import annotations

import math
import sys
import types
from statistics import NormalDist
from typing import Any, NamedTuple

import numpy as np
from dropout_course.checks.stats import _t_central_probability, t_critical


class _T:
    @staticmethod
    def ppf(q: float, df: int) -> float:
        if q == 0.5:
            return 0.0
        upper = t_critical(2.0 * (1.0 - q), int(df)) if q > 0.5 else -t_critical(2.0 * q, int(df))
        return upper

    @staticmethod
    def interval(confidence: float, df: int) -> tuple[float, float]:
        half = t_critical(1.0 - confidence, int(df))
        return -half, half


class _Norm:
    @staticmethod
    def ppf(q: float) -> float:
        return NormalDist().inv_cdf(q)


class _TtestResult(NamedTuple):
    statistic: float
    pvalue: float


def _ttest_rel(a: Any, b: Any) -> _TtestResult:
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = d.size
    t = float(d.mean() / (d.std(ddof=1) / math.sqrt(n)))
    return _TtestResult(t, 1.0 - _t_central_probability(abs(t), n - 1))


def install() -> None:
    """Make ``from scipy import stats`` and ``import scipy.stats`` give the stand-in."""
    scipy = types.ModuleType("scipy")
    stats = types.ModuleType("scipy.stats")
    stats.t, stats.norm, stats.ttest_rel = _T(), _Norm(), _ttest_rel  # type: ignore[attr-defined]
    scipy.stats = stats  # type: ignore[attr-defined]
    sys.modules["scipy"], sys.modules["scipy.stats"] = scipy, stats
