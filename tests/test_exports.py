"""Exports from the gradebook (issue 17, item 6): Canvas and Moodle import CSVs, one row per
student, and Gradescope's results.json per submission, checked against the documented layouts.

Fast: the gradebook is built with nbgrader's own API in a temporary course folder (two
assignments, a visible, a hidden and a written cell, four students with emails and LMS ids,
automatic and manual scores, a late penalty, a pending written answer, a missing submission, a
student whose name is a spreadsheet formula); no notebook is graded. One test repeats the
exports on a real PostgreSQL server (tests/pg_server.py).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from pg_server import create_database, postgres_url

from autograder.engine import export

__all__ = ["postgres_url"]  # a fixture, used by name below

A, B = "hw1", "hw2"
HIDDEN_SECRET = "assert secret_threshold_xq == 0.73125, 'planted hidden line'"
FORMULA = '=HYPERLINK("http://evil.example/x","click")'
# (id, first, last, email, lms_user_id)
STUDENTS = [
    ("alice", "Alice", "Adams", "alice@uni.example", "1001"),
    ("bob", "Bob", "Brown", "bob@uni.example", "1002"),
    ("carol", "Carol", "Chen", "carol@uni.example", "1003"),
    ("mallory", "Mal", FORMULA, "+mallory@uni.example", None),
]
CELLS = [("test_visible", "code", 2.0), ("test_hidden", "code", 3.0),
         ("written_answer", "markdown", 2.0)]
MAX = 7.0


def _nb(cells: list[dict[str, Any]]) -> dict[str, Any]:
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}


def _code(gid: str, source: str, points: float, outputs: list | None = None,
          grade: bool = True) -> dict[str, Any]:
    return {"cell_type": "code", "metadata": {"nbgrader": {
        "grade_id": gid, "grade": grade, "solution": False, "locked": True, "points": points}},
        "source": source, "outputs": outputs or [], "execution_count": None}


SOURCE = _nb([
    _code("test_visible", "check_visible(f)\n", 2.0),
    _code("test_hidden", "check_visible(f)\n### BEGIN HIDDEN TESTS\n"
          f"{HIDDEN_SECRET}\n### END HIDDEN TESTS\n", 3.0),
    {"cell_type": "markdown", "metadata": {"nbgrader": {
        "grade_id": "written_answer", "grade": True, "solution": True, "points": 2.0}},
     "source": "YOUR ANSWER HERE"},
])


def _autograded(hidden_failed: bool) -> dict[str, Any]:
    hidden_outputs = [{"output_type": "stream", "name": "stdout",
                       "text": f"checking\n{HIDDEN_SECRET}\n\x1b[31m<b>red</b>\x1b[0m\n"}]
    if hidden_failed:
        hidden_outputs.append({
            "output_type": "error", "ename": "AssertionError",
            "evalue": "expected 783, got 844. What to check: buffers",
            "traceback": [f"Traceback ... {HIDDEN_SECRET}", "AssertionError: ..."]})
    return _nb([
        _code("test_visible", "check_visible(f)\n", 2.0,
              [{"output_type": "stream", "name": "stdout", "text": "visible ok\n"}]),
        _code("test_hidden", SOURCE["cells"][1]["source"], 3.0, hidden_outputs),
    ])


def build_gradebook(course: Path, url: str) -> None:
    """The class: alice (late, hand-graded), bob (written answer pending), carol (hw1 missing),
    mallory (a formula for a name, no LMS id)."""
    from nbgrader.api import Gradebook

    for name in (A, B):
        (course / "solutions" / name).mkdir(parents=True)
        (course / "solutions" / name / f"{name}.ipynb").write_text(json.dumps(SOURCE), "utf-8")
    with Gradebook(url, course_id="default_course") as gb, warnings.catch_warnings():
        # nbgrader 0.9's add_submission autoflushes first: SQLAlchemy 2 warns "not in session"
        warnings.filterwarnings("ignore", message=".*not in session")
        for name in (A, B):
            gb.add_assignment(name)
            gb.add_notebook(name, name)
            for cell, kind, points in CELLS:
                gb.add_grade_cell(cell, name, name, max_score=points, cell_type=kind)
        for sid, first, last, email, lms in STUDENTS:
            gb.add_student(sid, first_name=first, last_name=last, email=email,
                           lms_user_id=lms)
        # (student, assignment): (visible, hidden, written manual or None=pending, penalty)
        plan = {("alice", A): (2.0, 0.0, 1.5, 1.0), ("bob", A): (2.0, 3.0, None, 0.0),
                ("mallory", A): (0.0, 3.0, 2.0, 0.0), ("alice", B): (2.0, 3.0, 2.0, 0.0),
                ("carol", B): (1.0, 0.0, 0.0, 0.0)}
        for (sid, name), (visible, hidden, written, penalty) in plan.items():
            gb.add_submission(name, sid)
            for cell, score in (("test_visible", visible), ("test_hidden", hidden)):
                grade = gb.find_grade(cell, name, name, sid)
                grade.auto_score, grade.needs_manual_grade = score, False
            grade = gb.find_grade("written_answer", name, name, sid)
            grade.auto_score = None
            grade.manual_score = written
            grade.needs_manual_grade = written is None
            gb.find_submission_notebook(name, name, sid).late_submission_penalty = penalty
            gb.db.commit()
            folder = course / "autograded" / sid / name
            folder.mkdir(parents=True)
            (folder / f"{name}.ipynb").write_text(json.dumps(_autograded(hidden == 0.0)))


@pytest.fixture(scope="module", autouse=True)
def venv_on_path() -> Any:
    """Gradebook() on an empty database runs the `alembic` command: the venv's bin first."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent),
                                              os.environ.get("PATH", "")]))
        yield


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("export") / "course"
    folder.mkdir()
    build_gradebook(folder, f"sqlite:///{folder / 'gradebook.db'}")
    return folder


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def _lms(course: Path, tmp_path: Path, *args: str) -> tuple[list[list[str]], str]:
    out = tmp_path / "out.csv"
    err = io.StringIO()
    fmt = args[0] if args else "canvas"
    id_column = args[1] if len(args) > 1 else "id"
    export.write_lms(course, fmt, id_column, out, include_pending="pending" in args, warn=err)
    return read_rows(out), err.getvalue()


