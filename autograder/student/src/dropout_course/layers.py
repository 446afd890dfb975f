"""Layers the course provides to its notebooks.

:class:`GaussianDropout` is the course's own dropout layer: multiplicative Gaussian noise
(Srivastava et al., 2014, section 10), which Exercises 3 and 4 use in their models. It is
deliberately *not* a subclass of ``torch.nn.Dropout``, so code that looks for dropout layers
(Monte Carlo dropout) must name it as well as the ``torch.nn`` dropout family. It is also not
the Bernoulli (inverted) dropout that Exercise 2 asks for: it never outputs zeros.
"""

from __future__ import annotations

import math
import numbers

import torch

__all__ = ["GaussianDropout"]


class GaussianDropout(torch.nn.Module):
    """Gaussian dropout with drop probability ``p`` in [0, 1): in training,
    ``out = x * (1 + sqrt(p / (1 - p)) * N(0, 1))`` with fresh noise for every element and every
    call (the noise has mean 1 and the variance of inverted Bernoulli dropout's mask, p / (1 - p));
    the identity in eval mode and for p = 0. Draws from the global random generator."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p < 1.0:
            raise ValueError(f"p must be a real number in [0, 1), got {p!r}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        noise = torch.randn(x.shape, device=x.device, dtype=x.dtype)
        return x * (1.0 + math.sqrt(self.p / (1.0 - self.p)) * noise)

    def extra_repr(self) -> str:
        return f"p={self.p}"
