"""Checks for Exercise 3 (dropout variants): spatial, alpha, DropBlock, locked, DropConnect,
attention dropout, Monte Carlo dropout and DropPath (stochastic depth).

p is the DROP probability throughout. Every check runs on each available device; tensor checks
run in float32 and float64 (and, for the shared contract, every float dtype of
:func:`~dropout_course.checks.devices.float_dtypes`). Structural checks are exact: they read the
mask off the output and fail only for a wrong answer. Random checks state their false-failure
probability (the chance that a correct answer fails by bad luck), at most 1e-6 per check however
many devices and dtypes it covers.

The functions under test (the exercise's contract):

* ``spatial_dropout(x, p=0.5, training=True, generator=None)``, x of shape (N, C, *spatial)
* ``alpha_dropout(x, p=0.5, training=True, generator=None)``
* ``dropblock(x, p, block_size, training=True, generator=None)``, x of shape (N, C, H, W)
* ``locked_dropout(x, p=0.5, training=True, generator=None)``, x of shape (T, N, F)
* ``DropConnectLinear(in_features, out_features, p=0.5, bias=True)``, a ``torch.nn.Module``
* ``attention_with_dropout(q, k, v, p=0.0, training=True, generator=None)``
* ``mc_dropout_predict(model, x, n_samples=50) -> (mean, std)``
* ``drop_path(x, p=0.0, training=True, generator=None)``, x of shape (N, ...)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from . import contract
from .core import expect, expect_raises, expect_raises_many, fail, run_student, short_repr
from .devices import available_devices
from .masks import expect_drop_count, expect_fresh_masks, expect_independent_neighbours
from .modules import (
    DROPOUT_FAMILY_HINT,
    ForwardRecorder,
    changed_modes,
    check_modes_restored_on_error,
    module_modes,
    seeded,
    wrong_modes,
)
from .stats import DEFAULT_FALSE_FAILURE, binomial_count_bounds, hoeffding_half_width
from .tensors import call_tensor_fn, device_dtype_cases, generator_on, positive, ulps

__all__ = [
    "ALPHA_PRIME",
    "check_alpha_contract",
    "check_alpha_statistics",
    "check_alpha_values",
    "check_attention_contract",
    "check_attention_eval",
    "check_attention_gradient",
    "check_attention_statistics",
    "check_attention_structure",
    "check_dropblock_contract",
    "check_dropblock_rate",
    "check_dropblock_structure",
    "check_dropconnect_forward",
    "check_dropconnect_gradient",
    "check_dropconnect_init",
    "check_dropconnect_statistics",
    "check_droppath_contract",
    "check_droppath_statistics",
    "check_droppath_structure",
    "check_locked_contract",
    "check_locked_statistics",
    "check_locked_structure",
    "check_mc_dropout_family",
    "check_mc_modes",
    "check_mc_n_samples",
    "check_mc_restores_on_error",
    "check_mc_statistics",
    "check_spatial_contract",
    "check_spatial_statistics",
    "check_spatial_structure",
]

#: SELU's constants (Klambauer et al., 2017) and the value alpha dropout gives a dropped unit
#: before its affine correction: alpha' = -lambda * alpha.
SELU_LAMBDA = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772
ALPHA_PRIME = -SELU_LAMBDA * SELU_ALPHA

_FLOATS = (torch.float32, torch.float64)
_INVERTED_HINT = ("keep with probability 1 - p (p is the DROP probability) and divide what is "
                  "kept by 1 - p.")


def _name(fn: Any) -> str:
    return getattr(fn, "__name__", "the function")


def _expect_scaled(out: torch.Tensor, wanted: torch.Tensor, kept: torch.Tensor, where: str,
                   hint: str, tol_ulps: float = 4.0, base: torch.Tensor | None = None) -> None:
    """Where ``kept``, ``out`` must equal ``wanted`` to ``tol_ulps`` units in the last place of
    ``base`` (default: of ``wanted``; pass the size of the terms when a sum cancels)."""
    base = wanted.abs() if base is None else base
    tol = ulps(out.dtype, tol_ulps)
    error = (out.double() - wanted).abs()
    bad = kept & ~(error <= tol * base)
    if bool(bad.any()):
        first = bad.nonzero()[0].tolist()
        got, want = out[tuple(first)].item(), wanted[tuple(first)].item()
        relative = error[tuple(first)].item() / max(base[tuple(first)].item(), 1e-300)
        fail(f"{where}: a value is {got!r}, expected {want!r} (relative error "
             f"{relative:.1e}; allowed {tol:.1e}, a few units in the last place of {out.dtype})",
             hint + " Compute in x's dtype: a mask or scale made in float32 loses float64 "
             "precision.")


def _expect_some_of_each(kept: torch.Tensor, where: str, hint: str) -> None:
    expect(bool(kept.any()) and not bool(kept.all()),
           f"{where}: {'nothing' if not kept.any() else 'everything'} was kept", hint)


def _expect_all_or_nothing(out: torch.Tensor, wanted: torch.Tensor, unit_dims: tuple[int, ...],
                           where: str, unit: str, hint: str) -> torch.Tensor:
    """Each unit (the elements sharing the indices outside ``unit_dims``) must be all zero or all
    equal to ``wanted``; returns the dropped-unit indicator (reduced over ``unit_dims``)."""
    zero = out == 0
    all_zero = zero.all(dim=unit_dims)
    none_zero = (~zero).all(dim=unit_dims)
    mixed = ~(all_zero | none_zero)
    if bool(mixed.any()):
        index = tuple(int(i) for i in mixed.nonzero()[0])
        fail(f"{where}: {unit} {index} is partly dropped (some zeros, some not)", hint)
    _expect_scaled(out, wanted, ~zero, where, hint)
    _expect_some_of_each(none_zero, where, hint)
    return all_zero


def _expect_raises_on_shape(fn: Callable[..., Any], shapes: list[tuple[int, ...]],
                            requirement: str, **kwargs: Any) -> None:
    expect_raises_many(fn, [((torch.ones(shape), 0.5), kwargs, ValueError,
                             f"x of shape {shape} is not {requirement}") for shape in shapes])


# --------------------------------------------------------------------------- spatial dropout

_SPATIAL_HINT = ("draw one keep/drop decision per (sample, channel), a mask of shape "
                 "(N, C, 1, ..., 1), and multiply: the whole channel is zero or x / (1 - p).")


def check_spatial_contract(spatial_dropout: Callable[..., Any]) -> None:
    """The shared contract (:mod:`~dropout_course.checks.contract`) on (N, C, H, W) inputs, and a
    ValueError for inputs with fewer than three dimensions. Exact."""
    contract.check_shape_dtype_device(spatial_dropout, 0.9, (4, 3, 5, 2))
    contract.check_eval_and_p0_identity(spatial_dropout, (4, 3, 5))
    contract.check_generator(spatial_dropout, 0.3, (6, 5, 4, 4))
    contract.check_p_one(spatial_dropout, (3, 4, 5, 5))
    contract.check_invalid_p(spatial_dropout, (2, 3, 4))
    _expect_raises_on_shape(spatial_dropout, [(5,), (4, 6)],
                            "(N, C, *spatial) with a spatial dimension")


def check_spatial_structure(spatial_dropout: Callable[..., Any], p: float, seed: int = 1) -> None:
    """In training, for 3-D, 4-D and 5-D inputs on every device and float dtype, each [n, c]
    slice is entirely 0 or entirely x / (1 - p), and both occur. Exact: a correct answer keeps
    all or none of the 120+ slices with probability below 1e-11 at p in [0.2, 0.8]."""
    for device, dtype in device_dtype_cases():
        for shape in ((8, 16, 9), (8, 16, 5, 7), (4, 30, 3, 3, 2)):
            x = positive(shape, device, dtype, seed=2)
            out = contract.apply(spatial_dropout, x, p, True, generator_on(device, seed))
            where = f"spatial_dropout(x of shape {shape}, {dtype} on {device.type}, p={p})"
            dims = tuple(range(2, len(shape)))
            _expect_all_or_nothing(out, x.double() / (1.0 - p), dims, where, "channel",
                                   _SPATIAL_HINT)


def check_spatial_statistics(spatial_dropout: Callable[..., Any], p: float,
                             seed: int = 0) -> None:
    """On (256, 256, 2, 2) inputs (65 536 channels) on every device and float dtype: the number
    of dropped channels is Binomial(65 536, p), and neighbouring channels and neighbouring samples
    are dropped independently (pair agreement Binomial with q = p^2 + (1-p)^2), all with exact
    binomial tails. False-failure probability 1e-6 for the whole check, split over its
    device/dtype cases and its three counts. Catches keeping with probability p, one mask per
    sample shared by its channels, and one mask per channel shared by the batch."""
    cases = device_dtype_cases()
    budget = DEFAULT_FALSE_FAILURE / (3 * len(cases))
    for device, dtype in cases:
        x = positive((256, 256, 2, 2), device, dtype, seed=3)
        gen = generator_on(device, seed)
        out = contract.apply(spatial_dropout, x, p, True, gen)
        where = f"spatial_dropout(x of shape (256, 256, 2, 2), {dtype} on {device.type}, p={p})"
        dropped = (out == 0).all(dim=3).all(dim=2)
        expect_drop_count(dropped, p, budget, where + " (channels)", _SPATIAL_HINT)
        expect_independent_neighbours(dropped, p, 2 * budget, where,
                                      {"samples": 0, "channels": 1}, _SPATIAL_HINT)
        again = contract.apply(spatial_dropout, x, p, True, gen)
        expect_fresh_masks(out == 0, again == 0, where)


# --------------------------------------------------------------------------- alpha dropout


def _affine(affine: Sequence[float]) -> tuple[float, float]:
    """The test cell's (a, b), as two floats."""
    a, b = affine
    return float(a), float(b)


