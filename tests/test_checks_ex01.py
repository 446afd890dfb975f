"""Unit tests of the checks library's ex01.py (dropout_course.checks.ex01) through the real test
cells of Exercise 1.

Correct answers (the reference solutions and the demo student ada_correct) pass every test
cell, also under many seeds; each wrong answer below, one typical student bug each, fails at
least one test cell of its task, with a message that says what to check.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import notebook_code
import numpy as np
import pytest
import torch
from dropout_course.checks import ex01
from notebook_code import (
    HINT,
    answers_namespace,
    load_solution_namespace,
    not_written,
    run_cell_cleanly,
    run_test_cell,
    solution_cells,
    test_cells,
)
from notebook_code import cell_failures as failures_of

from autograder.demo.ex01_overfitting import STUDENTS

ASSIGNMENT = "ex01_overfitting"
#: task key used in the test cells' grade ids (test_<task>_visible) -> function name
TASKS = {
    "split": "train_val_split",
    "count": "count_trainable_parameters",
    "early": "early_stopping_epoch",
    "gap": "generalisation_gap",
}
ALL_TEST_CELLS = test_cells(ASSIGNMENT)
CELL_IDS = [grade_id for grade_id, _ in ALL_TEST_CELLS]
task_of = partial(notebook_code.task_of, tasks=TASKS)
cells_of_task = partial(notebook_code.cells_of_task, cells=ALL_TEST_CELLS, tasks=TASKS)


# --------------------------------------------------------------------------- fixtures, helpers


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """Namespace of the setup cell plus the reference solutions."""
    return load_solution_namespace(ASSIGNMENT)


def student_namespace(student: str) -> dict[str, Any]:
    """Setup cell, then a demo student's code answers (the written answer is not code)."""
    return answers_namespace(ASSIGNMENT, STUDENTS[student], student)


@pytest.fixture(scope="module")
def ada() -> dict[str, Any]:
    """Namespace with the demo answers of ada_correct."""
    return student_namespace("ada_correct")


def cell_failures(task: str, namespace: dict[str, Any]) -> dict[str, AssertionError]:
    """Run every test cell of ``task``; return {grade_id: AssertionError} of those that fail."""
    return failures_of(cells_of_task(task), namespace)


def with_answer(namespace: dict[str, Any], fn: Callable[..., Any], task: str) -> dict[str, Any]:
    """Copy of ``namespace`` in which ``fn`` replaces the answer to ``task``."""
    return {**namespace, TASKS[task]: fn}


# --------------------------------------------------------------------------- the helpers work


def test_notebook_has_a_visible_and_a_hidden_cell_per_task() -> None:
    """test_cells() finds one visible and one hidden test cell for each of the four tasks."""
    visible = [gid for gid, _ in test_cells(ASSIGNMENT, hidden=False)]
    hidden = [gid for gid, _ in test_cells(ASSIGNMENT, hidden=True)]
    assert visible == [f"test_{task}_visible" for task in TASKS]
    assert hidden == [f"test_{task}_hidden" for task in TASKS]
    assert sorted(CELL_IDS) == sorted(visible + hidden)


def test_reference_namespace_holds_the_four_functions(reference: dict[str, Any]) -> None:
    """load_solution_namespace() defines every reference function and the checks library."""
    for name in TASKS.values():
        assert callable(reference[name]), name
    assert reference["checks"].ex01 is ex01


def test_run_test_cell_leaves_the_namespace_alone(reference: dict[str, Any]) -> None:
    """A test cell runs in a copy: names it defines (e.g. `mlp`) do not leak back."""
    source = dict(ALL_TEST_CELLS)["test_count_visible"]
    run_test_cell(source, reference)
    assert "mlp" not in reference


# --------------------------------------------------------------------------- correct answers


