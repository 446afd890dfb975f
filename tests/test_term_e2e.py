"""A whole term with nbgrader's own tools, end to end (issue 17, item 8).

One scenario, step by step, each step's result asserted (a step that fails names itself, the
command and what it printed; the steps after it then say which step they needed):

1. the grading command makes the course folder; the instructor adds the exchange, the course id
   and the late-penalty rule below its marker line; stock ``generate_assignment`` and
   ``db student import`` work there;
2. ``release_assignment``; two students (own HOME and working folder each) ``fetch_assignment``,
   answer and ``submit``: one before the due date (set between the two submits), one after;
3. ``collect``, then the grading command on ``DIR/submitted``;
4. the late student has a timestamp and nbgrader's ``zero`` penalty in the gradebook, in
   ``grades.csv`` and in the report; the on-time student none;
5. a real ``jupyter server`` in the course folder: formgrader's REST API sees the command's
   gradebook, and a hand grader's score for the written answer is stored there;
6. the grading command again (plain, ``--force``, ``--student`` the other student): the hand
   score survives and the totals count it;
7. ``export`` (students, penalty, hand points), stock ``generate_feedback`` (no hidden test
   source), ``release_feedback`` and each student's ``fetch_feedback``.
"""

from __future__ import annotations

import re
import sqlite3
import time
from datetime import UTC, datetime

import nbformat
import pytest
from course import (
    MARKERS,
    MIN_SECRET_LENGTH,
    SOLUTIONS,
    find_leaks,
    readable_text,
    release_notebook,
)
from term_exchange import COURSE_ID, Term, answer, jupyter_server, read_rows, server_log

from autograder.demo.ex01_overfitting import EXPECTED

pytestmark = pytest.mark.slow

A = "ex01_overfitting"
ON_TIME, LATE = "ada_correct", "ben_partial"
STUDENTS = (ON_TIME, LATE)
WRITTEN = "written_answer"  # ex01's one hand-graded cell (2 points)
HAND_SCORE = 1.5  # partial credit: cannot be mistaken for 0 or the full 2 points
MAX_SCORE = 14.0
INSTRUCTOR_LINES = None  # set in step 1 (they name the temporary exchange)


def hidden_test_lines(assignment: str) -> set[str]:
    """The distinctive lines of the assignment's hidden tests, read from solutions/."""
    nb = nbformat.read(SOLUTIONS / assignment / f"{assignment}.ipynb", as_version=4)
    public = {line.strip() for cell in release_notebook(assignment).cells
              for line in cell.source.splitlines()}
    found: set[str] = set()
    for cell in nb.cells:
        inside = False
        for line in cell.source.splitlines():
            if "BEGIN HIDDEN TESTS" in line:
                inside = True
            elif "END HIDDEN TESTS" in line:
                inside = False
            elif inside and len(line.strip()) >= MIN_SECRET_LENGTH:
                found.add(line.strip())
    return found - public


@pytest.fixture(scope="module")
def term(tmp_path_factory: pytest.TempPathFactory) -> Term:
    return Term(tmp_path_factory.mktemp("term"))


def gradebook_rows(term: Term, sql: str, *args: object) -> list[tuple]:
    """Read the course folder's sqlite gradebook directly (what nbgrader stores, not what a
    command says)."""
    with sqlite3.connect(term.course / "gradebook.db") as db:
        return db.execute(sql, args).fetchall()


def written_grade(term: Term, student: str) -> tuple:
    """(manual_score, auto_score, needs_manual_grade) of the student's written answer."""
    rows = gradebook_rows(
        term, "SELECT g.manual_score, g.auto_score, g.needs_manual_grade FROM grade g "
        "JOIN base_cell bc ON g.cell_id = bc.id "
        "JOIN submitted_notebook sn ON g.notebook_id = sn.id "
        "JOIN submitted_assignment sa ON sn.assignment_id = sa.id "
        "WHERE bc.name = ? AND sa.student_id = ?", WRITTEN, student)
    assert len(rows) == 1, f"{student}'s {WRITTEN} grade in the gradebook: {rows}"
    return rows[0]