_ALPHA_HINT = ("set dropped units to alpha' = -lambda * alpha = -1.7581 (not 0), then apply "
               "a * x + b to every unit with a = ((1 - p) * (1 + p * alpha'^2)) ** -0.5 and "
               "b = -a * alpha' * p.")


def check_alpha_contract(alpha_dropout: Callable[..., Any]) -> None:
    """The shared contract (:mod:`~dropout_course.checks.contract`): shape, dtype and device kept,
    input untouched, identity in eval mode and at p = 0, zeros at p = 1 (PyTorch's choice), the
    generator as the only randomness, invalid p rejected. Exact."""
    contract.check_shape_dtype_device(alpha_dropout, 0.9, (4, 3, 5))
    contract.check_eval_and_p0_identity(alpha_dropout, (16, 16))
    contract.check_generator(alpha_dropout, 0.3, (32, 32))
    contract.check_p_one(alpha_dropout, (8, 8))
    contract.check_invalid_p(alpha_dropout)


def check_alpha_values(alpha_dropout: Callable[..., Any], p: float, affine: Sequence[float],
                       seed: int = 1) -> None:
    """In training every output is a x + b (kept) or a alpha' + b (dropped), to a few ulps of the
    dtype, and both occur, on every device and float dtype; ``affine`` is the test cell's
    (a, b) for this p (to full float64 precision). Inputs lie in [0.5, 1.5), so kept outputs are
    positive and dropped ones negative. Exact (all or none of 4096 units kept with probability
    below 1e-180 at p in [0.2, 0.8])."""
    a, b = _affine(affine)
    for device, dtype in device_dtype_cases():
        x = positive((64, 64), device, dtype, seed=4)
        out = contract.apply(alpha_dropout, x, p, True, generator_on(device, seed))
        where = f"alpha_dropout(x of {dtype} on {device.type}, p={p})"
        kept = out > 0
        expect(not bool(torch.isnan(out).any()), f"{where} returned NaN", _ALPHA_HINT)
        _expect_scaled(out, a * x.double() + b, kept, where + " (kept units)", _ALPHA_HINT, 8.0)
        dropped_value = torch.full_like(x, a * ALPHA_PRIME + b, dtype=torch.float64)
        terms = torch.full_like(dropped_value, abs(a * ALPHA_PRIME) + abs(b))
        _expect_scaled(out, dropped_value, ~kept, where + " (dropped units)", _ALPHA_HINT, 8.0,
                       base=terms)
        _expect_some_of_each(kept, where, _ALPHA_HINT)


def check_alpha_statistics(alpha_dropout: Callable[..., Any], p: float, affine: Sequence[float],
                           n: int = 200_000, seed: int = 0) -> None:
    """``affine`` is the test cell's (a, b) for this p. (1) The number of dropped units among n
    is Binomial(n, p) (exact tails), every device and float dtype. (2) For a standardised input
    (random signs +-1: mean 0, variance 1) the output's mean stays 0 and its mean square 1
    (float32 and float64): the output takes three values, so Hoeffding's inequality bounds both
    sums for any n. False-failure probability 1e-6 for the whole check, split evenly over its
    counts and sums. At n = 200 000 and p = 0.5 the bounds are about +-0.015 on the mean and
    +-0.017 on the mean square; dropped units set to 0 shift the mean by 0.78, and plain
    inverted dropout doubles the mean square."""
    count_cases = device_dtype_cases()
    moment_cases = device_dtype_cases(_FLOATS)
    budget = DEFAULT_FALSE_FAILURE / (len(count_cases) + 2 * len(moment_cases))
    for device, dtype in count_cases:
        x = positive((n,), device, dtype, seed=5)
        out = contract.apply(alpha_dropout, x, p, True, generator_on(device, seed))
        where = f"alpha_dropout(x of {n} elements, {dtype} on {device.type}, p={p})"
        expect_drop_count(out < 0, p, budget, where, _ALPHA_HINT)
    a, b = _affine(affine)
    values = torch.tensor([a + b, -a + b, a * ALPHA_PRIME + b], dtype=torch.float64)
    for device, dtype in moment_cases:
        signs = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(seed + 7))
        x = (2.0 * signs - 1.0).to(device, dtype)
        out = contract.apply(alpha_dropout, x, p, True, generator_on(device, seed + 1)).double()
        where = f"alpha_dropout(standardised x of {n} elements, {dtype} on {device.type}, p={p})"
        for label, got, spread in (("mean", out.sum(), values),
                                   ("mean square", out.square().sum(), values.square())):
            width = float(spread.max() - spread.min())
            bound = hoeffding_half_width(n * width**2, budget)
            target = 0.0 if label == "mean" else float(n)
            expect(
                abs(float(got) - target) <= bound,
                f"{where} has {label} {float(got) / n:.4f}; a correct answer keeps it within "
                f"{target / n:.0f} +- {bound / n:.4f} (false-failure probability {budget:.2g})",
                _ALPHA_HINT,
            )


# --------------------------------------------------------------------------- DropBlock


_BLOCK_HINT = ("sample block centres with gamma = p / block_size**2 * (H * W) / "
               "((H - block_size + 1) * (W - block_size + 1)) in the region where a whole block "
               "fits, expand each centre to a block_size x block_size square (e.g. with "
               "max_pool2d), and multiply the kept units by numel / (number kept).")