# --------------------------------------------------------------------------- LMS CSV

def test_canvas_csv_follows_the_gradebook_import_layout(course: Path, tmp_path: Path) -> None:
    """Canvas: the fixed columns in order, one column per assignment, a Points Possible row,
    one row per student; final points = nbgrader score (manual where set) - late penalty."""
    rows, warning = _lms(course, tmp_path, "canvas", "id")
    header, points, *students = rows
    assert header == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", A, B]
    assert points == ["Points Possible", "", "", "", "", str(MAX), str(MAX)]
    by_id = {row[2]: row for row in students}
    assert len(students) == len(STUDENTS) == len(by_id)
    assert by_id["alice"] == ["Adams, Alice", "", "alice", "", "", "2.5", "7.0"]  # 3.5 - 1
    assert by_id["bob"][5] == ""  # pending: not imported
    assert by_id["carol"][5:] == ["", "1.0"]  # hw1 missing: blank
    assert by_id["mallory"][5:] == ["5.0", ""]
    assert "bob/hw1" in warning and "hand grading" in warning
    assert "alice" not in warning


def test_canvas_id_column_choice(course: Path, tmp_path: Path) -> None:
    """The chosen id fills the column Canvas matches on; the other id columns stay blank."""
    rows, warning = _lms(course, tmp_path, "canvas", "lms_user_id")
    students = {row[0]: row for row in rows[2:]}
    assert students["Adams, Alice"][1:4] == ["1001", "", ""]
    assert "mallory" in warning and "lms_user_id" in warning  # no LMS id: cannot be matched
    rows, _ = _lms(course, tmp_path, "canvas", "email")
    students = {row[0]: row for row in rows[2:]}
    assert students["Chen, Carol"][1:4] == ["", "", "carol@uni.example"]


def test_moodle_csv_has_one_identifier_column_and_one_column_per_item(
        course: Path, tmp_path: Path) -> None:
    """Moodle: a header, then one row per user; the identifier column is named for the user
    field it maps to; no points row (Moodle would read it as a user)."""
    rows, _ = _lms(course, tmp_path, "moodle", "email")
    header, *students = rows
    assert header == ["First name", "Last name", "Email address", A, B]
    assert len(students) == len(STUDENTS)
    by_email = {row[2]: row for row in students}
    assert by_email["alice@uni.example"][3:] == ["2.5", "7.0"]
    assert by_email["bob@uni.example"][3] == ""
    assert "'+mallory@uni.example" in by_email  # a leading + is a formula to a spreadsheet
    rows, _ = _lms(course, tmp_path, "moodle", "id", "pending")
    by_id = {row[2]: row for row in rows[1:]}
    assert rows[0][2] == "ID number"
    assert by_id["bob"][3] == "5.0"  # --include-pending: the points so far