@pytest.mark.parametrize("grade_id", CELL_IDS)
def test_reference_solution_passes_the_test_cell(
    grade_id: str, reference: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The instructor's solution passes every visible and hidden test cell, printing
    'Passed:' and nothing on stderr (which nbgrader would count as a failure)."""
    run_cell_cleanly(dict(ALL_TEST_CELLS)[grade_id], reference, capsys)


@pytest.mark.parametrize("grade_id", CELL_IDS)
def test_demo_correct_student_passes_the_test_cell(grade_id: str, ada: dict[str, Any]) -> None:
    """The demo answers of ada_correct (full marks in the demo grading) pass every test cell."""
    run_test_cell(dict(ALL_TEST_CELLS)[grade_id], ada)


def test_demo_student_has_only_the_written_answer_as_non_code() -> None:
    """ada_correct answers each code task; the only answer not run here is the written one."""
    code_ids = {grade_id for grade_id, _ in solution_cells(ASSIGNMENT)}
    assert set(STUDENTS["ada_correct"]) - code_ids == {"written_answer"}
    assert set(TASKS.values()) <= code_ids


@pytest.mark.parametrize("grade_id", CELL_IDS)
def test_stub_fails_every_test_cell(grade_id: str, reference: dict[str, Any]) -> None:
    """With the task left as the stub, its test cell fails and says it is not written yet:
    no test cell passes without an answer."""
    namespace = with_answer(reference, not_written, task_of(grade_id))
    with pytest.raises(AssertionError, match="not written yet") as info:
        run_test_cell(dict(ALL_TEST_CELLS)[grade_id], namespace)
    assert HINT in str(info.value)


# --------------------------------------------------------------------------- many seeds


@pytest.mark.parametrize(("n_samples", "val_fraction"), [(100, 0.2), (1797, 0.25), (30, 0.5),
                                                         (5, 0.4)])
def test_check_split_never_fails_the_reference(
    n_samples: int, val_fraction: float, reference: dict[str, Any]
) -> None:
    """check_split passes the reference on 200 seeds: its random parts do not fail a correct
    split by bad luck (zero failures allowed), with or without those parts running."""
    failures = []
    for seed in range(200):
        try:
            ex01.check_split(reference["train_val_split"], n_samples, val_fraction, seed)
        except AssertionError as err:
            failures.append(f"seed {seed}: {err}")
    assert failures == []


def test_early_stopping_invariants_never_fail_the_reference(reference: dict[str, Any]) -> None:
    """check_early_stopping_invariants passes the reference on 100 seeds (200 curves each)."""
    failures = []
    for seed in range(100):
        try:
            ex01.check_early_stopping_invariants(reference["early_stopping_epoch"], seed)
        except AssertionError as err:
            failures.append(f"seed {seed}: {err}")
    assert failures == []


# --------------------------------------------------------------------------- wrong answers
# Each function below is the reference with one typical bug. Its name starts with the task key
# (split_, count_, early_, gap_); its docstring says the bug.


def _split_size(n_samples: Any, val_fraction: Any, rounding: Callable[[float], int] = round
                ) -> int:
    """The reference's input validation; returns the validation size."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral):
        raise TypeError("n_samples must be an int")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real):
        raise TypeError("val_fraction must be a real number")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError("val_fraction must be strictly between 0 and 1")
    n_val = rounding(val_fraction * n_samples)
    if n_samples < 2 or not 0 < n_val < n_samples:
        raise ValueError("both parts must be non-empty")
    return n_val


def split_global_rng(n_samples: int, val_fraction: float, seed: int) -> tuple:
    """Seeds and uses NumPy's global random generator."""
    n_val = _split_size(n_samples, val_fraction)
    np.random.seed(seed)
    order = np.random.permutation(n_samples)
    return order[n_val:], order[:n_val]


def split_floor(n_samples: int, val_fraction: float, seed: int) -> tuple:
    """Uses int() (floor) instead of round() for the validation size."""
    n_val = _split_size(n_samples, val_fraction, rounding=int)
    order = np.random.default_rng(seed).permutation(n_samples)
    return order[n_val:], order[:n_val]