def check_dropblock_contract(dropblock: Callable[..., Any]) -> None:
    """The shared contract (:mod:`~dropout_course.checks.contract`) with block_size = 3, and a
    ValueError for an input that is not 4-D or a block_size that is not an integer in
    [1, min(H, W)]. Exact."""
    extra = {"block_size": 3}
    contract.check_shape_dtype_device(dropblock, 0.9, (2, 3, 8, 6), extra)
    contract.check_eval_and_p0_identity(dropblock, (2, 3, 8, 8), extra)
    contract.check_generator(dropblock, 0.3, (4, 3, 10, 10), extra)
    contract.check_p_one(dropblock, (2, 3, 7, 7), extra)
    contract.check_invalid_p(dropblock, (1, 2, 4, 4), extra)
    _expect_raises_on_shape(dropblock, [(6, 6), (2, 6, 6)], "(N, C, H, W)", block_size=3)
    for bad in (0, -1, 2.5, 9, "3"):
        expect_raises(dropblock, (torch.ones(2, 3, 8, 8), 0.5), ValueError,
                      f"block_size={bad!r} is not an integer in [1, 8]",
                      kwargs={"block_size": bad})


def _whole_blocks(dropped: torch.Tensor, block_size: int) -> torch.Tensor:
    """Which dropped units lie in some block_size x block_size square of dropped units (squares
    may reach past the border, where everything counts as dropped)."""
    pad = block_size - 1
    grid = F.pad(dropped.double(), (pad, pad, pad, pad), value=1.0)
    full = F.avg_pool2d(grid, block_size, stride=1) > 1.0 - 1e-9
    covered = F.max_pool2d(full.double(), block_size, stride=1) > 0.5
    return dropped & covered


def check_dropblock_structure(dropblock: Callable[..., Any], p: float, block_size: int,
                              seed: int = 1) -> None:
    """In training, on every device and float dtype: the zeros form whole block_size x
    block_size squares, every kept unit equals x * numel / (number kept), and both occur. Exact
    (a correct answer drops nothing or everything from 64 maps of 12 x 12 with probability below
    1e-20 for p in [0.2, 0.8])."""
    for device, dtype in device_dtype_cases():
        x = positive((8, 8, 12, 12), device, dtype, seed=6)
        out = contract.apply(dropblock, x, p, True, generator_on(device, seed),
                             extra={"block_size": block_size})
        where = (f"dropblock(x of shape (8, 8, 12, 12), {dtype} on {device.type}, p={p}, "
                 f"block_size={block_size})")
        dropped = out == 0
        stray = dropped & ~_whole_blocks(dropped, block_size)
        if bool(stray.any()):
            index = tuple(int(i) for i in stray.nonzero()[0])
            fail(f"{where}: the zero at {index} is not part of a whole "
                 f"{block_size} x {block_size} block of zeros", _BLOCK_HINT)
        scale = x.numel() / int((~dropped).sum().item()) if bool((~dropped).any()) else 0.0
        _expect_scaled(out, x.double() * scale, ~dropped, where + " (kept values)", _BLOCK_HINT)
        _expect_some_of_each(~dropped, where, _BLOCK_HINT)


def _rate_batch(dtype: torch.dtype, size: int) -> tuple[int, int]:
    """(N, C) for the rate check: 32 x 64 maps, or 8 x 16 (32 768 units) in a dtype that cannot
    hold their element count (float16 stops at 65 504). A correct DropBlock that counts its
    kept units in x's dtype, the natural way, must not fail a check of gamma because 32 x 64 x
    16 x 16 kept units overflow a float16 sum (seen on a GPU, the only place the checks use
    float16)."""
    return (32, 64) if torch.finfo(dtype).max >= 32 * 64 * size * size else (8, 16)


def check_dropblock_rate(dropblock: Callable[..., Any], p: float, block_size: int,
                         gamma_rule: Callable[[float, int, int, int], float],
                         seed: int = 0) -> None:
    """The paper's gamma, measured: ``gamma_rule(p, block_size, height, width)`` is the test
    cell's rate of block centres for a height x width map. On 32 x 64 maps of 16 x 16 (every
    device and float dtype; 8 x 16 maps in float16, whose sums stop at 65 504),
    a unit at least block_size away from the border is dropped exactly when one of the
    block_size^2 centres whose block covers it fires, so with probability
    q = 1 - (1 - gamma)^(block_size^2). Units spaced block_size apart have disjoint sets of such
    centres and are independent, so their dropped count is Binomial(m, q) (exact tails).
    False-failure probability 1e-6 for the whole check, split over its device/dtype cases. For
    block_size = 5 and p = 0.3: q = 0.417 against 0.26 without the (H W)/(...) correction of
    gamma; block_size = 1 is element-wise dropout (q = p)."""
    size = 16
    gamma = min(1.0, float(gamma_rule(p, block_size, size, size)))
    q = 1.0 - (1.0 - gamma) ** (block_size**2)
    inner = torch.arange(block_size, size - block_size, block_size)
    cases = device_dtype_cases()
    budget = DEFAULT_FALSE_FAILURE / len(cases)
    for device, dtype in cases:
        batch = _rate_batch(dtype, size)
        x = positive((*batch, size, size), device, dtype, seed=7)
        out = contract.apply(dropblock, x, p, True, generator_on(device, seed),
                             extra={"block_size": block_size})
        where = (f"dropblock(x of shape ({batch[0]}, {batch[1]}, {size}, {size}), {dtype} on "
                 f"{device.type}, "
                 f"p={p}, block_size={block_size}), at units away from the border,")
        lattice = (out == 0)[:, :, inner.to(device)][:, :, :, inner.to(device)]
        expect_drop_count(lattice, q, budget, where, _BLOCK_HINT)


# --------------------------------------------------------------------------- locked dropout

_LOCKED_HINT = ("draw ONE mask of shape (1, N, F) (x is time-first: (T, N, F)) and multiply "
                "every time step by it: a unit is dropped at all time steps or at none.")


def check_locked_contract(locked_dropout: Callable[..., Any]) -> None:
    """The shared contract (:mod:`~dropout_course.checks.contract`) on (T, N, F) inputs, and a
    ValueError for inputs that are not 3-D. Exact."""
    contract.check_shape_dtype_device(locked_dropout, 0.9, (5, 3, 4))
    contract.check_eval_and_p0_identity(locked_dropout, (6, 4, 8))
    contract.check_generator(locked_dropout, 0.3, (7, 8, 8))
    contract.check_p_one(locked_dropout, (4, 3, 5))
    contract.check_invalid_p(locked_dropout, (2, 3, 4))
    _expect_raises_on_shape(locked_dropout, [(6,), (5, 4), (2, 3, 4, 5)], "(T, N, F)")


def check_locked_structure(locked_dropout: Callable[..., Any], p: float, seed: int = 1) -> None:
    """In training, on every device and float dtype, each unit x[:, n, f] is 0 at every time
    step or x / (1 - p) at every time step, and both occur. Exact (all or none of 768 units kept
    with probability below 1e-70 at p in [0.2, 0.8])."""
    for device, dtype in device_dtype_cases():
        x = positive((12, 32, 24), device, dtype, seed=8)
        out = contract.apply(locked_dropout, x, p, True, generator_on(device, seed))
        where = f"locked_dropout(x of shape (T=12, N=32, F=24), {dtype} on {device.type}, p={p})"
        _expect_all_or_nothing(out, x.double() / (1.0 - p), (0,), where,
                               "(sample, feature)", _LOCKED_HINT)


