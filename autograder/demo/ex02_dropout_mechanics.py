"""Demo submissions for Exercise 2: a correct answer written differently from the reference,
a partly correct one (no p validation, NaN at p = 1, one wrong number in Task 5) and one that
keeps units with probability p and leaves the questions unanswered.

The correct answer deliberately differs from the reference solution (NumPy ``binomial`` instead
of ``random() >= p``, ``torch.bernoulli`` instead of ``rand >= p``, a mask kept in a dict), so
the demo shows a different correct implementation getting full marks through nbgrader.
"""

_NP_FORWARD = '''
def dropout_forward(x, p, train, rng):
    """Inverted dropout, forward pass (binomial keep-mask)."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0 <= p <= 1):
        raise ValueError(f"p = {p!r} is not a probability in [0, 1]")
    if not train:
        return x.copy(), {"mask": None}
    keep = rng.binomial(1, 1.0 - p, size=x.shape).astype(x.dtype)
    scale = np.asarray(0.0 if p == 1 else 1.0 / (1.0 - p), dtype=x.dtype)
    return x * keep * scale, {"mask": keep, "scale": scale}
'''

_NP_BACKWARD = '''
def dropout_backward(dout, cache):
    """Inverted dropout, backward pass."""
    if cache["mask"] is None:
        return dout.copy()
    return dout * cache["mask"] * cache["scale"]
'''

_TORCH_DROPOUT = '''
def dropout(x, p=0.5, training=True, generator=None):
    """Inverted dropout with torch.bernoulli."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0 <= p <= 1):
        raise ValueError(f"p = {p!r} is not a probability in [0, 1]")
    if not training:
        return x.clone()
    keep = torch.bernoulli(torch.full_like(x, 1.0 - p), generator=generator)
    return x * keep * (0.0 if p == 1 else 1.0 / (1.0 - p))
'''

_TORCH_DROPOUT_NO_CHECKS = '''
def dropout(x, p=0.5, training=True, generator=None):
    """Inverted dropout; forgets to validate p and divides by zero at p = 1."""
    if not training:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return x * keep / (1 - p) if p < 1 else x * keep * float("inf")
'''

_TORCH_DROPOUT_KEEPS_P = '''
def dropout(x, p=0.5, training=True, generator=None):
    """Reads p as the KEEP probability (as in the original paper) and scales by 1 / p."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0 <= p <= 1):
        raise ValueError(f"p = {p!r} is not a probability in [0, 1]")
    if not training or p == 0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device) < p
    return x * keep / p
'''

_NP_FORWARD_KEEPS_P = '''
def dropout_forward(x, p, train, rng):
    """Reads p as the KEEP probability and scales by 1 / p."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0 <= p <= 1):
        raise ValueError(f"p = {p!r} is not a probability in [0, 1]")
    if not train or p == 0:
        return x.copy(), None
    mask = (rng.random(x.shape) < p) / p
    return (x * mask).astype(x.dtype), mask.astype(x.dtype)
'''

_NP_BACKWARD_KEEPS_P = '''
def dropout_backward(dout, cache):
    """Backward pass matching the forward pass above."""
    return dout.copy() if cache is None else dout * cache
'''

_MODULE = '''
class Dropout(torch.nn.Module):
    """Inverted dropout as a layer."""

    def __init__(self, p=0.5):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (0 <= p <= 1):
            raise ValueError(f"p = {p!r} is not a probability in [0, 1]")
        self.p = p

    def forward(self, x):
        return dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"
'''

# Task 5, the numeric questions: the right numbers written in other forms (a Fraction, a NumPy
# scalar, a 0-d float32 tensor, plain expressions), and one wrong number.
_VARIANCE_FRACTION = """from fractions import Fraction

answer_unit_variance = Fraction(3, 2) ** 2 * Fraction(3, 10) / Fraction(7, 10)
"""
_VARIANCE_FLOAT = "answer_unit_variance = 1.5 * 1.5 * 0.3 / 0.7\n"
_FACTOR_NUMPY = "answer_factor = np.float64(1.0) / np.float64(0.65)\n"
_FACTOR_INT_DIVISION = "answer_factor = 20 / 13  # 1 / (1 - 0.35) = 1 / 0.65\n"
_PENALTY_TENSOR = "answer_penalty = torch.tensor(26.5) / 3  # p / (1 - p) = 1 / 3\n"
# Wrong: the penalty of dropout without the 1 / (1 - p) scaling, p (1 - p) instead of p / (1 - p).
_PENALTY_UNSCALED = "answer_penalty = 0.25 * (1 - 0.25) * (10 * 0.5**2 + 6 * 2**2)\n"
_WRITTEN = """Keeping a unit with probability q and dividing by q leaves the mean at x for any q,
so the mean is the same whether q = 1 - p or q = p. The fraction of zeros differs: 0.2 of the
units for the correct version, 0.8 for the swapped one at p = 0.2; so does the variance
(0.25 x^2 against 4 x^2)."""

STUDENTS: dict[str, dict[str, str | None]] = {
    "ann_correct": {
        "dropout_forward": _NP_FORWARD,
        "dropout_backward": _NP_BACKWARD,
        "dropout": _TORCH_DROPOUT,
        "Dropout": _MODULE,
        "answer_unit_variance": _VARIANCE_FRACTION,
        "answer_factor": _FACTOR_NUMPY,
        "answer_penalty": _PENALTY_TENSOR,
        "written_answer": _WRITTEN,
    },
    "bo_partial": {
        "dropout_forward": _NP_FORWARD,
        "dropout_backward": _NP_BACKWARD,
        "dropout": _TORCH_DROPOUT_NO_CHECKS,
        "Dropout": _MODULE,
        "answer_unit_variance": _VARIANCE_FLOAT,
        "answer_factor": _FACTOR_INT_DIVISION,
        "answer_penalty": _PENALTY_UNSCALED,
    },
    "cal_keeps_p": {
        "dropout_forward": _NP_FORWARD_KEEPS_P,
        "dropout_backward": _NP_BACKWARD_KEEPS_P,
        "dropout": _TORCH_DROPOUT_KEEPS_P,
        "Dropout": _MODULE,
    },
}

#: Automatic points each demo student must get, out of 17 (the written answer, 2 points, is
#: graded by hand).
EXPECTED = {
    "ann_correct": 17.0,
    # loses the hidden contract cell (invalid p, NaN at p = 1) and Question 3 (a wrong number)
    "bo_partial": 14.0,
    # only the visible module test passes: it does not look at what p means; the questions are
    # left as the stubs
    "cal_keeps_p": 1.0,
}

#: Test cells each demo student fails (checked without nbgrader by tests/test_checks_ex02.py).
FAILED_CELLS = {
    "ann_correct": set(),
    "bo_partial": {"test_dropout_hidden_contract", "test_penalty_answer"},
    "cal_keeps_p": {
        "test_np_forward_visible", "test_np_forward_hidden", "test_np_backward_visible",
        "test_np_backward_hidden", "test_dropout_visible", "test_dropout_hidden_statistics",
        "test_dropout_hidden_contract", "test_dropout_hidden_gradient", "test_module_hidden",
        "test_unit_variance_answer", "test_factor_answer", "test_penalty_answer",
    },
}
