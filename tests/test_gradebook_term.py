"""autograder.engine.gradebook: what the grading command writes into nbgrader's gradebook keeps
what hand graders did there (formgrader's manual scores), flags a resubmitted written answer
for another look, applies nbgrader's due dates and LateSubmissionPlugin, and totals include the
manual points. Fast: one gradebook made with nbgrader's API per module, copied for each test."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nbgrader.plugins import LateSubmissionPlugin
from traitlets.config import Config

from autograder.engine import gradebook
from autograder.engine.grade import StudentResult

A = "ps1"  # one notebook named like its assignment, as the course's
AUTO, WRITTEN = "test_auto", "written_answer"
AUTO_POINTS, WRITTEN_POINTS = 3.0, 2.0
DUE = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gradebook with one assignment: an automatic cell and a written answer (a markdown
    grade + solution cell, as in the course's notebooks). Made once: alembic takes seconds."""
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent),
                                          os.environ.get("PATH", "")])
    from nbgrader.api import Gradebook

    path = tmp_path_factory.mktemp("template") / "gradebook.db"
    with Gradebook(f"sqlite:///{path}") as gb:
        gb.add_assignment(A)
        gb.add_notebook(A, A)
        gb.add_grade_cell(AUTO, A, A, max_score=AUTO_POINTS, cell_type="code")
        gb.add_grade_cell(WRITTEN, A, A, max_score=WRITTEN_POINTS, cell_type="markdown")
        gb.add_solution_cell(WRITTEN, A, A)
    return path


@pytest.fixture
def gb(template: Path, tmp_path: Path) -> Iterator[Any]:
    from nbgrader.api import Gradebook

    path = tmp_path / "gradebook.db"
    shutil.copyfile(template, path)
    with Gradebook(f"sqlite:///{path}") as book:
        yield book


def result(student: str, auto: float = AUTO_POINTS, **flags: list[str]) -> StudentResult:
    return StudentResult(student, assignment=A, per_test={AUTO: auto, WRITTEN: None},
                         flags=dict(flags))


def notebook(answer: str) -> dict[str, Any]:
    cell = {"cell_type": "markdown", "source": answer.splitlines(keepends=True),
            "metadata": {"nbgrader": {"grade_id": WRITTEN, "grade": True, "solution": True}}}
    return {"cells": [cell, {"cell_type": "code", "source": "x = 1", "metadata": {}}]}


def hand_grade(gb: Any, student: str, cell: str, score: float) -> None:
    """What formgrader's grade API does (nbgrader/server_extensions/formgrader/apihandlers.py)."""
    grade = gb.find_grade(cell, A, A, student)
    grade.manual_score = score
    grade.needs_manual_grade = grade.manual_score is None and grade.auto_score is None
    gb.db.commit()


def grade_of(gb: Any, student: str, cell: str = WRITTEN) -> tuple[float | None, bool]:
    gb.db.expire_all()
    grade = gb.find_grade(cell, A, A, student)
    return grade.manual_score, grade.needs_manual_grade


def test_answer_digests_of_a_notebook(tmp_path: Path) -> None:
    one = gradebook.answer_digests(notebook("It overfits.\nBecause..."))
    assert one is not None and set(one) == {WRITTEN}
    assert one == gradebook.answer_digests(notebook("It overfits.\nBecause..."))
    assert one != gradebook.answer_digests(notebook("It overfits less."))
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    assert gradebook.answer_digests(bad) is None
    assert gradebook.answer_digests(tmp_path / "missing.ipynb") is None


def test_manual_score_survives_rerun_and_force(gb: Any) -> None:
    """The issue: 'Running make grade again after grading a written answer by hand sets it
    back to needs manual grade; grades.csv and the report still count only automatic points'."""
    answers = gradebook.answer_digests(notebook("It overfits."))
    gradebook.record(gb, result("alice"), DUE, answers)
    before = gradebook.totals(gb, A, "alice")
    assert (before.auto, before.manual, before.score, before.pending) == (3.0, 0.0, 3.0, 1), (
        "before hand grading the written answer is pending and counts nothing")
    assert before.max_score == AUTO_POINTS + WRITTEN_POINTS
    hand_grade(gb, "alice", WRITTEN, 1.5)
    for _ in range(2):  # a rerun (resume) and a --force regrade write the same result again
        gradebook.record(gb, result("alice"), DUE, answers)
        assert grade_of(gb, "alice") == (1.5, False), (
            "a rerun reset the hand grader's score or set it back to needs manual grade")
    after = gradebook.totals(gb, A, "alice")
    assert (after.auto, after.manual, after.score, after.pending) == (3.0, 1.5, 4.5, 0)
    assert after.total == 4.5 and after.penalty == 0.0
    gradebook.record(gb, result("alice"), DUE, None)  # a caller that knows no sources
    assert grade_of(gb, "alice") == (1.5, False)


