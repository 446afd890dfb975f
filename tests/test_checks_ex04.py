"""The Exercise 4 checks (misconceptions in practice), run through the notebook's real test cells.

Needs only Python, torch, numpy and pytest (the notebook is read as JSON; the experiment cells,
which need scikit-learn, are not run here), so it also runs on a GPU machine:

    COURSE_DEVICES=cpu,cuda python -m pytest -p no:cacheprovider tests/test_checks_ex04.py

* The reference solution, the demo students' answers and *different* correct implementations
  pass every test cell of their task.
* Each wrong implementation below, one typical mistake each, fails at least one test cell of its
  task on every device, with a message that says what to check.
* Exercise 4's checks are exact (no check of a random quantity), so there is nothing to
  calibrate over seeds; the one random event (two dropout passes that happen to agree) has a
  stated probability below 1e-28.
"""

from __future__ import annotations

import math
import numbers
import statistics
from functools import partial
from typing import Any

import notebook_code
import numpy as np
import pytest
import torch
from dropout_course.checks import ex04
from dropout_course.layers import GaussianDropout as CourseDropout
from notebook_code import (
    CUDA_ONLY,
    HINT,
    answer_id,
    answers_namespace,
    cell_failures,
    expect_some_cell_fails,
    load_solution_namespace,
    not_written,
    run_cell_cleanly,
    run_test_cell,
    task_answers,
    test_cells,
)
from scipy import stats as scipy_stats

from autograder.demo.ex04_misconceptions import FAILED_CELLS, STUDENTS
from autograder.engine import answers

ASSIGNMENT = "ex04_misconceptions"
#: task key in the test cells' grade ids (test_<task>_...) -> the name that task defines
TASKS = {
    "counts": "count_parameters_by_rate",
    "scale": "inference_scale",
    "evaluate": "evaluate_accuracy",
    "enable": "enable_mc_dropout",
    "verdict": "paired_verdict",
}
ALL_TEST_CELLS = test_cells(ASSIGNMENT)
CELL_IDS = [grade_id for grade_id, _ in ALL_TEST_CELLS]
task_of = partial(notebook_code.task_of, tasks=TASKS)
cells_of_task = partial(notebook_code.cells_of_task, cells=ALL_TEST_CELLS, tasks=TASKS)
FAMILY = (torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d,
          torch.nn.AlphaDropout, torch.nn.FeatureAlphaDropout, CourseDropout)


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """Namespace of the setup cell plus the reference solutions."""
    return load_solution_namespace(ASSIGNMENT)


# --------------------------------------------------------------------------- the notebook


def test_notebook_has_the_expected_test_cells() -> None:
    """Each task has one visible cell first, then a hidden one; 15 automatic points."""
    visible = [gid for gid, _ in test_cells(ASSIGNMENT, hidden=False)]
    assert visible == [f"test_{task}_visible" for task in TASKS]
    hidden = [gid for gid, _ in test_cells(ASSIGNMENT, hidden=True)]
    assert [task_of(gid) for gid in hidden] == list(TASKS)


def test_reference_namespace_holds_the_answers(reference: dict[str, Any]) -> None:
    for name in TASKS.values():
        assert callable(reference[name]), name
    assert reference["checks"].ex04 is ex04


