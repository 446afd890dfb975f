"""The Exercise 2 checks (dropout from scratch), run through the notebook's real test cells.

Needs only Python, torch, numpy and pytest (the notebook is read as JSON; no Jupyter, no
nbgrader), so it also runs on a GPU machine, where every tensor check covers CUDA as well:

    COURSE_DEVICES=cpu,cuda python -m pytest -p no:cacheprovider tests/test_checks_ex02.py

(``COURSE_DEVICES`` insists on the devices named and fails if one is missing.)

* The reference solution, the demo students' answers and several *different* correct
  implementations pass every visible and hidden test cell of their task.
* Each wrong implementation below, one typical bug each, fails at least one test cell of its
  task on every device, with a message that says what to check.
* The random checks never fail the reference over many seeds (``COURSE_CALIBRATION_SEEDS``,
  200 by default; ``make calibrate`` runs 5000).
"""

from __future__ import annotations

import itertools
import math
import numbers
import os
import re
from collections.abc import Callable, Iterator
from fractions import Fraction
from functools import partial
from typing import Any

import notebook_code
import numpy as np
import pytest
import torch
from dropout_course import checks
from dropout_course.checks import ex02
from notebook_code import (
    HINT,
    answers_namespace,
    cell_failures,
    expect_some_cell_fails,
    load_solution_namespace,
    not_written,
    run_cell_cleanly,
    run_test_cell,
    test_cells,
)

from autograder.demo.ex02_dropout_mechanics import FAILED_CELLS, STUDENTS
from autograder.engine import answers

ASSIGNMENT = "ex02_dropout_mechanics"
#: task key in the test cells' grade ids (test_<task>_...) -> the names that task defines
FUNCTION_TASKS = {
    "np_forward": "dropout_forward",
    "np_backward": "dropout_backward",
    "dropout": "dropout",
    "module": "Dropout",
}
#: Task 5's numeric questions: task key -> the variable the answer cell assigns. Each has one
#: test cell, test_<key>_answer, with a visible part (a finite number) and a hidden one (the value).
QUESTIONS = {
    "unit_variance": "answer_unit_variance",
    "factor": "answer_factor",
    "penalty": "answer_penalty",
}
TASKS = {**FUNCTION_TASKS, **QUESTIONS}
ALL_TEST_CELLS = test_cells(ASSIGNMENT)
CELL_IDS = [grade_id for grade_id, _ in ALL_TEST_CELLS]
task_of = partial(notebook_code.task_of, tasks=TASKS)
cells_of_task = partial(notebook_code.cells_of_task, cells=ALL_TEST_CELLS, tasks=TASKS)
CALIBRATION_SEEDS = int(os.environ.get("COURSE_CALIBRATION_SEEDS", "200"))
HIDDEN_TESTS = re.compile(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS\n?", re.DOTALL)


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """Namespace of the setup cell plus the reference solutions."""
    return load_solution_namespace(ASSIGNMENT)


def with_answers(namespace: dict[str, Any], **answers: Any) -> dict[str, Any]:
    """Copy of ``namespace`` with some answers replaced (the NumPy tasks need two names)."""
    return {**namespace, **answers}


def student_namespace(student: str) -> dict[str, Any]:
    """Setup cell, then a demo student's answers, run as the notebook would run them. A question
    the student left alone keeps the released stub's ``answer_... = None``."""
    namespace = answers_namespace(ASSIGNMENT, STUDENTS[student], student)
    for name in QUESTIONS.values():
        namespace.setdefault(name, None)
    return namespace


def _validate(p: object) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"dropout probability p must be a real number in [0, 1], got {p!r}")
    return float(p)


# --------------------------------------------------------------------------- the notebook


def test_notebook_has_the_expected_test_cells() -> None:
    """Each function task has a visible cell and hidden ones; each question one cell whose value
    test is hidden; all hidden cells hide their code."""
    assert [gid for gid, _ in test_cells(ASSIGNMENT, hidden=False)] == [
        f"test_{task}_visible" for task in FUNCTION_TASKS
    ]
    hidden = [gid for gid, _ in test_cells(ASSIGNMENT, hidden=True)]
    assert {task_of(gid) for gid in hidden} == set(TASKS)
    assert [gid for gid in hidden if task_of(gid) in QUESTIONS] == [
        f"test_{task}_answer" for task in QUESTIONS
    ]
    assert sorted(CELL_IDS) == sorted(
        [gid for gid, _ in test_cells(ASSIGNMENT, hidden=False)] + hidden
    )


def test_reference_namespace_holds_the_answers(reference: dict[str, Any]) -> None:
    for name in FUNCTION_TASKS.values():
        assert callable(reference[name]), name
    for name in QUESTIONS.values():
        assert isinstance(reference[name], float), name
    assert reference["checks"].ex02 is ex02