def check_locked_statistics(locked_dropout: Callable[..., Any], p: float, seed: int = 0) -> None:
    """On (4, 512, 256) inputs on every device and float dtype: the number of dropped (sample,
    feature) units is Binomial(131 072, p), and neighbouring samples and neighbouring features
    are dropped independently (exact binomial tails). False-failure probability 1e-6 for the
    whole check, split over its device/dtype cases and its three counts. Catches keeping with
    probability p and one mask shared by the batch or by the features."""
    cases = device_dtype_cases()
    budget = DEFAULT_FALSE_FAILURE / (3 * len(cases))
    for device, dtype in cases:
        x = positive((4, 512, 256), device, dtype, seed=9)
        gen = generator_on(device, seed)
        out = contract.apply(locked_dropout, x, p, True, gen)
        where = f"locked_dropout(x of shape (4, 512, 256), {dtype} on {device.type}, p={p})"
        dropped = (out == 0).all(dim=0)
        expect_drop_count(dropped, p, budget, where, _LOCKED_HINT)
        expect_independent_neighbours(dropped, p, 2 * budget, where,
                                      {"samples": 0, "features": 1}, _LOCKED_HINT)
        expect_fresh_masks(out == 0, contract.apply(locked_dropout, x, p, True, gen) == 0, where)


# --------------------------------------------------------------------------- DropConnect

_CONNECT_HINT = ("in training draw one Bernoulli keep-mask of the weight's shape per forward "
                 "call (keep with probability 1 - p), use weight * mask / (1 - p) in "
                 "F.linear, and add the bias unchanged; in eval use the plain weight.")


def _dropconnect_layer(cls: type[torch.nn.Module], in_features: int, out_features: int,
                       p: float, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The student's layer on ``device`` in ``dtype``, with positive weights (so a zero in the
    effective weight can only be a dropped connection) and biases of 10 or more."""
    layer = run_student(cls, in_features, out_features, p)
    layer = run_student(layer.to, device=device, dtype=dtype)
    weight, bias = getattr(layer, "weight", None), getattr(layer, "bias", None)
    expect(isinstance(weight, torch.Tensor) and isinstance(bias, torch.Tensor)
           and tuple(weight.shape) == (out_features, in_features)
           and tuple(bias.shape) == (out_features,),
           f"DropConnectLinear({in_features}, {out_features}) has weight "
           f"{short_repr(getattr(weight, 'shape', weight))} and bias "
           f"{short_repr(getattr(bias, 'shape', bias))}",
           "self.weight has shape (out_features, in_features), like torch.nn.Linear's, and "
           "self.bias shape (out_features,).")
    with torch.no_grad():
        layer.weight.copy_(positive((out_features, in_features), device, dtype, seed=10))
        layer.bias.copy_(positive((out_features,), device, dtype, seed=11) + 9.5)
    return layer


def _effective_weight(layer: torch.nn.Module, out: torch.Tensor, in_features: int
                      ) -> torch.Tensor:
    """The weight the layer used, transposed, read off its output for the identity input rows
    (the first ``in_features`` rows of the batch): out[:in] - bias = (W * mask / (1 - p))^T."""
    return out[:in_features] - layer.bias


def check_dropconnect_init(cls: type[torch.nn.Module]) -> None:
    """``DropConnectLinear(in, out, p, bias)``: a Module with parameters ``weight`` (out, in) and
    ``bias`` (out,) (``None`` with bias=False) and nothing else, attribute ``p`` shown in its
    repr, and a ValueError for an invalid p. Exact."""
    layer = run_student(cls, 5, 3, 0.25)
    expect(isinstance(layer, torch.nn.Module), "DropConnectLinear(5, 3, 0.25) is not a Module",
           "subclass torch.nn.Module and call super().__init__() first.")
    weight, bias = getattr(layer, "weight", None), getattr(layer, "bias", None)
    expect(isinstance(weight, torch.nn.Parameter) and tuple(weight.shape) == (3, 5),
           f"DropConnectLinear(5, 3).weight is {short_repr(weight)}",
           "make self.weight a torch.nn.Parameter of shape (out_features, in_features).")
    expect(isinstance(bias, torch.nn.Parameter) and tuple(bias.shape) == (3,),
           f"DropConnectLinear(5, 3).bias is {short_repr(bias)}",
           "make self.bias a torch.nn.Parameter of shape (out_features,).")
    names = sorted(name for name, _ in layer.named_parameters())
    expect(names == ["bias", "weight"], f"DropConnectLinear's parameters are {names}",
           "register exactly two parameters, weight and bias (the mask is not a parameter).")
    expect(bool(weight.detach().abs().sum() > 0), "the weight is initialised to zeros",
           "initialise like torch.nn.Linear, e.g. torch.nn.init.kaiming_uniform_.")
    no_bias = run_student(cls, 5, 3, 0.25, bias=False)
    expect(getattr(no_bias, "bias", "missing") is None,
           "DropConnectLinear(5, 3, bias=False).bias is not None",
           "with bias=False set self.bias = None (register_parameter('bias', None)).")
    expect(getattr(layer, "p", None) == 0.25, f"DropConnectLinear(5, 3, 0.25).p is "
           f"{getattr(layer, 'p', None)!r}", "store the drop probability as self.p.")
    text = run_student(repr, layer)
    expect("0.25" in text, f"repr(DropConnectLinear(5, 3, 0.25)) is {text!r}: it does not show p",
           "define extra_repr returning e.g. 'in_features=5, out_features=3, p=0.25'.")
    for bad in contract.INVALID_P:
        expect_raises(cls, (5, 3, bad), ValueError, f"p={bad!r} is not a probability")


def check_dropconnect_forward(cls: type[torch.nn.Module], p: float, seed: int = 1) -> None:
    """On every device, float32 and float64, after ``.to(device, dtype)``: in training each
    forward call uses one mask for the whole batch, so that out = x (W * M / (1 - p))^T + b with
    every effective weight 0 or W / (1 - p) (some of each) and the bias untouched; two calls use
    different masks; in eval the layer is F.linear(x, W, b). The effective weight is read off the
    outputs for identity input rows; the other rows must match it. Exact (tolerances: a few
    ulps, 1e-5 relative for the matrix products)."""
    in_f, out_f = 48, 40
    for device, dtype in device_dtype_cases(_FLOATS):
        layer = _dropconnect_layer(cls, in_f, out_f, p, device, dtype)
        rows = positive((16, in_f), device, dtype, seed=12)
        x = torch.cat([torch.eye(in_f, device=device, dtype=dtype), rows])
        where = f"DropConnectLinear({in_f}, {out_f}, p={p}) on {dtype} on {device.type}"
        run_student(layer.train)
        with seeded(seed), torch.no_grad():
            out = call_tensor_fn(layer, x)
            second = call_tensor_fn(layer, x)
        expect(out.shape == (len(x), out_f) and out.dtype == dtype and out.device == x.device,
               f"{where} gave an output of shape {tuple(out.shape)}, {out.dtype} on "
               f"{out.device}", "return F.linear(x, masked_weight, bias) in x's dtype and device.")
        with torch.no_grad():
            used = _effective_weight(layer, out, in_f)
            kept = used.abs() > 0.25 * layer.weight.T.abs()
            _expect_scaled(used, layer.weight.T.double() / (1.0 - p), kept,
                           where + " (effective weights)", _CONNECT_HINT, tol_ulps=64.0)
            expect(bool((used[~kept].abs() <= 1e-3 * layer.weight.T.abs()[~kept]).all()),
                   f"{where}: an effective weight is neither 0 nor W / (1 - p) (is the bias "
                   "dropped, or are inputs dropped instead of weights?)", _CONNECT_HINT)
            _expect_some_of_each(kept, where, _CONNECT_HINT)
            expect(torch.allclose(out[in_f:], rows @ used + layer.bias, rtol=1e-5, atol=1e-4),
                   f"{where}: the batch's rows were not all computed with the same masked "
                   "weight", "draw one mask per forward call (over the weight), not one per "
                   "example and not over the inputs.")
            expect_fresh_masks(out, second, where)
            run_student(layer.eval)
            plain = call_tensor_fn(layer, x)
            wanted = F.linear(x, layer.weight, layer.bias)
            expect(torch.allclose(plain, wanted, rtol=ulps(dtype, 64.0), atol=0.0),
                   f"{where} in eval mode is not F.linear(x, weight, bias)",
                   "in eval mode use the full weight, unmasked and unscaled.")


def check_dropconnect_statistics(cls: type[torch.nn.Module], p: float, seed: int = 0) -> None:
    """A (512 -> 256) layer, every device, float32 and float64: the number of dropped weights
    among 131 072 is Binomial(131 072, p), and neighbouring weights in a row and in a column are
    dropped independently (exact binomial tails). False-failure probability 1e-6 for the whole
    check, split over its device/dtype cases and its three counts. Catches keeping with
    probability p and dropping whole inputs (columns) or outputs (rows)."""
    cases = device_dtype_cases(_FLOATS)
    budget = DEFAULT_FALSE_FAILURE / (3 * len(cases))
    for device, dtype in cases:
        layer = _dropconnect_layer(cls, 512, 256, p, device, dtype)
        run_student(layer.train)
        with seeded(seed), torch.no_grad():
            out = call_tensor_fn(layer, torch.eye(512, device=device, dtype=dtype))
            dropped = _effective_weight(layer, out, 512).abs() < 0.5 * layer.weight.T.abs()
        where = f"DropConnectLinear(512, 256, p={p}) on {dtype} on {device.type}"
        expect_drop_count(dropped, p, budget, where + " (weights)", _CONNECT_HINT)
        expect_independent_neighbours(dropped, p, 2 * budget, where,
                                      {"inputs": 0, "outputs": 1}, _CONNECT_HINT)


def check_dropconnect_gradient(cls: type[torch.nn.Module], p: float, seed: int = 2) -> None:
    """In training, on every device in float64 and float32: weight.grad = (upstream^T x) * M /
    (1 - p) with the mask M of that forward call (dropped weights get exactly no gradient), and
    bias.grad = upstream summed over the batch. Exact to 1e-5 relative."""
    in_f, out_f = 24, 16
    for device, dtype in device_dtype_cases((torch.float64, torch.float32)):
        layer = _dropconnect_layer(cls, in_f, out_f, p, device, dtype)
        run_student(layer.train)
        x = torch.eye(in_f, device=device, dtype=dtype)
        upstream = positive((in_f, out_f), device, dtype, seed=13)
        with seeded(seed):
            out = call_tensor_fn(layer, x)
        where = f"DropConnectLinear({in_f}, {out_f}, p={p}) on {dtype} on {device.type}"
        expect(out.requires_grad, f"{where}: the output does not require grad",
               "use differentiable torch operations on self.weight (no .detach(), no .data).")
        out.backward(upstream)
        kept = (_effective_weight(layer, out.detach(), in_f).abs() > 0.5 * layer.weight.T.abs()).T
        wanted = (upstream.T @ x) * kept.to(dtype) / (1.0 - p)
        grad = layer.weight.grad
        expect(grad is not None and torch.allclose(grad, wanted, rtol=1e-5, atol=0.0),
               f"{where}: weight.grad is not (upstream^T x) * mask / (1 - p)",
               "let autograd differentiate F.linear(x, self.weight * mask / (1 - p), self.bias) "
               "with the mask of that same call.")
        expect(layer.bias.grad is not None
               and torch.allclose(layer.bias.grad, upstream.sum(0), rtol=1e-5, atol=0.0),
               f"{where}: bias.grad is not the upstream gradient summed over the batch",
               "add the bias unmasked.")


# --------------------------------------------------------------------------- attention

_ATTENTION_HINT = ("compute weights = softmax(q @ k.transpose(-2, -1) / sqrt(d), dim=-1), then "
                   "apply inverted dropout to the weights (zero each with probability p, divide "
                   "the rest by 1 - p), then multiply by v.")


def _qkv(shape_q: tuple[int, ...], s: int, dv: int, device: torch.device, dtype: torch.dtype,
         seed: int, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    *lead, _length, d = shape_q
    q = torch.randn(shape_q, generator=gen, dtype=torch.float64) * scale
    k = torch.randn((*lead, s, d), generator=gen, dtype=torch.float64) * scale
    v = torch.randn((*lead, s, dv), generator=gen, dtype=torch.float64)
    return q.to(device, dtype), k.to(device, dtype), v.to(device, dtype)


def _attend(fn: Callable[..., Any], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: Any,
            training: bool, generator: torch.Generator | None) -> torch.Tensor:
    return call_tensor_fn(fn, q, k, v, p, training=training, generator=generator)


def _tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {torch.float64: {"rtol": 1e-10, "atol": 1e-12},
            torch.float32: {"rtol": 1e-5, "atol": 1e-6}}.get(dtype, {"rtol": 4e-2, "atol": 4e-2})


def _self_attention(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as a dropout-like function of one tensor (q = k = v = x), for the shared contract."""
    def attend(x: torch.Tensor, p: Any, training: bool = True,
               generator: torch.Generator | None = None) -> Any:
        return fn(x, x, x, p, training=training, generator=generator)
    attend.__name__ = f"{_name(fn)} with q = k = v = x, called as"
    return attend


