"""nbgrader's gradebook in a real PostgreSQL server (the grading command's `--db-url`): scores
written through one Gradebook are read back through another, and two connections writing at
the same time both land. The server is a throwaway one these tests start (tests/pg_server.py)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import pytest
from pg_server import create_database, postgres_url

pytestmark = pytest.mark.slow
__all__ = ["postgres_url"]  # a fixture: imported for pytest to find, used by name below

NOTEBOOK = "problem1"
CELL = "q1"
MAX_SCORE = 5.0


@pytest.fixture
def gradebook_url(postgres_url: str, request: pytest.FixtureRequest,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh empty database on the module's server for each test. Gradebook() on an empty
    database runs the `alembic` command, which must be found on PATH: the venv's bin first."""
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent),
                                                os.environ.get("PATH", "")]))
    yield create_database(postgres_url, f"gb_{request.node.name}".lower()[:60])


def open_gradebook(url: str):
    from nbgrader.api import Gradebook

    gb = Gradebook(url)
    dialect = gb.engine.dialect.name
    assert dialect == "postgresql", f"Gradebook({url!r}) talks {dialect!r}, not PostgreSQL"
    return gb


def add_assignment(url: str, assignment: str) -> None:
    """An assignment with one notebook and one autograded cell worth MAX_SCORE points."""
    with open_gradebook(url) as gb:
        gb.add_assignment(assignment)
        gb.add_notebook(NOTEBOOK, assignment)
        gb.add_grade_cell(CELL, NOTEBOOK, assignment, max_score=MAX_SCORE, cell_type="code")


def grade_student(url: str, assignment: str, student: str, score: float) -> None:
    """Submit ``assignment`` for a new ``student`` and give the cell ``score`` points."""
    with open_gradebook(url) as gb:
        gb.add_student(student)
        gb.add_submission(assignment, student)
        grade = gb.find_grade(CELL, NOTEBOOK, assignment, student)
        grade.auto_score = score
        gb.db.commit()


def read_score(url: str, assignment: str, student: str) -> float | None:
    from nbgrader.api import MissingEntry

    with open_gradebook(url) as gb:
        try:
            grade = gb.find_grade(CELL, NOTEBOOK, assignment, student)
        except MissingEntry:
            return None
        assert grade.max_score == MAX_SCORE, (
            f"{student}: max score {grade.max_score}, expected {MAX_SCORE}")
        return grade.score


def test_score_survives_reopening(gradebook_url: str) -> None:
    add_assignment(gradebook_url, "ps1")
    grade_student(gradebook_url, "ps1", "alice", 3.5)
    score = read_score(gradebook_url, "ps1", "alice")
    assert score is not None, "alice's grade is missing after reopening the gradebook"
    assert score == 3.5, f"alice's score read back as {score}, written as 3.5"
    with open_gradebook(gradebook_url) as gb:
        assert [s.id for s in gb.students] == ["alice"], "the gradebook's students"
        assert gb.find_submission("ps1", "alice").score == 3.5, "the submission's total score"


def test_concurrent_writers_both_land(gradebook_url: str) -> None:
    add_assignment(gradebook_url, "ps1")
    students = {"bob": 2.0, "carol": 4.5}
    # Both threads open their own Gradebook (own engine and connection) first, then write at
    # the same moment.
    barrier = threading.Barrier(len(students), timeout=60)

    def write(student: str, score: float) -> None:
        try:
            with open_gradebook(gradebook_url) as gb:
                barrier.wait()
                gb.add_student(student)
                gb.add_submission("ps1", student)
                gb.find_grade(CELL, NOTEBOOK, "ps1", student).auto_score = score
                gb.db.commit()
        except Exception:
            barrier.abort()  # do not leave the other writer waiting
            raise

    pool = ThreadPoolExecutor(max_workers=len(students), thread_name_prefix="gradebook")
    try:
        futures = {student: pool.submit(write, student, score)
                   for student, score in students.items()}
        _, stuck = wait(futures.values(), timeout=120)
    finally:
        pool.shutdown(wait=False)
    assert not stuck, "a gradebook writer thread was still running after 120 s"
    errors = {student: future.exception() for student, future in futures.items()
              if future.exception() is not None}
    assert not errors, "concurrent gradebook writers failed: " + "; ".join(
        f"{student}: {type(err).__name__}: {err}" for student, err in errors.items())
    found = {student: read_score(gradebook_url, "ps1", student) for student in students}
    assert found == students, f"scores read back {found}, written {students}"
