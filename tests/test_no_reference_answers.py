"""No reference answers in the public package: nothing a student can import earns hidden points.

Everything in ``dropout_course`` (the checks library and the course's layers) ships to students and
is importable in the grading sandbox. So for every graded task of every exercise (each code cell
marked ``solution`` in a source notebook, and the name it defines) and every callable of the
package (every module-level function and class of every module, private names included, and the
functions in those classes' bodies), a submission whose answer *delegates* to that callable must
earn no hidden-test point that the honest stub does not. The submissions tried:

* ``def task(*args, **kwargs): return public(*args, **kwargs)`` against the stub
  (``raise NotImplementedError()``);
* the same, but first validating the arguments as the reference solution does (the reference runs
  on copies of the arguments; if it raises, the submission raises the same error), against a stub
  that validates and then raises NotImplementedError: a student who writes the input checks and
  delegates the rest must gain nothing either (hidden tests check bad input too);
* for a task that defines a class, also a subclass of each public class (``class Task(public):
  pass``), and one whose ``__init__`` validates first.

Every other task keeps the reference solution (a task's tests may call another task, e.g. the
NumPy backward pass is tested through the forward pass), so a public callable cannot hide behind
a broken neighbour. A task's hidden test cells then run in this process, as
``tests/notebook_code.py`` runs them, on the CPU, each under a time limit.

Reads the notebooks as JSON: no nbgrader, nbformat or Jupyter needed.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import importlib
import inspect
import io
import math
import numbers
import pkgutil
import signal
import statistics
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import dropout_course
import pytest
import torch
import torch.nn.functional as F
from dropout_course.checks.stats import t_critical
from notebook_code import (
    HIDDEN_BEGIN,
    SOLUTIONS,
    answer_cells,
    load_solution_namespace,
    not_written,
    run_test_cell,
)

ASSIGNMENTS = sorted(p.name for p in SOLUTIONS.iterdir() if (p / f"{p.name}.ipynb").is_file())
#: Seconds one hidden test cell may run for one submission. The reference solution passes every
#: hidden cell of a task in well under this; a submission that runs longer fails the whole test,
#: since the grader's own limits are longer and it might have earned the point there.
CELL_SECONDS = 20.0


# --------------------------------------------------------------------------- what is public


def public_callables() -> dict[str, Callable[..., Any]]:
    """Every callable defined in ``dropout_course``: module-level functions and classes of every
    module (private names too, which a student can import as well), and the plain, static and
    class methods in the bodies of those classes; by qualified name."""
    modules = [dropout_course]
    for info in pkgutil.walk_packages(dropout_course.__path__, f"{dropout_course.__name__}."):
        modules.append(importlib.import_module(info.name))
    found: dict[str, Callable[..., Any]] = {}
    for module in modules:
        for name, value in vars(module).items():
            if name.startswith("__") or not callable(value):
                continue
            home = getattr(value, "__module__", None) or ""
            if not home.startswith(dropout_course.__name__):
                continue  # torch's, NumPy's or the standard library's, imported here
            found.setdefault(f"{home}.{getattr(value, '__qualname__', name)}", value)
    for qualname, value in list(found.items()):
        if inspect.isclass(value):
            for name, member in vars(value).items():
                bound = getattr(value, name) if isinstance(member, staticmethod | classmethod) \
                    else member
                if inspect.isfunction(bound) or inspect.ismethod(bound):
                    found.setdefault(f"{qualname}.{name}", bound)
    return found


# --------------------------------------------------------------------------- the graded tasks


@dataclass(frozen=True)
class Task:
    """One graded task: the name its answer cell defines and its hidden test cells."""

    assignment: str
    grade_id: str
    name: str
    is_class: bool
    hidden: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        return f"{self.assignment}:{self.name}"


def _question_name(source: str) -> str | None:
    """The variable a numeric question's answer cell assigns (``answer_... = ...``), or None
    for a cell that defines a function or class. Such answers are numbers, not callables: no
    public callable can stand in for them; their reference values are searched for as numbers
    (the tests at the end)."""
    body = ast.parse(source).body
    if any(isinstance(n, ast.FunctionDef | ast.ClassDef) for n in body):
        return None
    names = {t.id for n in body if isinstance(n, ast.Assign) for t in n.targets
             if isinstance(t, ast.Name)}
    return names.pop() if len(names) == 1 and next(iter(names)).startswith("answer_") else None


@cache
def graded_tasks() -> tuple[Task, ...]:
    tasks = []
    for assignment in ASSIGNMENTS:
        for grade_id, source, cells in answer_cells(assignment):
            if _question_name(source) is not None:
                continue
            defs = [n for n in ast.parse(source).body
                    if isinstance(n, ast.FunctionDef | ast.ClassDef)]
            assert len(defs) == 1, f"{assignment}:{grade_id} defines {len(defs)} names"
            tasks.append(Task(assignment, grade_id, defs[0].name,
                              isinstance(defs[0], ast.ClassDef),
                              tuple((gid, src) for gid, src in cells if HIDDEN_BEGIN in src)))
    return tuple(tasks)


@cache
def reference_namespace(assignment: str) -> dict[str, Any]:
    return load_solution_namespace(assignment)


# --------------------------------------------------------------------------- submissions


class CopyFailed(Exception):
    """An argument could not be copied for the reference's validation (a bug of this test)."""