def check_attention_contract(attention_with_dropout: Callable[..., Any]) -> None:
    """The shared contract (:mod:`~dropout_course.checks.contract`) with q = k = v = x: shape, dtype
    and device kept, inputs untouched, the generator as the only randomness, zeros (and a zero
    gradient) at p = 1, invalid p rejected. Exact."""
    attend = _self_attention(attention_with_dropout)
    contract.check_shape_dtype_device(attend, 0.9, (2, 6, 4))
    contract.check_generator(attend, 0.3, (3, 8, 8))
    contract.check_p_one(attend, (2, 5, 4))
    contract.check_invalid_p(attend, (2, 3, 4))


def check_attention_eval(attention_with_dropout: Callable[..., Any]) -> None:
    """With training=False (any p) or p = 0 the output equals
    ``F.scaled_dot_product_attention(q, k, v)`` (tolerance 1e-5 in float32, 1e-10 in float64,
    4e-2 in 16-bit types), for unbatched, batched and multi-head inputs with L != S and
    d != d_v, on every device and float dtype; q, k and v are not modified. Exact."""
    shapes = (((5, 4), 7, 3), ((2, 7, 4), 6, 5), ((2, 3, 5, 8), 9, 8))
    for (device, dtype), (shape_q, s, dv) in ((c, sh) for c in device_dtype_cases()
                                             for sh in shapes):
        q, k, v = _qkv(shape_q, s, dv, device, dtype, seed=14)
        copies = [t.clone() for t in (q, k, v)]
        wanted = F.scaled_dot_product_attention(q.double(), k.double(), v.double()).to(dtype)
        for p, training in ((0.5, False), (0.0, True)):
            out = _attend(attention_with_dropout, q, k, v, p, training, generator_on(device, 0))
            where = (f"attention_with_dropout(q {tuple(q.shape)}, k {tuple(k.shape)}, v "
                     f"{tuple(v.shape)}, {dtype} on {device.type}, p={p}, training={training})")
            expect(out.shape == wanted.shape and out.dtype == dtype and out.device == q.device,
                   f"{where} gave shape {tuple(out.shape)}, {out.dtype} on {out.device}",
                   "the output has shape (..., L, d_v) in q's dtype and device; transpose k "
                   "with k.transpose(-2, -1) so leading batch and head dims are kept.")
            expect(torch.allclose(out, wanted, **_tolerance(dtype)),
                   f"{where} differs from F.scaled_dot_product_attention by up to "
                   f"{(out.double() - wanted.double()).abs().max().item():.3g}",
                   "scale the scores by 1 / sqrt(d) with d = q.shape[-1], take the softmax "
                   "over the last dimension (the keys), and apply no dropout in eval mode.")
        expect(all(torch.equal(t, c) for t, c in zip((q, k, v), copies, strict=True)),
               f"attention_with_dropout modified q, k or v ({dtype} on {device.type})",
               "never write into the inputs; build new tensors.")


