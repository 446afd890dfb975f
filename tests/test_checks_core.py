"""Unit tests of the checks library's generic parts: core.py (how a check judges and reports)
and stats.py (where the tolerance of every random check comes from)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from dropout_course.checks import core, devices
from dropout_course.checks.stats import (
    DEFAULT_FALSE_FAILURE,
    binomial_count_bounds,
    same_subset_probability,
    two_sided_z,
)
from scipy import stats as scipy_stats

HINT = "What to check"


# --------------------------------------------------------------------------- helpers


class AlwaysEqualInt(int):
    """An int whose == is always True: a lying return value a check must not accept."""

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = int.__hash__


def returns_three() -> int:
    return 3


def raises_value_error(*args: Any, **kwargs: Any) -> None:
    raise ValueError("bad value")


def raises_key_error(*args: Any, **kwargs: Any) -> None:
    raise KeyError("missing")


def not_written(*args: Any, **kwargs: Any) -> None:
    raise NotImplementedError()


def warns_then_returns(x: int) -> int:
    warnings.warn("this helper is experimental", UserWarning, stacklevel=2)
    return x + 1


def failure_message(action: Callable[[], Any]) -> str:
    """Run ``action``, which must fail with an AssertionError; return the message."""
    with pytest.raises(AssertionError) as info:
        action()
    return str(info.value)


# --------------------------------------------------------------------------- expect


@pytest.mark.parametrize("not_a_bool", [1, 0, "yes", None, [True], np.bool_(True)])
def test_expect_refuses_a_non_bool(not_a_bool: Any) -> None:
    """expect() raises TypeError for anything that is not a real bool, even truthy values and
    NumPy's bool_, so a check cannot pass on a value that merely pretends to be true."""
    with pytest.raises(TypeError, match="needs a bool"):
        core.expect(not_a_bool, "what", "hint")


def test_expect_passes_on_true_and_fails_on_false() -> None:
    """expect(True) is silent; expect(False) raises AssertionError with what and hint."""
    core.expect(True, "what", "hint")
    message = failure_message(lambda: core.expect(False, "it is wrong", "look here"))
    assert message == "it is wrong\n  What to check: look here"


# --------------------------------------------------------------------------- expect_equal


def test_expect_equal_accepts_same_value_and_type() -> None:
    """Equal values of the same plain type pass."""
    core.expect_equal(3, 3, "count", "hint")
    core.expect_equal((1, 2), (1, 2), "pair", "hint")
    core.expect_equal(0.5, 0.5, "gap", "hint")


def test_expect_equal_rejects_an_int_that_always_compares_equal() -> None:
    """An int subclass whose __eq__ always says True does not pass: the type must be exact."""
    liar = AlwaysEqualInt(5)
    assert liar == 3  # the lie the check must see through
    message = failure_message(lambda: core.expect_equal(liar, 3, "count", "return an int"))
    assert "AlwaysEqualInt" in message


def test_expect_equal_rejects_float_for_int() -> None:
    """1.0 is not accepted where 1 is expected (1.0 == 1 in Python), and the type is named."""
    message = failure_message(lambda: core.expect_equal(1.0, 1, "count", "return an int"))
    assert "expected 1, got 1.0" in message
    assert "(a float)" in message


def test_expect_equal_rejects_a_different_value() -> None:
    """Same type but a different value fails and shows both values."""
    message = failure_message(lambda: core.expect_equal(4, 3, "count", "hint"))
    assert "expected 3, got 4" in message


# --------------------------------------------------------------------------- expect_raises


def test_expect_raises_returns_the_exception_raised() -> None:
    """When the right exception is raised, expect_raises returns that exception object."""
    err = core.expect_raises(raises_value_error, (1,), ValueError, "a bad value")
    assert isinstance(err, ValueError)
    assert str(err) == "bad value"


def test_expect_raises_accepts_any_of_a_tuple() -> None:
    """A tuple of exception types accepts any one of them."""
    err = core.expect_raises(raises_key_error, (), (ValueError, KeyError), "a missing key")
    assert isinstance(err, KeyError)


def test_expect_raises_fails_when_nothing_is_raised() -> None:
    """A call that returns fails and the message shows the call, the expected error and the
    returned value."""
    message = failure_message(
        lambda: core.expect_raises(returns_three, (), ValueError, "an impossible input")
    )
    assert "returns_three() should raise ValueError (an impossible input)" in message
    assert "returned 3" in message


def test_expect_raises_fails_on_the_wrong_exception_type() -> None:
    """Raising KeyError where ValueError is expected fails, names both types, and keeps the
    original exception as the cause."""
    with pytest.raises(AssertionError) as info:
        core.expect_raises(raises_key_error, (7,), ValueError, "a bad value")
    message = str(info.value)
    assert "should raise ValueError" in message
    assert "raised KeyError" in message
    assert isinstance(info.value.__cause__, KeyError)


