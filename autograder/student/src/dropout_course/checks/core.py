"""Generic building blocks for the course's checks.

Every check raises :class:`AssertionError` with a message in two parts: *what is wrong*
and *what to check*. Test cells end with :func:`passed`, which prints a friendly line,
so a test cell never ends in a bare value that nbgrader could mistake for a score.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

__all__ = [
    "call_quietly",
    "describe_call",
    "expect",
    "expect_equal",
    "expect_raises",
    "expect_raises_many",
    "fail",
    "not_written_error",
    "passed",
    "run_student",
    "run_student_many",
    "warnings_to_stdout",
]

_REPR_LIMIT = 80


def short_repr(value: Any, limit: int = _REPR_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters, so a message stays readable."""
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real problem
        text = f"<{type(value).__name__} object>"
    text = " ".join(text.split())  # one line, even for a multi-line tensor repr
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_call(
    fn: Callable[..., Any],
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
) -> str:
    """Render a call as the student would type it, e.g. ``f(3, p=0.5)``."""
    parts = [short_repr(a) for a in args]
    parts += [f"{k}={short_repr(v)}" for k, v in (kwargs or {}).items()]
    name = getattr(fn, "__name__", None) or short_repr(fn)
    return f"{name}({', '.join(parts)})"


def call_quietly(
    fn: Callable[..., Any], args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
    label: str | None = None,
) -> Any:
    """Call ``fn``; warnings it raises are printed to stdout instead of stderr, each after
    ``label`` (default: the call, rendered only then).

    nbgrader counts any stderr output in a test cell as a failure, so a harmless warning in a
    correct answer would otherwise cost its points.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return fn(*args, **(kwargs or {}))
        finally:
            for w in caught:
                print(f"Note: {label or describe_call(fn, args, kwargs)} warned: "
                      f"{w.category.__name__}: {w.message}")


def _print_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                   file: Any = None, line: str | None = None) -> None:
    print(f"Note: {category.__name__} ({os.path.basename(filename)}, line {lineno}): {message}")


def warnings_to_stdout() -> bool:
    """In a notebook kernel, print every warning to stdout (as :func:`call_quietly` does for the
    calls a check makes), so that Validate judges as grading does.

    Both count stderr in a test cell as a failure, but grading drops warning lines first
    (nbgrader's IgnorePattern) while Validate cannot: a test cell that prints a student's object
    whose code warns would fail Validate and still earn its points.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    if get_ipython() is None:
        return False
    warnings.showwarning = _print_warning
    return True


def fail(what: str, hint: str) -> NoReturn:
    """Raise the standard failure: what is wrong, then what the student should check."""
    raise AssertionError(f"{what}\n  What to check: {hint}")


def expect(condition: bool, what: str, hint: str) -> None:
    """Fail with ``what``/``hint`` unless ``condition`` holds.

    ``condition`` must be a real ``bool``: objects that pretend to be true are refused, so a
    lying return value cannot pass a check by accident.
    """
    if not isinstance(condition, bool):
        raise TypeError(f"checks.expect needs a bool, got {type(condition).__name__}")
    if not condition:
        fail(what, hint)


def not_written_error(call: str) -> AssertionError:
    """The failure for a stub that still raises NotImplementedError."""
    return AssertionError(
        f"{call} raised NotImplementedError: this function is not written yet.\n"
        "  What to check: replace `raise NotImplementedError()` with your code."
    )


def run_student(
    fn: Callable[..., Any],
    *args: Any,
    hint: str = "read the error above and the function's docstring",
    **kwargs: Any,
) -> Any:
    """Call a student's function and turn any exception into a failure that says which call.

    ``NotImplementedError`` (the stub left in place) gets its own message. The call is
    rendered only when it failed: a tensor's repr costs milliseconds, more than most calls.
    """
    try:
        return call_quietly(fn, args, kwargs)
    except Exception as err:
        raise _raised(fn, args, kwargs, err, hint) from _cause(err)


def _raised(fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any] | None,
            err: Exception, hint: str) -> AssertionError:
    """The failure for a student's call that raised ``err``."""
    if isinstance(err, NotImplementedError):
        return not_written_error(describe_call(fn, args, kwargs))
    return AssertionError(
        f"{describe_call(fn, args, kwargs)} raised {type(err).__name__}: {err}\n"
        f"  What to check: {hint}"
    )


def _cause(err: Exception) -> Exception | None:
    return None if isinstance(err, NotImplementedError) else err


