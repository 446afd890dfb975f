"""Layers the course provides to its notebooks.

:class:`Dropout` is the course's own dropout layer: Exercise 2's module, here built on
``torch.nn.functional.dropout``. It is deliberately *not* a subclass of ``torch.nn.Dropout``,
so code that looks for dropout layers (Monte Carlo dropout, Exercise 3) must name it as well as
the ``torch.nn`` dropout family.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

__all__ = ["Dropout"]


class Dropout(torch.nn.Module):
    """Inverted dropout with drop probability ``p``; active only in training mode."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a real number in [0, 1], got {p!r}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