def test_expect_raises_reports_an_unwritten_function() -> None:
    """NotImplementedError (the stub) is reported as 'not written yet', not as a wrong type."""
    message = failure_message(lambda: core.expect_raises(not_written, (), ValueError, "why"))
    assert "NotImplementedError" in message
    assert "not written yet" in message


# --------------------------------------------------------------------------- run_student


def test_run_student_returns_the_result() -> None:
    """A working call returns its value unchanged."""
    assert core.run_student(warns_then_returns, 1) == 2


def test_run_student_turns_not_implemented_into_assertion() -> None:
    """The stub's NotImplementedError becomes an AssertionError that says so."""
    message = failure_message(lambda: core.run_student(not_written, 1, p=0.5))
    assert "not_written(1, p=0.5) raised NotImplementedError" in message


def test_run_student_turns_other_errors_into_assertion_naming_the_call() -> None:
    """Any other exception becomes an AssertionError naming the call as typed, the error and
    the hint; the original exception is kept as the cause."""
    with pytest.raises(AssertionError) as info:
        core.run_student(raises_value_error, 3, p=0.5, hint="check p")
    message = str(info.value)
    assert "raises_value_error(3, p=0.5) raised ValueError: bad value" in message
    assert "What to check: check p" in message
    assert isinstance(info.value.__cause__, ValueError)


def test_describe_call_cuts_long_arguments() -> None:
    """A long argument is shortened so a failure message stays readable."""
    text = core.describe_call(returns_three, (list(range(1000)),))
    assert text.startswith("returns_three([0, 1, 2")
    assert len(text) < 120


# --------------------------------------------------------------------------- call_quietly


def test_call_quietly_moves_warnings_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    """A warning raised inside the function is printed to stdout (nbgrader would count stderr
    output as a failure) and nothing at all reaches stderr."""
    assert core.call_quietly(warns_then_returns, (1,)) == 2
    out, err = capsys.readouterr()
    assert "warns_then_returns(1) warned: UserWarning: this helper is experimental" in out
    assert err == ""


def test_call_quietly_prints_warnings_even_when_the_call_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Warnings are still reported when the function then raises; the error propagates."""

    def warn_then_fail() -> None:
        warnings.warn("about to fail", RuntimeWarning, stacklevel=2)
        raise ValueError("failed")

    with pytest.raises(ValueError, match="failed"):
        core.call_quietly(warn_then_fail)
    out, err = capsys.readouterr()
    assert "RuntimeWarning: about to fail" in out
    assert err == ""


def test_call_quietly_restores_the_warning_filters() -> None:
    """The caller's warning filters are the same after the call."""
    before = list(warnings.filters)
    core.call_quietly(warns_then_returns, (1,))
    assert warnings.filters == before


# --------------------------------------------------------------------------- messages


FAILURES: dict[str, Callable[[], Any]] = {
    "fail": lambda: core.fail("what", "hint"),
    "expect": lambda: core.expect(False, "what", "hint"),
    "expect_equal value": lambda: core.expect_equal(2, 1, "what", "hint"),
    "expect_equal type": lambda: core.expect_equal(1.0, 1, "what", "hint"),
    "expect_raises nothing": lambda: core.expect_raises(returns_three, (), ValueError, "why"),
    "expect_raises wrong": lambda: core.expect_raises(raises_key_error, (), ValueError, "why"),
    "expect_raises stub": lambda: core.expect_raises(not_written, (), ValueError, "why"),
    "run_student stub": lambda: core.run_student(not_written),
    "run_student error": lambda: core.run_student(raises_value_error),
}


@pytest.mark.parametrize("name", sorted(FAILURES))
def test_every_failure_says_what_to_check(name: str) -> None:
    """Every way core.py can fail produces an AssertionError whose message has a
    'What to check' part, as the course promises students."""
    assert HINT in failure_message(FAILURES[name])


def test_passed_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """passed() prints the friendly success line and returns None (no value for nbgrader)."""
    assert core.passed("all good") is None
    assert capsys.readouterr().out == "Passed: all good\n"


# --------------------------------------------------------------------------- stats


def test_two_sided_z_of_the_default_budget() -> None:
    """two_sided_z(1e-6) is about 4.89, and matches the normal tail exactly."""
    z = two_sided_z(1e-6)
    assert z == pytest.approx(4.89, abs=0.005)
    assert 2 * scipy_stats.norm.sf(z) == pytest.approx(1e-6, rel=1e-9)
    assert two_sided_z() == z


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 2.0])
def test_two_sided_z_rejects_a_budget_outside_0_1(bad: float) -> None:
    """A false-failure probability must lie strictly between 0 and 1."""
    with pytest.raises(ValueError):
        two_sided_z(bad)


