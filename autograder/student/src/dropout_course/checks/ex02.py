"""Checks for Exercise 2 (dropout mechanics): NumPy and PyTorch dropout from scratch.

p is the DROP probability throughout. Every tensor check runs on each available device
(:func:`available_devices`) and, where it says so, in every floating dtype of
:func:`float_dtypes`. Random checks state their false-failure probability: the chance that a
correct implementation fails them by bad luck. Structural checks are exact (probability 0).

The functions under test follow the exercise's contract:

* ``dropout(x, p=0.5, training=True, generator=None) -> Tensor``
* ``Dropout(p=0.5)``, a ``torch.nn.Module``
* ``dropout_forward(x, p, train, rng) -> (out, cache)`` and ``dropout_backward(dout, cache)``
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from . import contract
from .core import expect, expect_raises, fail, run_student, short_repr
from .devices import available_devices
from .masks import expect_drop_count, expect_fresh_masks, expect_independent_neighbours
from .stats import (
    DEFAULT_FALSE_FAILURE,
    binomial_count_bounds,
    binomial_spread_lower_bound,
    hoeffding_half_width,
)
from .tensors import call_tensor_fn_many, device_dtype_cases, generator_on, positive, ulps

__all__ = [
    "INVALID_P",
    "check_drop_count_varies",
    "check_drop_fraction",
    "check_dropout_module",
    "check_eval_and_p0_identity",
    "check_generator",
    "check_gradient",
    "check_invalid_p",
    "check_masks_independent",
    "check_mean_preserved",
    "check_module_gradient",
    "check_np_backward",
    "check_np_forward_basics",
    "check_np_forward_edge_cases",
    "check_np_forward_random",
    "check_p_one",
    "check_shape_dtype_device",
    "check_values_zero_or_scaled",
]

#: Values of p that must raise ValueError: outside [0, 1], NaN, infinite, not a real number.
INVALID_P = contract.INVALID_P

_SCALE_HINT = (
    "keep each unit with probability 1 - p (p is the DROP probability) and divide the kept "
    "values by 1 - p (inverted dropout)."
)


def _call(dropout: Callable[..., Any], x: torch.Tensor, p: Any, training: bool = True,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """Call the student's dropout; the result must be a tensor."""
    return contract.apply(dropout, x, p, training, generator)


# --------------------------------------------------------------------------- structure


def check_shape_dtype_device(dropout: Callable[..., Any], p: float = 0.3) -> None:
    """Output has the input's shape, dtype and device, for every device and float dtype, in
    training and in eval mode; the input is never modified in place. Exact (probability 0)."""
    contract.check_shape_dtype_device(dropout, p, (4, 3, 5))


def check_values_zero_or_scaled(dropout: Callable[..., Any], p: float, seed: int = 1) -> None:
    """In training every output element is 0 or x / (1 - p) (to a few ulps of the dtype), and
    both occur. Exact given n = 4096 elements per dtype: a correct dropout with 0 < p < 1 yields
    only zeros or no zeros with probability p^n + (1-p)^n < 1e-180."""
    for device, dtype in device_dtype_cases():
        x = positive((64, 64), device, dtype, seed=2)
        out = _call(dropout, x, p, True, generator_on(device, seed))
        where = f"dropout(x of {dtype} on {device.type}, p={p})"
        wanted = x.double() / (1.0 - p)
        kept = out != 0
        close = (out.double() - wanted).abs() <= ulps(dtype) * wanted.abs()
        bad = kept & ~close
        if bool(bad.any()):
            fail(
                f"{where}: some kept values are not x / (1 - p); e.g. x="
                f"{short_repr(x[bad][0].item())} gave {short_repr(out[bad][0].item())}, "
                f"expected {short_repr(wanted[bad][0].item())}",
                _SCALE_HINT,
            )
        expect(
            bool(kept.any()) and not bool(kept.all()),
            f"{where}: {'no' if not kept.any() else 'every'} unit was kept",
            _SCALE_HINT,
        )