def _revealed(attention_with_dropout: Callable[..., Any], p: float, device: torch.device,
              dtype: torch.dtype, shape_q: tuple[int, ...], s: int, extra: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                   torch.Tensor]:
    """Call with v = [identity | random columns]: the first s output columns ARE the dropped
    attention weights. Returns (dropped weights used, softmax weights (float64), the random
    columns of v, the output's remaining columns)."""
    q, k, _ = _qkv(shape_q, s, 1, device, dtype, seed=15, scale=1.5)
    lead = shape_q[:-2]
    rand_v = _qkv(shape_q, s, extra, device, dtype, seed=16)[2]
    eye = torch.eye(s, device=device, dtype=dtype).expand(*lead, s, s)
    v = torch.cat([eye, rand_v], dim=-1)
    out = _attend(attention_with_dropout, q, k, v, p, True, generator)
    expect(out.shape == (*shape_q[:-1], s + extra),
           f"attention_with_dropout gave shape {tuple(out.shape)} for q {tuple(q.shape)}, v "
           f"{tuple(v.shape)}", "the output has shape (..., L, d_v).")
    scores = q.double() @ k.double().transpose(-2, -1) / math.sqrt(shape_q[-1])
    weights = torch.softmax(scores, dim=-1)
    return out[..., :s], weights, rand_v, out[..., s:]


def check_attention_structure(attention_with_dropout: Callable[..., Any], p: float,
                              seed: int = 1) -> None:
    """In training (every device, float32 and float64), with v = [identity | random]: every
    attention weight used is 0 or softmax(q k^T / sqrt(d)) / (1 - p) (some of each), and the rest
    of the output is those same dropped weights times v. So dropout acts on the weights after the
    softmax, not on the scores and not on the output. Exact (relative tolerance 5e-5 in float32,
    1e-10 in float64)."""
    for device, dtype in device_dtype_cases(_FLOATS):
        used, weights, rand_v, rest = _revealed(attention_with_dropout, p, device, dtype,
                                                (2, 3, 16, 8), 16, 5, generator_on(device, seed))
        where = f"attention_with_dropout on {dtype} on {device.type}, p={p}"
        kept = used != 0
        tol = 1e-10 if dtype == torch.float64 else 5e-5
        wanted = weights / (1.0 - p)
        ok = ~kept | ((used.double() - wanted).abs() <= tol * wanted)
        if not bool(ok.all()):
            index = tuple(int(i) for i in (~ok).nonzero()[0])
            fail(f"{where}: the attention weight at {index} is {used[index].item():.6g}; "
                 f"softmax gives {weights[index].item():.6g}, so a kept weight must be "
                 f"{wanted[index].item():.6g}", _ATTENTION_HINT)
        _expect_some_of_each(kept, where, _ATTENTION_HINT)
        expect(torch.allclose(rest, used @ rand_v, **_tolerance(dtype)),
               f"{where}: the output is not (dropped attention weights) @ v",
               "apply dropout to the attention weights only, then multiply by v; do not drop "
               "elements of the output.")


def check_attention_statistics(attention_with_dropout: Callable[..., Any], p: float,
                               seed: int = 0) -> None:
    """With 4 x 4 heads of 64 x 64 attention weights (65 536), every device, float32 and float64:
    the number of dropped weights is Binomial(65 536, p), and neighbouring weights along queries
    and along keys are dropped independently (exact binomial tails). False-failure probability
    1e-6 for the whole check, split over its device/dtype cases and its three counts. Catches
    keeping with probability p and dropping whole queries or whole keys."""
    cases = device_dtype_cases(_FLOATS)
    budget = DEFAULT_FALSE_FAILURE / (3 * len(cases))
    for device, dtype in cases:
        used, *_ = _revealed(attention_with_dropout, p, device, dtype, (4, 4, 64, 16), 64, 1,
                             generator_on(device, seed))
        where = f"attention_with_dropout (4 x 4 heads of 64 x 64 weights, {dtype} on " \
                f"{device.type}, p={p})"
        dropped = (used == 0).reshape(-1, 64, 64)
        expect_drop_count(dropped, p, budget, where, _ATTENTION_HINT)
        expect_independent_neighbours(dropped, p, 2 * budget, where,
                                      {"queries": 1, "keys": 2}, _ATTENTION_HINT)


def check_attention_gradient(attention_with_dropout: Callable[..., Any]) -> None:
    """Gradients flow to q, k and v: in eval mode they equal those of
    F.scaled_dot_product_attention (float64 and float32, every device; tolerance 1e-8 and 1e-4
    relative); in training the output is part of the autograd graph. Exact."""
    for device, dtype in device_dtype_cases((torch.float64, torch.float32)):
        q, k, v = (t.requires_grad_(True) for t in _qkv((2, 6, 4), 5, 3, device, dtype, 17))
        upstream = positive((2, 6, 3), device, dtype, seed=18)
        out = _attend(attention_with_dropout, q, k, v, 0.3, False, None)
        where = f"attention_with_dropout on {dtype} on {device.type}"
        expect(out.requires_grad, f"{where}: the output does not require grad",
               "use differentiable torch operations (no .detach(), no NumPy).")
        grads = torch.autograd.grad(out, (q, k, v), upstream)
        ref = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v), (q, k, v), upstream)
        rtol = 1e-8 if dtype == torch.float64 else 1e-4
        for name, got, wanted in zip("qkv", grads, ref, strict=True):
            expect(torch.allclose(got, wanted, rtol=rtol, atol=rtol * 0.1),
                   f"{where} in eval mode: the gradient with respect to {name} differs from "
                   "scaled_dot_product_attention's", _ATTENTION_HINT)
        trained = _attend(attention_with_dropout, q, k, v, 0.3, True, generator_on(device, 1))
        expect(trained.requires_grad, f"{where} in training: the output does not require grad",
               "use differentiable torch operations (no .detach(), no NumPy).")


# --------------------------------------------------------------------------- Monte Carlo

_MC_HINT = ("do not use model.train(): it also puts BatchNorm in training mode. Put the model "
            "in eval mode, switch on (train()) only the dropout modules (the torch.nn dropout "
            "family and the course's GaussianDropout), sample under torch.no_grad(), "
            "and restore every module's original training flag in a `finally:` block.")


def _predict(fn: Callable[..., Any], model: torch.nn.Module, x: torch.Tensor, n_samples: int,
             where: str) -> tuple[torch.Tensor, torch.Tensor]:
    result = run_student(fn, model, x, n_samples=n_samples)
    if not (isinstance(result, tuple) and len(result) == 2
            and all(isinstance(t, torch.Tensor) for t in result)):
        # the message is built only on failure: the repr of the tensors costs more than the call
        fail(f"{where} returned {short_repr(result)}; expected a tuple (mean, std) of tensors",
             "end with `return mean, std`.")
    return result