BINOMIAL_CASES = [
    (1, 0.5),
    (3, 0.3),
    (5, 0.01),
    (10, 0.5),
    (20, 0.99),
    (50, 0.001),
    (100, 0.2),
    (1797, 0.25),
    (100_000, 0.5),
    (100_000, 1e-4),
    (100_000, 0.9999),
]


@pytest.mark.parametrize(("n", "p"), BINOMIAL_CASES)
@pytest.mark.parametrize("false_failure", [DEFAULT_FALSE_FAILURE, 1e-3])
def test_binomial_count_bounds_match_scipy(n: int, p: float, false_failure: float) -> None:
    """Against scipy's exact binomial: each tail outside [lo, hi] has probability <= ff/2
    (so the bound is safe), and moving lo up or hi down by one would break that (so the
    bound is the tightest). A 1e-9 relative slack covers rounding in either library."""
    lo, hi = binomial_count_bounds(n, p, false_failure)
    half = false_failure / 2
    dist = scipy_stats.binom(n, p)
    assert 0 <= lo <= hi <= n
    assert dist.cdf(lo - 1) <= half * (1 + 1e-9), "P(X < lo) is above ff/2"
    assert dist.sf(hi) <= half * (1 + 1e-9), "P(X > hi) is above ff/2"
    assert dist.cdf(lo) > half * (1 - 1e-9), "lo could be one higher"
    assert dist.sf(hi - 1) > half * (1 - 1e-9), "hi could be one lower"


@pytest.mark.parametrize(("p", "expected"), [(0.0, (0, 0)), (1.0, (7, 7))])
def test_binomial_count_bounds_certain_outcomes(p: float, expected: tuple[int, int]) -> None:
    """With p = 0 or 1 the count is certain: the interval is a single point."""
    assert binomial_count_bounds(7, p) == expected


@pytest.mark.parametrize(("n", "p"), [(-1, 0.5), (10, -0.1), (10, 1.5), (10, math.nan)])
def test_binomial_count_bounds_rejects_invalid_arguments(n: int, p: float) -> None:
    """A negative n, or p outside [0, 1] (NaN included), raises ValueError."""
    with pytest.raises(ValueError):
        binomial_count_bounds(n, p)


@pytest.mark.parametrize(("n", "k"), [(2, 1), (4, 1), (10, 3), (20, 10), (100, 20)])
def test_same_subset_probability_is_one_over_comb(n: int, k: int) -> None:
    """The chance that two random k-subsets agree is exactly 1 / C(n, k)."""
    assert same_subset_probability(n, k) == float(Fraction(1, math.comb(n, k)))
    assert same_subset_probability(n, k) == pytest.approx(1 / math.comb(n, k), rel=1e-15)


def test_same_subset_probability_does_not_overflow() -> None:
    """For n=1797, k=449 (C(n, k) has hundreds of digits, far beyond a float) the result is a
    float in [0, 1e-300] instead of an OverflowError."""
    assert math.comb(1797, 449) > 10**400
    value = same_subset_probability(1797, 449)
    assert isinstance(value, float)
    assert 0.0 <= value < 1e-300


# --------------------------------------------------------------------------- devices


def test_available_devices_always_include_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without COURSE_DEVICES the CPU comes first; COURSE_DEVICES=cpu narrows to the CPU."""
    monkeypatch.delenv("COURSE_DEVICES", raising=False)
    assert devices.available_devices()[0].type == "cpu"
    monkeypatch.setenv("COURSE_DEVICES", "cpu")
    assert [d.type for d in devices.available_devices()] == ["cpu"]


def test_available_devices_refuse_a_missing_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Asking for a device the machine lacks is an error, not a silent CPU-only run."""
    monkeypatch.setenv("COURSE_DEVICES", "cpu,no_such_device")
    with pytest.raises(RuntimeError, match="no_such_device"):
        devices.available_devices()


def _frame_files(tb) -> list[str]:
    files = []
    while tb is not None:
        files.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    return files


def _failed_check() -> AssertionError:
    """A real failure: a parameter count that forgets the biases of a 2-3 layer."""
    import torch
    from dropout_course.checks import ex01

    with pytest.raises(AssertionError) as info:
        ex01.check_parameter_count(lambda model: 6, torch.nn.Linear(2, 3), 9, "a 2-3 layer")
    return info.value


def test_failure_report_leaves_out_the_checks_library() -> None:
    """The short traceback keeps this file's frame and the message, and drops every frame of the
    checks library (which the full traceback has several of)."""
    from dropout_course.checks.tracebacks import CHECKS_DIR, without_library_frames

    err = _failed_check()
    full = _frame_files(err.__traceback__)
    short = _frame_files(without_library_frames(err.__traceback__))
    assert sum(CHECKS_DIR.as_posix() in f for f in full) >= 2
    assert short and not any(CHECKS_DIR.as_posix() in f for f in short)
    assert short[0] == __file__
    assert "What to check" in str(err)


