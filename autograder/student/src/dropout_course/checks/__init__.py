"""The course's checks library: every test cell of every exercise calls these functions.

Use it as ``from dropout_course import checks`` and then ``checks.ex01.check_split(...)``,
``checks.expect_raises(...)``, ``checks.passed(...)``. Every failure is an ``AssertionError``
whose message says what is wrong and what to check. Imported in a notebook, it shortens the
report of a failed check to the test cell's line and that message (see ``tracebacks``) and
prints warnings to stdout (see ``core.warnings_to_stdout``).
"""

from . import (
    boundary,
    contract,
    core,
    devices,
    ex01,
    ex02,
    ex03,
    ex04,
    masks,
    modules,
    questions,
    stats,
    tensors,
    tracebacks,
)
from .core import (
    describe_call,
    expect,
    expect_equal,
    expect_raises,
    expect_raises_many,
    fail,
    passed,
    run_student,
    run_student_many,
)

__all__ = [
    "boundary",
    "contract",
    "core",
    "describe_call",
    "devices",
    "ex01",
    "ex02",
    "ex03",
    "ex04",
    "expect",
    "expect_equal",
    "expect_raises",
    "expect_raises_many",
    "fail",
    "masks",
    "modules",
    "passed",
    "questions",
    "run_student",
    "run_student_many",
    "stats",
    "tensors",
    "tracebacks",
]

tracebacks.install()
core.warnings_to_stdout()
