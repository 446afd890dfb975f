"""The grading pipeline end to end: demo submissions get their exact scores, feedback is written
and never shows a solution or hidden test, and bad submissions only affect themselves."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from course import ROOT, find_leaks, readable_text, run

from autograder.demo.ex01_overfitting import EXPECTED as EX01_EXPECTED
from autograder.demo.ex02_dropout_mechanics import EXPECTED as EX02_EXPECTED
from autograder.demo.ex03_dropout_variants import EXPECTED as EX03_EXPECTED
from autograder.demo.ex04_misconceptions import EXPECTED as EX04_EXPECTED

pytestmark = pytest.mark.slow
ASSIGNMENT = "ex01_overfitting"
EX02 = "ex02_dropout_mechanics"
EX03 = "ex03_dropout_variants"
EX04 = "ex04_misconceptions"
EXPECTED = {ASSIGNMENT: EX01_EXPECTED, EX02: EX02_EXPECTED, EX03: EX03_EXPECTED,
            EX04: EX04_EXPECTED}
MAX_SCORE = {ASSIGNMENT: 14.0, EX02: 19.0, EX03: 28.0, EX04: 21.0}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """Run the demo grading command once (every assignment): its output folder and process."""
    out = tmp_path_factory.mktemp("demo")
    proc = run([sys.executable, "-m", "autograder.demo", "--out", str(out)], timeout=1200)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return out, proc


@pytest.fixture(scope="module")
def courses(demo_run: tuple[Path, subprocess.CompletedProcess]) -> Path:
    """The demo's courses folder (one course per assignment)."""
    return demo_run[0] / "courses"