def submission_row(term: Term, student: str) -> tuple:
    """(timestamp, late penalty) of the student's submission, from the gradebook."""
    rows = gradebook_rows(
        term, "SELECT sa.timestamp, SUM(COALESCE(sn.late_submission_penalty, 0)) "
        "FROM submitted_assignment sa JOIN submitted_notebook sn ON sn.assignment_id = sa.id "
        "JOIN assignment a ON sa.assignment_id = a.id WHERE a.name = ? AND sa.student_id = ? "
        "GROUP BY sa.id", A, student)
    assert len(rows) == 1, f"{student}'s submission in the gradebook: {rows}"
    return rows[0]


def number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def class_outputs(term: Term, step: str) -> tuple[dict[str, dict[str, str]], str]:
    """grades.csv (by student, with the columns the checks need) and report.txt."""
    grades = read_rows(term.course / "grades.csv", "student_id")
    needed = {"score", "max_score", "auto_score", "manual_score", "late_penalty", "timestamp",
              "total", "problems"}
    some = next(iter(grades.values()), {})
    missing = needed - set(some)
    assert not missing, f"{step}: grades.csv lacks the column(s) {sorted(missing)}: {some}"
    assert sorted(grades) == sorted(STUDENTS), f"{step}: grades.csv rows {sorted(grades)}"
    problems = {s: row["problems"] for s, row in grades.items() if row["problems"]}
    assert not problems, f"{step}: problems with collected submissions: {problems}"
    return grades, (term.course / "report.txt").read_text(encoding="utf-8")


def report_line(report: str, student: str) -> str:
    lines = [line for line in report.splitlines() if line.startswith(student)]
    assert len(lines) == 1, f"{student}'s line in report.txt:\n{report}"
    return lines[0]


# ------------------------------------------------------------------------------ step 1

def test_step1_course_folder(term: Term) -> None:
    """The command makes the course folder (config, released assignment, gradebook); the
    instructor's settings below the marker; stock generate_assignment and db work there."""
    empty = term.base / "nothing-yet"
    empty.mkdir()
    proc = term.grade("step 1 (course folder from the grading command)", A, empty)
    config = term.course / "nbgrader_config.py"
    assert config.is_file(), term.explain("step 1", proc, "wrote no nbgrader_config.py")
    text = config.read_text(encoding="utf-8")
    marker = [line for line in text.splitlines() if line.startswith("# ----") and "below" in line]
    assert len(marker) == 1, f"step 1: no marked line for the instructor's settings in:\n{text}"
    assert text.rstrip().endswith(marker[0]), f"step 1: the marker is not the end:\n{text}"
    own = (f"c.Exchange.root = {str(term.exchange)!r}\n"
           f"c.CourseDirectory.course_id = {COURSE_ID!r}\n"
           "c.LateSubmissionPlugin.penalty_method = 'zero'\n")
    config.write_text(text.rstrip("\n") + "\n" + own, encoding="utf-8")
    globals()["INSTRUCTOR_LINES"] = own

    proc = term.nbgrader("step 1 (stock generate_assignment in the course folder)",
                         "generate_assignment", A, "--force")
    released = term.course / "exercises" / A / f"{A}.ipynb"
    assert released.is_file(), term.explain("step 1", proc, f"left no {released}")
    assert not any(m in released.read_text(encoding="utf-8") for m in MARKERS)
    roster = term.base / "students.csv"
    roster.write_text("id,first_name,last_name,email\n" + "".join(
        f"{s},{s.split('_')[0].title()},Student,{s}@example.edu\n" for s in STUDENTS))
    term.nbgrader("step 1 (db student import)", "db", "student", "import", str(roster))
    assert gradebook_rows(term, "SELECT id, email FROM student ORDER BY id") == [
        (s, f"{s}@example.edu") for s in STUDENTS], "step 1: db student import"
    assert gradebook_rows(term, "SELECT name FROM assignment") == [(A,)]
    term.done.add(1)


# ------------------------------------------------------------------------------ step 2

