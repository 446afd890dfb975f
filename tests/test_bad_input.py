"""Broken (not hostile) submissions: each is graded normally or given 0 with a clear reason,
and none of them stops the others. All graded in ONE run (``autograder/demo/attacks.py``)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from course import grade_written

from autograder.demo.attacks import BAD_INPUTS

pytestmark = pytest.mark.slow
ASSIGNMENT = "ex01_overfitting"


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Write every broken submission and grade them all in one call: (course folder, results)."""
    from autograder.demo.attacks import write_bad_inputs

    base = tmp_path_factory.mktemp("bad_input").resolve()
    return grade_written(base, ASSIGNMENT, write_bad_inputs)


@pytest.mark.parametrize("student", sorted(BAD_INPUTS))
def test_bad_input_scores_and_says_why(student: str,
                                       bad_run: tuple[Path, dict[str, Any]]) -> None:
    """The exact score (0 when it cannot be graded), the reason in the problems, the flag."""
    out, results = bad_run
    case, result = BAD_INPUTS[student], results[student]
    explain = f"score {result.score}, flags {result.flags}, problems {result.problems}"
    assert result.score == case.expected, f"{case.about}: {explain}"
    assert result.max_score == 14.0, explain
    if case.problem is None:
        assert result.problems == [], f"{case.about}: {explain}"
    else:
        assert any(case.problem in p for p in result.problems), f"{case.about}: {explain}"
    if case.flag is None:
        assert not result.flags, f"{case.about}: {explain}"
    else:
        assert case.flag in result.flags, f"{case.about}: {explain}"
    feedback = out / "feedback" / student / ASSIGNMENT / f"{ASSIGNMENT}.html"
    assert feedback.is_file() == (case.flag != "malformed"), explain


def test_saved_outputs_do_not_reach_the_feedback(bad_run: tuple[Path, dict[str, Any]]) -> None:
    """A notebook saved with 30 MB of output is graded on its code; the old output is dropped."""
    out, _ = bad_run
    feedback = out / "feedback" / "odd_big_outputs" / ASSIGNMENT / f"{ASSIGNMENT}.html"
    assert feedback.stat().st_size < 2 << 20
    assert "0.123456789 0.123456789" not in feedback.read_text("utf-8")


def test_every_bad_input_is_in_the_grades(bad_run: tuple[Path, dict[str, Any]]) -> None:
    """grades.csv and the report have one row per submission, broken or not, with its score."""
    out, _ = bad_run
    with (out / "grades.csv").open(newline="", encoding="utf-8") as fh:
        rows = {row["student_id"]: row for row in csv.DictReader(fh)}
    assert {s: float(row["score"]) for s, row in rows.items()} == {
        s: case.expected for s, case in BAD_INPUTS.items()}
    report = (out / "report.txt").read_text(encoding="utf-8")
    for student in BAD_INPUTS:
        assert student in report