@pytest.mark.parametrize("grade_id", CELL_IDS)
def test_reference_solution_passes_the_test_cell(
    grade_id: str, reference: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """The instructor's solution passes every test cell on every available device, printing
    'Passed:' and nothing on stderr (which nbgrader would count as a failure)."""
    run_cell_cleanly(dict(ALL_TEST_CELLS)[grade_id], reference, capsys)


class NotWrittenModule(torch.nn.Module):
    """The released Dropout stub: __init__ raises after super().__init__()."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        raise NotImplementedError()


@pytest.mark.parametrize("grade_id", CELL_IDS)
def test_stub_fails_every_test_cell(grade_id: str, reference: dict[str, Any]) -> None:
    """With the task left as the stub, each of its test cells fails and says it is not written
    yet: no test cell passes without an answer."""
    task = task_of(grade_id)
    # A question's released cell sets its variable to None before `raise NotImplementedError()`.
    stub = NotWrittenModule if task == "module" else None if task in QUESTIONS else not_written
    namespace = with_answers(reference, **{TASKS[task]: stub})
    if task == "np_backward":  # the backward cells also need a forward pass: stub both
        namespace = with_answers(namespace, dropout_forward=not_written)
    with pytest.raises(AssertionError, match="not written yet") as info:
        run_test_cell(dict(ALL_TEST_CELLS)[grade_id], namespace)
    assert HINT in str(info.value)


@pytest.mark.parametrize("student", sorted(STUDENTS))
def test_demo_students_fail_exactly_the_expected_cells(student: str, device: str) -> None:
    """The demo answers (graded for real by test_grading.py) fail exactly the cells their
    expected score assumes, on every device: ann_correct none, bo_partial one, ..."""
    failures = cell_failures(ALL_TEST_CELLS, student_namespace(student))
    assert set(failures) == FAILED_CELLS[student]
    assert all(HINT in str(err) for err in failures.values())


# --------------------------------------------------------------------------- correct answers
# Different correct implementations: each must pass every test cell of its task.


def dropout_rand_ge(x, p=0.5, training=True, generator=None):
    """Keep where rand >= p."""
    p = _validate(p)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return x * keep.to(x.dtype) / (1.0 - p)


def dropout_bernoulli(x, p=0.5, training=True, generator=None):
    """torch.bernoulli of the keep probability, scale as a tensor in x's dtype."""
    p = _validate(p)
    if not training or p == 0.0:
        return x.clone()
    keep = torch.bernoulli(torch.full_like(x, 1.0 - p), generator=generator)
    scale = torch.tensor(0.0 if p == 1.0 else 1.0 / (1.0 - p), dtype=x.dtype, device=x.device)
    return x * keep * scale


def dropout_rand_lt(x, p=0.5, training=True, generator=None):
    """Keep where rand < 1 - p, zero with torch.where."""
    p = _validate(p)
    if not training or p == 0.0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device) < 1.0 - p
    return torch.where(keep, x / (1.0 - p) if p < 1 else x, torch.zeros_like(x))


def dropout_empty_like_uniform(x, p=0.5, training=True, generator=None):
    """Uniform numbers drawn in x's own dtype with Tensor.uniform_; mask multiplied in place
    on a fresh tensor (never on x)."""
    p = _validate(p)
    if not training or p == 0.0:
        return x
    noise = torch.empty(x.shape, dtype=torch.float32, device=x.device).uniform_(
        generator=generator)
    out = x * (noise >= p).to(x.dtype)
    return out.mul_(0.0 if p == 1.0 else 1.0 / (1.0 - p))


CORRECT_TORCH = [dropout_rand_ge, dropout_bernoulli, dropout_rand_lt, dropout_empty_like_uniform]