def test_step2_release_fetch_submit(term: Term) -> None:
    """Release through the exchange; each student fetches, answers, submits; the due date
    falls between the two submissions."""
    term.require(1)
    proc = term.nbgrader("step 2 (release_assignment)", "release_assignment", A)
    outbound = term.exchange / COURSE_ID / "outbound" / A / f"{A}.ipynb"
    assert outbound.is_file(), term.explain("step 2", proc, f"left no {outbound}")
    assert not any(m in outbound.read_text(encoding="utf-8") for m in MARKERS)
    for i, student in enumerate(STUDENTS):
        step = f"step 2 ({student})"
        term.as_student(step, student, "fetch_assignment", A)
        notebook = term.student_work(student) / A / f"{A}.ipynb"
        assert notebook.is_file(), f"{step}: fetch_assignment left no {notebook}"
        answer(notebook, A, student)
        if i == 1:  # the due date: after the first submission, before the second
            time.sleep(1.1)
            due = datetime.now(UTC).replace(microsecond=0)
            term.nbgrader("step 2 (due date)", "db", "assignment", "add", A,
                          f"--duedate={due:%Y-%m-%d %H:%M:%S} UTC")
            time.sleep(1.1)
        proc = term.as_student(step, student, "submit", A)
        inbound = sorted(p.name for p in (term.exchange / COURSE_ID / "inbound").iterdir())
        assert len([n for n in inbound if n.startswith(f"{student}+{A}+")]) == 1, \
            term.explain(step, proc, f"left the exchange's inbound with {inbound}")
    term.done.add(2)


# ------------------------------------------------------------------------------ step 3

def test_step3_collect_and_grade(term: Term) -> None:
    """nbgrader collect, then the course's grading command on the collected folder."""
    term.require(2)
    term.nbgrader("step 3 (collect)", "collect", A)
    submitted = term.course / "submitted"
    for student in STUDENTS:
        folder = submitted / student / A
        assert (folder / f"{A}.ipynb").is_file() and (folder / "timestamp.txt").is_file(), \
            f"step 3: collect left {sorted(p.name for p in folder.glob('*'))} in {folder}"
    proc = term.grade("step 3 (grading command on DIR/submitted)", A, submitted)
    for student in STUDENTS:
        assert f"graded {student}" in proc.stdout, term.explain("step 3", proc, "said")
        assert (term.course / "feedback" / student / A / f"{A}.html").is_file()
        assert (term.course / "autograded" / student / A / f"{A}.ipynb").is_file()
        own = frozenset(line.strip() for line in readable_text(
            submitted / student / A / f"{A}.ipynb").splitlines())
        leaks = find_leaks(term.course / "feedback" / student, own_lines=own)
        assert leaks == {}, f"step 3: the command's feedback for {student} shows {leaks}"
    assert INSTRUCTOR_LINES in (term.course / "nbgrader_config.py").read_text(encoding="utf-8"), \
        "step 3: the grading command dropped the instructor's settings below the marker"
    term.done.add(3)


# ------------------------------------------------------------------------------ step 4

def test_step4_late_penalty(term: Term) -> None:
    """The late submission has its time and the 'zero' penalty (all its points); the on-time
    one has its time and no penalty: in the gradebook, grades.csv and the report."""
    term.require(3)
    stamps = {s: (term.course / "submitted" / s / A / "timestamp.txt").read_text().strip()
              for s in STUDENTS}
    for student in STUDENTS:
        stamp, penalty = submission_row(term, student)
        assert stamp and stamp[:19] == stamps[student][:19], \
            f"step 4: gradebook timestamp {stamp!r} of {student}, timestamp.txt {stamps[student]!r}"
        expected = EXPECTED[LATE] if student == LATE else 0.0
        assert penalty == pytest.approx(expected), f"step 4: {student}'s gradebook penalty"
    grades, report = class_outputs(term, "step 4")
    ada, ben = grades[ON_TIME], grades[LATE]
    assert number(ben["late_penalty"]) == EXPECTED[LATE] and number(ben["total"]) == 0.0, ben
    assert number(ben["score"]) == EXPECTED[LATE], ben
    assert ben["timestamp"][:19].replace("T", " ") == stamps[LATE][:19], ben
    assert number(ada["late_penalty"]) == 0.0, ada
    assert number(ada["auto_score"]) == EXPECTED[ON_TIME] and number(ada["manual_score"]) == 0.0
    assert ada["timestamp"][:19].replace("T", " ") == stamps[ON_TIME][:19], ada
    assert number(ada["score"]) == EXPECTED[ON_TIME], ada  # automatic points; the answer waits
    assert ada["total"] == "pending", f"step 4: the unread written answer: {ada}"
    assert "late" in report_line(report, LATE).lower(), report
    assert "late" not in report_line(report, ON_TIME).lower(), report
    term.done.add(4)


# ------------------------------------------------------------------------------ step 5

