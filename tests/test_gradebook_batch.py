"""The grading command's batched gradebook writes (issue 20: writes that do not serialise the
pool). ``gradebook.record_many`` writes many graded submissions and their late penalties in one
transaction; what it leaves in the gradebook must be exactly what one transaction per
submission left (the code it replaced, kept below as the reference, with nbgrader's own
``add_submission`` and ``AssignLatePenalties``), in SQLite and in PostgreSQL. One submission the
gradebook refuses must not keep the rest of its batch out, and ``grade.GradebookWriter`` saves
a result's cache file only once its batch is committed, so that an interrupted run leaves the
gradebook and the cache agreeing and a rerun completes it."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from nbgrader.plugins import LateSubmissionPlugin
from pg_server import create_database
from test_gradebook_term import HalfPointPerHour
from traitlets.config import Config

from autograder.engine import gradebook
from autograder.engine.grade import GradebookWriter, StudentResult, Task

A, B = "ps1", "ps2"  # ps1: one notebook; ps2: two
AUTO, WRITTEN, TASK = "q_auto", "q_written", "q_task"
B1, B2, B2W = "b_one", "b_two", "b_written"
DUE = datetime(2026, 1, 10, 12, 0)  # naive UTC, as nbgrader stores it
_DATABASES = itertools.count()  # PostgreSQL databases' names, unique on the module's server


# --------------------------------------------------------------------------- gradebooks

def build(url: str) -> None:
    """The course's shape in a new gradebook: ps1 with an automatic cell, a written answer and
    a task cell; ps2 with two notebooks, the second with a written answer; both due at DUE."""
    from nbgrader.api import Gradebook

    with Gradebook(url) as gb:
        gb.add_assignment(A, duedate=DUE)
        gb.add_notebook(A, A)
        gb.add_grade_cell(AUTO, A, A, max_score=3.0, cell_type="code")
        gb.add_grade_cell(WRITTEN, A, A, max_score=2.0, cell_type="markdown")
        gb.add_solution_cell(WRITTEN, A, A)
        gb.add_task_cell(TASK, A, A, max_score=1.0, cell_type="markdown")
        gb.add_assignment(B, duedate=DUE)
        for notebook in ("part1", "part2"):
            gb.add_notebook(notebook, B)
        gb.add_grade_cell(B1, "part1", B, max_score=2.0, cell_type="code")
        gb.add_grade_cell(B2, "part2", B, max_score=2.0, cell_type="code")
        gb.add_grade_cell(B2W, "part2", B, max_score=1.0, cell_type="markdown")
        gb.add_solution_cell(B2W, "part2", B)


def _venv_path() -> str:
    """PATH with the venv's bin first: a new gradebook runs nbgrader's `alembic`."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite gradebook of the course's shape, made once (alembic takes seconds)."""
    path = tmp_path_factory.mktemp("template") / "gradebook.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", _venv_path())
        build(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def new_gradebook(request: pytest.FixtureRequest, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """Makes fresh gradebooks of the course's shape (SQLite files, or databases on a throwaway
    PostgreSQL server, tests/pg_server.py); returns their URLs."""
    monkeypatch.setenv("PATH", _venv_path())
    if request.param == "sqlite":
        source = request.getfixturevalue("template")

        def copy(name: str) -> str:
            shutil.copyfile(source, tmp_path / f"{name}.db")
            return f"sqlite:///{tmp_path / name}.db"

        return copy
    server = request.getfixturevalue("postgres_url")

    def make(name: str) -> str:
        url = create_database(server, f"batch{next(_DATABASES)}_{name}")
        build(url)
        return url

    return make


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """The module's PostgreSQL server, started only when a PostgreSQL case runs."""
    from pg_server import postgres_server

    with postgres_server() as url:
        yield url


def opened(url: str) -> Any:
    from nbgrader.api import Gradebook

    return Gradebook(url)


# --------------------------------------------------------------------------- the reference

def reference_record(gb: Any, result: StudentResult, timestamp: Any,
                     answers: dict[str, str] | None) -> None:
    """``gradebook.record`` as it was before batching: nbgrader's ``update_or_create_student``
    and ``add_submission`` (each committed), the scores, the digests, one more commit."""
    from nbgrader.api import MissingEntry

    gb.update_or_create_student(result.student)
    try:
        submission = gb.find_submission(result.assignment, result.student)
    except MissingEntry:
        with warnings.catch_warnings():  # nbgrader 0.9 autoflushes before it adds the rows
            warnings.filterwarnings("ignore", message=".*not in session", module="nbgrader")
            submission = gb.add_submission(result.assignment, result.student)
    table = gradebook._ensure_digest_table(gb) if answers is not None else None
    if timestamp is not None:
        submission.timestamp = gradebook._utc_naive(timestamp)
    grades = [g for nb in submission.notebooks for g in nb.grades]
    written = [g for g in grades if result.per_test.get(g.name, 0.0) is None]
    old = (gradebook._stored_digests(gb, table, [g.id for g in written])
           if table is not None else {})
    new = {g.id: (answers or {}).get(g.name, gradebook.MISSING_ANSWER) for g in written}
    for grade in grades:
        score = result.per_test.get(grade.name, 0.0)
        by_hand = grade.manual_score is not None
        if score is None:
            grade.auto_score = None
            if not by_hand or (table is not None and grade.id in old
                               and old[grade.id] != new[grade.id]):
                grade.needs_manual_grade = True
        else:
            changed = grade.auto_score is None or float(grade.auto_score) != float(score)
            grade.auto_score = float(score)
            if not by_hand:
                grade.needs_manual_grade = False
            elif changed:
                grade.needs_manual_grade = True
    if table is not None:
        gradebook._store_digests(gb, table, old, new)
    if result.flags.get("tampering"):
        for notebook in submission.notebooks:
            notebook.flagged = True
    gb.db.commit()


def nbgrader_late_penalties(url: str, config: Config, assignment: str, student: str) -> None:
    """nbgrader's own ``AssignLatePenalties`` preprocessor (what ``nbgrader autograde`` runs),
    once per notebook of the submission, on its own connection."""
    import nbformat
    from nbgrader.preprocessors import AssignLatePenalties

    with opened(url) as gb:
        notebooks = [nb.name for nb in gb.find_submission(assignment, student).notebooks]
    for notebook in notebooks:
        resources = {"nbgrader": {"notebook": notebook, "assignment": assignment,
                                  "student": student, "db_url": url}}
        AssignLatePenalties(config=config).preprocess(nbformat.v4.new_notebook(), resources)


def dump(url: str) -> dict[str, Any]:
    """Everything the writes touch, in a form two gradebooks can be compared by (no row ids)."""
    from sqlalchemy import inspect, select

    with opened(url) as gb:
        gb.db.expire_all()
        subs: dict[tuple[str, str], Any] = {}
        names: dict[str, tuple[str, str, str, str]] = {}
        for assignment in gb.assignments:
            for sub in assignment.submissions:
                notebooks = {}
                for nb in sub.notebooks:
                    grades = {}
                    for g in nb.grades:
                        grades[g.name] = (g.auto_score, g.manual_score, g.extra_credit,
                                          g.needs_manual_grade)
                        names[g.id] = (assignment.name, sub.student.id, nb.name, g.name)
                    notebooks[nb.name] = (nb.flagged, nb.late_submission_penalty, grades,
                                          sorted(c.name for c in nb.comments))
                subs[(assignment.name, sub.student.id)] = (sub.timestamp, notebooks)
        digests = {}
        if inspect(gb.engine).has_table(gradebook.DIGEST_TABLE):
            table = gradebook._digest_table()
            digests = {names[gid]: d for gid, d in gb.db.execute(
                select(table.c.grade_id, table.c.digest)) if gid in names}
        return {"students": sorted(s.id for s in gb.students), "submissions": subs,
                "digests": digests}


# --------------------------------------------------------------------------- the scenario

def answers(text: str, *cells: str) -> dict[str, str]:
    return {cell: f"{cell}:{text}" for cell in cells}


def round_one() -> list[gradebook.Entry]:
    """New students and submissions: on time, late, one student with both assignments in one
    batch, a tampering flag, unknown sources, a cell left out (scores 0)."""
    return [
        gradebook.Entry(StudentResult("ann", A, per_test={AUTO: 3.0, WRITTEN: None, TASK: None}),
                        DUE - timedelta(minutes=5), answers("v1", WRITTEN, TASK)),
        gradebook.Entry(StudentResult("bob", A, per_test={AUTO: 1.5, WRITTEN: None, TASK: None},
                                      flags={"tampering": ["x"]}),
                        DUE + timedelta(hours=2), answers("v1", WRITTEN, TASK)),
        gradebook.Entry(StudentResult("ann", B, per_test={B1: 2.0, B2: 1.0, B2W: None}),
                        DUE + timedelta(hours=30), answers("v1", B2W)),
        gradebook.Entry(StudentResult("cy", B, per_test={B1: 1.0, B2: 2.0, B2W: None}),
                        DUE + timedelta(hours=1), None),
        gradebook.Entry(StudentResult("dee", A, per_test={WRITTEN: None}),
                        DUE + timedelta(hours=3), {}),
    ]


def hand_grading(url: str) -> None:
    """What formgrader does between two runs: a written answer graded, an automatic score
    overridden, and ps2's written answer graded."""
    with opened(url) as gb:
        for (assignment, notebook, cell, student), score in {
                (A, A, WRITTEN, "ann"): 1.5, (A, A, AUTO, "bob"): 2.0,
                (B, "part2", B2W, "ann"): 1.0, (A, A, TASK, "ann"): 1.0}.items():
            grade = gb.find_grade(cell, notebook, assignment, student)
            grade.manual_score = score
            grade.needs_manual_grade = False
        gb.db.commit()


def round_two() -> list[gradebook.Entry]:
    """A rerun (same sources), an automatic score changed under an override, a resubmitted
    written answer, no time known, a new student; each in one batch with the others."""
    return [
        gradebook.Entry(StudentResult("ann", A, per_test={AUTO: 3.0, WRITTEN: None, TASK: None}),
                        DUE - timedelta(minutes=5), answers("v1", WRITTEN, TASK)),
        gradebook.Entry(StudentResult("bob", A, per_test={AUTO: 3.0, WRITTEN: None, TASK: None}),
                        None, answers("v1", WRITTEN, TASK)),
        gradebook.Entry(StudentResult("ann", B, per_test={B1: 2.0, B2: 2.0, B2W: None}),
                        DUE + timedelta(hours=31), answers("v2", B2W)),
        gradebook.Entry(StudentResult("eve", A, per_test={AUTO: 2.0, WRITTEN: None, TASK: None}),
                        DUE + timedelta(hours=5), answers("v1", WRITTEN)),
    ]


def late_config(method: str) -> Config:
    config = Config()
    if method == "half":
        config.AssignLatePenalties.plugin_class = HalfPointPerHour
    else:
        config.LateSubmissionPlugin.penalty_method = method
    return config


@pytest.mark.parametrize("method", ["half", "zero"])
def test_batch_writes_what_one_transaction_each_wrote(new_gradebook: Callable[[str], str],
                                                      method: str) -> None:
    """Two rounds with hand grading between: the batched gradebook equals the one written a
    submission at a time by the old code and nbgrader's own late penalties."""
    config = late_config(method)
    reference, batched = new_gradebook("reference"), new_gradebook("batched")
    for step, entries in enumerate((round_one(), round_two())):
        if step == 1:
            hand_grading(reference)
            hand_grading(batched)
        with opened(reference) as gb:
            for e in entries:
                reference_record(gb, e.result, e.timestamp, e.answers)
        for e in entries:
            nbgrader_late_penalties(reference, config, e.result.assignment, e.result.student)
        with opened(batched) as gb:
            penalties = gradebook.record_many(gb, entries, config)
        assert dump(batched) == dump(reference)
        with opened(batched) as gb:
            assert penalties == [gradebook.totals(gb, e.result.assignment,
                                                  e.result.student).penalty for e in entries]
    # The scenario did what it is for (in both gradebooks, as they are equal).
    got = dump(batched)["submissions"]
    assert got[(A, "ann")][1][A][2][WRITTEN] == (None, 1.5, None, False), "hand grade kept"
    assert got[(A, "bob")][1][A][2][AUTO] == (3.0, 2.0, None, True), "override to look at"
    assert got[(B, "ann")][1]["part2"][2][B2W][1:] == (1.0, None, True), "resubmitted answer"
    assert got[(A, "bob")][1][A][0], "tampering flag"
    assert got[(A, "dee")][1][A][2][AUTO][0] == 0.0, "a cell left out scores 0"
    assert got[(A, "bob")][0] == DUE + timedelta(hours=2), "no time known: the old one stays"
    late = [nb[1] for sub in got.values() for nb in sub[1].values() if nb[1]]
    assert late, "some late penalty was applied"


def test_new_submissions_have_nbgrader_s_rows(new_gradebook: Callable[[str], str]) -> None:
    """A submission record_many makes has the notebooks, grades and comments nbgrader's
    add_submission makes (task cells included)."""
    url = new_gradebook("shape")
    with opened(url) as gb, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not in session", module="nbgrader")
        gb.add_student("ref")
        for assignment in (A, B):
            gb.add_submission(assignment, "ref")
        gradebook.record_many(gb, [gradebook.Entry(StudentResult("new", a)) for a in (A, B)])
    subs = dump(url)["submissions"]
    for assignment in (A, B):
        shape = {nb: (sorted(grades), comments)
                 for nb, (_, _, grades, comments) in subs[(assignment, "ref")][1].items()}
        assert shape == {nb: (sorted(grades), comments)
                         for nb, (_, _, grades, comments) in subs[(assignment, "new")][1].items()}
    assert sorted(subs[(A, "new")][1][A][2]) == sorted([AUTO, WRITTEN, TASK])


class RefusesMallory(LateSubmissionPlugin):
    def late_submission_penalty(self, student_id: str, score: float,
                                total_seconds_late: float) -> float:
        if student_id == "mallory":
            raise RuntimeError("no penalty rule for mallory")
        return 0.0


def test_a_refused_submission_keeps_the_rest_of_its_batch(
        new_gradebook: Callable[[str], str]) -> None:
    url = new_gradebook("refused")
    config = Config()
    config.AssignLatePenalties.plugin_class = RefusesMallory
    late = DUE + timedelta(hours=1)
    entries = [
        gradebook.Entry(StudentResult("ann", A, per_test={AUTO: 3.0}), late),
        gradebook.Entry(StudentResult("zed", "no_such_assignment", per_test={AUTO: 1.0}), late),
        gradebook.Entry(StudentResult("mallory", A, per_test={AUTO: 1.0}), late),
        gradebook.Entry(StudentResult("bob", B, per_test={B1: 2.0}), late),
    ]
    with opened(url) as gb:
        errors = gradebook.record_batch(gb, entries, config)
    assert [e is None for e in errors] == [True, False, False, True]
    assert "no_such_assignment" in str(errors[1]) and "mallory" in str(errors[2])
    got = dump(url)
    assert sorted(got["submissions"]) == [(A, "ann"), (B, "bob")]
    assert got["students"] == ["ann", "bob"], "a refused submission's new student is not kept"
    assert got["submissions"][(A, "ann")][1][A][2][AUTO][0] == 3.0
    with opened(url) as gb, pytest.raises(Exception, match="no_such_assignment"):
        gradebook.record_batch(gb, [entries[1], entries[1]], config)  # every one refused


# --------------------------------------------------------------------------- the writer

def notebook_file(folder: Path, text: str) -> Path:
    cell = {"cell_type": "markdown", "source": text, "metadata": {
        "nbgrader": {"grade_id": WRITTEN, "grade": True, "solution": True}}}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{A}.ipynb"
    path.write_text(json.dumps({"cells": [cell]}), "utf-8")
    return path


def cached(out: Path) -> set[str]:
    return {p.stem for p in (out / "results" / A).glob("*.json")}


def recorded(url: str) -> set[str]:
    return {student for _, student in dump(url)["submissions"]}


@pytest.fixture
def course(tmp_path: Path, template: Path) -> tuple[Path, str]:
    shutil.copyfile(template, tmp_path / "gradebook.db")
    url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    out = tmp_path / "course"
    out.mkdir()
    return out, url


def test_writer_saves_a_result_only_once_its_batch_is_written(course: tuple[Path, str]) -> None:
    """Batches of 2: the cache never holds a result the gradebook lacks; an interrupted run
    (a result queued, never written) leaves both agreeing, and a rerun (the cached results
    recorded again, the rest graded anew) completes them."""
    out, url = course
    students = ["s1", "s2", "s3"]
    tasks = {(A, s): Task(A, s, notebook_file(out / "submitted" / s / A, f"{s} says"), "d",
                          timestamp=DUE + timedelta(hours=1)) for s in students}

    def result(student: str) -> StudentResult:
        return StudentResult(student, A, per_test={AUTO: 2.0, WRITTEN: None}, digest="d")

    config = late_config("half")
    with opened(url) as gb:
        writer = GradebookWriter(gb, config, out, tasks, size=2, seconds=3600)
        assert writer.add(result("s1")) == []
        assert cached(out) == recorded(url) == set(), "written before its batch was full"
        assert writer.add(result("s2")) == []
        assert cached(out) == recorded(url) == {"s1", "s2"}
        assert writer.add(result("s3")) == []
        # The run is interrupted here: s3 was graded, never written, never saved.
    assert cached(out) == recorded(url) == {"s1", "s2"}
    saved = json.loads((out / "results" / A / "s1.json").read_text("utf-8"))
    assert saved["phases"]["gradebook"] > 0, "the saved result has its share of the write"
    with opened(url) as gb:
        assert gradebook.totals(gb, A, "s1").penalty == 0.5, "late penalty applied"
        assert gradebook.totals(gb, A, "s1").pending == 1

    with opened(url) as gb:  # the rerun
        writer = GradebookWriter(gb, config, out, tasks, size=2, seconds=3600)
        for student in ("s1", "s2"):
            writer.add(StudentResult(**json.loads(
                (out / "results" / A / f"{student}.json").read_text("utf-8"))), save=False)
        writer.add(result("s3"))
        assert writer.flush() == []
    assert cached(out) == recorded(url) == set(students)
    with opened(url) as gb:
        assert {s: gradebook.totals(gb, A, s).score for s in students} == dict.fromkeys(
            students, 2.0)


def test_writer_marks_a_refused_result_not_graded(course: tuple[Path, str]) -> None:
    out, url = course
    tasks = {(a, s): Task(a, s, notebook_file(out / "submitted" / s / a, "x"), "d")
             for a, s in [(A, "s1"), ("gone", "s2"), (A, "s3")]}
    results = [StudentResult(s, a, per_test={AUTO: 1.0}, digest="d") for a, s in tasks]
    with opened(url) as gb:
        writer = GradebookWriter(gb, None, out, tasks, size=10, seconds=0.0)
        refused = [r for result in results for r in writer.add(result)]  # each written at once
        assert writer.flush() == []
    assert refused == [results[1]]
    assert results[1].grader_error is not None
    assert results[1].grader_error.startswith("gradebook write failed: ")
    assert any(p.startswith("not graded (grader error: gradebook write failed")
               for p in results[1].problems)
    assert not (out / "results" / "gone").exists(), "a refused result is not cached"
    assert cached(out) == recorded(url) == {"s1", "s3"}
    assert all("gradebook" in r.phases for r in results)


# --------------------------------------------------------------------------- the command

class Crash(BaseException):
    """An interruption the grading command does not catch (as Ctrl-C or a kill would)."""


@pytest.mark.slow
def test_an_interrupted_grading_run_is_completed_by_a_rerun(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real workers, batches of 2, the run stopped as the third result arrives: the first
    batch is in the gradebook and the cache, the third in neither; the rerun grades only it,
    and every saved result holds its share of the gradebook writes."""
    from autograder.demo.__main__ import write_submissions
    from autograder.engine import grade as command

    ex02 = "ex02_dropout_mechanics"
    expected = write_submissions(ex02, tmp_path / "subs")
    out = tmp_path / "course"
    monkeypatch.setattr(command, "GRADEBOOK_BATCH", 2)
    monkeypatch.setattr(command, "GRADEBOOK_BATCH_SECONDS", 3600.0)
    real = command._from_outcome
    arrived: list[str] = []

    def stop_at_third(task: Task, data: dict[str, Any]) -> StudentResult:
        arrived.append(task.student)
        if len(arrived) == 3:
            raise Crash
        return real(task, data)

    monkeypatch.setattr(command, "_from_outcome", stop_at_third)
    with pytest.raises(Crash):
        command.grade(ex02, tmp_path / "subs", out, quiet=True, jobs=2)
    url = f"sqlite:///{out / 'gradebook.db'}"

    def state() -> tuple[set[str], set[str]]:
        with opened(url) as gb:
            submitted = {s.student.id for s in gb.find_assignment(ex02).submissions}
        return {p.stem for p in (out / "results" / ex02).glob("*.json")}, submitted

    assert state() == (set(arrived[:2]), set(arrived[:2]))
    monkeypatch.setattr(command, "_from_outcome", real)
    results = command.grade(ex02, tmp_path / "subs", out, quiet=True, jobs=2)
    assert {r.student: r.score for r in results} == expected
    assert state() == (set(expected), set(expected))
    first = {s: json.loads((out / "results" / ex02 / f"{s}.json").read_text("utf-8"))
             for s in expected}
    assert all(data["phases"]["gradebook"] > 0 for data in first.values())
    assert [r.seconds for r in results if r.student in arrived[:2]] == [
        first[s]["seconds"] for s in sorted(arrived[:2])], "a cached result was graded again"