def check_drop_fraction(dropout: Callable[..., Any], p: float, n: int = 200_000,
                        seed: int = 0) -> None:
    """The number of dropped units among n is within the binomial bound for p, on every device
    and float dtype.

    The count of zeros is Binomial(n, p) for a correct dropout; the bounds come from
    :func:`binomial_count_bounds` (exact tails). False-failure probability 1e-6 for the whole
    check, split evenly over its device/dtype cases. With n = 200 000 and p = 0.2 the bound is
    about p +- 0.005, hundreds of standard deviations away from keeping with probability p
    (dropping 1 - p) or not dropping at all.
    """
    cases = device_dtype_cases()
    budget = DEFAULT_FALSE_FAILURE / len(cases)
    for device, dtype in cases:
        x = positive((n,), device, dtype, seed=3)
        out = _call(dropout, x, p, True, generator_on(device, seed))
        expect_drop_count(out == 0, p, budget,
                          f"dropout(x of {n} elements, {dtype} on {device.type}, p={p})",
                          "p is the probability of DROPPING a unit: keep with probability "
                          "1 - p, e.g. torch.rand(..., generator=generator) >= p.")


def check_drop_count_varies(dropout: Callable[..., Any], p: float, n: int = 1000,
                            calls: int = 200, seed: int = 0) -> None:
    """Each unit is dropped by its own draw, not a fixed number of units per call: over
    ``calls`` calls on n elements (one generator), on every device in float32 and float64.

    For a correct dropout the dropped counts K_r are independent Binomial(n, p), so
    S = sum_r (K_r - n p)^2 has mean calls * n p (1 - p) and stays above
    :func:`~dropout_course.checks.stats.binomial_spread_lower_bound`. False-failure probability
    1e-6 for the whole check, split evenly over its device/dtype cases. At n = 1000 and 200
    calls the bound is about a third of the mean (p = 0.2 and 0.7); dropping exactly round(p n)
    units (a random permutation) gives S < 200 / 4, thousands of times lower.
    """
    cases = device_dtype_cases((torch.float32, torch.float64))
    budget = DEFAULT_FALSE_FAILURE / len(cases)
    bound = binomial_spread_lower_bound(n, p, calls, budget)
    for device, dtype in cases:
        x = positive((n,), device, dtype, seed=17)
        gen = generator_on(device, seed)
        outs = call_tensor_fn_many(
            dropout, [((x, p), {"training": True, "generator": gen})] * calls)
        counts = [int((out == 0).sum()) for out in outs]
        spread = sum((k - n * p) ** 2 for k in counts)
        expect(
            spread > bound,
            f"dropout(x of {n} elements, {dtype} on {device.type}, p={p}), called {calls} "
            f"times, dropped {min(counts)}..{max(counts)} units: their mean squared distance "
            f"from n p is {spread / calls:.1f}, but independent draws give n p (1 - p) = "
            f"{n * p * (1 - p):.1f} and a correct dropout stays above {bound / calls:.1f} "
            f"(false-failure probability {budget:.2g})",
            "decide every unit by its own random draw (torch.rand(x.shape) >= p, or "
            "torch.bernoulli): the number dropped must vary from call to call; do not drop a "
            "fixed number round(p * n) of units (e.g. with torch.randperm).",
        )


def check_mean_preserved(dropout: Callable[..., Any], p: float, n: int = 200_000,
                         seed: int = 0) -> None:
    """The mean of the output matches the mean of the input (E[out_i] = x_i): inverted dropout
    needs no rescaling at test time. Runs on every device in float64 and float32.

    Each out_i - x_i is independent, lies in an interval of length x_i / (1 - p) and has mean 0
    for a correct dropout, so Hoeffding's inequality bounds the deviation of the sum for any n
    (no normal approximation). False-failure probability 1e-6 for the whole check, split evenly
    over its device/dtype cases. With n = 200 000 inputs in [0.5, 1.5) the bound is below 1% of
    the mean for p = 0.2 and about 2% for p = 0.7 (float32 rounding moves the sum by less than
    1e-6 of it); no rescaling is off by p, scaling by 1/p by a factor (1 - p)/p.
    """
    cases = device_dtype_cases((torch.float64, torch.float32))
    budget = DEFAULT_FALSE_FAILURE / len(cases)
    for device, dtype in cases:
        x = positive((n,), device, dtype, seed=15)
        out = _call(dropout, x, p, True, generator_on(device, seed))
        x64 = x.double()
        width = hoeffding_half_width(float((x64 / (1.0 - p)).square().sum()), budget)
        got, wanted = float(out.double().sum()), float(x64.sum())
        expect(
            abs(got - wanted) <= width,
            f"dropout(x of {n} elements, {dtype} on {device.type}, p={p}) has mean "
            f"{got / n:.4f}, but the input's mean is {wanted / n:.4f}; a correct dropout lands "
            f"within +-{width / n:.4f} (false-failure probability {budget:.2g})",
            "the expected output must equal the input: keep with probability 1 - p and "
            "divide the kept values by 1 - p.",
        )