def split_no_shuffle(n_samples: int, val_fraction: float, seed: int) -> tuple:
    """Does not shuffle: the first k indices are the validation set."""
    n_val = _split_size(n_samples, val_fraction)
    order = np.arange(n_samples)
    return order[n_val:], order[:n_val]


def split_choice_with_replacement(n_samples: int, val_fraction: float, seed: int) -> tuple:
    """'Shuffles' with rng.choice without replace=False, so indices repeat."""
    n_val = _split_size(n_samples, val_fraction)
    order = np.random.default_rng(seed).choice(n_samples, size=n_samples)
    return order[n_val:], order[:n_val]


def split_val_drawn_with_replacement(n_samples: int, val_fraction: float, seed: int) -> tuple:
    """Draws the validation indices with replacement; training is the rest."""
    n_val = _split_size(n_samples, val_fraction)
    val = np.random.default_rng(seed).choice(n_samples, size=n_val)
    return np.setdiff1d(np.arange(n_samples), val), val


def split_returns_lists(n_samples: int, val_fraction: float, seed: int) -> tuple:
    """Returns Python lists instead of NumPy arrays."""
    n_val = _split_size(n_samples, val_fraction)
    order = np.random.default_rng(seed).permutation(n_samples).tolist()
    return order[n_val:], order[:n_val]


def split_ignores_seed(n_samples: int, val_fraction: float, seed: int) -> tuple:
    """Ignores its seed argument: always seed 0."""
    n_val = _split_size(n_samples, val_fraction)
    order = np.random.default_rng(0).permutation(n_samples)
    return order[n_val:], order[:n_val]


def split_no_validation(n_samples: int, val_fraction: float, seed: int) -> tuple:
    """Never checks val_fraction (or the part sizes): no ValueError for bad input."""
    n_val = round(val_fraction * n_samples)
    order = np.random.default_rng(seed).permutation(n_samples)
    return order[n_val:], order[:n_val]


def split_swapped(n_samples: int, val_fraction: float, seed: int) -> tuple:
    """Returns (val_idx, train_idx) instead of (train_idx, val_idx)."""
    n_val = _split_size(n_samples, val_fraction)
    order = np.random.default_rng(seed).permutation(n_samples)
    return order[:n_val], order[n_val:]


_SHARED_RNG = np.random.default_rng(0)


def split_module_level_rng(n_samples: int, val_fraction: float, seed: int) -> tuple:
    """Uses one generator made once outside the function: its state moves between calls."""
    n_val = _split_size(n_samples, val_fraction)
    order = _SHARED_RNG.permutation(n_samples)
    return order[n_val:], order[:n_val]


def split_round_half_up(n_samples: int, val_fraction: float, seed: int) -> tuple:
    """Rounds half up (floor(x + 0.5)) instead of Python's round (half to even): 2.5 -> 3."""
    n_val = _split_size(n_samples, val_fraction, rounding=lambda x: math.floor(x + 0.5))
    order = np.random.default_rng(seed).permutation(n_samples)
    return order[n_val:], order[:n_val]


def _require_module(model: Any) -> None:
    if not isinstance(model, torch.nn.Module):
        raise TypeError("model must be a torch.nn.Module")


def count_frozen_too(model: torch.nn.Module) -> int:
    """Counts frozen parameters (requires_grad=False) as well."""
    _require_module(model)
    return sum(p.numel() for p in model.parameters())


def count_buffers_too(model: torch.nn.Module) -> int:
    """Counts via state_dict, so buffers (BatchNorm's running statistics) are included."""
    _require_module(model)
    state = model.state_dict(keep_vars=True)
    unique = {id(t): t for t in state.values()}
    return sum(
        t.numel() for t in unique.values()
        if not (isinstance(t, torch.nn.Parameter) and not t.requires_grad)
    )