def test_grading_shows_progress(demo_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    """While grading, a progress bar per assignment counts the submissions (on stderr, so the
    report on stdout stays clean)."""
    _out, proc = demo_run
    for assignment, students in EXPECTED.items():
        done = f"{len(students)}/{len(students)}"
        bars = [line for line in proc.stderr.replace("\r", "\n").splitlines()
                if line.startswith(f"grading {assignment}:") and done in line]
        assert bars, f"no finished progress bar for {assignment} in:\n{proc.stderr[-2000:]}"
        assert f"graded {sorted(students)[0]} in" in proc.stdout
    assert "grading ex0" not in proc.stdout


@pytest.fixture(scope="module")
def demo(courses: Path) -> Path:
    """The demo's course folder for ex01."""
    return courses / ASSIGNMENT


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {row.get("student_id") or row["student"]: row for row in csv.DictReader(fh)}


@pytest.mark.parametrize("assignment", sorted(EXPECTED))
def test_demo_scores_are_exact(assignment: str, courses: Path) -> None:
    """grades.csv holds exactly the expected automatic score of every demo student."""
    grades = read_csv(courses / assignment / "grades.csv")
    assert {s: float(row["score"]) for s, row in grades.items()} == EXPECTED[assignment]
    assert {float(row["max_score"]) for row in grades.values()} == {MAX_SCORE[assignment]}


def test_ex02_per_test_scores(courses: Path) -> None:
    """Exercise 2: the partly correct answer loses exactly the hidden contract cell; a different
    correct implementation (binomial, bernoulli) gets every cell."""
    rows = read_csv(courses / EX02 / "scores_by_test.csv")
    bo, ann = rows["bo_partial"], rows["ann_correct"]
    assert bo["test_dropout_hidden_contract"] == "0.0"
    assert (bo["test_dropout_visible"], bo["test_dropout_hidden_statistics"]) == ("1.0", "2.0")
    assert ann["test_dropout_hidden_statistics"] == "2.0"
    assert rows["cal_keeps_p"]["test_module_visible"] == "1.0"
    # Task 5: the right numbers as a Fraction, a NumPy scalar and a 0-d tensor (ann) and as
    # plain expressions (bo) score; bo's unscaled penalty does not; the stubs score nothing.
    questions = ("test_unit_variance_answer", "test_factor_answer", "test_penalty_answer")
    assert [ann[q] for q in questions] == ["1.0", "1.0", "1.0"]
    assert [bo[q] for q in questions] == ["1.0", "1.0", "0.0"]
    assert [rows["cal_keeps_p"][q] for q in questions] == ["0.0", "0.0", "0.0"]
    # The written answer waits for a hand grader (blank); an unchanged one scores 0 at once.
    assert (ann["written_answer"], bo["written_answer"]) == ("", "0.0")


def test_ex03_per_test_scores(courses: Path) -> None:
    """Exercise 3: element-wise 'spatial' dropout loses both spatial cells it fails and keeps the
    contract cell; the model.train() shortcut loses the visible Monte Carlo cell only; DropPath
    per element loses its structure cells and keeps the contract cell, DropPath on in eval mode
    loses the eval cells and keeps the statistics cell."""
    rows = read_csv(courses / EX03 / "scores_by_test.csv")
    eli, fay = rows["eli_partial"], rows["fay_classic_bugs"]
    assert (eli["test_spatial_visible"], eli["test_spatial_hidden_statistics"]) == ("0.0", "0.0")
    assert (eli["test_spatial_hidden_contract"], eli["test_mc_visible"]) == ("1.0", "0.0")
    assert eli["test_mc_hidden"] == "2.0"
    assert (fay["test_attention_visible"], fay["test_mc_hidden"]) == ("0.0", "2.0")
    assert (eli["test_droppath_visible"], eli["test_droppath_hidden_statistics"],
            eli["test_droppath_hidden_contract"]) == ("0.0", "0.0", "1.0")
    assert (fay["test_droppath_visible"], fay["test_droppath_hidden_statistics"],
            fay["test_droppath_hidden_contract"]) == ("0.0", "2.0", "0.0")
    assert all(value.endswith(".0") and value != "0.0" for key, value in
               rows["dee_correct"].items() if key.startswith("test_"))


def test_ex04_per_test_scores(courses: Path) -> None:
    """Exercise 4: each misconception costs exactly its task's cells; the three written answers
    wait for a grader (blank), worth 6 of the 21 points."""
    rows = read_csv(courses / EX04 / "scores_by_test.csv")
    hal, ivy, gus = rows["hal_partial"], rows["ivy_classic_bugs"], rows["gus_correct"]
    assert (hal["test_evaluate_visible"], hal["test_evaluate_hidden"]) == ("0.0", "0.0")
    assert (hal["test_enable_visible"], hal["test_enable_hidden"]) == ("1.0", "2.0")
    assert (ivy["test_counts_visible"], ivy["test_counts_hidden"]) == ("1.0", "0.0")
    assert (ivy["test_scale_visible"], ivy["test_scale_hidden"]) == ("0.0", "1.0")
    assert all(gus[f"written_answer_{part}"] == "" for part in "abc")
    assert all(value.endswith(".0") and value != "0.0" for key, value in gus.items()
               if key.startswith("test_"))


@pytest.mark.parametrize(("assignment", "student", "explained", "hidden_check"), [
    (EX02, "cal_keeps_p", "kept values are not x / (1 - p)", "check_drop_fraction"),
    (EX02, "bo_partial", "answer_penalty = 4.96875 is not the expected value",
     "linear_dropout_penalty"),  # a wrong number: the student's value, never the reference
    (EX03, "eli_partial", "model.train()", "check_spatial_statistics"),  # the BatchNorm pitfall
    (EX04, "ivy_classic_bugs", "expected 783, got 844", "check_counts_invalid"),  # buffers counted
])
def test_feedback_explains_a_hidden_failure(assignment: str, student: str, explained: str,
                                            hidden_check: str, courses: Path) -> None:
    """A failed test says what was measured and what to check, without any hidden test code."""
    feedback = courses / assignment / "feedback" / student / assignment
    html = (feedback / f"{assignment}.html").read_text("utf-8")
    assert "What to check" in html
    assert explained in html
    assert "BEGIN HIDDEN TESTS" not in html
    assert hidden_check not in html


def test_per_test_scores_say_what_failed(demo: Path) -> None:
    """scores_by_test.csv has one column per graded cell with the cell's score; a written answer
    is blank until graded by hand (an unchanged answer cell scores 0 at once)."""
    rows = read_csv(demo / "scores_by_test.csv")
    ben, cy = rows["ben_partial"], rows["cy_raises"]
    assert (ben["test_count_visible"], ben["test_count_hidden"]) == ("1.0", "0.0")
    assert (ben["test_early_visible"], ben["test_early_hidden"]) == ("1.0", "0.0")
    assert (cy["test_split_visible"], cy["test_split_hidden"]) == ("0.0", "0.0")
    assert rows["ada_correct"]["written_answer"] == ""
    assert ben["written_answer"] == "0.0"
    report = (demo / "report.txt").read_text(encoding="utf-8")
    assert "answer(s) to grade by hand" in report


@pytest.mark.parametrize("assignment", sorted(EXPECTED))
def test_no_feedback_shows_secrets(assignment: str, courses: Path) -> None:
    """Every student gets feedback HTML, and none contains a solution line or hidden-test line
    (apart from lines the student wrote too)."""
    feedback = courses / assignment / "feedback"
    for student in EXPECTED[assignment]:
        assert (feedback / student / assignment / f"{assignment}.html").is_file(), student
        submitted = courses / assignment / "submitted" / student / assignment
        submitted = submitted / f"{assignment}.ipynb"
        own = frozenset(line.strip() for line in readable_text(submitted).splitlines())
        assert find_leaks(feedback / student, own_lines=own) == {}, student


def test_feedback_explains_hidden_failures(demo: Path) -> None:
    """A failed hidden test still explains itself in the feedback, as a message only."""
    feedback = demo / "feedback"
    html = (feedback / "ben_partial" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text("utf-8")
    assert "hidden tests ran here" in html
    assert "expected 330, got 2410" in html  # the frozen-layer case, as a message only
    assert "BEGIN HIDDEN TESTS" not in html


def test_autograded_notebooks_do_hold_the_hidden_tests(demo: Path) -> None:
    """Hidden tests really ran (they are in the autograded copy, not only in the source)."""
    nb = demo / "autograded" / "ada_correct" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    assert "BEGIN HIDDEN TESTS" in nb.read_text(encoding="utf-8")


def test_bad_submissions_affect_only_themselves(tmp_path: Path) -> None:
    """A malformed notebook, a missing notebook and a bad student name are reported and skipped;
    the good submission next to them is graded normally."""
    from autograder.demo.__main__ import write_submissions
    from autograder.engine.grade import grade

    subs = tmp_path / "subs"
    write_submissions(ASSIGNMENT, subs)
    for student in list(EX01_EXPECTED):
        if student != "ada_correct":
            for path in sorted((subs / student).rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            (subs / student).rmdir()
    broken = subs / "zed_broken" / ASSIGNMENT
    broken.mkdir(parents=True)
    (broken / f"{ASSIGNMENT}.ipynb").write_text('{"cells": [', encoding="utf-8")
    (subs / "yan_empty").mkdir()
    (subs / "bad name!" / ASSIGNMENT).mkdir(parents=True)
    results = {r.student: r for r in grade(ASSIGNMENT, subs, tmp_path / "course", quiet=True)}
    assert results["ada_correct"].score == 12.0 and not results["ada_correct"].problems
    assert any("malformed" in p for p in results["zed_broken"].problems)
    assert any("no notebook" in p for p in results["yan_empty"].problems)
    assert any("invalid student id" in p for p in results["bad name!"].problems)
    assert results["zed_broken"].flags.get("malformed") and results["zed_broken"].score == 0
    report = (tmp_path / "course" / "report.txt").read_text(encoding="utf-8")
    for student in ("zed_broken", "yan_empty"):
        assert student in report


def test_grading_refuses_to_wipe_a_folder_it_did_not_make(tmp_path: Path) -> None:
    """The grading command deletes its output folder only if it created it: nothing is lost."""
    from autograder.engine.grade import prepare_course

    precious = tmp_path / "course"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit):
        prepare_course(precious, ASSIGNMENT)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_demo_submissions_are_real_notebooks(tmp_path: Path) -> None:
    """The demo writer produces valid notebooks, one per demo student, from the released version."""
    import nbformat

    from autograder.demo.__main__ import write_submissions

    expected = write_submissions(ASSIGNMENT, tmp_path)
    assert expected == EX01_EXPECTED
    for student in expected:
        nb = nbformat.read(tmp_path / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
        nbformat.validate(nb)
        assert json.dumps(nb.metadata)  # metadata kept from the release
    assert ROOT.exists()


def test_ex02_written_answer_is_graded_by_hand_into_the_exports(courses: Path,
                                                                tmp_path: Path) -> None:
    """Exercise 2's written answer through the grading command and nbgrader's gradebook: after
    autograding, ann_correct's submission waits for a hand grader (its automatic points count,
    its total and its LMS cell are "pending" and blank, max points include the 2 by hand); a
    score set through nbgrader's Gradebook API (what formgrader stores: Grade.manual_score) then
    reaches grades.csv, the per-test scores, the LMS CSVs and Gradescope's results.json."""
    from nbgrader.api import Gradebook

    from autograder.engine import export

    course = tmp_path / "course"
    shutil.copytree(courses / EX02, course)  # the fixture's folder stays as graded
    ann = read_csv(course / "grades.csv")["ann_correct"]
    assert (ann["status"], ann["needs_manual_grade"], ann["total"]) == ("graded", "1", "pending")
    assert (float(ann["score"]), float(ann["max_score"])) == (17.0, 19.0)
    export.write_default_exports(course, warn=None)
    canvas = list(csv.reader((course / "exports" / "canvas.csv").open(encoding="utf-8")))
    column = canvas[0].index(EX02)
    assert canvas[1][column] == "19.0"  # points possible: the hand-graded 2 included
    row = next(r for r in canvas if "ann_correct" in r)
    assert row[column] == ""  # pending: not exported (an LMS import skips a blank cell)

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        grade = gb.find_grade("written_answer", EX02, EX02, "ann_correct")
        assert (grade.needs_manual_grade, grade.manual_score, grade.max_score) == (True, None, 2.0)
        grade.manual_score = 1.5
        grade.needs_manual_grade = False
        gb.db.commit()
    export.merge(course)

    ann = read_csv(course / "grades.csv")["ann_correct"]
    assert ann["needs_manual_grade"] == "0"
    assert (float(ann["auto_score"]), float(ann["manual_score"])) == (17.0, 1.5)
    assert (float(ann["score"]), float(ann["total"])) == (18.5, 18.5)
    assert read_csv(course / "scores_by_test.csv")["ann_correct"]["written_answer"] == "1.5"
    canvas = list(csv.reader((course / "exports" / "canvas.csv").open(encoding="utf-8")))
    assert float(next(r for r in canvas if "ann_correct" in r)[column]) == 18.5
    results = json.loads((course / "exports" / "gradescope" / EX02 / "ann_correct" /
                          "results.json").read_text("utf-8"))
    assert results["score"] == 18.5
    written = next(t for t in results["tests"] if t["name"].startswith("written_answer"))
    assert (written["score"], written["max_score"]) == (1.5, 2.0)
    report = (course / "report.txt").read_text(encoding="utf-8")
    assert "1.5 point(s) graded by hand" in report
