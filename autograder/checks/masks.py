"""Statistical checks of dropout masks, shared by the exercises: how many units were dropped and
whether neighbouring units were dropped independently.

Both compare a count with exact binomial tails (:func:`binomial_count_bounds`), so the chance
that a correct mask fails is at most the ``budget`` passed in, for any size.
"""

from __future__ import annotations

import torch

from .core import expect
from .stats import binomial_count_bounds

__all__ = ["expect_drop_count", "expect_independent_neighbours"]


def expect_drop_count(dropped: torch.Tensor, p: float, budget: float, where: str,
                      hint: str) -> None:
    """``dropped`` (bool) holds independent Bernoulli(p) indicators; their count must lie in the
    exact binomial interval that a correct mask leaves with probability at most ``budget``."""
    n = dropped.numel()
    count = int(dropped.sum().item())
    lo, hi = binomial_count_bounds(n, p, budget)
    expect(
        lo <= count <= hi,
        f"{where} dropped {count} of {n} ({count / n:.4f}); a correct answer drops between {lo} "
        f"and {hi} (expected fraction {p:.4f}; false-failure probability {budget:.2g})",
        hint,
    )


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
        n = agree.numel()
        count = int(agree.sum().item())
        lo, hi = binomial_count_bounds(n, q, share)
        expect(
            lo <= count <= hi,
            f"{where}: neighbouring {name} were dropped together (or apart) in {count} of {n} "
            f"pairs; independent masks agree in {lo}..{hi} (false-failure probability "
            f"{share:.2g})",
            hint,
        )