def _copy(value: Any) -> Any:
    """A copy of a test's argument that the reference may use up or change freely."""
    if isinstance(value, torch.Tensor):
        out = value.detach().clone()
        return out.requires_grad_(True) if value.requires_grad else out
    if isinstance(value, torch.Generator):
        twin = torch.Generator(device=value.device)
        twin.set_state(value.get_state())
        return twin
    if isinstance(value, list | tuple):
        return type(value)(_copy(v) for v in value)
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if value is None or isinstance(value, numbers.Number | str | bytes | type) or \
            inspect.isroutine(value) or inspect.ismodule(value):
        return value
    try:
        return copy.deepcopy(value)
    except Exception as err:
        raise CopyFailed(f"cannot copy a {type(value).__name__}: {err}") from err


COPY_FAILURES: list[str] = []


def _validate(reference: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    """Run the reference on copies of the arguments; raise what it raises (its input checks)."""
    try:
        copies = _copy(args), _copy(kwargs)
    except CopyFailed as err:
        COPY_FAILURES.append(str(err))
        raise
    reference(*copies[0], **copies[1])


def delegating(name: str, target: Callable[..., Any],
               reference: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """The answer ``name`` that hands every call to ``target``; with ``reference``, after
    validating the arguments as the reference does."""
    def submission(*args: Any, **kwargs: Any) -> Any:
        if reference is not None:
            _validate(reference, args, kwargs)
        return target(*args, **kwargs)

    submission.__name__ = submission.__qualname__ = name
    return submission


def subclassing(name: str, base: type, reference: Callable[..., Any] | None = None) -> type | None:
    """``class name(base): pass`` (with ``reference``: an ``__init__`` that validates first), or
    None where ``base`` cannot be subclassed."""
    body: dict[str, Any] = {"__module__": "submission"}
    if reference is not None:
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            _validate(reference, args, kwargs)
            base.__init__(self, *args, **kwargs)

        body["__init__"] = __init__
    try:
        return type(name, (base,), body)
    except TypeError:
        return None


def stub(name: str, reference: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """The honest stub (``raise NotImplementedError()``); with ``reference``, it validates its
    arguments first, as a student who wrote only the input checks."""
    return delegating(name, not_written, reference)


# --------------------------------------------------------------------------- running hidden tests


class CellTimeout(BaseException):
    """A hidden test cell ran past CELL_SECONDS (BaseException: no check may swallow it)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def expire(_signum: int, _frame: Any) -> None:
        raise CellTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Run:
    passed: frozenset[str]
    timed_out: frozenset[str]


def run_hidden(task: Task, answer: Any) -> Run:
    """Run the task's hidden cells with ``answer`` as its definition (every other task: the
    reference); which cells passed, which ran out of time."""
    namespace = {**reference_namespace(task.assignment), task.name: answer}
    passed, timed_out = set(), set()
    for grade_id, source in task.hidden:
        torch.manual_seed(0)  # as the grader does before every test cell
        sink = io.StringIO()
        try:
            with time_limit(CELL_SECONDS), contextlib.redirect_stdout(sink), \
                    contextlib.redirect_stderr(sink):
                run_test_cell(source, namespace)
        except CellTimeout:
            timed_out.add(grade_id)
        except Exception:  # a failed check, or an error: no point
            pass
        else:
            passed.add(grade_id)
    return Run(frozenset(passed), frozenset(timed_out))


@dataclass
class Finding:
    task: Task
    submission: str
    gained: frozenset[str]
    timed_out: frozenset[str]

    def __str__(self) -> str:
        parts = [f"{self.task}: {self.submission}"]
        if self.gained:
            parts.append(f"earns hidden {sorted(self.gained)} that the stub does not")
        if self.timed_out:
            parts.append(f"ran past {CELL_SECONDS:g} s in {sorted(self.timed_out)}")
        return " ".join(parts)


def submissions(task: Task, label: str, target: Callable[..., Any]
                ) -> Iterator[tuple[str, Any, bool]]:
    """(description, answer, validates?) for every way of delegating ``task`` to ``target``."""
    reference = reference_namespace(task.assignment)[task.name]
    yield f"delegates to {label}", delegating(task.name, target), False
    yield f"validates, then delegates to {label}", delegating(task.name, target, reference), True
    if task.is_class and inspect.isclass(target):
        for validates in (False, True):
            sub = subclassing(task.name, target, reference if validates else None)
            if sub is not None:
                how = "validating subclass" if validates else "subclass"
                yield f"is a {how} of {label}", sub, validates


@cache
def baseline(task: Task, validates: bool) -> frozenset[str]:
    """Hidden cells the honest stub passes (the validating stub, if ``validates``)."""
    reference = reference_namespace(task.assignment)[task.name]
    return run_hidden(task, stub(task.name, reference if validates else None)).passed


def findings(task: Task, label: str, target: Callable[..., Any]) -> list[Finding]:
    """What delegating ``task`` to ``target`` earns beyond the stub, or where it ran too long."""
    found = []
    for description, answer, validates in submissions(task, label, target):
        run = run_hidden(task, answer)
        gained = run.passed - baseline(task, validates)
        if gained or run.timed_out:
            found.append(Finding(task, description, gained, run.timed_out))
    return found


@pytest.fixture(autouse=True)
def _cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The property does not depend on the device; the CPU keeps this test fast."""
    monkeypatch.setenv("COURSE_DEVICES", "cpu")


# --------------------------------------------------------------------------- the tests


def test_every_graded_task_is_found_with_hidden_tests() -> None:
    tasks = graded_tasks()
    assert {t.assignment for t in tasks} == set(ASSIGNMENTS)
    assert len(tasks) == 21
    assert all(t.hidden for t in tasks), [str(t) for t in tasks if not t.hidden]
    assert {str(t) for t in tasks if t.is_class} == {"ex02_dropout_mechanics:Dropout",
                                                     "ex03_dropout_variants:DropConnectLinear"}


def test_the_public_callables_are_enumerated() -> None:
    """Not vacuous: the enumeration reaches private helpers, classes and their methods."""
    found = public_callables()
    for name in ("dropout_course.checks.core.run_student", "dropout_course.checks.ex04._judge",
                 "dropout_course.checks.ex03._affine", "dropout_course.layers.GaussianDropout",
                 "dropout_course.layers.GaussianDropout.forward",
                 "dropout_course.checks.modules.ModelSnapshot.changes",
                 "dropout_course.checks.stats.binomial_count_bounds"):
        assert name in found, name
    assert not any(name.startswith(("torch.", "numpy.")) for name in found)
    assert len(found) > 100


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_no_public_callable_earns_a_hidden_point(assignment: str) -> None:
    """For every task of the exercise and every public callable: delegating the task to it earns
    no hidden-test point that the honest stub does not."""
    COPY_FAILURES.clear()
    problems: list[str] = []
    for task in (t for t in graded_tasks() if t.assignment == assignment):
        for label, target in public_callables().items():
            problems += [str(f) for f in findings(task, label, target)]
    assert not COPY_FAILURES, sorted(set(COPY_FAILURES))
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- the test can fail
# What the package held before it was cleaned up: the reference verdict of Exercise 4 and the
# course's Bernoulli Dropout layer (a complete answer to Exercise 2's Dropout module). Planted into
# the enumeration, each must be caught.


def _old_expected_verdict(a: Any, b: Any, alpha: float = 0.05) -> tuple[float, float, str]:
    """The old ``checks.ex04._expected_verdict``, brought to the t-test the task now asks for."""
    diffs = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    mean = statistics.fmean(diffs)
    err = statistics.stdev(diffs) / math.sqrt(len(diffs))
    bar = t_critical(alpha, len(diffs) - 1) * err
    verdict = "helps" if mean > bar else "hurts" if mean < -bar else "inconclusive"
    return mean, err, verdict


class _OldCourseDropout(torch.nn.Module):
    """Verbatim the old ``dropout_course.layers.Dropout``."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a real number in [0, 1], got {p!r}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _task(assignment: str, name: str) -> Task:
    return next(t for t in graded_tasks() if (t.assignment, t.name) == (assignment, name))


@pytest.mark.parametrize(("assignment", "name", "planted", "how"), [
    ("ex04_misconceptions", "paired_verdict", _old_expected_verdict, "validates, then"),
    ("ex02_dropout_mechanics", "Dropout", _OldCourseDropout, "delegates to"),
    ("ex02_dropout_mechanics", "Dropout", _OldCourseDropout, "is a subclass"),
], ids=["old _expected_verdict", "old layers.Dropout", "subclass of old layers.Dropout"])
def test_a_planted_reference_answer_is_caught(assignment: str, name: str, planted: Any,
                                              how: str) -> None:
    task = _task(assignment, name)
    caught = [f for f in findings(task, "planted", planted) if f.gained]
    assert any(f.submission.startswith(how) for f in caught), [str(f) for f in caught]
    assert all(f.gained <= {gid for gid, _ in task.hidden} for f in caught)


def test_the_reference_solution_itself_would_be_caught() -> None:
    """The same machinery flags the reference solution of every task, had it been public (so a
    task whose hidden tests could not tell an answer from the stub would show up here)."""
    missed = []
    for task in graded_tasks():
        target = reference_namespace(task.assignment)[task.name]
        run = run_hidden(task, delegating(task.name, target))
        if run.passed != {gid for gid, _ in task.hidden} or baseline(task, False) == run.passed:
            missed.append(str(task))
    assert missed == []


def test_the_time_limit_stops_a_slow_submission(monkeypatch: pytest.MonkeyPatch) -> None:
    """A submission that never returns is stopped (and reported), not waited for."""
    monkeypatch.setattr(sys.modules[__name__], "CELL_SECONDS", 0.2)
    task = _task("ex04_misconceptions", "inference_scale")

    def slow(*_args: Any, **_kwargs: Any) -> float:
        while True:
            pass

    run = run_hidden(task, slow)
    assert run.timed_out == {gid for gid, _ in task.hidden}
    assert run.passed == frozenset()


# --------------------------------------------------------------------------- numeric answers
# A question whose answer is a number (Exercise 2, Task 5) has no callable to delegate to: what
# must not be public is the number itself. Its reference value (``course.answer_values``, as the
# hidden test computes it from autograder/engine/answers.py) must not be a constant of the
# package, written in its source or computed at import; ``course.find_leaks`` searches every
# file of the kit, the built book and the feedback for it as text.


def graded_questions() -> dict[str, str]:
    """{answer variable: assignment} of every numeric question."""
    return {name: assignment for assignment in ASSIGNMENTS
            for _gid, source, _cells in answer_cells(assignment)
            if (name := _question_name(source)) is not None}


def _is_reference(value: object, references: dict[str, float]) -> list[str]:
    """The questions whose reference value ``value`` is (a real number within 1e-6)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return []
    try:
        number = float(value)
    except (OverflowError, TypeError, ValueError):
        return []
    return [name for name, ref in references.items()
            if math.isfinite(number) and math.isclose(number, ref, rel_tol=1e-6)]


def constants_in_source(source: str, references: dict[str, float]) -> list[str]:
    """'line N: value (question)' for every numeric literal of ``source`` that is a reference."""
    return [f"line {node.lineno}: {node.value!r} ({name})"
            for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Constant)
            for name in _is_reference(node.value, references)]


def constants_in_module(module: Any, references: dict[str, float]) -> list[str]:
    """'NAME = value (question)' for every module-level number that is a reference (computed
    at import, so no literal shows it), and every number in a module-level tuple, list or dict."""
    found = []
    for attr, value in vars(module).items():
        items = list(value.values()) if isinstance(value, dict) else list(value) \
            if isinstance(value, tuple | list) else [value]
        found += [f"{attr} = {item!r} ({name})" for item in items
                  for name in _is_reference(item, references)]
    return found


def test_the_numeric_questions_are_found() -> None:
    """Not vacuous: Exercise 2's three questions, each with a reference value."""
    from course import answer_values

    assert graded_questions() == {name: "ex02_dropout_mechanics" for name in (
        "answer_unit_variance", "answer_factor", "answer_penalty")}
    assert set(answer_values()) == set(graded_questions())


def test_no_reference_value_is_a_constant_of_the_package() -> None:
    """No module of dropout_course writes or computes a numeric question's reference value."""
    from course import answer_values

    references = answer_values()
    problems = []
    for info in pkgutil.walk_packages(dropout_course.__path__, f"{dropout_course.__name__}."):
        module = importlib.import_module(info.name)
        source = inspect.getsource(module)
        problems += [f"{info.name}: {p}" for p in constants_in_source(source, references)
                     + constants_in_module(module, references)]
    assert problems == []


def test_a_planted_reference_value_is_caught(tmp_path: Any) -> None:
    """The searches find a reference value written in a module's source, computed at import,
    held in a table, or quoted on a page; a nearby number is not taken for it, and a number a
    student typed into their own answer may be shown back to them."""
    import types

    from course import answer_values, find_leaks

    references = answer_values()
    penalty = references["answer_penalty"]
    assert constants_in_source(f"SCALE = 1.0\nPENALTY = {penalty!r}\n", references) == [
        f"line 2: {penalty!r} (answer_penalty)"]
    assert constants_in_source("PENALTY = 8.83\nCUT = 0.96\n", references) == []
    module = types.ModuleType("planted")
    module.PENALTY = 53 / 6  # computed: no literal shows it
    module.TABLE = {"q1": 27 / 28}
    assert sorted(constants_in_module(module, references)) == [
        f"PENALTY = {53 / 6!r} (answer_penalty)",
        f"TABLE = {27 / 28!r} (answer_unit_variance)"]
    (tmp_path / "page.html").write_text("<td>R(w) = 8.83333</td><td>1.5385</td>", "utf-8")
    (tmp_path / "near.txt").write_text("8.83 and 1.538 and 0.96", "utf-8")
    own = "answer_unit_variance = 0.9642857"
    (tmp_path / "feedback.html").write_text(f"<pre>{own}</pre>", "utf-8")
    found = find_leaks(tmp_path, own_lines=frozenset({own}))
    assert set(found) == {"page.html"}
    assert {"reference value of answer_factor: 1.5385",
            "reference value of answer_penalty: 8.83333"} <= set(found["page.html"])
    assert "reference value of answer_unit_variance: 0.9642857" in find_leaks(tmp_path)[
        "feedback.html"]