def check_masks_independent(dropout: Callable[..., Any], p: float = 0.4, seed: int = 5) -> None:
    """Units are dropped independently, and each call draws a new mask (every device, float32
    and float64).

    On a (512, 256) input, disjoint pairs of neighbouring rows (and of neighbouring columns)
    agree (both dropped or both kept) with probability q = p^2 + (1-p)^2 each, independently:
    65 536 pairs, so the agreement count is Binomial(65 536, q), bounded with exact tails.
    False-failure probability 1e-6 for the whole check, split evenly over its device/dtype cases
    and the two directions. One mask for the whole batch (rows identical), one per row, or a
    fixed stripe pattern lands hundreds of sigma outside. Two calls give the same mask with
    probability below 2^-1000 (exact in practice).
    """
    cases = device_dtype_cases((torch.float32, torch.float64))
    budget = DEFAULT_FALSE_FAILURE / len(cases)
    for device, dtype in cases:
        x = positive((512, 256), device, dtype, seed=4)
        gen = generator_on(device, seed)
        first = _call(dropout, x, p, True, gen) == 0
        second = _call(dropout, x, p, True, gen) == 0
        where = f"dropout on {dtype} on {device.type} (p={p})"
        expect_fresh_masks(first, second, where)
        expect_independent_neighbours(
            first, p, budget, where, {"rows": 0, "columns": 1},
            "draw one independent random number per element (a mask of x's full shape), "
            "not one per row, per column or per batch.",
        )


def check_generator(dropout: Callable[..., Any], p: float = 0.3) -> None:
    """With a generator: the same seed gives the same output, and the global RNG state (CPU and
    CUDA) is untouched, on every device and float dtype. Exact (probability 0)."""
    contract.check_generator(dropout, p, (32, 32))


def check_eval_and_p0_identity(dropout: Callable[..., Any]) -> None:
    """training=False (any p) and p=0 return the input's values unchanged, on every device and
    dtype. Exact (probability 0)."""
    contract.check_eval_and_p0_identity(dropout, (16, 16))


def check_p_one(dropout: Callable[..., Any]) -> None:
    """p = 1 gives all zeros, with no NaN, and a zero (not NaN) gradient, on every device and
    float dtype. Exact."""
    contract.check_p_one(dropout, (8, 8))


def check_invalid_p(dropout: Callable[..., Any]) -> None:
    """p outside [0, 1], NaN, infinite or not a real number raises ValueError naming p, also
    when training=False, for tensors on every device in float32 and float64. Exact."""
    contract.check_invalid_p(dropout, (4,))


def _expect_masked_gradient(apply: Callable[[torch.Tensor], Any], p: float,
                            device: torch.device, dtype: torch.dtype, where: str) -> None:
    """Run ``apply`` on a fresh x that requires grad; its gradient must be upstream * mask /
    (1 - p), with the mask read off the output (a zero output is a dropped unit: x is never 0)."""
    x = positive((40, 30), device, dtype, seed=9).requires_grad_(True)
    out = apply(x)
    expect(
        isinstance(out, torch.Tensor) and out.requires_grad,
        f"{where}: the output does not require grad (it left the autograd graph)",
        "use differentiable torch operations: no .detach(), .numpy() or torch.tensor(...) "
        "of the result.",
    )
    upstream = positive(tuple(x.shape), device, dtype, seed=10)
    out.backward(upstream)
    wanted = upstream * (out != 0).to(dtype) / (1.0 - p)
    expect(
        x.grad is not None and torch.allclose(x.grad, wanted, rtol=1e-5, atol=0.0),
        f"{where}: the gradient is not upstream * mask / (1 - p)",
        "the backward pass multiplies by the same mask and the same 1 / (1 - p) as the "
        "forward pass; let autograd derive it from out = x * mask / (1 - p).",
    )