def count_shared_twice(model: torch.nn.Module) -> int:
    """Adds up each module's own parameters, so a layer used twice is counted twice."""
    _require_module(model)
    return sum(
        p.numel()
        for _, module in model.named_modules(remove_duplicate=False)
        for p in module.parameters(recurse=False)
        if p.requires_grad
    )


def count_modules_own_params(model: torch.nn.Module) -> int:
    """Adds up the own parameters of each distinct module: a layer used twice is counted once,
    but a weight tied between two different layers is counted twice."""
    _require_module(model)
    return sum(
        p.numel()
        for module in model.modules()
        for p in module.parameters(recurse=False)
        if p.requires_grad
    )


def count_returns_tensor(model: torch.nn.Module) -> int:
    """Returns a 0-d torch tensor instead of a Python int."""
    _require_module(model)
    return sum(torch.tensor(p.numel()) for p in model.parameters() if p.requires_grad)


def count_unfreezes(model: torch.nn.Module) -> int:
    """Counts correctly, then calls model.requires_grad_(True), unfreezing the model."""
    _require_module(model)
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.requires_grad_(True)
    return total


def count_switches_to_eval(model: torch.nn.Module) -> int:
    """Calls model.eval() 'to be safe', changing the caller's train/eval mode."""
    _require_module(model)
    model.eval()
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_no_type_check(model: torch.nn.Module) -> int:
    """No TypeError for a non-module (fails with AttributeError instead)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _checked_losses(val_losses: Any, patience: Any, finite: bool = True) -> list[float]:
    """The reference's input validation; returns the losses as floats."""
    if isinstance(patience, bool) or not isinstance(patience, numbers.Integral):
        raise TypeError("patience must be an int")
    if patience < 1:
        raise ValueError("patience must be at least 1")
    losses = [float(v) for v in val_losses]
    if finite and (not losses or not all(math.isfinite(v) for v in losses)):
        raise ValueError("val_losses is empty or not finite")
    return losses


def _replay(losses: list[float], patience: int) -> tuple[int, int]:
    """The reference rule, without validation."""
    best, best_loss = 0, losses[0]
    for epoch, loss in enumerate(losses[1:], start=1):
        if loss < best_loss:
            best, best_loss = epoch, loss
        elif epoch - best >= patience:
            return best, epoch
    return best, len(losses) - 1


def early_ties_improve(val_losses: Any, patience: int) -> tuple[int, int]:
    """Uses <=, so an equal loss counts as an improvement."""
    losses = _checked_losses(val_losses, patience)
    best, best_loss = 0, losses[0]
    for epoch, loss in enumerate(losses[1:], start=1):
        if loss <= best_loss:
            best, best_loss = epoch, loss
        elif epoch - best >= patience:
            return best, epoch
    return best, len(losses) - 1


def early_one_epoch_late(val_losses: Any, patience: int) -> tuple[int, int]:
    """Off by one: waits patience + 1 epochs, stopping one epoch late."""
    losses = _checked_losses(val_losses, patience)
    best, best_loss = 0, losses[0]
    for epoch, loss in enumerate(losses[1:], start=1):
        if loss < best_loss:
            best, best_loss = epoch, loss
        elif epoch - best > patience:
            return best, epoch
    return best, len(losses) - 1


def early_one_epoch_early(val_losses: Any, patience: int) -> tuple[int, int]:
    """Off by one: stops after patience - 1 epochs without improvement."""
    losses = _checked_losses(val_losses, patience)
    best, best_loss = 0, losses[0]
    for epoch, loss in enumerate(losses[1:], start=1):
        if loss < best_loss:
            best, best_loss = epoch, loss
        elif epoch - best >= patience - 1:
            return best, epoch
    return best, len(losses) - 1


def early_best_of_whole_history(val_losses: Any, patience: int) -> tuple[int, int]:
    """Stops correctly but reports the argmin of the whole history, after the stop too."""
    losses = _checked_losses(val_losses, patience)
    _, stop = _replay(losses, patience)
    return int(np.argmin(losses)), stop


