"""Statistical checks of dropout masks, shared by the exercises: how many units were dropped and
whether neighbouring units were dropped independently.

Both compare a count with exact binomial tails (:func:`binomial_count_bounds`), so the chance
that a correct mask fails is at most the ``budget`` passed in, for any size.
"""

from __future__ import annotations

import torch

from .core import expect
from .stats import binomial_count_bounds

__all__ = ["expect_drop_count", "expect_fresh_masks", "expect_independent_neighbours"]


def _expect_binomial(count: int, n: int, prob: float, budget: float, what: str,
                     hint: str) -> None:
    """``count`` of n independent Bernoulli(prob) events must lie in the exact binomial interval
    that it leaves with probability at most ``budget``; ``what`` starts the failure message."""
    lo, hi = binomial_count_bounds(n, prob, budget)
    expect(lo <= count <= hi,
           f"{what}; a correct answer gives {lo}..{hi} (false-failure probability {budget:.2g})",
           hint)


def expect_drop_count(dropped: torch.Tensor, p: float, budget: float, where: str,
                      hint: str) -> None:
    """``dropped`` (bool) holds independent Bernoulli(p) indicators; their count must lie in the
    exact binomial interval that a correct mask leaves with probability at most ``budget``."""
    n = dropped.numel()
    count = int(dropped.sum().item())
    _expect_binomial(count, n, p, budget,
                     f"{where} dropped {count} of {n} ({count / n:.4f}, expected fraction "
                     f"{p:.4f})", hint)


def expect_independent_neighbours(dropped: torch.Tensor, p: float, budget: float, where: str,
                                  axes: dict[str, int], hint: str) -> None:
    """Neighbours along each named axis of ``dropped`` (bool) must agree (both dropped or both
    kept) as often as independent Bernoulli(p) units do: disjoint pairs (0, 1), (2, 3), ... along
    the axis agree independently with probability q = p^2 + (1-p)^2, so the count of agreeing
    pairs is Binomial(pairs, q). ``budget`` is split evenly over the axes. A mask shared along
    an axis agrees on every pair there and fails by hundreds of standard deviations."""
    q = p * p + (1.0 - p) * (1.0 - p)
    share = budget / len(axes)
    for name, axis in axes.items():
        size = dropped.shape[axis] // 2 * 2
        even = dropped.narrow(axis, 0, size).unfold(axis, 2, 2)
        agree = even[..., 0] == even[..., 1]
        count = int(agree.sum().item())
        _expect_binomial(count, agree.numel(), q, share,
                         f"{where}: neighbouring {name} agree (both dropped or both kept) in "
                         f"{count} of {agree.numel()} pairs", hint)


def expect_fresh_masks(first: torch.Tensor, second: torch.Tensor, where: str) -> None:
    """Two calls in a row must not drop exactly the same units (``first``/``second``: the dropped
    indicators, or the outputs). Exact in practice: the checks call it on thousands of units."""
    expect(not torch.equal(first, second),
           f"{where}: two calls in a row dropped exactly the same units",
           "draw a fresh random mask on every call; do not store or reseed a mask.")