def test_csv_injection_is_neutralised(course: Path, tmp_path: Path) -> None:
    """A name that is a formula is written as text (leading apostrophe), in every format."""
    for fmt in export.FORMATS:
        rows, _ = _lms(course, tmp_path, fmt, "id")
        cells = [cell for row in rows for cell in row]
        assert not any(cell.lstrip()[:1] in "=+-@" for cell in cells if cell), fmt
        assert any(cell.startswith("'") and "HYPERLINK" in cell for cell in cells), fmt


# --------------------------------------------------------------------------- Gradescope

TOP_LEVEL = {"score": (int, float), "execution_time": (int, float), "output": str,
             "visibility": str, "stdout_visibility": str, "extra_data": dict, "tests": list}
TEST_KEYS = {"name": str, "number": str, "score": (int, float), "max_score": (int, float),
             "output": str, "visibility": str, "status": str, "tags": list,
             "output_format": str, "name_format": str, "extra_data": dict}
VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}


def check_results_schema(results: dict[str, Any]) -> None:
    """The documented results.json keys and types (gradescope-autograders.readthedocs.io,
    "Autograder Specifications", Output format): nothing else at either level."""
    assert set(results) <= set(TOP_LEVEL), set(results) - set(TOP_LEVEL)
    assert "score" in results or all("score" in t for t in results["tests"])
    for key, kind in TOP_LEVEL.items():
        if key in results:
            assert isinstance(results[key], kind) and not isinstance(results[key], bool), key
    for key in ("visibility", "stdout_visibility"):
        assert results.get(key, "visible") in VISIBILITY
    for test in results["tests"]:
        assert set(test) <= set(TEST_KEYS), set(test) - set(TEST_KEYS)
        assert {"name", "number", "score", "max_score", "output", "visibility"} <= set(test)
        for key, kind in TEST_KEYS.items():
            if key in test:
                assert isinstance(test[key], kind) and not isinstance(test[key], bool), key
        assert test["visibility"] in VISIBILITY
        assert test.get("status", "passed") in {"passed", "failed"}
        assert test.get("output_format", "text") == "text"


@pytest.fixture(scope="module")
def gradescope(course: Path) -> dict[tuple[str, str], dict[str, Any]]:
    paths = export.write_gradescope(course, warn=None)
    root = course / "exports" / "gradescope"
    return {(p.parent.parent.name, p.parent.name): json.loads(p.read_text("utf-8"))
            for p in paths if p.is_relative_to(root)}


def test_gradescope_results_per_submission(
        gradescope: dict[tuple[str, str], dict[str, Any]]) -> None:
    """One results.json per submission (none for a missing one), valid against the documented
    format; one test per graded cell, in notebook order, with nbgrader's scores."""
    assert set(gradescope) == {(A, "alice"), (A, "bob"), (A, "mallory"), (B, "alice"),
                               (B, "carol")}
    for results in gradescope.values():
        check_results_schema(results)
    alice = gradescope[A, "alice"]
    assert alice["score"] == 2.5 and alice["extra_data"]["late_penalty"] == 1.0
    assert "Late submission penalty: 1 point" in alice["output"]
    assert [t["number"] for t in alice["tests"]] == ["1", "2", "3"]
    assert [(t["score"], t["max_score"], t.get("status")) for t in alice["tests"]] == [
        (2.0, 2.0, "passed"), (0.0, 3.0, "failed"), (1.5, 2.0, "failed")]
    assert alice["tests"][0]["output"] == "visible ok"