def test_step5_formgrader_manual_score(term: Term) -> None:
    """formgrader on a real jupyter server in the course folder sees the command's gradebook;
    a hand score set through its REST API is what the gradebook holds."""
    term.require(3)
    assert written_grade(term, ON_TIME)[2] == 1, "step 5: the written answer is not waiting"
    with jupyter_server(term) as server:
        status, subs = server.call("GET", f"/formgrader/api/submitted_notebooks/{A}/{A}")
        assert status == 200 and isinstance(subs, list), \
            f"step 5: submitted_notebooks: {status} {str(subs)[:2000]}\n{server_log(term)}"
        by_student = {s["student"]: s for s in subs}
        assert sorted(by_student) == sorted(STUDENTS), f"step 5: formgrader sees {subs}"
        assert by_student[LATE]["score"] == EXPECTED[LATE], by_student[LATE]
        assert by_student[ON_TIME]["needs_manual_grade"], by_student[ON_TIME]
        status, grades = server.call(
            "GET", f"/formgrader/api/grades?submission_id={by_student[ON_TIME]['id']}")
        assert status == 200, f"step 5: grades: {status} {grades}\n{server_log(term)}"
        written = [g for g in grades if g["name"] == WRITTEN]
        assert len(written) == 1 and written[0]["needs_manual_grade"], grades
        assert written[0]["auto_score"] is None, written[0]
        status, put = server.call("PUT", f"/formgrader/api/grade/{written[0]['id']}",
                                  {"manual_score": HAND_SCORE})
        assert status == 200 and put["manual_score"] == HAND_SCORE, \
            f"step 5: PUT grade: {status} {put}\n{server_log(term)}"
        status, again = server.call("GET", f"/formgrader/api/grade/{written[0]['id']}")
        assert status == 200 and again["manual_score"] == HAND_SCORE, again
        assert not again["needs_manual_grade"], again
        status, sub = server.call("GET", f"/formgrader/api/submission/{A}/{ON_TIME}")
        assert status == 200 and sub["score"] == EXPECTED[ON_TIME] + HAND_SCORE, sub
    assert server.leftovers == [], f"step 5: jupyter server left processes {server.leftovers}"
    assert written_grade(term, ON_TIME) == (HAND_SCORE, None, 0), "step 5: gradebook"
    term.done.add(5)


# ------------------------------------------------------------------------------ step 6

@pytest.mark.parametrize("how", ["rerun", "force", "student"])
def test_step6_hand_score_survives_reruns(term: Term, how: str) -> None:
    """Rerunning the grading command (as is, --force, --student the other student) keeps the
    hand score, and grades.csv and the report count it."""
    term.require(5)
    step = f"step 6 ({how})"
    flags = {"rerun": [], "force": ["--force"], "student": ["--student", LATE]}[how]
    proc = term.grade(step, A, term.course / "submitted", *flags)
    regraded = {"rerun": [], "force": list(STUDENTS), "student": [LATE]}[how]
    for student in STUDENTS:
        said = f"graded {student}" in proc.stdout
        assert said == (student in regraded), term.explain(step, proc, f"on {student}")
    assert written_grade(term, ON_TIME) == (HAND_SCORE, None, 0), f"{step}: hand score lost"
    assert submission_row(term, LATE)[1] == pytest.approx(EXPECTED[LATE]), f"{step}: penalty"
    grades, report = class_outputs(term, step)
    ada, ben = grades[ON_TIME], grades[LATE]
    assert number(ada["manual_score"]) == HAND_SCORE, f"{step}: {ada}"
    assert number(ada["auto_score"]) == EXPECTED[ON_TIME], f"{step}: {ada}"
    assert number(ada["score"]) == EXPECTED[ON_TIME] + HAND_SCORE, f"{step}: {ada}"
    assert number(ada["total"]) == EXPECTED[ON_TIME] + HAND_SCORE, f"{step}: {ada}"
    assert number(ben["total"]) == 0.0 and number(ben["late_penalty"]) == EXPECTED[LATE], ben
    line = report_line(report, ON_TIME)
    assert f"{EXPECTED[ON_TIME] + HAND_SCORE:g} / {MAX_SCORE:g}" in line, f"{step}:\n{report}"
    assert "to grade by hand" not in line, f"{step}: still waiting for a hand grader:\n{report}"
    term.done.add(6)


# ------------------------------------------------------------------------------ step 7

