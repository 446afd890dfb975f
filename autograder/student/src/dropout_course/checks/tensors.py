"""Tensor helpers shared by the exercises' checks: test inputs, generators, device/dtype cases.

Every tensor check draws its inputs from here, so "every available device" and "every float
dtype" mean the same thing in every exercise (:mod:`dropout_course.checks.devices` decides which).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from .core import expect, run_student, run_student_many
from .devices import available_devices, float_dtypes

__all__ = ["call_tensor_fn", "call_tensor_fn_many", "device_dtype_cases", "generator_on",
           "positive", "ulps"]


def positive(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype,
             seed: int) -> torch.Tensor:
    """Values in [0.5, 1.5), drawn on the CPU from ``seed`` (the same on every device): never
    zero, so a zero in a dropout's output can only be a dropped unit."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=gen, dtype=torch.float64) + 0.5).to(device, dtype)


def generator_on(device: torch.device, seed: int) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)


def device_dtype_cases(dtypes: tuple[torch.dtype, ...] | None = None
          ) -> list[tuple[torch.device, torch.dtype]]:
    """(device, dtype) pairs a check runs on: every available device, and ``dtypes`` (default:
    every float dtype of :func:`float_dtypes` for that device)."""
    return [(device, dtype) for device in available_devices()
            for dtype in (dtypes or float_dtypes(device))]


def ulps(dtype: torch.dtype, count: float = 4.0) -> float:
    """Relative tolerance of ``count`` units in the last place of ``dtype``."""
    return count * torch.finfo(dtype).eps


def call_tensor_fn(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
    """Call a student's function; the result must be a tensor."""
    return _tensor_result(fn, run_student(fn, *args, **kwargs), args, kwargs)


def call_tensor_fn_many(fn: Callable[..., Any],
                        calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]]
                        ) -> list[torch.Tensor]:
    """:func:`call_tensor_fn` for each ``(args, kwargs)`` of ``calls``, made in one batch
    (:func:`~dropout_course.checks.core.run_student_many`)."""
    outs = run_student_many(fn, calls)
    return [_tensor_result(fn, out, args, kwargs)
            for (args, kwargs), out in zip(calls, outs, strict=True)]


def _tensor_result(fn: Callable[..., Any], out: Any, args: Sequence[Any],
                   kwargs: Mapping[str, Any]) -> torch.Tensor:
    name = getattr(fn, "__name__", "the function")
    expect(
        isinstance(out, torch.Tensor),
        f"{name} returned a {type(out).__name__}, not a torch.Tensor",
        "build the output with torch operations (no NumPy) so autograd and devices work.",
    )
    inputs = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    # Checked here, not only in the shape/dtype/device check: comparing a CPU result with a
    # CUDA input would raise PyTorch's own error inside a value check instead of saying this.
    expect(
        not inputs or out.device == inputs[0].device,
        f"{name} returned a tensor on {out.device} for an input on {inputs[0].device}"
        if inputs else "",
        "keep the input's device: draw the mask with device=x.device (no .cpu(), no NumPy).",
    )
    return out