def check_gradient(dropout: Callable[..., Any], p: float = 0.3) -> None:
    """The gradient with respect to x is upstream * mask / (1 - p), in float64 and float32 on
    every device, and the output is part of the autograd graph. Exact to 1e-5 relative."""
    for device, dtype in device_dtype_cases((torch.float64, torch.float32)):
        _expect_masked_gradient(
            lambda x, d=device: _call(dropout, x, p, True, generator_on(d, 2)),
            p, device, dtype, f"dropout(x of {dtype} on {device.type}, p={p})",
        )


def check_module_gradient(module_class: type[torch.nn.Module], p: float = 0.3) -> None:
    """Through ``Dropout(p)`` in train mode, moved to each device, the gradient is
    upstream * mask / (1 - p) (float32 and float64). Exact to 1e-5 relative."""
    module = run_student(module_class, p)
    name = getattr(module_class, "__name__", "Dropout")
    for device in available_devices():
        moved = run_student(module.to, device).train()
        for dtype in (torch.float64, torch.float32):
            _expect_masked_gradient(
                lambda x, m=moved: run_student(m, x), p, device, dtype,
                f"{name}({p}) in train mode on x of {dtype} on {device.type}",
            )


def check_dropout_module(module_class: type[torch.nn.Module], p: float = 0.3) -> None:
    """``Dropout``: a Module with attribute p and p in its repr; invalid p raises ValueError;
    train() drops units, and a fresh mask in every forward call; eval() is the identity; works
    after .to(device) on every device. Exact except 'drops units in training', which fails a
    correct module with probability (1 - p)^4096 < 1e-600, and 'a fresh mask', which fails it
    when two calls drop the same units: (p^2 + (1 - p)^2)^4096 < 1e-600 for 0.3 <= p <= 0.75."""
    module = run_student(module_class, p)
    name = getattr(module_class, "__name__", "Dropout")
    expect(isinstance(module, torch.nn.Module), f"{name}({p}) is not a torch.nn.Module",
           "subclass torch.nn.Module and call super().__init__().")
    expect(getattr(module, "p", None) == p, f"{name}({p}).p is {getattr(module, 'p', None)!r}",
           "store the drop probability as self.p.")
    text = run_student(repr, module)
    expect(str(p) in text, f"repr({name}({p})) is {text!r}: it does not show p",
           "define extra_repr(self) returning a string such as 'p=0.3'.")
    for bad in (-0.5, 1.5, float("nan")):
        expect_raises(module_class, (bad,), ValueError, f"p={bad} is not a probability")
    for device, dtype in device_dtype_cases((torch.float32, torch.float64)):
        moved = run_student(module.to, device)
        x = positive((64, 64), device, dtype, seed=11)
        where = f"{name}({p}) on x of {dtype} on {device.type}"
        run_student(moved.train)
        out = run_student(moved, x)
        expect(
            isinstance(out, torch.Tensor) and out.device == x.device and out.dtype == x.dtype
            and bool((out == 0).any()),
            f"{where} in train mode dropped nothing (or changed the output's device or dtype)",
            "forward must apply dropout when self.training is True, on x's device.",
        )
        again = run_student(moved, x)
        expect(
            isinstance(again, torch.Tensor) and not torch.equal(out == 0, again == 0),
            f"{where}: two forward calls in train mode dropped exactly the same units",
            "draw a fresh mask in every forward call (call your dropout there); do not draw it "
            "once in __init__ or keep it from an earlier call.",
        )
        run_student(moved.eval)
        out = run_student(moved, x)
        expect(
            isinstance(out, torch.Tensor) and torch.equal(out, x),
            f"{where} in eval mode changed its input",
            "forward must pass self.training to your dropout: in eval mode it is the identity.",
        )


# --------------------------------------------------------------------------- NumPy


def _np_positive(shape: tuple[int, ...], seed: int, dtype: Any = np.float64) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) + 0.5).astype(dtype)


def _np_forward(forward: Callable[..., Any], x: np.ndarray, p: Any, train: bool,
                seed: int) -> tuple[np.ndarray, Any]:
    result = run_student(forward, x, p, train, np.random.default_rng(seed))
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], np.ndarray)):
        # the message is built only on failure: the repr of the arrays costs more than the call
        fail(f"dropout_forward returned {short_repr(result)}; expected (out, cache) with out "
             "an ndarray", "end with `return out, cache`.")
    return result