class DropoutModule(torch.nn.Module):
    def __init__(self, p=0.5):
        super().__init__()
        self.p = _validate(p)

    def forward(self, x):
        return dropout_rand_ge(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class FunctionalDropoutModule(torch.nn.Module):
    """Delegates to torch.nn.functional.dropout: PyTorch's own dropout is correct too."""

    def __init__(self, p=0.5):
        super().__init__()
        self.p = _validate(p)

    def forward(self, x):
        return torch.nn.functional.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


def np_forward(x, p, train, rng):
    p = _validate(p)
    if not train or p == 0.0:
        return x.copy(), (None, p, False)
    mask = rng.random(x.shape) >= p
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
    return (x * mask * scale).astype(x.dtype), (mask, p, True)


def np_backward(dout, cache):
    mask, p, train = cache
    if not train:
        return dout.copy()
    return dout * mask * (0.0 if p == 1.0 else 1.0 / (1.0 - p))


def np_forward_binomial(x, p, train, rng):
    """A second correct NumPy version: binomial keep-mask, the scaled mask as the cache."""
    p = _validate(p)
    if not train:
        return x.copy(), None
    keep = rng.binomial(1, 1.0 - p, size=x.shape).astype(x.dtype)
    scale = np.asarray(0.0 if p == 1.0 else 1.0 / (1.0 - p), dtype=x.dtype)
    return x * keep * scale, keep * scale


def np_backward_binomial(dout, cache):
    return dout if cache is None else dout * cache


def np_forward_where(x, p, train, rng):
    """A third: np.where with rng.uniform, mask as a boolean, p and train in a dict."""
    p = _validate(p)
    keep = rng.uniform(size=x.shape) < 1.0 - p if train else np.ones(x.shape, dtype=bool)
    divisor = 1.0 - p if train and p < 1.0 else 1.0
    out = np.where(keep, x / x.dtype.type(divisor), x.dtype.type(0)).astype(x.dtype)
    return out, {"keep": keep, "divisor": divisor}


def np_backward_where(dout, cache):
    return np.where(cache["keep"], dout / cache["divisor"], 0.0)


CORRECT_NUMPY = [(np_forward, np_backward), (np_forward_binomial, np_backward_binomial),
                 (np_forward_where, np_backward_where)]
NUMPY_CELLS = cells_of_task("np_forward") + cells_of_task("np_backward")


@pytest.mark.parametrize("dropout", CORRECT_TORCH, ids=lambda f: f.__name__)
def test_other_correct_dropout_passes(dropout, reference: dict[str, Any], device: str) -> None:
    assert cell_failures(cells_of_task("dropout"), with_answers(reference, dropout=dropout)) == {}


@pytest.mark.parametrize("module", [DropoutModule, FunctionalDropoutModule],
                         ids=lambda m: m.__name__)
def test_other_correct_module_passes(module, reference: dict[str, Any], device: str) -> None:
    assert cell_failures(cells_of_task("module"), with_answers(reference, Dropout=module)) == {}


@pytest.mark.parametrize(("forward", "backward"), CORRECT_NUMPY, ids=lambda f: f.__name__)
def test_other_correct_numpy_passes(forward, backward, reference: dict[str, Any]) -> None:
    namespace = with_answers(reference, dropout_forward=forward, dropout_backward=backward)
    assert cell_failures(NUMPY_CELLS, namespace) == {}


# --------------------------------------------------------------------------- calibration


def _random_checks(ns: dict[str, Any], seed: int) -> Iterator[tuple[str, Callable[[], None]]]:
    """Every random check of the exercise with the reference answers, for one seed."""
    for p in (0.2, 0.7):
        yield f"values p={p}", lambda p=p: ex02.check_values_zero_or_scaled(ns["dropout"], p, seed)
        yield f"drop p={p}", lambda p=p: ex02.check_drop_fraction(ns["dropout"], p, seed=seed)
        yield f"mean p={p}", lambda p=p: ex02.check_mean_preserved(ns["dropout"], p, seed=seed)
        yield f"count varies p={p}", lambda p=p: ex02.check_drop_count_varies(ns["dropout"], p,
                                                                              seed=seed)
        yield f"np p={p}", lambda p=p: ex02.check_np_forward_random(ns["dropout_forward"], p,
                                                                    seed=seed)
        yield f"np basics p={p}", lambda p=p: ex02.check_np_forward_basics(
            ns["dropout_forward"], p, seed=seed)
    yield "independent", lambda: ex02.check_masks_independent(ns["dropout"], 0.4, seed=seed)


@pytest.mark.slow
def test_random_checks_never_fail_the_reference(reference: dict[str, Any]) -> None:
    """Every random check passes the reference solution for CALIBRATION_SEEDS seeds, on every
    available device, with zero failures allowed.

    Per seed nine checks have a false-failure budget of 1e-6 each, however many devices and
    dtypes they cover (drop count, its call-to-call spread and mean for two p, the NumPy drop
    count for two p, and check_masks_independent; the other random parts are below 1e-180), so
    correct bounds fail at least once in 200 seeds with probability at most 1.8e-3. On the CPU
    the random streams are fixed by the seeds, so the outcome is reproducible. A failure here
    means a bound is wrong, not bad luck.
    """
    failures = []
    for seed in range(CALIBRATION_SEEDS):
        for name, check in _random_checks(reference, seed):
            try:
                check()
            except AssertionError as err:
                failures.append(f"seed {seed}, {name}: {err}")
    assert failures == []


# --------------------------------------------------------------------------- wrong answers
# One typical bug each; every one must fail at least one test cell of its task on every device.


def no_rescale(x, p=0.5, training=True, generator=None):
    return x * (torch.rand(x.shape, generator=generator, device=x.device) >= _validate(p))


def scale_by_p(x, p=0.5, training=True, generator=None):
    p = _validate(p)
    if not training or p == 0:
        return x
    return x * (torch.rand(x.shape, generator=generator, device=x.device) >= p) / max(p, 1e-9)


def keep_with_p(x, p=0.5, training=True, generator=None):
    p = _validate(p)
    if not training or p in (0.0, 1.0):
        return x * 0 if p == 1.0 else x
    return x * (torch.rand(x.shape, generator=generator, device=x.device) < p) / p


def keep_with_p_right_scale(x, p=0.5, training=True, generator=None):
    """Keeps with probability p but scales by 1 / (1 - p): only the drop count can tell."""
    p = _validate(p)
    if not training or p in (0.0, 1.0):
        return x * 0 if p == 1.0 else x
    return x * (torch.rand(x.shape, generator=generator, device=x.device) < p) / (1.0 - p)


def per_row_mask(x, p=0.5, training=True, generator=None):
    """One keep/drop decision per row, shared by all its columns."""
    p = _validate(p)
    if not training or p in (0.0, 1.0):
        return x * 0 if p == 1.0 else x
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    return x * (torch.rand(shape, generator=generator, device=x.device) >= p) / (1.0 - p)


def on_in_eval(x, p=0.5, training=True, generator=None):
    return dropout_rand_ge(x, p, True, generator)


def original_dropout_in_eval(x, p=0.5, training=True, generator=None):
    p = _validate(p)
    if not training:
        return x * (1.0 - p)
    return x * (torch.rand(x.shape, generator=generator, device=x.device) >= p)


def batch_shared_mask(x, p=0.5, training=True, generator=None):
    p = _validate(p)
    if not training or p in (0.0, 1.0):
        return x * 0 if p == 1.0 else x
    keep = torch.rand(x.shape[1:], generator=generator, device=x.device) >= p
    return x * keep / (1.0 - p)


def fixed_pattern(x, p=0.5, training=True, generator=None):
    p = _validate(p)
    if not training or p in (0.0, 1.0):
        return x * 0 if p == 1.0 else x
    keep = (torch.arange(x.numel(), device=x.device) % 10 >= round(10 * p)).reshape(x.shape)
    return x * keep / (1.0 - p)


def reseeds_global(x, p=0.5, training=True, generator=None):
    torch.manual_seed(0)
    return dropout_rand_ge(x, p, training, None)


def mask_on_cpu(x, p=0.5, training=True, generator=None):
    p = _validate(p)
    if not training or p in (0.0, 1.0):
        return x * 0 if p == 1.0 else x
    gen = generator if generator is None or generator.device.type == "cpu" else None
    keep = torch.rand(x.shape, generator=gen) >= p  # always on the CPU
    return x * keep / (1.0 - p)


def casts_to_float32(x, p=0.5, training=True, generator=None):
    return dropout_rand_ge(x.float(), p, training, generator)


def in_place(x, p=0.5, training=True, generator=None):
    p = _validate(p)
    if not training or p == 0:
        return x
    with torch.no_grad():
        x.mul_((torch.rand(x.shape, generator=generator, device=x.device) >= p) / (1.0 - p))
    return x


def nan_at_p_one(x, p=0.5, training=True, generator=None):
    p = _validate(p)
    if not training or p == 0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return x * keep * (1.0 / (1.0 - p) if p < 1 else math.inf)


def no_validation(x, p=0.5, training=True, generator=None):
    if not training or p == 0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return x * keep / (1.0 - p) if p != 1 else x * 0


def detached(x, p=0.5, training=True, generator=None):
    return dropout_rand_ge(x, p, training, generator).detach()


def via_numpy(x, p=0.5, training=True, generator=None):
    p = _validate(p)
    if not training or p in (0.0, 1.0):
        return x * 0 if p == 1.0 else x
    keep = np.random.default_rng(0).random(tuple(x.shape)) >= p
    return torch.tensor(x.detach().cpu().numpy() * keep / (1.0 - p), dtype=x.dtype)


def ignores_generator(x, p=0.5, training=True, generator=None):
    return dropout_rand_ge(x, p, training, None)


def multiplies_by_keep_probability(x, p=0.5, training=True, generator=None):
    """Multiplies the kept units by 1 - p instead of dividing."""
    p = _validate(p)
    if not training or p == 0:
        return x
    return x * (torch.rand(x.shape, generator=generator, device=x.device) >= p) * (1.0 - p)


def per_column_mask(x, p=0.5, training=True, generator=None):
    """One keep/drop decision per column (feature), shared by every row of the batch."""
    p = _validate(p)
    if not training or p in (0.0, 1.0):
        return x * 0 if p == 1.0 else x
    keep = torch.rand((1, x.shape[-1]), generator=generator, device=x.device) >= p
    return x * keep / (1.0 - p)


_CACHED_MASKS: dict[tuple[Any, ...], torch.Tensor] = {}


def cached_mask(x, p=0.5, training=True, generator=None):
    """Draws a mask once per shape and reuses it on every later call."""
    p = _validate(p)
    if not training or p in (0.0, 1.0):
        return x * 0 if p == 1.0 else x
    key = (tuple(x.shape), x.device, p)
    if key not in _CACHED_MASKS:
        _CACHED_MASKS[key] = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return x * _CACHED_MASKS[key] / (1.0 - p)


def normal_noise_mask(x, p=0.5, training=True, generator=None):
    """Thresholds torch.randn (normal) instead of torch.rand (uniform): wrong drop rate."""
    p = _validate(p)
    if not training or p in (0.0, 1.0):
        return x * 0 if p == 1.0 else x
    keep = torch.randn(x.shape, generator=generator, device=x.device) >= p
    return x * keep / (1.0 - p)


def own_fixed_generator(x, p=0.5, training=True, generator=None):
    """Ignores `generator` and seeds its own: the same mask on every call."""
    p = _validate(p)
    if not training or p in (0.0, 1.0):
        return x * 0 if p == 1.0 else x
    own = torch.Generator(device=x.device).manual_seed(0)
    return x * (torch.rand(x.shape, generator=own, device=x.device) >= p) / (1.0 - p)


def uses_train_default(x, p=0.5, training=True, generator=None):
    """Ignores `training` and `p=0`: always draws a mask (dropout on in eval, and p=0 is fine
    only by luck)."""
    return dropout_rand_ge(x, p, True, generator)


def fixed_count(x, p=0.5, training=True, generator=None):
    """Drops exactly round(p * n) units, chosen by a random permutation: the right rate, the
    right scale, independent-looking neighbours, but not independent draws (the count never
    varies)."""
    p = _validate(p)
    if not training or p == 0.0:
        return x
    order = torch.randperm(x.numel(), generator=generator, device=x.device)
    keep = torch.ones(x.numel(), device=x.device, dtype=x.dtype)
    keep[order[:round(p * x.numel())]] = 0.0
    return x * keep.reshape(x.shape) / (1.0 - p)


WRONG_TORCH = [no_rescale, scale_by_p, keep_with_p, keep_with_p_right_scale, per_row_mask,
               per_column_mask, on_in_eval, original_dropout_in_eval, batch_shared_mask,
               fixed_pattern, cached_mask, normal_noise_mask, reseeds_global, casts_to_float32,
               in_place, nan_at_p_one, no_validation, detached, via_numpy, ignores_generator,
               multiplies_by_keep_probability, own_fixed_generator, uses_train_default,
               fixed_count]
#: Wrong only where a GPU is: on a CPU-only machine these are correct answers.
WRONG_TORCH_CUDA = [mask_on_cpu]


@pytest.mark.parametrize("dropout", WRONG_TORCH, ids=lambda f: f.__name__)
def test_wrong_dropout_fails(dropout, reference: dict[str, Any], device: str) -> None:
    expect_some_cell_fails(cells_of_task("dropout"), with_answers(reference, dropout=dropout))


@pytest.mark.parametrize("dropout", WRONG_TORCH_CUDA, ids=lambda f: f.__name__)
def test_wrong_dropout_fails_on_cuda(dropout, reference: dict[str, Any], device: str) -> None:
    if device != "cuda":
        pytest.skip("this bug only shows on a CUDA device; on the CPU the answer is correct")
    expect_some_cell_fails(cells_of_task("dropout"), with_answers(reference, dropout=dropout))


# NumPy: each wrong pair is (forward, backward); the reference's other half is kept.


def np_forward_no_rescale(x, p, train, rng):
    out, cache = np_forward(x, p, train, rng)
    return (out * (1.0 - p) if train else out), cache


def np_forward_keep_with_p(x, p, train, rng):
    """Keeps with probability p (reads p as the keep probability), scales by 1 / p."""
    p = _validate(p)
    if not train or p == 0.0:
        return x.copy(), (None, p, False)
    mask = rng.random(x.shape) < p
    return (x * mask / p).astype(x.dtype), (mask, 1.0 - p, True)


def np_forward_global_rng(x, p, train, rng):
    return np_forward(x, p, train, np.random.mtrand._rand)


def np_forward_in_place(x, p, train, rng):
    out, cache = np_forward(x, p, train, rng)
    x[...] = out
    return x, cache


def np_forward_nan_at_one(x, p, train, rng):
    p = _validate(p)
    if not train:
        return x.copy(), (None, p, False)
    mask = rng.random(x.shape) >= p
    with np.errstate(divide="ignore", invalid="ignore"):
        return (x * mask / np.float64(1.0 - p)).astype(x.dtype), (mask, p, True)


def np_forward_no_validation(x, p, train, rng):
    if not train or p == 0:
        return x.copy(), (None, p, False)
    mask = rng.random(x.shape) >= p
    return (x * mask * (0.0 if p == 1 else 1.0 / (1.0 - p))).astype(x.dtype), (mask, p, True)


def np_forward_upcasts(x, p, train, rng):
    """Returns float64 for a float32 input: the mask is divided by a float64 scalar first."""
    out, cache = np_forward(x, p, train, rng)
    return (x * ((out != 0) / np.float64(1.0 - p)) if train and p < 1 else out), cache


def np_forward_original_dropout(x, p, train, rng):
    """Original dropout: no scaling in training, multiply by 1 - p in evaluation."""
    p = _validate(p)
    if not train:
        return x * (1.0 - p), (None, p, False)
    mask = rng.random(x.shape) >= p
    return (x * mask).astype(x.dtype), (mask, 0.0, True)


def np_forward_same_mask_every_call(x, p, train, rng):
    """Ignores rng: a fixed seed inside the function."""
    return np_forward(x, p, train, np.random.default_rng(0))


def np_backward_fresh_mask(dout, cache):
    _mask, p, train = cache
    if not train:
        return dout
    return dout * (np.random.default_rng(1).random(dout.shape) >= p) / (1.0 - p)


def np_backward_no_scale(dout, cache):
    mask, _p, train = cache
    return dout if not train else dout * mask


def np_backward_in_place(dout, cache):
    mask, p, train = cache
    if train:
        dout *= mask * (0.0 if p == 1.0 else 1.0 / (1.0 - p))
    return dout


def np_backward_eval_zero(dout, cache):
    """Treats 'no mask' (eval mode) as 'everything dropped'."""
    _mask, _p, train = cache
    return np.zeros_like(dout) if not train else np_backward(dout, cache)


def np_backward_nan_at_one(dout, cache):
    mask, p, train = cache
    if not train:
        return dout.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        return dout * mask / np.float64(1.0 - p)


WRONG_NUMPY = [
    (np_forward_no_rescale, np_backward), (np_forward_keep_with_p, np_backward),
    (np_forward_global_rng, np_backward), (np_forward_in_place, np_backward),
    (np_forward_nan_at_one, np_backward), (np_forward_no_validation, np_backward),
    (np_forward_upcasts, np_backward), (np_forward_original_dropout, np_backward),
    (np_forward_same_mask_every_call, np_backward), (np_forward, np_backward_fresh_mask),
    (np_forward, np_backward_no_scale), (np_forward, np_backward_in_place),
    (np_forward, np_backward_eval_zero), (np_forward, np_backward_nan_at_one),
]


def _pair_id(pair: Any) -> str:
    return pair.__name__.removeprefix("np_")


@pytest.mark.parametrize(("forward", "backward"), WRONG_NUMPY, ids=_pair_id)
def test_wrong_numpy_fails(forward, backward, reference: dict[str, Any]) -> None:
    namespace = with_answers(reference, dropout_forward=forward, dropout_backward=backward)
    expect_some_cell_fails(NUMPY_CELLS, namespace)


# Modules


class ModuleIgnoresTraining(DropoutModule):
    def forward(self, x):
        return dropout_rand_ge(x, self.p, True)


class ModuleNoRepr(DropoutModule):
    def extra_repr(self):
        return ""


class ModuleNoValidation(DropoutModule):
    def __init__(self, p=0.5):
        torch.nn.Module.__init__(self)
        self.p = p


class ModuleKeepsP(DropoutModule):
    """Reads p as the keep probability."""

    def forward(self, x):
        return keep_with_p(x, self.p, self.training)


class ModuleDetached(DropoutModule):
    def forward(self, x):
        return dropout_rand_ge(x, self.p, self.training).detach()


class ModuleStoresPAsKeep(DropoutModule):
    """Stores 1 - p as self.p."""

    def __init__(self, p=0.5):
        super().__init__(p)
        self.p = 1.0 - self.p


class ModuleCpuGenerator(DropoutModule):
    """Makes a CPU generator in __init__: breaks once the module is moved to a GPU."""

    def __init__(self, p=0.5):
        super().__init__(p)
        self.generator = torch.Generator().manual_seed(0)

    def forward(self, x):
        return dropout_rand_ge(x, self.p, self.training, self.generator)


class ModuleOneMask(DropoutModule):
    """Draws its mask at the first call and reuses it for every later input of that shape."""

    def forward(self, x):
        if not self.training:
            return x
        mask = getattr(self, "mask", None)
        if mask is None or mask.shape != x.shape or mask.device != x.device:
            self.mask = torch.rand(x.shape, device=x.device) >= self.p
        return x * self.mask.to(x.dtype) / (1.0 - self.p)


WRONG_MODULES = [ModuleIgnoresTraining, ModuleNoRepr, ModuleNoValidation, ModuleKeepsP,
                 ModuleDetached, ModuleStoresPAsKeep, ModuleOneMask]


@pytest.mark.parametrize("module", WRONG_MODULES, ids=lambda m: m.__name__)
def test_wrong_module_fails(module, reference: dict[str, Any], device: str) -> None:
    expect_some_cell_fails(cells_of_task("module"), with_answers(reference, Dropout=module))


def test_module_with_cpu_generator_fails_on_cuda(reference: dict[str, Any], device: str) -> None:
    if device != "cuda":
        pytest.skip("this bug only shows on a CUDA device; on the CPU the answer is correct")
    namespace = with_answers(reference, Dropout=ModuleCpuGenerator)
    expect_some_cell_fails(cells_of_task("module"), namespace)


def test_wrong_answers_fail_with_clear_messages(reference: dict[str, Any]) -> None:
    """Spot-check that the failure names the bug: the drop count for keep-with-p, the input
    modification for in-place, NaN at p = 1."""
    cells = cells_of_task("dropout")
    cases = {keep_with_p_right_scale: "dropped", in_place: "in place", nan_at_p_one: "p=1",
             per_row_mask: "agree", detached: "autograd graph",
             fixed_count: "the number dropped must vary"}
    for wrong, phrase in cases.items():
        failures = cell_failures(cells, with_answers(reference, dropout=wrong))
        assert any(phrase in str(err) for err in failures.values()), (wrong.__name__, failures)


def test_a_module_that_keeps_its_mask_is_told_so(reference: dict[str, Any]) -> None:
    namespace = with_answers(reference, Dropout=ModuleOneMask)
    failures = cell_failures(cells_of_task("module"), namespace)
    assert any("two forward calls in train mode dropped exactly the same units" in str(err)
               for err in failures.values()), failures


def test_an_output_on_another_device_is_reported_not_a_crash(reference: dict[str, Any]) -> None:
    """Seen on a GPU: a dropout that went through NumPy returned a CPU tensor for a CUDA input,
    and a value check crashed with PyTorch's 'Expected all tensors to be on the same device'
    instead of saying what is wrong. Reproduced on the CPU with PyTorch's meta device."""
    def on_meta(x, p, training=True, generator=None):
        return reference["dropout"](x, p, training, generator).to("meta")

    failures = cell_failures(cells_of_task("dropout"), with_answers(reference, dropout=on_meta))
    assert failures
    assert all("returned a tensor on meta for an input on cpu" in str(err)
               for err in failures.values()), failures


# --------------------------------------------------------------------------- Task 5: questions
# The reference values come from autograder/engine/answers.py (instructor side); the parameters
# are those of the questions' text. Each is first checked against an exact computation here.

QUESTION_VALUES = {
    "answer_unit_variance": answers.inverted_unit_variance(x=1.5, p=0.3),
    "answer_factor": answers.uncorrected_test_factor(p=0.35),
    "answer_penalty": answers.linear_dropout_penalty(x=[[1, 2], [0, 1], [3, -1]], w=[0.5, -2],
                                                     p=0.25),
}
#: The exact values, as fractions: 1.5^2 * 0.3 / 0.7, 1 / 0.65, (10 * 0.25 + 6 * 4) / 3.
EXACT = {"answer_unit_variance": Fraction(27, 28), "answer_factor": Fraction(20, 13),
         "answer_penalty": Fraction(53, 6)}


def _masks(n: int) -> Iterator[tuple[int, ...]]:
    return itertools.product((0, 1), repeat=n)


def test_reference_values_agree_with_an_exact_expectation() -> None:
    """answers.py against the definitions, by summing over every mask with its probability
    (exact rational arithmetic, no formula shared with answers.py)."""
    keep = 1 - Fraction(3, 10)
    x = Fraction(3, 2)
    mean = keep * x / keep
    variance = sum((keep if m else 1 - keep) * (m * x / keep - mean) ** 2 for m in (0, 1))
    assert variance == EXACT["answer_unit_variance"]
    # Question 2: trained with the mask alone, E[z] = sum over masks of P(mask) * sum_j m_j w_j h_j
    keep, w, h = 1 - Fraction(35, 100), (2, -1, 3), (1, 4, 2)
    trained = sum(math.prod(keep if m else 1 - keep for m in ms)
                  * sum(m * wj * hj for m, wj, hj in zip(ms, w, h, strict=True))
                  for ms in _masks(3))
    assert sum(wj * hj for wj, hj in zip(w, h, strict=True)) / trained == EXACT["answer_factor"]
    # Question 3: E||y - (M * X) w / (1 - p)||^2 - ||y - X w||^2 over all 2^6 masks, for two y
    keep, X, w = 1 - Fraction(1, 4), ((1, 2), (0, 1), (3, -1)), (Fraction(1, 2), -2)
    for y in ((1, -2, Fraction(1, 2)), (0, 7, -3)):
        expected = Fraction(0)
        for ms in _masks(6):
            prob = math.prod(keep if m else 1 - keep for m in ms)
            pred = [sum(ms[2 * i + j] * X[i][j] * w[j] for j in range(2)) / keep
                    for i in range(3)]
            expected += prob * sum((y[i] - pred[i]) ** 2 for i in range(3))
        plain = sum((y[i] - sum(X[i][j] * w[j] for j in range(2))) ** 2 for i in range(3))
        assert expected - plain == EXACT["answer_penalty"]
    for name, value in QUESTION_VALUES.items():
        assert math.isclose(value, float(EXACT[name]), rel_tol=1e-12), name


def _question_cell(name: str) -> str:
    task = next(k for k, v in QUESTIONS.items() if v == name)
    return dict(ALL_TEST_CELLS)[f"test_{task}_answer"]


def _forms(exact: Fraction, device: str, dtype: torch.dtype) -> dict[str, Any]:
    """The right number written in different ways."""
    value = float(exact)
    return {
        "float": value, "Fraction": exact, "np.float64": np.float64(value),
        "np.float32": np.float32(value), "0-d ndarray": np.array(value),
        "expression": exact.numerator / exact.denominator,
        f"0-d tensor ({dtype})": torch.tensor(value, dtype=dtype, device=device),
        "tensor that requires grad": torch.tensor(value, dtype=dtype, device=device,
                                                  requires_grad=True),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(QUESTIONS.values()))
def test_right_numbers_in_any_form_get_full_marks(name: str, dtype: torch.dtype, device: str,
                                                  reference: dict[str, Any],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Every correct form of the answer passes its whole test cell (visible and hidden part),
    on every device and in float32 and float64."""
    for form, value in _forms(EXACT[name], device, dtype).items():
        run_cell_cleanly(_question_cell(name), with_answers(reference, **{name: value}), capsys)
        assert form


@pytest.mark.parametrize("value", [3, 3.0, Fraction(3), np.float64(3), np.int64(3),
                                   np.float32(3), torch.tensor(3.0), torch.tensor(3),
                                   torch.tensor(3.0, dtype=torch.float16), np.array(3),
                                   Fraction(9, 3), 6 / 2, 3 + 1e-9],
                         ids=repr)
def test_an_integer_answer_in_any_form_is_accepted(value: Any) -> None:
    """A reference value of 3, written as 3, 3.0, Fraction(3), a NumPy or 0-d torch number or an
    expression, is accepted; so is 0 for a reference of 0 (the absolute tolerance)."""
    checks.questions.check_real_number(value, "answer")
    checks.questions.check_close(value, 3, "answer")
    checks.questions.check_close(value * 0, 0.0, "answer")


WRONG_NUMBERS = {
    "answer_unit_variance": {"x^2 p (1 - p)": 1.5**2 * 0.3 * 0.7,
                             "x^2 p / (1 - p)^2": 1.5**2 * 0.3 / 0.7**2,
                             "E[y^2] instead of Var[y]": 1.5**2 / 0.7,
                             "x p / (1 - p)": 1.5 * 0.3 / 0.7, "rounded": 0.964},
    "answer_factor": {"1 - p": 0.65, "p": 0.35, "1 / p": 1 / 0.35, "rounded": 1.54,
                      "rounded to 4 digits": 1.538},
    "answer_penalty": {"p (1 - p)": 0.25 * 0.75 * 26.5, "p": 0.25 * 26.5,
                       "(1 - p) / p": 3 * 26.5, "w^T X^T X w": 1 / 3 * 44.25,
                       "rounded": 8.833},
}


@pytest.mark.parametrize(("name", "bug"), [(n, b) for n, bugs in WRONG_NUMBERS.items()
                                           for b in bugs])
def test_wrong_numbers_fail_the_hidden_test(name: str, bug: str, reference: dict[str, Any]
                                            ) -> None:
    """Each typical wrong derivation (and a value rounded too early) fails the question's cell,
    saying what to check, and the message never gives the reference value."""
    value = WRONG_NUMBERS[name][bug]
    assert not math.isclose(value, QUESTION_VALUES[name], rel_tol=1e-6)
    with pytest.raises(AssertionError, match="is not the expected value") as info:
        run_test_cell(_question_cell(name), with_answers(reference, **{name: value}))
    assert HINT in str(info.value)
    told = str(info.value).replace(repr(float(value)), "<the student's value>")
    for digits in (4, 6, 12):
        assert f"{QUESTION_VALUES[name]:.{digits}g}" not in told


NOT_NUMBERS = {
    "True": (True, "truth value"), "numpy bool": (np.bool_(True), "truth value"),
    "NaN": (math.nan, "not a finite number"), "inf": (-math.inf, "not a finite number"),
    "huge Fraction": (Fraction(10**400, 3), "not a finite number"),
    "NaN tensor": (torch.tensor(math.nan), "not a finite number"),
    "text": ("0.96", "text"), "None": (None, "not written yet"),
    "list": ([0.96], "not a real number"), "complex": (1 + 0j, "not a real number"),
    "1-element tensor": (torch.tensor([0.96]), ".item()"),
    "vector": (np.array([1.0, 2.0]), ".item()"), "bool tensor": (torch.tensor(True),
                                                                 "not a real number"),
    "function": (math.sqrt, "not a real number"),
}


@pytest.mark.parametrize("case", sorted(NOT_NUMBERS))
@pytest.mark.parametrize("name", sorted(QUESTIONS.values()))
def test_what_is_not_one_finite_number_fails_the_visible_test(
        name: str, case: str, reference: dict[str, Any]) -> None:
    """The visible part already refuses anything that is not one finite real number, saying
    what it is and what to write instead."""
    value, phrase = NOT_NUMBERS[case]
    released = HIDDEN_TESTS.sub("", _question_cell(name))
    for source in (released, _question_cell(name)):
        with pytest.raises(AssertionError) as info:
            run_test_cell(source, with_answers(reference, **{name: value}))
        assert phrase in str(info.value) and name in str(info.value)
        assert HINT in str(info.value)


def test_check_close_refuses_a_bad_reference() -> None:
    """An instructor's mistake (a NaN reference) is an error, never a pass."""
    with pytest.raises(TypeError):
        checks.questions.check_close(1.0, math.nan, "answer")