def test_step7_export(term: Term) -> None:
    """Stock nbgrader export: both students, the late penalty, the hand points."""
    term.require(3, 5)
    out = term.base / "export.csv"
    term.nbgrader("step 7 (export)", "export", f"--to={out}")
    rows = read_rows(out, "student_id")
    assert sorted(rows) == sorted(STUDENTS), f"step 7: export rows {rows}"
    ada, ben = rows[ON_TIME], rows[LATE]
    assert float(ada["raw_score"]) == EXPECTED[ON_TIME] + HAND_SCORE, ada
    assert float(ada["late_submission_penalty"]) == 0.0 and ada["timestamp"], ada
    assert float(ada["score"]) == EXPECTED[ON_TIME] + HAND_SCORE, ada
    assert float(ben["raw_score"]) == EXPECTED[LATE], ben
    assert float(ben["late_submission_penalty"]) == EXPECTED[LATE], ben
    assert float(ben["score"]) == 0.0 and ben["timestamp"] > ada["timestamp"], ben
    assert ben["duedate"] and ada["timestamp"] < ben["duedate"] < ben["timestamp"], ben
    assert float(ada["max_score"]) == MAX_SCORE and ada["email"] == f"{ON_TIME}@example.edu"
    term.done.add(7)


def test_step7_feedback_generated_and_released(term: Term) -> None:
    """Stock generate_feedback in the course folder shows no hidden test; release_feedback
    works; each student's fetch_feedback gets their page."""
    term.require(3, 5)
    hidden = hidden_test_lines(A)
    assert len(hidden) >= 5, f"too few hidden-test lines found in solutions/{A}: {hidden}"
    proc = term.nbgrader("step 7 (generate_feedback)", "generate_feedback", A, "--force")
    own: dict[str, frozenset[str]] = {}
    for student in STUDENTS:
        page = term.course / "feedback" / student / A / f"{A}.html"
        assert page.is_file(), term.explain("step 7", proc, f"left no {page}")
        text = readable_text(page)
        assert "BEGIN HIDDEN TESTS" not in text, f"step 7: hidden-test marker in {page}"
        shown_hidden = sorted(line for line in hidden if line in text)
        assert not shown_hidden, f"step 7: {page} shows hidden tests: {shown_hidden}"
        own[student] = frozenset(line.strip() for line in readable_text(
            term.course / "submitted" / student / A / f"{A}.ipynb").splitlines())
        leaks = find_leaks(page.parent, own_lines=own[student])
        assert leaks == {}, f"step 7: {student}'s feedback shows solution lines: {leaks}"
    proc = term.nbgrader("step 7 (release_feedback)", "release_feedback", A)
    released = sorted((term.exchange / COURSE_ID / "feedback").glob("*.html"))
    assert len(released) == len(STUDENTS), term.explain("step 7", proc, f"released {released}")
    for student in STUDENTS:
        proc = term.as_student(f"step 7 (fetch_feedback, {student})", student,
                               "fetch_feedback", A)
        pages = sorted((term.student_work(student) / A / "feedback").glob(f"*/{A}.html"))
        assert len(pages) == 1, term.explain("step 7", proc, f"fetched {pages}")
        mine = (term.course / "feedback" / student / A / f"{A}.html").read_bytes()
        assert pages[0].read_bytes() == mine, f"step 7: {student} fetched another page"
        assert find_leaks(pages[0].parent, own_lines=own[student]) == {}
    term.done.add(8)  # step 7, feedback part


def test_step7_feedback_shows_the_hand_score(term: Term) -> None:
    """The feedback generated after hand grading gives the student the score with the hand
    points (nbgrader's GetGrades computes it; the page must show it)."""
    term.require(8)
    page = term.course / "feedback" / ON_TIME / A / f"{A}.html"
    text = readable_text(page)
    scores = sorted(set(re.findall(r"[\d.]+\s*/\s*[\d.]+", text)))
    assert re.search(rf"\b{EXPECTED[ON_TIME] + HAND_SCORE:g}\s*/\s*{MAX_SCORE:g}\b", text), \
        f"step 7: {page} (stock generate_feedback after hand grading) shows the scores " \
        f"{scores}, not {EXPECTED[ON_TIME] + HAND_SCORE:g} / {MAX_SCORE:g}"


def test_term_log(term: Term) -> None:
    """Every step ran (the commands and their times are printed; see them with -rA)."""
    print("\n".join(term.log))
    missing = set(range(1, 9)) - term.done
    assert not missing, f"steps not done: {sorted(missing)} (8 = step 7's feedback part)"