def check_np_forward_basics(forward: Callable[..., Any], p: float, seed: int = 3) -> None:
    """NumPy forward in training: returns (out, cache) with out of x's shape and dtype (float64
    and float32), every element 0 or x / (1 - p) (relative 1e-12, float32 1e-6), some of each,
    x not modified; train=False returns x's values. Exact (a correct dropout drops all or none
    of the 10 000 units with probability below 1e-400)."""
    call = f"dropout_forward(x, p={p}, train=True, rng)"
    for dtype, rtol in ((np.float64, 1e-12), (np.float32, 1e-6)):
        x = _np_positive((100, 100), seed=12, dtype=dtype)
        x_copy = x.copy()
        out, _ = _np_forward(forward, x, p, True, seed=seed)
        expect(np.array_equal(x, x_copy), f"{call} modified x in place",
               "return a new array: out = x * mask / (1 - p), never x *= ... or x[...] = 0.")
        expect(out.shape == x.shape and out.dtype == x.dtype,
               f"{call} on {np.dtype(dtype).name} input gave shape {out.shape} and dtype "
               f"{out.dtype}", "keep x's shape and dtype, e.g. (mask / (1 - p)).astype(x.dtype).")
        kept = out != 0
        wanted = x.astype(np.float64) / (1.0 - p)
        ok = ~kept | np.isclose(out.astype(np.float64), wanted, rtol=rtol, atol=0.0)
        expect(bool(ok.all()), f"{call}: kept values are not x / (1 - p)", _SCALE_HINT)
        expect(bool(kept.any()) and not bool(kept.all()),
               f"{call}: {'no' if not kept.any() else 'every'} unit was kept", _SCALE_HINT)
        same, _ = _np_forward(forward, x, p, False, seed=seed)
        expect(np.array_equal(same, x),
               f"dropout_forward(x, p={p}, train=False, rng) changed the values",
               "with train=False return x's values unchanged (inverted dropout scales only in "
               "training).")