def early_no_validation(val_losses: Any, patience: int) -> tuple[int, int]:
    """Checks patience but not the losses: no ValueError for an empty or NaN history."""
    return _replay(_checked_losses(val_losses, patience, finite=False), patience)


def early_allows_nan(val_losses: Any, patience: int) -> tuple[int, int]:
    """Rejects an empty history but not NaN or infinite losses."""
    losses = _checked_losses(val_losses, patience, finite=False)
    if not losses:
        raise ValueError("val_losses is empty")
    return _replay(losses, patience)


def early_sorts_input(val_losses: Any, patience: int) -> tuple[int, int]:
    """Right answer, but sorts the caller's list in place (to look at the lowest losses)."""
    best, stop = _replay(_checked_losses(val_losses, patience), patience)
    if isinstance(val_losses, list):
        val_losses.sort()
    return best, stop


def early_numpy_ints(val_losses: Any, patience: int) -> tuple[int, int]:
    """Returns NumPy int64 values instead of Python ints."""
    best, stop = _replay(_checked_losses(val_losses, patience), patience)
    return np.int64(best), np.int64(stop)


def _histories(train_acc: Any, val_acc: Any) -> tuple[list[float], list[float]]:
    """The reference's input validation; returns both histories as floats."""
    train, val = [float(v) for v in train_acc], [float(v) for v in val_acc]
    if len(train) != len(val) or not val:
        raise ValueError("need two non-empty histories of the same length")
    return train, val


def gap_last_epoch(train_acc: Any, val_acc: Any) -> float:
    """Measures the gap at the last epoch instead of the best validation epoch."""
    train, val = _histories(train_acc, val_acc)
    return train[-1] - val[-1]


def gap_argmax_train(train_acc: Any, val_acc: Any) -> float:
    """Picks the epoch with the best training accuracy."""
    train, val = _histories(train_acc, val_acc)
    kept = max(range(len(train)), key=train.__getitem__)
    return train[kept] - val[kept]


def gap_last_of_ties(train_acc: Any, val_acc: Any) -> float:
    """Picks the last of equally good validation epochs instead of the first."""
    train, val = _histories(train_acc, val_acc)
    kept = len(val) - 1 - int(np.argmax(val[::-1]))
    return train[kept] - val[kept]


def gap_val_minus_train(train_acc: Any, val_acc: Any) -> float:
    """Returns validation minus training accuracy (the sign flipped)."""
    train, val = _histories(train_acc, val_acc)
    kept = max(range(len(val)), key=val.__getitem__)
    return val[kept] - train[kept]


def gap_float32(train_acc: Any, val_acc: Any) -> float:
    """Returns a NumPy float32 (not a subclass of float, unlike float64)."""
    train, val = _histories(train_acc, val_acc)
    kept = max(range(len(val)), key=val.__getitem__)
    return np.float32(train[kept] - val[kept])


def gap_absolute(train_acc: Any, val_acc: Any) -> float:
    """Returns the absolute value of the gap, though the gap can be negative."""
    train, val = _histories(train_acc, val_acc)
    kept = max(range(len(val)), key=val.__getitem__)
    return abs(train[kept] - val[kept])


def gap_list_only(train_acc: Any, val_acc: Any) -> float:
    """Uses list.index, so NumPy arrays (which have no .index) crash."""
    if len(train_acc) != len(val_acc) or len(val_acc) == 0:
        raise ValueError("need two non-empty histories of the same length")
    kept = val_acc.index(max(val_acc))
    return float(train_acc[kept] - val_acc[kept])


def gap_sorts_input(train_acc: Any, val_acc: Any) -> float:
    """Right answer, but sorts the caller's validation list in place afterwards."""
    train, val = _histories(train_acc, val_acc)
    kept = max(range(len(val)), key=val.__getitem__)
    if isinstance(val_acc, list):
        val_acc.sort()
    return train[kept] - val[kept]