def test_notebook_kernel_shows_the_short_report(capsys: pytest.CaptureFixture[str]) -> None:
    """In an IPython shell, importing the checks installs the short report: a failed check shows
    the cell and the message but none of the library's source; other errors are unchanged."""
    pytest.importorskip("IPython")
    from dropout_course.checks import tracebacks
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance(colors="nocolor")
    try:
        assert tracebacks.install()
        result = shell.run_cell("import torch\nfrom dropout_course.checks import ex01\n"
                                "ex01.check_parameter_count(lambda m: 6, torch.nn.Linear(2, 3), "
                                "9, 'a 2-3 layer')")
        shown = capsys.readouterr().out
        assert isinstance(result.error_in_exec, AssertionError)
        assert "What to check" in shown and "check_parameter_count" in shown
        assert "expect_equal(" not in shown and "checks/core.py" not in shown, shown
        result = shell.run_cell("def f():\n    return 1 / 0\nf()")
        assert isinstance(result.error_in_exec, ZeroDivisionError)
        assert "return 1 / 0" in capsys.readouterr().out
    finally:
        InteractiveShell.clear_instance()


def test_notebook_kernel_prints_warnings_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    """In a notebook kernel the checks send every warning to stdout, so Validate (which fails a
    test cell on any stderr) agrees with grading (which drops warning lines); outside a kernel
    nothing changes."""
    pytest.importorskip("IPython")
    import warnings

    from dropout_course.checks import core
    from IPython.core.interactiveshell import InteractiveShell

    before = warnings.showwarning
    assert core.warnings_to_stdout() is False  # no kernel: nothing installed
    assert warnings.showwarning is before
    InteractiveShell.instance(colors="nocolor")
    try:
        assert core.warnings_to_stdout()
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("a harmless warning", UserWarning, stacklevel=1)
        shown = capsys.readouterr()
        assert "UserWarning" in shown.out and "a harmless warning" in shown.out
        assert shown.err == ""
    finally:
        warnings.showwarning = before
        InteractiveShell.clear_instance()


# --------------------------------------------------------------------------- Student's t


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 6, 9, 10, 11, 30, 101])
@pytest.mark.parametrize("alpha", [0.5, 0.1, 0.05, 0.01, 1e-6])
def test_t_critical_is_scipys_two_sided_quantile(alpha: float, df: int) -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    from dropout_course.checks.stats import t_critical

    # 1e-9: near alpha = 1e-6 the series loses about 10 digits to 1 - alpha; the checks need 1e-6
    assert t_critical(alpha, df) == pytest.approx(scipy_stats.t.ppf(1 - alpha / 2, df),
                                                  rel=1e-9)


def test_t_critical_refuses_what_is_not_a_level_or_a_whole_df() -> None:
    from dropout_course.checks.stats import t_critical

    for alpha, df in ((0.0, 3), (1.0, 3), (-0.1, 3), (float("nan"), 3), (0.05, 0), (0.05, 2.5),
                      (0.05, True)):
        with pytest.raises(ValueError):
            t_critical(alpha, df)  # type: ignore[arg-type]


def test_the_scipy_stand_in_agrees_with_scipy() -> None:
    """tests/scipy_stand_in.py replaces SciPy on the GPU machine: where SciPy is installed, it
    must give SciPy's numbers."""
    scipy_stats = pytest.importorskip("scipy.stats")
    if not hasattr(scipy_stats, "ttest_ind"):
        pytest.skip("SciPy itself is not installed here (the stand-in is in use)")
    import scipy_stand_in

    rng = np.random.default_rng(7)
    for n in (2, 3, 5, 12):
        a, b = rng.normal(0.9, 0.02, n), rng.normal(0.89, 0.02, n)
        real, stand_in = scipy_stats.ttest_rel(a, b), scipy_stand_in._ttest_rel(a, b)
        assert stand_in.statistic == pytest.approx(real.statistic, rel=1e-12)
        assert stand_in.pvalue == pytest.approx(real.pvalue, rel=1e-9)
        for q in (0.5, 0.9, 0.975, 0.025):
            assert scipy_stand_in._T.ppf(q, n - 1) == pytest.approx(
                scipy_stats.t.ppf(q, n - 1), rel=1e-11, abs=1e-15)
        assert scipy_stand_in._T.interval(0.95, n - 1) == pytest.approx(
            scipy_stats.t.interval(0.95, n - 1), rel=1e-11)
    assert scipy_stand_in._Norm.ppf(0.975) == pytest.approx(scipy_stats.norm.ppf(0.975))