def check_np_forward_random(forward: Callable[..., Any], p: float, n: int = 200_000,
                            seed: int = 3) -> None:
    """NumPy forward randomness: the number dropped among n is within the binomial bound
    (false-failure probability 1e-6, exact tails); the same rng seed gives the same output, two
    calls with one rng give different masks (equal with probability (p^2 + (1-p)^2)^n < 1e-9000);
    NumPy's global random state is untouched. Total false-failure probability 1e-6."""
    lo, hi = binomial_count_bounds(n, p, DEFAULT_FALSE_FAILURE)
    call = f"dropout_forward(x, p={p}, train=True, rng)"
    x = _np_positive((n // 500, 500), seed=16)
    saved = np.random.get_state()
    try:
        np.random.seed(0)
        global_before = np.random.get_state()[1].copy()
        out, _ = _np_forward(forward, x, p, True, seed=seed)
        global_untouched = bool(np.array_equal(np.random.get_state()[1], global_before))
    finally:
        np.random.set_state(saved)
    expect(global_untouched, f"{call} changed NumPy's global random state",
           "use the rng argument (rng.random(x.shape)), never np.random.rand or np.random.seed.")
    dropped = int((out == 0).sum())
    expect(lo <= dropped <= hi,
           f"{call} dropped {dropped} of {n} ({dropped / n:.4f}); a correct dropout drops "
           f"{lo}..{hi} (false-failure probability {DEFAULT_FALSE_FAILURE:g})",
           "p is the probability of DROPPING: keep where rng.random(x.shape) >= p.")
    again, _ = _np_forward(forward, x, p, True, seed=seed)
    expect(np.array_equal(out, again), f"{call}: the same rng seed gave a different output",
           "use only `rng` for randomness, and draw the mask from it on every call.")
    rng = np.random.default_rng(seed + 1)
    first = run_student(forward, x, p, True, rng)[0]
    second = run_student(forward, x, p, True, rng)[0]
    expect(not np.array_equal(first == 0, second == 0),
           f"{call}: two calls with the same rng dropped exactly the same units",
           "draw a new mask from `rng` on every call; do not make your own generator or seed.")


def check_np_forward_edge_cases(forward: Callable[..., Any]) -> None:
    """NumPy forward: p = 0 returns x's values, p = 1 returns zeros without NaN, an invalid p
    raises ValueError (in training and not). Exact."""
    x = _np_positive((8, 8), seed=17) - 1.0
    same, _ = _np_forward(forward, x, 0.0, True, seed=8)
    expect(np.array_equal(same, x), "dropout_forward(x, p=0, train=True, rng) changed the values",
           "p = 0 drops nothing and divides by 1 - 0 = 1: the values must come back unchanged.")
    zeros, _ = _np_forward(forward, x, 1.0, True, seed=8)
    expect(not bool(np.isnan(zeros).any()) and bool(np.all(zeros == 0)),
           f"dropout_forward(x, p=1, train=True, rng) gave {short_repr(zeros.ravel()[:4])}...",
           "p = 1 drops everything: return zeros without computing x / (1 - p) = x / 0.")
    for bad in INVALID_P:
        for train in (True, False):
            expect_raises(forward, (x, bad, train, np.random.default_rng(0)), ValueError,
                          f"p={bad!r} is not a probability")


def check_np_backward(forward: Callable[..., Any], backward: Callable[..., Any],
                      p: float) -> None:
    """NumPy backward: dx = dout * mask / (1 - p) with the forward pass's mask, dx = dout in
    eval mode, and dx matches a central finite-difference gradient (the mask is held fixed by
    re-seeding rng); dout is not modified; p = 1 gives a zero gradient without NaN.
    Deterministic (probability 0); tolerances 1e-12 (mask formula) and 1e-6 (finite
    differences) relative, in float64."""
    x = _np_positive((20, 30), seed=13)
    dout = _np_positive((20, 30), seed=14) - 1.0
    dout_copy = dout.copy()
    out, cache = _np_forward(forward, x, p, True, seed=7)
    dx = run_student(backward, dout, cache)
    if not (isinstance(dx, np.ndarray) and dx.shape == x.shape):
        # the message is built only on failure: the repr of an array costs more than the call
        fail(f"dropout_backward returned {short_repr(dx)}", "return an array shaped like dout.")
    expect(np.array_equal(dout, dout_copy), "dropout_backward modified dout in place",
           "return a new array: dx = dout * mask / (1 - p).")
    mask = out != 0
    expect(bool(np.allclose(dx, dout * mask / (1.0 - p), rtol=1e-12, atol=0.0)),
           f"dropout_backward(dout, cache) with p={p} is not dout * mask / (1 - p)",
           "keep the forward mask (and p) in cache; the gradient uses the same mask and scale.")
    _, eval_cache = _np_forward(forward, x, p, False, seed=7)
    dx_eval = run_student(backward, dout, eval_cache)
    expect(isinstance(dx_eval, np.ndarray) and np.array_equal(dx_eval, dout),
           "dropout_backward after dropout_forward(..., train=False) is not dout",
           "in eval mode the forward pass is the identity, so its gradient is dout.")
    _, all_dropped = _np_forward(forward, x, 1.0, True, seed=7)
    dx_zero = run_student(backward, dout, all_dropped)
    expect(isinstance(dx_zero, np.ndarray) and not bool(np.isnan(dx_zero).any())
           and bool(np.all(dx_zero == 0)),
           "dropout_backward after dropout_forward(x, p=1, ...) is not all zeros (or has NaN)",
           "with p = 1 no unit passes, so no gradient passes: avoid 0 * inf = NaN.")
    coords = [(0, 0), (3, 7), (11, 2), (19, 29), (8, 15)]
    h = 1e-6
    for i, j in coords:
        plus, minus = x.copy(), x.copy()
        plus[i, j] += h
        minus[i, j] -= h
        f_plus = float(np.sum(_np_forward(forward, plus, p, True, seed=7)[0] * dout))
        f_minus = float(np.sum(_np_forward(forward, minus, p, True, seed=7)[0] * dout))
        numeric = (f_plus - f_minus) / (2 * h)
        expect(math.isclose(numeric, dx[i, j], rel_tol=1e-6, abs_tol=1e-7),
               f"dropout_backward: dx[{i}, {j}] = {dx[i, j]:.6g} but the finite-difference "
               f"gradient is {numeric:.6g}",
               "dx must be the derivative of the forward pass: dout * mask / (1 - p).")