def gap_no_length_check(train_acc: Any, val_acc: Any) -> float:
    """zip() silently drops the extra epochs of the longer history: no ValueError."""
    pairs = list(zip(train_acc, val_acc, strict=False))
    kept = max(range(len(pairs)), key=lambda i: pairs[i][1])
    return float(pairs[kept][0] - pairs[kept][1])


@dataclass(frozen=True)
class WrongAnswer:
    """A buggy answer and a phrase of the failure message of the check that catches it."""

    fn: Callable[..., Any]
    caught_by: str

    @property
    def task(self) -> str:
        return self.fn.__name__.split("_")[0]


WRONG_ANSWERS = [
    # check_split: global state, sizes, duplicates, types, shuffle, seed; expect_raises
    WrongAnswer(split_global_rng, "changed NumPy's global random state"),
    WrongAnswer(split_floor, "gave 72 training and 28 validation indices"),
    WrongAnswer(split_no_shuffle, "is just the first or last 20 indices"),
    WrongAnswer(split_choice_with_replacement, "some index appears twice"),
    WrongAnswer(split_val_drawn_with_replacement, "training and 449 validation indices"),
    WrongAnswer(split_returns_lists, "train_idx is a list, not a NumPy array"),
    WrongAnswer(split_ignores_seed, "gave the same validation set"),
    WrongAnswer(split_module_level_rng, "gave a different split when called twice"),
    WrongAnswer(split_no_validation, "should raise ValueError (val_fraction must be below 1)"),
    WrongAnswer(split_swapped, "gave 20 training and 80 validation indices"),
    WrongAnswer(split_round_half_up, "gave 7 training and 3 validation indices"),
    # check_parameter_count: the count, the int type, the model left unchanged; expect_raises
    WrongAnswer(count_frozen_too, "an MLP with a frozen first layer on cpu): expected 330"),
    WrongAnswer(count_buffers_too, "Linear + BatchNorm1d on cpu): expected 44"),
    WrongAnswer(count_shared_twice, "a layer used twice on cpu): expected 272"),
    WrongAnswer(count_returns_tensor, "returned a Tensor"),
    WrongAnswer(count_unfreezes, "changed the model"),
    WrongAnswer(count_switches_to_eval, "changed the model"),
    WrongAnswer(count_no_type_check, "should raise TypeError (a list is not a model)"),
    WrongAnswer(count_modules_own_params, "two layers sharing one weight on cpu): expected 288"),
    # check_early_stopping: exact answers, int types, input unchanged; expect_raises
    WrongAnswer(early_ties_improve, "expected (0, 2)"),
    WrongAnswer(early_one_epoch_late, "expected (2, 5)"),
    WrongAnswer(early_one_epoch_early, "expected (2, 5)"),
    WrongAnswer(early_best_of_whole_history, "expected (2, 5)"),
    WrongAnswer(early_no_validation, "should raise ValueError (an empty history)"),
    WrongAnswer(early_allows_nan, "should raise ValueError (a NaN loss)"),
    WrongAnswer(early_sorts_input, "modified its input"),
    WrongAnswer(early_numpy_ints, "expected a tuple of two ints"),
    # check_generalisation_gap: the value, the float type, input unchanged; expect_raises
    WrongAnswer(gap_last_epoch, "returned 0.28; expected 0.2099"),
    WrongAnswer(gap_argmax_train, "returned 0.28; expected 0.2099"),
    WrongAnswer(gap_last_of_ties, "returned 0.1499"),
    WrongAnswer(gap_val_minus_train, "returned -0.2099"),
    WrongAnswer(gap_absolute, "returned 0.0500"),
    WrongAnswer(gap_float32, "returned a float32"),
    WrongAnswer(gap_list_only, "raised AttributeError"),
    WrongAnswer(gap_sorts_input, "modified its input"),
    WrongAnswer(gap_no_length_check, "should raise ValueError (histories of different lengths)"),
]

