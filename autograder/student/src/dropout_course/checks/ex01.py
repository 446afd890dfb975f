"""Checks for Exercise 1 (overfitting).

Each check takes the student's function and one test case. Test cases (inputs and the
answers worked out by hand) live in the exercise's test cells, the hidden ones only in the
instructor's source notebook; this module holds the logic that judges an answer.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .core import (
    describe_call,
    expect,
    expect_equal,
    fail,
    run_student,
    run_student_many,
    short_repr,
)
from .devices import available_devices
from .stats import DEFAULT_FALSE_FAILURE, same_subset_probability

__all__ = [
    "check_early_stopping",
    "check_early_stopping_invariants",
    "check_generalisation_gap",
    "check_parameter_count",
    "check_split",
]


# --------------------------------------------------------------------------- split


def _as_index_array(value: Any, name: str, call: str) -> np.ndarray:
    expect(
        isinstance(value, np.ndarray),
        f"{call}: {name} is a {type(value).__name__}, not a NumPy array",
        "return NumPy arrays of indices, e.g. the slices of rng.permutation(n_samples).",
    )
    expect(
        value.ndim == 1 and np.issubdtype(value.dtype, np.integer),
        f"{call}: {name} has shape {value.shape} and dtype {value.dtype}; "
        "expected a 1-D array of integers",
        "indices are whole numbers: use an integer permutation, not floats or a mask.",
    )
    return value


def _split_once(fn: Callable[..., Any], n: int, fraction: float, seed: int) -> tuple:
    call = describe_call(fn, (n, fraction, seed))
    result = run_student(fn, n, fraction, seed)
    expect(
        isinstance(result, tuple) and len(result) == 2,
        f"{call} returned {short_repr(result)}; expected a tuple (train_idx, val_idx)",
        "end the function with `return train_idx, val_idx`.",
    )
    train = _as_index_array(result[0], "train_idx", call)
    val = _as_index_array(result[1], "val_idx", call)
    return train, val


def check_split(
    fn: Callable[..., Any], n_samples: int, val_fraction: float, seed: int
) -> None:
    """Check ``train_val_split(n_samples, val_fraction, seed)`` on one valid case.

    Exact (deterministic) parts: two 1-D integer arrays; ``round(val_fraction * n_samples)``
    validation indices; disjoint; together exactly ``0 .. n_samples - 1``; the same seed
    gives the same split whatever NumPy's global random state; the global state is untouched.

    Random parts, run only when C(n, k) >= 1e7 (k the validation size): the validation set
    is not simply the first or last k indices (a correct split fails this with probability
    2 / C(n, k)) and seed + 1 gives a different validation set (probability 1 / C(n, k)).
    False-failure probability of the whole check: 3 / C(n, k) <= 3e-7.
    """
    call = describe_call(fn, (n_samples, val_fraction, seed))
    saved = np.random.get_state()
    try:
        np.random.seed(1)
        before = np.random.get_state()[1].copy()
        train, val = _split_once(fn, n_samples, val_fraction, seed)
        expect(
            np.array_equal(np.random.get_state()[1], before),
            f"{call} changed NumPy's global random state",
            "use only `rng = np.random.default_rng(seed)`; do not call np.random.seed or "
            "np.random.permutation.",
        )
        n_val = round(val_fraction * n_samples)
        expect(
            len(val) == n_val and len(train) == n_samples - n_val,
            f"{call} gave {len(train)} training and {len(val)} validation indices; "
            f"expected {n_samples - n_val} and {n_val}",
            "the validation set has round(val_fraction * n_samples) samples (Python's "
            "round), the rest are for training.",
        )
        both = np.concatenate([train, val])
        expect(
            len(np.unique(both)) == len(both),
            f"{call}: some index appears twice (in one part or in both)",
            "each sample goes to exactly one part: split a permutation, do not sample with "
            "replacement.",
        )
        expect(
            np.array_equal(np.sort(both), np.arange(n_samples)),
            f"{call}: the indices are not exactly 0 .. {n_samples - 1}",
            "use every index from 0 to n_samples - 1 once.",
        )
        np.random.seed(2)  # a different global state must not change the answer
        train2, val2 = _split_once(fn, n_samples, val_fraction, seed)
        expect(
            np.array_equal(train, train2) and np.array_equal(val, val2),
            f"{call} gave a different split when called twice with the same seed",
            "create the generator from the seed inside the function: "
            "np.random.default_rng(seed).",
        )
    finally:
        np.random.set_state(saved)

    if same_subset_probability(n_samples, n_val) > DEFAULT_FALSE_FAILURE / 10:
        return  # too few possible splits for the random parts to be reliable
    val_set = set(val.tolist())
    expect(
        val_set not in (set(range(n_val)), set(range(n_samples - n_val, n_samples))),
        f"{call}: the validation set is just the first or last {n_val} indices",
        "shuffle before splitting: real data is often sorted (by class, by time).",
    )
    _, val_next = _split_once(fn, n_samples, val_fraction, seed + 1)
    expect(
        set(val_next.tolist()) != val_set,
        f"{call} and seed={seed + 1} gave the same validation set",
        "the split must depend on the seed: pass it to np.random.default_rng.",
    )


# --------------------------------------------------------------------------- parameters


def _snapshot(model: torch.nn.Module) -> list[tuple[str, torch.Tensor, bool]]:
    return [(n, p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()]


def check_parameter_count(
    fn: Callable[..., Any], model: torch.nn.Module, expected: int, about: str
) -> None:
    """Check ``count_trainable_parameters(model) == expected`` (exact, no randomness).

    Also checks that the answer is a Python ``int``, that the model is left as it was
    (values, ``requires_grad`` flags, train/eval mode) and that the count is the same after
    the model is moved to each available device. ``about`` describes the model in words.
    """
    for device in available_devices():
        moved = copy.deepcopy(model).to(device)
        before, mode = _snapshot(moved), moved.training
        call = f"count_trainable_parameters({about} on {device.type})"
        result = run_student(fn, moved)
        expect(
            isinstance(result, int) and not isinstance(result, bool),
            f"{call} returned a {type(result).__name__} ({short_repr(result)}), not an int",
            "return a plain Python int, e.g. int(total).",
        )
        expect_equal(
            result,
            expected,
            call,
            "count only parameters with requires_grad=True, count a shared parameter "
            "once, and leave out buffers such as BatchNorm's running statistics.",
        )
        after = _snapshot(moved)
        unchanged = moved.training == mode and len(before) == len(after) and all(
            n0 == n1 and g0 == g1 and torch.equal(v0, v1)
            for (n0, v0, g0), (n1, v1, g1) in zip(before, after, strict=True)
        )
        expect(
            unchanged,
            f"{call} changed the model (its weights, requires_grad flags or mode)",
            "counting must only read the model: do not call requires_grad_(), train() or "
            "eval() on it.",
        )


# --------------------------------------------------------------------------- early stopping


def _early_stopping_results(
    fn: Callable[..., Any], cases: Sequence[tuple[Any, int]]
) -> list[tuple[int, int]]:
    """``fn(val_losses, patience)`` for each case, in one batch; each result must be a tuple
    of two ints and leave its input unchanged."""
    originals = [copy.deepcopy(val_losses) for val_losses, _ in cases]
    results = run_student_many(fn, [((val_losses, patience), {}) for val_losses, patience in cases])
    for (val_losses, patience), original, result in zip(cases, originals, results, strict=True):
        call = describe_call(fn, (val_losses, patience))
        expect(
            isinstance(result, tuple)
            and len(result) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in result),
            f"{call} returned {short_repr(result)}; expected a tuple of two ints "
            "(best_epoch, stop_epoch)",
            "return plain ints, e.g. `return int(best), int(stop)`.",
        )
        same = (
            np.array_equal(np.asarray(original), np.asarray(val_losses))
            and type(original) is type(val_losses)
        )
        expect(same, f"{call} modified its input", "never sort or change val_losses in place.")
    return results


def check_early_stopping(
    fn: Callable[..., Any],
    val_losses: Sequence[float],
    patience: int,
    expected: tuple[int, int],
) -> None:
    """Check ``early_stopping_epoch(val_losses, patience) == expected`` (exact)."""
    result = _early_stopping_results(fn, [(val_losses, patience)])[0]
    expect(
        result == tuple(expected),
        f"{describe_call(fn, (val_losses, patience))} returned (best_epoch, stop_epoch) = "
        f"{result}; expected {tuple(expected)}",
        "epochs count from 0; only a strictly lower loss is an improvement; training stops "
        "after `patience` epochs in a row without improvement; best_epoch is the earliest "
        "epoch with the lowest loss up to the stop.",
    )


def check_early_stopping_invariants(
    fn: Callable[..., Any], seed: int, n_cases: int = 200
) -> None:
    """Check rules every correct answer obeys, on ``n_cases`` random validation curves.

    Deterministic given ``seed`` and exact (false-failure probability 0). For the returned
    (b, s) on losses L with patience P: 0 <= b <= s < len(L); b is the first minimum of
    L[0..s]; s - b <= P; and either s - b == P (stopped) or s is the last epoch.
    """
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n_cases):
        n = int(rng.integers(1, 40))
        epochs = np.arange(n)
        curve = 1.0 / (1.0 + epochs) + 0.02 * epochs * rng.uniform(0, 1)
        losses = [float(v) for v in curve + rng.normal(0.0, 0.05, size=n)]
        cases.append((losses, int(rng.integers(1, 8))))
    for (losses, patience), (best, stop) in zip(
            cases, _early_stopping_results(fn, cases), strict=True):
        n = len(losses)
        call = describe_call(fn, (losses, patience))
        hint = "re-read the rules in the docstring and test your code on this curve by hand."
        if not 0 <= best <= stop < n:
            fail(f"{call} returned ({best}, {stop}), outside 0 <= best <= stop < {n}", hint)
        seen = losses[: stop + 1]
        if best != int(np.argmin(seen)):
            fail(
                f"{call}: best_epoch={best} is not the first lowest loss before the stop "
                f"(that is epoch {int(np.argmin(seen))})",
                hint,
            )
        if not (stop - best == patience or (stop - best < patience and stop == n - 1)):
            fail(
                f"{call}: stopped at epoch {stop}, {stop - best} epochs after the best; "
                f"with patience={patience} it should stop exactly {patience} epochs after "
                "the best (or run to the last epoch)",
                hint,
            )


# --------------------------------------------------------------------------- gap


def check_generalisation_gap(
    fn: Callable[..., Any],
    train_acc: Sequence[float],
    val_acc: Sequence[float],
    expected: float,
) -> None:
    """Check ``generalisation_gap(train_acc, val_acc)`` returns the float ``expected``.

    Exact up to 1e-12 relative floating-point rounding; inputs must be left unchanged.
    """
    call = describe_call(fn, (train_acc, val_acc))
    originals = copy.deepcopy((train_acc, val_acc))
    result = run_student(fn, train_acc, val_acc)
    expect(
        isinstance(result, float),
        f"{call} returned a {type(result).__name__} ({short_repr(result)}), not a float",
        "return a plain Python float, e.g. float(gap).",
    )
    expect(
        math.isclose(result, expected, rel_tol=1e-12, abs_tol=1e-12),
        f"{call} returned {result!r}; expected {expected!r}",
        "take the epoch with the highest validation accuracy (the earliest on ties) and "
        "return training minus validation accuracy at that epoch.",
    )
    unchanged = all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(originals, (train_acc, val_acc), strict=True)
    )
    expect(unchanged, f"{call} modified its input", "do not change the lists in place.")
