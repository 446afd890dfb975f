"""Checks for the questions whose answer is a number (e.g. Exercise 2's Task 5).

A student writes each answer into a named variable (``answer_unit_variance = ...``): a number or
an expression that computes one. The visible test calls :func:`check_real_number`, which accepts
any finite real number however it is written (an ``int``, a ``float``, a
``fractions.Fraction``, a NumPy scalar or 0-d array, a 0-d PyTorch tensor) and refuses anything
else (``bool``, NaN, infinity, a string, ``None``, a tensor of several values) with a message
that says what is wrong. It never says whether the value is right: the hidden test compares it
with the reference value, which lives on the instructor's side only, through
:func:`check_close`, within a stated tolerance.

The same types come back from the grading sandbox (``autograder/engine/wire.py`` sends ints,
floats, fractions, NumPy scalars and arrays, tensors as plain data), so Validate and grading
accept the same answers.
"""

from __future__ import annotations

import fractions
import math
import numbers
import sys
from typing import Any

from .core import fail, short_repr

__all__ = ["ABS_TOL", "REL_TOL", "check_close", "check_real_number", "real_value"]

#: Relative tolerance of :func:`check_close`: an answer must agree with the reference value to
#: about six significant digits (so 1.4286 for 10/7 is not enough; write 1 / 0.7).
REL_TOL = 1e-6
#: Absolute tolerance of :func:`check_close`, for a reference value of 0 (where a relative
#: tolerance accepts nothing but an exact 0).
ABS_TOL = 1e-12

_HOW = ("write a number or an expression that computes it, e.g. `{name} = 0.5 * 3` or "
        "`{name} = 1 / 3`")


def _scalar(answer: Any) -> Any:
    """The Python number inside a NumPy scalar, a 0-d NumPy array or a 0-d tensor; ``answer``
    itself otherwise. Only real (not bool, not complex) NumPy and PyTorch dtypes are opened."""
    import numpy as np

    if isinstance(answer, np.ndarray) and answer.ndim == 0 and answer.dtype.kind in "iuf":
        return answer.item()
    if isinstance(answer, np.generic) and np.dtype(type(answer)).kind in "iuf":
        return answer.item()
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(answer, torch.Tensor) and answer.dim() == 0 and not (
            answer.dtype == torch.bool or answer.dtype.is_complex):
        return answer.detach().cpu().item()
    return answer


def _array_shape(answer: Any) -> tuple[int, ...] | None:
    """The shape of a NumPy array or a tensor (None for anything else: an unknown object is
    never asked for its attributes)."""
    import numpy as np

    if isinstance(answer, np.ndarray):
        return tuple(answer.shape)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(answer, torch.Tensor):
        return tuple(answer.shape)
    return None


def _problem(answer: Any, name: str) -> str | None:  # noqa: PLR0911  (one return per problem)
    """What is wrong with ``answer`` as a real number (None if nothing)."""
    import numpy as np

    if answer is None:
        return f"{name} is None: your answer is not written yet"
    if isinstance(answer, bool | np.bool_):
        return f"{name} is {short_repr(answer)}, a truth value, not a number"
    if isinstance(answer, str | bytes):
        return f"{name} is the text {short_repr(answer)}, not a number"
    shape = _array_shape(answer)
    if shape not in (None, ()):
        return (f"{name} holds {short_repr(tuple(shape))} values (a {type(answer).__name__}), "
                "not one number; take the single value out with .item()")
    value = _scalar(answer)
    if isinstance(value, bool) or not isinstance(value, int | float | fractions.Fraction):
        return f"{name} is {short_repr(answer)} (a {type(answer).__name__}), not a real number"
    try:
        as_float = float(value)
    except OverflowError:
        as_float = math.inf
    if not math.isfinite(as_float):
        return f"{name} is {short_repr(answer)}, not a finite number"
    return None


def real_value(answer: Any, name: str) -> float:
    """``answer`` as a float, or an ``AssertionError`` that says what is wrong with it.

    Accepts an ``int`` (not ``bool``), a ``float``, a ``fractions.Fraction``, a real NumPy scalar
    or 0-d array and a real 0-d tensor, with a finite value; ``name`` is the variable's name,
    used in the message.
    """
    problem = _problem(answer, name)
    if problem is not None:
        start = "replace `raise NotImplementedError()` in the question's cell: " \
            if answer is None else ""
        fail(problem, start + _HOW.format(name=name)
             + ", then run that cell again before this test.")
    return float(_scalar(answer))


def check_real_number(answer: Any, name: str) -> None:
    """The visible test of a numeric answer: ``answer`` is one finite real number (see
    :func:`real_value`). Whether it is the right number is for the hidden test to say."""
    real_value(answer, name)


def check_close(answer: Any, expected: float, name: str, rel_tol: float = REL_TOL,
                abs_tol: float = ABS_TOL) -> None:
    """The hidden test of a numeric answer: ``answer`` is a finite real number within
    ``rel_tol`` (relative) or ``abs_tol`` (absolute) of ``expected``, as ``math.isclose``
    judges. The message gives the student's value, never ``expected``."""
    value = real_value(answer, name)
    if not isinstance(expected, numbers.Real) or not math.isfinite(float(expected)):
        raise TypeError(f"check_close needs a finite reference value, got {expected!r}")
    if not math.isclose(value, float(expected), rel_tol=rel_tol, abs_tol=abs_tol):
        fail(f"{name} = {value!r} is not the expected value (compared to a relative tolerance "
             f"of {rel_tol:g})",
             "redo the derivation step by step, and compute the number from the exact "
             "expression (e.g. `1 / 0.7`, not a rounded decimal such as 1.43).")