#: Wrong answers that every test cell lets through today: gaps in the hidden tests, kept as
#: strict xfails so closing a gap turns them into a reminder to move them to WRONG_ANSWERS.
UNCAUGHT: dict[str, tuple[WrongAnswer, str]] = {}


def _wrong_answer_params() -> list[Any]:
    caught = [pytest.param(w, id=w.fn.__name__) for w in WRONG_ANSWERS]
    uncaught = [
        pytest.param(w, id=name, marks=pytest.mark.xfail(strict=True, reason=reason))
        for name, (w, reason) in UNCAUGHT.items()
    ]
    return caught + uncaught


def test_wrong_answers_cover_every_task() -> None:
    """Every task has wrong answers, and each one is named after a known task."""
    assert {wrong.task for wrong in WRONG_ANSWERS} == set(TASKS)


@pytest.mark.parametrize("wrong", _wrong_answer_params())
def test_wrong_answer_fails_a_test_cell(wrong: WrongAnswer, reference: dict[str, Any]) -> None:
    """The buggy answer fails at least one test cell of its task (visible or hidden) with an
    AssertionError (never another exception); every failure message says what to check, and
    the expected check is among those that caught it."""
    failures = cell_failures(wrong.task, with_answer(reference, wrong.fn, wrong.task))
    assert failures, f"{wrong.fn.__name__} passed every test cell: {wrong.fn.__doc__}"
    messages = {gid: str(err) for gid, err in failures.items()}
    for grade_id, message in messages.items():
        assert HINT in message, f"{grade_id}: {message}"
    assert any(wrong.caught_by in m for m in messages.values()), messages


def test_uncaught_split_is_really_wrong(reference: dict[str, Any]) -> None:
    """split_round_half_up breaks the contract: 10 * 0.25 = 2.5 must give round(2.5) = 2
    validation indices, it gives 3."""
    _, val = split_round_half_up(10, 0.25, 0)
    _, expected = reference["train_val_split"](10, 0.25, 0)
    assert (len(expected), len(val)) == (2, 3)


def test_uncaught_count_is_really_wrong(reference: dict[str, Any]) -> None:
    """count_modules_own_params counts a weight tied between two layers twice."""
    first, second = torch.nn.Linear(16, 16), torch.nn.Linear(16, 16)
    second.weight = first.weight
    tied = torch.nn.Sequential(first, second)
    assert reference["count_trainable_parameters"](tied) == 16 * 16 + 16 + 16
    assert count_modules_own_params(tied) == 2 * 16 * 16 + 16 + 16


# --------------------------------------------------------------------------- checks directly


@pytest.mark.parametrize(
    ("fn", "phrase"),
    [
        (early_one_epoch_late, "epochs after the best"),
        (early_one_epoch_early, "epochs after the best"),
        (early_best_of_whole_history, "outside 0 <= best <= stop"),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_invariants_catch_wrong_stopping_rules(fn: Callable[..., Any], phrase: str) -> None:
    """check_early_stopping_invariants alone (without the exact cases run before it in the
    test cells) catches a wrong stopping rule, saying what to check."""
    with pytest.raises(AssertionError, match=phrase) as info:
        ex01.check_early_stopping_invariants(fn, seed=0)
    assert HINT in str(info.value)


def test_check_split_leaves_global_random_state_alone(reference: dict[str, Any]) -> None:
    """check_split seeds NumPy's global generator to test the answer, then restores it: the
    notebook's own random state is the same afterwards, even when the check fails."""
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    ex01.check_split(reference["train_val_split"], 100, 0.2, 0)
    with pytest.raises(AssertionError):
        ex01.check_split(split_global_rng, 100, 0.2, 0)
    assert np.array_equal(np.random.get_state()[1], before)