def test_gradescope_hidden_tests_after_due_date_and_never_shown(
        gradescope: dict[tuple[str, str], dict[str, Any]], course: Path) -> None:
    """A cell with hidden tests is after_due_date; its output is the failure message only:
    no hidden test line (planted in the source and in the autograded outputs and traceback),
    no markup, no terminal escape."""
    for results in gradescope.values():
        visibility = {t["name"].split()[0]: t["visibility"] for t in results["tests"]}
        assert visibility == {"test_visible": "visible", "test_hidden": "after_due_date",
                              "written_answer": "visible"}
    hidden = gradescope[A, "alice"]["tests"][1]
    assert "expected 783, got 844. What to check: buffers" in hidden["output"]
    assert hidden["output"].startswith("checking")
    assert "\x1b" not in hidden["output"] and "Traceback" not in hidden["output"]
    # without a source notebook to tell, every test counts as hidden
    assert not export.source_info(course, "no_such_assignment").known
    for path in (course / "exports" / "gradescope").rglob("results.json"):
        text = path.read_text("utf-8")
        assert "secret_threshold_xq" not in text and "BEGIN HIDDEN" not in text, path


def test_gradescope_pending_written_answer(
        gradescope: dict[tuple[str, str], dict[str, Any]]) -> None:
    bob = gradescope[A, "bob"]
    written = bob["tests"][2]
    assert written["output"] == export.PENDING_NOTE and "status" not in written
    assert written["tags"] == ["pending"]
    assert bob["extra_data"]["pending"] == 1 and "pending" in bob["output"]
    assert bob["score"] == 5.0


# --------------------------------------------------------------------------- the command

def test_cli_lms_and_gradescope(course: Path, tmp_path: Path) -> None:
    """The command line: lms to a file and to stdout, gradescope to a folder, and a clear
    error (exit 2) for a course folder without a gradebook."""
    from course import run

    out = tmp_path / "canvas.csv"
    base = [sys.executable, "-m", "autograder.engine.export"]
    proc = run([*base, "lms", "--format", "canvas", "--course", str(course), "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert read_rows(out)[1][0] == "Points Possible"
    assert "bob/hw1" in proc.stderr
    proc = run([*base, "lms", "--format", "moodle", "--id-column", "lms_user_id",
                "--course", str(course), "--out", "-"])
    assert proc.returncode == 0 and proc.stdout.startswith("First name,Last name,User ID,")
    proc = run([*base, "gradescope", "--course", str(course), "--out", str(tmp_path / "gs")])
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "gs" / A / "bob" / "results.json").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run([*base, "lms", "--course", str(empty)])
    assert proc.returncode == 2 and "no gradebook" in proc.stderr
    assert not (empty / "gradebook.db").exists()


@pytest.mark.slow
def test_exports_from_a_postgresql_gradebook(postgres_url: str, tmp_path: Path,
                                             course: Path) -> None:
    """The same class in PostgreSQL (course id default_course): the same CSV and results."""
    url = create_database(postgres_url, "gb_exports")
    folder = tmp_path / "course"
    folder.mkdir()
    build_gradebook(folder, url)
    for fmt in export.FORMATS:
        export.write_lms(folder, fmt, "id", tmp_path / f"{fmt}.csv", db_url=url, warn=None)
        export.write_lms(course, fmt, "id", tmp_path / f"{fmt}-sqlite.csv", warn=None)
        assert read_rows(tmp_path / f"{fmt}.csv") == read_rows(tmp_path / f"{fmt}-sqlite.csv")
    paths = export.write_gradescope(folder, tmp_path / "gs", db_url=url, warn=None)
    assert len(paths) == 5
    mine = json.loads((tmp_path / "gs" / A / "alice" / "results.json").read_text("utf-8"))
    check_results_schema(mine)
    assert mine["score"] == 2.5


def test_merge_rebuilds_class_outputs_then_writes_every_export(
        course: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """merge: grade.write_class_outputs(course, db_url), then canvas.csv, moodle.csv and the
    Gradescope folder under DIR/exports/; a clear error where write_class_outputs is missing."""
    from autograder.engine import grade

    calls = []
    monkeypatch.setattr(grade, "write_class_outputs",
                        lambda folder, db_url, **_: calls.append((folder, db_url)) or [],
                        raising=False)
    exports = course / "exports"
    for name in ("canvas.csv", "moodle.csv"):
        (exports / name).unlink(missing_ok=True)
    export.merge(course)
    assert calls == [(course, None)]
    assert read_rows(exports / "canvas.csv")[0][:5] == list(export.CANVAS_FIXED)
    assert read_rows(exports / "moodle.csv")[0][2] == "ID number"
    assert (exports / "gradescope" / B / "carol" / "results.json").is_file()
    monkeypatch.delattr(grade, "write_class_outputs")
    with pytest.raises(export.ExportError, match="write_class_outputs"):
        export.merge(course)