def run_student_many(
    fn: Callable[..., Any],
    calls: Sequence[tuple[Sequence[Any], Mapping[str, Any]]],
    hint: str = "read the error above and the function's docstring",
) -> list[Any]:
    """``[run_student(fn, *args, hint=hint, **kwargs) for args, kwargs in calls]``: the same
    results, the same failure for the first call that raises, later calls never made.

    For checks that call a student's function many times on inputs made beforehand (a seeded
    loop): where ``fn`` runs in another process, the grader's stand-in for it offers
    ``__dropout_call_many__`` and the calls cost one round trip instead of one each. The calls
    run in order, so state they share (a generator, the global random state) flows from one to
    the next as it would in the loop.
    """
    many = getattr(type(fn), "__dropout_call_many__", None)
    if many is None:
        return [run_student(fn, *args, hint=hint, **kwargs) for args, kwargs in calls]
    batch = [(tuple(args), dict(kwargs)) for args, kwargs in calls]
    try:
        outcomes = call_quietly(many, (fn, batch), label=_batch_label(fn, batch))
    except Exception as exc:  # the batch itself failed: no call can be named
        raise AssertionError(f"calling {describe_call(fn)} raised {type(exc).__name__}: {exc}\n"
                             f"  What to check: {hint}") from exc
    for (args, kwargs), (_, err) in zip(batch, outcomes, strict=False):
        if err is not None:
            raise _raised(fn, args, kwargs, err, hint) from _cause(err)
    return [value for value, _ in outcomes]


def expect_equal(actual: Any, expected: Any, what: str, hint: str) -> None:
    """Fail unless ``actual == expected`` and both have the same plain type.

    Meant for plain Python values (ints, floats, tuples of them); arrays have their own checks.
    """
    same = type(actual) is type(expected) and bool(actual == expected)
    expect(
        same,
        f"{what}: expected {short_repr(expected)}, got {short_repr(actual)}"
        + ("" if type(actual) is type(expected) else f" (a {type(actual).__name__})"),
        hint,
    )


def _batch_label(fn: Callable[..., Any], batch: Sequence[Any]) -> str:
    """A batch of calls named in a warning's note: never the calls themselves (rendering 200
    tensors took seconds)."""
    return f"{describe_call(fn)[:-2]}(...), called {len(batch)} times,"


def expect_raises(
    fn: Callable[..., Any],
    args: Sequence[Any],
    errors: type[BaseException] | tuple[type[BaseException], ...],
    why: str,
    kwargs: Mapping[str, Any] | None = None,
) -> BaseException:
    """Fail unless ``fn(*args, **kwargs)`` raises one of ``errors``; return the exception.

    ``why`` says in plain words what is wrong with the input (e.g. "an empty history"). The
    call is rendered only when it failed (a tensor's repr costs about a millisecond).
    """
    errors = errors if isinstance(errors, tuple) else (errors,)
    try:
        result = call_quietly(fn, args, kwargs)
    except errors as err:
        return err
    except Exception as err:
        return _expected_error(fn, args, kwargs, errors, why, None, err)
    return _expected_error(fn, args, kwargs, errors, why, result, None)


RaisesCase = tuple[Sequence[Any], Mapping[str, Any] | None,
                   type[BaseException] | tuple[type[BaseException], ...], str]


def expect_raises_many(fn: Callable[..., Any], cases: Sequence[RaisesCase]
                       ) -> list[BaseException]:
    """:func:`expect_raises` for each ``(args, kwargs, errors, why)`` of ``cases``, judged in
    order (the first case that fails is the failure); return the exceptions.

    Where ``fn`` runs in another process (see :func:`run_student_many`) every call is made, in
    order, in one round trip before any is judged."""
    many = getattr(type(fn), "__dropout_call_many__", None)
    if many is None:
        return [expect_raises(fn, args, errors, why, kwargs=kwargs)
                for args, kwargs, errors, why in cases]
    batch = [(tuple(args), dict(kwargs or {})) for args, kwargs, _, _ in cases]
    outcomes = call_quietly(many, (fn, batch, False), label=_batch_label(fn, batch))
    return [_expected_error(fn, args, kwargs, errors if isinstance(errors, tuple) else (errors,),
                            why, value, err)
            for (args, kwargs, errors, why), (value, err) in zip(cases, outcomes, strict=True)]


def _expected_error(fn: Callable[..., Any], args: Sequence[Any],
                    kwargs: Mapping[str, Any] | None, errors: tuple[type[BaseException], ...],
                    why: str, result: Any, err: BaseException | None) -> BaseException:
    """The exception ``err`` if it is one of ``errors``; else the failure of a call that should
    have raised one of them and returned ``result`` (``err`` None) or raised ``err``."""
    if err is not None and isinstance(err, errors):
        return err
    if isinstance(err, NotImplementedError):
        raise not_written_error(describe_call(fn, args, kwargs)) from None
    names = " or ".join(e.__name__ for e in errors)
    if err is not None:
        raise AssertionError(
            f"{describe_call(fn, args, kwargs)} should raise {names} ({why}), but raised "
            f"{type(err).__name__}: {err}\n"
            f"  What to check: validate the input at the start and raise {names} "
            "with a message that names the bad argument."
        ) from err
    fail(
        f"{describe_call(fn, args, kwargs)} should raise {names} ({why}), but it returned "
        f"{short_repr(result)}",
        f"validate the input at the start and raise {names} with a message that names "
        "the bad argument.",
    )


def passed(message: str) -> None:
    """Print the success line that ends every test cell."""
    print(f"Passed: {message}")