@pytest.mark.parametrize("grade_id", CELL_IDS)
def test_reference_solution_passes_the_test_cell(
    grade_id: str, reference: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    run_cell_cleanly(dict(ALL_TEST_CELLS)[grade_id], reference, capsys)


@pytest.mark.parametrize("grade_id", CELL_IDS)
def test_stub_fails_every_test_cell(grade_id: str, reference: dict[str, Any]) -> None:
    """With the task left as the stub, each of its test cells fails and says so."""
    with pytest.raises(AssertionError, match="not written yet") as info:
        run_test_cell(dict(ALL_TEST_CELLS)[grade_id],
                      {**reference, TASKS[task_of(grade_id)]: not_written})
    assert HINT in str(info.value)


@pytest.mark.parametrize("student", sorted(STUDENTS))
def test_demo_students_fail_exactly_the_expected_cells(student: str, device: str) -> None:
    namespace = answers_namespace(ASSIGNMENT, STUDENTS[student], student)
    failures = cell_failures(ALL_TEST_CELLS, namespace)
    assert set(failures) == FAILED_CELLS[student]
    assert all(HINT in str(err) for err in failures.values())


def test_a_malformed_test_case_is_reported(reference: dict[str, Any]) -> None:
    """A test case must state (mean_diff, std_err, verdict); anything else is reported as the
    test's fault, not graded."""
    for expected in ("helps", (0.395, 0.005), (0.395, 0.005, "better"), (0.395, "0.005", "helps"),
                     (True, 0.005, "helps")):
        with pytest.raises(AssertionError, match="malformed"):
            ex04.check_paired_verdict(reference["paired_verdict"], [0.9, 0.91], [0.5, 0.52], 0.05,
                                      expected)


def test_a_stated_case_that_contradicts_its_numbers_fails_the_reference(
        reference: dict[str, Any]) -> None:
    """The public check no longer works out the verdict itself; a test case whose stated numbers
    or verdict are wrong fails the reference solution instead (so
    test_reference_solution_passes_the_test_cell proves every stated case right)."""
    good = answers.paired_verdict([0.9, 0.91], [0.5, 0.52], 0.05)
    assert good[2] == "helps"
    ex04.check_paired_verdict(reference["paired_verdict"], [0.9, 0.91], [0.5, 0.52], 0.05, good)
    for wrong in ((*good[:2], "hurts"), (good[0] + 1e-3, *good[1:]),
                  (good[0], 2 * good[1], "helps")):
        with pytest.raises(AssertionError, match=HINT):
            ex04.check_paired_verdict(reference["paired_verdict"], [0.9, 0.91], [0.5, 0.52], 0.05,
                                      wrong)


# --------------------------------------------------------------------------- helpers


def _rates(rates: Any) -> list[float]:
    rates = list(rates)
    if not rates or len(set(rates)) != len(rates):
        raise ValueError("need distinct rates")
    for rate in rates:
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
            raise TypeError("rate is not a number")
        if not 0.0 <= rate < 1.0:
            raise ValueError("rate not in [0, 1)")
    return rates


def _module(model: Any) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise TypeError("not a module")
    return model


def _counts(build_model, rates, count, *, once=False, validate=True):
    rates = _rates(rates) if validate else list(rates)
    models = [_module(build_model(rates[0]))] * len(rates) if once else \
        [_module(build_model(r)) for r in rates]
    return {float(r): count(m, r) for r, m in zip(rates, models, strict=True)}


def _trainable(model: torch.nn.Module, _rate: float = 0.0) -> int:
    return sum(t.numel() for t in model.parameters() if t.requires_grad)


def _batches(x: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return [x[i:i + batch_size] for i in range(0, len(x), batch_size)]


def _check_eval_args(x: torch.Tensor, y: torch.Tensor, batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError("bad batch_size")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError("bad x, y")


def _evaluate(model, x, y, batch_size=256, *, set_mode="eval", restore="finally", grad=False,
              batched=True, reduce=None, device_out=None, dim=1, validate=True):
    if validate:
        _check_eval_args(x, y, batch_size)
    modes = {m: m.training for m in model.modules()}
    was_training = model.training

    def put_back() -> None:
        if restore in ("finally", "no_finally"):
            for m, flag in modes.items():
                m.training = flag
        elif restore == "train":
            model.train()
        elif restore == "model_flag":
            model.train(was_training)

    def predict() -> torch.Tensor:
        if set_mode == "eval":
            model.eval()
        parts = _batches(x, batch_size) if batched else [x]
        with torch.set_grad_enabled(grad):
            return torch.cat([model(b).argmax(dim=dim) for b in parts])

    if restore == "finally":
        try:
            predictions = predict()
        finally:
            put_back()
    elif restore == "swallow":
        try:
            predictions = predict()
        except Exception:
            predictions = torch.zeros(len(x), dtype=torch.long, device=x.device)
        put_back()
    else:
        predictions = predict()
        put_back()
    if device_out is not None:
        predictions = predictions.to(device_out)
    accuracy = (predictions.to(y.device) == y).double().mean()
    return (reduce or (lambda a: a.item()))(accuracy), predictions


def _enable(model, *, kinds=FAMILY, exact=False, how="eval_then", check_none=True,
            names_out="names"):
    _module(model)
    found = [(n, m) for n, m in model.named_modules()
             if (type(m) in kinds if exact else isinstance(m, kinds))]
    if check_none == "after":
        model.eval()
    if not found and check_none:
        raise ValueError("no dropout layer")
    if how == "eval_then":
        model.eval()
    elif how == "train":
        model.train()
    for _, m in found:
        m.train()
    return [m for _, m in found] if names_out == "modules" else [n for n, _ in found]


def _verdict(a, b, alpha=0.05, *, se="paired", ddof=1, abs_only=False, fixed_alpha=None,
             validate=True, mutate=False, critical="t"):
    if mutate:
        a.sort()
        b.sort()
    a, b = [float(v) for v in a], [float(v) for v in b]
    if validate and (len(a) != len(b) or len(a) < 2 or not all(map(math.isfinite, a + b))
                     or not (isinstance(alpha, numbers.Real) and 0 < alpha < 1)):
        raise ValueError("bad input")
    alpha = fixed_alpha or alpha
    d = np.array(a) - np.array(b)
    n = len(d)
    mean = float(d.mean())
    if se == "paired":
        err = float(d.std(ddof=ddof) / math.sqrt(n))
    elif se == "sd":
        err = float(d.std(ddof=1))
    else:  # unpaired: two independent samples
        err = float(math.sqrt(np.var(a, ddof=1) / n + np.var(b, ddof=1) / n))
    z = {"t": lambda: scipy_stats.t.ppf(1 - alpha / 2, n - 1),
         "normal": lambda: scipy_stats.norm.ppf(1 - alpha / 2),
         "two": lambda: 2.0,
         "one-sided": lambda: scipy_stats.t.ppf(1 - alpha, n - 1),
         "df=n": lambda: scipy_stats.t.ppf(1 - alpha / 2, n)}[critical]()
    if abs_only:
        return mean, err, "helps" if abs(mean) > z * err else "inconclusive"
    return mean, err, "helps" if mean > z * err else "hurts" if mean < -z * err else \
        "inconclusive"


# --------------------------------------------------------------------------- correct answers


def counts_set_of_parameters(build_model, rates):
    """Deduplicates shared parameters with a set of tensors."""
    return _counts(build_model, rates,
                   lambda m, _r: sum(t.numel() for t in set(m.parameters()) if t.requires_grad))


def counts_by_data_ptr(build_model, rates):
    """Deduplicates by storage address, over named_parameters(remove_duplicate=False)."""
    def count(model: torch.nn.Module, _rate: float) -> int:
        seen = {t.data_ptr(): t.numel() for _, t in model.named_parameters(remove_duplicate=False)
                if t.requires_grad}
        return int(sum(seen.values()))
    return _counts(build_model, rates, count)


def scale_keep_probability(p, inverted):
    if not isinstance(inverted, bool):
        raise TypeError("inverted must be a bool")
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError("p must be a number")
    if math.isnan(p) or p < 0 or p >= 1:
        raise ValueError("p not in [0, 1)")
    keep = 1 - p
    return float(keep / keep if inverted else keep)


def evaluate_by_name(model, x, y, batch_size=256):
    """Modes restored by module name; torch.inference_mode."""
    _check_eval_args(x, y, batch_size)
    saved = {name: m.training for name, m in model.named_modules()}
    model.eval()
    try:
        with torch.inference_mode():
            predictions = torch.cat([model(b).argmax(1) for b in torch.split(x, batch_size)])
    finally:
        for name, m in model.named_modules():
            m.train(saved[name])  # train(flag) also recurses, but every child is set in turn
    return float((predictions == y).sum()) / len(y), predictions


def evaluate_reference_loop(model, x, y, batch_size=256):
    return _evaluate(model, x, y, batch_size)


def enable_by_base_class(model):
    return _enable(model, kinds=(torch.nn.modules.dropout._DropoutNd, CourseDropout))


def enable_by_setting_flags(model):
    _module(model)
    names = [n for n, m in model.named_modules() if isinstance(m, FAMILY)]
    if not names:
        raise ValueError("no dropout")
    for name, m in model.named_modules():
        m.training = name in names
    return names


def _verdict_args(with_dropout, without_dropout, alpha):
    a, b = list(with_dropout), list(without_dropout)
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("bad lengths")
    d = [float(u) - float(v) for u, v in zip(a, b, strict=True)]
    if not all(map(math.isfinite, d)) or isinstance(alpha, bool) or not 0 < alpha < 1:
        raise ValueError("bad values")
    return d


def verdict_statistics(with_dropout, without_dropout, alpha=0.05):
    """statistics.fmean/stdev and the critical value from scipy.stats.t.ppf."""
    d = _verdict_args(with_dropout, without_dropout, alpha)
    mean, err = statistics.fmean(d), statistics.stdev(d) / math.sqrt(len(d))
    bar = scipy_stats.t.ppf(1 - alpha / 2, len(d) - 1) * err
    return mean, err, "helps" if mean > bar else "hurts" if mean < -bar else "inconclusive"


def verdict_numpy(with_dropout, without_dropout, alpha=0.05):
    return _verdict(list(with_dropout), list(without_dropout), alpha)


def verdict_p_value(with_dropout, without_dropout, alpha=0.05):
    """scipy.stats.ttest_rel's two-sided p-value against alpha; zero spread by hand."""
    d = _verdict_args(with_dropout, without_dropout, alpha)
    mean, err = float(np.mean(d)), float(np.std(d, ddof=1) / math.sqrt(len(d)))
    if err == 0.0:
        return mean, err, "helps" if mean > 0 else "hurts" if mean < 0 else "inconclusive"
    p = scipy_stats.ttest_rel(np.asarray(with_dropout, float), np.asarray(without_dropout, float))
    if p.pvalue >= alpha:
        return mean, err, "inconclusive"
    return mean, err, "helps" if mean > 0 else "hurts"


def verdict_interval(with_dropout, without_dropout, alpha=0.05):
    """The (1 - alpha) t confidence interval of the mean difference must exclude 0."""
    d = _verdict_args(with_dropout, without_dropout, alpha)
    n = len(d)
    mean = sum(d) / n
    err = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1)) / math.sqrt(n)
    half = scipy_stats.t.interval(1 - alpha, n - 1)[1] * err
    low, high = mean - half, mean + half
    return mean, err, "helps" if low > 0 else "hurts" if high < 0 else "inconclusive"


CORRECT = {
    "counts": [counts_set_of_parameters, counts_by_data_ptr],
    "scale": [scale_keep_probability],
    "evaluate": [evaluate_by_name, evaluate_reference_loop],
    "enable": [enable_by_base_class, enable_by_setting_flags],
    "verdict": [verdict_statistics, verdict_numpy, verdict_p_value, verdict_interval],
}


@pytest.mark.parametrize(("task", "answer"), task_answers(CORRECT),
                         ids=answer_id)
def test_other_correct_answers_pass(task: str, answer: Any, reference: dict[str, Any],
                                    device: str) -> None:
    failures = cell_failures(cells_of_task(task), {**reference, TASKS[task]: answer})
    assert failures == {}


# --------------------------------------------------------------------------- wrong answers


def counts_frozen_too(build_model, rates):
    return _counts(build_model, rates, lambda m, _r: sum(t.numel() for t in m.parameters()))


def counts_buffers_too(build_model, rates):
    return _counts(build_model, rates,
                   lambda m, _r: _trainable(m) + sum(b.numel() for b in m.buffers()))


def counts_shared_twice(build_model, rates):
    return _counts(build_model, rates, lambda m, _r: sum(
        t.numel() for _, t in m.named_parameters(remove_duplicate=False) if t.requires_grad))


def counts_scaled_by_keep(build_model, rates):
    """The misconception itself: dropout removes a fraction p of the parameters."""
    return _counts(build_model, rates, lambda m, r: round(_trainable(m) * (1 - r)))


def counts_one_model(build_model, rates):
    return _counts(build_model, rates, _trainable, once=True)


def counts_tensors(build_model, rates):
    return _counts(build_model, rates, lambda m, _r: len(list(m.parameters())))


def counts_as_float(build_model, rates):
    return _counts(build_model, rates, lambda m, _r: float(_trainable(m)))


def counts_in_eval_mode(build_model, rates):
    return _counts(build_model, rates, lambda m, _r: _trainable(m.eval()))


def counts_no_validation(build_model, rates):
    return _counts(build_model, rates, _trainable, validate=False)


def scale_by_p(p, inverted):
    return 1.0 if inverted else scale_keep_probability(p, False) * 0 + float(p)


def scale_keep_for_both(p, inverted):
    return scale_keep_probability(p, False) if isinstance(inverted, bool) else 1 / 0


def scale_reciprocal(p, inverted):
    return 1.0 / scale_keep_probability(p, False) if inverted else scale_keep_probability(p, False)


def scale_no_validation(p, inverted):
    return 1.0 if inverted else 1.0 - p


def scale_tensor(p, inverted):
    return torch.tensor(scale_keep_probability(p, inverted))


def scale_truthy_inverted(p, inverted):
    return scale_keep_probability(p, bool(inverted))


def evaluate_colleague(model, x, y, batch_size=256):
    """The notebook's buggy loop: no eval(), no no_grad()."""
    return _evaluate(model, x, y, batch_size, set_mode="keep", restore="none", grad=True)


def evaluate_not_restored(model, x, y, batch_size=256):
    return _evaluate(model, x, y, batch_size, restore="none")


def evaluate_restores_train(model, x, y, batch_size=256):
    return _evaluate(model, x, y, batch_size, restore="train")


def evaluate_restores_model_flag(model, x, y, batch_size=256):
    return _evaluate(model, x, y, batch_size, restore="model_flag")


def evaluate_with_grad(model, x, y, batch_size=256):
    return _evaluate(model, x, y, batch_size, grad=True)


def evaluate_one_batch(model, x, y, batch_size=256):
    return _evaluate(model, x, y, batch_size, batched=False)


def evaluate_restore_without_finally(model, x, y, batch_size=256):
    return _evaluate(model, x, y, batch_size, restore="no_finally")


def evaluate_swallows_errors(model, x, y, batch_size=256):
    return _evaluate(model, x, y, batch_size, restore="swallow")


def evaluate_percent(model, x, y, batch_size=256):
    return _evaluate(model, x, y, batch_size, reduce=lambda a: 100.0 * a.item())


def evaluate_accuracy_tensor(model, x, y, batch_size=256):
    return _evaluate(model, x, y, batch_size, reduce=lambda a: a)


def evaluate_argmax_dim0(model, x, y, batch_size=256):
    return _evaluate(model, x, y, batch_size, dim=0)


def evaluate_no_validation(model, x, y, batch_size=256):
    return _evaluate(model, x, y, batch_size, validate=False)


def evaluate_predictions_on_cpu(model, x, y, batch_size=256):
    return _evaluate(model, x, y, batch_size, device_out="cpu")


def enable_model_train(model):
    return _enable(model, how="train")


def enable_only_nn_dropout(model):
    return _enable(model, kinds=(torch.nn.Dropout,))


def enable_exact_types(model):
    return _enable(model, exact=True)


def enable_without_eval(model):
    return _enable(model, how="none")


def enable_no_error(model):
    return _enable(model, check_none=False)


def enable_error_after_eval(model):
    return _enable(model, check_none="after")


def enable_returns_modules(model):
    return _enable(model, names_out="modules")


def enable_without_type_check(model):
    if isinstance(model, str):
        return []
    return _enable(model)


def verdict_population_sd(a, b, alpha=0.05):
    return _verdict(a, b, alpha, ddof=0)


def verdict_sd_not_se(a, b, alpha=0.05):
    return _verdict(a, b, alpha, se="sd")


def verdict_unpaired(a, b, alpha=0.05):
    return _verdict(a, b, alpha, se="unpaired")


def verdict_never_hurts(a, b, alpha=0.05):
    return _verdict(a, b, alpha, abs_only=True)


def verdict_ignores_alpha(a, b, alpha=0.05):
    return _verdict(a, b, alpha, fixed_alpha=0.05)


def verdict_two_standard_errors(a, b, alpha=0.05):
    """The old exercise's rule: 2 standard errors whatever the number of seeds."""
    return _verdict(a, b, alpha, critical="two")


def verdict_normal(a, b, alpha=0.05):
    """The normal quantile (1.96 at alpha = 0.05) in place of Student's t."""
    return _verdict(a, b, alpha, critical="normal")


def verdict_one_sided(a, b, alpha=0.05):
    return _verdict(a, b, alpha, critical="one-sided")


def verdict_n_degrees_of_freedom(a, b, alpha=0.05):
    return _verdict(a, b, alpha, critical="df=n")


def verdict_no_validation(a, b, alpha=0.05):
    ok = isinstance(alpha, numbers.Real) and 0 < alpha < 1
    return _verdict(list(a), list(b), alpha if ok else 0.05, validate=False) \
        if len(a) == len(b) and len(a) >= 2 else (0.0, 0.0, "inconclusive")


def verdict_sorts_inputs(a, b, alpha=0.05):
    """Sorts the caller's lists in place: breaks the pairing and modifies the inputs."""
    return _verdict(a, b, alpha, mutate=isinstance(a, list) and isinstance(b, list))


WRONG = {
    "counts": [counts_frozen_too, counts_buffers_too, counts_shared_twice, counts_scaled_by_keep,
               counts_one_model, counts_tensors, counts_as_float, counts_in_eval_mode,
               counts_no_validation],
    "scale": [scale_by_p, scale_keep_for_both, scale_reciprocal, scale_no_validation,
              scale_tensor, scale_truthy_inverted],
    "evaluate": [evaluate_colleague, evaluate_not_restored, evaluate_restores_train,
                 evaluate_restores_model_flag, evaluate_with_grad, evaluate_one_batch,
                 evaluate_restore_without_finally, evaluate_swallows_errors, evaluate_percent,
                 evaluate_accuracy_tensor, evaluate_argmax_dim0, evaluate_no_validation],
    "enable": [enable_model_train, enable_only_nn_dropout, enable_exact_types,
               enable_without_eval, enable_no_error, enable_error_after_eval,
               enable_returns_modules, enable_without_type_check],
    "verdict": [verdict_population_sd, verdict_sd_not_se, verdict_unpaired, verdict_never_hurts,
                verdict_ignores_alpha, verdict_two_standard_errors, verdict_normal,
                verdict_one_sided, verdict_n_degrees_of_freedom, verdict_no_validation,
                verdict_sorts_inputs],
}
#: Wrong only where a GPU is: on a CPU-only machine these are correct answers.
WRONG_CUDA = {"evaluate": [evaluate_predictions_on_cpu]}


@pytest.mark.parametrize(("task", "answer"), task_answers(WRONG),
                         ids=answer_id)
def test_wrong_answer_fails(task: str, answer: Any, reference: dict[str, Any],
                            device: str) -> None:
    expect_some_cell_fails(cells_of_task(task), {**reference, TASKS[task]: answer})


@pytest.mark.parametrize(("task", "answer"), task_answers(WRONG_CUDA),
                         ids=answer_id)
def test_wrong_answer_fails_on_cuda(task: str, answer: Any, reference: dict[str, Any],
                                    device: str) -> None:
    if device != "cuda":
        pytest.skip(CUDA_ONLY)
    expect_some_cell_fails(cells_of_task(task), {**reference, TASKS[task]: answer})


def test_the_visible_cells_catch_the_misconceptions(reference: dict[str, Any]) -> None:
    """The chapter's misconceptions fail the *visible* test, so students see them at once."""
    for task, wrong in (("counts", counts_scaled_by_keep), ("scale", scale_by_p),
                        ("evaluate", evaluate_colleague), ("enable", enable_model_train),
                        ("verdict", verdict_unpaired), ("verdict", verdict_two_standard_errors),
                        ("verdict", verdict_normal)):
        visible = [(gid, src) for gid, src in cells_of_task(task) if gid.endswith("_visible")]
        assert cell_failures(visible, {**reference, TASKS[task]: wrong}), wrong.__name__


def test_wrong_answers_fail_with_clear_messages(reference: dict[str, Any]) -> None:
    """Spot-check that the failure names the bug."""
    cases = {
        ("counts", counts_scaled_by_keep): "Dropout has no parameters",
        ("counts", counts_one_model): "one call per rate",
        ("scale", scale_by_p): "DROP probability",
        ("scale", scale_reciprocal): "already divided",
        ("evaluate", evaluate_colleague): "BatchNorm's running statistics",
        ("evaluate", evaluate_restores_model_flag): "train/eval mode of",
        ("evaluate", evaluate_one_batch): "batches of",
        ("evaluate", evaluate_with_grad): "autograd",
        ("enable", enable_model_train): "were in training mode, which only dropout layers may be",
        ("enable", enable_exact_types): "subclass",
        ("enable", enable_error_after_eval): "raise before changing any mode",
        ("verdict", verdict_population_sd): "population standard deviation",
        ("verdict", verdict_sd_not_se): "not divided by sqrt(n)",
        ("verdict", verdict_sorts_inputs): "modified its inputs",
        ("verdict", verdict_two_standard_errors): "normal-distribution critical value",
        ("verdict", verdict_normal): "normal-distribution critical value",
    }
    for (task, wrong), phrase in cases.items():
        failures = cell_failures(cells_of_task(task), {**reference, TASKS[task]: wrong})
        assert any(phrase in str(err) for err in failures.values()), (wrong.__name__, failures)