#: The dropout modules of :func:`_bn_model`, by name: the only ones that may be in training mode
#: while Monte Carlo sampling runs.
_BN_MODEL_DROPOUT = frozenset({"3"})


def _bn_model(device: torch.device, dtype: torch.dtype) -> torch.nn.Sequential:
    nn = torch.nn
    with seeded(19):
        model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5),
                              nn.Linear(16, 3))
    with torch.no_grad():
        model[1].running_mean.uniform_(-1.0, 1.0)
        model[1].running_var.uniform_(0.5, 2.0)
    return model.to(device, dtype)


def check_mc_statistics(mc_dropout_predict: Callable[..., Any], p: float,
                        n_samples: int = 37, seed: int = 0) -> None:
    """A model that is only ``nn.Dropout(p)``, on inputs equal to 1 - p, outputs 0 or 1: each
    prediction is a coin with P(1) = 1 - p. On every device, float32 and float64: ``mean`` and
    ``std`` have the output's shape, dtype and device and no autograd graph; n_samples * mean is
    a whole number (it counts the ones); std is the standard deviation of those n_samples
    values (divisor n or n - 1: both accepted; exact to 1e-4); and the total count of ones is
    Binomial(n_samples * 2000, 1 - p) (exact tails). False-failure probability 1e-6 for the whole
    check, split over its device/dtype cases (every std is 0 for a correct answer with probability
    below 1e-20000)."""
    cases = device_dtype_cases(_FLOATS)
    budget = DEFAULT_FALSE_FAILURE / len(cases)
    for device, dtype in cases:
        model = torch.nn.Sequential(torch.nn.Dropout(p)).to(device).eval()
        x = torch.full((8, 250), 1.0 - p, device=device, dtype=dtype)
        where = f"mc_dropout_predict(Dropout({p}), x of {dtype} on {device.type}, " \
                f"n_samples={n_samples})"
        with seeded(seed):
            mean, std = _predict(mc_dropout_predict, model, x, n_samples, where)
        for name, t in (("mean", mean), ("std", std)):
            expect(t.shape == x.shape and t.dtype == dtype and t.device == x.device,
                   f"{where}: {name} has shape {tuple(t.shape)}, {t.dtype} on {t.device}",
                   "average over the samples only (dim 0 of the stacked predictions), keeping "
                   "the output's shape, dtype and device.")
            expect(not t.requires_grad, f"{where}: {name} is part of an autograd graph",
                   "sample under torch.no_grad().")
        expect(bool((std > 0).any()), f"{where}: every std is 0, so dropout was not on",
               _MC_HINT)
        ones = mean.double() * n_samples
        expect(bool(((ones - ones.round()).abs() <= 1e-4).all()),
               f"{where}: n_samples * mean is not a whole number (e.g. "
               f"{ones.flatten()[0].item():.4f}), so mean is not an average of n_samples "
               "predictions", "draw exactly n_samples predictions and average them.")
        m = ones.round() / n_samples
        population = (m * (1.0 - m)).sqrt()
        sample = population * math.sqrt(n_samples / (n_samples - 1))
        matches = [bool(((std.double() - s).abs() <= 1e-4).all()) for s in (population, sample)]
        expect(any(matches),
               f"{where}: std is not the standard deviation of the samples (e.g. std "
               f"{std.flatten()[0].item():.4f} where mean is {m.flatten()[0].item():.4f})",
               "return the standard deviation over the samples, e.g. "
               "torch.stack(samples).std(dim=0) (not the variance, not over another dim).")
        lo, hi = binomial_count_bounds(n_samples * x.numel(), 1.0 - p, budget)
        total = int(ones.round().sum().item())
        expect(lo <= total <= hi,
               f"{where}: {total} of {n_samples * x.numel()} sampled units were kept; with "
               f"dropout on, a correct answer keeps {lo}..{hi} (false-failure probability "
               f"{budget:.2g})", _MC_HINT)


def check_mc_modes(mc_dropout_predict: Callable[..., Any]) -> None:
    """A model with BatchNorm and dropout, started in train mode, eval mode and a mixed state,
    on every device in float32 and float64: during sampling only dropout modules are in training
    mode and no autograd graph is built; afterwards every module has its original mode and
    BatchNorm's running statistics are unchanged. Exact (dropout varies the predictions: all
    identical with probability below 1e-200)."""
    for device, dtype in device_dtype_cases(_FLOATS):
        model = _bn_model(device, dtype)
        x = positive((10, 6), device, dtype, seed=20)
        for start in ("train", "eval", "mixed"):
            model.train(start != "eval")
            if start == "mixed":
                model[1].eval()
                model[3].eval()
            before = module_modes(model)
            stats = [t.clone() for t in model[1].buffers()]
            recorder = ForwardRecorder(model)
            where = f"mc_dropout_predict on a model with BatchNorm ({dtype} on {device.type}, " \
                    f"model in {start} mode)"
            try:
                _mean, std = _predict(mc_dropout_predict, model, x, 20, where)
            finally:
                recorder.remove()
            wrong = {name for name, training, _, _ in recorder.calls
                     if training != (name in _BN_MODEL_DROPOUT)}
            expect(recorder.calls != [] and not wrong,
                   f"{where}: during sampling {wrong_modes(wrong, _BN_MODEL_DROPOUT)}",
                   _MC_HINT)
            expect(not any(grad for _, _, grad, _ in recorder.calls),
                   f"{where}: the model ran with autograd on", "sample under torch.no_grad().")
            expect(all(torch.equal(a, b) for a, b in zip(stats, model[1].buffers(), strict=True)),
                   f"{where} changed BatchNorm's running statistics",
                   "do not call model.train(): it puts BatchNorm in training mode, which "
                   "updates its running statistics. " + _MC_HINT)
            after = module_modes(model)
            changed = changed_modes(before, after)
            expect(not changed, f"{where}: afterwards {changed} had a different mode than before",
                   _MC_HINT)
            expect(bool((std > 0).any()), f"{where}: every std is 0, so dropout was not on",
                   _MC_HINT)


def check_mc_restores_on_error(mc_dropout_predict: Callable[..., Any]) -> None:
    """When the model raises during sampling, the error reaches the caller and every module's
    mode is restored (train-mode and eval-mode starts, every device). Exact."""
    check_modes_restored_on_error(
        mc_dropout_predict,
        lambda fn, model, device: fn(model, torch.ones(3, 4, device=device), n_samples=5),
        failing_call=1, what="mc_dropout_predict")


def check_mc_dropout_family(mc_dropout_predict: Callable[..., Any],
                            layer_classes: Sequence[type[torch.nn.Module]]) -> None:
    """Every member of the dropout family is switched on: each of ``layer_classes`` (the test
    cell's list: torch.nn's Dropout, Dropout1d/2d/3d, AlphaDropout, FeatureAlphaDropout and the
    course's ``GaussianDropout``), built with p = 0.5 alone in an eval-mode model on every device;
    predictions vary (some std > 0) and the modes are restored. Exact (a correct answer gives
    all-zero std with probability below 1e-200; for GaussianDropout, whose noise is continuous,
    with probability 0)."""
    shapes = {"Dropout1d": (4, 6, 5), "Dropout2d": (4, 6, 5, 5), "Dropout3d": (4, 6, 3, 3, 3),
              "FeatureAlphaDropout": (4, 6, 5, 5)}
    for device in available_devices():
        for layer_class in layer_classes:
            name = layer_class.__name__
            if layer_class.__module__.startswith("dropout_course"):
                name = f"the course's {name}"
            model = torch.nn.Sequential(torch.nn.Identity(), layer_class(0.5)).to(device).eval()
            x = positive(shapes.get(layer_class.__name__, (4, 12)), device, torch.float32, 21)
            where = f"mc_dropout_predict on a model with {name} ({device.type})"
            _mean, std = _predict(mc_dropout_predict, model, x, 40, where)
            expect(bool((std > 0).any()), f"{where}: every std is 0: {name} was not switched on",
                   "recognise every dropout module: " + DROPOUT_FAMILY_HINT + ".")
            expect(not any(m.training for m in model.modules()),
                   f"{where}: the model was left in training mode", _MC_HINT)