def test_resubmitted_answer_needs_a_manual_grade_again(gb: Any) -> None:
    gradebook.record(gb, result("bob"), None, gradebook.answer_digests(notebook("First try.")))
    hand_grade(gb, "bob", WRITTEN, 1.0)
    changed = gradebook.answer_digests(notebook("Second, better try."))
    gradebook.record(gb, result("bob"), None, changed)
    assert grade_of(gb, "bob") == (1.0, True), (
        "a changed answer must be looked at again, its manual score kept until then")
    gradebook.record(gb, result("bob"), None, changed)
    assert grade_of(gb, "bob") == (1.0, True), "a rerun cleared the 'look again' mark"
    t = gradebook.totals(gb, A, "bob")
    assert (t.manual, t.score, t.pending) == (1.0, 4.0, 1)
    hand_grade(gb, "bob", WRITTEN, 2.0)
    gradebook.record(gb, result("bob"), None, changed)
    assert grade_of(gb, "bob") == (2.0, False)
    gradebook.record(gb, result("bob"), None, {})  # the answer cell was deleted
    assert grade_of(gb, "bob") == (2.0, True)


def test_hand_override_of_an_automatic_cell(gb: Any) -> None:
    gradebook.record(gb, result("carol", auto=0.0))
    hand_grade(gb, "carol", AUTO, 2.5)
    gradebook.record(gb, result("carol", auto=0.0))
    assert grade_of(gb, "carol", AUTO) == (2.5, False), "same automatic result: override kept"
    gradebook.record(gb, result("carol", auto=3.0))
    assert grade_of(gb, "carol", AUTO) == (2.5, True), (
        "the automatic result changed under the override: kept, but to be looked at again")
    assert gradebook.totals(gb, A, "carol").manual == 2.5


def test_timestamp_and_tampering_flag(gb: Any) -> None:
    when = datetime(2026, 1, 9, 8, 30, tzinfo=UTC)
    gradebook.record(gb, result("dave", tampering=["x"]), when)
    gradebook.record(gb, result("dave"), None)  # no time known now: the recorded one stays
    t = gradebook.totals(gb, A, "dave")
    assert t.timestamp == when
    assert gb.find_submission_notebook(A, A, "dave").flagged, "a flag is never cleared here"


@pytest.mark.parametrize("method", ["none", "zero"])
def test_late_penalty_from_the_course_config(gb: Any, tmp_path: Path, method: str) -> None:
    course = tmp_path / "course"
    course.mkdir()
    (course / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.LateSubmissionPlugin.penalty_method = {method!r}\n")
    config = gradebook.course_config(course)
    assert gradebook.set_due_date(gb, A, DUE) == DUE.replace(tzinfo=None)
    gradebook.record(gb, result("late"), DUE + timedelta(hours=2))
    gradebook.record(gb, result("early"), DUE - timedelta(minutes=1))
    for student in ("late", "early"):
        gradebook.apply_late_penalty(gb, config, A, student)
    late, early = gradebook.totals(gb, A, "late"), gradebook.totals(gb, A, "early")
    assert late.late_seconds == 7200 and early.late_seconds == 0
    assert early.penalty == 0 and early.total == 3.0
    assert late.penalty == (3.0 if method == "zero" else 0.0)
    assert late.total == (0.0 if method == "zero" else 3.0)
    hand_grade(gb, "late", WRITTEN, 2.0)  # applied again after hand grading: zero is zero
    gradebook.apply_late_penalty(gb, config, A, "late")
    assert gradebook.totals(gb, A, "late").total == (0.0 if method == "zero" else 5.0)


class HalfPointPerHour(LateSubmissionPlugin):
    def late_submission_penalty(self, student_id: str, score: float,
                                total_seconds_late: float) -> float:
        return 0.5 * total_seconds_late / 3600


def test_late_penalty_plugin_class(gb: Any) -> None:
    config = Config()
    config.AssignLatePenalties.plugin_class = HalfPointPerHour
    gradebook.set_due_date(gb, A, "2026-01-10 12:00:00 UTC")
    gradebook.record(gb, result("erin"), DUE + timedelta(hours=3))
    assert gradebook.apply_late_penalty(gb, config, A, "erin") == 1.5
    assert gradebook.totals(gb, A, "erin").total == 1.5
    gradebook.record(gb, result("erin"), DUE + timedelta(hours=30))
    gradebook.apply_late_penalty(gb, config, A, "erin")
    assert gradebook.totals(gb, A, "erin").penalty == 3.0, "kept to the notebook's score"
    assert gradebook.apply_late_penalty(gb, None, A, "erin") == 0.0, "nbgrader's default: none"
