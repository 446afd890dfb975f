"""The contract every dropout-like function of the course keeps, checked once for all of them.

A dropout-like function is called as ``fn(x, p, training=..., generator=..., **extra)`` (e.g.
``extra={"block_size": 3}`` for DropBlock). Its contract: ``p`` is the DROP probability and is
validated (ValueError naming p, also in eval mode); the output keeps x's shape, dtype and device;
x is never modified; ``training=False`` and ``p = 0`` give x's values back; ``p = 1`` gives zeros
without NaN (and a zero gradient); a ``generator`` is the only source of randomness. All checks
here are exact (false-failure probability 0) and run on every available device.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .core import RaisesCase, describe_call, expect, expect_raises_many, fail, short_repr
from .tensors import call_tensor_fn, device_dtype_cases, generator_on, positive

__all__ = [
    "INVALID_P",
    "check_eval_and_p0_identity",
    "check_generator",
    "check_invalid_p",
    "check_p_one",
    "check_shape_dtype_device",
]

#: Values of p that must raise ValueError: outside [0, 1], NaN, infinite, not a real number.
INVALID_P: tuple[Any, ...] = (-0.1, 1.5, float("nan"), float("inf"), "0.5", None)

Extra = Mapping[str, Any] | None


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", "the function")


def _where(fn: Callable[..., Any], x: torch.Tensor, p: Any, training: bool, extra: Extra) -> str:
    more = "".join(f", {k}={v!r}" for k, v in (extra or {}).items())
    return (f"{_name(fn)}(x of shape {tuple(x.shape)}, {x.dtype} on {x.device.type}, p={p}"
            f"{more}, training={training})")


def apply(fn: Callable[..., Any], x: torch.Tensor, p: Any, training: bool = True,
          generator: torch.Generator | None = None, *, extra: Extra = None) -> torch.Tensor:
    """``fn(x, p, training=training, generator=generator, **extra)``; must return a tensor."""
    return call_tensor_fn(fn, x, p, training=training, generator=generator, **(extra or {}))


def check_shape_dtype_device(fn: Callable[..., Any], p: float, shape: tuple[int, ...],
                             extra: Extra = None) -> None:
    """Output has the input's shape, dtype and device, for every device and float dtype, in
    training and in eval mode; the input is never modified in place. Exact (probability 0)."""
    for device, dtype in device_dtype_cases():
        x = positive(shape, device, dtype, seed=1)
        before = x.clone()
        for training in (True, False):
            out = apply(fn, x, p, training, generator_on(device, 0), extra=extra)
            where = _where(fn, x, p, training, extra)
            expect(
                out.shape == x.shape and out.dtype == x.dtype and out.device == x.device,
                f"{where} gave shape {tuple(out.shape)}, {out.dtype} on {out.device}",
                "keep the input's shape, dtype and device: draw the mask with "
                "device=x.device and compute in x's dtype (no .float(), no .cpu()).",
            )
            expect(
                torch.equal(x, before),
                f"{where} modified its input in place",
                "never write into x (no x *= ..., no x[mask] = 0): return a new tensor.",
            )


def check_generator(fn: Callable[..., Any], p: float, shape: tuple[int, ...],
                    extra: Extra = None) -> None:
    """With a generator: the same seed gives the same output, and the global RNG state (CPU and
    CUDA) is untouched, on every device and float dtype. Exact (probability 0)."""
    for device, dtype in device_dtype_cases():
        x = positive(shape, device, dtype, seed=6)
        cpu_state = torch.get_rng_state()
        cuda_state = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
        a = apply(fn, x, p, True, generator_on(device, 123), extra=extra)
        b = apply(fn, x, p, True, generator_on(device, 123), extra=extra)
        where = f"{_name(fn)} on {dtype} on {device.type} with a generator"
        expect(
            torch.equal(a, b),
            f"{where}: the same seed gave different outputs",
            "draw all randomness from `generator` (e.g. torch.rand(..., generator=generator, "
            "device=x.device)).",
        )
        untouched = torch.equal(torch.get_rng_state(), cpu_state) and (
            cuda_state is None or all(torch.equal(s, t) for s, t in
                                      zip(torch.cuda.get_rng_state_all(), cuda_state, strict=True))
        )
        expect(
            untouched,
            f"{where} changed the global random state",
            "when a generator is given use only it: no torch.manual_seed, no torch.rand "
            "without generator=.",
        )


def check_eval_and_p0_identity(fn: Callable[..., Any], shape: tuple[int, ...],
                               extra: Extra = None) -> None:
    """training=False (any p) and p=0 return the input's values unchanged, on every device and
    dtype. Exact (probability 0)."""
    for device, dtype in device_dtype_cases():
        x = positive(shape, device, dtype, seed=7) - 1.0
        for p, training in ((0.3, False), (0.9, False), (0.0, True)):
            out = apply(fn, x, p, training, generator_on(device, 0), extra=extra)
            expect(
                torch.equal(out, x),
                f"{_where(fn, x, p, training, extra)} changed the values",
                "in eval mode (training=False) and for p = 0 dropout is the identity: "
                "no mask and no scaling (inverted dropout scales only in training).",
            )


def check_p_one(fn: Callable[..., Any], shape: tuple[int, ...], extra: Extra = None) -> None:
    """p = 1 gives all zeros, with no NaN, and a zero (not NaN) gradient, on every device and
    float dtype. Exact."""
    for device, dtype in device_dtype_cases():
        x = (positive(shape, device, dtype, seed=8) - 1.0).requires_grad_(True)
        out = apply(fn, x, 1.0, True, generator_on(device, 0), extra=extra)
        expect(
            not bool(torch.isnan(out).any()) and bool((out == 0).all()),
            f"{_where(fn, x, 1.0, True, extra)} gave "
            f"{short_repr(out.detach().flatten()[:4].tolist())}...",
            "p = 1 drops everything: return zeros without computing x / (1 - p) = x / 0.",
        )
        if out.requires_grad:
            out.sum().backward()
            expect(
                x.grad is not None and not bool(torch.isnan(x.grad).any())
                and bool((x.grad == 0).all()),
                f"the gradient of {_where(fn, x, 1.0, True, extra)} is not all zeros",
                "with p = 1 no unit passes, so no gradient passes: avoid 0 * inf = NaN.",
            )


def check_invalid_p(fn: Callable[..., Any], shape: tuple[int, ...] = (4,),
                    extra: Extra = None) -> None:
    """p outside [0, 1], NaN, infinite or not a real number raises ValueError naming p, also
    when training=False, for tensors on every device in float32 and float64. Exact."""
    cases: list[RaisesCase] = [
        ((torch.ones(shape, device=device, dtype=dtype), p),
         {"training": training, **(extra or {})}, ValueError, f"p={p!r} is not a probability")
        for (device, dtype), p, training in itertools.product(
            device_dtype_cases((torch.float32, torch.float64)), INVALID_P, (True, False))]
    for ((x, p), kwargs, _, _), err in zip(cases, expect_raises_many(fn, cases), strict=True):
        if "p" not in str(err):  # the call is rendered only on failure: a tensor's repr is slow
            fail(f"{describe_call(fn, (x, p), kwargs)} raised ValueError({str(err)!r}), which "
                 "does not name p",
                 "say which argument is wrong, e.g. ValueError(f'p must be in [0, 1], got {p}').")