def check_mc_n_samples(mc_dropout_predict: Callable[..., Any]) -> None:
    """n_samples that is not an integer >= 2 (a standard deviation needs two samples) raises
    ValueError. Exact."""
    model = torch.nn.Sequential(torch.nn.Dropout(0.5)).eval()
    for bad in (0, 1, 2.5, "5", True):
        expect_raises(mc_dropout_predict, (model, torch.ones(2, 3)), ValueError,
                      f"n_samples={bad!r} is not an integer >= 2",
                      kwargs={"n_samples": bad})


# --------------------------------------------------------------------------- DropPath

_DROPPATH_HINT = ("draw ONE keep/drop decision per sample, a mask of shape (N, 1, ..., 1) "
                  "(keep with probability 1 - p; p is the DROP probability), and multiply: "
                  "each sample x[n] is all zero or x[n] / (1 - p).")

#: Shapes of the structure check: 200 samples each, so that a correct answer keeps all or none
#: of them with probability below 1e-19 at p in [0.2, 0.8].
_DROPPATH_SHAPES = ((200,), (200, 6), (200, 3, 4))


def _per_sample(t: torch.Tensor) -> torch.Tensor:
    """``t`` seen as (N, elements per sample), for any shape (N, ...)."""
    return t.reshape(t.shape[0], -1)


def check_droppath_structure(drop_path: Callable[..., Any], p: float, seed: int = 1) -> None:
    """In training, for inputs of shape (200,), (200, 6) and (200, 3, 4) on every device and
    float dtype: each sample x[n] (a slice along dim 0) is entirely 0 or entirely x[n] / (1 - p),
    and both occur. Exact: a correct answer keeps all or none of the 200 samples with
    probability below 1e-19 at p in [0.2, 0.8]. Catches a mask per element, a mask over another
    dimension, one decision for the whole batch, and a wrong scale (none, or 1 - p)."""
    for device, dtype in device_dtype_cases():
        for shape in _DROPPATH_SHAPES:
            x = positive(shape, device, dtype, seed=14)
            wanted = x.double() / (1.0 - p)
            out = contract.apply(drop_path, x, p, True, generator_on(device, seed))
            where = f"drop_path(x of shape {shape}, {dtype} on {device.type}, p={p})"
            expect(out.shape == x.shape, f"{where} gave shape {tuple(out.shape)}",
                   "return a tensor of x's shape: multiply x by a mask of shape "
                   "(N, 1, ..., 1), which broadcasts over each sample.")
            _expect_all_or_nothing(_per_sample(out), _per_sample(wanted), (1,), where, "sample",
                                   _DROPPATH_HINT)


def check_droppath_statistics(drop_path: Callable[..., Any], p: float, seed: int = 0) -> None:
    """On (65 536, 3) inputs (65 536 samples) on every device and float dtype: the number of
    dropped samples is Binomial(65 536, p), and neighbouring samples are dropped independently
    (pair agreement Binomial with q = p^2 + (1-p)^2), both with exact binomial tails; two calls
    in a row drop different samples. False-failure probability 1e-6 for the whole check, split
    over its device/dtype cases and its two counts (two calls drop exactly the same samples with
    probability below 1e-10000). Catches keeping with probability p (at p != 0.5: hundreds of
    standard deviations at p = 0.2 or 0.6) and decisions shared by neighbouring samples."""
    cases = device_dtype_cases()
    budget = DEFAULT_FALSE_FAILURE / (2 * len(cases))
    for device, dtype in cases:
        x = positive((65_536, 3), device, dtype, seed=15)
        gen = generator_on(device, seed)
        out = contract.apply(drop_path, x, p, True, gen)
        where = f"drop_path(x of shape (65536, 3), {dtype} on {device.type}, p={p})"
        dropped = (out == 0).all(dim=1)
        expect_drop_count(dropped, p, budget, where + " (samples)", _DROPPATH_HINT)
        expect_independent_neighbours(dropped, p, budget, where, {"samples": 0},
                                      _DROPPATH_HINT)
        again = contract.apply(drop_path, x, p, True, gen)
        expect_fresh_masks(out == 0, again == 0, where)


def _check_droppath_gradient(drop_path: Callable[..., Any], p: float = 0.4) -> None:
    """In training, on every device in float64 and float32: the output is part of the autograd
    graph, and the gradient with respect to x is the upstream gradient times 1 / (1 - p) on the
    samples the forward call kept and exactly 0 on the samples it dropped (read off the output;
    to a few ulps). Exact."""
    for device, dtype in device_dtype_cases((torch.float64, torch.float32)):
        x = positive((64, 3, 2), device, dtype, seed=16).requires_grad_(True)
        upstream = positive((64, 3, 2), device, dtype, seed=17)
        out = contract.apply(drop_path, x, p, True, generator_on(device, 5))
        where = f"drop_path(x of shape (64, 3, 2), {dtype} on {device.type}, p={p})"
        expect(out.requires_grad, f"{where}: the output does not require grad",
               "use differentiable torch operations on x (no .detach(), no .data, no "
               "torch.no_grad(), no NumPy): in a residual block the branch must still learn.")
        (grad,) = torch.autograd.grad(out, x, upstream, allow_unused=True)
        grad = torch.zeros_like(x) if grad is None else grad  # an output that ignores x
        kept = (out != 0).detach()
        _expect_scaled(grad, upstream.double() / (1.0 - p), kept, where + " (gradient of kept "
                       "samples)", "the gradient of a kept sample is the upstream gradient / "
                       "(1 - p): multiply x by the scaled mask.", tol_ulps=8.0)
        expect(bool((grad[~kept] == 0).all()),
               f"{where}: a dropped sample got a non-zero gradient",
               "a dropped sample's branch contributes nothing, so it gets no gradient.")


def check_droppath_contract(drop_path: Callable[..., Any]) -> None:
    """The shared contract (:mod:`~dropout_course.checks.contract`) on inputs of shape (N, ...)
    (one sample, 1-D and 4-D inputs included), a ValueError for a 0-d input (it has no sample
    dimension), and gradients: upstream / (1 - p) for kept samples, 0 for dropped ones. Exact."""
    contract.check_shape_dtype_device(drop_path, 0.9, (4, 3, 5, 2))
    contract.check_shape_dtype_device(drop_path, 0.5, (7,))
    contract.check_shape_dtype_device(drop_path, 0.5, (1, 6))
    contract.check_eval_and_p0_identity(drop_path, (4, 3, 5))
    contract.check_generator(drop_path, 0.3, (64, 3, 4))
    contract.check_p_one(drop_path, (3, 4, 5))
    contract.check_invalid_p(drop_path, (2, 3, 4))
    _expect_raises_on_shape(drop_path, [()], "(N, ...): a 0-d tensor has no sample dimension")
    _check_droppath_gradient(drop_path)
